/* The vhost-user front end: the reply check on crafted bytes, then a real
 * qemu-storage-daemon (tests/unit/qsd.h) driven through a virtqueue this
 * test lays out by hand: features, configuration, the memory table, a
 * write and a read that land in the image file, the ring stopped where it
 * stood, and a daemon that dies. Without qemu-storage-daemon that second
 * part is skipped, saying so. */
#include <fcntl.h>
#include <sys/stat.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "check.h"
#include "fake_vhost_user.h"
#include "err.h"
#include "memory.h"
#include "qsd.h"
#include "vhost_user.h"
#include "virtio.h"

/* ---- crafted replies ---- */

static size_t reply(uint8_t *buf, uint32_t request, uint32_t flags, const void *payload, uint32_t size)
{
	uint32_t h[3] = { request, flags, size };
	memcpy(buf, h, sizeof(h)); /* x86: little-endian */
	memcpy(buf + 12, payload, size);
	return 12 + size;
}

#define OK_FLAGS (VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY)

static void test_parser_takes_each_kind_of_reply(void)
{
	uint8_t b[512];
	struct vhost_user_reply r;
	uint64_t v = 0x140000000ull;
	size_t n = reply(b, VHOST_USER_GET_FEATURES, OK_FLAGS, &v, 8);
	CHECK_EQ(vhost_user_parse_reply(b, n, 0, VHOST_USER_GET_FEATURES, false, 0, &r), 0);
	CHECK_EQ(r.u64, v);

	uint32_t state[2] = { 3, 77 };
	n = reply(b, VHOST_USER_GET_VRING_BASE, OK_FLAGS, state, 8);
	CHECK_EQ(vhost_user_parse_reply(b, n, 0, VHOST_USER_GET_VRING_BASE, false, 0, &r), 0);
	CHECK_EQ(r.state.index, 3);
	CHECK_EQ(r.state.num, 77);

	uint8_t cfg[12 + 8] = { 0 };
	uint32_t hdr[3] = { 0, 8, 0 };
	memcpy(cfg, hdr, 12);
	cfg[12] = 0x40;
	n = reply(b, VHOST_USER_GET_CONFIG, OK_FLAGS, cfg, sizeof(cfg));
	CHECK_EQ(vhost_user_parse_reply(b, n, 0, VHOST_USER_GET_CONFIG, false, 8, &r), 0);
	CHECK_EQ(r.config.size, 8);
	CHECK_EQ(r.config.data[0], 0x40);

	uint64_t zero = 0;
	n = reply(b, VHOST_USER_SET_MEM_TABLE, OK_FLAGS, &zero, 8);
	CHECK_EQ(vhost_user_parse_reply(b, n, 0, VHOST_USER_SET_MEM_TABLE, true, 0, &r), 0);

	uint8_t inflight[24] = { 0 };
	inflight[0] = 0x10;
	n = reply(b, VHOST_USER_GET_INFLIGHT_FD, OK_FLAGS, inflight, 24);
	CHECK_EQ(vhost_user_parse_reply(b, n, 1, VHOST_USER_GET_INFLIGHT_FD, false, 0, &r), 0);
	CHECK_EQ(r.inflight.mmap_size, 0x10);
}

/* Each bad reply is refused with a message that names the request. */
static void refused(const uint8_t *b, size_t n, unsigned nfds, uint32_t request, bool ack, uint32_t cfg,
		    const char *why)
{
	struct vhost_user_reply r;
	CHECK_EQ(vhost_user_parse_reply(b, n, nfds, request, ack, cfg, &r), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), vhost_user_request_name(request));
	CHECK_CONTAINS(vmm_error(), why);
}

static void test_parser_refuses_bad_replies(void)
{
	uint8_t b[512];
	uint64_t v = 1;
	size_t n = reply(b, VHOST_USER_GET_FEATURES, VHOST_USER_VERSION, &v, 8);
	refused(b, n, 0, VHOST_USER_GET_FEATURES, false, 0, "without the reply flag");
	n = reply(b, VHOST_USER_GET_FEATURES, VHOST_USER_FLAG_REPLY | 2, &v, 8);
	refused(b, n, 0, VHOST_USER_GET_FEATURES, false, 0, "version 2");
	n = reply(b, VHOST_USER_GET_QUEUE_NUM, OK_FLAGS, &v, 8);
	refused(b, n, 0, VHOST_USER_GET_FEATURES, false, 0, "answers GET_QUEUE_NUM");
	n = reply(b, VHOST_USER_GET_FEATURES, OK_FLAGS, &v, 4);
	refused(b, n, 0, VHOST_USER_GET_FEATURES, false, 0, "4 bytes, expected 8");
	n = reply(b, VHOST_USER_GET_VRING_BASE, OK_FLAGS, &v, 8);
	refused(b, n - 1, 0, VHOST_USER_GET_VRING_BASE, false, 0, "7 came");
	refused(b, 5, 0, VHOST_USER_GET_VRING_BASE, false, 0, "shorter than a header");
	n = reply(b, VHOST_USER_GET_FEATURES, OK_FLAGS, &v, 8);
	refused(b, n, 1, VHOST_USER_GET_FEATURES, false, 0, "1 file descriptors, expected 0");
	uint8_t inflight[24] = { 0 };
	n = reply(b, VHOST_USER_GET_INFLIGHT_FD, OK_FLAGS, inflight, 24);
	refused(b, n, 0, VHOST_USER_GET_INFLIGHT_FD, false, 0, "0 file descriptors, expected 1");
	uint8_t cfg[12 + 8] = { 0 };
	uint32_t hdr[3] = { 0, 4, 0 }; /* 4 bytes said, 8 asked */
	memcpy(cfg, hdr, 12);
	n = reply(b, VHOST_USER_GET_CONFIG, OK_FLAGS, cfg, sizeof(cfg));
	refused(b, n, 0, VHOST_USER_GET_CONFIG, false, 8, "4 configuration bytes, 8 asked");
	n = reply(b, VHOST_USER_GET_CONFIG, OK_FLAGS, cfg, sizeof(cfg));
	refused(b, n, 0, VHOST_USER_GET_CONFIG, false, 16, "expected 28");
	uint64_t status = 1;
	n = reply(b, VHOST_USER_SET_VRING_ADDR, OK_FLAGS, &status, 8);
	refused(b, n, 0, VHOST_USER_SET_VRING_ADDR, true, 0, "refused it (status 1)");
	n = reply(b, VHOST_USER_SET_OWNER, OK_FLAGS, &status, 8);
	refused(b, n, 0, VHOST_USER_SET_OWNER, false, 0, "8 bytes, expected 0");
	n = reply(b, VHOST_USER_SET_OWNER, OK_FLAGS, NULL, 0); /* found by fuzz_vhost_user */
	refused(b, n, 0, VHOST_USER_SET_OWNER, false, 0, "a reply to a request that has none");
}

/* ---- against qemu-storage-daemon ---- */

#define QSIZE 16
#define DESC_GPA  0x1000
#define AVAIL_GPA 0x2000
#define USED_GPA  0x3000
#define HDR_GPA   0x10000
#define DATA_GPA  0x11000
#define STATUS_GPA 0x12000
#define READ_GPA  0x13000
#define SECTOR 8 /* where the test writes, in 512-byte sectors */

static char dir[64];

static void remove_dir(void)
{
	char cmd[96];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (dir[0] && system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

static void *gpa(struct guest_mem *m, uint64_t a, uint64_t len) { return guest_mem_ptr(m, a, len); }

/* Puts a three-descriptor virtio-blk request (header, data, status) on the
 * ring at avail slot `slot`, descriptors from 3 * slot, then kicks. */
static void submit(struct guest_mem *m, uint16_t slot, uint32_t type, uint64_t data_gpa, int kick)
{
	struct vq_desc *d = gpa(m, DESC_GPA, QSIZE * sizeof(*d));
	uint16_t i = (uint16_t)(3 * slot);
	uint8_t *hdr = gpa(m, HDR_GPA + 16 * slot, 16);
	memset(hdr, 0, 16);
	memcpy(hdr, &type, 4);
	uint64_t sector = SECTOR;
	memcpy(hdr + 8, &sector, 8);
	d[i] = (struct vq_desc){ HDR_GPA + 16 * slot, 16, VQ_DESC_F_NEXT, (uint16_t)(i + 1) };
	d[i + 1] = (struct vq_desc){ data_gpa, 4096,
				     (uint16_t)(VQ_DESC_F_NEXT | (type == 0 ? VQ_DESC_F_WRITE : 0)), (uint16_t)(i + 2) };
	d[i + 2] = (struct vq_desc){ STATUS_GPA + slot, 1, VQ_DESC_F_WRITE, 0 };
	*(uint8_t *)gpa(m, STATUS_GPA + slot, 1) = 0xff;
	uint16_t *avail = gpa(m, AVAIL_GPA, 4 + 2 * QSIZE);
	avail[2 + slot % QSIZE] = i;
	__atomic_store_n(&avail[1], (uint16_t)(slot + 1), __ATOMIC_RELEASE);
	uint64_t one = 1;
	CHECK_EQ(write(kick, &one, 8), 8);
}

/* Waits for the call eventfd and the used index to reach n. */
static bool completed(struct guest_mem *m, int call, uint16_t n)
{
	uint16_t *used = gpa(m, USED_GPA, 4);
	for (int tries = 0; tries < 100; tries++) {
		if (__atomic_load_n(&used[1], __ATOMIC_ACQUIRE) == n)
			return true;
		struct pollfd p = { .fd = call, .events = POLLIN };
		if (poll(&p, 1, 100) == 1) {
			uint64_t c;
			CHECK_EQ(read(call, &c, 8), 8);
		}
	}
	return false;
}

static void test_a_real_daemon_serves_a_ring(void)
{
	char image[96], sock[96];
	snprintf(image, sizeof(image), "%s/disk.img", dir);
	snprintf(sock, sizeof(sock), "%s/vub.sock", dir);
	struct qsd q;
	if (qsd_start(&q, image, 8 << 20, sock)) {
		fprintf(stderr, "  %s\n", vmm_error());
		CHECK(!"qsd_start");
		return;
	}
	struct guest_mem m;
	CHECK_EQ(guest_mem_create(&m, 16 << 20, "test-vhost-user"), 0);
	struct vhost_user u;
	CHECK_EQ(vhost_user_connect(&u, "vub0", sock), 0);
	uint64_t wanted = (1ull << VHOST_USER_PROTOCOL_F_MQ) | (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |
			  (1ull << VHOST_USER_PROTOCOL_F_CONFIG);
	CHECK_EQ(vhost_user_handshake(&u, wanted), 0);
	CHECK(u.features & VIRTIO_BIT(VIRTIO_F_VERSION_1));
	CHECK(u.features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES));
	CHECK(u.protocol_features & (1ull << VHOST_USER_PROTOCOL_F_CONFIG));
	CHECK((u.protocol_features & ~wanted) == 0);
	printf("  qemu-storage-daemon: features 0x%llx, protocol features 0x%llx, %u queues\n",
	       (unsigned long long)u.features, (unsigned long long)u.protocol_features, u.queue_num);
	CHECK_EQ(vhost_user_set_features(&u, VIRTIO_BIT(VIRTIO_F_VERSION_1)), 0);
	CHECK_EQ(vhost_user_set_mem_table(&u, &m), 0);
	uint64_t capacity = 0;
	CHECK_EQ(vhost_user_get_config(&u, 0, &capacity, 8), 0);
	CHECK_EQ(capacity, (8 << 20) / 512);

	int kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct vhost_vring r = {
		.size = QSIZE, .last_avail = 0,
		.desc = gpa(&m, DESC_GPA, 16), .avail = gpa(&m, AVAIL_GPA, 4), .used = gpa(&m, USED_GPA, 4),
		.kick_fd = kick, .call_fd = call,
	};
	CHECK_EQ(vhost_user_vring_start(&u, 0, &r), 0);

	uint8_t *data = gpa(&m, DATA_GPA, 4096);
	for (int i = 0; i < 4096; i++)
		data[i] = (uint8_t)(i * 7 + 1);
	submit(&m, 0, 1 /* VIRTIO_BLK_T_OUT */, DATA_GPA, kick);
	CHECK(completed(&m, call, 1));
	CHECK_EQ(*(uint8_t *)gpa(&m, STATUS_GPA, 1), 0);
	submit(&m, 1, 0 /* VIRTIO_BLK_T_IN */, READ_GPA, kick);
	CHECK(completed(&m, call, 2));
	CHECK_EQ(*(uint8_t *)gpa(&m, STATUS_GPA + 1, 1), 0);
	CHECK(memcmp(gpa(&m, READ_GPA, 4096), data, 4096) == 0);

	uint16_t last = 0xffff;
	CHECK_EQ(vhost_user_vring_stop(&u, 0, &last), 0);
	CHECK_EQ(last, 2);

	/* a request the guest queued while the ring was stopped (as around a
	 * guest reset): the daemon serves it the moment the ring starts again,
	 * and signals it through the call fd, which it must have by then (it
	 * closed the old one at GET_VRING_BASE) */
	submit(&m, 2, 0 /* VIRTIO_BLK_T_IN */, READ_GPA, kick);
	r.last_avail = last;
	CHECK_EQ(vhost_user_vring_start(&u, 0, &r), 0);
	CHECK(completed(&m, call, 3));
	CHECK_EQ(*(uint8_t *)gpa(&m, STATUS_GPA + 2, 1), 0);
	CHECK_EQ(vhost_user_vring_stop(&u, 0, &last), 0);
	CHECK_EQ(last, 3);
	r.last_avail = 0;

	/* the write is in the image file */
	uint8_t back[4096];
	int fd = open(image, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK_EQ(pread(fd, back, sizeof(back), SECTOR * 512), sizeof(back));
	CHECK(memcmp(back, data, sizeof(back)) == 0);
	close(fd);

	/* a new session right after this front end hung up, with the same
	 * ring set up again from the start (what a front end does that cannot
	 * use the old session's addresses) */
	vhost_user_close(&u);
	memset(gpa(&m, USED_GPA, 4 + 8 * QSIZE), 0, 4 + 8 * QSIZE);
	memset(gpa(&m, AVAIL_GPA, 4 + 2 * QSIZE), 0, 4 + 2 * QSIZE);
	CHECK_EQ(vhost_user_connect(&u, "vub0", sock), 0);
	CHECK_EQ(vhost_user_handshake(&u, wanted), 0);
	CHECK_EQ(vhost_user_set_features(&u, VIRTIO_BIT(VIRTIO_F_VERSION_1)), 0);
	CHECK_EQ(vhost_user_set_mem_table(&u, &m), 0);
	CHECK_EQ(vhost_user_vring_start(&u, 0, &r), 0);
	memset(gpa(&m, READ_GPA, 4096), 0, 4096);
	submit(&m, 0, 0 /* VIRTIO_BLK_T_IN */, READ_GPA, kick);
	CHECK(completed(&m, call, 1));
	CHECK(memcmp(gpa(&m, READ_GPA, 4096), data, 4096) == 0);

	/* the daemon dies: the next request fails, naming the cause, and the
	 * connection stays broken */
	qsd_kill(&q);
	CHECK_EQ(vhost_user_check_idle(&u), (unsigned long long)-1);
	CHECK(vhost_user_broken(&u));
	CHECK_CONTAINS(vmm_error(), "closed the connection");
	CHECK_EQ(vhost_user_get_config(&u, 0, &capacity, 8), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "vub0: vhost-user:");

	vhost_user_close(&u);
	close(kick);
	close(call);
	guest_mem_destroy(&m);
}

static void test_a_socket_nobody_serves_is_named(void)
{
	struct vhost_user u;
	char sock[96];
	snprintf(sock, sizeof(sock), "%s/nobody.sock", dir);
	CHECK_EQ(vhost_user_connect(&u, "vub1", sock), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), sock);
	char longer[200];
	memset(longer, 'a', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	CHECK_EQ(vhost_user_connect(&u, "vub1", longer), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "too long");
}

/* ---- the inflight region ---- */

#define IQ 8 /* queue size of the regions below */

static void region_init(uint8_t *r, uint16_t version, uint16_t desc_num, uint16_t used_idx)
{
	memset(r, 0, VHOST_USER_INFLIGHT_HDR + VHOST_USER_INFLIGHT_DESC * IQ);
	memcpy(r + 8, &version, 2);
	memcpy(r + 10, &desc_num, 2);
	memcpy(r + 14, &used_idx, 2);
}

static void region_desc(uint8_t *r, uint16_t i, uint8_t inflight, uint16_t next)
{
	uint8_t *e = r + VHOST_USER_INFLIGHT_HDR + VHOST_USER_INFLIGHT_DESC * i;
	e[0] = inflight;
	memcpy(e + 6, &next, 2);
}

static void test_inflight_position_counts_what_the_backend_has_in_flight(void)
{
	uint8_t r[VHOST_USER_INFLIGHT_HDR + VHOST_USER_INFLIGHT_DESC * IQ];
	size_t len = sizeof(r);
	uint16_t last = 0;

	/* never written: nothing to say */
	region_init(r, 0, 0, 0);
	CHECK_EQ(vhost_user_inflight_position(r, len, IQ, 5, 0, &last), 1);

	/* three popped, none completed past the ring's used index 5 */
	region_init(r, 1, IQ, 5);
	region_desc(r, 1, 1, 0), region_desc(r, 4, 1, 0), region_desc(r, 6, 1, 0);
	CHECK_EQ(vhost_user_inflight_position(r, len, IQ, 5, 0, &last), 0);
	CHECK_EQ(last, 8);

	/* the last batch (heads 4 then 1) is in the used ring (7) but its
	 * entries are not cleared yet: only head 6 is still in flight */
	region_init(r, 1, IQ, 5);
	memcpy(r + 12, &(uint16_t){ 4 }, 2); /* last_batch_head */
	region_desc(r, 4, 1, 1), region_desc(r, 1, 1, 0), region_desc(r, 6, 1, 0);
	CHECK_EQ(vhost_user_inflight_position(r, len, IQ, 7, 0, &last), 0);
	CHECK_EQ(last, 8);

	/* the indices wrap */
	region_init(r, 1, IQ, 0xffff);
	region_desc(r, 2, 1, 0);
	CHECK_EQ(vhost_user_inflight_position(r, len, IQ, 0xffff, 0, &last), 0);
	CHECK_EQ(last, 0);

	/* what cannot be right is refused, naming the queue and the field */
	region_init(r, 2, IQ, 0);
	CHECK_EQ(vhost_user_inflight_position(r, len, IQ, 0, 3, &last), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "queue 3: version 2");
	region_init(r, 1, IQ / 2, 0);
	CHECK_EQ(vhost_user_inflight_position(r, len, IQ, 0, 0, &last), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "desc_num 4, the queue has 8");
	region_init(r, 1, IQ, 0);
	region_desc(r, 3, 7, 0);
	CHECK_EQ(vhost_user_inflight_position(r, len, IQ, 0, 0, &last), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "descriptor 3 has inflight 7");
	region_init(r, 1, IQ, 0);
	CHECK_EQ(vhost_user_inflight_position(r, len, IQ, IQ + 1, 0, &last), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "used_idx 0, the ring's is 9");
	region_init(r, 1, IQ, 0); /* a batch list that leaves the queue */
	memcpy(r + 12, &(uint16_t){ 2 }, 2);
	region_desc(r, 2, 1, 200);
	CHECK_EQ(vhost_user_inflight_position(r, len, IQ, 2, 0, &last), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "out of the queue");
	region_init(r, 1, IQ, 0); /* one that loops */
	memcpy(r + 12, &(uint16_t){ 2 }, 2);
	region_desc(r, 2, 1, 2);
	CHECK_EQ(vhost_user_inflight_position(r, len, IQ, 2, 0, &last), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "twice");
	CHECK_EQ(vhost_user_inflight_position(r, len - 1, IQ, 0, 0, &last), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "bytes for a queue of 8");
}

/* The order a ring starts in: its call fd before its kick fd (a backend
 * may start serving at the kick), each time it starts. */
static void test_a_ring_gets_its_call_fd_before_its_kick(void)
{
	char sock[96];
	snprintf(sock, sizeof(sock), "%s/fake-order.sock", dir);
	struct fake_vu f;
	fake_vu_defaults(&f);
	CHECK_EQ(fake_vu_start(&f, sock), 0);
	struct vhost_user u;
	CHECK_EQ(vhost_user_connect(&u, "vub3", sock), 0);
	CHECK_EQ(vhost_user_handshake(&u, 1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK), 0);
	CHECK_EQ(vhost_user_set_features(&u, VIRTIO_BIT(VIRTIO_F_VERSION_1)), 0);
	static _Alignas(16) uint8_t ring[4096];
	int kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct vhost_vring r = { .size = 8, .desc = ring, .avail = ring + 1024, .used = ring + 2048,
				 .kick_fd = kick, .call_fd = call };
	for (int round = 0; round < 2; round++) { /* start, stop, start again */
		CHECK_EQ(vhost_user_vring_start(&u, 0, &r), 0);
		uint16_t last;
		CHECK_EQ(vhost_user_vring_stop(&u, 0, &last), 0);
	}
	vhost_user_close(&u);
	fake_vu_stop(&f);
	CHECK_EQ(f.counts[VHOST_USER_SET_VRING_KICK], 2);
	CHECK_EQ(strlen(f.error), 0);
	if (f.error[0])
		fprintf(stderr, "  the backend saw: %s\n", f.error);
	close(kick);
	close(call);
}

static void test_a_backend_with_inflight_shmfd_hands_out_its_region(void)
{
	char sock[96];
	snprintf(sock, sizeof(sock), "%s/fake.sock", dir);
	struct fake_vu f;
	fake_vu_defaults(&f);
	CHECK_EQ(fake_vu_start(&f, sock), 0);
	uint64_t wanted = (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) | (1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD);
	struct vhost_user u;
	CHECK_EQ(vhost_user_connect(&u, "vub2", sock), 0);
	CHECK_EQ(vhost_user_handshake(&u, wanted), 0);
	CHECK(u.protocol_features & (1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD));
	CHECK_EQ(vhost_user_set_features(&u, VIRTIO_BIT(VIRTIO_F_VERSION_1)), 0);

	struct vhost_user_inflight in;
	int fd = -1;
	CHECK_EQ(vhost_user_get_inflight(&u, 2, 128, &in, &fd), 0);
	CHECK(fd >= 0);
	CHECK_EQ(in.num_queues, 2);
	CHECK_EQ(in.queue_size, 128);
	struct stat st;
	CHECK_EQ(fstat(fd, &st), 0);
	CHECK_EQ(st.st_ino, f.inflight_ino); /* the backend's region itself */
	CHECK_EQ(vhost_user_set_inflight(&u, &in, fd), 0);
	CHECK_EQ(f.set_inflight_ino, f.inflight_ino);

	/* what the backend marks is what the front end reads back */
	uint16_t last = 0xffff;
	CHECK_EQ(vhost_user_inflight_read(fd, &in, 1, 0, &last), 0);
	CHECK_EQ(last, 0);
	CHECK_EQ(fake_vu_mark_inflight(&f, 1, 17, true, 10), 0);
	CHECK_EQ(fake_vu_mark_inflight(&f, 1, 3, true, 10), 0);
	CHECK_EQ(vhost_user_inflight_read(fd, &in, 1, 10, &last), 0);
	CHECK_EQ(last, 12);
	CHECK_EQ(vhost_user_inflight_read(fd, &in, 0, 0, &last), 0);
	CHECK_EQ(last, 0);
	CHECK_EQ(vhost_user_inflight_read(fd, &in, 2, 10, &last), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "queue 2 of 2");
	close(fd);
	vhost_user_close(&u);

	/* a region the fd does not hold is refused, and the connection broken */
	f.inflight_overstate = 1 << 20;
	CHECK_EQ(vhost_user_connect(&u, "vub2", sock), 0);
	CHECK_EQ(vhost_user_handshake(&u, wanted), 0);
	CHECK_EQ(vhost_user_get_inflight(&u, 2, 128, &in, &fd), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "GET_INFLIGHT_FD: its fd holds");
	CHECK_EQ(fd, -1);
	CHECK(vhost_user_broken(&u));
	vhost_user_close(&u);

	/* without INFLIGHT_SHMFD asked, it is not negotiated */
	CHECK_EQ(vhost_user_connect(&u, "vub2", sock), 0);
	CHECK_EQ(vhost_user_handshake(&u, 1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK), 0);
	CHECK(!(u.protocol_features & (1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)));
	CHECK_EQ(vhost_user_get_inflight(&u, 2, 128, &in, &fd), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "INFLIGHT_SHMFD was not negotiated");
	vhost_user_close(&u);
	fake_vu_stop(&f);
}

int main(void)
{
	RUN(test_parser_takes_each_kind_of_reply);
	RUN(test_parser_refuses_bad_replies);
	snprintf(dir, sizeof(dir), "/tmp/test-vhost-user.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	atexit(remove_dir);
	RUN(test_a_socket_nobody_serves_is_named);
	RUN(test_inflight_position_counts_what_the_backend_has_in_flight);
	RUN(test_a_ring_gets_its_call_fd_before_its_kick);
	RUN(test_a_backend_with_inflight_shmfd_hands_out_its_region);
	if (qsd_available())
		RUN(test_a_real_daemon_serves_a_ring);
	else
		printf("skip test_a_real_daemon_serves_a_ring: qemu-storage-daemon is not installed\n");
	return CHECK_DONE();
}
