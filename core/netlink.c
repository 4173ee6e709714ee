/* Links, addresses and bridges through libnl-route-3. One socket per call:
 * no state to share, and a call always acts in the namespace of the thread
 * that makes it. */
#include "netlink.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/socket.h>

#include "err.h"

/* ---- helpers ---- */

static int check_name(const char *ifname)
{
	if (!ifname || !*ifname)
		return vmm_fail("netlink: empty interface name");
	if (strlen(ifname) >= IFNAMSIZ)
		return vmm_fail("%s: interface name longer than %d characters", ifname, IFNAMSIZ - 1);
	return 0;
}

/* A connected NETLINK_ROUTE socket, or NULL with a message. */
static struct nl_sock *sock_open(const char *ifname)
{
	struct nl_sock *sk = nl_socket_alloc();
	if (!sk) {
		vmm_fail("%s: netlink socket: out of memory", ifname);
		return NULL;
	}
	int err = nl_connect(sk, NETLINK_ROUTE);
	if (err < 0) {
		vmm_fail("%s: netlink socket: %s", ifname, nl_geterror(err));
		nl_socket_free(sk);
		return NULL;
	}
	return sk;
}

/* The kernel's view of ifname, or NULL with "ifname: no such interface". */
static struct rtnl_link *link_lookup(struct nl_sock *sk, const char *ifname)
{
	struct rtnl_link *link = NULL;
	int err = rtnl_link_get_kernel(sk, 0, ifname, &link);
	if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) {
		vmm_fail("%s: no such interface", ifname);
		return NULL;
	}
	if (err < 0) {
		vmm_fail("%s: get link: %s", ifname, nl_geterror(err));
		return NULL;
	}
	return link;
}

/* Opens a socket and looks ifname up: both released by done(). */
struct op {
	struct nl_sock *sk;
	struct rtnl_link *link;
};

static int begin(struct op *op, const char *ifname)
{
	*op = (struct op){ 0 };
	if (check_name(ifname) < 0)
		return -1;
	op->sk = sock_open(ifname);
	if (!op->sk)
		return -1;
	op->link = link_lookup(op->sk, ifname);
	if (!op->link) {
		nl_socket_free(op->sk);
		op->sk = NULL;
		return -1;
	}
	return 0;
}

static int done(struct op *op, int rc)
{
	if (op->link)
		rtnl_link_put(op->link);
	if (op->sk)
		nl_socket_free(op->sk);
	*op = (struct op){ 0 };
	return rc;
}

/* Applies the attributes set in change to op->link (RTM_NEWLINK/SETLINK). */
/* ---- links ---- */

static void copy_str(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src ? src : "");
}

int netlink_link_get(const char *ifname, struct netlink_link *out)
{
	struct op op;
	memset(out, 0, sizeof(*out));
	if (begin(&op, ifname) < 0)
		return -1;
	struct rtnl_link *l = op.link;
	copy_str(out->name, sizeof(out->name), rtnl_link_get_name(l));
	out->index = rtnl_link_get_ifindex(l);
	out->flags = rtnl_link_get_flags(l);
	out->up = (out->flags & IFF_UP) != 0;
	out->running = (out->flags & IFF_RUNNING) != 0;
	out->mtu = rtnl_link_get_mtu(l);
	struct nl_addr *hw = rtnl_link_get_addr(l);
	if (hw && nl_addr_get_len(hw) <= sizeof(out->mac)) {
		out->mac_len = nl_addr_get_len(hw);
		memcpy(out->mac, nl_addr_get_binary_addr(hw), out->mac_len);
	}
	out->master_index = rtnl_link_get_master(l);
	if (out->master_index > 0) {
		char name[IF_NAMESIZE];
		if (if_indextoname((unsigned)out->master_index, name))
			copy_str(out->master, sizeof(out->master), name);
	}
	copy_str(out->kind, sizeof(out->kind), rtnl_link_get_type(l));
	struct netlink_stats *s = &out->stats;
	s->rx_packets = rtnl_link_get_stat(l, RTNL_LINK_RX_PACKETS);
	s->tx_packets = rtnl_link_get_stat(l, RTNL_LINK_TX_PACKETS);
	s->rx_bytes = rtnl_link_get_stat(l, RTNL_LINK_RX_BYTES);
	s->tx_bytes = rtnl_link_get_stat(l, RTNL_LINK_TX_BYTES);
	s->rx_errors = rtnl_link_get_stat(l, RTNL_LINK_RX_ERRORS);
	s->tx_errors = rtnl_link_get_stat(l, RTNL_LINK_TX_ERRORS);
	s->rx_dropped = rtnl_link_get_stat(l, RTNL_LINK_RX_DROPPED);
	s->tx_dropped = rtnl_link_get_stat(l, RTNL_LINK_TX_DROPPED);
	return done(&op, 0);
}

/* Looks ifname up, fills a change with set(change, arg) and applies it;
 * a failure names the interface and `what`. */
static int change_link(const char *ifname, const char *what,
		       void (*set)(struct rtnl_link *change, const void *arg), const void *arg)
{
	struct op op;
	if (begin(&op, ifname) < 0)
		return -1;
	struct rtnl_link *change = rtnl_link_alloc();
	if (!change)
		return done(&op, vmm_fail("%s: out of memory", ifname));
	set(change, arg);
	int err = rtnl_link_change(op.sk, op.link, change, 0);
	rtnl_link_put(change);
	if (err < 0)
		return done(&op, vmm_fail("%s: %s: %s", ifname, what, nl_geterror(err)));
	return done(&op, 0);
}

static void set_up_flag(struct rtnl_link *change, const void *arg)
{
	if (*(const bool *)arg)
		rtnl_link_set_flags(change, IFF_UP);
	else
		rtnl_link_unset_flags(change, IFF_UP);
}

int netlink_link_set_up(const char *ifname, bool up)
{
	return change_link(ifname, up ? "set up" : "set down", set_up_flag, &up);
}

static void set_addr(struct rtnl_link *change, const void *arg)
{
	rtnl_link_set_addr(change, (struct nl_addr *)arg);
}

int netlink_link_set_mac(const char *ifname, const uint8_t *mac, unsigned len)
{
	if (!mac || len == 0 || len > 32)
		return vmm_fail("%s: set MAC: bad address length %u", ifname ? ifname : "?", len);
	struct nl_addr *a = nl_addr_build(AF_LLC, mac, len);
	if (!a)
		return vmm_fail("%s: out of memory", ifname ? ifname : "?");
	int rc = change_link(ifname, "set MAC", set_addr, a);
	nl_addr_put(a);
	return rc;
}

static void set_mtu(struct rtnl_link *change, const void *arg)
{
	rtnl_link_set_mtu(change, *(const unsigned *)arg);
}

int netlink_link_set_mtu(const char *ifname, unsigned mtu)
{
	char what[32];
	snprintf(what, sizeof(what), "set MTU %u", mtu);
	return change_link(ifname, what, set_mtu, &mtu);
}

int netlink_link_set_master(const char *ifname, const char *master)
{
	struct op op;
	if (begin(&op, ifname) < 0)
		return -1;
	int master_index = 0, err;
	if (master && *master) {
		if (check_name(master) < 0)
			return done(&op, vmm_fail_context("%s: set master", ifname));
		struct rtnl_link *m = link_lookup(op.sk, master);
		if (!m)
			return done(&op, vmm_fail_context("%s: set master", ifname));
		master_index = rtnl_link_get_ifindex(m);
		rtnl_link_put(m);
		err = rtnl_link_enslave_ifindex(op.sk, master_index, rtnl_link_get_ifindex(op.link));
		if (err < 0)
			return done(&op, vmm_fail("%s: set master %s: %s", ifname, master, nl_geterror(err)));
	} else {
		err = rtnl_link_release_ifindex(op.sk, rtnl_link_get_ifindex(op.link));
		if (err < 0)
			return done(&op, vmm_fail("%s: unset master: %s", ifname, nl_geterror(err)));
	}
	return done(&op, 0);
}

int netlink_bridge_create(const char *ifname)
{
	if (check_name(ifname) < 0)
		return -1;
	struct nl_sock *sk = sock_open(ifname);
	if (!sk)
		return -1;
	/* Not rtnl_link_bridge_add: it lacks NLM_F_EXCL, so it would "create"
	 * over an existing link. */
	struct rtnl_link *link = rtnl_link_alloc();
	int err = link ? rtnl_link_set_type(link, "bridge") : -NLE_NOMEM;
	if (err >= 0) {
		rtnl_link_set_name(link, ifname);
		err = rtnl_link_add(sk, link, NLM_F_CREATE | NLM_F_EXCL);
	}
	if (link)
		rtnl_link_put(link);
	nl_socket_free(sk);
	if (err == -NLE_EXIST)
		return vmm_fail("%s: create bridge: an interface of that name exists", ifname);
	if (err < 0)
		return vmm_fail("%s: create bridge: %s", ifname, nl_geterror(err));
	return 0;
}

int netlink_link_delete(const char *ifname)
{
	struct op op;
	if (begin(&op, ifname) < 0)
		return -1;
	int err = rtnl_link_delete(op.sk, op.link);
	if (err < 0)
		return done(&op, vmm_fail("%s: delete link: %s", ifname, nl_geterror(err)));
	return done(&op, 0);
}

/* ---- addresses ---- */

/* "ADDR/PREFIX" -> an nl_addr with its prefix length, or NULL with a
 * message naming the text. */
static struct nl_addr *parse_cidr(const char *ifname, const char *cidr)
{
	if (!cidr) {
		vmm_fail("%s: no address given", ifname);
		return NULL;
	}
	const char *slash = strchr(cidr, '/');
	char host[INET6_ADDRSTRLEN + 8];
	if (!slash || (size_t)(slash - cidr) >= sizeof(host) || slash == cidr) {
		vmm_fail("%s: bad address %s (want ADDR/PREFIX, e.g. 10.0.2.1/24 or fd00::1/64)", ifname, cidr);
		return NULL;
	}
	memcpy(host, cidr, (size_t)(slash - cidr));
	host[slash - cidr] = '\0';

	uint8_t bin[16];
	int family, bits;
	if (inet_pton(AF_INET, host, bin) == 1)
		family = AF_INET, bits = 32;
	else if (inet_pton(AF_INET6, host, bin) == 1)
		family = AF_INET6, bits = 128;
	else {
		vmm_fail("%s: bad address %s (%s is neither IPv4 nor IPv6)", ifname, cidr, host);
		return NULL;
	}
	const char *p = slash + 1;
	unsigned prefix = 0;
	if (!*p || strlen(p) > 3) {
		vmm_fail("%s: bad address %s (prefix length missing or too long)", ifname, cidr);
		return NULL;
	}
	for (; *p; p++) {
		if (!isdigit((unsigned char)*p)) {
			vmm_fail("%s: bad address %s (prefix length is not a number)", ifname, cidr);
			return NULL;
		}
		prefix = prefix * 10 + (unsigned)(*p - '0');
	}
	if (prefix > (unsigned)bits) {
		vmm_fail("%s: bad address %s (prefix length %u > %d)", ifname, cidr, prefix, bits);
		return NULL;
	}
	struct nl_addr *a = nl_addr_build(family, bin, family == AF_INET ? 4 : 16);
	if (!a) {
		vmm_fail("%s: out of memory", ifname);
		return NULL;
	}
	nl_addr_set_prefixlen(a, (int)prefix);
	return a;
}

static int addr_change(const char *ifname, const char *cidr, bool add)
{
	if (check_name(ifname) < 0)
		return -1;
	struct nl_addr *local = parse_cidr(ifname, cidr);
	if (!local)
		return -1;
	struct op op;
	if (begin(&op, ifname) < 0) {
		nl_addr_put(local);
		return -1;
	}
	struct rtnl_addr *a = rtnl_addr_alloc();
	int rc = 0;
	if (!a) {
		rc = vmm_fail("%s: out of memory", ifname);
		goto out;
	}
	rtnl_addr_set_ifindex(a, rtnl_link_get_ifindex(op.link));
	rtnl_addr_set_family(a, nl_addr_get_family(local));
	int err = rtnl_addr_set_local(a, local);
	if (err >= 0) {
		rtnl_addr_set_prefixlen(a, (int)nl_addr_get_prefixlen(local));
		err = add ? rtnl_addr_add(op.sk, a, 0) : rtnl_addr_delete(op.sk, a, 0);
	}
	if (err < 0)
		rc = vmm_fail("%s: %s address %s: %s", ifname, add ? "add" : "delete", cidr, nl_geterror(err));
	rtnl_addr_put(a);
out:
	nl_addr_put(local);
	return done(&op, rc);
}

int netlink_addr_add(const char *ifname, const char *cidr)
{
	return addr_change(ifname, cidr, true);
}

int netlink_addr_del(const char *ifname, const char *cidr)
{
	return addr_change(ifname, cidr, false);
}

int netlink_addr_list(const char *ifname, struct netlink_addr **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	struct op op;
	if (begin(&op, ifname) < 0)
		return -1;
	struct nl_cache *cache = NULL;
	int err = rtnl_addr_alloc_cache(op.sk, &cache);
	if (err < 0)
		return done(&op, vmm_fail("%s: list addresses: %s", ifname, nl_geterror(err)));
	int ifindex = rtnl_link_get_ifindex(op.link);
	size_t cap = (size_t)nl_cache_nitems(cache), count = 0;
	struct netlink_addr *list = cap ? calloc(cap, sizeof(*list)) : NULL;
	if (cap && !list) {
		nl_cache_free(cache);
		return done(&op, vmm_fail("%s: out of memory", ifname));
	}
	for (struct nl_object *o = nl_cache_get_first(cache); o && count < cap; o = nl_cache_get_next(o)) {
		struct rtnl_addr *a = (struct rtnl_addr *)o;
		if (rtnl_addr_get_ifindex(a) != ifindex)
			continue;
		struct nl_addr *local = rtnl_addr_get_local(a);
		int family = rtnl_addr_get_family(a);
		if (!local || (family != AF_INET && family != AF_INET6))
			continue;
		char host[INET6_ADDRSTRLEN];
		if (!inet_ntop(family, nl_addr_get_binary_addr(local), host, sizeof(host)))
			continue;
		struct netlink_addr *e = &list[count++];
		e->family = family;
		e->prefixlen = (unsigned)rtnl_addr_get_prefixlen(a);
		snprintf(e->text, sizeof(e->text), "%s/%u", host, e->prefixlen);
	}
	nl_cache_free(cache);
	if (count == 0) {
		free(list);
		list = NULL;
	}
	*out = list;
	*n = count;
	return done(&op, 0);
}
