/* Split virtqueues (virtio 1.x, section 2.7), device side.
 *
 * Everything in the rings is written by the guest and is untrusted: ring
 * addresses and sizes are checked when the queue starts, and every
 * descriptor as it is walked (address and length inside guest RAM, next
 * index inside the table, no loops, chain length bounded by the queue size
 * and by the caller's iovec capacity, device-writable segments only after
 * the readable ones, no indirect table inside an indirect table, the avail
 * index never more than `size` ahead). A violation makes vq_pop() return -1
 * with a message (vmm_error()) naming the queue and the descriptor; the
 * caller then marks the device as needing reset. Nothing is ever written
 * outside guest RAM.
 *
 * A queue is used by one thread at a time (the thread running the device's
 * datapath); the guest runs concurrently, so ring fields are read once and
 * with the barriers the spec requires. */
#ifndef VMM_VIRTQUEUE_H
#define VMM_VIRTQUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "memory.h"

#define VQ_MAX_SIZE 32768 /* split ring maximum */

/* Descriptor flags and ring flags (virtio 1.x, 2.7.5 and 2.7.6). */
#define VQ_DESC_F_NEXT     1
#define VQ_DESC_F_WRITE    2
#define VQ_DESC_F_INDIRECT 4
#define VQ_AVAIL_F_NO_INTERRUPT 1
#define VQ_USED_F_NO_NOTIFY     1

struct vq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtqueue {
	/* Written by the driver (through the transport) while the queue is not
	 * started. */
	uint16_t size;      /* a power of 2, 1..VQ_MAX_SIZE */
	bool enabled;       /* queue_enable was written 1 */
	uint16_t msix_vector;
	uint64_t desc_gpa, avail_gpa, used_gpa;

	/* Device state: what migration saves and restores. */
	uint16_t last_avail; /* free-running index of the next avail entry to pop */
	uint16_t used_idx;   /* free-running index of the next used entry to fill */
	uint16_t signalled_used;   /* used_idx at the last vq_should_signal() */
	bool signalled_used_valid;
	bool event_idx;      /* VIRTIO_F_EVENT_IDX negotiated */

	/* Set by vq_start(): host views of the three areas. */
	bool started;
	uint16_t index;      /* this queue's number, for messages */
	const struct guest_mem *mem;
	struct vq_desc *desc;
	uint16_t *avail;     /* flags, idx, ring[size], used_event */
	uint8_t *used;       /* flags, idx, {id, len}[size], avail_event */
};

/* One descriptor chain as popped: iov[0..nout) are device-readable,
 * iov[nout..nout+nin) device-writable. The caller provides iov and cap. */
struct vq_chain {
	uint16_t head;
	unsigned nout, nin;
	uint64_t out_len, in_len; /* byte totals of each part */
	struct iovec *iov;
	unsigned cap;
};

/* Power-on state: not enabled, not started, size `max_size`, addresses and
 * indices zero. */
void vq_reset(struct virtqueue *vq, uint16_t index, uint16_t max_size);

/* Checks the driver's size and ring addresses (alignment; each area wholly
 * inside guest RAM) and maps the rings. Indices start from last_avail and
 * used_idx as they are (0 after reset, restored values after migration). */
int vq_start(struct virtqueue *vq, const struct guest_mem *mem, bool event_idx);
void vq_stop(struct virtqueue *vq);

/* 1 and *c filled: a chain was popped. 0: the ring is empty. -1: the driver
 * broke a rule; message set; last_avail unchanged. */
int vq_pop(struct virtqueue *vq, struct vq_chain *c);
/* Gives back the last n popped chains: they will be popped again. */
void vq_unpop(struct virtqueue *vq, uint16_t n);

/* Used ring: vq_fill writes entry used_idx+i without publishing it;
 * vq_flush(n) publishes n filled entries (release store of used->idx).
 * vq_push(head, len) is fill + flush of one. */
void vq_fill(struct virtqueue *vq, uint16_t i, uint16_t head, uint32_t len);
void vq_flush(struct virtqueue *vq, uint16_t n);
void vq_push(struct virtqueue *vq, uint16_t head, uint32_t len);

/* After publishing used entries: whether the driver wants an interrupt now
 * (used_event with EVENT_IDX, else VQ_AVAIL_F_NO_INTERRUPT). With EVENT_IDX
 * each call covers the entries published since the previous call. */
bool vq_should_signal(struct virtqueue *vq);

/* Whether the driver should kick on new buffers (used flags, or avail_event
 * with EVENT_IDX, set to the driver's current avail index so that the next
 * buffer it adds kicks even if some are pending). Enabling returns whether
 * unpopped buffers are pending, so the caller does not sleep on them. */
bool vq_set_notification(struct virtqueue *vq, bool enable);

/* Number of avail entries not popped yet (0 if the ring is not started). */
uint16_t vq_pending(const struct virtqueue *vq);

/* One line on what the device and the driver see of the queue now, for
 * diagnosing a stalled queue: "avail 812 (flags 0x0, used_event 790),
 * popped 812, used 812 (ring 812, flags 0x0, avail_event 813)". "popped"
 * and "used" are this device's indices, "ring" the used index in guest
 * memory (what vhost-net wrote, while it runs the queue). Racy by nature
 * (the driver runs on), never used for decisions. Returns snprintf's. */
int vq_describe(const struct virtqueue *vq, char *buf, size_t len);

/* Bytes the rings need (for checks and for vhost). */
uint64_t vq_desc_bytes(uint16_t size);
uint64_t vq_avail_bytes(uint16_t size);
uint64_t vq_used_bytes(uint16_t size);

#endif
