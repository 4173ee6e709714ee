/* virtio-blk on a temporary image, no KVM: this test plays the guest
 * driver on a 4 MiB buffer (rings, request headers, data, status bytes)
 * and checks what reaches the image with pread, for both I/O engines
 * (io_uring where this machine allows it, and the thread pool). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "err.h"
#include "guest_driver.h"
#include "migstream.h"
#include "virtio_blk.h"
#include "xorshift.h"

#define NQ 2
#define IMAGE_SIZE (8 * MiB)
#define SECTORS (IMAGE_SIZE / 512)
#define HDR_GPA    0x100000ull /* request headers, 16 bytes apart */
#define STATUS_GPA 0x110000ull /* status bytes, 1 apart */
#define DATA_GPA   0x200000ull /* data, up to 1 MiB */
#define READ_GPA   0x300000ull /* read-back buffers */

static struct guest_mem mem;
static uv_loop_t loop;
static char dir[64], image[96];
static int image_fd = -1; /* the test's own view of the image */
static enum blk_engine engine;
static struct virtio_blk *blk;
static struct virtio_device *vd;
static unsigned signals[NQ];

static void t_signal(void *t, unsigned q)
{
	(void)t;
	if (q < NQ)
		signals[q]++;
}

static const struct virtio_transport_ops fake_transport = { .signal_queue = t_signal };

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Runs the loop until queue q has `count` used entries the driver has not
 * taken, or 2 s passed. */
static bool wait_used(unsigned q, unsigned count)
{
	double end = now_ms() + 2000;
	while ((uint16_t)(used_idx(q) - gqs[q].used_seen) < count) {
		if (now_ms() > end)
			return false;
		uv_run(&loop, UV_RUN_NOWAIT);
		usleep(200);
	}
	return true;
}

static struct virtio_blk *new_disk(bool readonly, enum blk_cache cache, bool defer_lock, int fd)
{
	struct virtio_blk_options o = {
		.name = "disk0",
		.path = image,
		.fd = fd,
		.readonly = readonly,
		.cache = cache,
		.engine = engine,
		.serial = "LUAVMM-SERIAL-0123",
		.queues = NQ,
		.queue_size = 1024,
		.defer_lock = defer_lock,
	};
	return virtio_blk_new(&o, &mem, &loop);
}

static void use(struct virtio_blk *b)
{
	blk = b;
	vd = virtio_blk_device(b);
	vd->transport = &fake_transport;
}

static void setup(uint64_t features)
{
	virtio_reset(vd);
	memset(signals, 0, sizeof(signals));
	CHECK_EQ(guest_driver_start(vd, features, NQ), 0);
}

static bool broken(void)
{
	return vd->status & VIRTIO_STATUS_NEEDS_RESET;
}

static void put_hdr(unsigned slot, uint32_t type, uint64_t sector)
{
	uint8_t *h = guest + HDR_GPA + 16 * slot;
	memset(h, 0, 16);
	memcpy(h, &type, 4); /* little-endian host */
	memcpy(h + 8, &sector, 8);
}

/* A request in queue q: header, the data segments, the status byte
 * (0xee until the device writes it). Returns the chain's head. */
static uint16_t request(unsigned q, unsigned slot, uint32_t type, uint64_t sector, const struct seg *data,
			unsigned ndata)
{
	struct seg s[16];
	put_hdr(slot, type, sector);
	s[0] = (struct seg){ HDR_GPA + 16 * slot, 16, false };
	for (unsigned i = 0; i < ndata; i++)
		s[1 + i] = data[i];
	guest[STATUS_GPA + slot] = 0xee;
	s[1 + ndata] = (struct seg){ STATUS_GPA + slot, 1, true };
	return add_chain(q, s, ndata + 2);
}

/* Kicks q, waits for one completion and returns its status byte. */
static int run_one(unsigned q, unsigned slot, uint32_t *len)
{
	vd->ops->queue_notify(vd, q);
	if (!wait_used(q, 1))
		return -1;
	uint16_t id;
	uint32_t l;
	CHECK(get_used(q, &id, &l));
	if (len)
		*len = l;
	return guest[STATUS_GPA + slot];
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint32_t x = (uint32_t)seed | 1;
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)xorshift32(&x);
}

static bool image_equals(uint64_t off, const void *want, size_t n)
{
	uint8_t *buf = malloc(n);
	bool ok = buf && pread(image_fd, buf, n, (off_t)off) == (ssize_t)n && !memcmp(buf, want, n);
	free(buf);
	return ok;
}

static uint64_t features_for(void)
{
	return vd->host_features & ~VIRTIO_BIT(VIRTIO_BLK_F_RO);
}

/* ---- cases ---- */

static void test_config_space(void)
{
	uint8_t cfg[VIRTIO_BLK_CONFIG_SIZE];
	vd->ops->config_read(vd, 0, cfg, sizeof(cfg));
	uint64_t cap;
	uint32_t seg_max, blk_size, size_max;
	uint16_t nq;
	memcpy(&cap, cfg + VIRTIO_BLK_CFG_CAPACITY, 8);
	memcpy(&size_max, cfg + VIRTIO_BLK_CFG_SIZE_MAX, 4);
	memcpy(&seg_max, cfg + VIRTIO_BLK_CFG_SEG_MAX, 4);
	memcpy(&blk_size, cfg + VIRTIO_BLK_CFG_BLK_SIZE, 4);
	memcpy(&nq, cfg + VIRTIO_BLK_CFG_NUM_QUEUES, 2);
	CHECK_EQ(cap, SECTORS);
	CHECK_EQ(seg_max, 254);
	CHECK_EQ(size_max, VIRTIO_BLK_SIZE_MAX);
	CHECK_EQ(blk_size, 512);
	CHECK_EQ(nq, NQ);
	CHECK_EQ(cfg[VIRTIO_BLK_CFG_WRITEBACK], 1);
	uint64_t f = vd->host_features;
	CHECK(f & VIRTIO_BIT(VIRTIO_F_VERSION_1));
	CHECK(f & VIRTIO_BIT(VIRTIO_BLK_F_MQ));
	CHECK(f & VIRTIO_BIT(VIRTIO_BLK_F_FLUSH));
	CHECK(f & VIRTIO_BIT(VIRTIO_BLK_F_CONFIG_WCE));
	CHECK(!(f & VIRTIO_BIT(VIRTIO_BLK_F_RO)));
	/* only the writeback byte is writable, and only with CONFIG_WCE */
	setup(features_for() & ~VIRTIO_BIT(VIRTIO_BLK_F_CONFIG_WCE));
	uint8_t zero = 0;
	vd->ops->config_write(vd, VIRTIO_BLK_CFG_WRITEBACK, &zero, 1);
	vd->ops->config_read(vd, VIRTIO_BLK_CFG_WRITEBACK, cfg, 1);
	CHECK_EQ(cfg[0], 1);
	setup(features_for());
	vd->ops->config_write(vd, VIRTIO_BLK_CFG_WRITEBACK, &zero, 1);
	vd->ops->config_read(vd, VIRTIO_BLK_CFG_WRITEBACK, cfg, 1);
	CHECK_EQ(cfg[0], 0);
	uint64_t junk = ~0ull;
	vd->ops->config_write(vd, VIRTIO_BLK_CFG_CAPACITY, &junk, 8);
	vd->ops->config_read(vd, 0, cfg, 8);
	memcpy(&cap, cfg, 8);
	CHECK_EQ(cap, SECTORS);
	/* a reset brings back the configured cache mode */
	setup(features_for());
	vd->ops->config_read(vd, VIRTIO_BLK_CFG_WRITEBACK, cfg, 1);
	CHECK_EQ(cfg[0], 1);
}

/* Writes in several segments on both queues, then reads back; the image
 * holds exactly what was written. Also in writethrough mode. */
static void test_write_then_read(void)
{
	for (int wt = 0; wt < 2; wt++) {
		setup(features_for());
		if (wt) {
			uint8_t zero = 0;
			vd->ops->config_write(vd, VIRTIO_BLK_CFG_WRITEBACK, &zero, 1);
		}
		for (unsigned round = 0; round < 20; round++) {
			unsigned q = round % NQ;
			uint64_t sector = (round * 977u) % (SECTORS - 64);
			unsigned nseg = 1 + round % 5;
			struct seg segs[5];
			uint32_t total = 0;
			for (unsigned i = 0; i < nseg; i++) {
				segs[i] = (struct seg){ DATA_GPA + total, 512u * (1 + (round + i) % 8), false };
				total += segs[i].len;
			}
			fill_random(guest + DATA_GPA, total, round + 1000u * wt);
			request(q, 0, VIRTIO_BLK_T_OUT, sector, segs, nseg);
			uint32_t len = 0;
			CHECK_EQ(run_one(q, 0, &len), VIRTIO_BLK_S_OK);
			CHECK_EQ(len, 1);
			CHECK(image_equals(sector * 512, guest + DATA_GPA, total));

			memset(guest + READ_GPA, 0x5a, total + 1);
			struct seg rd[2] = { { READ_GPA, 512, true }, { READ_GPA + 512, total - 512, true } };
			request(q, 1, VIRTIO_BLK_T_IN, sector, rd, total > 512 ? 2 : 1);
			CHECK_EQ(run_one(q, 1, &len), VIRTIO_BLK_S_OK);
			CHECK_EQ(len, total + 1);
			CHECK(!memcmp(guest + READ_GPA, guest + DATA_GPA, total));
			CHECK_EQ(guest[READ_GPA + total], 0x5a); /* nothing past the buffers */
		}
		CHECK(!broken());
	}
	struct virtio_blk_stats st;
	virtio_blk_get_stats(blk, &st);
	CHECK(st.write_reqs >= 40 && st.read_reqs >= 40);
	CHECK_EQ(st.io_errors, 0);
}

/* Header, data and status in one descriptor each way (any layout): the
 * header and the first data bytes share a descriptor, and the status byte
 * ends the last data descriptor. */
static void test_any_layout(void)
{
	setup(features_for());
	uint8_t *h = guest + DATA_GPA; /* header + 1024 data bytes, contiguous */
	uint32_t type = VIRTIO_BLK_T_OUT;
	uint64_t sector = 100;
	memset(h, 0, 16);
	memcpy(h, &type, 4);
	memcpy(h + 8, &sector, 8);
	fill_random(h + 16, 1024, 77);
	struct seg s[2] = { { DATA_GPA, 16 + 1024, false }, { STATUS_GPA, 1, true } };
	guest[STATUS_GPA] = 0xee;
	add_chain(0, s, 2);
	CHECK_EQ(run_one(0, 0, NULL), VIRTIO_BLK_S_OK);
	CHECK(image_equals(100 * 512, h + 16, 1024));
	/* read: data and status in one writable descriptor */
	type = VIRTIO_BLK_T_IN;
	memcpy(guest + HDR_GPA, &type, 4);
	memcpy(guest + HDR_GPA + 8, &sector, 8);
	struct seg r[2] = { { HDR_GPA, 16, false }, { READ_GPA, 1024 + 1, true } };
	guest[READ_GPA + 1024] = 0xee;
	add_chain(0, r, 2);
	vd->ops->queue_notify(vd, 0);
	CHECK(wait_used(0, 1));
	uint16_t id;
	uint32_t len = 0;
	CHECK(get_used(0, &id, &len));
	CHECK_EQ(len, 1025);
	CHECK_EQ(guest[READ_GPA + 1024], VIRTIO_BLK_S_OK);
	CHECK(!memcmp(guest + READ_GPA, h + 16, 1024));
}

static void test_flush_and_get_id(void)
{
	setup(features_for());
	request(0, 0, VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
	CHECK_EQ(run_one(0, 0, NULL), VIRTIO_BLK_S_OK);
	memset(guest + READ_GPA, 0x5a, 32);
	struct seg id = { READ_GPA, VIRTIO_BLK_ID_BYTES, true };
	request(1, 1, VIRTIO_BLK_T_GET_ID, 0, &id, 1);
	uint32_t len = 0;
	CHECK_EQ(run_one(1, 1, &len), VIRTIO_BLK_S_OK);
	CHECK_EQ(len, VIRTIO_BLK_ID_BYTES + 1);
	CHECK(!memcmp(guest + READ_GPA, "LUAVMM-SERIAL-0123\0\0", 20));
	/* a short ID buffer gets what fits, nothing more */
	memset(guest + READ_GPA, 0x5a, 32);
	id.len = 6;
	request(1, 1, VIRTIO_BLK_T_GET_ID, 0, &id, 1);
	CHECK_EQ(run_one(1, 1, &len), VIRTIO_BLK_S_OK);
	CHECK_EQ(len, 7);
	CHECK(!memcmp(guest + READ_GPA, "LUAVMM\x5a", 7));
	/* without FLUSH negotiated a flush is unsupported */
	setup(features_for() & ~VIRTIO_BIT(VIRTIO_BLK_F_FLUSH));
	request(0, 0, VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
	CHECK_EQ(run_one(0, 0, NULL), VIRTIO_BLK_S_UNSUPP);
}

/* Requests the device must refuse with a status, leaving the image alone. */
static void test_bad_requests_get_a_status(void)
{
	setup(features_for());
	uint8_t before[4096];
	CHECK_EQ(pread(image_fd, before, sizeof(before), (off_t)(SECTORS - 8) * 512), (ssize_t)sizeof(before));
	struct {
		const char *what;
		uint32_t type;
		uint64_t sector;
		uint32_t len;
		bool write;
		int status;
	} cases[] = {
		{ "read past the end", VIRTIO_BLK_T_IN, SECTORS - 1, 1024, true, VIRTIO_BLK_S_IOERR },
		{ "write past the end", VIRTIO_BLK_T_OUT, SECTORS - 1, 1024, false, VIRTIO_BLK_S_IOERR },
		{ "write at a huge sector", VIRTIO_BLK_T_OUT, ~0ull - 1, 512, false, VIRTIO_BLK_S_IOERR },
		{ "read of a partial sector", VIRTIO_BLK_T_IN, 0, 100, true, VIRTIO_BLK_S_IOERR },
		{ "write of a partial sector", VIRTIO_BLK_T_OUT, 0, 513, false, VIRTIO_BLK_S_IOERR },
		{ "unknown type", 99, 0, 512, false, VIRTIO_BLK_S_UNSUPP },
		{ "get-lifetime", VIRTIO_BLK_T_GET_LIFETIME, 0, 16, true, VIRTIO_BLK_S_UNSUPP },
		{ "secure erase", VIRTIO_BLK_T_SECURE_ERASE, 0, 16, false, VIRTIO_BLK_S_UNSUPP },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct seg s = { DATA_GPA, cases[i].len, cases[i].write };
		request(0, 0, cases[i].type, cases[i].sector, &s, 1);
		uint32_t len = 0;
		int st = run_one(0, 0, &len);
		if (st != cases[i].status)
			fprintf(stderr, "  case \"%s\": status %d, expected %d\n", cases[i].what, st, cases[i].status);
		CHECK_EQ(st, cases[i].status);
		CHECK_EQ(len, 1);
	}
	CHECK(image_equals((uint64_t)(SECTORS - 8) * 512, before, sizeof(before)));
	CHECK(!broken());
	struct virtio_blk_stats st;
	virtio_blk_get_stats(blk, &st);
	CHECK(st.io_errors >= 5);
	CHECK(st.unsupported >= 3);
}

/* A request without its header or without a status byte cannot be
 * answered: the device needs a reset, and writes nothing. */
static void test_malformed_chains_need_reset(void)
{
	setup(features_for());
	memset(guest + DATA_GPA, 0x11, 64);
	struct seg no_status[2] = { { HDR_GPA, 16, false }, { DATA_GPA, 512, false } };
	put_hdr(0, VIRTIO_BLK_T_IN, 0);
	add_chain(0, no_status, 2);
	vd->ops->queue_notify(vd, 0);
	uv_run(&loop, UV_RUN_NOWAIT);
	CHECK(broken());
	CHECK_EQ(guest[DATA_GPA], 0x11);

	setup(features_for());
	struct seg short_hdr[2] = { { HDR_GPA, 8, false }, { STATUS_GPA, 1, true } };
	guest[STATUS_GPA] = 0xee;
	add_chain(0, short_hdr, 2);
	vd->ops->queue_notify(vd, 0);
	uv_run(&loop, UV_RUN_NOWAIT);
	CHECK(broken());
	CHECK_EQ(guest[STATUS_GPA], 0xee);

	/* the header in a writable descriptor is no header */
	setup(features_for());
	struct seg wr_hdr[1] = { { HDR_GPA, 17, true } };
	add_chain(0, wr_hdr, 1);
	vd->ops->queue_notify(vd, 0);
	uv_run(&loop, UV_RUN_NOWAIT);
	CHECK(broken());
	setup(features_for());
	CHECK(!broken());
}

static void test_discard_and_write_zeroes(void)
{
	uint64_t f = features_for();
	if (!(f & VIRTIO_BIT(VIRTIO_BLK_F_DISCARD)) || !(f & VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES))) {
		printf("  (this image's filesystem offers no discard or write-zeroes: only the refusals)\n");
	}
	setup(f);
	uint8_t ones[8192];
	memset(ones, 0xff, sizeof(ones));
	static const uint8_t zeros[8192];
	for (int wz = 0; wz < 2; wz++) {
		uint32_t type = wz ? VIRTIO_BLK_T_WRITE_ZEROES : VIRTIO_BLK_T_DISCARD;
		unsigned bit = wz ? VIRTIO_BLK_F_WRITE_ZEROES : VIRTIO_BLK_F_DISCARD;
		CHECK_EQ(pwrite(image_fd, ones, sizeof(ones), 4096 * 512), (ssize_t)sizeof(ones));
		uint8_t *d = guest + DATA_GPA;
		uint64_t sector = 4096;
		uint32_t n = 16, flags = wz ? 1 : 0;
		memcpy(d, &sector, 8);
		memcpy(d + 8, &n, 4);
		memcpy(d + 12, &flags, 4);
		struct seg s = { DATA_GPA, 16, false };
		request(0, 0, type, 0, &s, 1);
		int st = run_one(0, 0, NULL);
		if (f & VIRTIO_BIT(bit)) {
			CHECK_EQ(st, VIRTIO_BLK_S_OK);
			CHECK(image_equals(4096 * 512, zeros, sizeof(zeros)));
			struct stat sb;
			CHECK_EQ(fstat(image_fd, &sb), 0);
			CHECK_EQ(sb.st_size, IMAGE_SIZE);
		} else {
			CHECK_EQ(st, VIRTIO_BLK_S_UNSUPP);
		}
		if (!(f & VIRTIO_BIT(bit)))
			continue;
		/* unmap on a discard, reserved flags, two segments, half a
		 * segment, a range past the end */
		flags = wz ? 2 : 1;
		memcpy(d + 12, &flags, 4);
		request(0, 0, type, 0, &s, 1);
		CHECK_EQ(run_one(0, 0, NULL), VIRTIO_BLK_S_UNSUPP);
		flags = 0;
		memcpy(d + 12, &flags, 4);
		memcpy(d + 16, d, 16);
		s.len = 32;
		request(0, 0, type, 0, &s, 1);
		CHECK_EQ(run_one(0, 0, NULL), VIRTIO_BLK_S_IOERR);
		s.len = 8;
		request(0, 0, type, 0, &s, 1);
		CHECK_EQ(run_one(0, 0, NULL), VIRTIO_BLK_S_IOERR);
		sector = SECTORS - 8;
		memcpy(d, &sector, 8);
		s.len = 16;
		request(0, 0, type, 0, &s, 1);
		CHECK_EQ(run_one(0, 0, NULL), VIRTIO_BLK_S_IOERR);
	}
	/* not negotiated: unsupported */
	setup(f & ~(VIRTIO_BIT(VIRTIO_BLK_F_DISCARD) | VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES)));
	struct seg s = { DATA_GPA, 16, false };
	request(0, 0, VIRTIO_BLK_T_DISCARD, 0, &s, 1);
	CHECK_EQ(run_one(0, 0, NULL), VIRTIO_BLK_S_UNSUPP);
	CHECK(!broken());
}

/* Many requests in flight at once, more than the device takes at a time:
 * all complete, each once. */
static void test_many_in_flight(void)
{
	setup(features_for());
	unsigned n = 200; /* > VIRTIO_BLK_QUEUE_DEPTH */
	for (unsigned i = 0; i < n; i++) {
		struct seg s = { DATA_GPA + 4096 * (i % 64), 4096, i % 2 == 0 };
		request(0, i, i % 2 ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, 8 * i, &s, 1);
	}
	vd->ops->queue_notify(vd, 0);
	CHECK(wait_used(0, n));
	unsigned ok = 0;
	uint16_t id;
	uint32_t len = 0;
	while (get_used(0, &id, &len))
		ok++;
	CHECK_EQ(ok, n);
	for (unsigned i = 0; i < n; i++)
		CHECK_EQ(guest[STATUS_GPA + i], VIRTIO_BLK_S_OK);
	CHECK(!broken());
}

static void test_readonly_disk(void)
{
	struct virtio_blk *rw = blk;
	virtio_reset(vd);
	/* a writable disk holds the image: a read-only one conflicts with it */
	struct virtio_blk *ro = new_disk(true, BLK_CACHE_WRITEBACK, false, -1);
	CHECK(ro == NULL);
	CHECK_CONTAINS(vmm_error(), "in use");
	virtio_blk_free(rw);
	ro = new_disk(true, BLK_CACHE_WRITEBACK, false, -1);
	CHECK(ro != NULL);
	if (!ro) {
		fprintf(stderr, "  %s\n", vmm_error());
		use(new_disk(false, BLK_CACHE_WRITEBACK, false, -1));
		return;
	}
	use(ro);
	CHECK(vd->host_features & VIRTIO_BIT(VIRTIO_BLK_F_RO));
	CHECK(!(vd->host_features & VIRTIO_BIT(VIRTIO_BLK_F_DISCARD)));
	setup(vd->host_features);
	struct seg s = { DATA_GPA, 512, false };
	request(0, 0, VIRTIO_BLK_T_OUT, 0, &s, 1);
	CHECK_EQ(run_one(0, 0, NULL), VIRTIO_BLK_S_IOERR);
	s.write = true;
	request(0, 0, VIRTIO_BLK_T_IN, 0, &s, 1);
	CHECK_EQ(run_one(0, 0, NULL), VIRTIO_BLK_S_OK);
	virtio_reset(vd);
	virtio_blk_free(ro);
	use(new_disk(false, BLK_CACHE_WRITEBACK, false, -1));
	CHECK(blk != NULL);
}

/* Quiesce completes what is in flight (so nothing is replayed), ignores
 * kicks, and unquiesce looks at the queues again. Then the state moves to
 * a second device on the same image (the migration target's, which opened
 * the path itself and takes the locks only when it loads). */
static void test_quiesce_save_load(void)
{
	setup(features_for());
	for (unsigned i = 0; i < 16; i++) {
		struct seg s = { DATA_GPA + 4096 * i, 4096, false };
		fill_random(guest + DATA_GPA + 4096 * i, 4096, 500 + i);
		request(0, i, VIRTIO_BLK_T_OUT, 64 + 8 * i, &s, 1);
	}
	vd->ops->queue_notify(vd, 0);
	CHECK_EQ(virtio_blk_quiesce(blk, false), 0);
	struct virtio_blk_stats st;
	virtio_blk_get_stats(blk, &st);
	CHECK_EQ(st.inflight, 0);
	CHECK_EQ((uint16_t)(used_idx(0) - gqs[0].used_seen), 16);
	CHECK(image_equals(64 * 512, guest + DATA_GPA, 16 * 4096));
	/* kicks while quiesced wait */
	struct seg s = { READ_GPA, 512, true };
	request(1, 20, VIRTIO_BLK_T_IN, 0, &s, 1);
	vd->ops->queue_notify(vd, 1);
	uv_run(&loop, UV_RUN_NOWAIT);
	usleep(20000);
	uv_run(&loop, UV_RUN_NOWAIT);
	CHECK_EQ(used_idx(1), gqs[1].used_seen);

	/* the target: same image, opened by path, locks deferred */
	struct mig_buf b;
	mig_buf_init(&b);
	CHECK_EQ(virtio_blk_save(blk, &b), 0);
	struct virtio_blk *t = new_disk(false, BLK_CACHE_WRITEBACK, true, -1);
	CHECK(t != NULL);
	if (t) {
		CHECK_EQ(virtio_blk_load_check(t, b.data, b.len), 0);
		CHECK(virtio_blk_load_check(t, b.data, b.len - 1) < 0);
		CHECK_CONTAINS(vmm_error(), "truncated");
		uint8_t *bad = malloc(b.len);
		memcpy(bad, b.data, b.len);
		bad[0] = 3; /* queues */
		CHECK(virtio_blk_load_check(t, bad, b.len) < 0);
		CHECK_CONTAINS(vmm_error(), "queues");
		memcpy(bad, b.data, b.len);
		bad[4] ^= 1; /* capacity */
		CHECK(virtio_blk_load_check(t, bad, b.len) < 0);
		CHECK_CONTAINS(vmm_error(), "sectors");
		memcpy(bad, b.data, b.len);
		bad[13] = 2; /* writeback */
		CHECK(virtio_blk_load_check(t, bad, b.len) < 0);
		free(bad);
		CHECK_EQ(virtio_blk_take_lock(t), 0); /* the source let go at quiesce */
		CHECK_EQ(virtio_blk_load(t, b.data, b.len), 0);
		struct virtio_blk_stats ts;
		virtio_blk_get_stats(t, &ts);
		CHECK_EQ(ts.write_reqs, st.write_reqs);
		/* a rollback: the source cannot relock while the target holds it */
		CHECK(virtio_blk_unquiesce(blk, 50) < 0);
		CHECK_CONTAINS(vmm_error(), "without its lock");
		virtio_blk_free(t);
		CHECK_EQ(virtio_blk_quiesce(blk, true), 0);
	}
	mig_buf_free(&b);
	/* once the target is gone, the source takes its locks back */
	CHECK_EQ(virtio_blk_unquiesce(blk, 1000), 0);
	CHECK(wait_used(1, 1)); /* the kick it ignored */
	struct virtio_blk *other = new_disk(false, BLK_CACHE_WRITEBACK, false, -1);
	CHECK(other == NULL); /* locked again */
	virtio_blk_free(other);
}

/* Backend transfer: the target adopts the image fd; a fd of another file,
 * or one opened another way, is refused. */
static void test_backend_transfer(void)
{
	struct mig_buf b;
	mig_buf_init(&b);
	CHECK_EQ(virtio_blk_backend_save(blk, &b), 0);
	int fd = dup(virtio_blk_fd(blk));
	struct virtio_blk *t = new_disk(false, BLK_CACHE_WRITEBACK, false, fd);
	CHECK(t != NULL);
	if (t) {
		CHECK_EQ(virtio_blk_backend_check(t, b.data, b.len), 0);
		CHECK(virtio_blk_backend_check(t, b.data, b.len - 1) < 0);
		virtio_blk_free(t); /* closes its dup; the locks stay with ours */
	} else {
		close(fd);
	}
	char other[128];
	snprintf(other, sizeof(other), "%s/other.img", dir);
	int ofd = open(other, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	CHECK(ofd >= 0 && ftruncate(ofd, IMAGE_SIZE) == 0);
	t = new_disk(false, BLK_CACHE_WRITEBACK, false, ofd);
	CHECK(t != NULL);
	if (t) {
		CHECK(virtio_blk_backend_check(t, b.data, b.len) < 0);
		CHECK_CONTAINS(vmm_error(), "not the file");
		virtio_blk_free(t);
	} else {
		close(ofd);
	}
	mig_buf_free(&b);
}

/* Random chains and headers: whatever the driver does, the device answers
 * or asks for a reset, and never writes outside the request's buffers. */
static void test_random_rings(void)
{
	uint32_t x = 0x9e3779b9u;
	uint8_t *canary = guest + 0x380000;
	memset(canary, 0xc3, 0x10000);
	for (unsigned iter = 0; iter < 300; iter++) {
		if (broken() || iter % 20 == 0)
			setup(features_for());
		unsigned n = 1 + xorshift32(&x) % 4;
		struct seg s[4];
		for (unsigned i = 0; i < n; i++) {
			s[i].gpa = DATA_GPA + (xorshift32(&x) % 256) * 512;
			s[i].len = (uint32_t)(xorshift32(&x) % 8192);
			s[i].write = xorshift32(&x) & 1;
		}
		fill_random(guest + DATA_GPA, 64, xorshift32(&x)); /* headers of sorts */
		uint32_t type = (uint32_t)(xorshift32(&x) % 16);
		memcpy(guest + s[0].gpa, &type, 4);
		add_chain(0, s, n);
		vd->ops->queue_notify(vd, 0);
		for (int k = 0; k < 5; k++)
			uv_run(&loop, UV_RUN_NOWAIT);
		uint16_t id;
		uint32_t len = 0;
		while (get_used(0, &id, &len))
			;
	}
	uint8_t want[0x10000];
	memset(want, 0xc3, sizeof(want));
	CHECK(!memcmp(canary, want, sizeof(want)));
	setup(features_for());
	CHECK(!broken());
}

static int run_suite(enum blk_engine e)
{
	engine = e;
	struct virtio_blk *b = new_disk(false, BLK_CACHE_WRITEBACK, false, -1);
	if (!b) {
		if (e == BLK_ENGINE_URING) {
			printf("io_uring engine unavailable here (%s): its run is skipped\n", vmm_error());
			return 0;
		}
		printf("virtio_blk_new: %s\n", vmm_error());
		return 1;
	}
	printf("engine: %s\n", virtio_blk_engine_name(b));
	use(b);
	RUN(test_config_space);
	RUN(test_write_then_read);
	RUN(test_any_layout);
	RUN(test_flush_and_get_id);
	RUN(test_bad_requests_get_a_status);
	RUN(test_malformed_chains_need_reset);
	RUN(test_discard_and_write_zeroes);
	RUN(test_many_in_flight);
	RUN(test_readonly_disk);
	RUN(test_quiesce_save_load);
	RUN(test_backend_transfer);
	RUN(test_random_rings);
	virtio_reset(vd);
	virtio_blk_free(blk);
	blk = NULL;
	return 0;
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_virtio_blk.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(image, sizeof(image), "%s/disk.img", dir);
	image_fd = open(image, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (image_fd < 0 || ftruncate(image_fd, IMAGE_SIZE)) {
		perror(image);
		return 1;
	}
	CHECK_EQ(guest_mem_wrap(&mem, guest, GUEST_SIZE), 0);
	CHECK_EQ(uv_loop_init(&loop), 0);
	qsize = 1024; /* room for more chains than the device takes at once */
	int rc = run_suite(BLK_ENGINE_THREADS) || run_suite(BLK_ENGINE_URING);
	close(image_fd);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	uv_run(&loop, UV_RUN_NOWAIT);
	return rc ? rc : CHECK_DONE();
}
