/* Disk image backend: a raw file or block device, QEMU's OFD lock bytes,
 * asynchronous I/O through io_uring or a thread pool. See blk_file.h. */
#include "blk_file.h"
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "err.h"
#include "loop.h"

#define DEFAULT_DEPTH 128
#define MAX_DEPTH 4096
#define POOL_THREADS 4
#define MAX_IOV 1024 /* UIO_MAXIOV: preadv and io_uring's readv refuse more */

/* QEMU's file-posix lock bytes (block/file-posix.c): RAW_LOCK_PERM_BASE and
 * RAW_LOCK_SHARED_BASE, one byte per BLK_PERM_* bit. */
#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200
enum { PERM_CONSISTENT_READ, PERM_WRITE, PERM_WRITE_UNCHANGED, PERM_RESIZE, NPERMS };
#define PERM_ALL ((1u << NPERMS) - 1)
static const char *const perm_names[NPERMS] = { "consistent read", "write", "write unchanged", "resize" };

/* What the backend keeps for one request in flight. */
struct slot {
	struct blk_req *r;
	uint64_t done;     /* READ/WRITE: bytes transferred so far */
	struct iovec *iov; /* the rest of r->iov after a short transfer (malloc'd) */
	int64_t res;       /* the pool's result */
	struct slot *next; /* free list, pool queues */
};

struct pool {
	bool up;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct slot *qhead, *qtail; /* to do */
	struct slot *dhead, *dtail; /* done, for the main thread */
	bool stop;
	pthread_t threads[POOL_THREADS];
	unsigned nthreads;
	int efd; /* written when dhead becomes non-empty */
	struct loop_fd *watch;
};

struct blk_file {
	char *path;
	int fd;
	bool adopted;
	bool readonly;
	bool is_blkdev;
	enum blk_cache cache;
	enum blk_engine engine;
	uint64_t size;
	unsigned block_size;
	atomic_bool can_discard;   /* PUNCH_HOLE / BLKDISCARD: cleared on EOPNOTSUPP */
	atomic_bool zero_range_ok; /* FALLOC_FL_ZERO_RANGE: cleared on EOPNOTSUPP */
	struct uv_loop_s *loop;

	unsigned depth, inflight;
	struct slot *slots, *free_slots;

	bool ring_up;
	struct io_uring ring;
	int ring_efd;
	struct loop_fd *ring_watch;

	/* THREADS: everything; URING: discard and write-zeroes (one thread,
	 * started on the first). */
	struct pool pool;
	struct slot *ready, *ready_tail; /* taken from the pool's done list; main thread */

	unsigned nesting;   /* entry points on the stack (callbacks may close) */
	bool close_pending; /* blk_file_close was called */
	bool closed;        /* and has drained: submit refuses */
};

static void destroy(struct blk_file *f);

/* ---- small helpers ---- */

static const char *file_kind(const struct stat *st, char *buf, size_t len)
{
	if (S_ISDIR(st->st_mode))
		return "a directory";
	if (S_ISFIFO(st->st_mode))
		return "a pipe";
	if (S_ISSOCK(st->st_mode))
		return "a socket";
	if (S_ISLNK(st->st_mode))
		return "a symbolic link";
	if (S_ISCHR(st->st_mode)) {
		snprintf(buf, len, "a character device (%u:%u)", major(st->st_rdev), minor(st->st_rdev));
		return buf;
	}
	return "not a file";
}

static int check_kind(const char *path, const struct stat *st)
{
	if (S_ISREG(st->st_mode) || S_ISBLK(st->st_mode))
		return 0;
	if (S_ISDIR(st->st_mode))
		return vmm_fail("disk image %s is a directory", path);
	char buf[64];
	return vmm_fail("disk image %s is %s, not a regular file or block device", path,
			file_kind(st, buf, sizeof(buf)));
}

static void notify(int efd)
{
	uint64_t one = 1;
	while (write(efd, &one, sizeof(one)) < 0) {
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN) /* EAGAIN: the counter is huge, the reader wakes anyway */
			fprintf(stderr, "vmm: disk completion eventfd: write: %s\n", strerror(errno));
		return;
	}
}

static void consume(int efd)
{
	uint64_t v;
	while (read(efd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
	/* EAGAIN: nothing was signalled (a spurious or shared wake-up) */
}

/* Entry points that run done callbacks hold the file; a callback may call
 * blk_file_close, which then leaves the freeing to the outermost. */
static void enter(struct blk_file *f)
{
	f->nesting++;
}

static bool leave(struct blk_file *f)
{
	if (--f->nesting == 0 && f->close_pending) {
		destroy(f);
		return true;
	}
	return false;
}

/* ---- requests ---- */

/* The iovec of the bytes still to transfer: r->iov itself, or a copy of its
 * tail with the first entry trimmed. -ENOMEM if the copy cannot be made. */
static int rest_of_iov(struct slot *s, const struct iovec **iov, unsigned *niov)
{
	const struct blk_req *r = s->r;
	if (s->done == 0) {
		*iov = r->iov;
		*niov = r->niov;
		return 0;
	}
	uint64_t skip = s->done;
	unsigned i = 0;
	while (i < r->niov && skip >= r->iov[i].iov_len) {
		skip -= r->iov[i].iov_len;
		i++;
	}
	if (!s->iov && !(s->iov = malloc(sizeof(*s->iov) * (r->niov ? r->niov : 1))))
		return -ENOMEM;
	unsigned n = r->niov - i;
	memcpy(s->iov, r->iov + i, sizeof(*s->iov) * n);
	if (n) {
		s->iov[0].iov_base = (char *)s->iov[0].iov_base + skip;
		s->iov[0].iov_len -= skip;
	}
	*iov = s->iov;
	*niov = n;
	return 0;
}

/* Main thread: the request is finished; its done runs now. */
static void complete(struct blk_file *f, struct slot *s, int64_t res)
{
	struct blk_req *r = s->r;
	free(s->iov);
	s->iov = NULL;
	s->r = NULL;
	s->next = f->free_slots;
	f->free_slots = s;
	f->inflight--;
	r->done(r, res);
}

/* ---- the thread pool ---- */

/* The syscalls below, retried on EINTR/EAGAIN: 0 or a negated errno. */
static int64_t sys_falloc(int fd, int mode, uint64_t off, uint64_t len)
{
	while (fallocate(fd, mode, (off_t)off, (off_t)len) < 0)
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
	return 0;
}

static int64_t sys_range_ioctl(int fd, unsigned long req, uint64_t off, uint64_t len)
{
	uint64_t range[2] = { off, len };
	while (ioctl(fd, req, range) < 0)
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
	return 0;
}

static int64_t sys_fdatasync(int fd)
{
	while (fdatasync(fd) < 0)
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
	return 0;
}

static char zero_buf[64 * 1024] __attribute__((aligned(4096)));

static int64_t pool_rw(struct blk_file *f, struct slot *s)
{
	const struct blk_req *r = s->r;
	while (s->done < r->len) {
		const struct iovec *iov;
		unsigned n;
		int e = rest_of_iov(s, &iov, &n);
		if (e)
			return e;
		off_t off = (off_t)(r->offset + s->done);
		ssize_t k = r->op == BLK_OP_READ ? preadv(f->fd, iov, (int)n, off) : pwritev(f->fd, iov, (int)n, off);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				sched_yield();
				continue;
			}
			return -errno;
		}
		if (k == 0)
			return -EIO; /* no progress: past the end of a file that shrank */
		s->done += (uint64_t)k;
	}
	return (int64_t)r->len;
}

static int64_t falloc(struct blk_file *f, int mode, uint64_t off, uint64_t len)
{
	return sys_falloc(f->fd, mode, off, len);
}

static int64_t write_zeroes_by_writing(struct blk_file *f, uint64_t off, uint64_t len)
{
	struct iovec iov[16];
	while (len) {
		unsigned n = 0;
		uint64_t chunk = 0;
		while (n < 16 && chunk < len) {
			size_t l = len - chunk < sizeof(zero_buf) ? (size_t)(len - chunk) : sizeof(zero_buf);
			iov[n].iov_base = zero_buf;
			iov[n].iov_len = l;
			n++;
			chunk += l;
		}
		ssize_t k = pwritev(f->fd, iov, (int)n, (off_t)off);
		if (k < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		if (k == 0)
			return -EIO;
		off += (uint64_t)k;
		len -= (uint64_t)k;
	}
	return 0;
}

static int64_t pool_discard(struct blk_file *f, uint64_t off, uint64_t len)
{
	if (!len)
		return 0;
	if (!atomic_load(&f->can_discard))
		return -EOPNOTSUPP;
	int64_t res;
	if (f->is_blkdev) {
		res = sys_range_ioctl(f->fd, BLKDISCARD, off, len);
	} else {
		res = falloc(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
	}
	if (res == -EOPNOTSUPP)
		atomic_store(&f->can_discard, false);
	return res;
}

/* Zeroes whatever the file or device supports: a hole (unmap), an
 * unwritten extent (ZERO_RANGE), a hole then re-allocation, or written
 * zeroes; what answered EOPNOTSUPP once is not tried again. */
static int64_t pool_write_zeroes(struct blk_file *f, uint64_t off, uint64_t len, bool unmap)
{
	if (!len)
		return 0;
	int64_t res;
	if (f->is_blkdev) {
		if (unmap) {
			/* a block device's PUNCH_HOLE: zeroes by unmapping, no fallback */
			res = falloc(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
			if (res != -EOPNOTSUPP)
				return res;
		}
		return sys_range_ioctl(f->fd, BLKZEROOUT, off, len); /* the kernel falls back to writing */
	}
	if (unmap && atomic_load(&f->can_discard)) {
		res = falloc(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
		if (res != -EOPNOTSUPP)
			return res;
		atomic_store(&f->can_discard, false);
	}
	if (atomic_load(&f->zero_range_ok)) {
		res = falloc(f, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
		if (res != -EOPNOTSUPP)
			return res;
		atomic_store(&f->zero_range_ok, false);
	}
	if (!unmap && atomic_load(&f->can_discard)) {
		res = falloc(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
		if (res == 0) {
			/* allocated again, as asked; the zeroes are there either way */
			(void)falloc(f, FALLOC_FL_KEEP_SIZE, off, len);
			return 0;
		}
		if (res != -EOPNOTSUPP)
			return res;
		atomic_store(&f->can_discard, false);
	}
	return write_zeroes_by_writing(f, off, len);
}

static int64_t pool_execute(struct blk_file *f, struct slot *s)
{
	struct blk_req *r = s->r;
	switch (r->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		return pool_rw(f, s);
	case BLK_OP_FLUSH:
		return sys_fdatasync(f->fd);
	case BLK_OP_DISCARD:
		return pool_discard(f, r->offset, r->len);
	case BLK_OP_WRITE_ZEROES:
		return pool_write_zeroes(f, r->offset, r->len, r->unmap);
	}
	return -EINVAL;
}

static void *pool_worker(void *arg)
{
	struct blk_file *f = arg;
	struct pool *p = &f->pool;
	if (sandbox_enter(SANDBOX_IO) < 0) /* very unlikely: the disk works on, unfiltered */
		fprintf(stderr, "vmm: %s: I/O thread: %s\n", f->path, vmm_error());
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->qhead && !p->stop)
			pthread_cond_wait(&p->cv, &p->mu);
		struct slot *s = p->qhead;
		if (!s) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		p->qhead = s->next;
		if (!p->qhead)
			p->qtail = NULL;
		pthread_mutex_unlock(&p->mu);

		s->res = pool_execute(f, s);

		pthread_mutex_lock(&p->mu);
		bool was_empty = !p->dhead;
		s->next = NULL;
		if (p->dtail)
			p->dtail->next = s;
		else
			p->dhead = s;
		p->dtail = s;
		pthread_mutex_unlock(&p->mu);
		if (was_empty)
			notify(p->efd);
	}
}

/* Moves what the pool finished to f->ready, then completes it one at a time
 * (a done that drains takes the rest from f->ready). */
static void pool_reap(struct blk_file *f)
{
	struct pool *p = &f->pool;
	if (!p->up)
		return;
	consume(p->efd);
	pthread_mutex_lock(&p->mu);
	struct slot *list = p->dhead, *tail = p->dtail;
	p->dhead = p->dtail = NULL;
	pthread_mutex_unlock(&p->mu);
	if (list) {
		if (f->ready_tail)
			f->ready_tail->next = list;
		else
			f->ready = list;
		f->ready_tail = tail;
	}
	while (f->ready) {
		struct slot *s = f->ready;
		f->ready = s->next;
		if (!f->ready)
			f->ready_tail = NULL;
		complete(f, s, s->res);
	}
}

static void on_pool_event(void *opaque, int events)
{
	struct blk_file *f = opaque;
	(void)events;
	enter(f);
	pool_reap(f);
	leave(f);
}

static void pool_stop(struct blk_file *f)
{
	struct pool *p = &f->pool;
	if (!p->up)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->nthreads; i++) {
		int rc = pthread_join(p->threads[i], NULL);
		if (rc)
			fprintf(stderr, "vmm: %s: joining an I/O thread: %s\n", f->path, strerror(rc));
	}
	loop_fd_close(p->watch);
	close(p->efd);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	memset(p, 0, sizeof(*p));
	p->efd = -1;
}

static int pool_start(struct blk_file *f, unsigned nthreads)
{
	struct pool *p = &f->pool;
	memset(p, 0, sizeof(*p));
	int rc = pthread_mutex_init(&p->mu, NULL);
	if (rc) {
		errno = rc;
		return vmm_fail_errno("%s: I/O threads: pthread_mutex_init", f->path);
	}
	rc = pthread_cond_init(&p->cv, NULL);
	if (rc) {
		pthread_mutex_destroy(&p->mu);
		errno = rc;
		return vmm_fail_errno("%s: I/O threads: pthread_cond_init", f->path);
	}
	p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->efd < 0) {
		vmm_fail_errno("%s: I/O threads: eventfd", f->path);
		goto fail_sync;
	}
	p->watch = loop_fd_watch(f->loop, p->efd, LOOP_READABLE, on_pool_event, f);
	if (!p->watch) {
		vmm_fail_context("%s: I/O threads", f->path);
		close(p->efd);
		goto fail_sync;
	}
	p->up = true;
	/* The workers take no signals: those are the main and vCPU threads'. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < nthreads && i < POOL_THREADS; i++) {
		rc = pthread_create(&p->threads[i], NULL, pool_worker, f);
		if (rc)
			break;
		(void)pthread_setname_np(p->threads[i], "vmm-blk"); /* cosmetic */
		p->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		errno = rc;
		vmm_fail_errno("%s: I/O threads: pthread_create", f->path);
		pool_stop(f);
		return -1;
	}
	return 0;
fail_sync:
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	p->efd = -1;
	return -1;
}

static void pool_queue(struct blk_file *f, struct slot *s)
{
	struct pool *p = &f->pool;
	s->next = NULL;
	pthread_mutex_lock(&p->mu);
	if (p->qtail)
		p->qtail->next = s;
	else
		p->qhead = s;
	p->qtail = s;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* ---- io_uring ---- */

/* Hands the prepared SQEs to the kernel. A refusal (-EAGAIN: no memory
 * for the requests, -EBUSY) leaves them in the ring, to go with the next
 * submit, completion or drain. */
static void ring_flush(struct blk_file *f)
{
	for (int tries = 0; tries < 3 && io_uring_sq_ready(&f->ring); tries++) {
		int rc = io_uring_submit(&f->ring);
		if (rc >= 0)
			continue;
		if (rc != -EAGAIN && rc != -EBUSY && rc != -EINTR) {
			fprintf(stderr, "vmm: %s: io_uring_submit: %s\n", f->path, strerror(-rc));
			return;
		}
		sched_yield();
	}
}

/* Queues s's (next) transfer on the ring: 0 or a negated errno. */
static int ring_queue(struct blk_file *f, struct slot *s)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&f->ring);
	if (!sqe) {
		ring_flush(f);
		if (!(sqe = io_uring_get_sqe(&f->ring)))
			return -EBUSY;
	}
	struct blk_req *r = s->r;
	if (r->op == BLK_OP_FLUSH) {
		io_uring_prep_fsync(sqe, f->fd, IORING_FSYNC_DATASYNC);
	} else {
		const struct iovec *iov;
		unsigned n;
		int e = rest_of_iov(s, &iov, &n);
		if (e) {
			io_uring_prep_nop(sqe); /* the SQE is taken; a NOP gives it back */
			io_uring_sqe_set_data(sqe, NULL);
			ring_flush(f);
			return e;
		}
		if (r->op == BLK_OP_READ)
			io_uring_prep_readv(sqe, f->fd, iov, n, r->offset + s->done);
		else
			io_uring_prep_writev(sqe, f->fd, iov, n, r->offset + s->done);
	}
	io_uring_sqe_set_data(sqe, s);
	ring_flush(f);
	return 0;
}

static void ring_result(struct blk_file *f, struct slot *s, int res)
{
	struct blk_req *r = s->r;
	if (res == -EINTR || res == -EAGAIN)
		goto again;
	if (r->op == BLK_OP_FLUSH) {
		complete(f, s, res < 0 ? res : 0);
		return;
	}
	if (res < 0) {
		complete(f, s, res);
		return;
	}
	if (res == 0 && s->done < r->len) {
		complete(f, s, -EIO); /* no progress */
		return;
	}
	s->done += (unsigned)res;
	if (s->done >= r->len) {
		complete(f, s, (int64_t)r->len);
		return;
	}
again:;
	int e = ring_queue(f, s);
	if (e)
		complete(f, s, e);
}

static void ring_reap(struct blk_file *f)
{
	if (!f->ring_up)
		return;
	consume(f->ring_efd);
	ring_flush(f);
	struct io_uring_cqe *cqe;
	while (io_uring_peek_cqe(&f->ring, &cqe) == 0) {
		struct slot *s = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		io_uring_cqe_seen(&f->ring, cqe);
		if (s)
			ring_result(f, s, res);
	}
}

static void on_ring_event(void *opaque, int events)
{
	struct blk_file *f = opaque;
	(void)events;
	enter(f);
	ring_reap(f);
	leave(f);
}

static void ring_stop(struct blk_file *f)
{
	if (!f->ring_up)
		return;
	loop_fd_close(f->ring_watch);
	io_uring_queue_exit(&f->ring);
	close(f->ring_efd);
	f->ring_up = false;
	f->ring_efd = -1;
}

int blk_ring_restrict(struct io_uring *ring)
{
	/* read, write, flush and do nothing (the NOP that gives back an SQE),
	 * with no SQE flags, and no registering after: not open files or send
	 * on sockets behind the seccomp filters' back */
	struct io_uring_restriction res[] = {
		{ .opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_READV },
		{ .opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_WRITEV },
		{ .opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_FSYNC },
		{ .opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_NOP },
	};
	/* by system call: Debian's liburing 2.3 declares
	 * io_uring_register_restrictions but does not export it */
	long rc = syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_RESTRICTIONS, res,
			  sizeof(res) / sizeof(res[0]));
	return rc < 0 ? -errno : 0;
}

int blk_ring_enable(struct io_uring *ring)
{
	long rc = syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
	return rc < 0 ? -errno : 0;
}

/* 0: the ring is up. 1: io_uring is unavailable, *why says why. -1: some
 * other failure, with a message. */
static int ring_start(struct blk_file *f, char *why, size_t whylen)
{
	const char *hook = getenv("VMM_BLK_NO_URING");
	if (hook && strcmp(hook, "1") == 0) {
		snprintf(why, whylen, "%s", strerror(EPERM));
		return 1;
	}
	/* Disabled until restricted: seccomp does not see what a ring does */
	int rc = io_uring_queue_init(f->depth, &f->ring, IORING_SETUP_R_DISABLED);
	if (rc < 0) {
		snprintf(why, whylen, "%s", strerror(-rc));
		return 1;
	}
	struct io_uring_probe *probe = io_uring_get_probe_ring(&f->ring);
	bool ops = probe && io_uring_opcode_supported(probe, IORING_OP_READV) &&
		   io_uring_opcode_supported(probe, IORING_OP_WRITEV) &&
		   io_uring_opcode_supported(probe, IORING_OP_FSYNC);
	if (probe)
		io_uring_free_probe(probe);
	if (!ops) {
		io_uring_queue_exit(&f->ring);
		snprintf(why, whylen, "the kernel's io_uring lacks readv, writev or fsync");
		return 1;
	}
	f->ring_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (f->ring_efd < 0) {
		vmm_fail_errno("%s: eventfd", f->path);
		io_uring_queue_exit(&f->ring);
		return -1;
	}
	rc = io_uring_register_eventfd(&f->ring, f->ring_efd);
	const char *step = "io_uring_register_eventfd";
	if (rc == 0 && (rc = blk_ring_restrict(&f->ring)) < 0)
		step = "io_uring_register_restrictions";
	if (rc == 0 && (rc = blk_ring_enable(&f->ring)) < 0)
		step = "io_uring_enable_rings";
	if (rc < 0) {
		snprintf(why, whylen, "%s: %s", step, strerror(-rc));
		io_uring_queue_exit(&f->ring);
		close(f->ring_efd);
		f->ring_efd = -1;
		return 1;
	}
	f->ring_watch = loop_fd_watch(f->loop, f->ring_efd, LOOP_READABLE, on_ring_event, f);
	if (!f->ring_watch) {
		vmm_fail_context("%s: io_uring", f->path);
		io_uring_queue_exit(&f->ring);
		close(f->ring_efd);
		f->ring_efd = -1;
		return -1;
	}
	f->ring_up = true;
	return 0;
}

static int start_engine(struct blk_file *f, enum blk_engine engine)
{
	if (engine != BLK_ENGINE_THREADS) {
		char why[128];
		int rc = ring_start(f, why, sizeof(why));
		if (rc < 0)
			return -1;
		if (rc == 0) {
			f->engine = BLK_ENGINE_URING;
			return 0;
		}
		if (engine == BLK_ENGINE_URING)
			return vmm_fail("%s: io_uring unavailable (%s), and engine = \"uring\" asks for nothing else",
					f->path, why);
		fprintf(stderr, "vmm: %s: io_uring unavailable (%s); using a thread pool\n", f->path, why);
	}
	f->engine = BLK_ENGINE_THREADS;
	return pool_start(f, f->depth < POOL_THREADS ? f->depth : POOL_THREADS);
}

/* ---- locks ---- */

/* F_OFD_GETLK with a write lock on byte b: 1 if another open file holds a
 * lock there (this one's own locks never conflict), 0 if not, -1. */
static int byte_taken(struct blk_file *f, int b)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = b, .l_len = 1 };
	if (fcntl(f->fd, F_OFD_GETLK, &fl) < 0)
		return vmm_fail_errno("%s: testing lock byte %d (F_OFD_GETLK)", f->path, b);
	return fl.l_type != F_UNLCK;
}

static unsigned held_perms(const struct blk_file *f)
{
	return f->readonly ? 1u << PERM_CONSISTENT_READ : 1u << PERM_CONSISTENT_READ | 1u << PERM_WRITE;
}

static unsigned unshared_perms(void)
{
	return PERM_ALL & ~(1u << PERM_CONSISTENT_READ | 1u << PERM_WRITE_UNCHANGED);
}

static int check_locks(struct blk_file *f)
{
	unsigned held = held_perms(f), unshared = unshared_perms();
	for (int p = 0; p < NPERMS; p++) {
		if (!(unshared & 1u << p))
			continue;
		int t = byte_taken(f, LOCK_PERM_BASE + p);
		if (t < 0)
			return -1;
		if (t)
			return vmm_fail("%s is in use by another process: it holds the \"%s\" permission this disk does "
					"not share (lock byte %d)", f->path, perm_names[p], LOCK_PERM_BASE + p);
	}
	for (int p = 0; p < NPERMS; p++) {
		if (!(held & 1u << p))
			continue;
		int t = byte_taken(f, LOCK_SHARED_BASE + p);
		if (t < 0)
			return -1;
		if (t)
			return vmm_fail("%s is in use by another process: it does not share the \"%s\" permission this "
					"disk needs (lock byte %d)", f->path, perm_names[p], LOCK_SHARED_BASE + p);
	}
	return 0;
}

static int set_byte(struct blk_file *f, int b, short type)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = b, .l_len = 1 };
	if (fcntl(f->fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES)
		return vmm_fail("%s is in use by another process: it holds lock byte %d exclusively", f->path, b);
	return vmm_fail_errno("%s: %s lock byte %d (F_OFD_SETLK)", f->path,
			      type == F_UNLCK ? "unlocking" : "locking", b);
}

/* Takes exactly this disk's bytes; an adopted description may hold others
 * (a writable disk's, adopted read-only), which are dropped. */
static int apply_locks(struct blk_file *f)
{
	unsigned held = held_perms(f), unshared = unshared_perms();
	for (int p = 0; p < NPERMS; p++)
		if (set_byte(f, LOCK_PERM_BASE + p, held & 1u << p ? F_RDLCK : F_UNLCK))
			return -1;
	for (int p = 0; p < NPERMS; p++)
		if (set_byte(f, LOCK_SHARED_BASE + p, unshared & 1u << p ? F_RDLCK : F_UNLCK))
			return -1;
	return 0;
}

static int drop_locks(struct blk_file *f)
{
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = LOCK_PERM_BASE, .l_len = NPERMS };
	if (fcntl(f->fd, F_OFD_SETLK, &fl) < 0)
		return vmm_fail_errno("%s: unlocking bytes %d-%d", f->path, LOCK_PERM_BASE, LOCK_PERM_BASE + NPERMS - 1);
	fl.l_start = LOCK_SHARED_BASE;
	if (fcntl(f->fd, F_OFD_SETLK, &fl) < 0)
		return vmm_fail_errno("%s: unlocking bytes %d-%d", f->path, LOCK_SHARED_BASE,
				      LOCK_SHARED_BASE + NPERMS - 1);
	return 0;
}

int blk_file_lock(struct blk_file *f)
{
	if (f->fd < 0)
		return vmm_fail("%s: no fd to lock (it was handed away)", f->path);
	/* Lock first, then look: of two openers racing, both see the other
	 * (QEMU's order too). Our own description's locks never show. */
	if (apply_locks(f) || check_locks(f)) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", vmm_error());
		(void)drop_locks(f); /* the first message is the one that matters */
		return vmm_fail("%s", msg);
	}
	return 0;
}

int blk_file_unlock(struct blk_file *f)
{
	if (f->fd < 0)
		return vmm_fail("%s: no fd to unlock (it was handed away)", f->path);
	if (drop_locks(f))
		return -1;
	return 0;
}

/* ---- open ---- */

static int open_path(struct blk_file *f, const struct blk_file_options *o, struct stat *st)
{
	const char *path = o->path;
	if (stat(path, st) < 0)
		return vmm_fail_errno("disk image %s", path);
	/* before open: opening a character device or FIFO can do things */
	if (check_kind(path, st))
		return -1;
	int flags = (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	if (o->cache == BLK_CACHE_WRITETHROUGH)
		flags |= O_DSYNC;
	if (o->cache == BLK_CACHE_NONE)
		flags |= O_DIRECT;
	int fd = open(path, flags);
	if (fd < 0) {
		int e = errno;
		if (e == EINVAL && (flags & O_DIRECT)) {
			int t = open(path, flags & ~O_DIRECT);
			if (t >= 0) {
				close(t);
				errno = e;
				return vmm_fail_errno("cache = \"none\" needs O_DIRECT, which the filesystem of %s refuses",
						      path);
			}
		}
		if (!o->readonly && (e == EACCES || e == EROFS || e == EPERM || e == ETXTBSY)) {
			int t = open(path, (flags & ~O_ACCMODE) | O_RDONLY);
			if (t >= 0) {
				close(t);
				return vmm_fail("disk image %s is read-only here (open for writing: %s); "
						"only a read-only disk can use it", path, strerror(e));
			}
		}
		errno = e;
		return vmm_fail_errno("disk image %s: open", path);
	}
	f->fd = fd;
	if (fstat(fd, st) < 0)
		return vmm_fail_errno("disk image %s: fstat", path);
	if (check_kind(path, st)) /* it changed since the stat */
		return -1;
	/* O_NONBLOCK only kept the open from hanging; io_uring would answer
	 * -EAGAIN instead of waiting with it. */
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return vmm_fail_errno("disk image %s: clearing O_NONBLOCK", path);
	return 0;
}

static int adopt_fd(struct blk_file *f, const struct blk_file_options *o, struct stat *st)
{
	int fd = o->fd;
	const char *path = f->path;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return vmm_fail_errno("disk image %s: fd %d", path, fd);
	if (fl & O_PATH)
		return vmm_fail("disk image %s: fd %d is an O_PATH fd, not open for I/O", path, fd);
	if (fstat(fd, st) < 0)
		return vmm_fail_errno("disk image %s: fd %d: fstat", path, fd);
	if (check_kind(path, st))
		return -1;
	int acc = fl & O_ACCMODE;
	if (acc == O_WRONLY)
		return vmm_fail("disk image %s: fd %d is open write-only; a disk is read too", path, fd);
	if (!o->readonly && acc != O_RDWR)
		return vmm_fail("disk image %s: fd %d is open read-only; a writable disk needs O_RDWR", path, fd);
	if (fl & O_APPEND)
		return vmm_fail("disk image %s: fd %d is open with O_APPEND, which would put every write at the end",
				path, fd);
	bool direct = fl & O_DIRECT;
	if (direct && o->cache != BLK_CACHE_NONE)
		return vmm_fail("disk image %s: fd %d is open with O_DIRECT, but cache is not \"none\"", path, fd);
	if (!direct && o->cache == BLK_CACHE_NONE)
		return vmm_fail("disk image %s: fd %d is open without O_DIRECT, which cache = \"none\" needs", path, fd);
	if (o->cache == BLK_CACHE_WRITETHROUGH && !(fl & O_DSYNC))
		return vmm_fail("disk image %s: fd %d is open without O_DSYNC, which cache = \"writethrough\" needs",
				path, fd);
	/* O_NONBLOCK means nothing to reads and writes of files and block
	 * devices, but makes io_uring answer -EAGAIN instead of waiting. */
	if ((fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return vmm_fail_errno("disk image %s: fd %d: clearing O_NONBLOCK", path, fd);
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return vmm_fail_errno("disk image %s: fd %d: F_SETFD", path, fd);
	f->fd = fd;
	f->adopted = true;
	return 0;
}

/* /sys/dev/block/M:m/queue/discard_max_bytes (a partition's is its disk's). */
static bool blkdev_discards(dev_t rdev)
{
	static const char *const fmt[] = { "/sys/dev/block/%u:%u/queue/discard_max_bytes",
					   "/sys/dev/block/%u:%u/../queue/discard_max_bytes" };
	for (unsigned i = 0; i < 2; i++) {
		char p[96], buf[32];
		snprintf(p, sizeof(p), fmt[i], major(rdev), minor(rdev));
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		return strtoull(buf, NULL, 10) > 0;
	}
	return false;
}

/* A file's O_DIRECT offset alignment (statx STATX_DIOALIGN, Linux 6.1), or 0.
 * glibc 2.36's struct statx keeps stx_dio_offset_align in its padding. */
static unsigned dio_alignment(int fd)
{
#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x2000U
#endif
	struct statx stx;
	memset(&stx, 0, sizeof(stx));
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) < 0 || !(stx.stx_mask & STATX_DIOALIGN))
		return 0;
	uint32_t align; /* kernel layout: stx_mnt_id (0x90), stx_dio_mem_align, stx_dio_offset_align (0x9c) */
	memcpy(&align, (const char *)&stx + 0x9c, sizeof(align));
	return align;
}

static int probe_geometry(struct blk_file *f, const struct stat *st)
{
	f->is_blkdev = S_ISBLK(st->st_mode);
	if (f->is_blkdev) {
		uint64_t size;
		int bs;
		if (ioctl(f->fd, BLKGETSIZE64, &size) < 0)
			return vmm_fail_errno("disk image %s: BLKGETSIZE64", f->path);
		if (ioctl(f->fd, BLKSSZGET, &bs) < 0)
			return vmm_fail_errno("disk image %s: BLKSSZGET", f->path);
		f->size = size;
		f->block_size = bs > 0 ? (unsigned)bs : 512;
		atomic_init(&f->can_discard, !f->readonly && blkdev_discards(st->st_rdev));
	} else {
		f->size = (uint64_t)st->st_size;
		f->block_size = 512;
		if (f->cache == BLK_CACHE_NONE) {
			unsigned a = dio_alignment(f->fd);
			if (a > f->block_size && a <= 65536 && !(a & (a - 1)))
				f->block_size = a;
		}
		atomic_init(&f->can_discard, !f->readonly); /* until PUNCH_HOLE says otherwise */
	}
	atomic_init(&f->zero_range_ok, true);
	if (f->size > INT64_MAX)
		return vmm_fail("disk image %s: size %llu is too large", f->path, (unsigned long long)f->size);
	return 0;
}

struct blk_file *blk_file_open(const struct blk_file_options *o, struct uv_loop_s *loop)
{
	if (!o) {
		vmm_fail("disk: no options");
		return NULL;
	}
	char name[32];
	const char *path = o->path;
	if (!path || !path[0]) {
		if (o->fd < 0) {
			vmm_fail("disk: neither a path nor an fd");
			return NULL;
		}
		snprintf(name, sizeof(name), "fd %d", o->fd);
		path = name;
	}
	if (!loop) {
		vmm_fail("disk image %s: no event loop", path);
		return NULL;
	}
	if ((unsigned)o->cache > BLK_CACHE_NONE || (unsigned)o->engine > BLK_ENGINE_THREADS) {
		vmm_fail("disk image %s: unknown cache mode %d or engine %d", path, (int)o->cache, (int)o->engine);
		return NULL;
	}
	unsigned depth = o->queue_depth ? o->queue_depth : DEFAULT_DEPTH;
	if (depth > MAX_DEPTH) {
		vmm_fail("disk image %s: queue depth %u (at most %d)", path, depth, MAX_DEPTH);
		return NULL;
	}
	struct blk_file *f = calloc(1, sizeof(*f));
	if (!f || !(f->path = strdup(path))) {
		free(f);
		vmm_fail("disk image %s: out of memory", path);
		return NULL;
	}
	f->fd = -1;
	f->ring_efd = -1;
	f->pool.efd = -1;
	f->readonly = o->readonly;
	f->cache = o->cache;
	f->loop = loop;
	f->depth = depth;

	struct stat st;
	if (o->fd >= 0 ? adopt_fd(f, o, &st) : open_path(f, o, &st))
		goto fail;
	if (probe_geometry(f, &st))
		goto fail;
	if (o->lock) {
		/* A fresh open locks, then checks (its close drops the locks if
		 * it fails). An adopted fd's description holds them already:
		 * check (our own never show), then take any it lacks. */
		if (f->adopted ? check_locks(f) || apply_locks(f) : apply_locks(f) || check_locks(f))
			goto fail;
	}
	f->slots = calloc(depth, sizeof(*f->slots));
	if (!f->slots) {
		vmm_fail("disk image %s: out of memory for %u requests", f->path, depth);
		goto fail;
	}
	for (unsigned i = depth; i-- > 0;) {
		f->slots[i].next = f->free_slots;
		f->free_slots = &f->slots[i];
	}
	if (start_engine(f, o->engine))
		goto fail;
	return f;
fail:
	if (f->fd >= 0 && !f->adopted)
		close(f->fd);
	free(f->slots);
	free(f->path);
	free(f);
	return NULL;
}

/* ---- the rest of the interface ---- */

static void drain(struct blk_file *f)
{
	while (f->inflight) {
		ring_reap(f);
		pool_reap(f);
		if (!f->inflight)
			break;
		struct pollfd p[2];
		nfds_t n = 0;
		if (f->ring_up)
			p[n++] = (struct pollfd){ .fd = f->ring_efd, .events = POLLIN };
		if (f->pool.up)
			p[n++] = (struct pollfd){ .fd = f->pool.efd, .events = POLLIN };
		/* SQEs the kernel refused for now are retried every millisecond */
		int timeout = f->ring_up && io_uring_sq_ready(&f->ring) ? 1 : -1;
		if (poll(p, n, timeout) < 0 && errno != EINTR) {
			fprintf(stderr, "vmm: %s: drain: poll: %s\n", f->path, strerror(errno));
			usleep(1000);
		}
	}
}

void blk_file_drain(struct blk_file *f)
{
	enter(f);
	drain(f);
	leave(f);
}

static void destroy(struct blk_file *f)
{
	drain(f); /* nothing, unless a done submitted after a nested close */
	ring_stop(f);
	pool_stop(f);
	if (f->fd >= 0 && close(f->fd) < 0)
		fprintf(stderr, "vmm: %s: close: %s\n", f->path, strerror(errno));
	free(f->slots);
	free(f->path);
	free(f);
}

void blk_file_close(struct blk_file *f)
{
	if (!f || f->close_pending)
		return;
	f->close_pending = true;
	enter(f);
	drain(f);
	f->closed = true;
	leave(f); /* frees f, unless a done callback called this */
}

int blk_file_submit(struct blk_file *f, struct blk_req *r)
{
	if (f->closed)
		return vmm_fail("%s: the disk is closed", f->path);
	if (f->fd < 0)
		return vmm_fail("%s: the disk's fd was handed away", f->path);
	if (!r->done)
		return vmm_fail("%s: a request without a done callback", f->path);
	if (!f->free_slots)
		return vmm_fail("%s: queue full (%u requests in flight)", f->path, f->inflight);
	bool writes = false, ranged = true;
	switch (r->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE: {
		writes = r->op == BLK_OP_WRITE;
		if (r->niov > MAX_IOV)
			return vmm_fail("%s: %u segments in one request (at most %d)", f->path, r->niov, MAX_IOV);
		if (r->niov && !r->iov)
			return vmm_fail("%s: %u segments but no iovec", f->path, r->niov);
		uint64_t sum = 0;
		for (unsigned i = 0; i < r->niov; i++) {
			if (r->iov[i].iov_len > UINT64_MAX - sum)
				return vmm_fail("%s: the segments' lengths overflow", f->path);
			sum += r->iov[i].iov_len;
		}
		if (sum != r->len)
			return vmm_fail("%s: request length %llu, but its segments add up to %llu", f->path,
					(unsigned long long)r->len, (unsigned long long)sum);
		break;
	}
	case BLK_OP_FLUSH:
		ranged = false;
		break;
	case BLK_OP_DISCARD:
	case BLK_OP_WRITE_ZEROES:
		writes = true;
		break;
	default:
		return vmm_fail("%s: unknown request type %d", f->path, (int)r->op);
	}
	static const char *const names[] = { "read", "write", "flush", "discard", "write-zeroes" };
	if (writes && f->readonly)
		return vmm_fail("%s is a read-only disk: %s refused", f->path, names[r->op]);
	if (ranged) {
		if (r->offset > f->size || r->len > f->size - r->offset)
			return vmm_fail("%s: %s of %llu bytes at %llu is beyond the end of the disk (%llu bytes)", f->path,
					names[r->op], (unsigned long long)r->len, (unsigned long long)r->offset,
					(unsigned long long)f->size);
		bool aligned = f->cache == BLK_CACHE_NONE || (f->is_blkdev && r->op >= BLK_OP_DISCARD);
		if (aligned && (r->offset % f->block_size || r->len % f->block_size))
			return vmm_fail("%s: %s of %llu bytes at %llu is not aligned to the %u-byte block%s", f->path,
					names[r->op], (unsigned long long)r->len, (unsigned long long)r->offset,
					f->block_size, f->cache == BLK_CACHE_NONE ? " (cache = \"none\")" : "");
	}

	bool on_ring = f->ring_up && r->op <= BLK_OP_FLUSH;
	if (!on_ring && !f->pool.up && pool_start(f, 1))
		return -1;
	struct slot *s = f->free_slots;
	f->free_slots = s->next;
	s->r = r;
	s->done = 0;
	s->iov = NULL;
	s->res = 0;
	s->next = NULL;
	f->inflight++;
	if (on_ring) {
		int e = ring_queue(f, s);
		if (e) {
			s->r = NULL;
			s->next = f->free_slots;
			f->free_slots = s;
			f->inflight--;
			return vmm_fail("%s: io_uring: %s", f->path, strerror(-e));
		}
	} else {
		pool_queue(f, s);
	}
	return 0;
}

unsigned blk_file_inflight(const struct blk_file *f)
{
	return f->inflight;
}

void blk_file_disown_fd(struct blk_file *f)
{
	enter(f);
	drain(f); /* the caller's job, but no request may outlive its fd */
	if (leave(f))
		return;
	f->fd = -1;
}

uint64_t blk_file_size(const struct blk_file *f)
{
	return f->size;
}

bool blk_file_readonly(const struct blk_file *f)
{
	return f->readonly;
}

bool blk_file_can_discard(const struct blk_file *f)
{
	return atomic_load((atomic_bool *)&f->can_discard);
}

bool blk_file_can_write_zeroes(const struct blk_file *f)
{
	return !f->readonly;
}

unsigned blk_file_block_size(const struct blk_file *f)
{
	return f->block_size;
}

enum blk_engine blk_file_engine(const struct blk_file *f)
{
	return f->engine;
}

int blk_file_fd(const struct blk_file *f)
{
	return f->fd;
}

const char *blk_file_path(const struct blk_file *f)
{
	return f->path;
}
