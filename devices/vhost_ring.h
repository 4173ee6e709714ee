/* What the two vhost backends (vhost-net in the kernel, vhost-user in
 * another process) share: one virtqueue handed over as a vring, and taken
 * back where the backend stopped.
 *
 * A vring is the queue's size, the index to start popping from, the host
 * addresses of its three areas in this process, and the queue's eventfds:
 * the ioeventfd of its notify address (kick) and the irqfd eventfd of its
 * MSI-X vector (call). */
#ifndef VMM_VHOST_RING_H
#define VMM_VHOST_RING_H

#include <stdbool.h>
#include <stdint.h>

#define VHOST_RING_MAX_SIZE 32768 /* virtio: Queue Size is at most 32768 */

struct virtio_device;
struct virtqueue;

struct vhost_vring {
	uint16_t size;
	uint16_t last_avail;       /* where the backend starts popping */
	void *desc, *avail, *used; /* host addresses of the rings */
	int kick_fd, call_fd;
};

/* The checks a backend would make with a bare EINVAL, with a message naming
 * `who` ("vhost-net: start") and the vring: a size that is not a power of
 * two in 1..VHOST_RING_MAX_SIZE, rings missing or misaligned (desc 16, avail
 * 2, used 4 bytes), no kick eventfd. */
int vhost_vring_check(const struct vhost_vring *r, const char *who, unsigned idx);

/* The vring of queue q of vd, which must be started (its rings mapped),
 * with the transport's eventfds; -1 with a message when it is not started
 * or has no ioeventfd, or (need_call) no interrupt eventfd. Takes q's kicks
 * from the transport (virtio_take_kicks): the backend polls them now. */
int vhost_vring_of_queue(struct virtio_device *vd, unsigned q, bool need_call, struct vhost_vring *out);

/* A backend stopped the queue at last_avail (every chain before it
 * completed): the queue carries on from there, its used index as the
 * backend left it in guest memory. Gives the kicks back to the transport. */
void vhost_vring_stopped(struct virtio_device *vd, unsigned q, uint16_t last_avail);

#endif
