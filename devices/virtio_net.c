/* virtio-net device: feature negotiation, config space, the userspace TAP
 * datapath, the control queue, and the vhost-net set-up. See virtio_net.h.
 *
 * Userspace datapath, per active queue pair, on the main thread:
 * - rx: the TAP fd is watched for readable while the rx ring has buffers.
 *   A packet is read (12-byte header + frame) into a bounce buffer and
 *   copied into one chain, or with MRG_RXBUF into as many chains as it
 *   needs (num_buffers set in the first). If the ring runs out mid-packet,
 *   the chains are given back, the packet is kept, reading stops and rx
 *   notifications are enabled; the driver's rx kick resumes it. No drop.
 * - tx: on a kick, chains are popped and their device-readable part (header
 *   + frame) written to the TAP as it is. EAGAIN keeps the chain and waits
 *   for the TAP to be writable; after TX_BUDGET packets the work yields to
 *   the loop the same way (a writable TAP fires at once).
 * - a driver error (vq_pop -1) marks the device NEEDS_RESET and stops its
 *   datapath: no more guest memory is touched until the driver resets it.
 * The control queue is always handled here, also with vhost. */
#include "virtio_net.h"

#include <errno.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "err.h"
#include "loop.h"
#include "tap.h"
#include "vhost_net.h"

/* Feature bits (5.1.3). */
#define NET_F_CSUM        0
#define NET_F_GUEST_CSUM  1
#define NET_F_MAC         5
#define NET_F_GUEST_TSO4  7
#define NET_F_GUEST_TSO6  8
#define NET_F_GUEST_ECN   9
#define NET_F_GUEST_UFO   10
#define NET_F_HOST_TSO4   11
#define NET_F_HOST_TSO6   12
#define NET_F_HOST_ECN    13
#define NET_F_HOST_UFO    14
#define NET_F_MRG_RXBUF   15
#define NET_F_STATUS      16
#define NET_F_CTRL_VQ     17
#define NET_F_MQ          22

#define NET_S_LINK_UP 1

/* Control queue (5.1.6.5). */
#define NET_CTRL_MQ 4
#define NET_CTRL_MQ_VQ_PAIRS_SET 0
#define NET_OK  0
#define NET_ERR 1

#define NET_HDR_LEN TAP_VNET_HDR_LEN /* struct virtio_net_hdr_mrg_rxbuf */
#define NET_NUM_BUFFERS_OFF 10
/* The largest packet a TAP hands us: 64 KiB of GSO payload plus headers. */
#define RX_BUF_LEN (NET_HDR_LEN + 65536 + 1024)
#define TX_BUDGET 256
#define RX_BUDGET 256
#define TX_IOV_CAP 256
#define CTRL_IOV_CAP 64
/* Config space: mac[6], status, max_virtqueue_pairs, mtu (mtu present but
 * VIRTIO_NET_F_MTU not offered, so drivers do not read it). */
#define NET_CONFIG_SIZE 12

/* Features vhost-net must also support for us to offer them with vhost. */
#define VHOST_HANDLED (VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX) | VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC) | \
		       VIRTIO_BIT(NET_F_MRG_RXBUF) | VIRTIO_BIT(VIRTIO_F_VERSION_1))

struct net_pair {
	struct virtio_net *n;
	unsigned index;
	int tap_fd;
	struct loop_fd *watch;
	bool enabled;      /* in use (pair < active_pairs) */
	bool rx_waiting;   /* out of rx buffers: waiting for an rx kick */
	bool tx_backlog;   /* tx stopped early: resume when the TAP is writable */
	bool rx_pending;   /* rxbuf holds a packet not yet delivered */
	size_t rx_len;
	uint8_t *rxbuf;
	struct iovec *rx_iov;   /* queue_max_size entries */
	uint16_t *rx_heads;     /* chains of the packet being delivered */
	uint32_t *rx_lens;
	struct iovec tx_iov[TX_IOV_CAP];
	struct vhost_net vhost;
	bool vhost_open;
	bool vhost_running;
};

struct virtio_net {
	struct virtio_device vd;
	char name[32];
	uint8_t config[NET_CONFIG_SIZE];
	unsigned pairs;
	unsigned active_pairs;
	bool vhost;
	bool running;      /* datapath started (activate) and not broken */
	unsigned tap_offloads; /* TUN_F_* the TAP accepted at probe */
	struct tap tap;
	struct uv_loop_s *loop;
	struct net_pair pair[VIRTIO_NET_MAX_PAIRS];
	struct virtio_net_stats st;
};

static inline unsigned rxq(unsigned pair) { return 2 * pair; }
static inline unsigned txq(unsigned pair) { return 2 * pair + 1; }
static inline unsigned ctrlq(const struct virtio_net *n) { return 2 * n->pairs; }

/* ---- helpers on iovecs ---- */

static size_t iov_copy_to(const struct iovec *iov, unsigned n, size_t off, const void *src, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t k = iov[i].iov_len - off;
		if (k > len - done)
			k = len - done;
		memcpy((uint8_t *)iov[i].iov_base + off, (const uint8_t *)src + done, k);
		done += k;
		off = 0;
	}
	return done;
}

static size_t iov_copy_from(const struct iovec *iov, unsigned n, void *dst, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		size_t k = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;
		memcpy((uint8_t *)dst + done, iov[i].iov_base, k);
		done += k;
	}
	return done;
}

/* ---- datapath state ---- */

static void device_broken(struct virtio_net *n, const char *why);

static void pair_update_watch(struct net_pair *p)
{
	struct virtio_net *n = p->n;
	if (!p->watch)
		return;
	int ev = 0;
	if (n->running && p->enabled) {
		if (!p->rx_waiting && n->vd.vqs[rxq(p->index)].started)
			ev |= LOOP_READABLE;
		if (p->tx_backlog)
			ev |= LOOP_WRITABLE;
	}
	if (loop_fd_set(p->watch, ev))
		fprintf(stderr, "vmm: %s: pair %u: %s\n", n->name, p->index, vmm_error());
}

static void stop_all_watches(struct virtio_net *n)
{
	for (unsigned i = 0; i < n->pairs; i++)
		if (n->pair[i].watch)
			loop_fd_set(n->pair[i].watch, 0);
}

static void device_broken(struct virtio_net *n, const char *why)
{
	n->running = false;
	stop_all_watches(n);
	virtio_needs_reset(&n->vd, why);
}

static void signal_if_needed(struct virtio_net *n, unsigned q)
{
	if (vq_should_signal(&n->vd.vqs[q]))
		virtio_signal_queue(&n->vd, q);
}

/* ---- tx ---- */

static void pair_tx(struct net_pair *p)
{
	struct virtio_net *n = p->n;
	struct virtqueue *vq = &n->vd.vqs[txq(p->index)];
	if (!n->running || !p->enabled || !vq->started)
		return;
	struct vq_chain c = { .iov = p->tx_iov, .cap = TX_IOV_CAP };
	unsigned budget = TX_BUDGET;
	uint16_t filled = 0;
	p->tx_backlog = false;
	vq_set_notification(vq, false);
	for (;;) {
		if (budget == 0) {
			p->tx_backlog = true; /* yield: the writable TAP brings us back */
			break;
		}
		int r = vq_pop(vq, &c);
		if (r < 0) {
			char why[1024];
			snprintf(why, sizeof(why), "%s", vmm_error());
			vq_flush(vq, filled);
			device_broken(n, why);
			return;
		}
		if (r == 0) {
			if (!vq_set_notification(vq, true))
				break;
			vq_set_notification(vq, false);
			continue;
		}
		budget--;
		if (c.out_len < NET_HDR_LEN || c.nout == 0) {
			n->st.tx_errors++;
		} else {
			ssize_t w = writev(p->tap_fd, c.iov, (int)c.nout);
			if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				vq_unpop(vq, 1);
				p->tx_backlog = true;
				break;
			}
			if (w < 0) {
				n->st.tx_errors++;
			} else {
				n->st.tx_packets++;
				n->st.tx_bytes += c.out_len - NET_HDR_LEN;
			}
		}
		vq_fill(vq, filled++, c.head, 0);
	}
	if (filled) {
		vq_flush(vq, filled);
		signal_if_needed(n, txq(p->index));
	}
	pair_update_watch(p);
}

/* ---- rx ---- */

enum { RX_DONE, RX_DROPPED, RX_NO_BUFFERS, RX_BROKEN };

/* Delivers the pending packet. On RX_NO_BUFFERS, *tried is the number of
 * chains popped and given back. */
static int rx_deliver(struct net_pair *p, unsigned *tried)
{
	struct virtio_net *n = p->n;
	struct virtqueue *vq = &n->vd.vqs[rxq(p->index)];
	bool mrg = virtio_has_feature(&n->vd, NET_F_MRG_RXBUF);
	struct vq_chain c = { .iov = p->rx_iov, .cap = n->vd.queue_max_size };
	size_t off = 0;
	uint16_t nbufs = 0;
	uint8_t *nb[2] = { NULL, NULL }; /* num_buffers bytes in the first chain */
	*tried = 0;
	while (off < p->rx_len) {
		int r = vq_pop(vq, &c);
		if (r < 0) {
			char why[1024];
			snprintf(why, sizeof(why), "%s", vmm_error());
			if (nbufs)
				vq_unpop(vq, nbufs);
			device_broken(n, why);
			return RX_BROKEN;
		}
		if (r == 0) {
			if (nbufs)
				vq_unpop(vq, nbufs);
			*tried = nbufs;
			return RX_NO_BUFFERS;
		}
		const struct iovec *in = c.iov + c.nout;
		if (nbufs == 0) {
			if (c.in_len < NET_HDR_LEN) {
				vq_unpop(vq, 1);
				device_broken(n, "rx buffer smaller than the 12-byte virtio-net header");
				return RX_BROKEN;
			}
			/* find the two num_buffers bytes, wherever the header is split */
			for (unsigned b = 0; b < 2; b++) {
				size_t o = NET_NUM_BUFFERS_OFF + b;
				for (unsigned i = 0; i < c.nin; i++) {
					if (o < in[i].iov_len) {
						nb[b] = (uint8_t *)in[i].iov_base + o;
						break;
					}
					o -= in[i].iov_len;
				}
			}
		}
		size_t want = p->rx_len - off;
		size_t k = iov_copy_to(in, c.nin, 0, p->rxbuf + off, want);
		p->rx_heads[nbufs] = c.head;
		p->rx_lens[nbufs] = (uint32_t)k;
		nbufs++;
		off += k;
		if (off < p->rx_len && !mrg) {
			/* without mergeable buffers a packet must fit one chain */
			vq_fill(vq, 0, c.head, 0);
			vq_flush(vq, 1);
			n->st.rx_dropped++;
			return RX_DROPPED;
		}
		if (k == 0 && off < p->rx_len) {
			/* a writable part of 0 bytes (in_len 0): nothing to fill */
			if (nbufs)
				vq_unpop(vq, nbufs);
			device_broken(n, "rx buffer without a device-writable part");
			return RX_BROKEN;
		}
	}
	uint16_t num = mrg ? nbufs : 1;
	*nb[0] = (uint8_t)(num & 0xff);
	*nb[1] = (uint8_t)(num >> 8);
	for (uint16_t i = 0; i < nbufs; i++)
		vq_fill(vq, i, p->rx_heads[i], p->rx_lens[i]);
	vq_flush(vq, nbufs);
	n->st.rx_packets++;
	n->st.rx_bytes += p->rx_len - NET_HDR_LEN;
	return RX_DONE;
}

/* Reads packets from the TAP and delivers them while the guest has buffers;
 * out of buffers, keeps the packet and sleeps until the guest kicks rx. */
static void pair_rx(struct net_pair *p)
{
	struct virtio_net *n = p->n;
	struct virtqueue *vq = &n->vd.vqs[rxq(p->index)];
	if (!n->running || !p->enabled || !vq->started || p->rx_waiting)
		return;
	bool delivered = false;
	for (unsigned budget = RX_BUDGET; budget > 0; budget--) {
		if (!p->rx_pending) {
			ssize_t r = read(p->tap_fd, p->rxbuf, RX_BUF_LEN);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				break; /* EAGAIN, or a detached queue (EBADFD) */
			if (r < NET_HDR_LEN || r == RX_BUF_LEN) {
				n->st.rx_dropped++; /* runt, or possibly truncated */
				continue;
			}
			p->rx_len = (size_t)r;
			p->rx_pending = true;
		}
		unsigned tried;
		int d = rx_deliver(p, &tried);
		if (d == RX_BROKEN)
			return;
		if (d == RX_NO_BUFFERS && tried > 0 && tried >= vq->size) {
			/* even a full ring of these buffers is too small */
			n->st.rx_dropped++;
			p->rx_pending = false;
			continue;
		}
		if (d == RX_NO_BUFFERS) {
			/* enable kicks, then look again: the driver may have added
			 * buffers before seeing the flag */
			vq_set_notification(vq, true);
			if (vq_pending(vq) > tried) {
				vq_set_notification(vq, false);
				budget++;
				continue;
			}
			p->rx_waiting = true;
			break;
		}
		p->rx_pending = false;
		delivered = true; /* RX_DONE, or RX_DROPPED which used a chain */
	}
	if (delivered)
		signal_if_needed(n, rxq(p->index));
	pair_update_watch(p);
}

static void pair_rx_kick(struct net_pair *p)
{
	struct virtio_net *n = p->n;
	if (!n->running || !p->enabled)
		return;
	if (p->rx_waiting) {
		p->rx_waiting = false;
		vq_set_notification(&n->vd.vqs[rxq(p->index)], false);
	}
	pair_rx(p);
}

static void on_tap(void *opaque, int events)
{
	struct net_pair *p = opaque;
	if (events < 0) {
		fprintf(stderr, "vmm: %s: pair %u: polling the TAP failed (%d)\n", p->n->name, p->index, events);
		return;
	}
	if (events & LOOP_WRITABLE)
		pair_tx(p);
	if (events & LOOP_READABLE)
		pair_rx(p);
}

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

static void vhost_pair_stop(struct virtio_net *n, struct net_pair *p)
{
	if (!p->vhost_running)
		return;
	for (unsigned idx = 0; idx < 2; idx++) {
		unsigned q = idx == 0 ? rxq(p->index) : txq(p->index);
		uint16_t last = n->vd.vqs[q].last_avail;
		if (!p->vhost.running[idx])
			; /* never started (a start failed half-way) */
		else if (vhost_net_stop(&p->vhost, idx, &last))
			fprintf(stderr, "vmm: %s: pair %u: %s\n", n->name, p->index, vmm_error());
		else
			vring_save(&n->vd.vqs[q], last);
		virtio_take_kicks(&n->vd, q, false);
	}
	p->vhost_running = false;
}

static int vhost_pair_start(struct virtio_net *n, struct net_pair *p)
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
		if (vhost_net_start(&p->vhost, idx, &r, p->tap_fd))
			return vmm_fail_context("pair %u", p->index);
	}
	return 0;
}

/* ---- pairs ---- */

static int pair_enable(struct virtio_net *n, struct net_pair *p, bool on)
{
	if (p->enabled == on)
		return 0;
	if (!on) {
		p->enabled = false;
		if (n->vhost)
			vhost_pair_stop(n, p);
		else
			pair_update_watch(p);
		if (n->tap.nqueues > 1 && tap_set_queue_enabled(&n->tap, p->index, false))
			fprintf(stderr, "vmm: %s: %s\n", n->name, vmm_error());
		return 0;
	}
	if (n->tap.nqueues > 1 && tap_set_queue_enabled(&n->tap, p->index, true))
		return -1;
	p->enabled = true;
	if (n->vhost) {
		if (vhost_pair_start(n, p)) {
			vhost_pair_stop(n, p);
			p->enabled = false;
			return -1;
		}
		return 0;
	}
	p->rx_waiting = false;
	vq_set_notification(&n->vd.vqs[rxq(p->index)], false);
	pair_update_watch(p);
	pair_tx(p); /* anything queued while the pair was off */
	return 0;
}

static int set_active_pairs(struct virtio_net *n, unsigned k)
{
	/* stop first, then start, so a failure leaves fewer pairs, never more */
	for (unsigned i = k; i < n->pairs; i++)
		pair_enable(n, &n->pair[i], false);
	for (unsigned i = 0; i < k; i++)
		if (pair_enable(n, &n->pair[i], true))
			return -1;
	n->active_pairs = k;
	return 0;
}

/* ---- control queue ---- */

static void ctrl_process(struct virtio_net *n)
{
	struct virtqueue *vq = &n->vd.vqs[ctrlq(n)];
	if (!n->running || !vq->started)
		return;
	struct iovec iov[CTRL_IOV_CAP];
	struct vq_chain c = { .iov = iov, .cap = CTRL_IOV_CAP };
	bool used = false;
	for (unsigned budget = 64; budget > 0; budget--) {
		int r = vq_pop(vq, &c);
		if (r < 0) {
			char why[1024];
			snprintf(why, sizeof(why), "%s", vmm_error());
			device_broken(n, why);
			return;
		}
		if (r == 0)
			break;
		if (c.in_len < 1) {
			vq_unpop(vq, 1);
			device_broken(n, "control command without a writable status byte");
			return;
		}
		uint8_t cmd[64];
		size_t len = iov_copy_from(c.iov, c.nout, cmd, sizeof(cmd));
		uint8_t ack = NET_ERR;
		if (len >= 2 && cmd[0] == NET_CTRL_MQ && cmd[1] == NET_CTRL_MQ_VQ_PAIRS_SET &&
		    virtio_has_feature(&n->vd, NET_F_MQ) && len >= 4) {
			unsigned k = cmd[2] | (cmd[3] << 8);
			if (k >= 1 && k <= n->pairs) {
				if (set_active_pairs(n, k) == 0)
					ack = NET_OK;
				else
					fprintf(stderr, "vmm: %s: %u queue pairs: %s\n", n->name, k, vmm_error());
			}
		}
		iov_copy_to(c.iov + c.nout, c.nin, 0, &ack, 1);
		vq_push(vq, c.head, 1);
		used = true;
		if (!n->running)
			return;
	}
	if (used)
		signal_if_needed(n, ctrlq(n));
}

/* ---- virtio_device ops ---- */

static void net_config_read(struct virtio_device *vd, uint32_t offset, void *data, unsigned len)
{
	struct virtio_net *n = vd->opaque;
	if (offset >= NET_CONFIG_SIZE || len > NET_CONFIG_SIZE - offset) {
		memset(data, 0, len);
		return;
	}
	memcpy(data, n->config + offset, len);
}

static void net_config_write(struct virtio_device *vd, uint32_t offset, const void *data, unsigned len)
{
	/* With VERSION_1 the MAC is read-only; nothing else is writable. */
	(void)vd, (void)offset, (void)data, (void)len;
}

static unsigned guest_offloads(const struct virtio_device *vd)
{
	unsigned f = 0;
	if (!virtio_has_feature(vd, NET_F_GUEST_CSUM))
		return 0;
	f |= TUN_F_CSUM;
	if (virtio_has_feature(vd, NET_F_GUEST_TSO4))
		f |= TUN_F_TSO4;
	if (virtio_has_feature(vd, NET_F_GUEST_TSO6))
		f |= TUN_F_TSO6;
	if ((f & (TUN_F_TSO4 | TUN_F_TSO6)) && virtio_has_feature(vd, NET_F_GUEST_ECN))
		f |= TUN_F_TSO_ECN;
	if (virtio_has_feature(vd, NET_F_GUEST_UFO))
		f |= TUN_F_UFO;
	return f;
}

static void net_stop(struct virtio_net *n)
{
	n->running = false;
	for (unsigned i = 0; i < n->pairs; i++) {
		struct net_pair *p = &n->pair[i];
		if (n->vhost)
			vhost_pair_stop(n, p);
		if (p->watch)
			loop_fd_set(p->watch, 0);
		if (p->rx_pending)
			n->st.rx_dropped++; /* offloads may change with the next driver */
		p->rx_pending = false;
		p->rx_waiting = false;
		p->tx_backlog = false;
		p->enabled = false;
	}
}

static int net_activate(struct virtio_device *vd)
{
	struct virtio_net *n = vd->opaque;
	if (!virtio_has_feature(vd, VIRTIO_F_VERSION_1))
		return vmm_fail("the driver did not accept VIRTIO_F_VERSION_1");
	if (!vd->mem)
		return vmm_fail("no guest memory");
	if (tap_set_offloads(&n->tap, guest_offloads(vd) & n->tap_offloads))
		return -1;
	if (!n->vhost && n->loop) {
		for (unsigned i = 0; i < n->pairs; i++) {
			struct net_pair *p = &n->pair[i];
			if (!p->watch && !(p->watch = loop_fd_watch(n->loop, p->tap_fd, 0, on_tap, p)))
				return -1;
		}
	} else if (!n->vhost) {
		return vmm_fail("no event loop");
	}
	if (n->vhost) {
		uint64_t f = vd->driver_features & VHOST_HANDLED;
		for (unsigned i = 0; i < n->pairs; i++)
			if (vhost_net_setup(&n->pair[i].vhost, f, vd->mem))
				return vmm_fail_context("pair %u", i);
	}
	n->running = true;
	n->active_pairs = 0;
	if (set_active_pairs(n, 1)) {
		net_stop(n);
		return -1;
	}
	/* pairs beyond the first stay detached until VQ_PAIRS_SET */
	for (unsigned i = 1; i < n->pairs; i++)
		if (n->tap.nqueues > 1)
			tap_set_queue_enabled(&n->tap, i, false);
	return 0;
}

static void net_reset(struct virtio_device *vd)
{
	net_stop(vd->opaque);
}

static void net_queue_notify(struct virtio_device *vd, unsigned q)
{
	struct virtio_net *n = vd->opaque;
	if (!n->running || q > ctrlq(n))
		return;
	if (q == ctrlq(n))
		ctrl_process(n);
	else if (n->vhost)
		return; /* the kernel polls those kicks */
	else if (q & 1)
		pair_tx(&n->pair[q / 2]);
	else
		pair_rx_kick(&n->pair[q / 2]);
}

static const struct virtio_device_ops net_ops = {
	.config_read = net_config_read,
	.config_write = net_config_write,
	.activate = net_activate,
	.reset = net_reset,
	.queue_notify = net_queue_notify,
};

/* ---- construction ---- */

static uint64_t offered_features(const struct virtio_net *n, const uint8_t mac[6])
{
	uint64_t f = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX) |
		     VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC) | VIRTIO_BIT(NET_F_MRG_RXBUF) |
		     VIRTIO_BIT(NET_F_STATUS) | VIRTIO_BIT(NET_F_CTRL_VQ);
	static const uint8_t zero[6];
	if (memcmp(mac, zero, 6))
		f |= VIRTIO_BIT(NET_F_MAC);
	if (n->pairs > 1)
		f |= VIRTIO_BIT(NET_F_MQ);
	/* guest -> TAP: the vnet header carries checksum and GSO requests
	 * that the kernel completes in software if it must */
	f |= VIRTIO_BIT(NET_F_CSUM) | VIRTIO_BIT(NET_F_HOST_TSO4) | VIRTIO_BIT(NET_F_HOST_TSO6) |
	     VIRTIO_BIT(NET_F_HOST_ECN);
	/* TAP -> guest: only what the TAP can be told to hand us */
	unsigned t = n->tap_offloads;
	if (t & TUN_F_CSUM) {
		f |= VIRTIO_BIT(NET_F_GUEST_CSUM);
		if (t & TUN_F_TSO4)
			f |= VIRTIO_BIT(NET_F_GUEST_TSO4);
		if (t & TUN_F_TSO6)
			f |= VIRTIO_BIT(NET_F_GUEST_TSO6);
		if ((t & TUN_F_TSO_ECN) && (t & (TUN_F_TSO4 | TUN_F_TSO6)))
			f |= VIRTIO_BIT(NET_F_GUEST_ECN);
		if (t & TUN_F_UFO)
			f |= VIRTIO_BIT(NET_F_GUEST_UFO) | VIRTIO_BIT(NET_F_HOST_UFO);
	}
	return f;
}

struct virtio_net *virtio_net_new(const struct virtio_net_options *cfg, const struct guest_mem *mem,
				  struct uv_loop_s *loop)
{
	const char *name = cfg->name ? cfg->name : "net";
	if (cfg->queue_pairs < 1 || cfg->queue_pairs > VIRTIO_NET_MAX_PAIRS) {
		vmm_fail("%s: %u queue pairs (1..%d)", name, cfg->queue_pairs, VIRTIO_NET_MAX_PAIRS);
		return NULL;
	}
	uint16_t qsize = cfg->queue_size ? cfg->queue_size : 256;
	if (qsize & (qsize - 1) || qsize > VQ_MAX_SIZE) {
		vmm_fail("%s: queue size %u is not a power of 2 up to %d", name, qsize, VQ_MAX_SIZE);
		return NULL;
	}
	if (!cfg->ifname && !cfg->tap_fds) {
		vmm_fail("%s: neither a TAP name nor TAP fds", name);
		return NULL;
	}
	struct virtio_net *n = calloc(1, sizeof(*n));
	if (!n) {
		vmm_fail("%s: out of memory", name);
		return NULL;
	}
	snprintf(n->name, sizeof(n->name), "%s", name);
	n->pairs = cfg->queue_pairs;
	n->vhost = cfg->vhost;
	n->loop = loop;
	for (unsigned i = 0; i < TAP_MAX_QUEUES; i++)
		n->tap.fds[i] = -1;

	int rc = cfg->tap_fds ? tap_adopt(&n->tap, cfg->tap_fds, n->pairs) : tap_open(&n->tap, cfg->ifname, n->pairs);
	if (rc) {
		vmm_fail_context("%s", name);
		free(n);
		return NULL;
	}
	if (tap_probe_offloads(&n->tap, &n->tap_offloads)) {
		vmm_fail_context("%s", name);
		goto fail;
	}
	for (unsigned i = 0; i < n->pairs; i++) {
		struct net_pair *p = &n->pair[i];
		p->n = n;
		p->index = i;
		p->tap_fd = n->tap.fds[i];
		p->vhost.fd = -1;
		if (n->vhost) {
			if (vhost_net_open(&p->vhost, cfg->vhost_fds ? cfg->vhost_fds[i] : -1)) {
				vmm_fail_context("%s: pair %u", name, i);
				goto fail;
			}
			p->vhost_open = true;
			continue;
		}
		p->rxbuf = malloc(RX_BUF_LEN);
		p->rx_iov = calloc(qsize, sizeof(*p->rx_iov));
		p->rx_heads = calloc(qsize, sizeof(*p->rx_heads));
		p->rx_lens = calloc(qsize, sizeof(*p->rx_lens));
		if (!p->rxbuf || !p->rx_iov || !p->rx_heads || !p->rx_lens) {
			vmm_fail("%s: out of memory", name);
			goto fail;
		}
	}

	uint64_t features = offered_features(n, cfg->mac);
	if (n->vhost)
		for (unsigned i = 0; i < n->pairs; i++)
			features &= ~VHOST_HANDLED | n->pair[i].vhost.features;

	memcpy(n->config, cfg->mac, 6);
	n->config[6] = NET_S_LINK_UP;
	n->config[7] = 0;
	n->config[8] = (uint8_t)n->pairs;
	n->config[9] = 0;
	n->config[10] = 1500 & 0xff;
	n->config[11] = 1500 >> 8;

	virtio_init(&n->vd, n->name, VIRTIO_ID_NET, &net_ops, n, 2 * n->pairs + 1, qsize, NET_CONFIG_SIZE);
	n->vd.host_features = features;
	n->vd.mem = mem;
	n->vd.loop = loop;
	return n;
fail:
	virtio_net_free(n);
	return NULL;
}

void virtio_net_free(struct virtio_net *n)
{
	if (!n)
		return;
	if (n->vd.ops) {
		if (n->vd.active)
			net_stop(n);
		virtio_destroy(&n->vd);
	}
	for (unsigned i = 0; i < n->pairs; i++) {
		struct net_pair *p = &n->pair[i];
		loop_fd_close(p->watch);
		if (p->vhost_open)
			vhost_net_close(&p->vhost);
		free(p->rxbuf);
		free(p->rx_iov);
		free(p->rx_heads);
		free(p->rx_lens);
	}
	tap_close(&n->tap);
	free(n);
}

struct virtio_device *virtio_net_device(struct virtio_net *n)
{
	return &n->vd;
}

const char *virtio_net_ifname(const struct virtio_net *n)
{
	return n->tap.ifname;
}

void virtio_net_get_stats(const struct virtio_net *n, struct virtio_net_stats *s)
{
	*s = n->st;
	s->active_pairs = n->running || n->vd.active ? n->active_pairs : 0;
}
