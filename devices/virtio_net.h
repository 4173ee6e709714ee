/* virtio-net (virtio 1.x, section 5.1): MAC, link status, mergeable receive
 * buffers, checksum and segmentation offloads as far as the TAP supports
 * them, multiqueue with the control queue. Queues 2i and 2i+1 are the rx
 * and tx queues of pair i; the control queue comes last.
 *
 * Two backends behind the same device: the userspace datapath (TAP fds
 * polled on the libuv loop) and vhost-net (the kernel moves packets; this
 * file only sets it up and handles the control queue). */
#ifndef VMM_VIRTIO_NET_H
#define VMM_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "memory.h"
#include "virtio.h"

#define VIRTIO_ID_NET 1
#define VIRTIO_NET_MAX_PAIRS 8

struct virtio_net_options {
	const char *name;         /* device name for messages: "net0" */
	const char *ifname;       /* TAP to open (created if absent); NULL with tap_fds */
	const int *tap_fds;       /* adopt these queue fds instead (queue_pairs of them) */
	const int *vhost_fds;     /* adopt these vhost-net fds (vhost only) */
	uint8_t mac[6];
	unsigned queue_pairs;     /* 1..VIRTIO_NET_MAX_PAIRS */
	uint16_t queue_size;      /* 0 = 256 */
	bool vhost;
};

struct virtio_net;
struct uv_loop_s;

/* Opens (or adopts) the backend at once, so a bad configuration fails when
 * the VM is composed. `mem` must be filled by the time the driver sets
 * DRIVER_OK (the VM creates guest RAM at start); `loop` too (userspace
 * backend: each pair's TAP fd is watched on it from the first activation
 * until virtio_net_free).
 *
 * Offered: VERSION_1 (required: activation fails without it), EVENT_IDX,
 * INDIRECT_DESC, MRG_RXBUF, STATUS (link up), CTRL_VQ, MAC (only if
 * cfg->mac is not all zero), MQ (if queue_pairs > 1), CSUM, HOST_TSO4/6,
 * HOST_ECN, and GUEST_CSUM/TSO4/TSO6/ECN, HOST_UFO/GUEST_UFO as far as the
 * TAP accepts the matching TUN_F_* offloads. With vhost, EVENT_IDX,
 * INDIRECT_DESC, MRG_RXBUF and VERSION_1 only if every vhost-net fd offers
 * them. Config space: 12 bytes (mac, status, max_virtqueue_pairs, mtu
 * 1500 without VIRTIO_NET_F_MTU); writes are ignored. */
struct virtio_net *virtio_net_new(const struct virtio_net_options *cfg, const struct guest_mem *mem,
				  struct uv_loop_s *loop);
void virtio_net_free(struct virtio_net *n);

struct virtio_device *virtio_net_device(struct virtio_net *n);
const char *virtio_net_ifname(const struct virtio_net *n);

/* Userspace backend only (with vhost the kernel moves the packets): bytes
 * exclude the 12-byte header; rx_dropped counts frames the guest could not
 * take (no mergeable buffers and a chain too small, runts, a frame pending
 * at reset), never frames waiting for buffers; tx_errors counts chains
 * shorter than the header and frames the TAP refused. */
struct virtio_net_stats {
	uint64_t rx_packets, rx_bytes, rx_dropped; /* towards the guest */
	uint64_t tx_packets, tx_bytes, tx_errors;  /* from the guest */
	unsigned active_pairs;                     /* set by the driver (MQ); 0 when not active */
};
void virtio_net_get_stats(const struct virtio_net *n, struct virtio_net_stats *s);

#endif
