/* virtio-net's vhost-net vrings (virtio_net_priv.h): each queue pair has
 * its own vhost-net fd, whose two vrings start from the indices in the
 * virtqueues and, when stopped, write where they stopped back into them
 * (the used index read from guest memory), so that migration and a
 * restart after a failed one carry on from there. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "virtio_net_priv.h"

/* ---- vhost ---- */

static void vring_save(struct virtqueue *vq, uint16_t last_avail)
{
	vq->last_avail = last_avail;
	if (vq->used) {
		const uint8_t *u = vq->used + 2;
		vq->used_idx = (uint16_t)(u[0] | (u[1] << 8));
	}
	vq->signalled_used_valid = false;
}

/* Stops both vrings and saves where they stopped. -1 (message set, both
 * tried) if a vring could not be stopped: its indices are unknown. */
int net_vhost_pair_stop(struct virtio_net *n, struct net_pair *p)
{
	int rc = 0;
	if (!p->vhost_running)
		return 0;
	for (unsigned idx = 0; idx < 2; idx++) {
		unsigned q = idx == 0 ? rxq(p->index) : txq(p->index);
		uint16_t last = n->vd.vqs[q].last_avail;
		if (!p->vhost.running[idx])
			; /* never started (a start failed half-way) */
		else if (vhost_net_stop(&p->vhost, idx, &last))
			rc = vmm_fail_context("%s: pair %u", n->name, p->index);
		else
			vring_save(&n->vd.vqs[q], last);
		virtio_take_kicks(&n->vd, q, false);
	}
	p->vhost_running = false;
	return rc;
}

void net_vhost_pair_stop_logged(struct virtio_net *n, struct net_pair *p)
{
	if (net_vhost_pair_stop(n, p))
		fprintf(stderr, "vmm: %s\n", vmm_error());
}

int net_vhost_pair_start(struct virtio_net *n, struct net_pair *p)
{
	for (unsigned idx = 0; idx < 2; idx++) {
		unsigned q = idx == 0 ? rxq(p->index) : txq(p->index);
		struct virtqueue *vq = &n->vd.vqs[q];
		if (!vq->started)
			return vmm_fail("vhost: queue %u is not enabled", q);
		struct vhost_vring r = {
			.size = vq->size,
			.last_avail = vq->last_avail,
			.desc = vq->desc,
			.avail = vq->avail,
			.used = vq->used,
			.kick_fd = virtio_kick_fd(&n->vd, q),
			.call_fd = virtio_call_fd(&n->vd, q),
		};
		if (r.kick_fd < 0)
			return vmm_fail("vhost: queue %u has no ioeventfd", q);
		if (r.call_fd < 0)
			return vmm_fail("vhost: queue %u has no interrupt eventfd (no MSI-X vector?)", q);
		virtio_take_kicks(&n->vd, q, true);
		p->vhost_running = true;
		if (p->vhost.running[idx])
			continue; /* survived a stop that failed half-way */
		if (vhost_net_start(&p->vhost, idx, &r, p->tap_fd))
			return vmm_fail_context("pair %u", p->index);
	}
	return 0;
}
