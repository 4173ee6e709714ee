/* vhost-net: the kernel datapath for one queue pair (vring 0 = rx, 1 = tx)
 * of a virtio-net device. The guest's rings, its memory table and the
 * ioeventfd/irqfd pair of each queue are given to the kernel, which then
 * moves packets between the rings and the TAP queue fd without userspace.
 *
 * The fd is bound to this process's memory by VHOST_SET_OWNER (done in
 * vhost_net_open); another process can use it only after
 * VHOST_RESET_OWNER. */
#ifndef VMM_VHOST_NET_H
#define VMM_VHOST_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "memory.h"
#include "vhost_ring.h"

struct vhost_net {
	int fd;
	uint64_t features;  /* VHOST_GET_FEATURES */
	bool running[2];
	const uint8_t *mem_host; /* the guest RAM the kernel's table maps, or NULL */
	uint64_t mem_size;
};

/* Opens /dev/vhost-net (fd < 0) or adopts fd, then VHOST_SET_OWNER and
 * VHOST_GET_FEATURES. A missing /dev/vhost-net gives a message saying so
 * (module vhost_net not loaded?). On failure an fd we opened is closed; an
 * adopted fd stays the caller's. v->fd is -1 after a failure or a close. */
int vhost_net_open(struct vhost_net *v, int fd);
void vhost_net_close(struct vhost_net *v);

/* VHOST_SET_MEM_TABLE (every region of guest RAM: gpa, size, mem->host +
 * offset), unless the kernel has that table already: it may be set ahead,
 * when the VM's RAM is mapped (a migration target does it before the
 * freeze, where the ioctl took over a millisecond). */
int vhost_net_set_memory(struct vhost_net *v, const struct guest_mem *mem);
/* VHOST_SET_FEATURES (negotiated virtio features the kernel handles; must be
 * a subset of v->features) and vhost_net_set_memory. */
int vhost_net_setup(struct vhost_net *v, uint64_t features, const struct guest_mem *mem);
/* Starts vring idx (0 rx, 1 tx): num, base, addresses, kick, call, then
 * VHOST_NET_SET_BACKEND with tap_fd. Refused before any ioctl: idx > 1, a
 * vring that vhost_vring_check refuses, tap_fd < 0, a vring already started.
 * call_fd -1 means no interrupts. */
int vhost_net_start(struct vhost_net *v, unsigned idx, const struct vhost_vring *r, int tap_fd);
/* Detaches the backend and returns where the kernel stopped
 * (VHOST_GET_VRING_BASE): the next avail index to pop. Refused for a vring
 * that is not started (see v->running). */
int vhost_net_stop(struct vhost_net *v, unsigned idx, uint16_t *last_avail);

#endif
