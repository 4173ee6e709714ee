/* core/netlink: every function, in a private network namespace (so nothing
 * on the host is touched), on lo, a bridge and a persistent TAP. Exits 77
 * (skipped) where a network namespace cannot be made (not root). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "netns.h"
#include "err.h"
#include "netlink.h"
#include "tap.h"

/* Does ifname carry the address text ("10.0.2.1/24")? -1 on error. */
static int has_addr(const char *ifname, const char *text)
{
	struct netlink_addr *list;
	size_t n;
	if (netlink_addr_list(ifname, &list, &n) < 0)
		return -1;
	int found = 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i].text, text) == 0)
			found = 1;
	free(list);
	return found;
}

/* One UDP datagram to 127.0.0.1: one packet out of and into lo. */
static void ping_lo(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	CHECK(s >= 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9) };
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_EQ(sendto(s, "x", 1, 0, (struct sockaddr *)&to, sizeof(to)), 1);
	close(s);
}

static void test_lo(void)
{
	struct netlink_link l;
	CHECK_EQ(netlink_link_get("lo", &l), 0);
	CHECK(strcmp(l.name, "lo") == 0);
	CHECK_EQ(l.index, 1);
	CHECK_EQ(l.mtu, 65536);
	CHECK_EQ(l.kind[0], 0);
	CHECK_EQ(l.master[0], 0);
	CHECK_EQ(l.master_index, 0);
	CHECK_EQ(l.mac_len, 6);
	CHECK(!l.up); /* a new namespace's lo is down */

	CHECK_EQ(netlink_link_set_up("lo", true), 0);
	CHECK_EQ(netlink_link_get("lo", &l), 0);
	CHECK(l.up);
	CHECK(l.flags & IFF_UP);
	CHECK(l.running);
	CHECK_EQ(has_addr("lo", "127.0.0.1/8"), 1);

	/* traffic on lo shows in its counters */
	struct netlink_stats before = l.stats;
	ping_lo();
	ping_lo();
	CHECK_EQ(netlink_link_get("lo", &l), 0);
	CHECK(l.stats.tx_packets >= before.tx_packets + 2);
	CHECK(l.stats.rx_packets >= before.rx_packets + 2);
	CHECK(l.stats.tx_bytes > before.tx_bytes);
	CHECK(l.stats.rx_bytes > before.rx_bytes);
}

static void test_addresses(void)
{
	CHECK_EQ(netlink_addr_add("lo", "10.9.9.9/32"), 0);
	CHECK_EQ(has_addr("lo", "10.9.9.9/32"), 1);
	CHECK_EQ(netlink_addr_add("lo", "10.9.9.9/32"), -1); /* already there */
	CHECK_CONTAINS(vmm_error(), "lo: add address 10.9.9.9/32: ");
	CHECK_EQ(netlink_addr_del("lo", "10.9.9.9/32"), 0);
	CHECK_EQ(has_addr("lo", "10.9.9.9/32"), 0);
	CHECK_EQ(netlink_addr_del("lo", "10.9.9.9/32"), -1);
	CHECK_CONTAINS(vmm_error(), "lo: delete address 10.9.9.9/32: ");

	CHECK_EQ(netlink_addr_add("lo", "fd00:1::5/128"), 0);
	CHECK_EQ(has_addr("lo", "fd00:1::5/128"), 1);
	CHECK_EQ(netlink_addr_del("lo", "fd00:1::5/128"), 0);
	CHECK_EQ(has_addr("lo", "fd00:1::5/128"), 0);

	struct netlink_addr *list;
	size_t n;
	CHECK_EQ(netlink_addr_list("lo", &list, &n), 0);
	CHECK(n >= 1);
	for (size_t i = 0; i < n; i++)
		CHECK(list[i].family == AF_INET || list[i].family == AF_INET6);
	free(list);
}

static void test_bad_input(void)
{
	static const char *bad[][2] = {
		{ "10.0.0.1/33", "prefix length 33 > 32" },
		{ "fd00::1/129", "prefix length 129 > 128" },
		{ "10.0.0.1", "want ADDR/PREFIX" },
		{ "10.0.0.1/", "prefix length missing" },
		{ "10.0.0.1/2x", "not a number" },
		{ "10.0.0.1/-1", "not a number" },
		{ "10.0.0.256/24", "neither IPv4 nor IPv6" },
		{ "eth0/24", "neither IPv4 nor IPv6" },
		{ "/24", "want ADDR/PREFIX" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_EQ(netlink_addr_add("lo", bad[i][0]), -1);
		CHECK_CONTAINS(vmm_error(), bad[i][0]);
		CHECK_CONTAINS(vmm_error(), bad[i][1]);
		CHECK_EQ(netlink_addr_del("lo", bad[i][0]), -1);
		CHECK_CONTAINS(vmm_error(), bad[i][0]);
	}
	CHECK_EQ(netlink_addr_add("lo", NULL), -1);

	struct netlink_link l;
	CHECK_EQ(netlink_link_get("nosuch0", &l), -1);
	CHECK_CONTAINS(vmm_error(), "nosuch0: no such interface");
	CHECK_EQ(netlink_link_set_up("nosuch0", true), -1);
	CHECK_CONTAINS(vmm_error(), "nosuch0: no such interface");
	CHECK_EQ(netlink_addr_add("nosuch0", "10.0.0.1/24"), -1);
	CHECK_CONTAINS(vmm_error(), "nosuch0: no such interface");
	struct netlink_addr *list;
	size_t n;
	CHECK_EQ(netlink_addr_list("nosuch0", &list, &n), -1);
	CHECK_CONTAINS(vmm_error(), "nosuch0: no such interface");
	CHECK_EQ(netlink_link_delete("nosuch0"), -1);
	CHECK_CONTAINS(vmm_error(), "nosuch0: no such interface");
	CHECK_EQ(netlink_link_get("a-name-much-too-long", &l), -1);
	CHECK_CONTAINS(vmm_error(), "longer than 15");
	CHECK_EQ(netlink_link_get("", &l), -1);
	CHECK_CONTAINS(vmm_error(), "empty interface name");
	CHECK_EQ(netlink_bridge_create("a-name-much-too-long"), -1);
	uint8_t mac[6] = { 0x02 };
	CHECK_EQ(netlink_link_set_mac("lo", mac, 0), -1);
	CHECK_CONTAINS(vmm_error(), "bad address length");
}

static void test_bridge(void)
{
	CHECK_EQ(netlink_bridge_create("tbr0"), 0);
	CHECK_EQ(netlink_bridge_create("tbr0"), -1);
	CHECK_CONTAINS(vmm_error(), "tbr0: create bridge: an interface of that name exists");

	struct netlink_link l;
	CHECK_EQ(netlink_link_get("tbr0", &l), 0);
	CHECK(strcmp(l.kind, "bridge") == 0);
	CHECK(l.index > 1);
	CHECK(!l.up);
	CHECK_EQ(l.mac_len, 6);

	const uint8_t mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
	CHECK_EQ(netlink_link_set_mac("tbr0", mac, 6), 0);
	CHECK_EQ(netlink_link_set_mtu("tbr0", 1400), 0);
	CHECK_EQ(netlink_link_set_up("tbr0", true), 0);
	CHECK_EQ(netlink_link_get("tbr0", &l), 0);
	CHECK(memcmp(l.mac, mac, 6) == 0);
	CHECK_EQ(l.mtu, 1400);
	CHECK(l.up);
	CHECK_EQ(netlink_link_set_mtu("tbr0", 10), -1); /* below the minimum */
	CHECK_CONTAINS(vmm_error(), "tbr0: set MTU 10: ");

	CHECK_EQ(netlink_addr_add("tbr0", "10.0.2.1/24"), 0);
	CHECK_EQ(netlink_addr_add("tbr0", "fd00:2::1/64"), 0);
	CHECK_EQ(has_addr("tbr0", "10.0.2.1/24"), 1);
	CHECK_EQ(has_addr("tbr0", "fd00:2::1/64"), 1);
	CHECK_EQ(netlink_addr_del("tbr0", "fd00:2::1/64"), 0);
	CHECK_EQ(has_addr("tbr0", "fd00:2::1/64"), 0);

	CHECK_EQ(netlink_link_set_up("tbr0", false), 0);
	CHECK_EQ(netlink_link_get("tbr0", &l), 0);
	CHECK(!l.up);
	CHECK(!l.running);
	/* a bridge cannot be a port of itself */
	CHECK_EQ(netlink_link_set_master("tbr0", "tbr0"), -1);
	CHECK_CONTAINS(vmm_error(), "tbr0: set master tbr0: ");
}

static void test_tap(void)
{
	if (tap_create_persistent("ttap0", false) < 0) {
		fprintf(stderr, "  tap_create_persistent: %s\n", vmm_error());
		check_failures++;
		return;
	}
	struct netlink_link l;
	CHECK_EQ(netlink_link_get("ttap0", &l), 0);
	CHECK(strcmp(l.kind, "tun") == 0);
	CHECK_EQ(l.mac_len, 6);
	CHECK_EQ(l.mtu, 1500);

	CHECK_EQ(netlink_link_set_master("ttap0", "tbr0"), 0);
	CHECK_EQ(netlink_link_get("ttap0", &l), 0);
	CHECK(strcmp(l.master, "tbr0") == 0);
	CHECK(l.master_index > 0);
	CHECK_EQ(netlink_link_set_master("ttap0", NULL), 0);
	CHECK_EQ(netlink_link_get("ttap0", &l), 0);
	CHECK_EQ(l.master[0], 0);
	CHECK_EQ(l.master_index, 0);
	CHECK_EQ(netlink_link_set_master("ttap0", "tbr0"), 0);
	CHECK_EQ(netlink_link_set_master("ttap0", ""), 0);
	CHECK_EQ(netlink_link_get("ttap0", &l), 0);
	CHECK_EQ(l.master[0], 0);
	CHECK_EQ(netlink_link_set_master("ttap0", "nosuch0"), -1);
	CHECK_CONTAINS(vmm_error(), "ttap0: set master: nosuch0: no such interface");
	CHECK_EQ(netlink_link_set_master("ttap0", "lo"), -1);
	CHECK_CONTAINS(vmm_error(), "ttap0: set master lo: ");

	/* a TAP with no one attached is up but has no carrier */
	CHECK_EQ(netlink_link_set_up("ttap0", true), 0);
	CHECK_EQ(netlink_link_get("ttap0", &l), 0);
	CHECK(l.up);
	CHECK(!l.running);
	const uint8_t mac[6] = { 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef };
	CHECK_EQ(netlink_link_set_mac("ttap0", mac, 6), 0);
	CHECK_EQ(netlink_link_get("ttap0", &l), 0);
	CHECK(memcmp(l.mac, mac, 6) == 0);
	const uint8_t multicast[6] = { 0x01, 0, 0, 0, 0, 1 };
	CHECK_EQ(netlink_link_set_mac("ttap0", multicast, 6), -1);
	CHECK_CONTAINS(vmm_error(), "ttap0: set MAC: ");

	CHECK_EQ(netlink_link_delete("ttap0"), 0);
	CHECK_EQ(netlink_link_get("ttap0", &l), -1);
	CHECK_CONTAINS(vmm_error(), "ttap0: no such interface");
}

static void test_delete(void)
{
	CHECK_EQ(netlink_link_delete("tbr0"), 0);
	struct netlink_link l;
	CHECK_EQ(netlink_link_get("tbr0", &l), -1);
	CHECK_CONTAINS(vmm_error(), "tbr0: no such interface");
	CHECK_EQ(netlink_link_delete("tbr0"), -1);
	CHECK_EQ(netlink_link_delete("lo"), -1); /* lo cannot go */
	CHECK_CONTAINS(vmm_error(), "lo: delete link: ");
}

int main(void)
{
	int skip = enter_private_netns();
	if (skip)
		return skip;
	RUN(test_lo);
	RUN(test_addresses);
	RUN(test_bad_input);
	RUN(test_bridge);
	RUN(test_tap);
	RUN(test_delete);
	return CHECK_DONE();
}
