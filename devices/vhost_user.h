/* The front end of the vhost-user protocol (QEMU's docs/interop/vhost-user.rst):
 * a virtio device's queues served by another process (a backend such as
 * qemu-storage-daemon) over a connected UNIX stream socket, its memory and
 * eventfds passed with SCM_RIGHTS.
 *
 * A message is a 12-byte header (u32 request, u32 flags, u32 size), then
 * `size` payload bytes; all little-endian (x86). flags: bits 0-1 the version
 * (1), bit 2 REPLY (set by the backend), bit 3 NEED_REPLY (REPLY_ACK). The
 * front end sends requests and reads replies; the backend speaks only when
 * asked (the backend-request channel, BACKEND_REQ, is not used).
 *
 * Everything read from the socket is untrusted: a reply must carry the
 * REPLY flag and version 1, answer the request just sent, have exactly the
 * payload size that request's reply has, and no file descriptors unless the
 * request returns one (GET_INFLIGHT_FD). Anything else, a timeout, EOF or a
 * byte that arrives unasked marks the connection broken: every later call
 * fails at once with the first reason, and the caller puts its device in
 * an error state. vhost_user_parse_reply is the pure check (fuzzed).
 *
 * Threads: one thread at a time (the main thread). Calls block in poll()
 * for at most timeout_ms per reply. */
#ifndef VMM_VHOST_USER_H
#define VMM_VHOST_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memory.h"
#include "vhost_ring.h"

/* ---- the wire ---------------------------------------------------------- */

enum vhost_user_request {
	VHOST_USER_GET_FEATURES = 1,
	VHOST_USER_SET_FEATURES = 2,
	VHOST_USER_SET_OWNER = 3,
	VHOST_USER_RESET_OWNER = 4,
	VHOST_USER_SET_MEM_TABLE = 5,
	VHOST_USER_SET_VRING_NUM = 8,
	VHOST_USER_SET_VRING_ADDR = 9,
	VHOST_USER_SET_VRING_BASE = 10,
	VHOST_USER_GET_VRING_BASE = 11,
	VHOST_USER_SET_VRING_KICK = 12,
	VHOST_USER_SET_VRING_CALL = 13,
	VHOST_USER_SET_VRING_ERR = 14,
	VHOST_USER_GET_PROTOCOL_FEATURES = 15,
	VHOST_USER_SET_PROTOCOL_FEATURES = 16,
	VHOST_USER_GET_QUEUE_NUM = 17,
	VHOST_USER_SET_VRING_ENABLE = 18,
	VHOST_USER_GET_CONFIG = 24,
	VHOST_USER_SET_CONFIG = 25,
	VHOST_USER_GET_INFLIGHT_FD = 31,
	VHOST_USER_SET_INFLIGHT_FD = 32,
};

#define VHOST_USER_HDR_SIZE     12
#define VHOST_USER_VERSION      0x1u
#define VHOST_USER_VERSION_MASK 0x3u
#define VHOST_USER_FLAG_REPLY   (1u << 2)
#define VHOST_USER_FLAG_NEED_REPLY (1u << 3)

/* The virtio feature bit that says the backend has protocol features. */
#define VHOST_USER_F_PROTOCOL_FEATURES 30

/* Protocol feature bits this front end knows. */
#define VHOST_USER_PROTOCOL_F_MQ             0
#define VHOST_USER_PROTOCOL_F_REPLY_ACK      3
#define VHOST_USER_PROTOCOL_F_BACKEND_REQ    5
#define VHOST_USER_PROTOCOL_F_CONFIG         9
#define VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD 12

#define VHOST_USER_MAX_REGIONS  8    /* SET_MEM_TABLE without CONFIGURE_MEM_SLOTS */
#define VHOST_USER_MAX_CONFIG   256  /* GET_CONFIG payload bytes */
#define VHOST_USER_MAX_QUEUES   64
#define VHOST_USER_MAX_PAYLOAD  (8 + VHOST_USER_MAX_REGIONS * 32) /* the memory table */
#define VHOST_USER_MAX_FDS      VHOST_USER_MAX_REGIONS
/* SET_VRING_KICK/CALL/ERR payload: bits 0-7 the queue, bit 8 "no fd". */
#define VHOST_USER_VRING_IDX_MASK 0xffu
#define VHOST_USER_VRING_NOFD     (1u << 8)

struct vhost_user_region {
	uint64_t gpa, size, user_addr, mmap_offset;
};

struct vhost_user_inflight {
	uint64_t mmap_size, mmap_offset;
	uint16_t num_queues, queue_size;
};

/* A decoded reply. Which member holds the payload depends on the request:
 * u64 (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, a REPLY_ACK),
 * state (GET_VRING_BASE: index, num), config (GET_CONFIG: offset, size,
 * flags and `size` bytes), inflight (GET_INFLIGHT_FD, with its fd). */
struct vhost_user_reply {
	uint32_t request;
	uint32_t size;
	union {
		uint64_t u64;
		struct { uint32_t index, num; } state;
		struct {
			uint32_t offset, size, flags;
			uint8_t data[VHOST_USER_MAX_CONFIG];
		} config;
		struct vhost_user_inflight inflight;
	};
};

/* Checks one received reply (hdr_and_payload: len bytes, nfds descriptors
 * came with it) against what `request` answers; `need_ack`: the request was
 * sent with NEED_REPLY, so a u64 status is expected (0 = success), whatever
 * the request. GET_CONFIG: the reply's offset and size must be the asked
 * ones (config_size). 0 and *out filled; -1 with a message naming the
 * request and what is wrong ("GET_VRING_BASE: reply of 4 bytes, expected
 * 8"). Reads only [0, len). */
int vhost_user_parse_reply(const void *buf, size_t len, unsigned nfds, uint32_t request, bool need_ack,
			   uint32_t config_size, struct vhost_user_reply *out);

/* "GET_FEATURES" for a request number ("request 99" for an unknown one:
 * the buffer is static, for messages only). */
const char *vhost_user_request_name(uint32_t request);

/* ---- the connection ---------------------------------------------------- */

struct vhost_user {
	int fd;                     /* the connected socket; -1 when closed */
	char name[32];              /* for messages: "disk1" */
	int timeout_ms;             /* per reply; 5000 by default */
	uint64_t features;          /* the backend's GET_FEATURES */
	uint64_t protocol_features; /* negotiated: ours & the backend's (0 without
	                             * VHOST_USER_F_PROTOCOL_FEATURES) */
	uint32_t queue_num;         /* GET_QUEUE_NUM with MQ, else 0 */
	bool broken;                /* see vhost_user_broken */
	char why[256];              /* the first failure once broken */
};

/* Connects to the backend's socket at path (no message yet). -1 with a
 * message naming the path ("vhost-user socket /run/vub.sock: connect:
 * Connection refused"). */
int vhost_user_connect(struct vhost_user *u, const char *name, const char *path);
/* Takes over an already connected (and set up) socket: a migration source's.
 * The negotiated values come from the source's state, not from the backend. */
void vhost_user_adopt(struct vhost_user *u, const char *name, int fd, uint64_t features,
		      uint64_t protocol_features, uint32_t queue_num);
void vhost_user_close(struct vhost_user *u);
/* Gives up the socket without closing it (it went to another process). */
int vhost_user_release(struct vhost_user *u);

/* Whether a failure has made the connection unusable; why says what. */
bool vhost_user_broken(const struct vhost_user *u);

/* The session's start: GET_FEATURES; with VHOST_USER_F_PROTOCOL_FEATURES,
 * GET_PROTOCOL_FEATURES and SET_PROTOCOL_FEATURES with (wanted & offered);
 * GET_QUEUE_NUM when MQ was negotiated; then SET_OWNER. */
int vhost_user_handshake(struct vhost_user *u, uint64_t wanted_protocol);

/* SET_FEATURES: the driver's virtio features (a subset of u->features), plus
 * VHOST_USER_F_PROTOCOL_FEATURES when the backend offered it. */
int vhost_user_set_features(struct vhost_user *u, uint64_t features);

/* SET_MEM_TABLE: every region of guest RAM (gpa, size, this process's
 * address of it, its offset in mem->fd), mem->fd once per region. */
int vhost_user_set_mem_table(struct vhost_user *u, const struct guest_mem *mem);

/* GET_CONFIG (CONFIG negotiated): len bytes of the device's configuration
 * space from offset (offset + len <= VHOST_USER_MAX_CONFIG). */
int vhost_user_get_config(struct vhost_user *u, uint32_t offset, void *buf, uint32_t len);

/* Starts queue idx from r (vhost_ring.h): SET_VRING_NUM, SET_VRING_BASE
 * (r->last_avail), SET_VRING_ADDR (this process's addresses), SET_VRING_KICK,
 * SET_VRING_CALL, then SET_VRING_ENABLE 1 when protocol features were
 * negotiated (the ring starts disabled then). Refused before any message:
 * idx >= VHOST_USER_MAX_QUEUES (or >= queue_num with MQ), a size that is
 * not a power of two in 1..32768, missing rings, kick_fd < 0. call_fd -1
 * is sent as "no fd". */
int vhost_user_vring_start(struct vhost_user *u, unsigned idx, const struct vhost_vring *r);

/* Stops queue idx: SET_VRING_ENABLE 0 (with protocol features), then
 * GET_VRING_BASE, whose answer (the next avail index the backend would pop,
 * all earlier requests completed) goes to *last_avail. */
int vhost_user_vring_stop(struct vhost_user *u, unsigned idx, uint16_t *last_avail);

/* INFLIGHT_SHMFD (negotiated): GET_INFLIGHT_FD for num_queues x queue_size
 * -> the region's fd (the caller's) and its size and offset. The reply is
 * checked: the queue count and size asked, a size that holds every queue's
 * region and at most VHOST_USER_INFLIGHT_MAX, a page-aligned offset, and
 * an fd that is that large. SET_INFLIGHT_FD gives a region to the backend
 * (each session, after SET_FEATURES: a backend that restarted resubmits
 * what it had in flight). */
int vhost_user_get_inflight(struct vhost_user *u, uint16_t num_queues, uint16_t queue_size,
			    struct vhost_user_inflight *out, int *fd);
int vhost_user_set_inflight(struct vhost_user *u, const struct vhost_user_inflight *in, int fd);

/* ---- the inflight region (INFLIGHT_SHMFD) ------------------------------- *
 *
 * The backend's own record of what it popped and has not completed, in
 * shared memory the front end keeps (by its fd) across sessions and hands
 * to a migration target: num_queues queue regions of mmap_size /
 * num_queues bytes each. A split queue's region (vhost-user.rst, "Inflight
 * I/O tracking"): u64 features, u16 version (1; 0 = never written), u16
 * desc_num (the queue size), u16 last_batch_head, u16 used_idx, then
 * desc_num 16-byte entries: u8 inflight, 5 padding, u16 next (the last
 * batch's list), u64 counter. The region is the backend's and untrusted:
 * it is read with pread (a backend that shrinks the memfd gives a short
 * read, never SIGBUS) and every index in it is checked. */

#define VHOST_USER_INFLIGHT_HDR   16
#define VHOST_USER_INFLIGHT_DESC  16
/* The largest region a front end takes: every queue at the largest size
 * with room for the header and alignment. */
#define VHOST_USER_INFLIGHT_MAX                                                                           \
	((uint64_t)VHOST_USER_MAX_QUEUES * (VHOST_USER_INFLIGHT_HDR + 64 +                                \
					   (uint64_t)VHOST_USER_INFLIGHT_DESC * VHOST_RING_MAX_SIZE))

/* Queue region of one queue (region: len bytes) -> where the backend would
 * pop next: ring_used (the used index in guest memory, every chain before
 * it completed) plus the chains the region says are in flight, less those
 * of the last batch the used ring already shows (used_idx behind
 * ring_used). 0 and *last_avail; 1 when the region was never written
 * (version 0: nothing to say, the caller takes the ring's used index);
 * -1 with a message ("inflight region of queue 1: desc_num 64, the queue
 * has 128") for a region that cannot be right. Reads only [0, len). */
int vhost_user_inflight_position(const void *region, size_t len, uint16_t queue_size, uint16_t ring_used,
				 unsigned q, uint16_t *last_avail);

/* The same for queue q, read from the region's fd (pread at mmap_offset +
 * q * mmap_size / num_queues). */
int vhost_user_inflight_read(int fd, const struct vhost_user_inflight *in, unsigned q, uint16_t ring_used,
			     uint16_t *last_avail);

/* Whether the backend said something unasked or hung up, checked without
 * blocking (for the device's watch on the socket between calls): 0 quiet,
 * -1 and the connection broken with the reason ("backend closed the
 * connection", "backend sent 12 bytes unasked"). */
int vhost_user_check_idle(struct vhost_user *u);

#endif
