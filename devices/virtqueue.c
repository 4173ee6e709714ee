/* Split virtqueues, device side (virtio 1.x, 2.7). Every ring field comes
 * from the guest: it is copied once into a local and checked there. */
#include "virtqueue.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

#define VQ_DESC_BYTES 16u
#define VIRTIO_MSI_NO_VECTOR 0xffff

uint64_t vq_desc_bytes(uint16_t size)
{
	return (uint64_t)VQ_DESC_BYTES * size;
}

/* flags, idx, ring[size], used_event */
uint64_t vq_avail_bytes(uint16_t size)
{
	return 6 + 2 * (uint64_t)size;
}

/* flags, idx, {id, len}[size], avail_event */
uint64_t vq_used_bytes(uint16_t size)
{
	return 6 + 8 * (uint64_t)size;
}

void vq_reset(struct virtqueue *vq, uint16_t index, uint16_t max_size)
{
	memset(vq, 0, sizeof(*vq));
	vq->index = index;
	vq->size = max_size;
	vq->msix_vector = VIRTIO_MSI_NO_VECTOR;
}

/* ---- starting and stopping ---- */

static void *map_area(const struct virtqueue *vq, const struct guest_mem *mem, const char *what,
		      uint64_t gpa, uint64_t bytes, uint64_t align)
{
	if (gpa % align) {
		vmm_fail("queue %u: %s address 0x%llx is not %llu-byte aligned", vq->index, what,
			 (unsigned long long)gpa, (unsigned long long)align);
		return NULL;
	}
	void *p = guest_mem_ptr(mem, gpa, bytes);
	if (!p)
		vmm_fail("queue %u: %s 0x%llx+0x%llx is outside guest RAM", vq->index, what,
			 (unsigned long long)gpa, (unsigned long long)bytes);
	return p;
}

static bool is_valid_size(unsigned size)
{
	return size >= 1 && size <= VQ_MAX_SIZE && (size & (size - 1)) == 0;
}

int vq_start(struct virtqueue *vq, const struct guest_mem *mem, bool event_idx)
{
	if (!is_valid_size(vq->size))
		return vmm_fail("queue %u: size %u is not a power of 2 in 1..%u", vq->index, vq->size,
				VQ_MAX_SIZE);
	void *desc = map_area(vq, mem, "descriptor table", vq->desc_gpa, vq_desc_bytes(vq->size), 16);
	if (!desc)
		return -1;
	void *avail = map_area(vq, mem, "avail ring", vq->avail_gpa, vq_avail_bytes(vq->size), 2);
	if (!avail)
		return -1;
	void *used = map_area(vq, mem, "used ring", vq->used_gpa, vq_used_bytes(vq->size), 4);
	if (!used)
		return -1;
	vq->mem = mem;
	vq->desc = desc;
	vq->avail = avail;
	vq->used = used;
	vq->event_idx = event_idx;
	vq->started = true;
	return 0;
}

void vq_stop(struct virtqueue *vq)
{
	vq->started = false;
	vq->mem = NULL;
	vq->desc = NULL;
	vq->avail = NULL;
	vq->used = NULL;
}

/* ---- ring fields ---- */

static uint16_t avail_idx_acquire(const struct virtqueue *vq)
{
	return __atomic_load_n(&vq->avail[1], __ATOMIC_ACQUIRE);
}

static uint16_t avail_flags(const struct virtqueue *vq)
{
	return __atomic_load_n(&vq->avail[0], __ATOMIC_RELAXED);
}

static uint16_t avail_ring(const struct virtqueue *vq, uint16_t slot)
{
	return __atomic_load_n(&vq->avail[2 + slot], __ATOMIC_RELAXED);
}

static uint16_t used_event(const struct virtqueue *vq)
{
	return __atomic_load_n(&vq->avail[2 + vq->size], __ATOMIC_RELAXED);
}

static uint16_t *used_flags_ptr(const struct virtqueue *vq)
{
	return (uint16_t *)(void *)vq->used;
}

static uint16_t *used_idx_ptr(const struct virtqueue *vq)
{
	return (uint16_t *)(void *)(vq->used + 2);
}

static uint16_t *avail_event_ptr(const struct virtqueue *vq)
{
	return (uint16_t *)(void *)(vq->used + 4 + 8 * (size_t)vq->size);
}

uint16_t vq_pending(const struct virtqueue *vq)
{
	if (!vq->started)
		return 0;
	return (uint16_t)(avail_idx_acquire(vq) - vq->last_avail);
}

int vq_describe(const struct virtqueue *vq, char *buf, size_t len)
{
	if (!vq->started)
		return snprintf(buf, len, "not started");
	return snprintf(buf, len,
			"avail %u (flags 0x%x, used_event %u), popped %u, used %u (ring %u, flags 0x%x, avail_event %u)%s",
			avail_idx_acquire(vq), avail_flags(vq), used_event(vq), vq->last_avail, vq->used_idx,
			__atomic_load_n(used_idx_ptr(vq), __ATOMIC_RELAXED), __atomic_load_n(used_flags_ptr(vq), __ATOMIC_RELAXED),
			__atomic_load_n(avail_event_ptr(vq), __ATOMIC_RELAXED), vq->event_idx ? ", event_idx" : "");
}

/* ---- walking a chain ---- */

/* A descriptor table being walked: the queue's own, or an indirect one
 * (possibly unaligned), referred to by descriptor `owner`. */
struct desc_table {
	const uint8_t *base;
	uint32_t count;
	bool indirect;
	uint16_t owner;
};

/* Copies descriptor i once; the signal fence keeps the compiler from
 * reading the guest's copy again later. */
static void read_desc(const struct desc_table *t, uint32_t i, struct vq_desc *d)
{
	memcpy(d, t->base + (size_t)i * VQ_DESC_BYTES, sizeof(*d));
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

__attribute__((format(printf, 4, 5)))
static int desc_fail(const struct virtqueue *vq, const struct desc_table *t, uint32_t i,
		     const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (t->indirect)
		return vmm_fail("queue %u: descriptor %u: indirect entry %u: %s", vq->index, t->owner,
				i, why);
	return vmm_fail("queue %u: descriptor %u: %s", vq->index, i, why);
}

static int add_segment(const struct virtqueue *vq, struct vq_chain *c, const struct desc_table *t,
		       uint32_t i, const struct vq_desc *d)
{
	bool writable = d->flags & VQ_DESC_F_WRITE;
	if (!writable && c->nin)
		return desc_fail(vq, t, i, "device-readable descriptor after a device-writable one");
	if (d->len == 0)
		return 0;
	void *p = guest_mem_ptr(vq->mem, d->addr, d->len);
	if (!p)
		return desc_fail(vq, t, i, "buffer 0x%llx+0x%x is outside guest RAM",
				 (unsigned long long)d->addr, d->len);
	if (c->nout + c->nin >= c->cap)
		return desc_fail(vq, t, i, "chain needs more than %u segments", c->cap);
	c->iov[c->nout + c->nin] = (struct iovec){ .iov_base = p, .iov_len = d->len };
	if (writable) {
		c->nin++;
		c->in_len += d->len;
	} else {
		c->nout++;
		c->out_len += d->len;
	}
	return 0;
}

static int walk_table(const struct virtqueue *vq, struct vq_chain *c, const struct desc_table *t,
		      uint32_t first);

/* Descriptor i of table t refers to an indirect table: walk it. */
static int walk_indirect(const struct virtqueue *vq, struct vq_chain *c, const struct desc_table *t,
			 uint32_t i, const struct vq_desc *d)
{
	if (t->indirect)
		return desc_fail(vq, t, i, "indirect descriptor inside an indirect table");
	if (d->flags & VQ_DESC_F_NEXT)
		return desc_fail(vq, t, i, "both INDIRECT and NEXT set");
	if (d->len == 0 || d->len % VQ_DESC_BYTES)
		return desc_fail(vq, t, i, "indirect table length %u is not a non-zero multiple of %u",
				 d->len, VQ_DESC_BYTES);
	uint32_t count = d->len / VQ_DESC_BYTES;
	if (count > VQ_MAX_SIZE)
		return desc_fail(vq, t, i, "indirect table of %u entries is larger than %u", count,
				 VQ_MAX_SIZE);
	const uint8_t *base = guest_mem_ptr(vq->mem, d->addr, d->len);
	if (!base)
		return desc_fail(vq, t, i, "indirect table 0x%llx+0x%x is outside guest RAM",
				 (unsigned long long)d->addr, d->len);
	struct desc_table sub = { .base = base, .count = count, .indirect = true, .owner = (uint16_t)i };
	return walk_table(vq, c, &sub, 0);
}

/* Follows the chain from entry `first` of t, visiting at most t->count
 * descriptors (more means a loop). An indirect descriptor ends the chain. */
static int walk_table(const struct virtqueue *vq, struct vq_chain *c, const struct desc_table *t,
		      uint32_t first)
{
	uint32_t i = first;
	for (uint32_t visited = 1;; visited++) {
		if (visited > t->count)
			return desc_fail(vq, t, i, "chain longer than the %s of %u (a loop?)",
					 t->indirect ? "indirect table" : "queue size", t->count);
		struct vq_desc d;
		read_desc(t, i, &d);
		if (d.flags & VQ_DESC_F_INDIRECT)
			return walk_indirect(vq, c, t, i, &d);
		if (add_segment(vq, c, t, i, &d))
			return -1;
		if (!(d.flags & VQ_DESC_F_NEXT))
			return 0;
		if (d.next >= t->count)
			return desc_fail(vq, t, i, "next %u is outside the table of %u", d.next, t->count);
		i = d.next;
	}
}

int vq_pop(struct virtqueue *vq, struct vq_chain *c)
{
	if (!vq->started)
		return 0;
	uint16_t avail_idx = avail_idx_acquire(vq);
	uint16_t n = (uint16_t)(avail_idx - vq->last_avail);
	if (n == 0)
		return 0;
	if (n > vq->size)
		return vmm_fail("queue %u: driver made %u buffers available in a queue of size %u",
				vq->index, n, vq->size);
	uint16_t head = avail_ring(vq, (uint16_t)(vq->last_avail % vq->size));
	if (head >= vq->size)
		return vmm_fail("queue %u: avail entry %u: head %u is outside the table of %u", vq->index,
				vq->last_avail % vq->size, head, vq->size);
	c->head = head;
	c->nout = c->nin = 0;
	c->out_len = c->in_len = 0;
	struct desc_table t = { .base = (const uint8_t *)vq->desc, .count = vq->size };
	if (walk_table(vq, c, &t, head))
		return -1;
	vq->last_avail++;
	return 1;
}

void vq_unpop(struct virtqueue *vq, uint16_t n)
{
	vq->last_avail = (uint16_t)(vq->last_avail - n);
}

/* ---- used ring ---- */

void vq_fill(struct virtqueue *vq, uint16_t i, uint16_t head, uint32_t len)
{
	if (!vq->started)
		return;
	size_t slot = (uint16_t)(vq->used_idx + i) % vq->size;
	uint32_t elem[2] = { head, len };
	memcpy(vq->used + 4 + 8 * slot, elem, sizeof(elem));
}

void vq_flush(struct virtqueue *vq, uint16_t n)
{
	if (!vq->started)
		return;
	vq->used_idx = (uint16_t)(vq->used_idx + n);
	__atomic_store_n(used_idx_ptr(vq), vq->used_idx, __ATOMIC_RELEASE);
}

void vq_push(struct virtqueue *vq, uint16_t head, uint32_t len)
{
	vq_fill(vq, 0, head, len);
	vq_flush(vq, 1);
}

/* ---- notifications ---- */

/* virtio 1.x 2.7.7.2: whether new_idx has passed event since old. */
static bool vring_need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

bool vq_should_signal(struct virtqueue *vq)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!vq->started)
		return false;
	if (!vq->event_idx)
		return !(avail_flags(vq) & VQ_AVAIL_F_NO_INTERRUPT);
	/* The window is what was published since the last check, signalled or
	 * not (as vhost and QEMU do): a window counted from the last signal
	 * grows while the driver polls with interrupts off, and once it spans
	 * 2^16 entries the 16-bit comparison says "no" forever. */
	uint16_t old = vq->signalled_used;
	bool valid = vq->signalled_used_valid;
	vq->signalled_used = vq->used_idx;
	vq->signalled_used_valid = true;
	return !valid || vring_need_event(used_event(vq), vq->used_idx, old);
}

bool vq_set_notification(struct virtqueue *vq, bool enable)
{
	if (!vq->started)
		return false;
	if (!vq->event_idx) {
		uint16_t *flags = used_flags_ptr(vq);
		uint16_t f = __atomic_load_n(flags, __ATOMIC_RELAXED);
		f = enable ? (uint16_t)(f & ~VQ_USED_F_NO_NOTIFY) : (uint16_t)(f | VQ_USED_F_NO_NOTIFY);
		__atomic_store_n(flags, f, __ATOMIC_RELAXED);
	} else if (enable) {
		/* The driver's current index, not last_avail: a device waiting for
		 * more buffers than are pending (a big rx packet) must be kicked
		 * when the driver adds the next one. */
		__atomic_store_n(avail_event_ptr(vq), avail_idx_acquire(vq), __ATOMIC_RELAXED);
	}
	if (!enable)
		return false;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return vq_pending(vq) != 0;
}
