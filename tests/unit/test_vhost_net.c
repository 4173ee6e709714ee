/* vhost-net: argument checks (anywhere), a missing /dev/vhost-net, and where
 * the device exists (the KVM test host) open + setup over a wrapped buffer. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "memory.h"
#include "vhost_net.h"

#define MiB (1024ull * 1024)

static int have_vhost(void)
{
	return access("/dev/vhost-net", F_OK) == 0;
}

static _Alignas(4096) uint8_t ram[2 * MiB];

/* A ring of `size` entries laid in ram at 64 KiB. */
static struct vhost_vring ring(uint16_t size, int kick, int call)
{
	uint8_t *base = ram + 64 * 1024;
	return (struct vhost_vring){
		.size = size,
		.desc = base,
		.avail = base + 16u * size,
		.used = base + 16u * size + 4096,
		.kick_fd = kick,
		.call_fd = call,
	};
}

static void test_missing_device(void)
{
	if (have_vhost()) {
		printf("  (skipped: /dev/vhost-net exists)\n");
		return;
	}
	struct vhost_net v;
	CHECK_EQ(vhost_net_open(&v, -1), -1);
	CHECK_CONTAINS(vmm_error(), "/dev/vhost-net");
	CHECK_CONTAINS(vmm_error(), "vhost_net module");
	CHECK_EQ(v.fd, -1);
	vhost_net_close(&v); /* harmless on a failed open */
}

static void test_adopt_wrong_fd(void)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0);
	struct vhost_net v;
	CHECK_EQ(vhost_net_open(&v, fd), -1);
	CHECK_CONTAINS(vmm_error(), "VHOST_SET_OWNER");
	CHECK_EQ(v.fd, -1);
	CHECK(fcntl(fd, F_GETFD) >= 0); /* an adopted fd stays the caller's */
	close(fd);
}

/* Refused before any ioctl, so these need no device. */
static void test_argument_checks(void)
{
	struct vhost_net v = { .fd = -1 };
	struct vhost_vring r = ring(256, 0, 0);
	CHECK_EQ(vhost_net_start(&v, 2, &r, 0), -1);
	CHECK_CONTAINS(vmm_error(), "vring 2");
	CHECK_CONTAINS(vmm_error(), "no such vring");
	CHECK_EQ(vhost_net_stop(&v, 5, NULL), -1);
	CHECK_CONTAINS(vmm_error(), "vring 5");
	CHECK_EQ(vhost_net_start(&v, 0, &r, 0), -1);
	CHECK_CONTAINS(vmm_error(), "not open");

	v.fd = 0; /* looks open; every check below fails before an ioctl */
	r = ring(100, 0, 0);
	CHECK_EQ(vhost_net_start(&v, 1, &r, 0), -1);
	CHECK_CONTAINS(vmm_error(), "size 100 is not a power of two");
	r = ring(0, 0, 0);
	CHECK_EQ(vhost_net_start(&v, 1, &r, 0), -1);
	CHECK_CONTAINS(vmm_error(), "size 0");
	CHECK_EQ(vhost_net_start(&v, 1, NULL, 0), -1);
	r = ring(256, 0, 0);
	r.desc = (uint8_t *)r.desc + 8;
	CHECK_EQ(vhost_net_start(&v, 0, &r, 0), -1);
	CHECK_CONTAINS(vmm_error(), "misaligned");
	r = ring(256, -1, 0);
	CHECK_EQ(vhost_net_start(&v, 0, &r, 0), -1);
	CHECK_CONTAINS(vmm_error(), "kick");
	r = ring(256, 0, -1);
	CHECK_EQ(vhost_net_start(&v, 0, &r, -1), -1);
	CHECK_CONTAINS(vmm_error(), "TAP fd");
	CHECK_EQ(vhost_net_stop(&v, 0, NULL), -1);
	CHECK_CONTAINS(vmm_error(), "vring 0 is not started");

	struct guest_mem m;
	CHECK_EQ(guest_mem_wrap(&m, ram, sizeof(ram)), 0);
	v.features = 1;
	CHECK_EQ(vhost_net_setup(&v, 2, &m), -1);
	CHECK_CONTAINS(vmm_error(), "not offered");
	CHECK_EQ(vhost_net_setup(&v, 0, NULL), -1);
	CHECK_CONTAINS(vmm_error(), "no guest memory");
	v.fd = -1;
	CHECK_EQ(vhost_net_setup(&v, 0, &m), -1);
	CHECK_CONTAINS(vmm_error(), "not open");
	guest_mem_destroy(&m);
}

/* The memory table goes to the kernel once per guest RAM mapping: set
 * ahead (at realize), it is not set again when the driver starts the
 * device. Seen without /dev/vhost-net: an ioctl on /dev/null fails. */
static void test_memory_table_set_once(void)
{
	struct guest_mem m;
	CHECK_EQ(guest_mem_wrap(&m, ram, sizeof(ram)), 0);
	struct vhost_net v = { .fd = open("/dev/null", O_RDWR | O_CLOEXEC) };
	CHECK(v.fd >= 0);
	CHECK_EQ(vhost_net_set_memory(&v, &m), -1); /* not set yet: the ioctl runs */
	CHECK_CONTAINS(vmm_error(), "VHOST_SET_MEM_TABLE (1 regions)");
	CHECK(v.mem_host == NULL);
	v.mem_host = m.host; /* as if the kernel had taken it */
	v.mem_size = m.size;
	CHECK_EQ(vhost_net_set_memory(&v, &m), 0); /* the same table: no ioctl */
	CHECK_EQ(vhost_net_setup(&v, 0, &m), -1);  /* features still go */
	CHECK_CONTAINS(vmm_error(), "VHOST_SET_FEATURES");
	struct guest_mem half;
	CHECK_EQ(guest_mem_wrap(&half, ram, MiB), 0);
	CHECK_EQ(vhost_net_set_memory(&v, &half), -1); /* another table: it goes again */
	CHECK_CONTAINS(vmm_error(), "VHOST_SET_MEM_TABLE");
	close(v.fd);
	guest_mem_destroy(&m);
	guest_mem_destroy(&half);
}

static void test_device(void)
{
	if (!have_vhost()) {
		printf("  (skipped: no /dev/vhost-net)\n");
		return;
	}
	struct vhost_net v;
	if (vhost_net_open(&v, -1) < 0) {
		CHECK_CONTAINS(vmm_error(), "/dev/vhost-net");
		fprintf(stderr, "  open: %s\n", vmm_error());
		check_failures++;
		return;
	}
	CHECK(v.fd >= 0);
	CHECK(v.features != 0);

	struct guest_mem m;
	CHECK_EQ(guest_mem_wrap(&m, ram, sizeof(ram)), 0);
	CHECK_EQ(vhost_net_setup(&v, 0, &m), 0);
	/* VIRTIO_F_VERSION_1 and VIRTIO_NET_F_MRG_RXBUF, where offered */
	uint64_t want = v.features & ((1ull << 32) | (1ull << 15));
	if (vhost_net_setup(&v, want, &m) < 0) {
		fprintf(stderr, "  setup 0x%llx: %s\n", (unsigned long long)want, vmm_error());
		check_failures++;
	}

	int kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct vhost_vring r = ring(256, kick, call);
	CHECK_EQ(vhost_net_start(&v, 2, &r, kick), -1);
	CHECK_CONTAINS(vmm_error(), "vring 2");
	/* A backend that is not a socket or TAP: the kernel refuses it, and
	 * the message names the ioctl and the vring. */
	CHECK_EQ(vhost_net_start(&v, 1, &r, kick), -1);
	CHECK_CONTAINS(vmm_error(), "VHOST_NET_SET_BACKEND vring 1");
	CHECK(!v.running[1]);
	close(kick);
	close(call);
	guest_mem_destroy(&m);
	vhost_net_close(&v);
	CHECK_EQ(v.fd, -1);
}

int main(void)
{
	RUN(test_missing_device);
	RUN(test_adopt_wrong_fd);
	RUN(test_argument_checks);
	RUN(test_memory_table_set_once);
	RUN(test_device);
	return CHECK_DONE();
}
