/* A disk image backend: a raw image file or a block device, opened once,
 * locked the way QEMU locks its images, with asynchronous I/O that never
 * runs on a vCPU thread and never blocks the main loop.
 *
 * I/O goes through io_uring (liburing); where io_uring is refused (a
 * container's seccomp filter, the io_uring_disabled sysctl, an old kernel)
 * a small pool of threads (at most 4) does the same with preadv/pwritev/
 * fdatasync/fallocate, after one line on stderr ("vmm: PATH: io_uring
 * unavailable (Operation not permitted); using a thread pool"). With
 * io_uring, discard and write-zeroes still go to one helper thread, started
 * on the first (io_uring has no BLKDISCARD/BLKZEROOUT, and their fallbacks
 * are sequential; QEMU does the same). Completions are delivered on the
 * main thread (the libuv loop, through an eventfd), in whatever order the
 * I/O finishes.
 *
 * Test hook: VMM_BLK_NO_URING=1 in the environment makes blk_file_open
 * behave as if io_uring_queue_init had failed with EPERM (AUTO falls back
 * and logs; URING fails).
 *
 * Locking (QEMU's file-posix scheme, so that QEMU and luavmm refuse each
 * other too): open file description (OFD) locks, which belong to the open
 * file and so travel with the fd over SCM_RIGHTS, unlike POSIX fcntl locks.
 * A shared lock on byte 100 + p for each permission p held, and on byte
 * 200 + p for each permission p not shared with others. Permissions:
 * 0 consistent read, 1 write, 2 write unchanged, 3 resize. A writable disk
 * holds read and write and shares read and write-unchanged; a read-only disk
 * holds read and shares the same (like QEMU's share-rw=off). An opener
 * checks for conflicts (someone holds what it does not share, or does not
 * share what it holds) and fails with a message saying the image is in
 * use. A fresh open takes its locks first and then checks, as QEMU does,
 * so that of two racing openers neither wins unseen (an open file
 * description never sees its own locks); a handed-in fd is checked first,
 * then given exactly this disk's bytes.
 *
 * Threads: everything here is called on the main thread. */
#ifndef VMM_BLK_FILE_H
#define VMM_BLK_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct uv_loop_s;
struct blk_file;

enum blk_cache {
	BLK_CACHE_WRITEBACK,    /* page cache; flush = fdatasync */
	BLK_CACHE_WRITETHROUGH, /* page cache; every write completes with O_DSYNC */
	BLK_CACHE_NONE,         /* O_DIRECT (refused where the filesystem cannot) */
};

enum blk_engine {
	BLK_ENGINE_AUTO,    /* io_uring, else threads (one logged line) */
	BLK_ENGINE_URING,   /* io_uring or fail */
	BLK_ENGINE_THREADS, /* the thread pool (tests force it) */
};

struct blk_file_options {
	const char *path;  /* for open, locks' messages; may be NULL with fd */
	int fd;            /* >= 0: an fd handed in (a migration source's), owned
	                    * on success, the caller's on failure; the path is
	                    * then never opened. -1: open path. */
	bool readonly;
	bool lock;         /* take (or, for a handed-in fd, keep) the locks */
	enum blk_cache cache;
	enum blk_engine engine;
	unsigned queue_depth; /* in-flight requests at most; 0: 128; at most 4096 */
};

enum blk_op {
	BLK_OP_READ,
	BLK_OP_WRITE,
	BLK_OP_FLUSH,
	BLK_OP_DISCARD,      /* punch a hole (-EOPNOTSUPP where none can be punched) */
	BLK_OP_WRITE_ZEROES, /* zero a range (may unmap if `unmap`); falls back to
	                      * writing zeroes where the filesystem cannot */
};

/* One request. The caller owns it until its completion is called; iov
 * points into guest memory (or test buffers) and stays valid until then. */
struct blk_req {
	enum blk_op op;
	uint64_t offset;        /* bytes */
	uint64_t len;           /* bytes: DISCARD / WRITE_ZEROES; READ/WRITE: sum of iov */
	const struct iovec *iov;
	unsigned niov;          /* at most 1024 (UIO_MAXIOV) */
	bool unmap;             /* WRITE_ZEROES */
	/* Main thread. res: r->len for READ/WRITE (the backend resubmits the
	 * rest of a short transfer itself; one that makes no progress is
	 * -EIO), 0 for the others, or a negated errno. */
	void (*done)(struct blk_req *r, int64_t res);
	void *opaque;
	/* The backend's own. */
	struct blk_req *next_;
};

/* Opens (or adopts) and locks the image. NULL with a message naming the
 * path and what failed: missing, a directory, not a regular file or block
 * device, read-only file asked for writing ("disk image disk.img is
 * read-only here (open for writing: Read-only file system); ..."), locked
 * by another user ("disk.img is in use by another process: it holds the
 * \"write\" permission this disk does not share (lock byte 101)"), O_DIRECT
 * refused by the filesystem ("cache = \"none\" needs O_DIRECT, which the
 * filesystem of /tmp/disk.img refuses: Invalid argument").
 * A handed-in fd must match the options: O_RDWR unless readonly, O_DIRECT
 * exactly when cache = none, O_DSYNC for writethrough, no O_APPEND; its
 * O_NONBLOCK is cleared (it would make io_uring answer -EAGAIN). */
struct blk_file *blk_file_open(const struct blk_file_options *o, struct uv_loop_s *loop);

/* Waits for (runs the completions of) every request in flight, then closes
 * the fd (dropping its locks, unless the fd was duplicated elsewhere).
 * A done callback may call it: the file is freed once that callback's
 * caller (the loop, or blk_file_drain) is done with it. NULL is fine. */
void blk_file_close(struct blk_file *f);

uint64_t blk_file_size(const struct blk_file *f);       /* bytes */
bool blk_file_readonly(const struct blk_file *f);
bool blk_file_can_discard(const struct blk_file *f);    /* FALLOC_FL_PUNCH_HOLE / BLKDISCARD */
bool blk_file_can_write_zeroes(const struct blk_file *f);
/* The logical block: 512, a block device's (BLKSSZGET), or with cache =
 * none a file's O_DIRECT offset alignment if larger (statx): the alignment
 * submit checks. */
unsigned blk_file_block_size(const struct blk_file *f);
enum blk_engine blk_file_engine(const struct blk_file *f); /* URING or THREADS, as used */
int blk_file_fd(const struct blk_file *f);              /* still the backend's */
const char *blk_file_path(const struct blk_file *f);     /* the path, or "fd N" */

/* Queues r. 0: r->done will be called later on the main thread (never from
 * inside this call). -1 with a message: not queued (the queue is full, the
 * request is out of range for the image, a write of a read-only disk, its
 * segments do not add up to len, offset or len not a multiple of
 * blk_file_block_size() with cache = none (and for a block device's
 * discard and write-zeroes), the fd was disowned); r->done is not called.
 * Buffer alignment for cache = none is the caller's. */
int blk_file_submit(struct blk_file *f, struct blk_req *r);

/* Requests submitted and not yet completed. */
unsigned blk_file_inflight(const struct blk_file *f);

/* Waits for every request in flight and calls its done, here and now
 * (quiesce before a migration, close). Blocks the main thread: only for the
 * freeze. Requests that done submits are waited for too. */
void blk_file_drain(struct blk_file *f);

/* Lock handover when the fd does not travel: unlock drops every lock (the
 * fd stays open), lock takes them again after checking for conflicts (and
 * holds none if it fails). Also for a disk opened with lock = false (a
 * migration target), to take them later. */
int blk_file_unlock(struct blk_file *f);
int blk_file_lock(struct blk_file *f);

/* Forgets the fd without closing it (it was handed to a migration target);
 * its locks stay with it.
 * Requests in flight are drained first (the caller's job, but done here
 * too); later submits are refused. */
void blk_file_disown_fd(struct blk_file *f);

/* Restricts a ring created with IORING_SETUP_R_DISABLED to what the disk
 * path submits (readv, writev, fsync, nop; no SQE flags, no registering):
 * seccomp does not see a ring's operations, so a ring able to open files
 * would undo the filters. 0 or -errno, as liburing. */
struct io_uring;
int blk_ring_restrict(struct io_uring *ring);
/* Enables a ring created disabled (after blk_ring_restrict). */
int blk_ring_enable(struct io_uring *ring);

#endif
