/* The vring hand-over shared by vhost-net and vhost-user (vhost_ring.h). */
#include "vhost_ring.h"

#include <stdint.h>

#include "err.h"
#include "virtio.h"

int vhost_vring_check(const struct vhost_vring *r, const char *who, unsigned idx)
{
	if (!r || r->size == 0 || r->size > VHOST_RING_MAX_SIZE || (r->size & (r->size - 1)))
		return vmm_fail("%s: vring %u: size %u is not a power of two in 1..%u", who, idx, r ? r->size : 0,
				VHOST_RING_MAX_SIZE);
	/* Alignment required by virtio 1.x for split rings. */
	if (!r->desc || !r->avail || !r->used || ((uintptr_t)r->desc & 15) || ((uintptr_t)r->avail & 1) ||
	    ((uintptr_t)r->used & 3))
		return vmm_fail("%s: vring %u: ring addresses missing or misaligned", who, idx);
	if (r->kick_fd < 0)
		return vmm_fail("%s: vring %u: no kick eventfd", who, idx);
	return 0;
}

int vhost_vring_of_queue(struct virtio_device *vd, unsigned q, bool need_call, struct vhost_vring *out)
{
	struct virtqueue *vq = &vd->vqs[q];
	if (!vq->started)
		return vmm_fail("vhost: queue %u is not enabled", q);
	*out = (struct vhost_vring){
		.size = vq->size,
		.last_avail = vq->last_avail,
		.desc = vq->desc,
		.avail = vq->avail,
		.used = vq->used,
		.kick_fd = virtio_kick_fd(vd, q),
		.call_fd = virtio_call_fd(vd, q),
	};
	if (out->kick_fd < 0)
		return vmm_fail("vhost: queue %u has no ioeventfd", q);
	if (need_call && out->call_fd < 0)
		return vmm_fail("vhost: queue %u has no interrupt eventfd (no MSI-X vector?)", q);
	virtio_take_kicks(vd, q, true);
	return 0;
}

void vhost_vring_stopped(struct virtio_device *vd, unsigned q, uint16_t last_avail)
{
	struct virtqueue *vq = &vd->vqs[q];
	vq->last_avail = last_avail;
	if (vq->used) {
		const uint8_t *u = vq->used + 2;
		vq->used_idx = (uint16_t)(u[0] | (u[1] << 8));
	}
	vq->signalled_used_valid = false;
	virtio_take_kicks(vd, q, false);
}
