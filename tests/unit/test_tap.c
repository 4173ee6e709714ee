/* TAP backend on real TAP devices, inside a private network namespace
 * (needs root; exits 77, "skipped", otherwise). */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "check.h"
#include "netns.h"
#include "err.h"
#include "tap.h"

static int raw_tap(const char *name, short flags)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = flags;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void test_open_queues(void)
{
	struct tap t;
	CHECK_EQ(tap_open(&t, "vt0", 4), 0);
	CHECK(if_nametoindex("vt0") != 0);
	CHECK_EQ(t.nqueues, 4);
	CHECK(!t.adopted);
	CHECK(strcmp(t.ifname, "vt0") == 0);
	for (unsigned i = 0; i < 4; i++) {
		struct ifreq ifr;
		memset(&ifr, 0, sizeof(ifr));
		CHECK_EQ(ioctl(t.fds[i], TUNGETIFF, &ifr), 0);
		CHECK(strcmp(ifr.ifr_name, "vt0") == 0);
		CHECK_EQ(ifr.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE),
			 IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE);
		int hdr = 0;
		CHECK_EQ(ioctl(t.fds[i], TUNGETVNETHDRSZ, &hdr), 0);
		CHECK_EQ(hdr, TAP_VNET_HDR_LEN);
		CHECK(fcntl(t.fds[i], F_GETFL) & O_NONBLOCK);
		CHECK(fcntl(t.fds[i], F_GETFD) & FD_CLOEXEC);
	}
	/* queues: detach and attach, twice each (idempotent) */
	CHECK_EQ(tap_set_queue_enabled(&t, 3, false), 0);
	CHECK_EQ(tap_set_queue_enabled(&t, 3, false), 0);
	CHECK_EQ(tap_set_queue_enabled(&t, 3, true), 0);
	CHECK_EQ(tap_set_queue_enabled(&t, 3, true), 0);
	CHECK_EQ(tap_set_queue_enabled(&t, 4, true), -1);
	CHECK_CONTAINS(vmm_error(), "no queue 4");
	tap_close(&t);
	CHECK_EQ(if_nametoindex("vt0"), 0); /* not persistent: gone */

	CHECK_EQ(tap_open(&t, "vt0", 0), -1);
	CHECK_EQ(tap_open(&t, "vt0", TAP_MAX_QUEUES + 1), -1);
	CHECK_CONTAINS(vmm_error(), "queues");
}

static void test_probe_offloads(void)
{
	struct tap t;
	unsigned sup = 0;
	CHECK_EQ(tap_open(&t, "vt1", 1), 0);
	CHECK_EQ(tap_probe_offloads(&t, &sup), 0);
	CHECK(sup & TUN_F_CSUM);
	CHECK(sup & TUN_F_TSO4);
	CHECK(sup & TUN_F_TSO6);
	printf("     offloads 0x%x%s\n", sup, sup & TUN_F_UFO ? " (UFO accepted)" : " (UFO refused)");
	CHECK_EQ(tap_set_offloads(&t, TUN_F_CSUM | TUN_F_TSO4), 0);
	CHECK_EQ(t.offloads, TUN_F_CSUM | TUN_F_TSO4);
	/* probing leaves what was set */
	CHECK_EQ(tap_probe_offloads(&t, &sup), 0);
	CHECK_EQ(t.offloads, TUN_F_CSUM | TUN_F_TSO4);
	/* TSO without CSUM is refused by the kernel */
	CHECK_EQ(tap_set_offloads(&t, TUN_F_TSO4), -1);
	CHECK_CONTAINS(vmm_error(), "vt1");
	tap_close(&t);
}

static void test_adopt(void)
{
	struct tap t, a;
	CHECK_EQ(tap_open(&t, "vt2", 2), 0);
	int fds[2] = { dup(t.fds[0]), dup(t.fds[1]) };
	/* a blocking open file: adopt makes it non-blocking, never the reverse */
	int fl = fcntl(fds[1], F_GETFL);
	fcntl(fds[1], F_SETFL, fl & ~O_NONBLOCK);
	CHECK_EQ(tap_adopt(&a, fds, 2), 0);
	CHECK(a.adopted);
	CHECK_EQ(a.nqueues, 2);
	CHECK(strcmp(a.ifname, "vt2") == 0);
	CHECK(fcntl(fds[1], F_GETFL) & O_NONBLOCK);
	/* a detached queue is adopted too (TUNGETIFF answers EBADFD there) */
	CHECK_EQ(tap_set_queue_enabled(&a, 1, false), 0);
	struct tap b;
	int fds2[2] = { dup(a.fds[0]), dup(a.fds[1]) };
	CHECK_EQ(tap_adopt(&b, fds2, 2), 0);
	tap_close(&b);
	tap_close(&a);

	/* a pipe is not a TAP */
	int p[2];
	CHECK_EQ(pipe(p), 0);
	CHECK_EQ(tap_adopt(&a, p, 1), -1);
	CHECK_CONTAINS(vmm_error(), "not a TAP");
	close(p[0]);
	close(p[1]);

	/* queues of two different TAPs */
	struct tap u;
	CHECK_EQ(tap_open(&u, "vt3", 1), 0);
	int mixed[2] = { t.fds[0], u.fds[0] };
	CHECK_EQ(tap_adopt(&a, mixed, 2), -1);
	CHECK_CONTAINS(vmm_error(), "one TAP");
	/* the same fd twice */
	int twice[2] = { t.fds[0], t.fds[0] };
	CHECK_EQ(tap_adopt(&a, twice, 2), -1);
	CHECK_CONTAINS(vmm_error(), "twice");
	tap_close(&u);

	/* no vnet header / a 10-byte header: refused, and never changed */
	int novnet = raw_tap("vt4", IFF_TAP | IFF_NO_PI);
	CHECK(novnet >= 0);
	CHECK_EQ(tap_adopt(&a, &novnet, 1), -1);
	CHECK_CONTAINS(vmm_error(), "IFF_VNET_HDR");
	close(novnet);
	int hdr10 = raw_tap("vt5", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
	CHECK(hdr10 >= 0);
	CHECK_EQ(tap_adopt(&a, &hdr10, 1), -1);
	CHECK_CONTAINS(vmm_error(), "vnet header is 10 bytes");
	int hdr = 0;
	CHECK_EQ(ioctl(hdr10, TUNGETVNETHDRSZ, &hdr), 0);
	CHECK_EQ(hdr, 10);
	close(hdr10);
	/* a TUN is not a TAP */
	int tun = raw_tap("vt6", IFF_TUN | IFF_NO_PI | IFF_VNET_HDR);
	CHECK(tun >= 0);
	CHECK_EQ(tap_adopt(&a, &tun, 1), -1);
	CHECK_CONTAINS(vmm_error(), "TUN");
	close(tun);
	tap_close(&t);
}

static void test_open_conflicts(void)
{
	/* a single-queue TAP held by someone */
	int held = raw_tap("vt7", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
	CHECK(held >= 0);
	struct tap t;
	CHECK_EQ(tap_open(&t, "vt7", 2), -1);
	CHECK_CONTAINS(vmm_error(), "vt7");
	CHECK_CONTAINS(vmm_error(), "without multi_queue");
	CHECK_EQ(tap_open(&t, "vt7", 1), -1);
	CHECK_CONTAINS(vmm_error(), "held by another process");
	close(held);

	/* an existing interface of another kind */
	CHECK_EQ(tap_open(&t, "lo", 1), -1);
	CHECK_CONTAINS(vmm_error(), "lo");
}

static void test_persistent(void)
{
	CHECK_EQ(tap_create_persistent("vtp0", false), 0);
	CHECK(if_nametoindex("vtp0") != 0);
	CHECK_EQ(tap_create_persistent("vtp0", false), -1);
	CHECK_CONTAINS(vmm_error(), "exists");
	/* a single-queue persistent TAP opens with one queue */
	struct tap t;
	CHECK_EQ(tap_open(&t, "vtp0", 1), 0);
	tap_close(&t);
	CHECK(if_nametoindex("vtp0") != 0);
	CHECK_EQ(tap_delete_persistent("vtp0"), 0);
	CHECK_EQ(if_nametoindex("vtp0"), 0);

	CHECK_EQ(tap_create_persistent("vtp1", true), 0);
	CHECK_EQ(tap_open(&t, "vtp1", 3), 0);
	tap_close(&t);
	CHECK_EQ(tap_delete_persistent("vtp1"), 0);
	CHECK_EQ(if_nametoindex("vtp1"), 0);
	CHECK_EQ(tap_delete_persistent("vtp1"), -1);
	CHECK_CONTAINS(vmm_error(), "no such interface");
	CHECK_EQ(tap_delete_persistent("lo"), -1);
	CHECK_CONTAINS(vmm_error(), "lo");
	CHECK(if_nametoindex("lo") != 0);
}

static void test_bad_names(void)
{
	struct tap t;
	CHECK_EQ(tap_create_persistent("", false), -1);
	CHECK_CONTAINS(vmm_error(), "empty");
	CHECK_EQ(tap_create_persistent(NULL, false), -1);
	CHECK_EQ(tap_create_persistent("0123456789abcdef", false), -1);
	CHECK_CONTAINS(vmm_error(), "too long");
	CHECK_EQ(tap_create_persistent("0123456789abcde", false), 0); /* 15: the limit */
	CHECK_EQ(tap_delete_persistent("0123456789abcde"), 0);
	CHECK_EQ(tap_delete_persistent("a/b"), -1);
	CHECK_EQ(tap_open(&t, "a/b", 1), -1);
	CHECK_EQ(tap_open(&t, "", 1), -1);
	CHECK_EQ(tap_open(&t, "0123456789abcdefg", 1), -1);
	CHECK_CONTAINS(vmm_error(), "too long");
}

int main(void)
{
	int skip = enter_private_netns();
	if (skip)
		return skip;
	RUN(test_open_queues);
	RUN(test_probe_offloads);
	RUN(test_adopt);
	RUN(test_open_conflicts);
	RUN(test_persistent);
	RUN(test_bad_names);
	return CHECK_DONE();
}
