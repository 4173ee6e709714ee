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
		if (p->vhost.running[idx] && !vhost_net_stop(&p->vhost, idx, &last)) {
			vhost_vring_stopped(&n->vd, q, last);
			continue;
		}
		if (p->vhost.running[idx]) /* else never started (a start failed half-way) */
			rc = vmm_fail_context("%s: pair %u", n->name, p->index);
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
		struct vhost_vring r;
		if (vhost_vring_of_queue(&n->vd, q, true, &r))
			return -1;
		p->vhost_running = true;
		if (p->vhost.running[idx])
			continue; /* survived a stop that failed half-way */
		if (vhost_net_start(&p->vhost, idx, &r, p->tap_fd))
			return vmm_fail_context("pair %u", p->index);
	}
	return 0;
}
