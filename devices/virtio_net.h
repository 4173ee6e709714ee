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
	/* Migration target with tap_fds received from the source, which still
	 * uses them: the TAP is not touched (no offload probe, no queue attach
	 * or detach, no header change) until the first activation. The device
	 * offers every offload feature it could; the migrated host features
	 * and virtio_net_load say what is really in use. Ignored without
	 * tap_fds (a new TAP is opened by name as usual). */
	bool incoming;
};

struct virtio_net;
struct uv_loop_s;
struct mig_buf;

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
/* Forgets the TAP fds without closing them (before virtio_net_free), so
 * that adopted fds go back to whoever handed them in. Only before the
 * device was ever activated. */
void virtio_net_disown_tap(struct virtio_net *n);

struct virtio_device *virtio_net_device(struct virtio_net *n);
const char *virtio_net_ifname(const struct virtio_net *n);

/* Userspace backend only (with vhost the kernel moves the packets): bytes
 * exclude the 12-byte header; rx_dropped counts frames the guest could not
 * take (no mergeable buffers and a chain too small, runts, a frame pending
 * at reset), never frames waiting for buffers; tx_errors counts chains
 * shorter than the header and frames the TAP refused. */
struct virtio_net_stats {
	uint64_t rx_packets, rx_bytes, rx_dropped; /* towards the guest */
	uint64_t rx_direct; /* of rx_packets, read straight into the guest's buffers (this process's, not migrated) */
	uint64_t tx_packets, tx_bytes, tx_errors;  /* from the guest */
	unsigned active_pairs;                     /* set by the driver (MQ); 0 when not active */
};
void virtio_net_get_stats(const struct virtio_net *n, struct virtio_net_stats *s);

bool virtio_net_uses_vhost(const struct virtio_net *n);

/* The datapath's state, a few lines: per pair whether rx waits for buffers
 * or holds a packet, whether tx waits for the TAP, and both rings as
 * vq_describe() sees them. For diagnosing a stalled device (vm:net_state).
 * Returns the length written (clipped to len - 1). */
size_t virtio_net_describe(const struct virtio_net *n, char *buf, size_t len);

/* ---- Local migration ----
 *
 * Source, main thread, loop not running:
 *   virtio_net_quiesce; virtio_net_save; (backend transfer)
 *   virtio_net_backend_save + virtio_net_tap_fds; then either the commit
 *   (the process exits) or virtio_net_unquiesce.
 * Target: virtio_net_new(.tap_fds = received, .incoming = true) before the
 *   freeze; virtio_net_backend_check; virtio_net_load; after the commit the
 *   transport's resume calls virtio_activate (ops->activate), which uses
 *   the loaded state, then kicks every queue.
 *
 * Generic virtio state (status, features, queue addresses and indices) is
 * not here: virtio.c saves it from struct virtio_device. */

/* Once the VM's RAM is mapped (realize): with vhost, each pair's kernel
 * memory table is set now rather than when the driver starts the device
 * (inside a migration's freeze, for a VM that came by migration). */
int virtio_net_realize(struct virtio_net *n);

/* Stops the datapath so that the virtqueue indices in struct virtio_device
 * are final: with vhost each started vring is stopped (VHOST_GET_VRING_BASE
 * -> last_avail, the guest's used->idx -> used_idx); the userspace
 * datapath stops watching the TAP and ignores kicks. Nothing is dropped:
 * a read frame stays in its bounce buffer, packets queue in the kernel.
 * Idempotent. -1 if a vring could not be stopped: the migration must
 * fail; the device is then not quiesced (the vrings stopped so far run
 * again) but marked as needing reset, since the failed vring's index is
 * unknown. */
int virtio_net_quiesce(struct virtio_net *n);
/* After a failed migration: restarts exactly what quiesce stopped (vhost
 * vrings from the indices quiesce read) and looks at every queue once
 * (kicks that came while quiesced were ignored). No-op if not quiesced.
 * -1 if a vring could not be restarted: the device is then marked as
 * needing reset. */
int virtio_net_unquiesce(struct virtio_net *n);

/* MIG_NET payload (little-endian), written after quiesce:
 *   u32 queue_pairs     as configured; must equal the target's
 *   u32 active_pairs    0 if the device is not active (or broken), else
 *                       1..queue_pairs as the driver set them (MQ)
 *   u32 tap_supported   TUN_F_* offloads the TAP accepts (probed)
 *   u32 tap_offloads    TUN_F_* set on the TAP now
 *   u64 rx_packets, rx_bytes, rx_dropped, tx_packets, tx_bytes, tx_errors
 *   queue_pairs times:
 *     u8  flags         bit 0: a frame read from the TAP is not delivered
 *                       yet (userspace datapath; never from a broken device)
 *     u32 len           its length (12-byte header included), 0 without one
 *     len bytes
 * -1 if not quiesced. */
int virtio_net_save(struct virtio_net *n, struct mig_buf *b);
/* Checks the whole payload before changing anything (lengths, queue_pairs
 * equal, active_pairs <= queue_pairs, offload bits, a pending frame of
 * 12..66571 bytes, the bounce buffer, and only for the userspace
 * datapath), then keeps it in the struct only: no ioctl, no guest memory
 * access. -1 with a message on any error, or if the device is active.
 * The next activation then attaches `active_pairs` TAP queues (detaching
 * the others), starts vhost vrings from the restored indices, and
 * delivers the pending frames before reading the TAP. With a transferred
 * TAP (incoming) the offloads are taken as the source's. */
int virtio_net_load(struct virtio_net *n, const void *p, size_t len);
/* virtio_net_load's checks alone: 0 if it would accept p, else -1 with
 * its message; changes nothing. */
int virtio_net_load_check(struct virtio_net *n, const void *p, size_t len);

/* MIG_BACKEND payload: the TAP as the kernel shows it (read-only queries):
 *   u32 nqueues, u8 ifname[16] (NUL-padded), u32 vnet_hdr_len,
 *   nqueues x u8 attached (0 or 1)
 * Sent with the fds of virtio_net_tap_fds, in queue order. */
int virtio_net_backend_save(struct virtio_net *n, struct mig_buf *b);
/* Target: checks the received description against the adopted fds: the
 * same queue count, every fd still a queue of the described TAP (one of
 * another TAP fails naming both), header length 12, each queue attached or
 * detached as described (compared with what was found at adoption; a
 * queue pair change by the guest between the source's description and our
 * adoption fails here too, harmlessly). An fd that is no TAP queue at all
 * (a pipe, /dev/null) already failed virtio_net_new, naming what it is. */
int virtio_net_backend_check(struct virtio_net *n, const void *p, size_t len);
/* Fills fds[0..min(count, max)) with the TAP queue fds (still ours: the
 * caller passes them, never closes them) and returns count, the number
 * of queues; count > max means fds was too small. */
unsigned virtio_net_tap_fds(struct virtio_net *n, int *fds, unsigned max);

#endif
