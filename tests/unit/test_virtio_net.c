/* virtio-net with the userspace TAP backend, no KVM: this test plays the
 * guest driver on a 4 MiB buffer (rings, buffers) and the host on an
 * AF_PACKET socket bound to the TAP, inside a private network namespace
 * (needs root; exits 77, "skipped", otherwise). */
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "err.h"
#include "net_harness.h"
#include "virtio_net.h"

#define QSIZE qsize /* what the driver picks (device max 1024) */
#define INDIRECT_GPA 0x0C0000ull

static struct guest_mem mem;
static uv_loop_t loop;
static struct virtio_net *net;
static struct virtio_device *vd;
static int host = -1;
static unsigned signals[NQ], config_signals;
static uint64_t features;

/* ---- fake transport ---- */

static void t_signal(void *t, unsigned q)
{
	(void)t;
	if (q < NQ)
		signals[q]++;
}

static void t_config(void *t)
{
	(void)t;
	config_signals++;
}

static const struct virtio_transport_ops fake_transport = {
	.signal_queue = t_signal,
	.signal_config = t_config,
};

/* ---- the guest driver ---- */

static void kick(unsigned q)
{
	vd->ops->queue_notify(vd, q);
}

/* Driver initialisation from reset (3.1.1): features, queues, DRIVER_OK. */
static void setup(uint64_t f)
{
	virtio_reset(vd);
	memset(signals, 0, sizeof(signals));
	config_signals = 0;
	features = f;
	CHECK_EQ(guest_driver_start(vd, f, NQ), 0);
}

static void reset_and_setup(uint64_t f)
{
	virtio_reset(vd);
	CHECK_EQ(vd->status, 0);
	CHECK(!vd->active);
	setup(f);
}

static bool broken(void)
{
	return vd->status & VIRTIO_STATUS_NEEDS_RESET;
}

/* Runs the loop until cond() or timeout_ms; never blocks in uv_run. */
static bool pump(bool (*cond)(void *), void *arg, unsigned timeout_ms)
{
	double end = now_ms() + timeout_ms;
	for (;;) {
		uv_run(&loop, UV_RUN_NOWAIT);
		if (cond && cond(arg))
			return true;
		if (now_ms() > end)
			return false;
		usleep(1000);
	}
}

static bool used_at_least(void *arg)
{
	unsigned *want = arg; /* {queue, count} */
	return (uint16_t)(used_idx(want[0]) - gqs[want[0]].used_seen) >= want[1];
}

static bool wait_used(unsigned q, unsigned count, unsigned timeout_ms)
{
	unsigned arg[2] = { q, count };
	return pump(used_at_least, arg, timeout_ms);
}

static void post_rx(unsigned q, unsigned first, unsigned count, uint32_t len)
{
	for (unsigned i = 0; i < count; i++) {
		struct seg s = { RX_GPA + (first + i) * RX_STRIDE, len, true };
		add_chain(q, &s, 1);
	}
}

/* ---- the host side ---- */

static void host_drain(void)
{
	uint8_t b[2048];
	while (recv(host, b, sizeof(b), MSG_DONTWAIT) > 0)
		;
}

/* ---- cases ---- */

#define F(b) VIRTIO_BIT(b)

static void test_features_and_config(void)
{
	uint64_t h = vd->host_features;
	CHECK_EQ(h & NET_BASE_FEATURES, NET_BASE_FEATURES);
	CHECK(h & F(VIRTIO_F_RING_EVENT_IDX));
	CHECK(h & F(VIRTIO_NET_F_GUEST_TSO6));
	CHECK(!(h & F(VIRTIO_NET_F_MTU)));
	CHECK_EQ(vd->device_id, 1);
	CHECK_EQ(vd->nqueues, NQ);
	CHECK_EQ(vd->queue_max_size, 1024);
	CHECK(vd->config_size >= 10);
	uint8_t cfg[12];
	vd->ops->config_read(vd, 0, cfg, 10);
	CHECK(memcmp(cfg, guest_mac, 6) == 0);
	CHECK_EQ(cfg[6] | cfg[7] << 8, 1); /* link up */
	CHECK_EQ(cfg[8] | cfg[9] << 8, 2); /* max_virtqueue_pairs */
	uint8_t junk[6] = { 1, 2, 3, 4, 5, 6 };
	vd->ops->config_write(vd, 0, junk, 6); /* ignored: read-only MAC */
	vd->ops->config_read(vd, 0, cfg, 6);
	CHECK(memcmp(cfg, guest_mac, 6) == 0);
	CHECK(strcmp(virtio_net_ifname(net), "vnt0") == 0);
}

static void test_tx(void)
{
	setup(NET_BASE_FEATURES);
	host_drain();
	struct virtio_net_hdr_mrg_rxbuf *h = (void *)(guest + TX_HDR_GPA);
	memset(h, 0, sizeof(*h));
	h->hdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	h->hdr.csum_start = 34;
	h->hdr.csum_offset = 6; /* UDP checksum */
	size_t len = build_frame(guest + TX_FRAME_GPA, peer_mac, guest_mac, 17, 200, "guest-to-host-1");
	struct seg s[2] = { { TX_HDR_GPA, 12, false }, { TX_FRAME_GPA, (uint32_t)len, false } };
	uint16_t head = add_chain(1, s, 2);
	kick(1);
	uint16_t id;
	uint32_t ulen;
	CHECK(wait_used(1, 1, 500));
	CHECK(get_used(1, &id, &ulen));
	CHECK_EQ(id, head);
	CHECK_EQ(ulen, 0);
	CHECK(signals[1] >= 1);

	static uint8_t buf[70000];
	ssize_t r = host_recv(host, buf, sizeof(buf), "guest-to-host-1", 2000);
	CHECK_EQ(r, (ssize_t)(sizeof(struct virtio_net_hdr) + len));
	if (r > 0) {
		struct virtio_net_hdr *hh = (void *)buf;
		CHECK(hh->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
		CHECK_EQ(hh->csum_start, 34);
		CHECK_EQ(hh->csum_offset, 6);
		CHECK_EQ(hh->gso_type, VIRTIO_NET_HDR_GSO_NONE);
		CHECK(memcmp(buf + sizeof(*hh), guest + TX_FRAME_GPA, len) == 0);
	}

	/* header and frame in one descriptor, NO_INTERRUPT: no signal */
	unsigned before = signals[1];
	gavail(1)[0] = VQ_AVAIL_F_NO_INTERRUPT;
	memmove(guest + TX_HDR_GPA + 12, guest + TX_FRAME_GPA, len);
	memcpy(guest + TX_HDR_GPA + 12 + 42, "guest-to-host-2", 15);
	struct seg one = { TX_HDR_GPA, (uint32_t)(12 + len), false };
	add_chain(1, &one, 1);
	kick(1);
	CHECK(wait_used(1, 1, 500));
	CHECK(get_used(1, &id, &ulen));
	CHECK_EQ(signals[1], before);
	CHECK(host_recv(host, buf, sizeof(buf), "guest-to-host-2", 2000) > 0);
	gavail(1)[0] = 0;

	/* a chain shorter than the header: counted as an error, not fatal */
	struct virtio_net_stats st0, st1;
	virtio_net_get_stats(net, &st0);
	struct seg runt = { TX_HDR_GPA, 4, false };
	add_chain(1, &runt, 1);
	kick(1);
	CHECK(wait_used(1, 1, 500));
	CHECK(get_used(1, &id, &ulen));
	virtio_net_get_stats(net, &st1);
	CHECK_EQ(st1.tx_errors, st0.tx_errors + 1);
	CHECK(!broken());
	CHECK(st1.tx_packets >= 2);
	CHECK_EQ(st1.active_pairs, 1);
}

static void check_rx_payload(const uint8_t *got, const uint8_t *want, size_t len)
{
	CHECK(memcmp(got, want, len) == 0);
}

static void test_rx(void)
{
	setup(NET_BASE_FEATURES);
	post_rx(0, 0, 8, RX_BUF);
	kick(0);
	static uint8_t frame[2048];
	size_t len = build_frame(frame, guest_mac, peer_mac, 17, 300, "host-to-guest-1");
	struct virtio_net_hdr h = { 0 };
	CHECK_EQ(host_send(host, &h, frame, len), 0);
	CHECK(wait_used(0, 1, 2000));
	uint16_t id;
	uint32_t ulen;
	CHECK(get_used(0, &id, &ulen));
	CHECK_EQ(id, gqs[0].used_seen - 1); /* chains are 1 descriptor each, posted in order */
	CHECK_EQ(ulen, 12 + len);
	const uint8_t *b = guest + gdesc(0, id)->addr;
	const struct virtio_net_hdr_mrg_rxbuf *rh = (const void *)b;
	CHECK_EQ(rh->num_buffers, 1);
	CHECK_EQ(rh->hdr.gso_type, VIRTIO_NET_HDR_GSO_NONE);
	check_rx_payload(b + 12, frame, len);
	CHECK(signals[0] >= 1);
	struct virtio_net_stats st;
	virtio_net_get_stats(net, &st);
	CHECK(st.rx_packets >= 1);
}

/* Copies the used buffers of rx queue 0 into got until `total` bytes (one
 * packet) are there -> the bytes gathered; *nbufs how many buffers,
 * *num_buffers what the first one's header says. With first_id >= 0, the
 * buffers must be the chains first_id, first_id + 1, ... */
static size_t gather_packet(size_t total, uint8_t *got, size_t cap, unsigned *nbufs, unsigned *num_buffers, int first_id)
{
	size_t off = 0;
	uint16_t id;
	uint32_t ulen;
	*nbufs = *num_buffers = 0;
	while (off < total && get_used(0, &id, &ulen)) {
		CHECK(ulen <= RX_BUF);
		if (first_id >= 0)
			CHECK_EQ(id, (unsigned)first_id + *nbufs);
		if (off + ulen > cap)
			break;
		memcpy(got + off, guest + gdesc(0, id)->addr, ulen);
		if (*nbufs == 0)
			*num_buffers = got[10] | got[11] << 8;
		off += ulen;
		(*nbufs)++;
	}
	return off;
}

static void test_rx_gso_mergeable(void)
{
	setup(NET_BASE_FEATURES);
	post_rx(0, 0, 40, RX_BUF);
	kick(0);
	static uint8_t frame[21000];
	size_t len = build_frame(frame, guest_mac, peer_mac, 6, 20000, "host-to-guest-gso");
	CHECK_EQ(host_send(host, &tcp4_gso_hdr, frame, len), 0);
	unsigned need = (unsigned)((12 + len + RX_BUF - 1) / RX_BUF);
	CHECK(wait_used(0, need, 2000));
	static uint8_t got[21000 + 12];
	unsigned nbufs, expect;
	size_t off = gather_packet(12 + len, got, sizeof(got), &nbufs, &expect, -1);
	CHECK_EQ(off, 12 + len);
	CHECK_EQ(nbufs, need);
	CHECK_EQ(expect, need);
	CHECK(need > 1);
	const struct virtio_net_hdr *rh = (const void *)got;
	CHECK_EQ(rh->gso_type & 0x7f, VIRTIO_NET_HDR_GSO_TCPV4);
	CHECK_EQ(rh->gso_size, 1448);
	CHECK(rh->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
	check_rx_payload(got + 12, frame, len);
	printf("     %zu-byte GSO frame in %u buffers\n", len, nbufs);
}

/* With room for the largest packet posted (here 60 chains of 1500 bytes),
 * a packet is read straight into the guest's buffers: a GSO frame spread
 * over as many chains as it needs, num_buffers in the first; the chains it
 * did not need come next, in order, for the next packet. */
static void test_rx_direct_into_guest_buffers(void)
{
	setup(NET_BASE_FEATURES);
	struct virtio_net_stats st0, st1;
	virtio_net_get_stats(net, &st0);
	post_rx(0, 0, 60, RX_BUF);
	kick(0);
	static uint8_t frame[21000];
	size_t len = build_frame(frame, guest_mac, peer_mac, 6, 20000, "direct-gso");
	CHECK_EQ(host_send(host, &tcp4_gso_hdr, frame, len), 0);
	unsigned need = (unsigned)((12 + len + RX_BUF - 1) / RX_BUF);
	CHECK(wait_used(0, need, 2000));
	static uint8_t got[21000 + 12];
	unsigned nbufs, expect;
	size_t off = gather_packet(12 + len, got, sizeof(got), &nbufs, &expect, 0); /* chains in the order posted */
	CHECK_EQ(off, 12 + len);
	CHECK_EQ(nbufs, need);
	CHECK_EQ(expect, need);
	uint16_t id;
	uint32_t ulen;
	check_rx_payload(got + 12, frame, len);
	/* the next packet takes the first chain the big one did not use */
	len = build_frame(frame, guest_mac, peer_mac, 17, 100, "direct-small");
	struct virtio_net_hdr h = { 0 };
	CHECK_EQ(host_send(host, &h, frame, len), 0);
	CHECK(wait_used(0, 1, 2000));
	CHECK(get_used(0, &id, &ulen));
	CHECK_EQ(id, need);
	CHECK_EQ(ulen, 12 + len);
	CHECK(memmem(guest + gdesc(0, id)->addr, ulen, "direct-small", 12) != NULL);
	virtio_net_get_stats(net, &st1);
	CHECK_EQ(st1.rx_direct - st0.rx_direct, 2);
	CHECK_EQ(st1.rx_packets - st0.rx_packets, 2);
	CHECK(!broken());
}

/* No rx buffers: frames wait in the TAP (no drop), then arrive in order once
 * the driver adds buffers and kicks. With EVENT_IDX the device must ask for
 * that kick (avail_event) even with buffers it could not use pending. */
static void rx_wait_case(bool event_idx)
{
	setup(NET_BASE_FEATURES | (event_idx ? F(VIRTIO_F_RING_EVENT_IDX) : 0));
	struct virtio_net_stats st0, st1;
	virtio_net_get_stats(net, &st0);
	static uint8_t frame[21000];
	char marker[32];
	size_t lens[3];
	for (int i = 0; i < 3; i++) {
		snprintf(marker, sizeof(marker), "wait-%d-%d", event_idx, i);
		lens[i] = build_frame(frame, guest_mac, peer_mac, 17, 100 + (size_t)i, marker);
		struct virtio_net_hdr h = { 0 };
		CHECK_EQ(host_send(host, &h, frame, lens[i]), 0);
	}
	/* a big packet first when testing EVENT_IDX: one buffer is not enough */
	if (event_idx)
		post_rx(0, 0, 1, 64); /* too small for anything but the header + 52 bytes */
	pump(NULL, NULL, 200);
	CHECK_EQ(used_idx(0), 0);
	virtio_net_get_stats(net, &st1);
	CHECK_EQ(st1.rx_dropped, st0.rx_dropped);
	if (event_idx) {
		uint16_t avail_event = *(uint16_t *)(guest + gqs[0].used + 4 + 8 * QSIZE);
		CHECK_EQ(avail_event, gqs[0].avail_idx); /* the next buffer is kicked */
	} else {
		uint16_t used_flags = *(uint16_t *)(guest + gqs[0].used);
		CHECK(!(used_flags & VQ_USED_F_NO_NOTIFY));
	}
	post_rx(0, 1, 8, RX_BUF);
	kick(0);
	unsigned want = 3 + (event_idx ? 1 : 0);
	CHECK(wait_used(0, event_idx ? 3 : 3, 2000));
	pump(NULL, NULL, 50);
	unsigned seen = 0, nb;
	int next = 0;
	size_t plen;
	while ((plen = take_packet(0, frame, sizeof(frame), &nb)) > 0) {
		seen += nb;
		snprintf(marker, sizeof(marker), "wait-%d-%d", event_idx, next);
		if (next < 3 && plen == 12 + lens[next] && memmem(frame, plen, marker, strlen(marker)))
			next++;
	}
	CHECK_EQ(next, 3);
	CHECK_EQ(seen, want);
	virtio_net_get_stats(net, &st1);
	CHECK_EQ(st1.rx_dropped, st0.rx_dropped);
}

static void test_rx_waits_for_buffers(void)
{
	rx_wait_case(false);
}

static void test_rx_waits_event_idx(void)
{
	rx_wait_case(true);
}

static uint8_t ctrl_cmd(uint8_t cls, uint8_t cmd, const void *data, uint32_t dlen)
{
	uint8_t *hdr = guest + CTRL_GPA, *d = guest + CTRL_GPA + 0x100, *ack = guest + CTRL_GPA + 0x200;
	hdr[0] = cls;
	hdr[1] = cmd;
	if (dlen)
		memcpy(d, data, dlen);
	*ack = 0xee;
	struct seg s[3] = { { CTRL_GPA, 2, false }, { CTRL_GPA + 0x100, dlen, false }, { CTRL_GPA + 0x200, 1, true } };
	if (dlen)
		add_chain(CTRLQ, s, 3);
	else
		add_chain(CTRLQ, (struct seg[]){ s[0], s[2] }, 2);
	kick(CTRLQ);
	uint16_t id;
	uint32_t len;
	if (!get_used(CTRLQ, &id, &len))
		return 0xff;
	CHECK_EQ(len, 1);
	return *ack;
}

static void test_ctrl_mq(void)
{
	setup(NET_BASE_FEATURES);
	struct virtio_net_stats st;
	uint16_t k = 1;
	CHECK_EQ(ctrl_cmd(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &k, 2), VIRTIO_NET_OK);
	virtio_net_get_stats(net, &st);
	CHECK_EQ(st.active_pairs, 1);
	k = 2;
	CHECK_EQ(ctrl_cmd(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &k, 2), VIRTIO_NET_OK);
	virtio_net_get_stats(net, &st);
	CHECK_EQ(st.active_pairs, 2);
	CHECK(signals[CTRLQ] >= 2);
	k = 0;
	CHECK_EQ(ctrl_cmd(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &k, 2), VIRTIO_NET_ERR);
	k = 9;
	CHECK_EQ(ctrl_cmd(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &k, 2), VIRTIO_NET_ERR);
	k = 3;
	CHECK_EQ(ctrl_cmd(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &k, 2), VIRTIO_NET_ERR);
	virtio_net_get_stats(net, &st);
	CHECK_EQ(st.active_pairs, 2);
	/* other classes, and a pairs command without its data */
	uint8_t on = 1;
	CHECK_EQ(ctrl_cmd(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &on, 1), VIRTIO_NET_ERR);
	CHECK_EQ(ctrl_cmd(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, NULL, 0), VIRTIO_NET_ERR);
	CHECK(!broken());

	/* both pairs carry traffic: tx on pair 1 reaches the host */
	host_drain();
	queue_tx_frame(3, 64, "pair-1-tx");
	kick(3);
	static uint8_t buf[4096];
	CHECK(host_recv(host, buf, sizeof(buf), "pair-1-tx", 2000) > 0);
	/* and rx spreads over both queues (or at least arrives) */
	post_rx(0, 0, 16, RX_BUF);
	post_rx(2, 16, 16, RX_BUF);
	kick(0);
	kick(2);
	static uint8_t frame[2048];
	for (int i = 0; i < 8; i++) {
		char m[32];
		snprintf(m, sizeof(m), "mq-%d", i);
		size_t fl = build_frame(frame, guest_mac, peer_mac, 17, 64, m);
		frame[14 + 20] = (uint8_t)i; /* vary the source port: another flow */
		frame[14 + 11] = 0, frame[14 + 10] = 0;
		struct virtio_net_hdr h = { 0 };
		CHECK_EQ(host_send(host, &h, frame, fl), 0);
	}
	unsigned got = 0;
	double end = now_ms() + 2000;
	while (got < 8 && now_ms() < end) {
		pump(NULL, NULL, 5);
		got = (uint16_t)(used_idx(0) - gqs[0].used_seen) + (uint16_t)(used_idx(2) - gqs[2].used_seen);
	}
	CHECK_EQ(got, 8);
	printf("     rx queue 0: %u, rx queue 1: %u\n", (uint16_t)(used_idx(0) - gqs[0].used_seen),
	       (uint16_t)(used_idx(2) - gqs[2].used_seen));

	/* back to one pair */
	k = 1;
	CHECK_EQ(ctrl_cmd(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &k, 2), VIRTIO_NET_OK);
	/* a control header of 1 byte: ERR */
	*(guest + CTRL_GPA + 0x200) = 0xee;
	struct seg shortc[2] = { { CTRL_GPA, 1, false }, { CTRL_GPA + 0x200, 1, true } };
	add_chain(CTRLQ, shortc, 2);
	kick(CTRLQ);
	CHECK_EQ(*(guest + CTRL_GPA + 0x200), VIRTIO_NET_ERR);
	CHECK(!broken());
	/* no writable status byte: the driver is broken */
	struct seg noack = { CTRL_GPA, 4, false };
	add_chain(CTRLQ, &noack, 1);
	kick(CTRLQ);
	CHECK(broken());
	CHECK(config_signals >= 1);
	reset_and_setup(NET_BASE_FEATURES);
	CHECK(!broken());
}

/* A good tx packet after a reset proves the device works again. */
static void check_tx_works(const char *marker)
{
	host_drain();
	queue_tx_frame(1, 80, marker);
	kick(1);
	static uint8_t buf[4096];
	CHECK(host_recv(host, buf, sizeof(buf), marker, 2000) > 0);
	CHECK(!broken());
}

static void bad_chain_case(int kind)
{
	reset_and_setup(NET_BASE_FEATURES);
	struct gq *g = &gqs[1];
	uint16_t head = g->next_desc;
	struct vq_desc *d0 = gdesc(1, head), *d1 = gdesc(1, (uint16_t)(head + 1));
	struct vq_desc *ind = (struct vq_desc *)(guest + INDIRECT_GPA);
	switch (kind) {
	case 0: /* address outside RAM */
		*d0 = (struct vq_desc){ TX_HDR_GPA, 12, VQ_DESC_F_NEXT, (uint16_t)(head + 1) };
		*d1 = (struct vq_desc){ GUEST_SIZE + 0x1000ull, 100, 0, 0 };
		break;
	case 1: /* a loop */
		*d0 = (struct vq_desc){ TX_HDR_GPA, 12, VQ_DESC_F_NEXT, (uint16_t)(head + 1) };
		*d1 = (struct vq_desc){ TX_FRAME_GPA, 100, VQ_DESC_F_NEXT, head };
		break;
	case 2: /* an indirect table longer than any chain may be */
		for (unsigned i = 0; i < 300; i++)
			ind[i] = (struct vq_desc){ TX_FRAME_GPA, 4, i + 1 < 300 ? VQ_DESC_F_NEXT : 0, (uint16_t)(i + 1) };
		*d0 = (struct vq_desc){ INDIRECT_GPA, 300 * 16, VQ_DESC_F_INDIRECT, 0 };
		break;
	case 3: /* indirect inside indirect */
		ind[0] = (struct vq_desc){ TX_HDR_GPA, 12, VQ_DESC_F_NEXT, 1 };
		ind[1] = (struct vq_desc){ INDIRECT_GPA + 0x1000, 32, VQ_DESC_F_INDIRECT, 0 };
		*d0 = (struct vq_desc){ INDIRECT_GPA, 2 * 16, VQ_DESC_F_INDIRECT, 0 };
		break;
	case 4: /* head index outside the table */
		break;
	}
	g->next_desc = (uint16_t)(head + 2);
	publish(1, kind == 4 ? 4000 : head);
	kick(1);
	CHECK(broken());
	CHECK(config_signals >= 1);
	/* kicks and TAP traffic after that touch nothing and do not crash */
	kick(1);
	kick(0);
	kick(CTRLQ);
	pump(NULL, NULL, 20);
	CHECK(broken());
	reset_and_setup(NET_BASE_FEATURES);
	char m[32];
	snprintf(m, sizeof(m), "after-bad-%d", kind);
	check_tx_works(m);
}

static void test_malformed_tx_chains(void)
{
	for (int kind = 0; kind <= 4; kind++)
		bad_chain_case(kind);
}

static void test_bad_rx_buffer(void)
{
	reset_and_setup(NET_BASE_FEATURES);
	struct seg tiny = { RX_GPA, 8, true }; /* smaller than the header */
	add_chain(0, &tiny, 1);
	kick(0);
	static uint8_t frame[2048];
	size_t len = build_frame(frame, guest_mac, peer_mac, 17, 64, "tiny");
	struct virtio_net_hdr h = { 0 };
	CHECK_EQ(host_send(host, &h, frame, len), 0);
	double end = now_ms() + 1000;
	while (!broken() && now_ms() < end)
		pump(NULL, NULL, 5);
	CHECK(broken());
	reset_and_setup(NET_BASE_FEATURES);
	check_tx_works("after-tiny-rx");
}

static void test_no_mergeable(void)
{
	uint64_t f = (NET_BASE_FEATURES & ~F(VIRTIO_NET_F_MRG_RXBUF) & ~F(VIRTIO_NET_F_GUEST_TSO4));
	reset_and_setup(f);
	post_rx(0, 0, 1, RX_BUF);
	kick(0);
	struct virtio_net_stats st0, st1;
	virtio_net_get_stats(net, &st0);
	static uint8_t frame[2048];
	size_t len = build_frame(frame, guest_mac, peer_mac, 17, 100, "nomrg");
	struct virtio_net_hdr h = { 0 };
	CHECK_EQ(host_send(host, &h, frame, len), 0);
	CHECK(wait_used(0, 1, 2000));
	uint16_t id;
	uint32_t ulen;
	CHECK(get_used(0, &id, &ulen));
	CHECK_EQ(ulen, 12 + len);
	const struct virtio_net_hdr_mrg_rxbuf *rh = (const void *)(guest + gdesc(0, id)->addr);
	CHECK_EQ(rh->num_buffers, 1);
	/* a chain too small for the next frame: the frame is dropped and
	 * counted, the chain given back empty; the one after fits */
	post_rx(0, 10, 1, 64);
	post_rx(0, 11, 1, RX_BUF);
	kick(0);
	len = build_frame(frame, guest_mac, peer_mac, 17, 100, "nomrg2");
	CHECK_EQ(host_send(host, &h, frame, len), 0);
	CHECK(wait_used(0, 1, 2000));
	CHECK(get_used(0, &id, &ulen));
	CHECK_EQ(ulen, 0);
	virtio_net_get_stats(net, &st1);
	CHECK_EQ(st1.rx_dropped, st0.rx_dropped + 1);
	len = build_frame(frame, guest_mac, peer_mac, 17, 100, "nomrg3");
	CHECK_EQ(host_send(host, &h, frame, len), 0);
	CHECK(wait_used(0, 1, 2000));
	CHECK(get_used(0, &id, &ulen));
	CHECK_EQ(ulen, 12 + len);
	CHECK(memmem(guest + gdesc(0, id)->addr, ulen, "nomrg3", 6) != NULL);
	CHECK(!broken());
}

/* More tx chains than one kick may handle: the device yields to the loop
 * after a bounded batch and finishes on the next turns. */
static void test_tx_budget(void)
{
	qsize = 512;
	reset_and_setup(NET_BASE_FEATURES);
	struct virtio_net_stats st0, st1;
	virtio_net_get_stats(net, &st0);
	size_t len = build_frame(guest + TX_FRAME_GPA, peer_mac, guest_mac, 17, 60, "burst");
	memset(guest + TX_HDR_GPA, 0, 12);
	memcpy(guest + TX_HDR_GPA + 12, guest + TX_FRAME_GPA, len);
	for (unsigned i = 0; i < 400; i++) {
		struct seg s = { TX_HDR_GPA, (uint32_t)(12 + len), false };
		add_chain(1, &s, 1);
	}
	kick(1);
	uint16_t after_kick = used_idx(1);
	CHECK(after_kick > 0);
	CHECK(after_kick < 400);
	CHECK(wait_used(1, 400, 2000));
	virtio_net_get_stats(net, &st1);
	CHECK_EQ(st1.tx_packets - st0.tx_packets, 400);
	printf("     %u of 400 sent on the kick, the rest on later loop turns\n", after_kick);
	qsize = 256;
	reset_and_setup(NET_BASE_FEATURES);
}

static void test_random_rings(void)
{
	srand(12345);
	unsigned broke = 0;
	static uint8_t frame[2048];
	for (int it = 0; it < 300; it++) {
		uint64_t f = NET_BASE_FEATURES | (it & 1 ? F(VIRTIO_F_RING_EVENT_IDX) : 0);
		if (it % 3 == 0)
			f &= ~F(VIRTIO_NET_F_MRG_RXBUF);
		reset_and_setup(f);
		for (unsigned q = 0; q < NQ; q++) {
			struct gq *g = &gqs[q];
			int mode = rand() % 3; /* 0 raw bytes, 1 plausible fields, 2 well formed */
			bool plausible = mode > 0;
			for (unsigned i = 0; i < QSIZE; i++) {
				struct vq_desc *d = gdesc(q, (uint16_t)i);
				if (mode == 2) {
					uint32_t len = (uint32_t)(rand() % 3000);
					d->addr = 0x100000ull + (uint64_t)(rand() % (GUEST_SIZE - 0x100000 - 3000));
					d->len = len;
					d->flags = (uint16_t)((q % 2 == 0 && q != CTRLQ ? VQ_DESC_F_WRITE : 0) |
							      (rand() % 4 == 0 && i + 1 < QSIZE ? VQ_DESC_F_NEXT : 0));
					if (q == CTRLQ && !(d->flags & VQ_DESC_F_NEXT))
						d->flags |= VQ_DESC_F_WRITE;
					d->next = (uint16_t)(i + 1);
				} else if (plausible) {
					d->addr = (uint64_t)(rand() % GUEST_SIZE);
					d->len = (uint32_t)(rand() % 4096);
					d->flags = (uint16_t)(rand() % 16 ? rand() & 3 : rand() & 7);
					d->next = (uint16_t)(rand() % QSIZE);
				} else {
					for (unsigned b = 0; b < sizeof(*d); b++)
						((uint8_t *)d)[b] = (uint8_t)rand();
				}
			}
			uint16_t *a = gavail(q);
			for (unsigned i = 0; i < QSIZE + 3u; i++)
				a[i] = plausible ? (uint16_t)(rand() % QSIZE) : (uint16_t)rand();
			a[1] = plausible ? (uint16_t)(rand() % 16) : (uint16_t)rand();
			(void)g;
		}
		if (it % 4 == 0) {
			size_t len = build_frame(frame, guest_mac, peer_mac, 17, (size_t)(rand() % 1400), "rnd");
			struct virtio_net_hdr h = { 0 };
			host_send(host, &h, frame, len);
		}
		uint16_t k = (uint16_t)(1 + rand() % 2);
		(void)k;
		for (unsigned q = 0; q < NQ; q++)
			kick(q);
		for (int p = 0; p < 3; p++)
			uv_run(&loop, UV_RUN_NOWAIT);
		broke += broken();
	}
	struct virtio_net_stats st;
	virtio_net_get_stats(net, &st);
	printf("     %u of 300 random ring sets marked the device broken; tx %llu packets, %llu errors\n", broke,
	       (unsigned long long)st.tx_packets, (unsigned long long)st.tx_errors);
	reset_and_setup(NET_BASE_FEATURES);
	check_tx_works("after-random");
}

int main(void)
{
	int skip = start_net_test();
	if (skip)
		return skip;

	CHECK_EQ(guest_mem_wrap(&mem, guest, GUEST_SIZE), 0);
	CHECK_EQ(uv_loop_init(&loop), 0);
	struct virtio_net_options cfg = {
		.name = "net0",
		.ifname = "vnt0",
		.queue_pairs = 2,
		.queue_size = 1024,
	};
	memcpy(cfg.mac, guest_mac, 6);
	net = virtio_net_new(&cfg, &mem, &loop);
	if (!net) {
		printf("virtio_net_new: %s\n", vmm_error());
		return 1;
	}
	vd = virtio_net_device(net);
	vd->transport = &fake_transport;
	CHECK_EQ(link_up("vnt0"), 0);
	host = open_host("vnt0");
	CHECK(host >= 0);
	if (host < 0)
		return CHECK_DONE();

	RUN(test_features_and_config);
	RUN(test_tx);
	RUN(test_rx);
	RUN(test_rx_gso_mergeable);
	RUN(test_rx_direct_into_guest_buffers);
	RUN(test_rx_waits_for_buffers);
	RUN(test_rx_waits_event_idx);
	RUN(test_ctrl_mq);
	RUN(test_malformed_tx_chains);
	RUN(test_bad_rx_buffer);
	RUN(test_no_mergeable);
	RUN(test_tx_budget);
	RUN(test_random_rings);

	virtio_reset(vd);
	virtio_net_free(net);
	close(host);
	uv_run(&loop, UV_RUN_NOWAIT);
	CHECK_EQ(uv_loop_close(&loop), 0);
	CHECK_EQ(if_nametoindex("vnt0"), 0);

	/* bad configurations fail at once, with the name */
	cfg.queue_pairs = 0;
	CHECK(virtio_net_new(&cfg, &mem, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "net0");
	cfg.queue_pairs = 1;
	cfg.ifname = "lo";
	CHECK(virtio_net_new(&cfg, &mem, &loop) == NULL);
	CHECK_CONTAINS(vmm_error(), "lo");
	cfg.ifname = NULL;
	CHECK(virtio_net_new(&cfg, &mem, &loop) == NULL);
	/* no /dev/vhost-net here: a clear message (or, where it exists, a device) */
	cfg.ifname = "vnt1";
	cfg.vhost = true;
	struct virtio_net *v = virtio_net_new(&cfg, &mem, &loop);
	if (!v) {
		printf("     vhost: %s\n", vmm_error());
		CHECK_CONTAINS(vmm_error(), "vhost");
	}
	virtio_net_free(v);
	CHECK_EQ(if_nametoindex("vnt1"), 0);
	return CHECK_DONE();
}
