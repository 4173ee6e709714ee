/* virtio-blk (virtio 1.x, section 5.2) on a disk image (blk_file.h).
 *
 * Requests: read, write, flush, get-id, and discard and write-zeroes where
 * the image supports them; multiqueue; seg_max, size_max, blk_size,
 * topology, read-only, and the write cache (CONFIG_WCE: the driver may
 * switch between writeback and writethrough; with writethrough every write
 * is followed by a flush before it completes).
 *
 * Every guest value is checked: the header (16 device-readable bytes) and
 * the status byte (the last device-writable byte) must be there, or the
 * device needs a reset; data lengths are whole sectors, segments at most
 * size_max, sector ranges inside the capacity, discard and write-zeroes
 * segments well formed. A bad request completes with VIRTIO_BLK_S_IOERR, an
 * unknown one with VIRTIO_BLK_S_UNSUPP. The device writes nothing but the
 * data of a read, the ID of a get-id and the status byte, each inside the
 * request's own device-writable buffers.
 *
 * The datapath runs on the main thread (the libuv loop): kicks pop chains,
 * the image does the I/O asynchronously, completions fill the used ring. */
#ifndef VMM_VIRTIO_BLK_H
#define VMM_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blk_file.h"
#include "memory.h"
#include "virtio.h"

#define VIRTIO_ID_BLOCK 2
#define VIRTIO_BLK_MAX_QUEUES 16
#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_SECTOR 512

/* Request types (5.2.6) and status values. */
#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_GET_LIFETIME 10
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_T_SECURE_ERASE 14
#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

/* Feature bits (5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_TOPOLOGY     10
#define VIRTIO_BLK_F_CONFIG_WCE   11
#define VIRTIO_BLK_F_MQ           12
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Configuration space offsets (5.2.4); the device's is 60 bytes (through
 * write_zeroes_may_unmap and its padding). */
#define VIRTIO_BLK_CFG_CAPACITY        0
#define VIRTIO_BLK_CFG_SIZE_MAX        8
#define VIRTIO_BLK_CFG_SEG_MAX         12
#define VIRTIO_BLK_CFG_BLK_SIZE        20
#define VIRTIO_BLK_CFG_PHYS_BLOCK_EXP  24
#define VIRTIO_BLK_CFG_MIN_IO_SIZE     26
#define VIRTIO_BLK_CFG_OPT_IO_SIZE     28
#define VIRTIO_BLK_CFG_WRITEBACK       32
#define VIRTIO_BLK_CFG_NUM_QUEUES      34
#define VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS 36
#define VIRTIO_BLK_CFG_MAX_DISCARD_SEG 40
#define VIRTIO_BLK_CFG_DISCARD_ALIGN   44
#define VIRTIO_BLK_CFG_MAX_WZ_SECTORS  48
#define VIRTIO_BLK_CFG_MAX_WZ_SEG      52
#define VIRTIO_BLK_CFG_WZ_MAY_UNMAP    56
#define VIRTIO_BLK_CONFIG_SIZE         60

/* What the device offers for requests: at most this many data segments
 * (seg_max), each at most size_max bytes; one discard or write-zeroes
 * segment per request, of at most 2^22 sectors. */
#define VIRTIO_BLK_SIZE_MAX       (4u << 20)
#define VIRTIO_BLK_SEG_MAX_LIMIT  254
#define VIRTIO_BLK_MAX_DISCARD_SECTORS (1u << 22)
/* Requests in flight per queue at most (the others wait in the ring). */
#define VIRTIO_BLK_QUEUE_DEPTH    128
/* A read or write whose buffers O_DIRECT cannot use as they are goes
 * through a bounce buffer of at most this size; a larger one fails. */
#define VIRTIO_BLK_BOUNCE_MAX     (16u << 20)

struct virtio_blk_options {
	const char *name;      /* "disk0", for messages */
	const char *path;      /* the image to open; for messages with fd */
	int fd;                /* >= 0: adopt this open image (a migration
	                        * source's): owned on success, the caller's on
	                        * failure, and the path is never opened */
	bool readonly;
	enum blk_cache cache;
	enum blk_engine engine;
	const char *serial;    /* get-id's answer, at most 20 bytes; NULL: none */
	unsigned queues;       /* 1..VIRTIO_BLK_MAX_QUEUES */
	uint16_t queue_size;   /* a power of 2; 0 = 256 */
	/* A migration target that opens the image itself: no locks until
	 * virtio_blk_take_lock (the source holds them until its freeze). */
	bool defer_lock;
};

struct virtio_blk;
struct uv_loop_s;
struct mig_buf;

/* Opens (or adopts) the image now, so that a bad path, a locked image or a
 * refused cache mode fail when the VM is composed. `mem` must be filled by
 * the time the driver sets DRIVER_OK. NULL with a message. */
struct virtio_blk *virtio_blk_new(const struct virtio_blk_options *o, const struct guest_mem *mem,
				  struct uv_loop_s *loop);
/* Completes what is in flight, then closes the image. */
void virtio_blk_free(struct virtio_blk *b);
/* Forgets the image fd without closing it (an adopted fd that goes back to
 * the caller), before virtio_blk_free. Nothing may be in flight. */
void virtio_blk_disown_fd(struct virtio_blk *b);

struct virtio_device *virtio_blk_device(struct virtio_blk *b);
uint64_t virtio_blk_capacity(const struct virtio_blk *b); /* sectors */
int virtio_blk_fd(const struct virtio_blk *b);
const char *virtio_blk_engine_name(const struct virtio_blk *b); /* "io_uring" or "threads" */

struct virtio_blk_stats {
	uint64_t read_reqs, read_bytes, write_reqs, write_bytes;
	uint64_t flush_reqs, discard_reqs, write_zeroes_reqs;
	uint64_t io_errors;   /* requests completed with IOERR (bad or failed) */
	uint64_t unsupported; /* requests completed with UNSUPP */
	unsigned inflight;    /* now */
};
void virtio_blk_get_stats(const struct virtio_blk *b, struct virtio_blk_stats *s);

/* A few lines for diagnosing a stalled disk: requests in flight per queue,
 * and each ring as vq_describe() sees it. Returns the length written. */
size_t virtio_blk_describe(const struct virtio_blk *b, char *buf, size_t len);

/* ---- Local migration ----
 *
 * Source: virtio_blk_quiesce completes every request in flight (their
 * writes reach the image, their used entries the ring), so the queue
 * indices are final and nothing has to be replayed by the target; kicks
 * are then ignored. If the image stays (no backend transfer), its locks
 * are dropped too, for the target to take. virtio_blk_unquiesce (the
 * migration failed) takes them back, waiting up to `relock_ms` for a target
 * that is letting go, and looks at every queue once.
 * Target: virtio_blk_new(.fd = received) or (.path, .defer_lock);
 * virtio_blk_backend_check; virtio_blk_load_check; virtio_blk_take_lock
 * (a deferred one); virtio_blk_load; activation after the commit. */
int virtio_blk_quiesce(struct virtio_blk *b, bool keep_lock);
int virtio_blk_unquiesce(struct virtio_blk *b, int relock_ms);

/* Payload (little-endian), after quiesce:
 *   u32 queues, u64 capacity (sectors), u8 readonly, u8 writeback (the
 *   driver's cache mode), u64 x 9 stats (as struct virtio_blk_stats,
 *   inflight excluded). No request is ever in flight in it. */
int virtio_blk_save(struct virtio_blk *b, struct mig_buf *b_out);
/* Checks it all first (same queues, capacity and read-only; writeback 0
 * or 1; no trailing bytes): -1 with a message naming the field. */
int virtio_blk_load_check(struct virtio_blk *b, const void *p, size_t len);
int virtio_blk_load(struct virtio_blk *b, const void *p, size_t len);
/* Target that opened the image itself: takes the locks the source dropped
 * at its freeze. No-op otherwise. */
int virtio_blk_take_lock(struct virtio_blk *b);
/* Gives them up again (the migration failed after take_lock). */
void virtio_blk_drop_deferred_lock(struct virtio_blk *b);

/* MIG_BACKEND payload: u64 size (bytes), u64 st_dev, u64 st_ino, u8 flags
 * (bit 0 writable, bit 1 O_DIRECT), with the image fd. The target checks
 * that the fd it got is that file, opened that way. */
int virtio_blk_backend_save(struct virtio_blk *b, struct mig_buf *out);
int virtio_blk_backend_check(struct virtio_blk *b, const void *p, size_t len);

#endif
