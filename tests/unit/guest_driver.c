/* A guest's split-ring driver over a buffer standing for guest RAM. */
#include <string.h>

#include "guest_driver.h"

uint8_t guest[GUEST_SIZE] __attribute__((aligned(4096)));
struct gq gqs[GUEST_MAX_QUEUES];
uint16_t qsize = 256;

struct vq_desc *gdesc(unsigned q, uint16_t i)
{
	return (struct vq_desc *)(guest + gqs[q].desc) + i;
}

uint16_t *gavail(unsigned q)
{
	return (uint16_t *)(guest + gqs[q].avail);
}

void publish(unsigned q, uint16_t head)
{
	struct gq *g = &gqs[q];
	uint16_t *a = gavail(q);
	a[2 + g->avail_idx % qsize] = head;
	g->avail_idx++;
	__atomic_store_n(&a[1], g->avail_idx, __ATOMIC_RELEASE);
}

uint16_t add_chain(unsigned q, const struct seg *s, unsigned n)
{
	struct gq *g = &gqs[q];
	uint16_t head = g->next_desc;
	for (unsigned i = 0; i < n; i++) {
		uint16_t idx = (uint16_t)((head + i) % qsize);
		struct vq_desc *d = gdesc(q, idx);
		d->addr = s[i].gpa;
		d->len = s[i].len;
		d->flags = (uint16_t)((s[i].write ? VQ_DESC_F_WRITE : 0) | (i + 1 < n ? VQ_DESC_F_NEXT : 0));
		d->next = (uint16_t)((idx + 1) % qsize);
	}
	g->next_desc = (uint16_t)((head + n) % qsize);
	publish(q, head);
	return head;
}

uint16_t used_idx(unsigned q)
{
	return __atomic_load_n((uint16_t *)(guest + gqs[q].used + 2), __ATOMIC_ACQUIRE);
}

bool get_used(unsigned q, uint16_t *id, uint32_t *len)
{
	struct gq *g = &gqs[q];
	if (used_idx(q) == g->used_seen)
		return false;
	uint32_t *e = (uint32_t *)(guest + g->used + 4 + 8 * (g->used_seen % qsize));
	*id = (uint16_t)e[0];
	*len = e[1];
	g->used_seen++;
	return true;
}

/* Queue q's rings at fixed places in the first MiB, told to the device. */
static void setup_queue(struct virtio_device *vd, unsigned q)
{
	struct gq *g = &gqs[q];
	memset(g, 0, sizeof(*g));
	g->desc = 0x10000ull * (q + 1);
	g->avail = g->desc + 0x4000;
	g->used = g->desc + 0x6000;
	struct virtqueue *vq = &vd->vqs[q];
	vq->size = qsize;
	vq->desc_gpa = g->desc;
	vq->avail_gpa = g->avail;
	vq->used_gpa = g->used;
	vq->enabled = true;
}

int guest_driver_start(struct virtio_device *vd, uint64_t features, unsigned nqueues)
{
	memset(guest, 0, MiB);
	vd->driver_features = features;
	vd->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	for (unsigned q = 0; q < nqueues && q < GUEST_MAX_QUEUES; q++)
		setup_queue(vd, q);
	vd->status |= VIRTIO_STATUS_DRIVER_OK;
	return virtio_activate(vd);
}
