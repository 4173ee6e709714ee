/* The "vhost-user-blk" device type: a virtio-blk disk over virtio-pci whose
 * queues another process serves (a vhost-user backend such as
 * qemu-storage-daemon, vhost_user.h). The guest's kicks (ioeventfds) and
 * interrupts (irqfds) go straight between KVM and the backend; this process
 * sets the rings up and takes them back, and never sees a request.
 *
 * Configuration (the fields table in vhost_user_blk.c; vm:add_disk with
 * vhost_user = SOCKET in Lua):
 *   socket      the backend's UNIX socket
 *   queues      1..VIRTIO_BLK_MAX_QUEUES request queues (at most what the
 *               backend's GET_QUEUE_NUM allows)
 *   queue_size  a power of 2, 64..1024
 * The capacity, geometry, block size and limits come from the backend's
 * configuration space (GET_CONFIG), and the features from GET_FEATURES.
 *
 * A backend that breaks (hangs up, answers nonsense, times out) puts the
 * device in NEEDS_RESET with one logged line; the VM and the other devices
 * run on. A guest reset of the device then reconnects.
 *
 * Migration, the backend staying (the source frees it for the target):
 * at the freeze the source stops every ring (GET_VRING_BASE: the backend
 * completes what it popped) and disconnects, since a backend serves one
 * front end at a time; the indices travel in the state. The target connects
 * when it starts the VM and sets everything up again from them. A rollback
 * reconnects the source and restarts its rings.
 *
 * Migration, the backend handed over (backend_transfer): the connection,
 * the queues' eventfds and the inflight region (if any) go to the target,
 * which says nothing to the backend; the source never stops the rings.
 * The queue positions in the state: the used index from guest memory, the
 * next avail index from the inflight region where the backend keeps one
 * (INFLIGHT_SHMFD), else the used index (a restart point).
 *
 * INFLIGHT_SHMFD, where a backend offers it (qemu-storage-daemon does
 * not): the region is asked for at the first set-up (GET_INFLIGHT_FD),
 * given back at every later one (SET_INFLIGHT_FD: a restarted backend
 * resubmits what it had in flight), and dropped at a guest reset.
 *
 * State (one section, version 1): the PCI function's, then the device's
 * configuration space as the backend gave it. */
#ifndef VMM_VHOST_USER_BLK_H
#define VMM_VHOST_USER_BLK_H

#include <stdint.h>

#include "device.h"

#define VUB_SOCKET_SIZE 108 /* sun_path */

struct vhost_user_blk_config {
	char socket[VUB_SOCKET_SIZE];
	uint32_t queues;
	uint16_t queue_size;
};

extern const struct device_type vhost_user_blk_type;

#endif
