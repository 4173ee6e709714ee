/* The disk image backend on real files: ext4 (or whatever holds /var/tmp),
 * tmpfs (/dev/shm), ramfs and a loop device where root can make them (in a
 * private mount namespace). Every I/O and locking case runs twice, on the
 * thread pool and on io_uring (that pass is skipped, saying why, where
 * io_uring is refused). */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/magic.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <liburing.h>

#include "blk_file.h"
#include "check.h"
#include "err.h"
#include "xorshift.h"

#define MiB (1024ull * 1024)

static uv_loop_t loop;
static enum blk_engine engine;
static char dir[64];      /* scratch directory under /var/tmp */
static bool mntns;        /* a private mount namespace: bind and ramfs mounts */
static char ramdir[96];   /* a ramfs mount ("" without one) */
static bool in_submit;    /* set around every blk_file_submit */
static int completions;   /* done callbacks run */
static int cb_depth;      /* done callbacks on the stack */

static const char *engine_name(enum blk_engine e)
{
	return e == BLK_ENGINE_URING ? "io_uring" : e == BLK_ENGINE_THREADS ? "threads" : "auto";
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char *tpath(const char *name)
{
	static char bufs[4][160];
	static unsigned n;
	char *b = bufs[n++ % 4];
	snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
	return b;
}

static void fill(void *buf, size_t len, uint32_t *seed)
{
	uint8_t *p = buf;
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(xorshift32(seed) >> 13);
}

/* A file of `size` bytes: random (seed != 0) or a hole. */
static int make_file(const char *path, uint64_t size, uint32_t seed)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	int rc = ftruncate(fd, (off_t)size);
	if (seed && rc == 0) {
		static uint8_t buf[256 * 1024];
		for (uint64_t off = 0; off < size && rc == 0; off += sizeof(buf)) {
			size_t n = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
			fill(buf, n, &seed);
			rc = pwrite(fd, buf, n, (off_t)off) == (ssize_t)n ? 0 : -1;
		}
	}
	close(fd);
	return rc;
}

static uint8_t *read_file(const char *path, uint64_t off, size_t len)
{
	uint8_t *b = calloc(1, len ? len : 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || pread(fd, b, len, (off_t)off) != (ssize_t)len) {
		if (fd >= 0)
			close(fd);
		free(b);
		return NULL;
	}
	close(fd);
	return b;
}

static struct blk_file_options opts(const char *path, bool readonly, bool lock)
{
	return (struct blk_file_options){ .path = path, .fd = -1, .readonly = readonly, .lock = lock,
					  .cache = BLK_CACHE_WRITEBACK, .engine = engine };
}

static struct blk_file *open_opts(const struct blk_file_options *o)
{
	struct blk_file *f = blk_file_open(o, &loop);
	if (f && o->engine != BLK_ENGINE_AUTO)
		CHECK_EQ(blk_file_engine(f), o->engine);
	return f;
}

static struct blk_file *open_disk(const char *path, bool readonly, bool lock)
{
	struct blk_file_options o = opts(path, readonly, lock);
	struct blk_file *f = open_opts(&o);
	if (!f)
		fprintf(stderr, "  open %s: %s\n", path, vmm_error());
	return f;
}

/* Lets libuv free closed handles. */
static void settle(void)
{
	for (int i = 0; i < 3; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- requests ---- */

struct io {
	struct blk_req r;
	struct iovec iov[8];
	int64_t res;
	int ncalls;
	int chain; /* resubmissions still to do from done */
	struct blk_file *f;
	struct blk_file *close_me; /* done closes this */
};

static void on_done(struct blk_req *r, int64_t res)
{
	struct io *io = r->opaque;
	CHECK(!in_submit);
	CHECK_EQ(cb_depth, 0);
	cb_depth++;
	io->res = res;
	io->ncalls++;
	completions++;
	if (io->chain > 0) {
		io->chain--;
		in_submit = true;
		int rc = blk_file_submit(io->f, r);
		in_submit = false;
		CHECK_EQ(rc, 0);
	}
	if (io->close_me) {
		struct blk_file *f = io->close_me;
		io->close_me = NULL;
		cb_depth--;
		blk_file_close(f); /* runs the others' done callbacks, nested */
		cb_depth++;
	}
	cb_depth--;
}

static void prep(struct io *io, struct blk_file *f, enum blk_op op, uint64_t off, void *buf, uint64_t len)
{
	memset(io, 0, sizeof(*io));
	io->f = f;
	io->r.op = op;
	io->r.offset = off;
	io->r.len = len;
	io->r.done = on_done;
	io->r.opaque = io;
	io->res = INT64_MIN;
	if (op == BLK_OP_READ || op == BLK_OP_WRITE) {
		io->iov[0].iov_base = buf;
		io->iov[0].iov_len = len;
		io->r.iov = io->iov;
		io->r.niov = 1;
	}
}

static int submit(struct blk_file *f, struct io *io)
{
	in_submit = true;
	int rc = blk_file_submit(f, &io->r);
	in_submit = false;
	return rc;
}

/* Runs the loop until f has nothing in flight (false after ms). */
static bool wait_idle(struct blk_file *f, unsigned ms)
{
	double end = now_ms() + ms;
	while (blk_file_inflight(f)) {
		uv_run(&loop, UV_RUN_NOWAIT);
		if (now_ms() > end)
			return false;
		if (blk_file_inflight(f))
			usleep(200);
	}
	return true;
}

/* One request, waited for: its result, or INT64_MIN if refused. */
static int64_t do_io(struct blk_file *f, enum blk_op op, uint64_t off, void *buf, uint64_t len, bool unmap)
{
	struct io io;
	prep(&io, f, op, off, buf, len);
	io.r.unmap = unmap;
	if (submit(f, &io)) {
		fprintf(stderr, "  submit: %s\n", vmm_error());
		return INT64_MIN;
	}
	CHECK(wait_idle(f, 30000));
	CHECK_EQ(io.ncalls, 1);
	return io.res;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static blkcnt_t blocks_of(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_blocks : -1;
}

static off_t size_of(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* ---- I/O cases ---- */

/* Rounds of concurrent requests, one per region so none overlaps another,
 * each split into up to 8 segments (some empty); reads are compared with a
 * shadow copy, and the file with the shadow at the end. */
static void test_write_read_random_multisegment(void)
{
	enum { REGIONS = 16, REGION = 256 * 1024, ROUNDS = 30 };
	const uint64_t size = (uint64_t)REGIONS * REGION;
	const char *path = tpath("rw.img");
	CHECK_EQ(make_file(path, size, 7), 0);
	uint8_t *shadow = read_file(path, 0, size);
	struct blk_file *f = open_disk(path, false, true);
	CHECK(f && shadow);
	if (!f || !shadow)
		return;
	CHECK_EQ(blk_file_size(f), size);
	CHECK_EQ(blk_file_block_size(f), 512);
	CHECK(!blk_file_readonly(f));
	static struct io ios[REGIONS];
	static uint8_t bufs[REGIONS][8][64 * 1024];
	uint32_t seed = 12345;
	unsigned reads = 0, writes = 0, bad = 0;
	for (int round = 0; round < ROUNDS; round++) {
		for (unsigned g = 0; g < REGIONS; g++) {
			uint64_t base = (uint64_t)g * REGION;
			uint64_t off = base + xorshift32(&seed) % (REGION - 1);
			unsigned nseg = 1 + xorshift32(&seed) % 8;
			uint64_t max = base + REGION - off, cap = nseg * sizeof(bufs[0][0]);
			uint64_t len = 1 + xorshift32(&seed) % (max < cap ? max : cap);
			bool wr = xorshift32(&seed) & 1;
			struct io *io = &ios[g];
			prep(io, f, wr ? BLK_OP_WRITE : BLK_OP_READ, off, NULL, len);
			uint64_t left = len;
			for (unsigned s = 0; s < nseg; s++) {
				uint64_t l = s == nseg - 1 ? left : xorshift32(&seed) % (left + 1);
				if (l > sizeof(bufs[0][0]))
					l = sizeof(bufs[0][0]);
				io->iov[s].iov_base = bufs[g][s];
				io->iov[s].iov_len = l;
				left -= l;
			}
			if (left) { /* the last segments take what the cap left over */
				for (unsigned s = 0; s < nseg && left; s++) {
					uint64_t room = sizeof(bufs[0][0]) - io->iov[s].iov_len;
					uint64_t l = left < room ? left : room;
					io->iov[s].iov_len += l;
					left -= l;
				}
			}
			io->r.niov = nseg;
			uint64_t pos = off;
			for (unsigned s = 0; s < nseg; s++) {
				if (wr) {
					fill(bufs[g][s], io->iov[s].iov_len, &seed);
					memcpy(shadow + pos, bufs[g][s], io->iov[s].iov_len);
				} else {
					memset(bufs[g][s], 0xa5, io->iov[s].iov_len);
				}
				pos += io->iov[s].iov_len;
			}
			CHECK_EQ(pos, off + len);
			CHECK_EQ(submit(f, io), 0);
			wr ? writes++ : reads++;
		}
		CHECK(wait_idle(f, 30000));
		for (unsigned g = 0; g < REGIONS; g++) {
			struct io *io = &ios[g];
			CHECK_EQ(io->ncalls, 1);
			CHECK_EQ(io->res, io->r.len);
			if (io->r.op != BLK_OP_READ)
				continue;
			uint64_t pos = io->r.offset;
			for (unsigned s = 0; s < io->r.niov; s++) {
				if (memcmp(bufs[g][s], shadow + pos, io->iov[s].iov_len))
					bad++;
				pos += io->iov[s].iov_len;
			}
		}
	}
	CHECK_EQ(bad, 0);
	blk_file_close(f);
	settle();
	uint8_t *now = read_file(path, 0, size);
	CHECK(now && memcmp(now, shadow, size) == 0);
	printf("     %u reads, %u writes in %d rounds of %d\n", reads, writes, ROUNDS, REGIONS);
	free(now);
	free(shadow);
	unlink(path);
}

static void test_flush_and_cache_flags(void)
{
	const char *path = tpath("flush.img");
	CHECK_EQ(make_file(path, MiB, 1), 0);
	uint8_t buf[4096];
	memset(buf, 0x5a, sizeof(buf));
	struct blk_file_options o = opts(path, false, true);
	struct blk_file *f = open_opts(&o);
	CHECK(f);
	if (!f)
		return;
	int fl = fcntl(blk_file_fd(f), F_GETFL);
	CHECK(!(fl & O_DSYNC) && !(fl & O_DIRECT) && !(fl & O_NONBLOCK));
	CHECK(fcntl(blk_file_fd(f), F_GETFD) & FD_CLOEXEC);
	CHECK_EQ(do_io(f, BLK_OP_WRITE, 8192, buf, sizeof(buf), false), sizeof(buf));
	CHECK_EQ(do_io(f, BLK_OP_FLUSH, 0, NULL, 0, false), 0);
	blk_file_close(f);

	o.cache = BLK_CACHE_WRITETHROUGH;
	f = open_opts(&o);
	CHECK(f);
	if (f) {
		CHECK(fcntl(blk_file_fd(f), F_GETFL) & O_DSYNC);
		CHECK_EQ(do_io(f, BLK_OP_WRITE, 0, buf, sizeof(buf), false), sizeof(buf));
		CHECK_EQ(do_io(f, BLK_OP_FLUSH, 0, NULL, 0, false), 0);
		blk_file_close(f);
	}
	/* a read-only disk flushes too (nothing to write back) */
	f = open_disk(path, true, true);
	CHECK(f);
	if (f) {
		CHECK(blk_file_readonly(f));
		CHECK(!blk_file_can_discard(f));
		CHECK(!blk_file_can_write_zeroes(f));
		CHECK_EQ(do_io(f, BLK_OP_FLUSH, 0, NULL, 0, false), 0);
		uint8_t back[4096];
		memset(back, 0, sizeof(back)); /* valgrind cannot see io_uring fill it */
		CHECK_EQ(do_io(f, BLK_OP_READ, 8192, back, sizeof(back), false), sizeof(back));
		CHECK(memcmp(back, buf, sizeof(buf)) == 0);
		blk_file_close(f);
	}
	settle();
	unlink(path);
}

static void test_discard_punches_hole(void)
{
	const char *path = tpath("discard.img");
	const uint64_t size = 4 * MiB;
	CHECK_EQ(make_file(path, size, 3), 0);
	uint8_t *orig = read_file(path, 0, size);
	blkcnt_t before = blocks_of(path);
	struct blk_file *f = open_disk(path, false, true);
	CHECK(f && orig);
	if (!f || !orig)
		return;
	CHECK(blk_file_can_discard(f));
	CHECK_EQ(do_io(f, BLK_OP_DISCARD, MiB, NULL, MiB, false), 0);
	/* not block-aligned: the filesystem zeroes the partial blocks */
	CHECK_EQ(do_io(f, BLK_OP_DISCARD, 3 * MiB + 100, NULL, 5000, false), 0);
	CHECK_EQ(do_io(f, BLK_OP_DISCARD, 0, NULL, 0, false), 0);
	uint8_t *back = calloc(1, size);
	CHECK_EQ(do_io(f, BLK_OP_READ, 0, back, size, false), size);
	CHECK(memcmp(back, orig, MiB) == 0);
	CHECK(all_zero(back + MiB, MiB));
	CHECK(memcmp(back + 2 * MiB, orig + 2 * MiB, MiB + 100) == 0);
	CHECK(all_zero(back + 3 * MiB + 100, 5000));
	CHECK(memcmp(back + 3 * MiB + 5100, orig + 3 * MiB + 5100, MiB - 5100) == 0);
	CHECK(blk_file_can_discard(f));
	blk_file_close(f);
	settle();
	CHECK_EQ(size_of(path), size);
	blkcnt_t after = blocks_of(path);
	CHECK(after <= before - (blkcnt_t)(MiB / 512)); /* the hole gave the space back */
	printf("     %lld -> %lld blocks\n", (long long)before, (long long)after);
	free(back);
	free(orig);
	unlink(path);
}

/* Both kinds on a file of the scratch directory's filesystem: the range
 * reads zeroes, its neighbours are untouched, the size is unchanged; with
 * unmap the space is given back, without it (ZERO_RANGE) it stays. */
static void check_write_zeroes(const char *path, bool check_blocks)
{
	const uint64_t size = 4 * MiB;
	CHECK_EQ(make_file(path, size, 5), 0);
	uint8_t *orig = read_file(path, 0, size);
	struct blk_file *f = open_disk(path, false, true);
	CHECK(f && orig);
	if (!f || !orig)
		return;
	CHECK(blk_file_can_write_zeroes(f));
	blkcnt_t b0 = blocks_of(path);
	CHECK_EQ(do_io(f, BLK_OP_WRITE_ZEROES, MiB, NULL, MiB, false), 0);
	blkcnt_t b1 = blocks_of(path);
	CHECK_EQ(do_io(f, BLK_OP_WRITE_ZEROES, 2 * MiB + 4096, NULL, MiB, true), 0);
	blkcnt_t b2 = blocks_of(path);
	CHECK_EQ(do_io(f, BLK_OP_WRITE_ZEROES, 3 * MiB + 4096 + 7, NULL, 3333, false), 0);
	uint8_t *back = calloc(1, size);
	memset(back, 0xee, size);
	CHECK_EQ(do_io(f, BLK_OP_READ, 0, back, size, false), size);
	CHECK(memcmp(back, orig, MiB) == 0);
	CHECK(all_zero(back + MiB, MiB));
	CHECK(memcmp(back + 2 * MiB, orig + 2 * MiB, 4096) == 0);
	CHECK(all_zero(back + 2 * MiB + 4096, MiB));
	CHECK(memcmp(back + 3 * MiB + 4096, orig + 3 * MiB + 4096, 7) == 0);
	CHECK(all_zero(back + 3 * MiB + 4096 + 7, 3333));
	CHECK(memcmp(back + 3 * MiB + 4096 + 7 + 3333, orig + 3 * MiB + 4096 + 7 + 3333,
		     MiB - 4096 - 7 - 3333) == 0);
	blk_file_close(f);
	settle();
	CHECK_EQ(size_of(path), size);
	if (check_blocks) {
		CHECK(b1 >= b0 - 8);                        /* kept allocated */
		CHECK(b2 <= b1 - (blkcnt_t)(MiB / 512) + 8); /* unmapped */
	}
	printf("     %s: blocks %lld, %lld after zeroing, %lld after unmapping\n", path, (long long)b0,
	       (long long)b1, (long long)b2);
	free(back);
	free(orig);
	unlink(path);
}

static bool fs_is(const char *path, long magic)
{
	struct statfs s;
	return statfs(path, &s) == 0 && s.f_type == magic;
}

static void test_write_zeroes(void)
{
	/* blocks are only predictable where ZERO_RANGE keeps extents */
	check_write_zeroes(tpath("zeroes.img"), fs_is(dir, EXT4_SUPER_MAGIC) || fs_is(dir, XFS_SUPER_MAGIC));
	/* tmpfs has no ZERO_RANGE: a hole, allocated again */
	char shm[96];
	snprintf(shm, sizeof(shm), "/dev/shm/blk_file_test_%d.img", (int)getpid());
	if (fs_is("/dev/shm", TMPFS_MAGIC))
		check_write_zeroes(shm, false);
	else
		printf("     /dev/shm is not a tmpfs here: its case skipped\n");
	/* ramfs has no fallocate at all: zeroes are written, discard fails */
	if (!ramdir[0]) {
		printf("     no ramfs (needs root for a private mount namespace): its case skipped\n");
		return;
	}
	char ram[128];
	snprintf(ram, sizeof(ram), "%s/zeroes.img", ramdir);
	check_write_zeroes(ram, false);
	CHECK_EQ(make_file(ram, MiB, 9), 0);
	struct blk_file *f = open_disk(ram, false, true);
	CHECK(f);
	if (!f)
		return;
	CHECK(blk_file_can_discard(f)); /* assumed until tried */
	CHECK_EQ(do_io(f, BLK_OP_DISCARD, 0, NULL, 4096, false), -EOPNOTSUPP);
	CHECK(!blk_file_can_discard(f));
	CHECK_EQ(do_io(f, BLK_OP_DISCARD, 0, NULL, 4096, false), -EOPNOTSUPP);
	CHECK_EQ(do_io(f, BLK_OP_WRITE_ZEROES, 100, NULL, 200 * 1024 + 3, true), 0);
	uint8_t *back = calloc(1, 200 * 1024 + 3);
	CHECK_EQ(do_io(f, BLK_OP_READ, 100, back, 200 * 1024 + 3, false), 200 * 1024 + 3);
	CHECK(all_zero(back, 200 * 1024 + 3));
	free(back);
	blk_file_close(f);
	settle();
	unlink(ram);
}

static void test_refused_requests_never_complete(void)
{
	const char *path = tpath("range.img");
	const uint64_t size = MiB;
	CHECK_EQ(make_file(path, size, 2), 0);
	struct blk_file *f = open_disk(path, false, true);
	CHECK(f);
	if (!f)
		return;
	static uint8_t buf[8192];
	struct io io;
	int before = completions;

	prep(&io, f, BLK_OP_READ, size - 10, buf, 20);
	CHECK_EQ(submit(f, &io), -1);
	CHECK_CONTAINS(vmm_error(), "beyond the end of the disk");
	CHECK_CONTAINS(vmm_error(), path);
	prep(&io, f, BLK_OP_WRITE, size + 1, buf, 0);
	CHECK_EQ(submit(f, &io), -1);
	prep(&io, f, BLK_OP_WRITE, UINT64_MAX - 5, buf, 10); /* offset + len overflows */
	CHECK_EQ(submit(f, &io), -1);
	CHECK_CONTAINS(vmm_error(), "beyond the end");
	prep(&io, f, BLK_OP_DISCARD, 4096, NULL, UINT64_MAX - 100);
	CHECK_EQ(submit(f, &io), -1);
	prep(&io, f, BLK_OP_WRITE_ZEROES, size, NULL, 1);
	CHECK_EQ(submit(f, &io), -1);
	/* length and segments disagree */
	prep(&io, f, BLK_OP_READ, 0, buf, 100);
	io.r.len = 101;
	CHECK_EQ(submit(f, &io), -1);
	CHECK_CONTAINS(vmm_error(), "add up to 100");
	/* too many segments */
	static struct iovec many[1025];
	for (unsigned i = 0; i < 1025; i++)
		many[i] = (struct iovec){ buf, 1 };
	prep(&io, f, BLK_OP_READ, 0, buf, 1025);
	io.r.iov = many;
	io.r.niov = 1025;
	CHECK_EQ(submit(f, &io), -1);
	CHECK_CONTAINS(vmm_error(), "segments");
	prep(&io, f, BLK_OP_READ, 0, buf, 1);
	io.r.op = (enum blk_op)99;
	CHECK_EQ(submit(f, &io), -1);
	CHECK_CONTAINS(vmm_error(), "unknown request");
	prep(&io, f, BLK_OP_READ, 0, buf, 1);
	io.r.done = NULL;
	CHECK_EQ(submit(f, &io), -1);
	CHECK_EQ(blk_file_inflight(f), 0);
	/* the edges themselves are fine, and empty transfers complete */
	CHECK_EQ(do_io(f, BLK_OP_READ, size - 20, buf, 20, false), 20);
	CHECK_EQ(do_io(f, BLK_OP_WRITE, size, buf, 0, false), 0);
	CHECK_EQ(do_io(f, BLK_OP_READ, 0, NULL, 0, false), 0);
	before += 3;
	blk_file_close(f);

	f = open_disk(path, true, true);
	CHECK(f);
	if (f) {
		prep(&io, f, BLK_OP_WRITE, 0, buf, 512);
		CHECK_EQ(submit(f, &io), -1);
		CHECK_CONTAINS(vmm_error(), "read-only disk: write refused");
		prep(&io, f, BLK_OP_DISCARD, 0, NULL, 512);
		CHECK_EQ(submit(f, &io), -1);
		CHECK_CONTAINS(vmm_error(), "discard refused");
		prep(&io, f, BLK_OP_WRITE_ZEROES, 0, NULL, 512);
		CHECK_EQ(submit(f, &io), -1);
		CHECK_CONTAINS(vmm_error(), "read-only");
		CHECK_EQ(do_io(f, BLK_OP_READ, 0, buf, 512, false), 512);
		before++;
		blk_file_close(f);
	}
	settle();
	CHECK_EQ(completions, before);
	unlink(path);
}

static void test_queue_full_refused(void)
{
	const char *path = tpath("qd.img");
	CHECK_EQ(make_file(path, MiB, 4), 0);
	struct blk_file_options o = opts(path, false, true);
	o.queue_depth = 4;
	struct blk_file *f = open_opts(&o);
	CHECK(f);
	if (!f)
		return;
	static uint8_t buf[5][4096];
	struct io io[5];
	for (int i = 0; i < 4; i++) {
		prep(&io[i], f, BLK_OP_READ, (uint64_t)i * 4096, buf[i], 4096);
		CHECK_EQ(submit(f, &io[i]), 0);
	}
	CHECK_EQ(blk_file_inflight(f), 4);
	prep(&io[4], f, BLK_OP_READ, 0, buf[4], 4096);
	CHECK_EQ(submit(f, &io[4]), -1);
	CHECK_CONTAINS(vmm_error(), "queue full (4 requests in flight)");
	/* also when the pool's work (discard) would take it */
	struct io d;
	prep(&d, f, BLK_OP_DISCARD, 0, NULL, 4096);
	CHECK_EQ(submit(f, &d), -1);
	CHECK(wait_idle(f, 10000));
	for (int i = 0; i < 4; i++)
		CHECK_EQ(io[i].res, 4096);
	CHECK_EQ(io[4].ncalls, 0);
	CHECK_EQ(submit(f, &io[4]), 0);
	CHECK(wait_idle(f, 10000));
	CHECK_EQ(io[4].res, 4096);
	blk_file_close(f);
	settle();
	unlink(path);
}

/* Requests whose I/O is surely finished still wait for the loop; done
 * callbacks that submit again are not re-entered (on_done checks). */
static void test_completions_never_inside_submit(void)
{
	const char *path = tpath("nosub.img");
	CHECK_EQ(make_file(path, MiB, 6), 0);
	struct blk_file *f = open_disk(path, false, true);
	CHECK(f);
	if (!f)
		return;
	static uint8_t buf[64][4096];
	static struct io io[64];
	int before = completions;
	for (int i = 0; i < 64; i++) {
		prep(&io[i], f, i % 2 ? BLK_OP_READ : BLK_OP_WRITE, (uint64_t)i * 4096, buf[i], 4096);
		io[i].chain = 3;
		CHECK_EQ(submit(f, &io[i]), 0);
	}
	struct io fl, z;
	prep(&fl, f, BLK_OP_FLUSH, 0, NULL, 0);
	prep(&z, f, BLK_OP_WRITE_ZEROES, 300 * 1024, NULL, 4096);
	z.r.unmap = true;
	CHECK_EQ(submit(f, &fl), 0);
	CHECK_EQ(submit(f, &z), 0);
	usleep(50 * 1000);
	CHECK_EQ(completions, before); /* nothing ran without the loop */
	CHECK(wait_idle(f, 30000));
	CHECK_EQ(completions, before + 64 * 4 + 2);
	CHECK_EQ(fl.res, 0);
	CHECK_EQ(z.res, 0);
	for (int i = 0; i < 64; i++) {
		CHECK_EQ(io[i].ncalls, 4);
		CHECK_EQ(io[i].res, 4096);
	}
	blk_file_close(f);
	settle();
	unlink(path);
}

static void test_drain_runs_everything_and_resubmissions(void)
{
	const char *path = tpath("drain.img");
	CHECK_EQ(make_file(path, 4 * MiB, 8), 0);
	struct blk_file *f = open_disk(path, false, true);
	CHECK(f);
	if (!f)
		return;
	blk_file_drain(f); /* nothing in flight: returns */
	static uint8_t buf[8][64 * 1024];
	struct io io[10];
	int before = completions;
	for (int i = 0; i < 8; i++) {
		prep(&io[i], f, i % 2 ? BLK_OP_READ : BLK_OP_WRITE, (uint64_t)i * 64 * 1024, buf[i], 64 * 1024);
		io[i].chain = 4;
		CHECK_EQ(submit(f, &io[i]), 0);
	}
	prep(&io[8], f, BLK_OP_FLUSH, 0, NULL, 0);
	io[8].chain = 2;
	CHECK_EQ(submit(f, &io[8]), 0);
	prep(&io[9], f, BLK_OP_DISCARD, 3 * MiB, NULL, 64 * 1024);
	io[9].chain = 2;
	CHECK_EQ(submit(f, &io[9]), 0);
	blk_file_drain(f); /* no uv_run: drain waits by itself */
	CHECK_EQ(blk_file_inflight(f), 0);
	CHECK_EQ(completions, before + 8 * 5 + 3 + 3);
	for (int i = 0; i < 8; i++) {
		CHECK_EQ(io[i].ncalls, 5);
		CHECK_EQ(io[i].res, 64 * 1024);
	}
	CHECK_EQ(io[8].ncalls, 3);
	CHECK_EQ(io[8].res, 0);
	CHECK_EQ(io[9].ncalls, 3);
	CHECK_EQ(io[9].res, 0);
	blk_file_close(f);
	settle();
	unlink(path);
}

static void test_close_completes_inflight(void)
{
	const char *path = tpath("close.img");
	CHECK_EQ(make_file(path, 4 * MiB, 10), 0);
	struct blk_file *f = open_disk(path, false, true);
	CHECK(f);
	if (!f)
		return;
	static uint8_t buf[32][32 * 1024];
	static struct io io[32];
	uint32_t seed = 99;
	for (int i = 0; i < 32; i++) {
		fill(buf[i], sizeof(buf[i]), &seed);
		prep(&io[i], f, BLK_OP_WRITE, (uint64_t)i * 100 * 1024, buf[i], sizeof(buf[i]));
		CHECK_EQ(submit(f, &io[i]), 0);
	}
	blk_file_close(f);
	unsigned bad = 0;
	for (int i = 0; i < 32; i++) {
		CHECK_EQ(io[i].ncalls, 1);
		CHECK_EQ(io[i].res, sizeof(buf[i]));
		uint8_t *back = read_file(path, (uint64_t)i * 100 * 1024, sizeof(buf[i]));
		bad += !back || memcmp(back, buf[i], sizeof(buf[i]));
		free(back);
	}
	CHECK_EQ(bad, 0);

	/* a done callback that closes the disk: the others complete first,
	 * and nothing is used after the close (valgrind watches) */
	f = open_disk(path, false, true);
	CHECK(f);
	if (!f)
		return;
	int before = completions;
	for (int i = 0; i < 16; i++) {
		prep(&io[i], f, BLK_OP_READ, (uint64_t)i * 4096, buf[i], 4096);
		CHECK_EQ(submit(f, &io[i]), 0);
	}
	for (int i = 0; i < 16; i++)
		io[i].close_me = i == 5 ? f : NULL;
	double end = now_ms() + 10000;
	while (completions < before + 16 && now_ms() < end) {
		uv_run(&loop, UV_RUN_NOWAIT);
		usleep(200);
	}
	CHECK_EQ(completions, before + 16);
	for (int i = 0; i < 16; i++) {
		CHECK_EQ(io[i].ncalls, 1);
		CHECK_EQ(io[i].res, 4096);
	}
	settle();
	unlink(path);
}

/* Linux moves at most 0x7ffff000 bytes per read: a 2 GiB + 1 MiB read of a
 * sparse file comes back short, mid-segment, and the rest is resubmitted.
 * Segments 0-510 share one buffer; 511 and 512 have their own, filled from
 * marked places of the file. */
static void test_short_read_resubmitted(void)
{
	const char *path = tpath("big.img");
	const uint64_t seg = 4 * MiB, len = 2048 * MiB + MiB, split = 0x7ffff000;
	CHECK_EQ(make_file(path, len, 0), 0);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	uint8_t mark1[4096], mark2[MiB];
	uint32_t seed = 4242;
	fill(mark1, sizeof(mark1), &seed);
	fill(mark2, sizeof(mark2), &seed);
	CHECK(fd >= 0);
	CHECK_EQ(pwrite(fd, mark1, sizeof(mark1), (off_t)split), sizeof(mark1));
	CHECK_EQ(pwrite(fd, mark2, sizeof(mark2), (off_t)(2048 * MiB)), sizeof(mark2));
	close(fd);
	struct blk_file *f = open_disk(path, true, true);
	uint8_t *scratch = calloc(1, seg), *b511 = malloc(seg), *b512 = malloc(MiB);
	CHECK(f && scratch && b511 && b512);
	if (!f || !scratch || !b511 || !b512)
		return;
	memset(b511, 0xa5, seg);
	memset(b512, 0xa5, MiB);
	static struct iovec iov[513];
	for (unsigned i = 0; i < 511; i++)
		iov[i] = (struct iovec){ scratch, seg };
	iov[511] = (struct iovec){ b511, seg };
	iov[512] = (struct iovec){ b512, MiB };
	struct io io;
	prep(&io, f, BLK_OP_READ, 0, NULL, len);
	io.r.iov = iov;
	io.r.niov = 513;
	CHECK_EQ(submit(f, &io), 0);
	CHECK(wait_idle(f, 120000));
	CHECK_EQ(io.ncalls, 1);
	CHECK_EQ(io.res, len);
	CHECK(all_zero(b511, seg - 4096));
	CHECK(memcmp(b511 + seg - 4096, mark1, 4096) == 0);
	CHECK(memcmp(b512, mark2, MiB) == 0);
	blk_file_close(f);
	settle();
	free(scratch);
	free(b511);
	free(b512);
	unlink(path);
}

/* RLIMIT_FSIZE cuts a write short at the limit, and the resubmitted rest
 * fails with EFBIG: the request reports the error, not a short count. A
 * file that shrank under the disk gives a short read, then no progress:
 * -EIO. */
static void test_short_write_and_no_progress(void)
{
	const char *path = tpath("fsize.img");
	const uint64_t size = MiB, limit = 512 * 1024 + 1000;
	CHECK_EQ(make_file(path, size, 11), 0);
	struct blk_file *f = open_disk(path, false, true);
	CHECK(f);
	if (!f)
		return;
	uint8_t *buf = malloc(size), *back = malloc(size);
	uint32_t seed = 77;
	fill(buf, size, &seed);
	struct iovec iov[3] = { { buf, 100 * 1024 }, { buf + 100 * 1024, 500 * 1024 },
				{ buf + 600 * 1024, 424 * 1024 } };
	struct rlimit old, lim;
	CHECK_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = limit;
	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
	struct io io;
	prep(&io, f, BLK_OP_WRITE, 0, NULL, size);
	io.r.iov = iov;
	io.r.niov = 3;
	CHECK_EQ(submit(f, &io), 0);
	CHECK(wait_idle(f, 10000));
	CHECK_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);
	CHECK_EQ(io.ncalls, 1);
	CHECK_EQ(io.res, -EFBIG);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK_EQ(pread(fd, back, size, 0), size);
	CHECK(memcmp(back, buf, limit) == 0); /* the short part was written */

	/* the file shrinks: half of a read, then nothing */
	CHECK_EQ(ftruncate(fd, (off_t)(size / 2)), 0);
	close(fd);
	memset(back, 0xa5, size);
	CHECK_EQ(do_io(f, BLK_OP_READ, size / 4, back, size / 2, false), -EIO);
	blk_file_close(f);
	settle();
	free(buf);
	free(back);
	unlink(path);
}

/* ---- locks ---- */

static int lock_type(int fd, int byte)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -1;
	return fl.l_type;
}

/* Exactly QEMU's bytes: 100 + p held, 200 + p not shared. */
static void check_bytes(const char *path, const int *locked, unsigned n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	static const int bytes[] = { 100, 101, 102, 103, 200, 201, 202, 203 };
	for (unsigned i = 0; i < 8; i++) {
		bool want = false;
		for (unsigned j = 0; j < n; j++)
			want |= locked[j] == bytes[i];
		int t = lock_type(fd, bytes[i]);
		if (t != (want ? F_RDLCK : F_UNLCK)) {
			fprintf(stderr, "  byte %d: lock type %d, expected %s\n", bytes[i], t, want ? "read" : "none");
			check_failures++;
		}
	}
	close(fd);
}

static const int writer_bytes[] = { 100, 101, 201, 203 };
static const int reader_bytes[] = { 100, 201, 203 };

static void test_lock_bytes_are_qemus(void)
{
	const char *path = tpath("lockbytes.img");
	CHECK_EQ(make_file(path, MiB, 0), 0);
	struct blk_file *w = open_disk(path, false, true);
	CHECK(w);
	check_bytes(path, writer_bytes, 4);
	blk_file_close(w);
	check_bytes(path, NULL, 0);
	struct blk_file *r = open_disk(path, true, true);
	CHECK(r);
	check_bytes(path, reader_bytes, 3);
	blk_file_close(r);
	/* lock = false takes none, and checks none */
	w = open_disk(path, false, true);
	struct blk_file *n = open_disk(path, false, false);
	CHECK(w && n);
	blk_file_close(n);
	check_bytes(path, writer_bytes, 4); /* n's close dropped nothing of w's */
	blk_file_close(w);
	settle();
	unlink(path);
}

static void test_lock_two_writers_conflict(void)
{
	const char *path = tpath("lock2w.img");
	CHECK_EQ(make_file(path, MiB, 0), 0);
	struct blk_file *a = open_disk(path, false, true);
	CHECK(a);
	struct blk_file_options o = opts(path, false, true);
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), path);
	CHECK_CONTAINS(vmm_error(), "is in use by another process: it holds the \"write\" permission this disk does "
				    "not share (lock byte 101)");
	/* the failed open left no locks behind */
	blk_file_close(a);
	check_bytes(path, NULL, 0);
	a = open_disk(path, false, true);
	CHECK(a);
	blk_file_close(a);
	settle();
	unlink(path);
}

static void test_lock_writer_reader_conflict_both_ways(void)
{
	const char *path = tpath("lockwr.img");
	CHECK_EQ(make_file(path, MiB, 0), 0);
	struct blk_file *w = open_disk(path, false, true);
	CHECK(w);
	struct blk_file_options ro = opts(path, true, true), rw = opts(path, false, true);
	CHECK(blk_file_open(&ro, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "holds the \"write\" permission this disk does not share (lock byte 101)");
	blk_file_close(w);

	struct blk_file *r = open_disk(path, true, true);
	CHECK(r);
	CHECK(blk_file_open(&rw, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "does not share the \"write\" permission this disk needs (lock byte 201)");
	blk_file_close(r);
	settle();
	unlink(path);
}

static void test_lock_two_readers_share(void)
{
	const char *path = tpath("lockrr.img");
	CHECK_EQ(make_file(path, MiB, 0), 0);
	struct blk_file *a = open_disk(path, true, true), *b = open_disk(path, true, true);
	CHECK(a && b);
	struct blk_file_options rw = opts(path, false, true);
	CHECK(blk_file_open(&rw, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "lock byte 201");
	blk_file_close(a);
	CHECK(blk_file_open(&rw, &loop) == NULL); /* b still reads */
	blk_file_close(b);
	struct blk_file *w = open_disk(path, false, true);
	CHECK(w);
	blk_file_close(w);
	settle();
	unlink(path);
}

/* The migration handover without the fd: the source unlocks, the target
 * opens; the source cannot lock again until the target lets go. */
static void test_unlock_then_lock_handover(void)
{
	const char *path = tpath("lockho.img");
	CHECK_EQ(make_file(path, MiB, 0), 0);
	struct blk_file *src = open_disk(path, false, true);
	CHECK(src);
	if (!src)
		return;
	CHECK_EQ(blk_file_unlock(src), 0);
	check_bytes(path, NULL, 0);
	CHECK_EQ(blk_file_unlock(src), 0); /* twice is fine */
	struct blk_file *dst = open_disk(path, false, true);
	CHECK(dst);
	CHECK_EQ(blk_file_lock(src), -1);
	CHECK_CONTAINS(vmm_error(), "in use by another process");
	CHECK_CONTAINS(vmm_error(), "lock byte 101");
	check_bytes(path, writer_bytes, 4); /* dst's, and the failed lock left none */
	blk_file_close(dst);
	check_bytes(path, NULL, 0);
	CHECK_EQ(blk_file_lock(src), 0);
	check_bytes(path, writer_bytes, 4);
	struct blk_file_options rw = opts(path, false, true);
	CHECK(blk_file_open(&rw, &loop) == NULL);
	/* an incoming target opens without locks, and takes them later */
	struct blk_file *late = open_disk(path, false, false);
	CHECK(late);
	if (late) {
		CHECK_EQ(blk_file_lock(late), -1);
		CHECK_EQ(blk_file_unlock(src), 0);
		CHECK_EQ(blk_file_lock(late), 0);
		CHECK_EQ(blk_file_lock(src), -1);
		blk_file_close(late);
	}
	blk_file_close(src);
	settle();
	unlink(path);
}

/* A migration's fd: the same open file description, so the same locks; it
 * is used as it is (no new open) and its own locks do not conflict. */
static void test_handed_in_fd_keeps_locks(void)
{
	const char *path = tpath("lockfd.img");
	CHECK_EQ(make_file(path, MiB, 13), 0);
	struct blk_file *a = open_disk(path, false, true);
	CHECK(a);
	if (!a)
		return;
	int fd2 = dup(blk_file_fd(a));
	CHECK(fd2 >= 0);
	struct blk_file_options o = opts(NULL, false, true);
	o.fd = fd2;
	struct blk_file *b = open_opts(&o);
	if (!b)
		fprintf(stderr, "  adopt: %s\n", vmm_error());
	CHECK(b);
	if (!b)
		return;
	CHECK_EQ(blk_file_fd(b), fd2);
	CHECK(strcmp(blk_file_path(b), "fd ") > 0);
	blk_file_close(a); /* fd2 keeps the description, and its locks */
	check_bytes(path, writer_bytes, 4);
	struct blk_file_options rw = opts(path, false, true), ro = opts(path, true, true);
	CHECK(blk_file_open(&rw, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "lock byte 101");
	CHECK(blk_file_open(&ro, &loop) == NULL);
	uint8_t buf[4096], want[4096];
	memset(want, 0x3c, sizeof(want));
	memset(buf, 0, sizeof(buf));
	CHECK_EQ(do_io(b, BLK_OP_WRITE, 4096, want, sizeof(want), false), sizeof(want));
	CHECK_EQ(do_io(b, BLK_OP_READ, 4096, buf, sizeof(buf), false), sizeof(buf));
	CHECK(memcmp(buf, want, sizeof(buf)) == 0);
	blk_file_close(b);
	CHECK_EQ(fcntl(fd2, F_GETFD), -1); /* owned, and closed */
	struct blk_file *c = open_disk(path, false, true);
	CHECK(c);
	blk_file_close(c);

	/* with a path for the messages, and handed in without a lock of its own */
	int raw = open(path, O_RDWR | O_CLOEXEC);
	o = opts(path, false, true);
	o.fd = raw;
	b = open_opts(&o);
	CHECK(b);
	check_bytes(path, writer_bytes, 4); /* taken, since it had none */
	blk_file_close(b);

	/* a writable disk's fd adopted read-only: its bytes become a reader's */
	a = open_disk(path, false, true);
	CHECK(a);
	if (!a)
		return;
	o = opts(path, true, true);
	o.fd = dup(blk_file_fd(a));
	blk_file_close(a);
	check_bytes(path, writer_bytes, 4);
	b = open_opts(&o);
	CHECK(b);
	check_bytes(path, reader_bytes, 3);
	c = open_disk(path, true, true); /* readers share */
	CHECK(c);
	blk_file_close(c);
	blk_file_close(b);
	settle();
	unlink(path);
}

static void test_handed_in_fd_checked(void)
{
	const char *path = tpath("adopt.img");
	CHECK_EQ(make_file(path, MiB, 0), 0);
	struct blk_file_options o = opts(path, false, true);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	o.fd = fd;
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "is open read-only; a writable disk needs O_RDWR");
	CHECK(fcntl(fd, F_GETFD) >= 0); /* still the caller's */
	o.readonly = true;
	struct blk_file *f = open_opts(&o);
	CHECK(f);
	blk_file_close(f);

	fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC);
	o = opts(path, false, true);
	o.fd = fd;
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "O_APPEND");
	close(fd);

	fd = open(path, O_RDWR | O_CLOEXEC);
	o.fd = fd;
	o.cache = BLK_CACHE_NONE;
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "without O_DIRECT");
	o.cache = BLK_CACHE_WRITETHROUGH;
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "without O_DSYNC");
	/* O_NONBLOCK (io_uring would answer EAGAIN) is cleared */
	CHECK_EQ(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	o.cache = BLK_CACHE_WRITEBACK;
	f = open_opts(&o);
	CHECK(f);
	if (f) {
		CHECK(!(fcntl(fd, F_GETFL) & O_NONBLOCK));
		uint8_t b[512] = { 0 };
		CHECK_EQ(do_io(f, BLK_OP_READ, 0, b, sizeof(b), false), sizeof(b));
		blk_file_close(f);
	}

	int p[2];
	CHECK_EQ(pipe(p), 0);
	o = opts(NULL, true, true);
	o.fd = p[0];
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "is a pipe, not a regular file or block device");
	CHECK(fcntl(p[0], F_GETFD) >= 0);
	close(p[0]);
	close(p[1]);
	o.fd = 1000; /* not open */
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "fd 1000");
	CHECK_CONTAINS(vmm_error(), "Bad file descriptor");
	settle();
	unlink(path);
}

static void test_disown_keeps_fd_and_locks(void)
{
	const char *path = tpath("disown.img");
	CHECK_EQ(make_file(path, MiB, 0), 0);
	struct blk_file *f = open_disk(path, false, true);
	CHECK(f);
	if (!f)
		return;
	uint8_t buf[4096] = { 0 };
	struct io io;
	prep(&io, f, BLK_OP_READ, 0, buf, sizeof(buf));
	CHECK_EQ(submit(f, &io), 0);
	int fd = blk_file_fd(f);
	blk_file_disown_fd(f); /* drains first */
	CHECK_EQ(io.ncalls, 1);
	CHECK_EQ(blk_file_fd(f), -1);
	prep(&io, f, BLK_OP_READ, 0, buf, sizeof(buf));
	CHECK_EQ(submit(f, &io), -1);
	CHECK_CONTAINS(vmm_error(), "handed away");
	blk_file_close(f);
	CHECK(fcntl(fd, F_GETFD) >= 0);
	check_bytes(path, writer_bytes, 4);
	close(fd);
	check_bytes(path, NULL, 0);
	settle();
	unlink(path);
}

/* ---- cache = none ---- */

static void test_cache_none(void)
{
	/* refused where O_DIRECT is: ramfs always, tmpfs before Linux 6.6 */
	char shm[96];
	snprintf(shm, sizeof(shm), "/dev/shm/blk_file_direct_%d.img", (int)getpid());
	const char *refusers[2] = { shm, NULL };
	char ram[128];
	if (ramdir[0]) {
		snprintf(ram, sizeof(ram), "%s/direct.img", ramdir);
		refusers[1] = ram;
	} else {
		printf("     no ramfs (needs root for a private mount namespace): its case skipped\n");
	}
	for (unsigned i = 0; i < 2; i++) {
		const char *p = refusers[i];
		if (!p || make_file(p, MiB, 1))
			continue;
		int probe = open(p, O_RDWR | O_DIRECT | O_CLOEXEC);
		struct blk_file_options o = opts(p, false, true);
		o.cache = BLK_CACHE_NONE;
		struct blk_file *f = blk_file_open(&o, &loop);
		if (probe >= 0) {
			printf("     %s accepts O_DIRECT here (tmpfs does since Linux 6.6): refusal not checked there\n", p);
			close(probe);
			CHECK(f);
			blk_file_close(f);
		} else {
			char want[256];
			snprintf(want, sizeof(want), "cache = \"none\" needs O_DIRECT, which the filesystem of %s refuses: "
				 "Invalid argument", p);
			CHECK(f == NULL);
			CHECK_CONTAINS(vmm_error(), want);
			printf("     refused: %s\n", vmm_error());
		}
		unlink(p);
	}

	/* works where the filesystem takes it */
	const char *path = tpath("direct.img");
	CHECK_EQ(make_file(path, 4 * MiB, 21), 0);
	int probe = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (probe < 0) {
		printf("     %s refuses O_DIRECT (%s): the working case skipped\n", dir, strerror(errno));
		unlink(path);
		return;
	}
	close(probe);
	struct blk_file_options o = opts(path, false, true);
	o.cache = BLK_CACHE_NONE;
	struct blk_file *f = open_opts(&o);
	CHECK(f);
	if (!f)
		return;
	unsigned bs = blk_file_block_size(f);
	CHECK(bs >= 512 && bs <= 65536 && !(bs & (bs - 1)));
	CHECK(fcntl(blk_file_fd(f), F_GETFL) & O_DIRECT);
	uint8_t *a, *b;
	CHECK_EQ(posix_memalign((void **)&a, 4096, 256 * 1024), 0);
	CHECK_EQ(posix_memalign((void **)&b, 4096, 256 * 1024), 0);
	uint32_t seed = 5;
	fill(a, 256 * 1024, &seed);
	memset(b, 0, 256 * 1024);
	struct io io;
	prep(&io, f, BLK_OP_WRITE, 64 * 1024, a, 128 * 1024);
	io.iov[1] = (struct iovec){ a + 128 * 1024, 128 * 1024 };
	io.r.niov = 2;
	io.r.len = 256 * 1024;
	CHECK_EQ(submit(f, &io), 0);
	CHECK(wait_idle(f, 10000));
	CHECK_EQ(io.res, 256 * 1024);
	CHECK_EQ(do_io(f, BLK_OP_FLUSH, 0, NULL, 0, false), 0);
	CHECK_EQ(do_io(f, BLK_OP_READ, 64 * 1024, b, 256 * 1024, false), 256 * 1024);
	CHECK(memcmp(a, b, 256 * 1024) == 0);
	uint8_t *back = read_file(path, 64 * 1024, 256 * 1024);
	CHECK(back && memcmp(back, a, 256 * 1024) == 0);
	free(back);
	CHECK_EQ(do_io(f, BLK_OP_WRITE_ZEROES, 64 * 1024, NULL, 4 * bs, false), 0);
	CHECK_EQ(do_io(f, BLK_OP_READ, 64 * 1024, b, 4 * bs, false), 4 * bs);
	CHECK(all_zero(b, 4 * bs));
	/* the caller aligns; the backend checks offset and length */
	prep(&io, f, BLK_OP_READ, 100, b, bs);
	CHECK_EQ(submit(f, &io), -1);
	CHECK_CONTAINS(vmm_error(), "not aligned");
	CHECK_CONTAINS(vmm_error(), "cache = \"none\"");
	prep(&io, f, BLK_OP_WRITE, bs, a, bs + 1);
	CHECK_EQ(submit(f, &io), -1);
	prep(&io, f, BLK_OP_DISCARD, 0, NULL, 100);
	CHECK_EQ(submit(f, &io), -1);
	printf("     O_DIRECT on %s, %u-byte blocks\n", dir, bs);
	blk_file_close(f);
	settle();
	free(a);
	free(b);
	unlink(path);
}

/* ---- open errors ---- */

static void test_open_errors_named(void)
{
	struct blk_file_options o = opts(tpath("missing.img"), false, true);
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "missing.img: No such file or directory");
	o = opts(dir, true, true);
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), " is a directory");
	CHECK_CONTAINS(vmm_error(), dir);
	o = opts("/dev/null", false, true);
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(),
		       "disk image /dev/null is a character device (1:3), not a regular file or block device");
	o = opts(NULL, false, true);
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "neither a path nor an fd");
	const char *path = tpath("depth.img");
	CHECK_EQ(make_file(path, MiB, 0), 0);
	o = opts(path, false, true);
	o.queue_depth = 100000;
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "queue depth");
	CHECK(blk_file_open(&o, NULL) == NULL);
	unlink(path);
}

/* Root opens a mode-0444 file for writing all the same; what refuses root
 * is a read-only mount (EROFS) or the immutable attribute (EPERM). */
static void test_open_readonly_file_for_writing(void)
{
	unsigned tried = 0;
	if (mntns) {
		char src[128], ro[128], img[160];
		snprintf(src, sizeof(src), "%s/rosrc", dir);
		snprintf(ro, sizeof(ro), "%s/ro", dir);
		snprintf(img, sizeof(img), "%s/rosrc/ro.img", dir);
		CHECK_EQ(mkdir(src, 0755), 0);
		CHECK_EQ(mkdir(ro, 0755), 0);
		CHECK_EQ(make_file(img, MiB, 0), 0);
		if (mount(src, ro, "none", MS_BIND, NULL) == 0 &&
		    mount("none", ro, "none", MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) == 0) {
			snprintf(img, sizeof(img), "%s/ro/ro.img", dir);
			struct blk_file_options o = opts(img, false, true);
			CHECK(blk_file_open(&o, &loop) == NULL);
			char want[256];
			snprintf(want, sizeof(want), "disk image %s is read-only here (open for writing: Read-only file system)",
				 img);
			CHECK_CONTAINS(vmm_error(), want);
			printf("     %s\n", vmm_error());
			o.readonly = true;
			struct blk_file *f = open_opts(&o);
			CHECK(f); /* and read-only it opens, and locks */
			blk_file_close(f);
			tried++;
		} else {
			printf("     read-only bind mount: %s: that case skipped\n", strerror(errno));
		}
		umount2(ro, MNT_DETACH);
		snprintf(img, sizeof(img), "%s/rosrc/ro.img", dir);
		unlink(img);
		rmdir(ro);
		rmdir(src);
	} else {
		printf("     no private mount namespace: the read-only mount case skipped\n");
	}

	if (geteuid() != 0) { /* mode bits bind everyone but root */
		const char *p = tpath("mode0444.img");
		CHECK_EQ(make_file(p, MiB, 0), 0);
		CHECK_EQ(chmod(p, 0444), 0);
		struct blk_file_options o = opts(p, false, true);
		CHECK(blk_file_open(&o, &loop) == NULL);
		CHECK_CONTAINS(vmm_error(), "is read-only here (open for writing: Permission denied)");
		printf("     %s\n", vmm_error());
		o.readonly = true;
		struct blk_file *f = open_opts(&o);
		CHECK(f);
		blk_file_close(f);
		unlink(p);
		tried++;
	}

	const char *path = tpath("immutable.img");
	CHECK_EQ(make_file(path, MiB, 0), 0);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int flags = 0;
	if (fd >= 0 && ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 &&
	    (flags |= FS_IMMUTABLE_FL, ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0)) {
		struct blk_file_options o = opts(path, false, true);
		struct blk_file *f = blk_file_open(&o, &loop);
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", vmm_error());
		o.readonly = true;
		struct blk_file *r = open_opts(&o);
		flags &= ~FS_IMMUTABLE_FL;
		CHECK_EQ(ioctl(fd, FS_IOC_SETFLAGS, &flags), 0); /* at once, before any CHECK */
		CHECK(f == NULL);
		CHECK_CONTAINS(msg, "is read-only here (open for writing: Operation not permitted)");
		CHECK(r);
		blk_file_close(r);
		printf("     %s\n", msg);
		tried++;
	} else {
		printf("     chattr +i: %s: that case skipped\n", strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	unlink(path);
	if (!tried)
		printf("     neither a read-only mount nor an immutable file could be made here\n");
}

/* ---- a block device ---- */

static int loop_dev = -1;     /* /dev/loopN held open: detached at its close */
static char loop_path[32];
static char loop_backing[160];

static bool make_loop_device(void)
{
	snprintf(loop_backing, sizeof(loop_backing), "%s/loop-backing.img", dir);
	if (make_file(loop_backing, 8 * MiB, 31))
		return false;
	int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		printf("     /dev/loop-control: %s\n", strerror(errno));
		return false;
	}
	int back = open(loop_backing, O_RDWR | O_CLOEXEC);
	for (int tries = 0; tries < 5 && back >= 0; tries++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			break;
		snprintf(loop_path, sizeof(loop_path), "/dev/loop%d", n);
		int dev = open(loop_path, O_RDWR | O_CLOEXEC);
		if (dev < 0)
			break;
		struct loop_config cfg;
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = (unsigned)back;
		cfg.block_size = 4096;
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
		if (ioctl(dev, LOOP_CONFIGURE, &cfg) == 0) {
			loop_dev = dev;
			break;
		}
		close(dev);
		if (errno != EBUSY)
			break;
	}
	if (back >= 0)
		close(back);
	close(ctl);
	if (loop_dev < 0)
		printf("     no loop device: %s\n", strerror(errno));
	return loop_dev >= 0;
}

static void test_block_device(void)
{
	if (loop_dev < 0) {
		printf("     no loop device could be set up here (needs root): skipped\n");
		return;
	}
	struct blk_file *f = open_disk(loop_path, false, true);
	CHECK(f);
	if (!f)
		return;
	CHECK_EQ(blk_file_size(f), 8 * MiB);
	CHECK_EQ(blk_file_block_size(f), 4096);
	printf("     %s: discard %s\n", loop_path, blk_file_can_discard(f) ? "supported" : "not supported");
	CHECK(blk_file_can_discard(f)); /* a loop device over ext4 punches holes */
	uint8_t *a = malloc(MiB), *b = malloc(MiB);
	uint32_t seed = 17;
	fill(a, MiB, &seed);
	memset(b, 0xa5, MiB);
	CHECK_EQ(do_io(f, BLK_OP_WRITE, MiB, a, MiB, false), MiB);
	CHECK_EQ(do_io(f, BLK_OP_FLUSH, 0, NULL, 0, false), 0); /* through to the backing file */
	uint8_t *back = read_file(loop_backing, MiB, MiB);
	CHECK(back && memcmp(back, a, MiB) == 0);
	free(back);
	CHECK_EQ(do_io(f, BLK_OP_DISCARD, MiB, NULL, 64 * 1024, false), 0);
	CHECK_EQ(do_io(f, BLK_OP_WRITE_ZEROES, MiB + 128 * 1024, NULL, 64 * 1024, false), 0);
	CHECK_EQ(do_io(f, BLK_OP_WRITE_ZEROES, MiB + 256 * 1024, NULL, 64 * 1024, true), 0);
	CHECK_EQ(do_io(f, BLK_OP_READ, MiB, b, MiB, false), MiB);
	CHECK(all_zero(b, 64 * 1024));
	CHECK(memcmp(b + 64 * 1024, a + 64 * 1024, 64 * 1024) == 0);
	CHECK(all_zero(b + 128 * 1024, 64 * 1024));
	CHECK(memcmp(b + 192 * 1024, a + 192 * 1024, 64 * 1024) == 0);
	CHECK(all_zero(b + 256 * 1024, 64 * 1024));
	CHECK(memcmp(b + 320 * 1024, a + 320 * 1024, MiB - 320 * 1024) == 0);
	/* a device's discard and zeroing work in its blocks */
	struct io io;
	prep(&io, f, BLK_OP_DISCARD, 512, NULL, 4096);
	CHECK_EQ(submit(f, &io), -1);
	CHECK_CONTAINS(vmm_error(), "not aligned to the 4096-byte block");
	/* and it locks like a file */
	struct blk_file_options o = opts(loop_path, true, true);
	CHECK(blk_file_open(&o, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "lock byte 101");
	blk_file_close(f);
	settle();
	free(a);
	free(b);
}

/* ---- the engines ---- */

static void test_auto_falls_back_when_io_uring_refused(void)
{
	const char *path = tpath("auto.img");
	CHECK_EQ(make_file(path, MiB, 0), 0);
	char log[160];
	snprintf(log, sizeof(log), "%s/stderr.txt", dir);
	fflush(stderr);
	int saved = dup(2), out = open(log, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(saved >= 0 && out >= 0);
	CHECK_EQ(dup2(out, 2), 2);
	CHECK_EQ(setenv("VMM_BLK_NO_URING", "1", 1), 0);
	struct blk_file_options o = opts(path, false, true);
	o.engine = BLK_ENGINE_AUTO;
	struct blk_file *f = blk_file_open(&o, &loop);
	o.engine = BLK_ENGINE_URING;
	o.lock = false;
	struct blk_file *u = blk_file_open(&o, &loop);
	char umsg[1024];
	snprintf(umsg, sizeof(umsg), "%s", vmm_error());
	CHECK_EQ(unsetenv("VMM_BLK_NO_URING"), 0);
	fflush(stderr);
	CHECK_EQ(dup2(saved, 2), 2);
	close(saved);
	char text[1024] = "";
	ssize_t n = pread(out, text, sizeof(text) - 1, 0);
	close(out);
	unlink(log);
	text[n > 0 ? n : 0] = '\0';
	CHECK(f);
	CHECK(u == NULL);
	CHECK_CONTAINS(umsg, "io_uring unavailable (Operation not permitted)");
	char want[256];
	snprintf(want, sizeof(want), "%s: io_uring unavailable (Operation not permitted); using a thread pool\n",
		 path);
	CHECK_CONTAINS(text, want);
	unsigned lines = 0;
	for (char *c = text; *c; c++)
		lines += *c == '\n';
	CHECK_EQ(lines, 1); /* one line, and nothing from the URING refusal */
	printf("     logged: %s", text);
	if (f) {
		CHECK_EQ(blk_file_engine(f), BLK_ENGINE_THREADS);
		uint8_t a[4096], b[4096];
		memset(a, 0x77, sizeof(a));
		memset(b, 0, sizeof(b));
		CHECK_EQ(do_io(f, BLK_OP_WRITE, 4096, a, sizeof(a), false), sizeof(a));
		CHECK_EQ(do_io(f, BLK_OP_READ, 4096, b, sizeof(b), false), sizeof(b));
		CHECK(memcmp(a, b, sizeof(a)) == 0);
		blk_file_close(f);
	}
	/* without the hook, AUTO picks io_uring where it works */
	o.engine = BLK_ENGINE_URING;
	struct blk_file *probe = blk_file_open(&o, &loop);
	bool uring = probe != NULL;
	blk_file_close(probe);
	o.engine = BLK_ENGINE_AUTO;
	f = blk_file_open(&o, &loop);
	CHECK(f);
	if (f)
		CHECK_EQ(blk_file_engine(f), uring ? BLK_ENGINE_URING : BLK_ENGINE_THREADS);
	blk_file_close(f);
	settle();
	unlink(path);
}

static void run_engine_cases(enum blk_engine e)
{
	engine = e;
	printf("-- engine: %s\n", engine_name(e));
	RUN(test_write_read_random_multisegment);
	RUN(test_flush_and_cache_flags);
	RUN(test_discard_punches_hole);
	RUN(test_write_zeroes);
	RUN(test_refused_requests_never_complete);
	RUN(test_queue_full_refused);
	RUN(test_completions_never_inside_submit);
	RUN(test_drain_runs_everything_and_resubmissions);
	RUN(test_close_completes_inflight);
	RUN(test_short_read_resubmitted);
	RUN(test_short_write_and_no_progress);
	RUN(test_lock_bytes_are_qemus);
	RUN(test_lock_two_writers_conflict);
	RUN(test_lock_writer_reader_conflict_both_ways);
	RUN(test_lock_two_readers_share);
	RUN(test_unlock_then_lock_handover);
	RUN(test_handed_in_fd_keeps_locks);
	RUN(test_handed_in_fd_checked);
	RUN(test_disown_keeps_fd_and_locks);
	RUN(test_cache_none);
	RUN(test_block_device);
}

/* The disk's rings do what the disk path needs and nothing else: an
 * openat (what a seccomp filter refuses) fails with EACCES. */
static void test_ring_restricted_to_disk_io(void)
{
	struct io_uring ring;
	int rc = io_uring_queue_init(4, &ring, IORING_SETUP_R_DISABLED);
	if (rc < 0) {
		printf("  (io_uring unavailable here: %s)\n", strerror(-rc));
		return;
	}
	CHECK_EQ(blk_ring_restrict(&ring), 0);
	CHECK_EQ(blk_ring_enable(&ring), 0);
	char path[] = "/tmp/test_blk_ring_XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0 && write(fd, "ring", 4) == 4);
	char buf[4] = "";
	struct iovec iov = { buf, sizeof(buf) };
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	io_uring_prep_readv(sqe, fd, &iov, 1, 0);
	sqe->user_data = 1;
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_openat(sqe, AT_FDCWD, "/etc/hostname", O_RDONLY, 0);
	sqe->user_data = 2;
	CHECK_EQ(io_uring_submit(&ring), 2);
	for (int i = 0; i < 2; i++) {
		struct io_uring_cqe *cqe;
		CHECK_EQ(io_uring_wait_cqe(&ring, &cqe), 0);
		if (cqe->user_data == 2)
			CHECK_EQ(cqe->res, -EACCES);
		else
			CHECK_EQ(cqe->res, 4);
		io_uring_cqe_seen(&ring, cqe);
	}
	CHECK(memcmp(buf, "ring", 4) == 0);
	/* and no registering after the start */
	int efd = eventfd(0, EFD_CLOEXEC);
	CHECK(io_uring_register_eventfd(&ring, efd) < 0);
	close(efd);
	close(fd);
	unlink(path);
	io_uring_queue_exit(&ring);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Root: a private mount namespace, so that the ramfs and read-only
	 * bind mounts are this process's only (and vanish with it). */
	if (unshare(CLONE_NEWNS) == 0 && mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) == 0)
		mntns = true;
	else
		printf("no private mount namespace (%s): the ramfs and read-only mount cases are skipped\n",
		       strerror(errno));
	snprintf(dir, sizeof(dir), "/var/tmp/blk_file_test_XXXXXX");
	if (!mkdtemp(dir)) {
		printf("mkdtemp %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if (mntns) {
		snprintf(ramdir, sizeof(ramdir), "%s/ram", dir);
		if (mkdir(ramdir, 0755) || mount("ramfs", ramdir, "ramfs", 0, NULL)) {
			printf("no ramfs (%s): its cases are skipped\n", strerror(errno));
			rmdir(ramdir);
			ramdir[0] = '\0';
		}
	}
	if (uv_loop_init(&loop)) {
		printf("uv_loop_init failed\n");
		return 1;
	}
	make_loop_device();

	RUN(test_open_errors_named);
	RUN(test_open_readonly_file_for_writing);
	RUN(test_auto_falls_back_when_io_uring_refused);
	RUN(test_ring_restricted_to_disk_io);

	run_engine_cases(BLK_ENGINE_THREADS);

	engine = BLK_ENGINE_URING;
	char probe[160];
	snprintf(probe, sizeof(probe), "%s", tpath("probe.img"));
	CHECK_EQ(make_file(probe, 4096, 0), 0);
	struct blk_file_options o = opts(probe, false, false);
	struct blk_file *f = blk_file_open(&o, &loop);
	if (f) {
		blk_file_close(f);
		run_engine_cases(BLK_ENGINE_URING);
	} else {
		printf("-- engine: io_uring skipped: %s\n", vmm_error());
	}
	unlink(probe);

	if (loop_dev >= 0)
		close(loop_dev);
	settle();
	CHECK_EQ(uv_loop_close(&loop), 0);
	if (ramdir[0]) {
		umount2(ramdir, MNT_DETACH);
		rmdir(ramdir);
	}
	unlink(loop_backing);
	if (rmdir(dir))
		printf("rmdir %s: %s\n", dir, strerror(errno));
	return CHECK_DONE();
}
