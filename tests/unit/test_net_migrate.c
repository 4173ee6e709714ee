/* virtio-net migration with a transferred TAP, no KVM: as test_virtio_net,
 * this test plays the guest driver on a buffer (the "guest RAM" both
 * devices share, as a memfd would be shared) and the host on an AF_PACKET
 * socket bound to the TAP, in a private network namespace (needs root;
 * exits 77 otherwise).
 *
 * Device A (source) carries traffic; a frame is held in its bounce buffer
 * (the guest has no rx buffers); A is quiesced and saved; device B (target)
 * is created with dups of A's TAP fds and `incoming`, checks the backend
 * description, loads the state; "commit": A goes away, B is activated the
 * way the transport's resume does it. Nothing may be lost or reordered,
 * and creating B must not change the TAP. Then B -> C with two active
 * queue pairs, a quiesce undone by unquiesce, and bad input. With
 * /dev/vhost-net (the KVM test host) also a vhost quiesce/unquiesce. */
#include <errno.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "check.h"
#include "err.h"
#include "migstream.h"
#include "net_harness.h"
#include "tap.h"
#include "virtio_net.h"

#define QSIZE qsize
#define RX_SLOTS 512
#define RX_BUF_LEN (12 + 65536 + 1024) /* the device's bounce buffer */

static struct guest_mem mem;
static uv_loop_t loop;
static int host = -1;
static unsigned rx_slot;

static const uint64_t features = NET_BASE_FEATURES | VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX);

/* ---- fake transport ---- */

static void t_signal(void *t, unsigned q)
{
	(void)t, (void)q;
}

static const struct virtio_transport_ops fake_transport = { .signal_queue = t_signal };

/* ---- the guest driver (it outlives the devices, as a guest does) ---- */

static void kick(struct virtio_device *vd, unsigned q)
{
	vd->ops->queue_notify(vd, q);
}

/* Driver initialisation (3.1.1) of a device at power-on. */
static void driver_init(struct virtio_device *vd)
{
	CHECK_EQ(guest_driver_start(vd, features & vd->host_features, NQ), 0); /* less with some vhost-net */
}

/* The generic virtio state (negotiation, queues, indices) through
 * virtio.c's own save and load, as the MIG_PCI_FUNCTION section carries
 * it. */
static void copy_generic(const struct virtio_device *from, struct virtio_device *to)
{
	struct mig_buf b;
	mig_buf_init(&b);
	virtio_save(from, &b);
	CHECK_EQ(mig_buf_ok(&b, "virtio"), 0);
	struct mig_cursor c;
	mig_cursor_init(&c, b.data, b.len, "virtio");
	int rc = virtio_load(to, &c);
	if (rc == 0)
		rc = mig_cursor_finish(&c);
	if (rc)
		printf("     virtio_load: %s\n", vmm_error());
	CHECK_EQ(rc, 0);
	CHECK_EQ(to->driver_features, from->driver_features);
	CHECK_EQ(to->vqs[0].last_avail, from->vqs[0].last_avail);
	mig_buf_free(&b);
}

/* After the commit, as virtio_pci_resume_loaded does it: activate, then
 * kick every enabled queue once. */
static void resume(struct virtio_device *vd)
{
	CHECK_EQ(virtio_activate(vd), 0);
	virtio_kick_all(vd);
}

static void post_rx(struct virtio_device *vd, unsigned q, unsigned count)
{
	for (unsigned i = 0; i < count; i++) {
		struct seg s = { RX_GPA + (rx_slot++ % RX_SLOTS) * RX_STRIDE, RX_BUF, true };
		add_chain(q, &s, 1);
	}
	if (vd)
		kick(vd, q);
}

static void pump(unsigned ms)
{
	double end = now_ms() + ms;
	do {
		uv_run(&loop, UV_RUN_NOWAIT);
		usleep(1000);
	} while (now_ms() < end);
}

/* Waits up to timeout_ms for the next packet on rx queue q. */
static size_t next_packet(unsigned q, uint8_t *out, size_t cap, unsigned timeout_ms)
{
	double end = now_ms() + timeout_ms;
	for (;;) {
		size_t n = take_packet(q, out, cap, NULL);
		if (n || now_ms() > end)
			return n;
		uv_run(&loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
}

/* ---- frames and the host side ---- */

/* A small UDP frame towards the guest. */
static void host_send_small(const char *marker)
{
	static uint8_t frame[2048];
	size_t len = build_frame(frame, guest_mac, peer_mac, 17, 100, marker);
	struct virtio_net_hdr h = { 0 };
	CHECK_EQ(host_send(host, &h, frame, len), 0);
}

/* A 20000-byte TCP GSO frame: it reaches the TAP reader whole only while
 * the TAP's offloads include TSO4 (else the kernel segments it first). */
static void host_send_gso(const char *marker)
{
	static uint8_t frame[21000];
	size_t len = build_frame(frame, guest_mac, peer_mac, 6, 20000, marker);
	CHECK_EQ(host_send(host, &tcp4_gso_hdr, frame, len), 0);
}

/* The guest sends a small frame on tx queue q; the host must see it. */
static void check_tx(struct virtio_device *vd, unsigned q, const char *marker)
{
	queue_tx_frame(q, 80, marker);
	kick(vd, q);
	static uint8_t buf[4096];
	if (host_recv(host, buf, sizeof(buf), marker, 2000) < 0) {
		fprintf(stderr, "  tx %s did not reach the host\n", marker);
		CHECK(0);
	}
	uint16_t id;
	uint32_t ulen;
	while (get_used(q, &id, &ulen))
		;
}

/* The next packet on rx queue q must carry marker (and, if gso, come whole
 * as one TCPv4 GSO frame). */
static void expect_packet(unsigned q, const char *marker, bool gso)
{
	static uint8_t got[70000];
	size_t n = next_packet(q, got, sizeof(got), 2000);
	if (n == 0 || !memmem(got, n, marker, strlen(marker))) {
		fprintf(stderr, "  expected %s on rx queue %u, got %zu bytes%s\n", marker, q, n,
			n ? " without it" : "");
		CHECK(0);
		return;
	}
	if (gso) {
		CHECK_EQ(got[1] & 0x7f, VIRTIO_NET_HDR_GSO_TCPV4);
		CHECK_EQ(n, 12 + 14 + 20 + 20 + 20000);
	}
}

/* The TAP's netdev features (what TUNSETOFFLOAD changes), read with
 * ETHTOOL_GFEATURES on a socket: never through the TAP fds. */
struct features {
	uint32_t active[8];
};

static struct features tap_features(const char *ifname)
{
	struct features f;
	memset(&f, 0, sizeof(f));
	_Alignas(8) uint8_t raw[sizeof(struct ethtool_gfeatures) + 8 * sizeof(struct ethtool_get_features_block)];
	memset(raw, 0, sizeof(raw));
	struct ethtool_gfeatures *g = (void *)raw;
	g->cmd = ETHTOOL_GFEATURES;
	g->size = 8;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	ifr.ifr_data = (void *)raw;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	CHECK_EQ(ioctl(s, SIOCETHTOOL, &ifr), 0);
	close(s);
	for (unsigned i = 0; i < 8 && i < g->size; i++)
		f.active[i] = g->features[i].active;
	return f;
}

static int tx_csum_on(const char *ifname)
{
	struct ethtool_value v = { .cmd = ETHTOOL_GTXCSUM };
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	ifr.ifr_data = (void *)&v;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc = ioctl(s, SIOCETHTOOL, &ifr);
	close(s);
	return rc < 0 ? -1 : (int)v.data;
}

/* 1 attached, 0 detached, -1 not a TAP queue. */
static int queue_attached(int fd)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) < 0)
		return errno == EBADFD ? 0 : -1;
	return !(ifr.ifr_flags & IFF_DETACH_QUEUE);
}

static int vnet_hdr_len(int fd)
{
	int hdr = -1;
	ioctl(fd, TUNGETVNETHDRSZ, &hdr);
	return hdr;
}

/* ---- the migration steps ---- */

struct outgoing {
	struct mig_buf state, backend;
	int fds[2]; /* dups, as SCM_RIGHTS would give them */
	unsigned nfds;
};

static void source_side(struct virtio_net *src, struct outgoing *o)
{
	mig_buf_init(&o->state);
	mig_buf_init(&o->backend);
	CHECK_EQ(virtio_net_quiesce(src), 0);
	CHECK_EQ(virtio_net_save(src, &o->state), 0);
	CHECK_EQ(virtio_net_backend_save(src, &o->backend), 0);
	int fds[4];
	o->nfds = virtio_net_tap_fds(src, fds, 4);
	CHECK_EQ(o->nfds, 2);
	for (unsigned i = 0; i < o->nfds && i < 2; i++)
		o->fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
}

static void outgoing_free(struct outgoing *o)
{
	mig_buf_free(&o->state);
	mig_buf_free(&o->backend);
}

static struct virtio_net *target_new(const int *fds, unsigned pairs, bool vhost)
{
	struct virtio_net_options cfg = {
		.name = "net0",
		.tap_fds = fds,
		.queue_pairs = pairs,
		.queue_size = QSIZE,
		.incoming = true,
		.vhost = vhost,
	};
	memcpy(cfg.mac, guest_mac, 6);
	struct virtio_net *n = virtio_net_new(&cfg, &mem, &loop);
	if (!n)
		printf("     target: %s\n", vmm_error());
	return n;
}

/* Target side up to the commit; NULL (checks failed) if anything fails. */
static struct virtio_net *target_side(struct outgoing *o)
{
	struct virtio_net *n = target_new(o->fds, 2, false);
	CHECK(n != NULL);
	if (!n)
		return NULL;
	virtio_net_device(n)->transport = &fake_transport;
	CHECK_EQ(virtio_net_backend_check(n, o->backend.data, o->backend.len), 0);
	CHECK_EQ(virtio_net_load(n, o->state.data, o->state.len), 0);
	return n;
}

/* ---- cases ---- */

static struct virtio_net *a, *b, *c;

static void test_source_carries_traffic(void)
{
	struct virtio_net_options cfg = {
		.name = "net0",
		.ifname = "vmg0",
		.queue_pairs = 2,
		.queue_size = QSIZE,
	};
	memcpy(cfg.mac, guest_mac, 6);
	a = virtio_net_new(&cfg, &mem, &loop);
	CHECK(a != NULL);
	if (!a) {
		printf("     %s\n", vmm_error());
		return;
	}
	struct virtio_device *vd = virtio_net_device(a);
	vd->transport = &fake_transport;
	CHECK_EQ(link_up("vmg0"), 0);
	host = open_host("vmg0");
	CHECK(host >= 0);
	driver_init(vd);
	check_tx(vd, 1, "a-tx-1");
	post_rx(vd, 0, 1);
	host_send_small("a-rx-1");
	expect_packet(0, "a-rx-1", false);
	CHECK_EQ(tx_csum_on("vmg0"), 1); /* the guest's offloads are on the TAP */
}

static void test_migrate_with_held_frame(void)
{
	if (!a || host < 0)
		return;
	struct virtio_device *avd = virtio_net_device(a);
	/* no rx buffers: A reads the GSO frame into its bounce buffer and
	 * waits; the frames after it stay in the TAP's queue */
	host_send_gso("held-1");
	pump(200);
	host_send_small("queued-2");
	pump(50);
	struct virtio_net_stats sa;
	virtio_net_get_stats(a, &sa);

	struct outgoing o;
	source_side(a, &o);
	CHECK(memmem(o.state.data, o.state.len, "held-1", 6) != NULL); /* the frame travels */
	int q1 = o.fds[1];
	CHECK_EQ(queue_attached(q1), 0); /* one active pair: queue 1 detached */
	struct features before = tap_features("vmg0");

	/* the target is built while the source still owns the TAP */
	b = target_side(&o);
	if (!b) {
		outgoing_free(&o);
		return;
	}
	struct features after = tap_features("vmg0");
	CHECK(memcmp(&before, &after, sizeof(before)) == 0); /* no TUNSETOFFLOAD probe */
	CHECK_EQ(tx_csum_on("vmg0"), 1);
	CHECK_EQ(queue_attached(q1), 0); /* adopted detached, not attached */
	CHECK_EQ(vnet_hdr_len(o.fds[0]), 12);
	/* sent while frozen, after B was created: still offloaded as one GSO
	 * frame, so B's creation left the offloads alone */
	host_send_gso("frozen-3");

	/* commit: the generic state moves, the source goes away */
	struct virtio_device *bvd = virtio_net_device(b);
	copy_generic(avd, bvd);
	virtio_net_free(a);
	a = NULL;
	resume(bvd);
	CHECK_EQ(queue_attached(q1), 0); /* still one active pair */

	/* the guest gives buffers: the held frame first, nothing lost */
	post_rx(bvd, 0, 64);
	expect_packet(0, "held-1", true);
	expect_packet(0, "queued-2", false);
	expect_packet(0, "frozen-3", true);
	check_tx(bvd, 1, "b-tx-1");
	host_send_small("b-rx-1");
	expect_packet(0, "b-rx-1", false);
	struct virtio_net_stats sb;
	virtio_net_get_stats(b, &sb);
	CHECK_EQ(sb.rx_packets, sa.rx_packets + 4); /* counters continue */
	CHECK_EQ(sb.rx_dropped, sa.rx_dropped);
	CHECK_EQ(sb.tx_packets, sa.tx_packets + 1);
	CHECK_EQ(sb.active_pairs, 1);
	outgoing_free(&o);
}

static uint8_t ctrl_cmd(struct virtio_device *vd, uint8_t cls, uint8_t cmd, const void *data, uint32_t dlen)
{
	uint8_t *hdr = guest + CTRL_GPA, *ack = guest + CTRL_GPA + 0x200;
	hdr[0] = cls;
	hdr[1] = cmd;
	memcpy(guest + CTRL_GPA + 0x100, data, dlen);
	*ack = 0xee;
	struct seg s[3] = { { CTRL_GPA, 2, false }, { CTRL_GPA + 0x100, dlen, false }, { CTRL_GPA + 0x200, 1, true } };
	add_chain(CTRLQ, s, 3);
	kick(vd, CTRLQ);
	uint16_t id;
	uint32_t len;
	return get_used(CTRLQ, &id, &len) ? *ack : 0xff;
}

/* B -> C with two active pairs: the target starts both, attaches both
 * queues, and pair 1 carries traffic at once. */
static void test_migrate_two_pairs(void)
{
	if (!b)
		return;
	struct virtio_device *bvd = virtio_net_device(b);
	uint16_t k = 2;
	CHECK_EQ(ctrl_cmd(bvd, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &k, 2), 0);
	struct outgoing o;
	source_side(b, &o);
	CHECK_EQ(queue_attached(o.fds[1]), 1);
	c = target_side(&o);
	if (!c) {
		outgoing_free(&o);
		return;
	}
	struct virtio_device *cvd = virtio_net_device(c);
	copy_generic(bvd, cvd);
	virtio_net_free(b);
	b = NULL;
	resume(cvd);
	struct virtio_net_stats st;
	virtio_net_get_stats(c, &st);
	CHECK_EQ(st.active_pairs, 2); /* as the driver set it, not the power-on 1 */
	CHECK_EQ(queue_attached(o.fds[0]), 1);
	CHECK_EQ(queue_attached(o.fds[1]), 1);
	check_tx(cvd, 3, "c-tx-pair-1");
	check_tx(cvd, 1, "c-tx-pair-0");
	post_rx(cvd, 0, 16);
	post_rx(cvd, 2, 16);
	host_send_small("c-rx-1");
	static uint8_t got[4096];
	double end = now_ms() + 2000;
	size_t n = 0;
	while (n == 0 && now_ms() < end) {
		uv_run(&loop, UV_RUN_NOWAIT);
		n = take_packet(0, got, sizeof(got), NULL);
		if (!n)
			n = take_packet(2, got, sizeof(got), NULL);
		usleep(1000);
	}
	CHECK(n > 0 && memmem(got, n, "c-rx-1", 6));
	outgoing_free(&o);
}

/* A failed migration: quiesce + save, then unquiesce; the held frame and
 * what queued meanwhile arrive in order. */
static void test_unquiesce(void)
{
	if (!c)
		return;
	struct virtio_device *cvd = virtio_net_device(c);
	uint16_t k = 1;
	CHECK_EQ(ctrl_cmd(cvd, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &k, 2), 0);
	/* use up the posted buffers so the next frame is held */
	pump(20);
	static uint8_t got[4096];
	while (take_packet(0, got, sizeof(got), NULL))
		;
	unsigned left = (uint16_t)(gqs[0].avail_idx - virtio_net_device(c)->vqs[0].last_avail);
	for (unsigned i = 0; i < left; i++) {
		char m[32];
		snprintf(m, sizeof(m), "fill-%u", i);
		host_send_small(m);
	}
	pump(100);
	while (take_packet(0, got, sizeof(got), NULL))
		;
	host_send_small("uq-held");
	pump(100);
	struct mig_buf s;
	mig_buf_init(&s);
	CHECK_EQ(virtio_net_quiesce(c), 0);
	CHECK_EQ(virtio_net_quiesce(c), 0); /* idempotent */
	CHECK_EQ(virtio_net_save(c, &s), 0);
	CHECK(memmem(s.data, s.len, "uq-held", 7) != NULL);
	host_send_small("uq-queued");
	post_rx(cvd, 0, 4); /* a kick while quiesced: ignored, not lost */
	pump(50);
	CHECK_EQ(take_packet(0, got, sizeof(got), NULL), 0);
	CHECK_EQ(virtio_net_unquiesce(c), 0);
	expect_packet(0, "uq-held", false);
	expect_packet(0, "uq-queued", false);
	check_tx(cvd, 1, "after-unquiesce");
	mig_buf_free(&s);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Offsets in the MIG_NET payload (virtio_net.h). */
#define N_PAIRS 0
#define N_ACTIVE 4
#define N_SUPPORTED 8
#define N_OFFLOADS 12
#define N_PAIR0 (16 + 6 * 8)

static void expect_load_fails(struct virtio_net *n, const uint8_t *p, size_t len, const char *msg)
{
	CHECK_EQ(virtio_net_load(n, p, len), -1);
	CHECK_CONTAINS(vmm_error(), msg);
}

/* A payload with no frames, and one with a frame of `flen` bytes on pair 0. */
static void build_state(struct mig_buf *m, uint32_t pairs, uint32_t active, uint8_t flags, uint32_t flen)
{
	mig_buf_init(m);
	mig_put_u32(m, pairs);
	mig_put_u32(m, active);
	mig_put_u32(m, TUN_F_CSUM | TUN_F_TSO4);
	mig_put_u32(m, TUN_F_CSUM);
	for (int i = 0; i < 6; i++)
		mig_put_u64(m, 7);
	for (uint32_t i = 0; i < pairs; i++) {
		mig_put_u8(m, i == 0 ? flags : 0);
		mig_put_u32(m, i == 0 ? flen : 0);
		for (uint32_t j = 0; i == 0 && j < flen; j++)
			mig_put_u8(m, (uint8_t)j);
	}
}

static void test_load_bad_input(void)
{
	struct virtio_net_options cfg = { .name = "net9", .ifname = "vmg9", .queue_pairs = 2, .queue_size = QSIZE };
	struct virtio_net *n = virtio_net_new(&cfg, &mem, &loop);
	CHECK(n != NULL);
	if (!n)
		return;
	struct mig_buf m;
	build_state(&m, 2, 2, 1, 1000);
	CHECK_EQ(virtio_net_load(n, m.data, m.len), 0); /* the good one */
	uint8_t *p = malloc(m.len + 1);
	memcpy(p, m.data, m.len);
	p[m.len] = 0;
	for (size_t cut = 0; cut < m.len; cut += cut < 80 ? 7 : 333)
		expect_load_fails(n, p, cut, "truncated");
	expect_load_fails(n, p, m.len + 1, "trailing");
	put32(p + N_PAIRS, 3);
	expect_load_fails(n, p, m.len, "the state has 3 queue pairs, this device 2");
	put32(p + N_PAIRS, 2);
	put32(p + N_ACTIVE, 3);
	expect_load_fails(n, p, m.len, "3 active queue pairs (at most 2)");
	put32(p + N_ACTIVE, 0xffffffffu);
	expect_load_fails(n, p, m.len, "active queue pairs");
	put32(p + N_ACTIVE, 1);
	put32(p + N_SUPPORTED, 0x80);
	expect_load_fails(n, p, m.len, "unknown bits");
	put32(p + N_SUPPORTED, TUN_F_CSUM);
	put32(p + N_OFFLOADS, TUN_F_CSUM | TUN_F_TSO6);
	expect_load_fails(n, p, m.len, "only 0x1 supported");
	put32(p + N_OFFLOADS, TUN_F_CSUM);
	p[N_PAIR0] = 3;
	expect_load_fails(n, p, m.len, "unknown flags");
	p[N_PAIR0] = 1;
	put32(p + N_PAIR0 + 1, 0xffffffffu);
	expect_load_fails(n, p, m.len, "pending rx frame of 4294967295 bytes");
	free(p);
	mig_buf_free(&m);

	build_state(&m, 2, 1, 1, RX_BUF_LEN); /* one byte more than the bounce buffer takes */
	expect_load_fails(n, m.data, m.len, "pending rx frame of 66572 bytes (12..66571)");
	mig_buf_free(&m);
	build_state(&m, 2, 1, 1, RX_BUF_LEN - 1);
	CHECK_EQ(virtio_net_load(n, m.data, m.len), 0);
	mig_buf_free(&m);
	build_state(&m, 2, 1, 1, 11);
	expect_load_fails(n, m.data, m.len, "pending rx frame of 11 bytes");
	mig_buf_free(&m);
	build_state(&m, 2, 1, 0, 5);
	expect_load_fails(n, m.data, m.len, "without a pending frame");
	mig_buf_free(&m);
	expect_load_fails(n, NULL, 0, "net9: truncated");

	/* save needs quiesce first */
	mig_buf_init(&m);
	CHECK_EQ(virtio_net_save(n, &m), -1);
	CHECK_CONTAINS(vmm_error(), "quiesce");
	mig_buf_free(&m);
	/* an active device refuses a load */
	struct virtio_device *vd = virtio_net_device(n);
	vd->transport = &fake_transport;
	build_state(&m, 2, 1, 0, 0);
	if (c) {
		CHECK_EQ(virtio_net_load(c, m.data, m.len), -1);
		CHECK_CONTAINS(vmm_error(), "active device");
	}
	mig_buf_free(&m);
	virtio_net_free(n);
}

static void test_backend_check_bad(void)
{
	if (!c)
		return;
	struct outgoing o;
	mig_buf_init(&o.backend);
	CHECK_EQ(virtio_net_backend_save(c, &o.backend), 0);
	int cfds[2];
	CHECK_EQ(virtio_net_tap_fds(c, cfds, 2), 2);
	CHECK_EQ(virtio_net_tap_fds(c, cfds, 1), 2); /* count even when the array is short */

	/* a pipe, /dev/null: refused when the device is created */
	int p[2];
	CHECK_EQ(pipe(p), 0);
	CHECK(target_new(p, 2, false) == NULL);
	CHECK_CONTAINS(vmm_error(), "is not a TAP queue: it is a pipe");
	int null2[2] = { open("/dev/null", O_RDWR | O_CLOEXEC), open("/dev/null", O_RDWR | O_CLOEXEC) };
	CHECK(target_new(null2, 2, false) == NULL);
	CHECK_CONTAINS(vmm_error(), "character device 1:3");
	/* the fds are still the caller's after a failure */
	CHECK(fcntl(p[0], F_GETFD) >= 0);
	close(p[0]), close(p[1]), close(null2[0]), close(null2[1]);

	/* another TAP's queues: adopted (they are a TAP), refused by the check */
	struct virtio_net_options cfg = { .name = "net8", .ifname = "vmg8", .queue_pairs = 2, .queue_size = QSIZE };
	struct virtio_net *other = virtio_net_new(&cfg, &mem, &loop);
	CHECK(other != NULL);
	if (other) {
		int ofds[2];
		virtio_net_tap_fds(other, ofds, 2);
		int d[2] = { dup(ofds[0]), dup(ofds[1]) };
		struct virtio_net *t = target_new(d, 2, false);
		CHECK(t != NULL);
		if (t) {
			CHECK_EQ(virtio_net_backend_check(t, o.backend.data, o.backend.len), -1);
			CHECK_CONTAINS(vmm_error(), "queues of TAP vmg8, the source describes TAP vmg0");
		}
		virtio_net_free(t);
		virtio_net_free(other);
	}

	/* the right TAP, but one fd fewer than described */
	int one = dup(cfds[0]);
	struct virtio_net *t1 = target_new(&one, 1, false);
	CHECK(t1 != NULL);
	if (t1) {
		CHECK_EQ(virtio_net_backend_check(t1, o.backend.data, o.backend.len), -1);
		CHECK_CONTAINS(vmm_error(), "has 2 queues, 1 fds were adopted");
	}
	virtio_net_free(t1);

	/* the right fds, but the description disagrees or is cut short */
	int d2[2] = { dup(cfds[0]), dup(cfds[1]) };
	struct virtio_net *t2 = target_new(d2, 2, false);
	CHECK(t2 != NULL);
	if (t2) {
		CHECK_EQ(virtio_net_backend_check(t2, o.backend.data, o.backend.len), 0);
		uint8_t *bp = malloc(o.backend.len);
		memcpy(bp, o.backend.data, o.backend.len);
		bp[o.backend.len - 1] ^= 1; /* queue 1 attached <-> detached */
		CHECK_EQ(virtio_net_backend_check(t2, bp, o.backend.len), -1);
		CHECK_CONTAINS(vmm_error(), "queue 1");
		CHECK_CONTAINS(vmm_error(), "the source describes it");
		bp[o.backend.len - 1] ^= 1;
		put32(bp + 20, 10);
		CHECK_EQ(virtio_net_backend_check(t2, bp, o.backend.len), -1);
		CHECK_CONTAINS(vmm_error(), "vnet header of 10 bytes");
		put32(bp + 20, 12);
		memcpy(bp + 4, "vmg0-not-nul-end", 16);
		CHECK_EQ(virtio_net_backend_check(t2, bp, o.backend.len), -1);
		CHECK_CONTAINS(vmm_error(), "not NUL-terminated");
		memcpy(bp + 4, o.backend.data + 4, 16);
		CHECK_EQ(virtio_net_backend_check(t2, bp, o.backend.len - 1), -1);
		CHECK_CONTAINS(vmm_error(), "truncated");
		free(bp);
	}
	virtio_net_free(t2);

	/* a /dev/net/tun fd that never joined a TAP answers TUNGETIFF as a
	 * detached queue does on older kernels (EBADFD): adopted unverified,
	 * it fails when it is attached, before any packet goes through it */
	int fresh = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	int d3[2] = { dup(cfds[0]), fresh };
	struct tap t;
	CHECK_EQ(tap_adopt(&t, d3, 2), 0);
	CHECK(t.detached[1] && t.unverified[1]);
	CHECK_EQ(tap_check_queue(&t, 1), 0);
	CHECK_EQ(tap_set_queue_enabled(&t, 1, true), -1);
	printf("     %s\n", vmm_error());
	CHECK_CONTAINS(vmm_error(), "queue 1");
	tap_close(&t);
	mig_buf_free(&o.backend);
}

/* ---- vhost (only where /dev/vhost-net exists) ---- */

static int kick_fds[NQ], call_fds[NQ];

static int t_kick_fd(void *t, unsigned q)
{
	(void)t;
	return q < NQ ? kick_fds[q] : -1;
}

static int t_call_fd(void *t, unsigned q)
{
	(void)t;
	return q < NQ ? call_fds[q] : -1;
}

static const struct virtio_transport_ops vhost_transport = {
	.signal_queue = t_signal,
	.kick_fd = t_kick_fd,
	.call_fd = t_call_fd,
};

static bool wait_used(unsigned q, uint16_t want, unsigned ms)
{
	double end = now_ms() + ms;
	while ((uint16_t)(used_idx(q) - gqs[q].used_seen) < want && now_ms() < end)
		usleep(1000);
	return (uint16_t)(used_idx(q) - gqs[q].used_seen) >= want;
}

static void vhost_tx(unsigned q, const char *marker)
{
	queue_tx_frame(q, 80, marker);
	eventfd_write(kick_fds[q], 1);
}

static void test_vhost_quiesce_unquiesce(void)
{
	if (access("/dev/vhost-net", F_OK) != 0) {
		printf("     (skipped: no /dev/vhost-net)\n");
		return;
	}
	if (c) /* it shares the guest's rings: quiet it */
		virtio_reset(virtio_net_device(c));
	for (unsigned q = 0; q < NQ; q++) {
		kick_fds[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		call_fds[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	}
	struct virtio_net_options cfg = { .name = "netv", .ifname = "vmgv", .queue_pairs = 2,
					  .queue_size = QSIZE, .vhost = true };
	memcpy(cfg.mac, guest_mac, 6);
	struct virtio_net *v = virtio_net_new(&cfg, &mem, &loop);
	CHECK(v != NULL);
	if (!v) {
		printf("     %s\n", vmm_error());
		return;
	}
	CHECK(virtio_net_uses_vhost(v));
	struct virtio_device *vd = virtio_net_device(v);
	vd->transport = &vhost_transport;
	int vhost_host = host;
	CHECK_EQ(link_up("vmgv"), 0);
	host = open_host("vmgv");
	driver_init(vd);
	vhost_tx(1, "vh-1");
	static uint8_t buf[4096];
	CHECK(host_recv(host, buf, sizeof(buf), "vh-1", 2000) > 0);
	CHECK(wait_used(1, 1, 2000));
	CHECK_EQ(virtio_net_quiesce(v), 0);
	CHECK_EQ(vd->vqs[1].last_avail, gqs[1].avail_idx); /* the kernel's index came back */
	CHECK_EQ(vd->vqs[1].used_idx, used_idx(1));
	struct mig_buf s;
	mig_buf_init(&s);
	CHECK_EQ(virtio_net_save(v, &s), 0);
	mig_buf_free(&s);
	/* stopped: a kick is not served */
	vhost_tx(1, "vh-2");
	CHECK(host_recv(host, buf, sizeof(buf), "vh-2", 200) < 0);
	/* restarted from the saved index: the pending kick is served */
	CHECK_EQ(virtio_net_unquiesce(v), 0);
	CHECK(host_recv(host, buf, sizeof(buf), "vh-2", 2000) > 0);
	vhost_tx(1, "vh-3");
	CHECK(host_recv(host, buf, sizeof(buf), "vh-3", 2000) > 0);
	virtio_reset(vd);
	virtio_net_free(v);
	close(host);
	host = vhost_host;
	for (unsigned q = 0; q < NQ; q++) {
		close(kick_fds[q]);
		close(call_fds[q]);
	}
}

int main(void)
{
	int skip = start_net_test();
	if (skip)
		return skip;
	CHECK_EQ(guest_mem_wrap(&mem, guest, GUEST_SIZE), 0);
	CHECK_EQ(uv_loop_init(&loop), 0);

	RUN(test_source_carries_traffic);
	RUN(test_migrate_with_held_frame);
	RUN(test_migrate_two_pairs);
	RUN(test_unquiesce);
	RUN(test_load_bad_input);
	RUN(test_backend_check_bad);
	RUN(test_vhost_quiesce_unquiesce);

	if (c)
		virtio_reset(virtio_net_device(c));
	virtio_net_free(a);
	virtio_net_free(b);
	virtio_net_free(c);
	if (host >= 0)
		close(host);
	uv_run(&loop, UV_RUN_NOWAIT);
	CHECK_EQ(uv_loop_close(&loop), 0);
	CHECK_EQ(if_nametoindex("vmg0"), 0); /* the last holder closed it */
	return CHECK_DONE();
}
