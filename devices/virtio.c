#include "virtio.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "migstream.h"

void virtio_init(struct virtio_device *vd, const char *name, uint16_t device_id,
		 const struct virtio_device_ops *ops, void *opaque, unsigned nqueues,
		 uint16_t queue_max_size, uint32_t config_size)
{
	memset(vd, 0, sizeof(*vd));
	vd->name = name;
	vd->device_id = device_id;
	vd->ops = ops;
	vd->opaque = opaque;
	vd->nqueues = nqueues < VIRTIO_MAX_QUEUES ? nqueues : VIRTIO_MAX_QUEUES;
	vd->queue_max_size = queue_max_size;
	vd->config_size = config_size;
	pthread_mutex_init(&vd->lock, NULL);
	for (unsigned q = 0; q < vd->nqueues; q++)
		vq_reset(&vd->vqs[q], (uint16_t)q, queue_max_size);
}

void virtio_destroy(struct virtio_device *vd)
{
	pthread_mutex_destroy(&vd->lock);
}

bool virtio_has_feature(const struct virtio_device *vd, unsigned bit)
{
	return bit < 64 && (vd->driver_features & VIRTIO_BIT(bit));
}

static uint8_t get_status(struct virtio_device *vd)
{
	pthread_mutex_lock(&vd->lock);
	uint8_t s = vd->status;
	pthread_mutex_unlock(&vd->lock);
	return s;
}

int virtio_activate(struct virtio_device *vd)
{
	if (vd->active)
		return 0;
	if (get_status(vd) & VIRTIO_STATUS_NEEDS_RESET)
		return vmm_fail("%s: needs a reset before it can be used again", vd->name);
	bool event_idx = virtio_has_feature(vd, VIRTIO_F_RING_EVENT_IDX);
	for (unsigned q = 0; q < vd->nqueues; q++) {
		struct virtqueue *vq = &vd->vqs[q];
		if (vq->enabled && vq_start(vq, vd->mem, event_idx)) {
			vmm_fail_context("%s", vd->name); /* the message names the queue */
			goto fail;
		}
	}
	if (vd->ops->activate(vd)) {
		vmm_fail_context("%s", vd->name);
		goto fail;
	}
	vd->active = true;
	return 0;
fail:;
	char why[512];
	snprintf(why, sizeof(why), "%s", vmm_error());
	for (unsigned q = 0; q < vd->nqueues; q++)
		vq_stop(&vd->vqs[q]);
	virtio_needs_reset(vd, why);
	vmm_fail("%s", why);
	return -1;
}

void virtio_reset(struct virtio_device *vd)
{
	if (vd->active)
		vd->ops->reset(vd);
	vd->active = false;
	for (unsigned q = 0; q < vd->nqueues; q++) {
		vq_stop(&vd->vqs[q]);
		vq_reset(&vd->vqs[q], (uint16_t)q, vd->queue_max_size);
		vd->kicks_taken[q] = false;
	}
	pthread_mutex_lock(&vd->lock);
	vd->driver_features = 0;
	vd->status = 0;
	vd->config_generation++;
	pthread_mutex_unlock(&vd->lock);
}

void virtio_signal_queue(struct virtio_device *vd, unsigned q)
{
	if (vd->transport && vd->transport->signal_queue)
		vd->transport->signal_queue(vd->transport_opaque, q);
}

void virtio_config_changed(struct virtio_device *vd)
{
	pthread_mutex_lock(&vd->lock);
	vd->config_generation++;
	pthread_mutex_unlock(&vd->lock);
	if (vd->transport && vd->transport->signal_config)
		vd->transport->signal_config(vd->transport_opaque);
}

void virtio_needs_reset(struct virtio_device *vd, const char *why)
{
	pthread_mutex_lock(&vd->lock);
	bool first = !(vd->status & VIRTIO_STATUS_NEEDS_RESET);
	vd->status |= VIRTIO_STATUS_NEEDS_RESET;
	pthread_mutex_unlock(&vd->lock);
	if (!first)
		return;
	fprintf(stderr, "vmm: %s: device needs reset: %s\n", vd->name, why);
	if (vd->transport && vd->transport->signal_config)
		vd->transport->signal_config(vd->transport_opaque);
}

bool virtio_is_broken(struct virtio_device *vd)
{
	return get_status(vd) & VIRTIO_STATUS_NEEDS_RESET;
}

int virtio_kick_fd(struct virtio_device *vd, unsigned q)
{
	return vd->transport && vd->transport->kick_fd ? vd->transport->kick_fd(vd->transport_opaque, q) : -1;
}

int virtio_call_fd(struct virtio_device *vd, unsigned q)
{
	return vd->transport && vd->transport->call_fd ? vd->transport->call_fd(vd->transport_opaque, q) : -1;
}

void virtio_take_kicks(struct virtio_device *vd, unsigned q, bool taken)
{
	if (q < vd->nqueues)
		vd->kicks_taken[q] = taken;
}

bool virtio_status_live(uint8_t status)
{
	return (status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(status & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED));
}

void virtio_kick_all(struct virtio_device *vd)
{
	if (!vd->active)
		return;
	for (unsigned q = 0; q < vd->nqueues; q++) {
		if (!vd->vqs[q].enabled)
			continue;
		if (vd->kicks_taken[q]) {
			/* EAGAIN: the counter is full, a kick is pending anyway */
			int fd = virtio_kick_fd(vd, q);
			uint64_t one = 1;
			while (fd >= 0 && write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
				;
		} else if (vd->ops->queue_notify) {
			vd->ops->queue_notify(vd, q);
		}
	}
}

/* --- local migration ------------------------------------------------------------ */

static void save_queue(const struct virtqueue *vq, struct mig_buf *b)
{
	mig_put_u16(b, vq->size);
	mig_put_u8(b, vq->enabled);
	mig_put_u16(b, vq->msix_vector);
	mig_put_u64(b, vq->desc_gpa);
	mig_put_u64(b, vq->avail_gpa);
	mig_put_u64(b, vq->used_gpa);
	mig_put_u16(b, vq->last_avail);
	mig_put_u16(b, vq->used_idx);
	mig_put_u16(b, vq->signalled_used);
	mig_put_u8(b, vq->signalled_used_valid);
	mig_put_u8(b, vq->event_idx);
}

void virtio_save(const struct virtio_device *vd, struct mig_buf *b)
{
	mig_put_u16(b, vd->device_id);
	mig_put_u16(b, (uint16_t)vd->nqueues);
	mig_put_u64(b, vd->host_features);
	mig_put_u64(b, vd->driver_features);
	mig_put_u8(b, vd->status);
	mig_put_u32(b, vd->config_generation);
	for (unsigned q = 0; q < vd->nqueues; q++)
		save_queue(&vd->vqs[q], b);
}

/* A stream byte that must be a bool. */
static int get_flag(struct mig_cursor *c, bool *out, uint8_t *raw)
{
	*raw = mig_get_u8(c);
	*out = *raw == 1;
	return *raw <= 1 ? 0 : -1;
}

static int read_queue(const struct virtio_device *vd, unsigned q, struct mig_cursor *c,
		      struct virtio_saved_queue *s)
{
	uint8_t en, valid, ev;
	int bad = 0;
	s->size = mig_get_u16(c);
	bad |= get_flag(c, &s->enabled, &en);
	s->msix_vector = mig_get_u16(c);
	s->desc_gpa = mig_get_u64(c);
	s->avail_gpa = mig_get_u64(c);
	s->used_gpa = mig_get_u64(c);
	s->last_avail = mig_get_u16(c);
	s->used_idx = mig_get_u16(c);
	s->signalled_used = mig_get_u16(c);
	bad |= get_flag(c, &s->signalled_used_valid, &valid);
	bad |= get_flag(c, &s->event_idx, &ev);
	if (c->short_read)
		return mig_cursor_finish(c);
	if (bad)
		return vmm_fail("%s: queue %u: enabled %u, signalled_used_valid %u, event_idx %u: each must be 0 or 1",
				vd->name, q, en, valid, ev);
	return 0;
}

static int check_queue(const struct virtio_device *vd, unsigned q, const struct virtio_saved_queue *s,
		       bool live)
{
	unsigned size = s->size;
	if (size == 0 || size > vd->queue_max_size || (size & (size - 1)))
		return vmm_fail("%s: queue %u: size %u is not a power of 2 in 1..%u", vd->name, q, size,
				vd->queue_max_size);
	uint16_t in_flight = (uint16_t)(s->last_avail - s->used_idx);
	if (in_flight > size)
		return vmm_fail("%s: queue %u: last_avail %u is %u entries ahead of used_idx %u (size %u)", vd->name,
				q, s->last_avail, in_flight, s->used_idx, size);
	if (!live || !s->enabled)
		return 0; /* registers only: checked when the driver starts the device */
	if (!vd->mem)
		return vmm_fail("%s: queue %u: no guest memory to check the rings against", vd->name, q);
	/* vq_start on a copy only computes host pointers: guest memory is not
	 * read, and the copy is dropped. */
	struct virtqueue probe;
	vq_reset(&probe, (uint16_t)q, (uint16_t)size);
	probe.desc_gpa = s->desc_gpa;
	probe.avail_gpa = s->avail_gpa;
	probe.used_gpa = s->used_gpa;
	if (vq_start(&probe, vd->mem, false))
		return vmm_fail_context("%s", vd->name);
	return 0;
}

static int check_features(const struct virtio_device *vd, const struct virtio_saved *s)
{
	uint64_t extra = s->host_features & ~vd->host_features;
	if (extra)
		return vmm_fail("%s: host features 0x%llx in the stream: bits 0x%llx are not offered here (0x%llx)",
				vd->name, (unsigned long long)s->host_features, (unsigned long long)extra,
				(unsigned long long)vd->host_features);
	extra = s->driver_features & ~s->host_features;
	if (extra)
		return vmm_fail("%s: driver features 0x%llx are not a subset of host features 0x%llx (extra bits 0x%llx)",
				vd->name, (unsigned long long)s->driver_features,
				(unsigned long long)s->host_features, (unsigned long long)extra);
	return 0;
}

int virtio_decode(const struct virtio_device *vd, struct mig_cursor *c, struct virtio_saved *out)
{
	memset(out, 0, sizeof(*out));
	if (vd->active)
		return vmm_fail("%s: cannot load state into a running device", vd->name);
	uint16_t device_id = mig_get_u16(c), nqueues = mig_get_u16(c);
	out->host_features = mig_get_u64(c);
	out->driver_features = mig_get_u64(c);
	out->status = mig_get_u8(c);
	out->config_generation = mig_get_u32(c);
	if (c->short_read)
		return mig_cursor_finish(c);
	if (device_id != vd->device_id)
		return vmm_fail("%s: virtio device %u in the stream, %u here", vd->name, device_id, vd->device_id);
	if (nqueues != vd->nqueues)
		return vmm_fail("%s: %u queues in the stream, %u here", vd->name, nqueues, vd->nqueues);
	out->nqueues = nqueues;
	for (unsigned q = 0; q < nqueues; q++)
		if (read_queue(vd, q, c, &out->vqs[q]))
			return -1;
	if (check_features(vd, out))
		return -1;
	bool live = virtio_status_live(out->status);
	for (unsigned q = 0; q < nqueues; q++)
		if (check_queue(vd, q, &out->vqs[q], live))
			return -1;
	return 0;
}

void virtio_apply(struct virtio_device *vd, const struct virtio_saved *s)
{
	pthread_mutex_lock(&vd->lock);
	vd->host_features = s->host_features;
	vd->driver_features = s->driver_features;
	vd->status = s->status;
	vd->config_generation = s->config_generation;
	for (unsigned q = 0; q < vd->nqueues && q < s->nqueues; q++) {
		const struct virtio_saved_queue *x = &s->vqs[q];
		struct virtqueue *vq = &vd->vqs[q];
		vq_stop(vq);
		vq_reset(vq, (uint16_t)q, vd->queue_max_size);
		vq->size = x->size;
		vq->enabled = x->enabled;
		vq->msix_vector = x->msix_vector;
		vq->desc_gpa = x->desc_gpa;
		vq->avail_gpa = x->avail_gpa;
		vq->used_gpa = x->used_gpa;
		vq->last_avail = x->last_avail;
		vq->used_idx = x->used_idx;
		vq->signalled_used = x->signalled_used;
		vq->signalled_used_valid = x->signalled_used_valid;
		vq->event_idx = x->event_idx;
		vd->kicks_taken[q] = false;
	}
	pthread_mutex_unlock(&vd->lock);
}

int virtio_load(struct virtio_device *vd, struct mig_cursor *c)
{
	struct virtio_saved s;
	if (virtio_decode(vd, c, &s))
		return -1;
	virtio_apply(vd, &s);
	return 0;
}
