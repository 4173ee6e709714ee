/* Local migration of a virtio-pci function: device A is driven as Linux's
 * virtio_pci_modern driver would (features, queues, MSI-X, DRIVER_OK), a
 * few chains go through its queues, its state is saved; device B, built
 * the same way over the same guest RAM (as the target process does over
 * the passed memfd), loads it and resumes. No KVM: notifications go
 * through the MMIO path and interrupts are counted per vector. */
#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

#include "bus.h"
#include "check.h"
#include "err.h"
#include "memory.h"
#include "migstream.h"
#include "pci.h"
#include "virtio.h"
#include "virtio_pci.h"
#include "virtio_pci_driver.h"
#include "xorshift.h"
#include "virtqueue.h"

#define NQUEUES 3
#define NVEC    (NQUEUES + 1)
#define QMAX    256
#define CONFIG_SIZE 8
#define F_MAC   5
#define RAM_SIZE (4u << 20)

/* --- a dummy device --------------------------------------------------------- */

struct dummy {
	struct virtio_device vd;
	uint8_t config[CONFIG_SIZE];
	int activates, resets;
	int notifies[NQUEUES];
};

static void d_config_read(struct virtio_device *vd, uint32_t off, void *data, unsigned len)
{
	struct dummy *d = vd->opaque;
	memcpy(data, d->config + off, len);
}

static void d_config_write(struct virtio_device *vd, uint32_t off, const void *data, unsigned len)
{
	struct dummy *d = vd->opaque;
	memcpy(d->config + off, data, len);
}

static int d_activate(struct virtio_device *vd)
{
	((struct dummy *)vd->opaque)->activates++;
	return 0;
}

static void d_reset(struct virtio_device *vd)
{
	((struct dummy *)vd->opaque)->resets++;
}

static void d_notify(struct virtio_device *vd, unsigned q)
{
	struct dummy *d = vd->opaque;
	CHECK(q < NQUEUES);
	if (q < NQUEUES)
		d->notifies[q]++;
}

static const struct virtio_device_ops dummy_ops = { d_config_read, d_config_write, d_activate, d_reset, d_notify };

/* --- two machines over one guest RAM ------------------------------------------ */

struct layout {
	uint64_t common, notify, isr, device, table, pba;
	unsigned msix_cap;
};

struct machine {
	struct bus pio, mmio;
	struct pci_bus *pbus;
	struct dummy dev;
	struct virtio_pci *vp;
	unsigned slot;
	uint64_t bar;
	struct layout L;
	struct vpci_target target; /* its buses, slot and L.common */
};

static uv_loop_t loop;
static struct guest_mem mem;
static uint8_t *ram;
static struct machine A, B;
static struct machine *M; /* the machine the driver helpers talk to */

/* Points the driver helpers at m. */
static void use_machine(struct machine *m)
{
	M = m;
	vpci = &m->target;
}

static void pump(void)
{
	for (int i = 0; i < 4; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
}

static void machine_up(struct machine *m, uint16_t device_id)
{
	memset(m, 0, sizeof(*m));
	bus_init(&m->pio, "pio");
	bus_init(&m->mmio, "mmio");
	m->pbus = pci_bus_new(&m->pio, &m->mmio);
	CHECK(m->pbus != NULL);
	virtio_init(&m->dev.vd, "dummy0", device_id, &dummy_ops, &m->dev, NQUEUES, QMAX, CONFIG_SIZE);
	m->dev.vd.host_features = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(F_MAC) |
				  VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX);
	m->dev.vd.mem = &mem;
	m->dev.vd.loop = &loop;
	m->vp = virtio_pci_new(m->pbus, &m->dev.vd, NULL, &loop);
	CHECK(m->vp != NULL);
	CHECK_EQ(virtio_pci_realize(m->vp), 0);
	m->slot = (unsigned)virtio_pci_device(m->vp)->slot;
	m->target = (struct vpci_target){ &m->pio, &m->mmio, &m->slot, &m->L.common };
	use_machine(m);
}

static void machine_down(struct machine *m)
{
	virtio_pci_free(m->vp);
	m->vp = NULL;
	pump();
	virtio_destroy(&m->dev.vd);
	pci_bus_free(m->pbus);
	bus_destroy(&m->pio);
	bus_destroy(&m->mmio);
}

static void world_up(void)
{
	CHECK_EQ(uv_loop_init(&loop), 0);
	ram = calloc(1, RAM_SIZE);
	CHECK_EQ(guest_mem_wrap(&mem, ram, RAM_SIZE), 0);
}

static void world_down(void)
{
	pump();
	CHECK_EQ(uv_loop_close(&loop), 0);
	free(ram);
}

/* --- the driver ------------------------------------------------------------------ */

/* Finds the regions as vp_modern_probe does (the capability walk). */
static void driver_probe(uint64_t bar)
{
	struct layout *L = &M->L;
	M->bar = bar;
	cfg_write(0x04, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	unsigned pos = cfg_read(0x34, 1) & ~3u;
	for (int ttl = 48; pos >= 0x40 && ttl > 0; ttl--) {
		unsigned id = cfg_read(pos, 1);
		if (id == PCI_CAP_ID_MSIX) {
			L->msix_cap = pos;
			L->table = bar + (cfg_read(pos + 4, 4) & ~7u);
			L->pba = bar + (cfg_read(pos + 8, 4) & ~7u);
		} else if (id == PCI_CAP_ID_VNDR) {
			uint64_t at = bar + cfg_read(pos + 8, 4);
			switch (cfg_read(pos + 3, 1)) {
			case VIRTIO_PCI_CAP_COMMON_CFG: L->common = at; break;
			case VIRTIO_PCI_CAP_NOTIFY_CFG: L->notify = at; break;
			case VIRTIO_PCI_CAP_ISR_CFG: L->isr = at; break;
			case VIRTIO_PCI_CAP_DEVICE_CFG: L->device = at; break;
			}
		}
		pos = cfg_read(pos + 1, 1) & ~3u;
	}
	CHECK(L->common && L->notify && L->isr && L->table && L->pba);
}

static void setup_queue(unsigned q, uint16_t size, uint16_t vector, bool enable)
{
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, q);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2, size);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_MSIX), 2, vector);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_DESCLO), 8, ring(q, 0));
	wr(COMMON(VIRTIO_PCI_COMMON_Q_AVAILLO), 8, ring(q, 1));
	wr(COMMON(VIRTIO_PCI_COMMON_Q_USEDLO), 8, ring(q, 2));
	if (enable)
		wr(COMMON(VIRTIO_PCI_COMMON_Q_ENABLE), 2, 1);
}

static void msix_entry(unsigned v, bool masked)
{
	uint64_t e = M->L.table + 16 * v;
	wr(e + 0, 4, 0xfee00000 + v * 0x1000);
	wr(e + 4, 4, 0);
	wr(e + 8, 4, 0x4040 + v);
	wr(e + 12, 4, masked);
}

/* The driver adds chain `i` (one readable descriptor) to queue q. */
static void driver_add(unsigned q, uint16_t i)
{
	uint16_t size = M->dev.vd.vqs[q].size;
	uint16_t slot = i % size;
	uint8_t *desc = ram + ring(q, 0) + 16 * slot;
	uint64_t addr = 0x300000 + q * 0x10000 + slot * 0x100;
	uint32_t len = 0x100;
	uint16_t flags = 0, next = 0;
	memcpy(desc, &addr, 8);
	memcpy(desc + 8, &len, 4);
	memcpy(desc + 12, &flags, 2);
	memcpy(desc + 14, &next, 2);
	uint8_t *avail = ram + ring(q, 1);
	memcpy(avail + 4 + 2 * slot, &slot, 2);
	uint16_t idx = (uint16_t)(i + 1);
	memcpy(avail + 2, &idx, 2);
}

/* Device A as the target VM's driver left it: BAR moved, features with
 * EVENT_IDX, queues 0 and 1 enabled, queue 2 set up but not enabled, MSI-X
 * on with vector 2 (queue 1) masked and pending, chains in flight. */
static void drive_source(void)
{
	machine_up(&A, 1);
	uint64_t bar0 = pci_bar_address(virtio_pci_device(A.vp), 0);
	/* the guest moves BAR 0 up by 1 MiB before enabling it */
	cfg_write(0x10, 4, (uint32_t)(bar0 + 0x100000));
	driver_probe(bar0 + 0x100000);
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	write_features(VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(F_MAC) | VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX));
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	unsigned ctl = A.L.msix_cap + 2;
	cfg_write(ctl, 2, 0xc000);
	for (unsigned v = 0; v < NVEC; v++)
		msix_entry(v, true);
	cfg_write(ctl, 2, 0x8000);
	wr(COMMON(VIRTIO_PCI_COMMON_MSIX), 2, 0);
	setup_queue(0, 128, 1, true);
	setup_queue(1, 64, 2, true);
	setup_queue(2, 32, 3, false);
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
	       VIRTIO_STATUS_DRIVER_OK);
	pump();
	CHECK(A.dev.vd.active);
	for (unsigned v = 0; v < NVEC; v++)
		if (v != 2)
			wr(A.L.table + 16 * v + 12, 4, 0);
	/* queue 0: 5 chains added, the device popped 3 and used 2 */
	for (uint16_t i = 0; i < 5; i++)
		driver_add(0, i);
	struct iovec iov[4];
	struct vq_chain c = { .iov = iov, .cap = 4 };
	uint16_t heads[3];
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(vq_pop(&A.dev.vd.vqs[0], &c), 1);
		heads[i] = c.head;
	}
	vq_push(&A.dev.vd.vqs[0], heads[0], 0);
	vq_push(&A.dev.vd.vqs[0], heads[1], 0);
	vq_should_signal(&A.dev.vd.vqs[0]);
	/* queue 1: 200 chains through a 64-entry ring: the indices wrap */
	for (uint16_t i = 0; i < 200; i++) {
		driver_add(1, i);
		CHECK_EQ(vq_pop(&A.dev.vd.vqs[1], &c), 1);
		vq_push(&A.dev.vd.vqs[1], c.head, 0);
	}
	driver_add(1, 200); /* pending, not popped */
	virtio_signal_queue(&A.dev.vd, 1); /* masked: pending in the PBA */
	virtio_config_changed(&A.dev.vd);  /* vector 0: delivered */
	wr(COMMON(VIRTIO_PCI_COMMON_DFSELECT), 4, 1);
	wr(COMMON(VIRTIO_PCI_COMMON_GFSELECT), 4, 1);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, 1);
	CHECK_EQ(rd(A.L.pba, 4), 1u << 2);
}

/* --- what a driver can read ------------------------------------------------------ */

#define SNAP_MAX 256

struct snap {
	unsigned n;
	uint64_t v[SNAP_MAX];
};

static void snap_put(struct snap *s, uint64_t v)
{
	if (s->n < SNAP_MAX)
		s->v[s->n++] = v;
}

/* Every register a driver can read without side effects (ISR is read to
 * clear: not here), queue_select put back as it was. */
static void snapshot(struct snap *s)
{
	memset(s, 0, sizeof(*s));
	for (unsigned reg = 0; reg < PCI_CONFIG_SIZE; reg += 4)
		snap_put(s, cfg_read(reg, 4));
	static const uint8_t regs[][2] = {
		{ VIRTIO_PCI_COMMON_DFSELECT, 4 }, { VIRTIO_PCI_COMMON_DF, 4 }, { VIRTIO_PCI_COMMON_GFSELECT, 4 },
		{ VIRTIO_PCI_COMMON_GF, 4 }, { VIRTIO_PCI_COMMON_MSIX, 2 }, { VIRTIO_PCI_COMMON_NUMQ, 2 },
		{ VIRTIO_PCI_COMMON_STATUS, 1 }, { VIRTIO_PCI_COMMON_CFGGENERATION, 1 },
	};
	for (unsigned i = 0; i < sizeof(regs) / sizeof(regs[0]); i++)
		snap_put(s, rd(COMMON(regs[i][0]), regs[i][1]));
	uint64_t sel = rd(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2);
	snap_put(s, sel);
	for (unsigned q = 0; q < NQUEUES; q++) {
		wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, q);
		snap_put(s, rd(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2));
		snap_put(s, rd(COMMON(VIRTIO_PCI_COMMON_Q_MSIX), 2));
		snap_put(s, rd(COMMON(VIRTIO_PCI_COMMON_Q_ENABLE), 2));
		snap_put(s, rd(COMMON(VIRTIO_PCI_COMMON_Q_NOFF), 2));
		snap_put(s, rd(COMMON(VIRTIO_PCI_COMMON_Q_DESCLO), 8));
		snap_put(s, rd(COMMON(VIRTIO_PCI_COMMON_Q_AVAILLO), 8));
		snap_put(s, rd(COMMON(VIRTIO_PCI_COMMON_Q_USEDLO), 8));
	}
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, sel);
	for (unsigned v = 0; v < NVEC; v++)
		for (unsigned d = 0; d < 16; d += 4)
			snap_put(s, rd(M->L.table + 16 * v + d, 4));
	snap_put(s, rd(M->L.pba, 8));
	snap_put(s, rd(M->L.device, 8));
}

static bool snap_equal(const struct snap *a, const struct snap *b)
{
	bool same = a->n == b->n;
	for (unsigned i = 0; same && i < a->n; i++)
		if (a->v[i] != b->v[i]) {
			fprintf(stderr, "  register %u: 0x%llx != 0x%llx\n", i, (unsigned long long)a->v[i],
				(unsigned long long)b->v[i]);
			same = false;
		}
	return same;
}

static bool queues_equal(const struct virtio_device *a, const struct virtio_device *b)
{
	bool same = true;
	for (unsigned q = 0; q < NQUEUES; q++) {
		const struct virtqueue *x = &a->vqs[q], *y = &b->vqs[q];
		same &= x->size == y->size && x->enabled == y->enabled && x->msix_vector == y->msix_vector &&
			x->desc_gpa == y->desc_gpa && x->avail_gpa == y->avail_gpa && x->used_gpa == y->used_gpa &&
			x->last_avail == y->last_avail && x->used_idx == y->used_idx &&
			x->signalled_used == y->signalled_used &&
			x->signalled_used_valid == y->signalled_used_valid && x->event_idx == y->event_idx;
	}
	return same;
}

static void save(struct machine *m, struct mig_buf *b)
{
	mig_buf_init(b);
	CHECK_EQ(virtio_pci_save(m->vp, b), 0);
}

/* --- tests ------------------------------------------------------------------------- */

static void test_roundtrip(void)
{
	world_up();
	drive_source();
	struct snap before, after;
	snapshot(&before);
	struct mig_buf b;
	save(&A, &b);
	snapshot(&after);
	CHECK(snap_equal(&before, &after)); /* save changes nothing */
	CHECK_EQ(rd(A.L.pba, 4), 1u << 2);

	machine_up(&B, 1);
	uint8_t *copy = malloc(RAM_SIZE);
	memcpy(copy, ram, RAM_SIZE);
	CHECK_EQ(virtio_pci_load(B.vp, b.data, b.len), 0);
	CHECK(memcmp(copy, ram, RAM_SIZE) == 0); /* guest memory untouched */
	free(copy);
	CHECK(!B.dev.vd.active);
	CHECK_EQ(B.dev.activates, 0);
	B.L = A.L;  /* the guest's driver keeps its mappings */
	B.bar = A.bar;
	use_machine(&B);
	CHECK_EQ(rd(B.L.pba, 4), 1u << 2); /* the masked vector's pending bit travelled */
	CHECK_EQ(pci_bar_decoded(virtio_pci_device(B.vp), 0), A.bar); /* the moved BAR followed */
	CHECK_EQ(rd(A.bar - 0x100000 + VIRTIO_PCI_COMMON_NUMQ, 2), 0xffff); /* nothing at the old place */
	struct snap loaded;
	snapshot(&loaded);
	CHECK(snap_equal(&before, &loaded));
	CHECK(queues_equal(&A.dev.vd, &B.dev.vd));
	CHECK_EQ(B.dev.vd.driver_features, A.dev.vd.driver_features);
	CHECK_EQ(B.dev.vd.config_generation, A.dev.vd.config_generation);
	CHECK_EQ(B.dev.vd.vqs[0].last_avail, 3);
	CHECK_EQ(B.dev.vd.vqs[0].used_idx, 2);
	CHECK_EQ(B.dev.vd.vqs[1].last_avail, 200);
	CHECK(B.dev.vd.vqs[1].event_idx);
	for (unsigned v = 0; v < NVEC; v++)
		CHECK_EQ(virtio_pci_interrupts(B.vp, v), 0); /* nothing delivered before resume */

	CHECK_EQ(virtio_pci_resume_loaded(B.vp), 0);
	CHECK(B.dev.vd.active);
	CHECK_EQ(B.dev.activates, 1);
	CHECK_EQ(B.dev.notifies[0], 1);
	CHECK_EQ(B.dev.notifies[1], 1);
	CHECK_EQ(B.dev.notifies[2], 0); /* not enabled */
	CHECK(B.dev.vd.vqs[0].started && B.dev.vd.vqs[1].started && !B.dev.vd.vqs[2].started);
	CHECK_EQ(virtio_pci_interrupts(B.vp, 0), 1);
	CHECK_EQ(virtio_pci_interrupts(B.vp, 1), 1);
	CHECK_EQ(virtio_pci_interrupts(B.vp, 2), 0); /* masked: stays pending */
	CHECK_EQ(virtio_pci_interrupts(B.vp, 3), 1);
	CHECK_EQ(rd(B.L.pba, 4), 1u << 2);
	wr(B.L.table + 16 * 2 + 12, 4, 0);           /* the driver unmasks it */
	CHECK_EQ(virtio_pci_interrupts(B.vp, 2), 1);
	CHECK_EQ(rd(B.L.pba, 4), 0);
	/* the rings go on where A left them */
	struct iovec iov[4];
	struct vq_chain c = { .iov = iov, .cap = 4 };
	CHECK_EQ(vq_pop(&B.dev.vd.vqs[0], &c), 1);
	CHECK_EQ(c.head, 3);
	CHECK_EQ(vq_pop(&B.dev.vd.vqs[0], &c), 1);
	CHECK_EQ(vq_pop(&B.dev.vd.vqs[0], &c), 0);
	CHECK_EQ(vq_pop(&B.dev.vd.vqs[1], &c), 1);
	CHECK_EQ(c.head, 200 % 64);
	vq_push(&B.dev.vd.vqs[1], c.head, 0);
	uint16_t used;
	memcpy(&used, ram + ring(1, 2) + 2, 2);
	CHECK_EQ(used, 201);
	/* ISR read-to-clear reads the same on both */
	use_machine(&A);
	uint64_t isr_a = rd(A.L.isr, 1);
	use_machine(&B);
	CHECK_EQ(rd(B.L.isr, 1), isr_a);
	CHECK_EQ(isr_a, 3);
	/* a second resume has nothing to resume */
	CHECK_EQ(virtio_pci_resume_loaded(B.vp), -1);
	CHECK_CONTAINS(vmm_error(), "no loaded state");
	/* B is a working device: the driver resets it and starts again */
	status(0);
	pump();
	CHECK_EQ(get_status(), 0);
	CHECK_EQ(B.dev.resets, 1);
	mig_buf_free(&b);
	machine_down(&B);
	machine_down(&A);
	world_down();
}

/* A device the driver never started, and one it left NEEDS_RESET: loaded,
 * resumed, not activated; vectors still signalled. */
static void test_not_live(void)
{
	world_up();
	machine_up(&A, 1);
	driver_probe(pci_bar_address(virtio_pci_device(A.vp), 0));
	status(VIRTIO_STATUS_ACKNOWLEDGE);
	struct mig_buf b;
	save(&A, &b);
	machine_up(&B, 1);
	CHECK_EQ(virtio_pci_load(B.vp, b.data, b.len), 0);
	CHECK_EQ(virtio_pci_resume_loaded(B.vp), 0);
	CHECK(!B.dev.vd.active);
	CHECK_EQ(B.dev.activates, 0);
	CHECK_EQ(B.dev.vd.status, VIRTIO_STATUS_ACKNOWLEDGE);
	mig_buf_free(&b);
	machine_down(&B);

	/* NEEDS_RESET: queues with rings outside RAM are accepted (never used) */
	use_machine(&A);
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	write_features(VIRTIO_BIT(VIRTIO_F_VERSION_1));
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, 0);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_USEDLO), 8, 0x7fff0000);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_ENABLE), 2, 1);
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
	       VIRTIO_STATUS_DRIVER_OK);
	pump();
	CHECK(get_status() & VIRTIO_STATUS_NEEDS_RESET);
	save(&A, &b);
	machine_up(&B, 1);
	CHECK_EQ(virtio_pci_load(B.vp, b.data, b.len), 0);
	CHECK_EQ(virtio_pci_resume_loaded(B.vp), 0);
	CHECK(!B.dev.vd.active);
	CHECK(B.dev.vd.status & VIRTIO_STATUS_NEEDS_RESET);
	mig_buf_free(&b);
	machine_down(&B);
	machine_down(&A);
	world_down();
}

static void test_save_during_reset(void)
{
	world_up();
	drive_source();
	status(0); /* the loop has not reset the device yet */
	struct mig_buf b;
	mig_buf_init(&b);
	CHECK_EQ(virtio_pci_save(A.vp, &b), -1);
	CHECK_CONTAINS(vmm_error(), "dummy0: the driver is resetting the device; retry");
	CHECK_EQ(b.len, 0);
	pump();
	CHECK_EQ(virtio_pci_save(A.vp, &b), 0);
	mig_buf_free(&b);
	/* DRIVER_OK written, activation not run yet */
	mig_buf_init(&b);
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	write_features(VIRTIO_BIT(VIRTIO_F_VERSION_1));
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
	       VIRTIO_STATUS_DRIVER_OK);
	CHECK_EQ(virtio_pci_save(A.vp, &b), -1);
	CHECK_CONTAINS(vmm_error(), "retry");
	pump();
	CHECK_EQ(virtio_pci_save(A.vp, &b), 0);
	mig_buf_free(&b);
	machine_down(&A);
	world_down();
}

/* Byte offsets in the payload, as virtio_pci_save lays it out. */
#define OFF_CONFIG     1                        /* after the slot */
#define OFF_REGS       (OFF_CONFIG + PCI_CONFIG_SIZE)
#define OFF_MSIX_CFG   (OFF_REGS + 16)
#define OFF_ISR        (OFF_REGS + 20)
#define OFF_NVEC       (OFF_REGS + 21)
#define OFF_VECTORS    (OFF_REGS + 23)
#define VEC_BYTES      17
#define OFF_VIRTIO     (OFF_VECTORS + NVEC * VEC_BYTES)
#define OFF_HOST_F     (OFF_VIRTIO + 4)
#define OFF_DRIVER_F   (OFF_VIRTIO + 12)
#define OFF_STATUS     (OFF_VIRTIO + 20)
#define OFF_QUEUES     (OFF_VIRTIO + 25)
#define Q_BYTES        37
#define OFF_Q(q)       (OFF_QUEUES + (q) * Q_BYTES)
#define QF_SIZE        0
#define QF_ENABLED     2
#define QF_VECTOR      3
#define QF_USED        21
#define QF_LAST_AVAIL  29
#define QF_USED_IDX    31
#define QF_EVENT_IDX   36

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* B's state as seen by a driver and by the device. */
static void fingerprint(struct snap *s)
{
	memset(s, 0, sizeof(*s));
	use_machine(&B);
	for (unsigned reg = 0; reg < PCI_CONFIG_SIZE; reg += 4)
		snap_put(s, cfg_read(reg, 4));
	snap_put(s, pci_bar_decoded(virtio_pci_device(B.vp), 0));
	const struct virtio_device *vd = &B.dev.vd;
	snap_put(s, vd->status);
	snap_put(s, vd->host_features);
	snap_put(s, vd->driver_features);
	snap_put(s, vd->config_generation);
	for (unsigned q = 0; q < NQUEUES; q++) {
		const struct virtqueue *vq = &vd->vqs[q];
		snap_put(s, vq->size | (uint64_t)vq->enabled << 16 | (uint64_t)vq->msix_vector << 32);
		snap_put(s, vq->desc_gpa ^ vq->avail_gpa ^ vq->used_gpa);
		snap_put(s, vq->last_avail | (uint64_t)vq->used_idx << 16);
	}
	for (unsigned v = 0; v < NVEC; v++)
		snap_put(s, virtio_pci_interrupts(B.vp, v));
}

/* Loads a corrupted copy of `good` into B: refused, with `want` in the
 * message, B unchanged. */
/* What refuses a payload: the state's load or the preview's. */
typedef int (*loader)(struct virtio_pci *vp, const void *payload, size_t len);

/* `load` refuses good's first len bytes with [off, off+n) replaced by
 * bytes, naming `want`, and B is as it was, with nothing loaded. */
static void expect_refused_by(loader load, const struct mig_buf *good, size_t len, size_t off, const void *bytes,
			      size_t n, const char *want)
{
	uint8_t *p = calloc(1, len + 1);
	memcpy(p, good->data, good->len < len ? good->len : len);
	if (n)
		memcpy(p + off, bytes, n);
	struct snap before, after;
	fingerprint(&before);
	vmm_fail("none");
	CHECK_EQ(load(B.vp, p, len), -1);
	CHECK_CONTAINS(vmm_error(), want);
	fingerprint(&after);
	CHECK(snap_equal(&before, &after));
	CHECK_EQ(virtio_pci_resume_loaded(B.vp), -1); /* nothing was loaded */
	free(p);
}

static void expect_refused(const struct mig_buf *good, size_t len, size_t off, const void *bytes, size_t n,
			   const char *want)
{
	expect_refused_by(virtio_pci_load, good, len, off, bytes, n, want);
}

static void refuse_field_by(loader load, const struct mig_buf *g, size_t off, uint64_t v, unsigned n,
			    const char *want)
{
	uint8_t bytes[8];
	put_le(bytes, v, n);
	expect_refused_by(load, g, g->len, off, bytes, n, want);
}

static void refuse_field(const struct mig_buf *g, size_t off, uint64_t v, unsigned n, const char *want)
{
	refuse_field_by(virtio_pci_load, g, off, v, n, want);
}

static void test_bad_input(void)
{
	world_up();
	drive_source();
	struct mig_buf g;
	save(&A, &g);
	CHECK_EQ(g.len, (size_t)OFF_Q(NQUEUES));
	CHECK_EQ(g.data[OFF_Q(1) + QF_SIZE], 64); /* the offsets above are right */
	CHECK_EQ(g.data[OFF_STATUS], A.dev.vd.status);
	machine_up(&B, 1);

	expect_refused(&g, 0, 0, NULL, 0, "truncated");
	expect_refused(&g, 100, 0, NULL, 0, "truncated");
	expect_refused(&g, OFF_VIRTIO + 3, 0, NULL, 0, "truncated");
	expect_refused(&g, g.len - 1, 0, NULL, 0, "truncated");
	expect_refused(&g, g.len + 1, 0, NULL, 0, "1 unexpected trailing bytes");
	refuse_field(&g, OFF_CONFIG + PCI_DEVICE_ID, 0x1042, 2, "pci 00:01.0: device 1af4:1042 in the stream, 1af4:1041 here");
	refuse_field(&g, OFF_CONFIG + PCI_CLASS_PROG + 2, 0x03, 1, "class 030000 in the stream, 020000 here");
	refuse_field(&g, 0, 5, 1, "the stream's function is at 00:05.0");
	refuse_field(&g, OFF_CONFIG + PCI_CAPABILITY_LIST, 0x44, 1, "read-only config byte 0x34");
	refuse_field(&g, OFF_NVEC, 9, 2, "9 MSI-X vectors in the stream, 4 here");
	refuse_field(&g, OFF_MSIX_CFG, 4, 2, "msix_config vector 4 is out of range");
	refuse_field(&g, OFF_ISR, 4, 1, "ISR 0x4");
	refuse_field(&g, OFF_VECTORS + VEC_BYTES + 12, 3, 4, "MSI-X entry 1: vector control 0x3");
	refuse_field(&g, OFF_VECTORS + VEC_BYTES * 2, 0xfee00002, 4, "MSI-X entry 2: address 0xfee00002");
	refuse_field(&g, OFF_VECTORS + VEC_BYTES * 3 + 16, 2, 1, "MSI-X entry 3: pending bit 2");
	refuse_field(&g, OFF_VIRTIO, 2, 2, "dummy0: virtio device 2 in the stream, 1 here");
	refuse_field(&g, OFF_VIRTIO + 2, 4, 2, "4 queues in the stream, 3 here");
	refuse_field(&g, OFF_HOST_F, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(F_MAC) | VIRTIO_BIT(7), 8,
		     "bits 0x80 are not offered here");
	refuse_field(&g, OFF_DRIVER_F, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(40), 8,
		     "driver features 0x10100000000 are not a subset of host features");
	refuse_field(&g, OFF_Q(0) + QF_SIZE, 100, 2, "dummy0: queue 0: size 100 is not a power of 2 in 1..256");
	refuse_field(&g, OFF_Q(2) + QF_SIZE, 512, 2, "queue 2: size 512");
	refuse_field(&g, OFF_Q(1) + QF_SIZE, 0, 2, "queue 1: size 0");
	refuse_field(&g, OFF_Q(1) + QF_VECTOR, 9, 2, "dummy0: queue 1: MSI-X vector 9 is out of range (4 vectors)");
	refuse_field(&g, OFF_Q(1) + QF_ENABLED, 2, 1, "queue 1: enabled 2");
	refuse_field(&g, OFF_Q(0) + QF_EVENT_IDX, 0xff, 1, "event_idx 255");
	refuse_field(&g, OFF_Q(0) + QF_USED, 0x7fff0000, 8, "dummy0: queue 0: used ring 0x7fff0000+0x406 is outside guest RAM");
	refuse_field(&g, OFF_Q(0) + QF_USED, 0x200002, 8, "used ring address 0x200002 is not 4-byte aligned");
	refuse_field(&g, OFF_Q(0) + QF_LAST_AVAIL, 200, 2, "queue 0: last_avail 200 is 198 entries ahead of used_idx 2");
	refuse_field(&g, OFF_Q(1) + QF_USED_IDX, 201, 2, "queue 1: last_avail 200 is 65535 entries ahead");
	/* a queue not enabled may hold any address: checked when started */
	uint8_t far[8];
	put_le(far, 0x7fff0000, 8);
	memcpy(g.data + OFF_Q(2) + QF_USED, far, 8);
	CHECK_EQ(virtio_pci_load(B.vp, g.data, g.len), 0);
	mig_buf_free(&g);
	machine_down(&B);

	/* a different device here */
	save(&A, &g);
	machine_up(&B, 2);
	expect_refused(&g, g.len, 0, NULL, 0, "pci 00:01.0: device 1af4:1041 in the stream, 1af4:1042 here");
	machine_down(&B);
	/* a running device refuses */
	use_machine(&A);
	CHECK_EQ(virtio_pci_load(A.vp, g.data, g.len), -1);
	CHECK_CONTAINS(vmm_error(), "in use");
	mig_buf_free(&g);
	machine_down(&A);
	world_down();
}

static void preview(struct machine *m, struct mig_buf *b)
{
	mig_buf_init(b);
	CHECK_EQ(virtio_pci_preview_save(m->vp, b), 0);
}

/* The preview's layout: slot, config space, vector count, the vectors. */
#define PV_NVEC    (1 + PCI_CONFIG_SIZE)
#define PV_VECTORS (PV_NVEC + 2)
#define PV_VEC     16

/* A preview taken while the source runs, then the state taken at the
 * freeze: the preview sets up the BAR and the MSI-X table ahead, changes
 * nothing a driver sees of the source, delivers nothing; the state then
 * leaves the target as the state alone does. */
static void test_preview_then_state(void)
{
	world_up();
	drive_source();
	struct snap before, after;
	snapshot(&before);
	struct mig_buf pv, b;
	preview(&A, &pv);
	CHECK_EQ(pv.len, (size_t)PV_VECTORS + NVEC * PV_VEC);
	snapshot(&after);
	CHECK(snap_equal(&before, &after)); /* preview_save changes nothing */

	machine_up(&B, 1);
	CHECK_EQ(virtio_pci_preview_load(B.vp, pv.data, pv.len), 0);
	CHECK_EQ(pci_bar_decoded(virtio_pci_device(B.vp), 0), A.bar); /* the moved BAR is set up */
	uint64_t table[NVEC * 4];
	use_machine(&A);
	for (unsigned i = 0; i < NVEC * 4; i++)
		table[i] = rd(A.L.table + 4 * i, 4);
	B.L = A.L;
	B.bar = A.bar;
	use_machine(&B);
	for (unsigned i = 0; i < NVEC * 4; i++)
		CHECK_EQ(rd(B.L.table + 4 * i, 4), table[i]); /* the MSI-X table too */
	CHECK_EQ(rd(B.L.pba, 4), 0); /* no pending bit from a preview */
	CHECK(!B.dev.vd.active);
	for (unsigned v = 0; v < NVEC; v++)
		CHECK_EQ(virtio_pci_interrupts(B.vp, v), 0);

	/* the guest runs on at the source: queue 1 gets another chain */
	use_machine(&A);
	driver_add(1, 201);
	snapshot(&before);
	save(&A, &b);
	use_machine(&B);
	CHECK_EQ(virtio_pci_load(B.vp, b.data, b.len), 0);
	struct snap loaded;
	snapshot(&loaded);
	CHECK(snap_equal(&before, &loaded));
	CHECK(queues_equal(&A.dev.vd, &B.dev.vd));
	CHECK_EQ(rd(B.L.pba, 4), 1u << 2); /* the state's pending bit */
	CHECK_EQ(virtio_pci_resume_loaded(B.vp), 0);
	CHECK_EQ(virtio_pci_interrupts(B.vp, 0), 1);
	CHECK_EQ(virtio_pci_interrupts(B.vp, 1), 1);
	CHECK_EQ(virtio_pci_interrupts(B.vp, 2), 0);
	CHECK_EQ(virtio_pci_interrupts(B.vp, 3), 1);

	/* once loaded, a device takes no preview */
	CHECK_EQ(virtio_pci_preview_load(B.vp, pv.data, pv.len), -1);
	CHECK_CONTAINS(vmm_error(), "in use");
	mig_buf_free(&b);
	mig_buf_free(&pv);
	machine_down(&B);
	machine_down(&A);
	world_down();
}

static void test_preview_bad_input(void)
{
	world_up();
	drive_source();
	struct mig_buf pv;
	preview(&A, &pv);
	machine_up(&B, 1);
	loader pl = virtio_pci_preview_load;
	expect_refused_by(pl, &pv, 0, 0, NULL, 0, "truncated");
	expect_refused_by(pl, &pv, PV_NVEC + 1, 0, NULL, 0, "truncated");
	expect_refused_by(pl, &pv, pv.len - 1, 0, NULL, 0, "truncated");
	expect_refused_by(pl, &pv, pv.len + 1, 0, NULL, 0, "1 unexpected trailing bytes");
	refuse_field_by(pl, &pv, 1 + PCI_DEVICE_ID, 0x1042, 2, "device 1af4:1042 in the stream");
	refuse_field_by(pl, &pv, PV_NVEC, 9, 2, "9 MSI-X vectors in the preview, 4 here");
	refuse_field_by(pl, &pv, PV_VECTORS + PV_VEC + 12, 3, 4, "MSI-X entry 1: vector control 0x3");
	refuse_field_by(pl, &pv, PV_VECTORS, 0xfee00001, 4, "MSI-X entry 0: address 0xfee00001");
	CHECK_EQ(virtio_pci_preview_load(B.vp, pv.data, pv.len), 0);
	mig_buf_free(&pv);
	machine_down(&B);
	machine_down(&A);
	world_down();
}

static uint32_t rnd_state = 0x9e3779b9;

static uint32_t rnd(void)
{
	return xorshift32(&rnd_state);
}

/* Random corruptions of a good payload, and random bytes: never a crash;
 * a load that passes leaves a device that resumes and runs its rings. */
static void test_garbage(void)
{
	world_up();
	drive_source();
	struct mig_buf g;
	save(&A, &g);
	machine_up(&B, 1);
	uint8_t *p = malloc(g.len + 64);
	int accepted = 0;
	for (int i = 0; i < 20000; i++) {
		size_t len = g.len;
		memcpy(p, g.data, g.len);
		switch (rnd() % 4) {
		case 0: /* a few bytes flipped */
		case 1:
			for (unsigned k = rnd() % 4 + 1; k; k--)
				p[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
			break;
		case 2: /* a random field-sized value somewhere in the virtio part */
			put_le(p + OFF_VIRTIO + rnd() % (len - OFF_VIRTIO - 8), ((uint64_t)rnd() << 32) | rnd(),
			       1u << (rnd() % 4));
			break;
		default: /* random bytes, random length */
			len = rnd() % (g.len + 64);
			for (size_t k = 0; k < len; k++)
				p[k] = (uint8_t)rnd();
			break;
		}
		if (virtio_pci_load(B.vp, p, len))
			continue;
		accepted++;
		if (rnd() % 8)
			continue;
		/* resume, play the device a little, and start a fresh B */
		virtio_pci_resume_loaded(B.vp);
		struct iovec iov[8];
		struct vq_chain c = { .iov = iov, .cap = 8 };
		for (unsigned q = 0; q < NQUEUES; q++)
			for (int k = 0; k < 4 && vq_pop(&B.dev.vd.vqs[q], &c) == 1; k++)
				vq_push(&B.dev.vd.vqs[q], c.head, 0);
		pump();
		machine_down(&B);
		machine_up(&B, 1);
	}
	printf("  %d of 20000 payloads accepted\n", accepted);
	CHECK(accepted > 100);
	free(p);
	mig_buf_free(&g);
	machine_down(&B);
	machine_down(&A);
	world_down();
}

int main(void)
{
	RUN(test_roundtrip);
	RUN(test_not_live);
	RUN(test_save_during_reset);
	RUN(test_bad_input);
	RUN(test_garbage);
	RUN(test_preview_then_state);
	RUN(test_preview_bad_input);
	return CHECK_DONE();
}
