/* virtio-net's userspace datapath (virtio_net_priv.h), per active queue
 * pair, on the main thread:
 * - rx: the TAP fd is watched for readable while the rx ring has buffers.
 *   When the ring holds room for the largest packet (one big chain, or
 *   with MRG_RXBUF enough chains), a packet is read (12-byte header +
 *   frame) straight into those guest buffers with one readv; the chains it
 *   did not need are given back. Otherwise it is read into a bounce buffer
 *   and copied into one chain, or with MRG_RXBUF into as many chains as it
 *   needs (num_buffers set in the first). If the ring runs out mid-packet,
 *   the chains are given back, the packet is kept, reading stops and rx
 *   notifications are enabled; the driver's rx kick resumes it. No drop.
 * - tx: on a kick, chains are popped and their device-readable part (header
 *   + frame) written to the TAP as it is. EAGAIN keeps the chain and waits
 *   for the TAP to be writable; after TX_BUDGET packets the work yields to
 *   the loop the same way (a writable TAP fires at once).
 * - a driver error (vq_pop -1) marks the device NEEDS_RESET and stops its
 *   datapath: no more guest memory is touched until the driver resets it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "virtio_net_priv.h"

/* ---- tx ---- */

void net_pair_tx(struct net_pair *p)
{
	struct virtio_net *n = p->n;
	struct virtqueue *vq = &n->vd.vqs[txq(p->index)];
	if (!n->running || n->quiesced || !p->enabled || !vq->started)
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
			net_device_broken(n, why);
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
		net_signal_if_needed(n, txq(p->index));
	}
	net_pair_update_watch(p);
}

/* ---- rx ---- */

enum { RX_DONE, RX_DROPPED, RX_NO_BUFFERS, RX_BROKEN, RX_EMPTY };

/* vq_pop failed after `popped` chains of this packet: they go back, the
 * device needs a reset (the driver broke the ring). */
static int rx_pop_failed(struct virtio_net *n, struct virtqueue *vq, uint16_t popped)
{
	char why[1024];
	snprintf(why, sizeof(why), "%s", vmm_error());
	if (popped)
		vq_unpop(vq, popped);
	net_device_broken(n, why);
	return RX_BROKEN;
}

/* Where the first chain's num_buffers bytes are, wherever the header is
 * split across its iovecs. */
static void find_num_buffers(const struct iovec *in, unsigned nin, uint8_t *nb[2])
{
	for (unsigned b = 0; b < 2; b++) {
		size_t o = NET_NUM_BUFFERS_OFF + b;
		nb[b] = NULL;
		for (unsigned i = 0; i < nin; i++) {
			if (o < in[i].iov_len) {
				nb[b] = (uint8_t *)in[i].iov_base + o;
				break;
			}
			o -= in[i].iov_len;
		}
	}
}

/* Reads one packet straight into the guest's buffers, if the ring holds
 * room for the largest one (RX_BUF_LEN: a TAP never returns more, so the
 * read cannot be cut short). RX_NO_BUFFERS: not enough room, nothing read
 * (the bounce path takes over); RX_EMPTY: the TAP had nothing. */
static int rx_direct(struct net_pair *p)
{
	struct virtio_net *n = p->n;
	struct virtqueue *vq = &n->vd.vqs[rxq(p->index)];
	bool mrg = virtio_has_feature(&n->vd, NET_F_MRG_RXBUF);
	struct vq_chain c = { .iov = p->rx_iov, .cap = n->vd.queue_max_size };
	uint64_t room = 0;
	uint16_t nchains = 0;
	unsigned nv = 0;
	uint8_t *nb[2] = { NULL, NULL };
	while (room < RX_BUF_LEN && (mrg || nchains == 0)) {
		int r = vq_pop(vq, &c);
		if (r < 0)
			return rx_pop_failed(n, vq, nchains);
		if (r == 0)
			break;
		const struct iovec *in = c.iov + c.nout;
		if ((nchains == 0 && c.in_len < NET_HDR_LEN) || c.in_len == 0 || nv + c.nin > RX_VIOV_MAX ||
		    nchains == vq->size) {
			vq_unpop(vq, 1); /* the bounce path deals with it, errors included */
			break;
		}
		if (nchains == 0)
			find_num_buffers(in, c.nin, nb);
		memcpy(p->rx_viov + nv, in, c.nin * sizeof(*in));
		nv += c.nin;
		p->rx_heads[nchains] = c.head;
		p->rx_lens[nchains] = c.in_len > UINT32_MAX ? UINT32_MAX : (uint32_t)c.in_len;
		nchains++;
		room += c.in_len;
	}
	if (room < RX_BUF_LEN) {
		if (nchains)
			vq_unpop(vq, nchains);
		return RX_NO_BUFFERS;
	}
	ssize_t r;
	do
		r = readv(p->tap_fd, p->rx_viov, (int)nv);
	while (r < 0 && errno == EINTR);
	if (r < NET_HDR_LEN) {
		vq_unpop(vq, nchains);
		if (r < 0)
			return RX_EMPTY; /* EAGAIN, or a detached queue (EBADFD) */
		n->st.rx_dropped++; /* a runt: read, and gone */
		return RX_DROPPED;
	}
	uint16_t used = 0;
	for (size_t left = (size_t)r; left > 0; used++) {
		uint32_t k = left < p->rx_lens[used] ? (uint32_t)left : p->rx_lens[used];
		p->rx_lens[used] = k;
		left -= k;
	}
	uint16_t num = mrg ? used : 1;
	*nb[0] = (uint8_t)(num & 0xff);
	*nb[1] = (uint8_t)(num >> 8);
	for (uint16_t i = 0; i < used; i++)
		vq_fill(vq, i, p->rx_heads[i], p->rx_lens[i]);
	if (nchains > used)
		vq_unpop(vq, nchains - used);
	vq_flush(vq, used);
	n->st.rx_packets++;
	n->st.rx_direct++;
	n->st.rx_bytes += (size_t)r - NET_HDR_LEN;
	return RX_DONE;
}

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
		if (r < 0)
			return rx_pop_failed(n, vq, nbufs);
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
				net_device_broken(n, "rx buffer smaller than the 12-byte virtio-net header");
				return RX_BROKEN;
			}
			find_num_buffers(in, c.nin, nb);
		}
		size_t want = p->rx_len - off;
		size_t k = net_iov_copy_to(in, c.nin, 0, p->rxbuf + off, want);
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
			net_device_broken(n, "rx buffer without a device-writable part");
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
void net_pair_rx(struct net_pair *p)
{
	struct virtio_net *n = p->n;
	struct virtqueue *vq = &n->vd.vqs[rxq(p->index)];
	if (!n->running || n->quiesced || !p->enabled || !vq->started || p->rx_waiting)
		return;
	bool delivered = false;
	for (unsigned budget = RX_BUDGET; budget > 0; budget--) {
		if (!p->rx_pending) {
			int d = rx_direct(p);
			if (d == RX_BROKEN)
				return;
			if (d == RX_EMPTY)
				break;
			if (d == RX_DONE || d == RX_DROPPED) {
				delivered |= d == RX_DONE;
				continue;
			}
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
		net_signal_if_needed(n, rxq(p->index));
	net_pair_update_watch(p);
}

void net_pair_rx_kick(struct net_pair *p)
{
	struct virtio_net *n = p->n;
	if (!n->running || n->quiesced || !p->enabled)
		return;
	if (p->rx_waiting) {
		p->rx_waiting = false;
		vq_set_notification(&n->vd.vqs[rxq(p->index)], false);
	}
	net_pair_rx(p);
}

void net_on_tap(void *opaque, int events)
{
	struct net_pair *p = opaque;
	if (events < 0) {
		fprintf(stderr, "vmm: %s: pair %u: polling the TAP failed (%d)\n", p->n->name, p->index, events);
		return;
	}
	if (events & LOOP_WRITABLE)
		net_pair_tx(p);
	if (events & LOOP_READABLE)
		net_pair_rx(p);
}
