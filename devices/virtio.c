#include "virtio.h"

#include <stdio.h>
#include <string.h>

#include "err.h"

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
			vmm_fail_context("%s: queue %u", vd->name, q);
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
