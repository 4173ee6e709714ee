/* Host network links through rtnetlink (libnl-route-3): the mechanism under
 * vmm.net and the migration switch-over (down old, move addresses, up new).
 *
 * Every function names the interface; each call opens its own netlink socket
 * in the calling thread's network namespace, so there is no shared state (any
 * thread may call, though the VMM does it from the main thread only).
 * Failures return -1 with "ifname: what failed: <libnl's text>"; a missing
 * interface gives "ifname: no such interface". */
#ifndef VMM_NETLINK_H
#define VMM_NETLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <net/if.h>

#define NETLINK_ADDR_STRLEN 52 /* "xxxx:...:xxxx/128" and an IPv4-mapped tail */

struct netlink_stats {
	uint64_t rx_packets, tx_packets;
	uint64_t rx_bytes, tx_bytes;
	uint64_t rx_errors, tx_errors;
	uint64_t rx_dropped, tx_dropped;
};

struct netlink_link {
	char name[IFNAMSIZ];
	int index;
	unsigned flags;          /* IFF_* */
	bool up;                 /* IFF_UP: administratively up */
	bool running;            /* IFF_RUNNING: carrier and up */
	unsigned mtu;
	unsigned mac_len;        /* 6 for Ethernet, 0 if the link has none (lo has 6 zeros) */
	uint8_t mac[32];
	char master[IFNAMSIZ];   /* "" if none */
	int master_index;        /* 0 if none */
	char kind[32];           /* IFLA_INFO_KIND ("tun", "bridge", "veth"), "" if none */
	struct netlink_stats stats;
};

struct netlink_addr {
	int family;                      /* AF_INET or AF_INET6 */
	unsigned prefixlen;
	char text[NETLINK_ADDR_STRLEN];  /* "10.0.2.1/24", "fd00::1/64" */
};

/* Reads one link. */
int netlink_link_get(const char *ifname, struct netlink_link *out);

/* IFF_UP on or off. */
int netlink_link_set_up(const char *ifname, bool up);
/* Sets the hardware address (len bytes, 6 for Ethernet). */
int netlink_link_set_mac(const char *ifname, const uint8_t *mac, unsigned len);
int netlink_link_set_mtu(const char *ifname, unsigned mtu);
/* Makes ifname a port of master (a bridge), or no one's port if master is
 * NULL or "". */
int netlink_link_set_master(const char *ifname, const char *master);
/* Creates a bridge (down, no ports). */
int netlink_bridge_create(const char *ifname);
/* Deletes a link of any kind (bridge, veth, TAP, ...). */
int netlink_link_delete(const char *ifname);

/* Adds or removes an address given as "ADDR/PREFIX" (IPv4 or IPv6); the
 * prefix length is required and checked against the family (at most 32 or
 * 128). */
int netlink_addr_add(const char *ifname, const char *cidr);
int netlink_addr_del(const char *ifname, const char *cidr);
/* The addresses of ifname (IPv4 then IPv6, as the kernel lists them) in a
 * malloc'd array the caller frees; *n may be 0 (and *out NULL). */
int netlink_addr_list(const char *ifname, struct netlink_addr **out, size_t *n);

#endif
