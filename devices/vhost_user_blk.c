/* vhost-user-blk (vhost_user_blk.h): a virtio device whose queues a
 * vhost-user backend serves, behind the virtio-pci transport. */
#include "vhost_user_blk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "board_pc.h"
#include "err.h"
#include "migstream.h"
#include "vhost_ring.h"
#include "vhost_user.h"
#include "virtio_blk.h"
#include "virtio_pci.h"

/* How long a connect keeps trying while the backend still serves another
 * front end (the other side of a migration letting go). */
#define RECONNECT_MS 5000

/* What this front end lets through from the backend's features to the
 * guest. Not CONFIG_WCE: the cache mode would have to go to the backend
 * (SET_CONFIG), and a backend that offers it decides alone then. */
#define VUB_FEATURES                                                                                      \
	(VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX) |                           \
	 VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC) | VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX) |                    \
	 VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) | VIRTIO_BIT(VUB_F_GEOMETRY) | VIRTIO_BIT(VIRTIO_BLK_F_RO) |    \
	 VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) | VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) |                             \
	 VIRTIO_BIT(VIRTIO_BLK_F_TOPOLOGY) | VIRTIO_BIT(VIRTIO_BLK_F_MQ) |                                \
	 VIRTIO_BIT(VIRTIO_BLK_F_DISCARD) | VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES))
#define VUB_F_GEOMETRY 4

#define VUB_PROTOCOL                                                                                      \
	((1ull << VHOST_USER_PROTOCOL_F_MQ) | (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |                 \
	 (1ull << VHOST_USER_PROTOCOL_F_CONFIG) | (1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD))

struct vub {
	struct device dev;
	struct virtio_device vd;
	struct virtio_pci *pci;
	struct vhost_user conn;   /* fd -1 while not connected */
	const char *socket;       /* the config's */
	uint8_t config[VIRTIO_BLK_CONFIG_SIZE]; /* the backend's, num_queues ours */
	bool have_config;         /* from the backend or a migration source */
	bool running[VIRTIO_BLK_MAX_QUEUES]; /* rings the backend serves */
	bool failed;              /* the backend broke; said once */
	/* Backend transfer. Target: the connection and the eventfds came from
	 * the source, whose rings run on: nothing is said to the backend
	 * until the guest resets the device. Source: the freeze left the
	 * connection to the target (a rollback takes it back as it is). */
	bool adopted, left;
	/* The backend holds ring addresses in the source's address space
	 * (SET_VRING_ADDR, the memory table): libvhost-user translates them
	 * again through any new memory table and drops a front end whose
	 * rings do not map. The target maps guest RAM at the source's address
	 * where that range is free (nearly always), and then all addresses
	 * agree; where it is not, the first set-up from this process starts
	 * a new session instead (it only comes with a guest reset or a first
	 * activation, when no ring runs). */
	bool foreign_map;
	uintptr_t source_ram;     /* target: where the source had guest RAM */
	/* INFLIGHT_SHMFD: the backend's region of requests in flight, asked
	 * for at the first set-up, given back at each later one, dropped at
	 * a guest reset; with backend transfer it goes to the target. */
	int inflight_fd;          /* -1: none */
	struct vhost_user_inflight inflight;
	uv_poll_t *watch;         /* on the socket between calls */
	struct uv_loop_s *loop;
};

static const char *sock_of(const struct vub *v) { return v->socket; }

/* ---- the connection ---- */

static void watch_stop(struct vub *v)
{
	if (v->watch) {
		uv_close((uv_handle_t *)v->watch, (uv_close_cb)free);
		v->watch = NULL;
	}
}

/* Rings the backend no longer runs (its session ended): kicks back to the
 * transport, which is what a stopped ring has. */
static void forget_rings(struct vub *v)
{
	for (unsigned q = 0; q < v->vd.nqueues; q++) {
		if (v->running[q])
			virtio_take_kicks(&v->vd, q, false);
		v->running[q] = false;
	}
}

/* The backend broke: one line, the device needs a reset, the VM runs on. */
static void backend_failed(struct vub *v, const char *why)
{
	watch_stop(v);
	forget_rings(v);
	if (!v->failed) {
		v->failed = true;
		fprintf(stderr, "vmm: %s: vhost-user backend %s: %s; the disk stops, the VM runs on\n", v->dev.name,
			sock_of(v), why);
	}
	virtio_needs_reset(&v->vd, why);
}

static void on_socket(uv_poll_t *h, int status, int events)
{
	struct vub *v = h->data;
	(void)events;
	if (status < 0) {
		backend_failed(v, uv_strerror(status));
		return;
	}
	if (vhost_user_check_idle(&v->conn))
		backend_failed(v, vmm_error());
}

static int watch_start(struct vub *v)
{
	if (v->watch || !v->loop)
		return 0;
	uv_poll_t *w = calloc(1, sizeof(*w));
	if (!w)
		return vmm_fail("%s: out of memory", v->dev.name);
	int rc = uv_poll_init(v->loop, w, v->conn.fd);
	if (rc) {
		free(w);
		return vmm_fail("%s: watching the vhost-user socket: %s", v->dev.name, uv_strerror(rc));
	}
	w->data = v;
	rc = uv_poll_start(w, UV_READABLE | UV_DISCONNECT, on_socket);
	if (rc) {
		uv_close((uv_handle_t *)w, (uv_close_cb)free);
		return vmm_fail("%s: watching the vhost-user socket: %s", v->dev.name, uv_strerror(rc));
	}
	v->watch = w;
	return 0;
}

static void disconnect(struct vub *v)
{
	watch_stop(v);
	vhost_user_close(&v->conn);
}

static uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Connects and runs the handshake. The backend may still be serving the
 * other side of a migration, which lets go within moments: a refused
 * connect or a handshake that times out is tried again for up to wait_ms. */
static int connect_backend(struct vub *v, int wait_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)(wait_ms > 0 ? wait_ms : 0);
	for (;;) {
		int rc = vhost_user_connect(&v->conn, v->dev.name, v->socket);
		if (rc == 0) {
			if (wait_ms > 0)
				v->conn.timeout_ms = 1000; /* a busy backend does not answer */
			rc = vhost_user_handshake(&v->conn, VUB_PROTOCOL);
			v->conn.timeout_ms = 5000;
			if (rc == 0)
				break;
			vhost_user_close(&v->conn);
		}
		if (now_ms() >= deadline)
			return -1;
		struct timespec pause = { 0, 50 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
	struct vhost_user *u = &v->conn;
	if (!(u->protocol_features & (1ull << VHOST_USER_PROTOCOL_F_CONFIG))) {
		disconnect(v);
		return vmm_fail("%s: vhost-user backend %s offers no CONFIG protocol feature (the disk's capacity)",
				v->dev.name, v->socket);
	}
	if (!(u->features & VIRTIO_BIT(VIRTIO_F_VERSION_1))) {
		disconnect(v);
		return vmm_fail("%s: vhost-user backend %s does not offer VIRTIO_F_VERSION_1", v->dev.name,
				v->socket);
	}
	if (v->vd.nqueues > 1 && !(u->features & VIRTIO_BIT(VIRTIO_BLK_F_MQ))) {
		disconnect(v);
		return vmm_fail("%s: queues %u: vhost-user backend %s offers one queue (no VIRTIO_BLK_F_MQ)",
				v->dev.name, v->vd.nqueues, v->socket);
	}
	if ((u->protocol_features & (1ull << VHOST_USER_PROTOCOL_F_MQ)) && u->queue_num < v->vd.nqueues) {
		disconnect(v);
		return vmm_fail("%s: queues %u: vhost-user backend %s serves at most %u", v->dev.name,
				v->vd.nqueues, v->socket, u->queue_num);
	}
	return watch_start(v);
}

/* GET_CONFIG, with our queue count in it. */
static int read_config(struct vub *v)
{
	uint8_t c[VIRTIO_BLK_CONFIG_SIZE];
	if (vhost_user_get_config(&v->conn, 0, c, sizeof(c)))
		return vmm_fail_context("%s: vhost-user backend %s", v->dev.name, v->socket);
	c[VIRTIO_BLK_CFG_NUM_QUEUES] = (uint8_t)v->vd.nqueues;
	c[VIRTIO_BLK_CFG_NUM_QUEUES + 1] = (uint8_t)(v->vd.nqueues >> 8);
	memcpy(v->config, c, sizeof(c));
	v->have_config = true;
	return 0;
}

/* INFLIGHT_SHMFD negotiated: the region (asked for once) given to the
 * backend for this session, after SET_FEATURES as libvhost-user wants it. */
static int setup_inflight(struct vub *v)
{
	if (!(v->conn.protocol_features & (1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)))
		return 0;
	if (v->inflight_fd < 0 && vhost_user_get_inflight(&v->conn, (uint16_t)v->vd.nqueues, v->vd.queue_max_size,
							  &v->inflight, &v->inflight_fd))
		return -1;
	return vhost_user_set_inflight(&v->conn, &v->inflight, v->inflight_fd);
}

static void drop_inflight(struct vub *v)
{
	if (v->inflight_fd >= 0)
		close(v->inflight_fd);
	v->inflight_fd = -1;
}

/* One session's set-up: connected (or connecting), the negotiated
 * features, the memory table, every enabled ring from its indices. */
static int start_session(struct vub *v, int wait_ms)
{
	struct virtio_device *vd = &v->vd;
	if (v->conn.fd < 0 || vhost_user_broken(&v->conn)) {
		disconnect(v);
		if (connect_backend(v, wait_ms))
			return -1;
	}
	uint64_t missing = vd->driver_features & ~v->conn.features;
	if (missing)
		return vmm_fail("vhost-user backend %s no longer offers features 0x%llx", v->socket,
				(unsigned long long)missing);
	if (vhost_user_set_features(&v->conn, vd->driver_features) || setup_inflight(v) ||
	    vhost_user_set_mem_table(&v->conn, vd->mem))
		return -1;
	for (unsigned q = 0; q < vd->nqueues; q++) {
		if (!vd->vqs[q].enabled || v->running[q])
			continue;
		struct vhost_vring r;
		if (vhost_vring_of_queue(vd, q, true, &r))
			return -1;
		if (vhost_user_vring_start(&v->conn, q, &r)) {
			virtio_take_kicks(vd, q, false);
			return -1;
		}
		v->running[q] = true;
	}
	v->failed = false;
	return 0;
}

/* Everything a running device needs from the backend. A daemon that is
 * still letting go of the previous session (ours, or the other side's of a
 * migration) may hang up on a new one half-way through its set-up
 * (qemu-storage-daemon did, once in a few runs): then a new session, for
 * up to wait_ms. */
static int start_backend(struct vub *v, int wait_ms)
{
	if (v->foreign_map) {
		disconnect(v);
		v->foreign_map = false;
	}
	uint64_t deadline = now_ms() + (uint64_t)(wait_ms > 0 ? wait_ms : 0);
	for (;;) {
		int rc = start_session(v, wait_ms);
		if (rc == 0 || !vhost_user_broken(&v->conn) || now_ms() >= deadline)
			return rc;
		fprintf(stderr, "vmm: %s: vhost-user backend %s hung up during the set-up (%s): a new session\n",
			v->dev.name, v->socket, vmm_error());
		forget_rings(v);
		disconnect(v);
		struct timespec pause = { 0, 100 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
}

/* Stops every ring the backend serves and takes it back where it stopped.
 * -1 if one could not be stopped (its indices are unknown; the backend is
 * then treated as broken). */
static int stop_backend(struct vub *v)
{
	int rc = 0;
	for (unsigned q = 0; q < v->vd.nqueues; q++) {
		if (!v->running[q])
			continue;
		uint16_t last;
		v->running[q] = false;
		if (vhost_user_vring_stop(&v->conn, q, &last) == 0) {
			vhost_vring_stopped(&v->vd, q, last);
		} else {
			virtio_take_kicks(&v->vd, q, false);
			rc = -1;
		}
	}
	return rc;
}

/* ---- virtio device ops ---- */

static void vub_config_read(struct virtio_device *vd, uint32_t offset, void *data, unsigned len)
{
	struct vub *v = vd->opaque;
	memcpy(data, v->config + offset, len);
}

static void vub_config_write(struct virtio_device *vd, uint32_t offset, const void *data, unsigned len)
{
	/* nothing is writable without CONFIG_WCE, which is not offered */
	(void)vd, (void)offset, (void)data, (void)len;
}

/* Target, the connection handed over: the backend runs the rings the
 * source set up, on the same eventfds; take them as they are. */
static int adopt_running(struct vub *v)
{
	struct virtio_device *vd = &v->vd;
	for (unsigned q = 0; q < vd->nqueues; q++) {
		virtio_take_kicks(vd, q, true); /* the backend polls them */
		v->running[q] = vd->vqs[q].enabled;
	}
	return 0;
}

static int vub_activate(struct virtio_device *vd)
{
	struct vub *v = vd->opaque;
	if (v->adopted)
		return adopt_running(v);
	if (!virtio_has_feature(vd, VIRTIO_F_VERSION_1))
		return vmm_fail("the driver did not accept VIRTIO_F_VERSION_1");
	if (!vd->mem || vd->mem->fd < 0)
		return vmm_fail("no guest memory to share with the vhost-user backend (guest RAM must be a memfd)");
	if (start_backend(v, RECONNECT_MS)) {
		char why[512];
		snprintf(why, sizeof(why), "%s", vmm_error());
		stop_backend(v);
		if (vhost_user_broken(&v->conn))
			disconnect(v); /* the next activation reconnects */
		v->failed = true;
		return vmm_fail("%s", why);
	}
	return 0;
}

static void vub_reset(struct virtio_device *vd)
{
	struct vub *v = vd->opaque;
	if (stop_backend(v)) {
		fprintf(stderr, "vmm: %s: vhost-user backend %s: %s\n", v->dev.name, v->socket, vmm_error());
		disconnect(v); /* the next activation reconnects */
	}
	drop_inflight(v); /* the driver gave up whatever was in flight */
}

static const struct virtio_device_ops vub_ops = {
	.config_read = vub_config_read,
	.config_write = vub_config_write,
	.activate = vub_activate,
	.reset = vub_reset,
};

/* ---- backend transfer ---- */

/* A queue the backend runs and this process never stopped: its position
 * for the state. The used index is where the backend's completions stand
 * in guest memory (every chain before it is done). How far the backend
 * popped beyond it comes from the inflight region where there is one
 * (INFLIGHT_SHMFD; qemu-storage-daemon has none): the used index plus what
 * is in flight. Without one it is the used index too: a restart point,
 * which is all the target needs. */
static void ring_position(struct vub *v, unsigned q)
{
	struct virtqueue *vq = &v->vd.vqs[q];
	if (!vq->used)
		return;
	const volatile uint8_t *u = vq->used + 2;
	uint16_t used = (uint16_t)(u[0] | (u[1] << 8)), last = used;
	if (v->inflight_fd >= 0 && vhost_user_inflight_read(v->inflight_fd, &v->inflight, q, used, &last) < 0) {
		fprintf(stderr, "vmm: %s: vhost-user backend %s: %s; queue %u restarts at its used index\n",
			v->dev.name, v->socket, vmm_error(), q);
		last = used;
	}
	vq->used_idx = used;
	vq->last_avail = last;
	vq->signalled_used_valid = false;
}

struct handed_over {
	uint64_t features, protocol_features;
	uint32_t queue_num;
	uint8_t config[VIRTIO_BLK_CONFIG_SIZE];
	uint64_t ram_addr;
	bool has_inflight;        /* an inflight region's fd follows the eventfds */
	struct vhost_user_inflight inflight;
};

/* Checks what the source sent with the fds against this device. */
static int decode_handed_over(struct vub *v, const struct dev_backend *in, struct handed_over *out)
{
	const char *name = v->dev.name;
	struct mig_cursor c;
	mig_cursor_init(&c, in->state, in->len, name);
	out->features = mig_get_u64(&c);
	out->protocol_features = mig_get_u64(&c);
	out->queue_num = mig_get_u32(&c);
	unsigned nq = mig_get_u16(&c), nev = mig_get_u16(&c), clen = mig_get_u16(&c);
	mig_get_bytes(&c, out->config, sizeof(out->config));
	out->ram_addr = mig_get_u64(&c);
	/* from here on optional: a source without INFLIGHT_SHMFD support
	 * (older builds) ends the state here */
	out->has_inflight = false;
	if (mig_cursor_left(&c) > 0) {
		uint8_t has = mig_get_u8(&c);
		if (has > 1) {
			mig_cursor_finish(&c);
			return vmm_fail("%s: vhost-user backend: inflight flag %u", name, has);
		}
		out->has_inflight = has;
		if (has) {
			out->inflight.mmap_size = mig_get_u64(&c);
			out->inflight.mmap_offset = mig_get_u64(&c);
			out->inflight.num_queues = mig_get_u16(&c);
			out->inflight.queue_size = mig_get_u16(&c);
		}
	}
	if (mig_cursor_finish(&c))
		return vmm_fail_context("%s: vhost-user backend", name);
	if (nq != v->vd.nqueues)
		return vmm_fail("%s: vhost-user backend: %u queues, the device has %u", name, nq, v->vd.nqueues);
	if (clen != VIRTIO_BLK_CONFIG_SIZE)
		return vmm_fail("%s: vhost-user backend: configuration space of %u bytes, expected %d", name, clen,
				VIRTIO_BLK_CONFIG_SIZE);
	if (nev != 2 * nq + 1 || in->nfds != 1 + nev + out->has_inflight)
		return vmm_fail("%s: vhost-user backend: %u fds and %u eventfds announced for %u queues (expected the "
				"connection, %u eventfds%s)", name, in->nfds, nev, nq, 2 * nq + 1,
				out->has_inflight ? " and the inflight region" : "");
	if (out->has_inflight) {
		const struct vhost_user_inflight *g = &out->inflight;
		struct stat st;
		int fd = in->fds[in->nfds - 1];
		if (g->num_queues != nq || g->queue_size != v->vd.queue_max_size || g->mmap_size > VHOST_USER_INFLIGHT_MAX ||
		    g->mmap_size / nq < VHOST_USER_INFLIGHT_HDR + (uint64_t)VHOST_USER_INFLIGHT_DESC * g->queue_size)
			return vmm_fail("%s: vhost-user backend: an inflight region of %llu bytes for %u queues of %u "
					"(the device has %u of %u)", name, (unsigned long long)g->mmap_size, g->num_queues,
					g->queue_size, nq, v->vd.queue_max_size);
		if (fstat(fd, &st) < 0)
			return vmm_fail_errno("%s: vhost-user backend: the inflight region's fd", name);
		if (g->mmap_offset > VHOST_USER_INFLIGHT_MAX || (uint64_t)st.st_size < g->mmap_offset + g->mmap_size)
			return vmm_fail("%s: vhost-user backend: the inflight region's fd holds %lld bytes, the region "
					"ends at %llu", name, (long long)st.st_size,
					(unsigned long long)(g->mmap_offset + g->mmap_size));
	}
	if (!(out->features & VIRTIO_BIT(VIRTIO_F_VERSION_1)))
		return vmm_fail("%s: vhost-user backend: features 0x%llx lack VIRTIO_F_VERSION_1", name,
				(unsigned long long)out->features);
	return 0;
}

/* ---- the device type ---- */

#define F(field) offsetof(struct vhost_user_blk_config, field)
static const struct dev_field vub_fields[] = {
	{ .name = "socket", .kind = DEV_STRING, .offset = F(socket), .size = VUB_SOCKET_SIZE, .min = 1,
	  .max = VUB_SOCKET_SIZE - 1, .backend = true },
	{ .name = "queues", .kind = DEV_U32, .offset = F(queues), .min = 1, .max = VIRTIO_BLK_MAX_QUEUES },
	{ .name = "queue_size", .kind = DEV_U16, .offset = F(queue_size), .min = 64, .max = 1024,
	  .power_of_2 = true },
	{ 0 },
};
#undef F

static void vub_defaults(void *config)
{
	struct vhost_user_blk_config *c = config;
	memset(c, 0, sizeof(*c));
	c->queues = 1;
	c->queue_size = 128;
}

static void vub_free(struct device *d)
{
	struct vub *v = (struct vub *)d;
	virtio_pci_free(v->pci);
	/* no GET_VRING_BASE: guest RAM may be gone; the backend stops its
	 * rings when the connection closes, on its own mapping of the memfd */
	disconnect(v);
	drop_inflight(v);
	virtio_destroy(&v->vd);
	free(v);
}

static struct device *vub_create(const struct device_host *h, const char *name, void *config,
				 const struct dev_backend *in)
{
	struct vhost_user_blk_config *c = config;
	struct pci_bus *bus = board_pc_pci_bus(h);
	if (!bus)
		return NULL;
	if (!h->loop) {
		vmm_fail("%s: no event loop to watch the vhost-user backend on", name);
		return NULL;
	}
	struct vub *v = device_alloc(sizeof(*v), &vhost_user_blk_type, name);
	if (!v)
		return NULL;
	v->socket = c->socket;
	v->loop = h->loop;
	v->conn.fd = -1;
	v->inflight_fd = -1;
	virtio_init(&v->vd, v->dev.name, VIRTIO_ID_BLOCK, &vub_ops, v, c->queues, c->queue_size,
		    VIRTIO_BLK_CONFIG_SIZE);
	v->vd.mem = h->mem;
	v->vd.loop = h->loop;
	struct handed_over got;
	if (in) {
		if (decode_handed_over(v, in, &got))
			goto fail;
		memcpy(v->config, got.config, sizeof(v->config));
		v->have_config = true;
		v->vd.host_features = got.features & VUB_FEATURES;
		v->source_ram = (uintptr_t)got.ram_addr;
		if (h->ram_address && v->source_ram)
			h->ram_address(h->opaque, v->source_ram);
	} else if (h->incoming) {
		/* The source still holds the backend, which serves one front
		 * end: the features and the configuration come with the state,
		 * and the connection when the VM starts here. */
		v->vd.host_features = VUB_FEATURES;
	} else {
		if (connect_backend(v, 0) || read_config(v)) {
			vmm_fail_context("%s", name);
			goto fail;
		}
		v->vd.host_features = v->conn.features & VUB_FEATURES;
	}
	v->pci = virtio_pci_new(bus, &v->vd, h->kvm, h->loop);
	if (!v->pci) {
		vmm_fail_context("%s", name);
		goto fail;
	}
	if (in) { /* last: on failure the fds stay the caller's */
		unsigned nev = in->nfds - 1 - got.has_inflight;
		if (virtio_pci_adopt_eventfds(v->pci, in->fds + 1, nev)) {
			virtio_pci_free(v->pci);
			goto fail;
		}
		vhost_user_adopt(&v->conn, v->dev.name, in->fds[0], got.features, got.protocol_features,
				 got.queue_num);
		if (got.has_inflight) {
			v->inflight_fd = in->fds[1 + nev];
			v->inflight = got.inflight;
		}
		v->adopted = v->foreign_map = true;
		for (unsigned q = 0; q < v->vd.nqueues; q++)
			virtio_take_kicks(&v->vd, q, true); /* never drain what the backend polls */
	}
	return &v->dev;
fail:
	disconnect(v);
	virtio_destroy(&v->vd);
	free(v);
	return NULL;
}

static int vub_realize(struct device *d)
{
	struct vub *v = (struct vub *)d;
	/* guest RAM is mapped by now: where the source had it, or not */
	if (v->adopted && v->vd.mem && v->vd.mem->host && (uintptr_t)v->vd.mem->host == v->source_ram)
		v->foreign_map = false;
	return virtio_pci_realize(v->pci);
}

/* The freeze: the backend completes what it popped and says where it
 * stopped; then this process lets go of it for the target. */
static int vub_quiesce(struct device *d)
{
	struct vub *v = (struct vub *)d;
	if (d->backend_leaving) {
		/* The connection goes to the target as it is, rings running:
		 * not a word to the backend. What it completes from now on
		 * waits in the eventfds for the target's irqfds. */
		watch_stop(v);
		virtio_pci_hold_interrupts(v->pci, true);
		for (unsigned q = 0; q < v->vd.nqueues; q++)
			if (v->running[q])
				ring_position(v, q);
		v->left = true;
		return 0;
	}
	if (stop_backend(v)) {
		vmm_fail_context("%s: stopping the vhost-user rings", d->name);
		return -1;
	}
	disconnect(v);
	return 0;
}

/* The migration failed: take the backend back (the target, if it got as
 * far as connecting, lets go when it is told or dies). */
static int vub_unquiesce(struct device *d)
{
	struct vub *v = (struct vub *)d;
	if (v->left) { /* the connection never changed hands */
		v->left = false;
		virtio_pci_hold_interrupts(v->pci, false);
		if (v->conn.fd >= 0 && watch_start(v))
			return vmm_fail_context("%s", d->name);
		return 0;
	}
	if (!v->vd.active) {
		if (connect_backend(v, RECONNECT_MS))
			return vmm_fail_context("%s: reconnecting", d->name);
		return 0;
	}
	if (start_backend(v, RECONNECT_MS)) {
		char why[512];
		snprintf(why, sizeof(why), "reconnecting after the failed migration: %s", vmm_error());
		backend_failed(v, why);
		return vmm_fail("%s: %s", d->name, why);
	}
	return 0;
}

/* The device's part: u16 length, then the configuration space. */
static int part_save(void *dev, struct mig_buf *b)
{
	struct vub *v = dev;
	mig_put_u16(b, sizeof(v->config));
	mig_put_bytes(b, v->config, sizeof(v->config));
	return 0;
}

static int part_check(void *dev, const void *p, size_t len)
{
	struct vub *v = dev;
	struct mig_cursor c;
	mig_cursor_init(&c, p, len, v->dev.name);
	uint16_t n = mig_get_u16(&c);
	if (!c.short_read && n != VIRTIO_BLK_CONFIG_SIZE)
		return vmm_fail("%s: configuration space of %u bytes, expected %d", v->dev.name, n,
				VIRTIO_BLK_CONFIG_SIZE);
	uint8_t cfg[VIRTIO_BLK_CONFIG_SIZE];
	mig_get_bytes(&c, cfg, sizeof(cfg));
	if (mig_cursor_finish(&c))
		return -1;
	unsigned nq = cfg[VIRTIO_BLK_CFG_NUM_QUEUES] | (cfg[VIRTIO_BLK_CFG_NUM_QUEUES + 1] << 8);
	if (nq != v->vd.nqueues)
		return vmm_fail("%s: configuration space says %u queues, the device has %u", v->dev.name, nq,
				v->vd.nqueues);
	return 0;
}

static int part_apply(void *dev, const void *p, size_t len)
{
	struct vub *v = dev;
	if (len < 2 + sizeof(v->config))
		return vmm_fail("%s: configuration space truncated", v->dev.name);
	memcpy(v->config, (const uint8_t *)p + 2, sizeof(v->config));
	v->have_config = true;
	if (v->adopted) /* the load gave the kicks back to the transport */
		for (unsigned q = 0; q < v->vd.nqueues; q++)
			virtio_take_kicks(&v->vd, q, true);
	return 0;
}

static const struct virtio_pci_part_ops vub_part = {
	.save = part_save, .check = part_check, .apply = part_apply,
};

static int vub_save(struct device *d, uint16_t version, struct mig_buf *b)
{
	struct vub *v = (struct vub *)d;
	(void)version;
	return virtio_pci_save_section(v->pci, d->name, &vub_part, v, b);
}

static int vub_load(struct device *d, uint16_t version, const void *p, size_t len)
{
	struct vub *v = (struct vub *)d;
	(void)version;
	return virtio_pci_load_section(v->pci, d->name, &vub_part, v, p, len);
}

static int vub_resume_loaded(struct device *d)
{
	struct vub *v = (struct vub *)d;
	int rc = virtio_pci_resume_loaded(v->pci);
	v->adopted = false; /* from here on the connection is this process's */
	if (v->conn.fd >= 0 && !v->watch && watch_start(v))
		rc = -1;
	return rc;
}

/* The function's BARs and MSI-X table, set up before the freeze. */
static int vub_preview_save(struct device *d, uint16_t version, struct mig_buf *b)
{
	(void)version;
	return virtio_pci_preview_save(((struct vub *)d)->pci, b);
}

static int vub_preview_load(struct device *d, uint16_t version, const void *p, size_t len)
{
	(void)version;
	return virtio_pci_preview_load(((struct vub *)d)->pci, p, len);
}

/* The backend handed over: the connection, then the eventfds
 * (virtio_pci_eventfds), then the inflight region if there is one. */
static unsigned vub_backend_fds(struct device *d, int *fds, unsigned max)
{
	struct vub *v = (struct vub *)d;
	if (max >= 1)
		fds[0] = v->conn.fd;
	unsigned n = 1 + virtio_pci_eventfds(v->pci, max > 0 ? fds + 1 : fds, max > 0 ? max - 1 : 0);
	if (v->inflight_fd >= 0) {
		if (max > n)
			fds[n] = v->inflight_fd;
		n++;
	}
	return n;
}

/* What the source negotiated, which the target must not ask again:
 * u64 features, u64 protocol features, u32 queue_num, u16 queues, u16
 * eventfds, u16 config length, the configuration space, u64 the address
 * of guest RAM here (the backend's ring and table addresses are in it);
 * then u8 1 and the inflight region (u64 size, u64 offset, u16 queues,
 * u16 queue size; its fd last), or u8 0. Builds before INFLIGHT_SHMFD
 * ended at the address, and a target takes that too. */
static int vub_backend_save(struct device *d, struct mig_buf *b)
{
	struct vub *v = (struct vub *)d;
	if (v->conn.fd < 0 || vhost_user_broken(&v->conn))
		return vmm_fail("%s: the vhost-user connection is %s: nothing to hand over", d->name,
				v->conn.fd < 0 ? "closed" : "broken");
	int fds[1];
	unsigned nev = virtio_pci_eventfds(v->pci, fds, 0);
	mig_put_u64(b, v->conn.features);
	mig_put_u64(b, v->conn.protocol_features);
	mig_put_u32(b, v->conn.queue_num);
	mig_put_u16(b, (uint16_t)v->vd.nqueues);
	mig_put_u16(b, (uint16_t)nev);
	mig_put_u16(b, sizeof(v->config));
	mig_put_bytes(b, v->config, sizeof(v->config));
	mig_put_u64(b, (uint64_t)(uintptr_t)v->vd.mem->host);
	mig_put_u8(b, v->inflight_fd >= 0);
	if (v->inflight_fd >= 0) {
		mig_put_u64(b, v->inflight.mmap_size);
		mig_put_u64(b, v->inflight.mmap_offset);
		mig_put_u16(b, v->inflight.num_queues);
		mig_put_u16(b, v->inflight.queue_size);
	}
	return 0;
}

static void vub_stats(struct device *d, void (*emit)(void *ctx, const char *name, uint64_t value), void *ctx)
{
	struct vub *v = (struct vub *)d;
	unsigned running = 0;
	for (unsigned q = 0; q < v->vd.nqueues; q++)
		running += v->running[q];
	uint64_t capacity = 0;
	for (int i = 7; i >= 0; i--)
		capacity = capacity << 8 | v->config[VIRTIO_BLK_CFG_CAPACITY + i];
	emit(ctx, "connected", v->conn.fd >= 0 && !vhost_user_broken(&v->conn));
	emit(ctx, "queues_running", running);
	emit(ctx, "capacity_sectors", capacity);
	emit(ctx, "backend_failed", v->failed);
	/* a handed-over connection whose addresses do not hold here: its next
	 * set-up will be a new session */
	emit(ctx, "new_session_pending", v->foreign_map);
	/* the backend's inflight region (INFLIGHT_SHMFD), bytes; 0 none */
	emit(ctx, "inflight_region", v->inflight_fd >= 0 ? v->inflight.mmap_size : 0);
}

static size_t vub_describe_state(struct device *d, char *buf, size_t len)
{
	struct vub *v = (struct vub *)d;
	size_t n = 0;
	unsigned running = 0;
	for (unsigned q = 0; q < v->vd.nqueues; q++)
		running += v->running[q];
	int w = snprintf(buf, len, "%s: vhost-user %s, %s, %u of %u queues running\n", d->name, v->socket,
			 v->conn.fd < 0 ? "not connected" :
			 vhost_user_broken(&v->conn) ? "connection broken" : "connected",
			 running, v->vd.nqueues);
	if (w > 0)
		n = (size_t)w < len ? (size_t)w : len - 1;
	for (unsigned q = 0; q < v->vd.nqueues && n + 1 < len; q++) {
		w = snprintf(buf + n, len - n, "queue %u: ", q);
		if (w > 0)
			n += (size_t)w < len - n ? (size_t)w : len - n - 1;
		w = vq_describe(&v->vd.vqs[q], buf + n, len - n);
		if (w > 0)
			n += (size_t)w < len - n ? (size_t)w : len - n - 1;
		if (n + 1 < len)
			buf[n++] = '\n', buf[n] = '\0';
	}
	return n;
}

const struct device_type vhost_user_blk_type = {
	.kind = "vhost-user-blk",
	.backend_label = "vhost-user socket",
	.config_size = sizeof(struct vhost_user_blk_config),
	.fields = vub_fields,
	.config_defaults = vub_defaults,
	.state_version = 1, .state_min_save = 1, .state_min_load = 1,
	.create = vub_create,
	.free = vub_free,
	.realize = vub_realize,
	.quiesce = vub_quiesce,
	.unquiesce = vub_unquiesce,
	.save = vub_save,
	.load = vub_load,
	.resume_loaded = vub_resume_loaded,
	.preview_save = vub_preview_save,
	.preview_load = vub_preview_load,
	.backend_fds = vub_backend_fds,
	.backend_save = vub_backend_save,
	.stats = vub_stats,
	.describe_state = vub_describe_state,
};
