/* The vhost-user-blk device against a backend that offers INFLIGHT_SHMFD
 * (tests/unit/fake_vhost_user.h; qemu-storage-daemon offers none): the
 * device asks for the inflight region once and gives it back each session,
 * drops it at a guest reset, and with backend transfer hands it to the
 * target with the connection, the target saying nothing to the backend;
 * the ring positions come from the region. The device is driven as Linux's
 * virtio_pci_modern driver would, on a rig with a KVM VM (ioeventfds and
 * irqfds; no vCPU runs). Without a KVM that can make a VM the test is
 * skipped, saying so (exit 77). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "device_rig.h"
#include "err.h"
#include "fake_vhost_user.h"
#include "migstream.h"
#include "vhost_user.h"
#include "vhost_user_blk.h"
#include "virtio.h"
#include "virtio_blk.h"
#include "virtio_pci.h"
#include "virtio_pci_driver.h"

#define RAM (4u << 20)
#define NQ 2
#define QSIZE 128

static char dir[64];
static char sock[96];

static void remove_dir(void)
{
	char cmd[96];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

/* ---- a driver on a rig ---- */

static struct rig *cur;
static unsigned slot;
static uint64_t common;
static const struct vpci_target target = { NULL, NULL, &slot, &common };
static struct vpci_target here;

static void pump(void)
{
	for (int i = 0; i < 4; i++)
		uv_run(&cur->loop, UV_RUN_NOWAIT);
}

/* Talks to the virtio-blk function on r. */
static void use(struct rig *r)
{
	cur = r;
	here = target;
	here.pio = &r->pio;
	here.mmio = &r->mmio;
	vpci = &here;
	slot = 32;
	for (unsigned s = 0; s < 32; s++) {
		slot = s;
		if (cfg_read(0, 4) == (0x1042u << 16 | 0x1af4u)) /* virtio 1.0 block */
			break;
		slot = 32;
	}
	CHECK(slot < 32);
}

static struct device *make(struct rig *r, const struct dev_backend *in)
{
	struct vhost_user_blk_config *c = calloc(1, sizeof(*c));
	vhost_user_blk_type.config_defaults(c);
	snprintf(c->socket, sizeof(c->socket), "%s", sock);
	c->queues = NQ;
	c->queue_size = QSIZE;
	struct device *d = vhost_user_blk_type.create(&r->host, in ? "dst0" : "src0", c, in);
	if (!d) {
		fprintf(stderr, "  create: %s\n", vmm_error());
		free(c);
		return NULL;
	}
	d->config = c;
	r->devs[r->n++] = d;
	if (vhost_user_blk_type.realize(d))
		fprintf(stderr, "  realize: %s\n", vmm_error());
	return d;
}

struct stat_ctx { const char *name; uint64_t value; bool found; };

static void emit(void *ctx, const char *name, uint64_t value)
{
	struct stat_ctx *s = ctx;
	if (!strcmp(s->name, name))
		s->value = value, s->found = true;
}

static uint64_t stat_of(struct device *d, const char *name)
{
	struct stat_ctx s = { name, 0, false };
	vhost_user_blk_type.stats(d, emit, &s);
	CHECK(s.found);
	return s.value;
}

static ino_t inode(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

static unsigned total_requests(struct fake_vu *f)
{
	unsigned n = 0;
	for (uint32_t r = 0; r < FAKE_VU_MAX_REQUEST; r++)
		n += fake_vu_count(f, r);
	return n;
}

/* ---- the tests ---- */

static struct fake_vu F;

static void test_the_inflight_region_is_asked_for_once_and_given_back_each_session(void)
{
	struct fake_vu *f = &F;
	struct rig r;
	CHECK_EQ(rig_up_kvm(&r, RAM), 0);
	struct device *d = make(&r, NULL);
	CHECK(d != NULL);
	if (!d)
		goto out;
	use(&r);
	struct vpci_layout L;
	CHECK_EQ(vpci_probe(&L, &common), 0);
	CHECK(vpci_start(&L, VIRTIO_BIT(VIRTIO_F_VERSION_1), NQ, QSIZE, pump) & VIRTIO_STATUS_DRIVER_OK);
	CHECK_EQ(stat_of(d, "queues_running"), NQ);
	CHECK_EQ(fake_vu_count(f, VHOST_USER_GET_INFLIGHT_FD), 1);
	CHECK_EQ(fake_vu_count(f, VHOST_USER_SET_INFLIGHT_FD), 1);
	CHECK_EQ(f->set_inflight_ino, f->inflight_ino); /* its own region back */
	CHECK_EQ(f->inflight.num_queues, NQ);
	CHECK_EQ(f->inflight.queue_size, QSIZE);
	CHECK_EQ(stat_of(d, "inflight_region"), f->inflight.mmap_size);

	/* a guest reset: the rings stop, the region goes (the driver gave up
	 * what was in flight); the next start asks for one again */
	CHECK_EQ(vpci_reset(pump), 0);
	CHECK_EQ(stat_of(d, "inflight_region"), 0);
	CHECK_EQ(fake_vu_count(f, VHOST_USER_GET_VRING_BASE), NQ);
	CHECK(vpci_start(&L, VIRTIO_BIT(VIRTIO_F_VERSION_1), NQ, QSIZE, pump) & VIRTIO_STATUS_DRIVER_OK);
	CHECK_EQ(fake_vu_count(f, VHOST_USER_GET_INFLIGHT_FD), 2);
	CHECK_EQ(fake_vu_count(f, VHOST_USER_SET_INFLIGHT_FD), 2);
	CHECK(stat_of(d, "inflight_region") > 0);
out:
	rig_down(&r);
}

static void test_backend_transfer_hands_the_inflight_region_to_the_target(void)
{
	struct fake_vu *f = &F;
	struct rig src, dst;
	CHECK_EQ(rig_up_kvm(&src, RAM), 0);
	CHECK_EQ(rig_up_kvm(&dst, RAM), 0);
	struct device *a = make(&src, NULL);
	CHECK(a != NULL);
	if (!a)
		goto out;
	use(&src);
	struct vpci_layout L;
	CHECK_EQ(vpci_probe(&L, &common), 0);
	CHECK(vpci_start(&L, VIRTIO_BIT(VIRTIO_F_VERSION_1), NQ, QSIZE, pump) & VIRTIO_STATUS_DRIVER_OK);
	CHECK_EQ(stat_of(a, "queues_running"), NQ);

	/* the backend has popped heads 5 and 9 of queue 1 and completed
	 * nothing (the used ring, zeroed RAM, is at 0) */
	CHECK_EQ(fake_vu_mark_inflight(f, 1, 5, true, 0), 0);
	CHECK_EQ(fake_vu_mark_inflight(f, 1, 9, true, 0), 0);

	/* the freeze, the backend going to the target */
	a->backend_leaving = true;
	CHECK_EQ(vhost_user_blk_type.quiesce(a), 0);
	int fds[16];
	unsigned n = vhost_user_blk_type.backend_fds(a, fds, 16);
	CHECK_EQ(n, 1 + (2 * NQ + 1) + 1); /* the connection, the eventfds, the region */
	CHECK_EQ(inode(fds[n - 1]), f->inflight_ino);
	struct mig_buf blob, state;
	mig_buf_init(&blob);
	mig_buf_init(&state);
	CHECK_EQ(vhost_user_blk_type.backend_save(a, &blob), 0);
	CHECK_EQ(vhost_user_blk_type.save(a, vhost_user_blk_type.state_version, &state), 0);
	unsigned before = total_requests(f), conns = f->connections;

	/* what a source without INFLIGHT_SHMFD support sent (the state ends
	 * at the address of guest RAM, no region fd) is taken too; a state
	 * that announces a region and sends no fd for it is refused */
	int olds[16];
	for (unsigned i = 0; i + 1 < n; i++)
		olds[i] = dup(fds[i]);
	struct dev_backend old = { olds, n - 1, blob.data, blob.len - (1 + 8 + 8 + 2 + 2) - 1 + 1 };
	struct device *o = make(&dst, &old);
	CHECK(o != NULL);
	if (o) {
		CHECK_EQ(stat_of(o, "inflight_region"), 0);
		dst.n--;
		void *config = o->config;
		vhost_user_blk_type.free(o);
		free(config);
	} else {
		for (unsigned i = 0; i + 1 < n; i++)
			close(olds[i]);
	}
	struct dev_backend missing = { fds, n - 1, blob.data, blob.len };
	struct vhost_user_blk_config *c = calloc(1, sizeof(*c));
	vhost_user_blk_type.config_defaults(c);
	snprintf(c->socket, sizeof(c->socket), "%s", sock);
	c->queues = NQ, c->queue_size = QSIZE;
	CHECK(vhost_user_blk_type.create(&dst.host, "bad0", c, &missing) == NULL);
	CHECK_CONTAINS(vmm_error(), "and the inflight region");
	free(c);

	/* the target: everything from the source, not a word to the backend */
	int copies[16];
	for (unsigned i = 0; i < n; i++)
		copies[i] = dup(fds[i]);
	struct dev_backend in = { copies, n, blob.data, blob.len };
	struct device *b = make(&dst, &in);
	CHECK(b != NULL);
	if (!b)
		goto out;
	CHECK_EQ(vhost_user_blk_type.load(b, vhost_user_blk_type.state_version, state.data, state.len), 0);
	CHECK_EQ(vhost_user_blk_type.resume_loaded(b), 0);
	CHECK_EQ(total_requests(f), before);
	CHECK_EQ(f->connections, conns);
	CHECK_EQ(stat_of(b, "inflight_region"), f->inflight.mmap_size);
	int tfds[16];
	unsigned tn = vhost_user_blk_type.backend_fds(b, tfds, 16);
	CHECK_EQ(tn, n);
	CHECK_EQ(inode(tfds[tn - 1]), f->inflight_ino);
	CHECK_EQ(inode(tfds[0]), inode(fds[0])); /* the same connection */

	/* the positions the source saved: queue 1 popped two beyond its used
	 * index (the region), queue 0 nothing */
	char text[2048];
	vhost_user_blk_type.describe_state(b, text, sizeof(text));
	printf("  target: %s", text);
	CHECK_CONTAINS(text, "queue 0: avail 0 (flags 0x0, used_event 0), popped 0, used 0");
	CHECK_CONTAINS(text, "queue 1: avail 0 (flags 0x0, used_event 0), popped 2, used 0");
	mig_buf_free(&blob);
	mig_buf_free(&state);
out:
	rig_down(&src);
	rig_down(&dst);
}

int main(void)
{
	struct rig probe;
	int rc = rig_up_kvm(&probe, RAM);
	if (rc == 1) {
		printf("skip: %s\n", vmm_error());
		return 77;
	}
	rig_down(&probe);
	snprintf(dir, sizeof(dir), "/tmp/test-vub.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	atexit(remove_dir);
	snprintf(sock, sizeof(sock), "%s/fake.sock", dir);
	fake_vu_defaults(&F);
	F.features |= VIRTIO_BIT(VIRTIO_BLK_F_MQ);
	if (fake_vu_start(&F, sock)) {
		fprintf(stderr, "%s\n", vmm_error());
		return 1;
	}
	RUN(test_the_inflight_region_is_asked_for_once_and_given_back_each_session);
	RUN(test_backend_transfer_hands_the_inflight_region_to_the_target);
	fake_vu_stop(&F);
	return CHECK_DONE();
}
