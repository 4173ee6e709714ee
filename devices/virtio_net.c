/* virtio-net device model: feature negotiation, config space, queue pairs,
 * the control queue (also with vhost), construction and migration. See
 * virtio_net.h. The userspace datapath is net_tap.c, the vhost-net vrings
 * net_vhost.c (virtio_net_priv.h holds what the three share).
 *
 * Migration (virtio_net.h): quiesce holds the datapath (watches off, kicks
 * ignored, vhost vrings stopped with their indices saved in the
 * virtqueues); save writes what the generic virtio state lacks: active
 * pairs, TAP offloads, stats, and the frames in the bounce buffers. load
 * keeps it for the next activation (restore_pairs, rx_pending), which
 * applies it. An incoming device does not touch its adopted TAP before
 * that activation: the source may still be using it. */
#include "virtio_net_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "err.h"
#include "migstream.h"

/* ---- helpers on iovecs ---- */

size_t net_iov_copy_to(const struct iovec *iov, unsigned n, size_t off, const void *src, size_t len)
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

size_t net_iov_copy_from(const struct iovec *iov, unsigned n, void *dst, size_t len)
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


void net_pair_update_watch(struct net_pair *p)
{
	struct virtio_net *n = p->n;
	if (!p->watch)
		return;
	int ev = 0;
	if (n->running && p->enabled && !n->quiesced) {
		if (!p->rx_waiting && n->vd.vqs[rxq(p->index)].started)
			ev |= LOOP_READABLE;
		if (p->tx_backlog)
			ev |= LOOP_WRITABLE;
	}
	if (loop_fd_set(p->watch, ev))
		fprintf(stderr, "vmm: %s: pair %u: %s\n", n->name, p->index, vmm_error());
}

void net_stop_all_watches(struct virtio_net *n)
{
	for (unsigned i = 0; i < n->pairs; i++)
		if (n->pair[i].watch)
			loop_fd_set(n->pair[i].watch, 0);
}

void net_device_broken(struct virtio_net *n, const char *why)
{
	n->running = false;
	net_stop_all_watches(n);
	virtio_needs_reset(&n->vd, why);
}

void net_signal_if_needed(struct virtio_net *n, unsigned q)
{
	if (vq_should_signal(&n->vd.vqs[q]))
		virtio_signal_queue(&n->vd, q);
}

/* ---- pairs ---- */

static int pair_enable(struct virtio_net *n, struct net_pair *p, bool on)
{
	if (p->enabled == on)
		return 0;
	if (!on) {
		p->enabled = false;
		if (n->vhost)
			net_vhost_pair_stop_logged(n, p);
		else
			net_pair_update_watch(p);
		if (n->tap.nqueues > 1 && tap_set_queue_enabled(&n->tap, p->index, false))
			fprintf(stderr, "vmm: %s: %s\n", n->name, vmm_error());
		return 0;
	}
	if (n->tap.nqueues > 1 && tap_set_queue_enabled(&n->tap, p->index, true))
		return -1;
	p->enabled = true;
	if (n->vhost) {
		if (net_vhost_pair_start(n, p)) {
			net_vhost_pair_stop_logged(n, p);
			p->enabled = false;
			return -1;
		}
		return 0;
	}
	p->rx_waiting = false;
	vq_set_notification(&n->vd.vqs[rxq(p->index)], false);
	net_pair_update_watch(p);
	net_pair_tx(p); /* anything queued while the pair was off */
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
	if (!n->running || n->quiesced || !vq->started)
		return;
	struct iovec iov[CTRL_IOV_CAP];
	struct vq_chain c = { .iov = iov, .cap = CTRL_IOV_CAP };
	bool used = false;
	for (unsigned budget = 64; budget > 0; budget--) {
		int r = vq_pop(vq, &c);
		if (r < 0) {
			char why[1024];
			snprintf(why, sizeof(why), "%s", vmm_error());
			net_device_broken(n, why);
			return;
		}
		if (r == 0)
			break;
		if (c.in_len < 1) {
			vq_unpop(vq, 1);
			net_device_broken(n, "control command without a writable status byte");
			return;
		}
		uint8_t cmd[64];
		size_t len = net_iov_copy_from(c.iov, c.nout, cmd, sizeof(cmd));
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
		net_iov_copy_to(c.iov + c.nout, c.nin, 0, &ack, 1);
		vq_push(vq, c.head, 1);
		used = true;
		if (!n->running)
			return;
	}
	if (used)
		net_signal_if_needed(n, ctrlq(n));
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
			net_vhost_pair_stop_logged(n, p);
		p->quiesce_stopped = false;
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

/* The pairs to start with: 1 at power-on; after a migration, as many as
 * the driver had set (only with MQ: without it the driver uses pair 0). */
static unsigned initial_pairs(struct virtio_net *n)
{
	unsigned k = n->restore_pairs;
	n->restore_pairs = 0;
	if (k < 1 || k > n->pairs || !virtio_has_feature(&n->vd, NET_F_MQ))
		k = 1;
	return k;
}

static int net_activate(struct virtio_device *vd)
{
	struct virtio_net *n = vd->opaque;
	if (!virtio_has_feature(vd, VIRTIO_F_VERSION_1))
		return vmm_fail("the driver did not accept VIRTIO_F_VERSION_1");
	if (!vd->mem)
		return vmm_fail("no guest memory");
	if (n->offloads_assumed) {
		/* an incoming TAP that no state was loaded for: ours now */
		if (tap_probe_offloads(&n->tap, &n->tap_offloads))
			return -1;
		n->offloads_assumed = false;
	}
	if (tap_set_offloads(&n->tap, guest_offloads(vd) & n->tap_offloads))
		return -1;
	if (!n->vhost && n->loop) {
		for (unsigned i = 0; i < n->pairs; i++) {
			struct net_pair *p = &n->pair[i];
			if (!p->watch && !(p->watch = loop_fd_watch(n->loop, p->tap_fd, 0, net_on_tap, p)))
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
	unsigned k = initial_pairs(n);
	n->running = true;
	n->quiesced = false;
	n->active_pairs = 0;
	if (set_active_pairs(n, k)) {
		net_stop(n);
		return -1;
	}
	/* the other pairs stay detached until VQ_PAIRS_SET */
	for (unsigned i = k; i < n->pairs; i++)
		if (n->tap.nqueues > 1 && tap_set_queue_enabled(&n->tap, i, false))
			fprintf(stderr, "vmm: %s: %s\n", n->name, vmm_error());
	/* frames a migration's source had read go before anything newer */
	for (unsigned i = 0; i < k && !n->vhost; i++)
		if (n->pair[i].rx_pending)
			net_pair_rx(&n->pair[i]);
	return 0;
}

static void net_reset(struct virtio_device *vd)
{
	net_stop(vd->opaque);
}

static void net_queue_notify(struct virtio_device *vd, unsigned q)
{
	struct virtio_net *n = vd->opaque;
	if (!n->running || n->quiesced || q > ctrlq(n))
		return; /* while quiesced: unquiesce (or the target) looks at every queue */
	if (q == ctrlq(n))
		ctrl_process(n);
	else if (n->vhost)
		return; /* the kernel polls those kicks */
	else if (q & 1)
		net_pair_tx(&n->pair[q / 2]);
	else
		net_pair_rx_kick(&n->pair[q / 2]);
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
	if (cfg->incoming && cfg->tap_fds) {
		/* the source still uses this TAP: probing would change its
		 * offloads under it; offer all, the loaded state narrows */
		n->incoming = true;
		n->offloads_assumed = true;
		n->tap_offloads = TAP_ALL_OFFLOADS;
	} else if (tap_probe_offloads(&n->tap, &n->tap_offloads)) {
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
		p->rx_viov = calloc(RX_VIOV_MAX, sizeof(*p->rx_viov));
		if (!p->rxbuf || !p->rx_iov || !p->rx_heads || !p->rx_lens || !p->rx_viov) {
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

void virtio_net_disown_tap(struct virtio_net *n)
{
	for (unsigned i = 0; i < TAP_MAX_QUEUES; i++)
		n->tap.fds[i] = -1;
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
		free(p->rx_viov);
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

/* Appends one formatted piece to buf at *off, clipping at len. */
static void describe_add(char *buf, size_t len, size_t *off, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void describe_add(char *buf, size_t len, size_t *off, const char *fmt, ...)
{
	if (*off >= len)
		return;
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(buf + *off, len - *off, fmt, ap);
	va_end(ap);
	if (k > 0)
		*off += (size_t)k < len - *off ? (size_t)k : len - *off - 1;
}

size_t virtio_net_describe(const struct virtio_net *n, char *buf, size_t len)
{
	size_t off = 0;
	if (len == 0)
		return 0;
	buf[0] = '\0';
	describe_add(buf, len, &off, "%s: %s datapath, %s%s, %u of %u pairs active\n", n->name,
		     n->vhost ? "vhost-net" : "userspace", n->running ? "running" : "not running",
		     n->quiesced ? " (quiesced)" : "", n->active_pairs, n->pairs);
	for (unsigned i = 0; i < n->pairs; i++) {
		const struct net_pair *p = &n->pair[i];
		char rx[160], tx[160];
		vq_describe(&n->vd.vqs[rxq(i)], rx, sizeof(rx));
		vq_describe(&n->vd.vqs[txq(i)], tx, sizeof(tx));
		describe_add(buf, len, &off,
			     "pair %u%s: rx_waiting %d, rx_pending %d (%zu bytes), tx_backlog %d\n  rx: %s\n  tx: %s\n",
			     i, p->enabled ? "" : " (disabled)", p->rx_waiting, p->rx_pending,
			     p->rx_pending ? p->rx_len : 0, p->tx_backlog, rx, tx);
	}
	return off;
}

bool virtio_net_uses_vhost(const struct virtio_net *n)
{
	return n->vhost;
}

unsigned virtio_net_tap_fds(struct virtio_net *n, int *fds, unsigned max)
{
	for (unsigned q = 0; q < n->tap.nqueues && q < max; q++)
		fds[q] = n->tap.fds[q];
	return n->tap.nqueues;
}

/* ---- migration ---- */

int virtio_net_realize(struct virtio_net *n)
{
	if (!n->vhost || !n->vd.mem || !n->vd.mem->host)
		return 0;
	for (unsigned i = 0; i < n->pairs; i++)
		if (vhost_net_set_memory(&n->pair[i].vhost, n->vd.mem))
			return vmm_fail_context("%s: pair %u", n->name, i);
	return 0;
}

int virtio_net_quiesce(struct virtio_net *n)
{
	if (n->quiesced)
		return 0;
	n->quiesced = true;
	net_stop_all_watches(n);
	for (unsigned i = 0; i < n->pairs && n->vhost; i++) {
		struct net_pair *p = &n->pair[i];
		if (!p->vhost_running)
			continue;
		if (net_vhost_pair_stop(n, p) == 0) {
			p->quiesce_stopped = true;
			continue;
		}
		/* where this pair's vrings stopped is unknown: it cannot
		 * migrate nor safely go on; the others go on as before */
		char why[1024];
		snprintf(why, sizeof(why), "quiesce: %s", vmm_error());
		virtio_net_unquiesce(n);
		net_device_broken(n, why);
		return vmm_fail("%s", why);
	}
	return 0;
}

static void kick_eventfd(int fd)
{
	uint64_t one = 1;
	/* EAGAIN: the counter is full, a kick is pending anyway */
	while (fd >= 0 && write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

int virtio_net_unquiesce(struct virtio_net *n)
{
	if (!n->quiesced)
		return 0;
	n->quiesced = false;
	for (unsigned i = 0; i < n->pairs && n->vhost; i++) {
		struct net_pair *p = &n->pair[i];
		if (!p->quiesce_stopped)
			continue;
		p->quiesce_stopped = false;
		if (net_vhost_pair_start(n, p)) {
			char why[1024];
			snprintf(why, sizeof(why), "restarting vhost-net after a failed migration: %s", vmm_error());
			net_vhost_pair_stop_logged(n, p);
			net_device_broken(n, why);
			return vmm_fail("%s: %s", n->name, why);
		}
		/* a spurious kick is harmless, a lost one stalls the ring */
		kick_eventfd(virtio_kick_fd(&n->vd, rxq(i)));
		kick_eventfd(virtio_kick_fd(&n->vd, txq(i)));
	}
	if (!n->running)
		return 0;
	/* kicks ignored while quiesced: look at every queue once */
	for (unsigned i = 0; i < n->pairs && !n->vhost; i++) {
		struct net_pair *p = &n->pair[i];
		if (!p->enabled)
			continue;
		net_pair_update_watch(p);
		net_pair_tx(p);
		net_pair_rx_kick(p);
	}
	ctrl_process(n);
	return 0;
}

#define PAIR_RX_PENDING 1u

int virtio_net_save(struct virtio_net *n, struct mig_buf *b)
{
	if (!n->quiesced)
		return vmm_fail("%s: saved before virtio_net_quiesce", n->name);
	/* a broken device (NEEDS_RESET) keeps nothing for its next driver */
	bool live = n->vd.active && n->running;
	mig_put_u32(b, n->pairs);
	mig_put_u32(b, live ? n->active_pairs : 0);
	mig_put_u32(b, n->tap_offloads);
	mig_put_u32(b, n->tap.offloads);
	const struct virtio_net_stats *st = &n->st;
	const uint64_t stats[] = { st->rx_packets, st->rx_bytes, st->rx_dropped,
				   st->tx_packets, st->tx_bytes, st->tx_errors };
	for (size_t i = 0; i < sizeof(stats) / sizeof(stats[0]); i++)
		mig_put_u64(b, stats[i]);
	for (unsigned i = 0; i < n->pairs; i++) {
		const struct net_pair *p = &n->pair[i];
		bool pending = live && p->rx_pending && p->rxbuf;
		mig_put_u8(b, pending ? PAIR_RX_PENDING : 0);
		mig_put_u32(b, pending ? (uint32_t)p->rx_len : 0);
		if (pending)
			mig_put_bytes(b, p->rxbuf, p->rx_len);
	}
	return mig_buf_ok(b, n->name);
}

/* What virtio_net_load reads, checked before any of it is applied. */
struct net_loaded {
	uint32_t active_pairs, supported, offloads;
	uint64_t stats[6];
	const uint8_t *frame[VIRTIO_NET_MAX_PAIRS]; /* into the payload, NULL if none */
	uint32_t frame_len[VIRTIO_NET_MAX_PAIRS];
};

static int load_pair(struct virtio_net *n, unsigned i, struct mig_cursor *c, struct net_loaded *l)
{
	uint8_t flags = mig_get_u8(c);
	uint32_t len = mig_get_u32(c);
	if (c->short_read)
		return mig_cursor_finish(c);
	if (flags & ~PAIR_RX_PENDING)
		return vmm_fail("%s: pair %u: unknown flags 0x%x", n->name, i, flags);
	if (!(flags & PAIR_RX_PENDING)) {
		if (len != 0)
			return vmm_fail("%s: pair %u: frame length %u without a pending frame", n->name, i, len);
		return 0;
	}
	if (n->vhost)
		return vmm_fail("%s: pair %u: a pending rx frame, but this device uses vhost-net", n->name, i);
	if (len < NET_HDR_LEN || len >= RX_BUF_LEN)
		return vmm_fail("%s: pair %u: pending rx frame of %u bytes (%d..%d)", n->name, i, len, NET_HDR_LEN,
				RX_BUF_LEN - 1);
	l->frame[i] = mig_get_view(c, len);
	l->frame_len[i] = len;
	if (!l->frame[i])
		return mig_cursor_finish(c);
	return 0;
}

static int load_check(struct virtio_net *n, const void *payload, size_t len, struct net_loaded *l)
{
	struct mig_cursor c;
	mig_cursor_init(&c, payload, len, n->name);
	uint32_t pairs = mig_get_u32(&c);
	l->active_pairs = mig_get_u32(&c);
	l->supported = mig_get_u32(&c);
	l->offloads = mig_get_u32(&c);
	for (unsigned i = 0; i < 6; i++)
		l->stats[i] = mig_get_u64(&c);
	if (c.short_read)
		return mig_cursor_finish(&c);
	if (pairs != n->pairs)
		return vmm_fail("%s: the state has %u queue pairs, this device %u", n->name, pairs, n->pairs);
	if (l->active_pairs > n->pairs)
		return vmm_fail("%s: %u active queue pairs (at most %u)", n->name, l->active_pairs, n->pairs);
	if (l->supported & ~TAP_ALL_OFFLOADS)
		return vmm_fail("%s: TAP offloads 0x%x: unknown bits 0x%x", n->name, l->supported,
				l->supported & ~TAP_ALL_OFFLOADS);
	if (l->offloads & ~l->supported)
		return vmm_fail("%s: TAP offloads set 0x%x, but only 0x%x supported", n->name, l->offloads,
				l->supported);
	for (unsigned i = 0; i < n->pairs; i++)
		if (load_pair(n, i, &c, l))
			return -1;
	return mig_cursor_finish(&c);
}

int virtio_net_load_check(struct virtio_net *n, const void *p, size_t len)
{
	struct net_loaded l;
	memset(&l, 0, sizeof(l));
	return load_check(n, p, len, &l);
}

int virtio_net_load(struct virtio_net *n, const void *p, size_t len)
{
	if (n->vd.active || n->running)
		return vmm_fail("%s: cannot load state into an active device", n->name);
	struct net_loaded l;
	memset(&l, 0, sizeof(l));
	if (load_check(n, p, len, &l))
		return -1;
	n->restore_pairs = l.active_pairs;
	if (n->incoming) {
		/* the source's TAP: what it supports and has set */
		n->tap_offloads = l.supported;
		n->tap.offloads = l.offloads;
		n->offloads_assumed = false;
	}
	n->st.rx_packets = l.stats[0];
	n->st.rx_bytes = l.stats[1];
	n->st.rx_dropped = l.stats[2];
	n->st.tx_packets = l.stats[3];
	n->st.tx_bytes = l.stats[4];
	n->st.tx_errors = l.stats[5];
	for (unsigned i = 0; i < n->pairs; i++) {
		struct net_pair *pr = &n->pair[i];
		pr->rx_pending = l.frame[i] != NULL;
		pr->rx_len = l.frame_len[i];
		if (pr->rx_pending)
			memcpy(pr->rxbuf, l.frame[i], l.frame_len[i]);
	}
	return 0;
}

int virtio_net_backend_save(struct virtio_net *n, struct mig_buf *b)
{
	struct tap_state st;
	if (tap_get_state(&n->tap, &st))
		return vmm_fail_context("%s", n->name);
	char name[IFNAMSIZ];
	memset(name, 0, sizeof(name));
	snprintf(name, sizeof(name), "%s", n->tap.ifname);
	mig_put_u32(b, n->tap.nqueues);
	mig_put_bytes(b, name, sizeof(name));
	mig_put_u32(b, (uint32_t)st.vnet_hdr_len);
	for (unsigned q = 0; q < n->tap.nqueues; q++)
		mig_put_u8(b, st.attached[q]);
	return mig_buf_ok(b, n->name);
}

int virtio_net_backend_check(struct virtio_net *n, const void *p, size_t len)
{
	char what[64];
	snprintf(what, sizeof(what), "%s: backend", n->name);
	struct mig_cursor c;
	mig_cursor_init(&c, p, len, what);
	uint32_t nq = mig_get_u32(&c);
	char name[IFNAMSIZ + 1];
	mig_get_bytes(&c, name, IFNAMSIZ);
	name[IFNAMSIZ] = 0;
	uint32_t hdr = mig_get_u32(&c);
	if (c.short_read)
		return mig_cursor_finish(&c);
	if (nq != n->tap.nqueues)
		return vmm_fail("%s: the source's TAP %.*s has %u queues, %u fds were adopted", what, IFNAMSIZ,
				name, nq, n->tap.nqueues);
	if (strnlen(name, IFNAMSIZ) == IFNAMSIZ || name[0] == 0)
		return vmm_fail("%s: TAP name is empty or not NUL-terminated", what);
	if (strcmp(name, n->tap.ifname))
		return vmm_fail("%s: the fds received are queues of TAP %s, the source describes TAP %s", what,
				n->tap.ifname, name);
	if (hdr != TAP_VNET_HDR_LEN)
		return vmm_fail("%s: TAP %s: vnet header of %u bytes described, %d needed", what, name, hdr,
				TAP_VNET_HDR_LEN);
	uint8_t attached[TAP_MAX_QUEUES];
	mig_get_bytes(&c, attached, nq);
	if (mig_cursor_finish(&c))
		return -1;
	for (unsigned q = 0; q < nq; q++) {
		if (attached[q] > 1)
			return vmm_fail("%s: queue %u: attached flag %u (0 or 1)", what, q, attached[q]);
		if (tap_check_queue(&n->tap, q))
			return vmm_fail_context("%s", what);
		if (attached[q] != !n->tap.detached[q])
			return vmm_fail("%s: TAP %s: queue %u (fd %d) is %s, the source describes it %s", what,
					name, q, n->tap.fds[q], n->tap.detached[q] ? "detached" : "attached",
					attached[q] ? "attached" : "detached");
	}
	return 0;
}
