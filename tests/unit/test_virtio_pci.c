/* The virtio-pci modern transport, driven as Linux's virtio_pci_modern
 * driver would, through config mechanism #1 and the MMIO window, with a
 * dummy virtio device behind it and a libuv loop as the main thread. No KVM:
 * notifications go through the MMIO path and interrupts are counted. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

#include "bus.h"
#include "check.h"
#include "err.h"
#include "kvm.h"
#include "memory.h"
#include "pci.h"
#include "virtio.h"
#include "virtio_pci.h"
#include "virtio_pci_driver.h"
#include "xorshift.h"

#define NQUEUES 3
#define QMAX    256
#define CONFIG_SIZE 12
#define F_MAC   5 /* a device feature bit */

struct dummy {
	struct virtio_device vd;
	uint8_t config[CONFIG_SIZE];
	int activates, resets, config_reads, config_writes;
	int notifies[NQUEUES];
	bool fail_activate;
};

static void d_config_read(struct virtio_device *vd, uint32_t off, void *data, unsigned len)
{
	struct dummy *d = vd->opaque;
	d->config_reads++;
	CHECK(off + len <= CONFIG_SIZE);
	if (off + len <= CONFIG_SIZE)
		memcpy(data, d->config + off, len);
}

static void d_config_write(struct virtio_device *vd, uint32_t off, const void *data, unsigned len)
{
	struct dummy *d = vd->opaque;
	d->config_writes++;
	CHECK(off + len <= CONFIG_SIZE);
	if (off + len <= CONFIG_SIZE)
		memcpy(d->config + off, data, len);
}

static int d_activate(struct virtio_device *vd)
{
	struct dummy *d = vd->opaque;
	d->activates++;
	return d->fail_activate ? vmm_fail("dummy refuses") : 0;
}

static void d_reset(struct virtio_device *vd)
{
	struct dummy *d = vd->opaque;
	d->resets++;
}

static void d_notify(struct virtio_device *vd, unsigned q)
{
	struct dummy *d = vd->opaque;
	CHECK(q < NQUEUES);
	if (q < NQUEUES)
		d->notifies[q]++;
}

static const struct virtio_device_ops dummy_ops = { d_config_read, d_config_write, d_activate, d_reset, d_notify };

/* --- the machine ------------------------------------------------------------ */

static struct bus pio, mmio;
static struct pci_bus *pbus;
static uv_loop_t loop;
static struct dummy dev;
static struct virtio_pci *vp;
static struct guest_mem mem;
static uint8_t *ram;
static unsigned slot;
static uint64_t bar;

/* What a driver learns from the capabilities. */
struct layout {
	uint64_t common, notify, isr, device, table, pba;
	uint32_t common_len, notify_len, isr_len, device_len, multiplier;
	unsigned msix_cap, nvec;
};
static struct layout L;
static const struct vpci_target target = { &pio, &mmio, &slot, &L.common };

static void pump(void)
{
	for (int i = 0; i < 4; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
}

static void machine_up(uint16_t device_id, struct kvm *kvm)
{
	vpci = &target;
	bus_init(&pio, "pio");
	bus_init(&mmio, "mmio");
	pbus = pci_bus_new(&pio, &mmio);
	CHECK(pbus != NULL);
	CHECK_EQ(uv_loop_init(&loop), 0);
	memset(&dev, 0, sizeof(dev));
	virtio_init(&dev.vd, "dummy0", device_id, &dummy_ops, &dev, NQUEUES, QMAX, CONFIG_SIZE);
	dev.vd.host_features = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(F_MAC) | VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX);
	for (unsigned i = 0; i < CONFIG_SIZE; i++)
		dev.config[i] = (uint8_t)(0x10 + i);
	ram = calloc(1, 4 << 20);
	CHECK_EQ(guest_mem_wrap(&mem, ram, 4 << 20), 0);
	dev.vd.mem = &mem;
	dev.vd.loop = &loop;
	vp = virtio_pci_new(pbus, &dev.vd, kvm, &loop);
	CHECK(vp != NULL);
	CHECK_EQ(virtio_pci_realize(vp), 0);
	slot = (unsigned)virtio_pci_device(vp)->slot;
}

static void machine_down(void)
{
	virtio_pci_free(vp);
	vp = NULL;
	pump();
	CHECK_EQ(uv_loop_close(&loop), 0);
	virtio_destroy(&dev.vd);
	pci_bus_free(pbus);
	bus_destroy(&pio);
	bus_destroy(&mmio);
	free(ram);
}

/* As Linux's vp_modern_probe and pci core: sizing, enabling, then the
 * capability walk with virtio_pci_find_capability's and
 * vp_modern_map_capability's rules. */
static void driver_probe(void)
{
	memset(&L, 0, sizeof(L));
	uint32_t orig = cfg_read(0x10, 4);
	cfg_write(0x10, 4, 0xffffffff);
	uint32_t mask = cfg_read(0x10, 4);
	cfg_write(0x10, 4, orig);
	CHECK_EQ(mask & 0xf, 0);                  /* 32-bit memory, not prefetchable */
	uint64_t bar_size = (uint64_t)(~(mask & ~0xfu)) + 1;
	bar_size &= 0xffffffffull;
	CHECK_EQ(bar_size, VIRTIO_PCI_BAR_SIZE);
	bar = orig & ~0xfu;
	CHECK(bar >= PCI_MMIO_WINDOW_START && bar + bar_size <= PCI_MMIO_WINDOW_END);
	cfg_write(0x04, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);

	CHECK(cfg_read(0x06, 2) & PCI_STATUS_CAP_LIST);
	unsigned pos = cfg_read(0x34, 1) & ~3u;
	for (int ttl = 48; pos >= 0x40 && ttl > 0; ttl--) {
		unsigned id = cfg_read(pos, 1);
		if (id == PCI_CAP_ID_MSIX) {
			L.msix_cap = pos;
			L.nvec = (cfg_read(pos + 2, 2) & 0x7ff) + 1;
			uint32_t t = cfg_read(pos + 4, 4), p = cfg_read(pos + 8, 4);
			CHECK_EQ(t & 7, 0);
			CHECK_EQ(p & 7, 0);
			L.table = bar + (t & ~7u);
			L.pba = bar + (p & ~7u);
		} else if (id == PCI_CAP_ID_VNDR) {
			unsigned type = cfg_read(pos + 3, 1), b = cfg_read(pos + 4, 1);
			uint32_t off = cfg_read(pos + 8, 4), len = cfg_read(pos + 12, 4);
			CHECK(cfg_read(pos + 2, 1) >= 16);
			CHECK_EQ(b, 0);
			CHECK((uint64_t)off + len <= bar_size);
			switch (type) {
			case VIRTIO_PCI_CAP_COMMON_CFG:
				CHECK(len >= 0x38);
				CHECK_EQ(off % 4, 0);
				L.common = bar + off;
				L.common_len = len;
				break;
			case VIRTIO_PCI_CAP_NOTIFY_CFG:
				CHECK_EQ(cfg_read(pos + 2, 1), 20);
				L.multiplier = cfg_read(pos + 16, 4);
				CHECK_EQ(off % 2, 0);
				L.notify = bar + off;
				L.notify_len = len;
				break;
			case VIRTIO_PCI_CAP_ISR_CFG:
				CHECK(len >= 1);
				L.isr = bar + off;
				L.isr_len = len;
				break;
			case VIRTIO_PCI_CAP_DEVICE_CFG:
				CHECK_EQ(off % 4, 0);
				L.device = bar + off;
				L.device_len = len;
				break;
			default:
				CHECK(0);
			}
		}
		pos = cfg_read(pos + 1, 1) & ~3u;
	}
	CHECK(L.common && L.notify && L.isr && L.device && L.table && L.pba);
	CHECK_EQ(L.device_len, CONFIG_SIZE);
	CHECK_EQ(L.nvec, NQUEUES + 1);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_NUMQ), 2), NQUEUES);
	/* vp_modern_map_vq_notify: off * multiplier + 2 inside the region */
	for (unsigned q = 0; q < NQUEUES; q++) {
		wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, q);
		uint64_t noff = rd(COMMON(VIRTIO_PCI_COMMON_Q_NOFF), 2);
		CHECK(noff * L.multiplier + 2 <= L.notify_len);
	}
}

static void setup_queue(unsigned q, uint16_t size, uint16_t vector)
{
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, q);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2, size);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_MSIX), 2, vector);
	/* as vp_iowrite64_twopart: low then high */
	wr(COMMON(VIRTIO_PCI_COMMON_Q_DESCLO), 4, (uint32_t)ring(q, 0));
	wr(COMMON(VIRTIO_PCI_COMMON_Q_DESCHI), 4, 0);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_AVAILLO), 4, (uint32_t)ring(q, 1));
	wr(COMMON(VIRTIO_PCI_COMMON_Q_AVAILHI), 4, 0);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_USEDLO), 4, (uint32_t)ring(q, 2));
	wr(COMMON(VIRTIO_PCI_COMMON_Q_USEDHI), 4, 0);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_ENABLE), 2, 1);
}

/* vp_reset: write 0, then poll until the device reads 0 (here: until the
 * loop, the main thread, has run). */
static void driver_reset(void)
{
	status(0);
	for (int i = 0; i < 10 && get_status(); i++)
		pump();
	CHECK_EQ(get_status(), 0);
}

/* The whole driver start-up up to DRIVER_OK, loop run. */
static void driver_start(void)
{
	driver_reset();
	status(VIRTIO_STATUS_ACKNOWLEDGE);
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	write_features(VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(F_MAC));
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	CHECK(get_status() & VIRTIO_STATUS_FEATURES_OK);
	for (unsigned q = 0; q < NQUEUES; q++)
		setup_queue(q, 128, (uint16_t)(q + 1));
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
	       VIRTIO_STATUS_DRIVER_OK);
	pump();
}

/* --- tests ------------------------------------------------------------------------- */

static void test_identity(void)
{
	machine_up(1, NULL);
	CHECK_EQ(cfg_read(0x00, 2), 0x1af4);
	CHECK_EQ(cfg_read(0x02, 2), 0x1041);
	CHECK_EQ(cfg_read(0x08, 1), 1);           /* revision 1: modern only */
	CHECK_EQ(cfg_read(0x08, 4) >> 8, 0x020000);
	CHECK_EQ(cfg_read(0x2c, 2), 0x1af4);
	CHECK_EQ(cfg_read(0x2e, 2), 1);
	CHECK_EQ(cfg_read(0x3d, 1), 0);           /* no INTx */
	driver_probe();
	CHECK_EQ(L.multiplier, 4);
	CHECK_EQ(L.common_len, VIRTIO_PCI_COMMON_LEN);
	CHECK_EQ(L.table, bar + VIRTIO_PCI_MSIX_TABLE_OFFSET);
	machine_down();

	machine_up(18, NULL);                      /* not a network device */
	CHECK_EQ(cfg_read(0x02, 2), 0x1040 + 18);
	CHECK_EQ(cfg_read(0x08, 4) >> 8, 0x00ff00);
	CHECK_EQ(cfg_read(0x2e, 2), 18);
	machine_down();
}

static void test_features(void)
{
	machine_up(1, NULL);
	driver_probe();
	wr(COMMON(VIRTIO_PCI_COMMON_DFSELECT), 4, 0);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_DF), 4), (1u << F_MAC) | (1u << VIRTIO_F_RING_EVENT_IDX));
	wr(COMMON(VIRTIO_PCI_COMMON_DFSELECT), 4, 1);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_DF), 4), 1);  /* VERSION_1 is bit 32 */
	wr(COMMON(VIRTIO_PCI_COMMON_DFSELECT), 4, 2);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_DF), 4), 0);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_DFSELECT), 4), 2);
	wr(COMMON(VIRTIO_PCI_COMMON_DF), 4, 0xffffffff);    /* read-only */
	wr(COMMON(VIRTIO_PCI_COMMON_DFSELECT), 4, 0);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_DF), 4), (1u << F_MAC) | (1u << VIRTIO_F_RING_EVENT_IDX));

	const uint8_t base = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
	/* a feature the device did not offer */
	status(base);
	write_features(VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(3));
	status(base | VIRTIO_STATUS_FEATURES_OK);
	CHECK_EQ(get_status(), base);
	CHECK_EQ(dev.vd.driver_features, 0);
	/* no VERSION_1: a legacy driver on a modern-only device */
	driver_reset();
	status(base);
	write_features(VIRTIO_BIT(F_MAC));
	status(base | VIRTIO_STATUS_FEATURES_OK);
	CHECK_EQ(get_status(), base);
	/* DRIVER_OK without FEATURES_OK: never activated */
	status(base | VIRTIO_STATUS_DRIVER_OK);
	pump();
	CHECK_EQ(dev.activates, 0);
	CHECK(get_status() & VIRTIO_STATUS_NEEDS_RESET);
	/* accepted */
	driver_reset();
	status(base);
	uint64_t want = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(F_MAC);
	write_features(want);
	wr(COMMON(VIRTIO_PCI_COMMON_GFSELECT), 4, 0);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_GF), 4), 1u << F_MAC);
	wr(COMMON(VIRTIO_PCI_COMMON_GFSELECT), 4, 7);
	wr(COMMON(VIRTIO_PCI_COMMON_GF), 4, 0xffffffff);    /* nowhere to go */
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_GF), 4), 0);
	status(base | VIRTIO_STATUS_FEATURES_OK);
	CHECK_EQ(get_status(), base | VIRTIO_STATUS_FEATURES_OK);
	CHECK_EQ(dev.vd.driver_features, want);
	/* after FEATURES_OK the features are fixed */
	write_features(VIRTIO_BIT(VIRTIO_F_VERSION_1));
	wr(COMMON(VIRTIO_PCI_COMMON_GFSELECT), 4, 0);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_GF), 4), 1u << F_MAC);
	CHECK_EQ(dev.vd.driver_features, want);
	machine_down();
}

static void test_queue_setup_and_activate(void)
{
	machine_up(1, NULL);
	driver_probe();
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	write_features(VIRTIO_BIT(VIRTIO_F_VERSION_1));
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);

	wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, 1);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2), QMAX);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_MSIX), 2), VIRTIO_PCI_NO_VECTOR);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_NOFF), 2), 1);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_ENABLE), 2), 0);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2, 100);       /* not a power of 2 */
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2), QMAX);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2, 512);       /* above the maximum */
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2), QMAX);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2, 0);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2), QMAX);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_MSIX), 2, NQUEUES + 1); /* past the table */
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_MSIX), 2), VIRTIO_PCI_NO_VECTOR);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_NOFF), 2, 7);         /* read-only */
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_NOFF), 2), 1);
	wr(COMMON(VIRTIO_PCI_COMMON_MSIX), 2, 9);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_MSIX), 2), VIRTIO_PCI_NO_VECTOR);
	wr(COMMON(VIRTIO_PCI_COMMON_MSIX), 2, 0);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_MSIX), 2), 0);

	for (unsigned q = 0; q < NQUEUES; q++)
		setup_queue(q, 128, (uint16_t)(q + 1));
	/* a 64-bit field in one access, and a half on its own */
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, 2);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_DESCLO), 8), ring(2, 0));
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_AVAILLO), 4), ring(2, 1));
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_USEDHI), 4), 0);
	/* enabled: the queue's registers are frozen */
	wr(COMMON(VIRTIO_PCI_COMMON_Q_DESCLO), 8, 0x123456789000ull);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2, 64);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_ENABLE), 2, 0);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_DESCLO), 8), ring(2, 0));
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2), 128);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_ENABLE), 2), 1);
	CHECK_EQ(dev.vd.vqs[2].size, 128);
	CHECK_EQ(dev.vd.vqs[2].msix_vector, 3);
	CHECK_EQ(dev.vd.vqs[2].desc_gpa, ring(2, 0));
	CHECK_EQ(dev.vd.vqs[2].used_gpa, ring(2, 2));
	CHECK(dev.vd.vqs[2].enabled);
	/* byte reads that straddle fields */
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 4), 2 | (128u << 16));
	CHECK_EQ(rd(COMMON(0x13), 2), 0 | ((uint16_t)get_status() << 8)); /* numq high byte, status */

	/* DRIVER_OK: activation happens on the loop, not on the vCPU */
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
	       VIRTIO_STATUS_DRIVER_OK);
	CHECK_EQ(dev.activates, 0);
	CHECK(!dev.vd.active);
	pump();
	CHECK_EQ(dev.activates, 1);
	CHECK(dev.vd.active);
	CHECK(dev.vd.vqs[0].started && dev.vd.vqs[2].started);
	/* every enabled queue is kicked once after activation */
	for (unsigned q = 0; q < NQUEUES; q++)
		CHECK_EQ(dev.notifies[q], 1);
	machine_down();
}

static void test_activate_failure(void)
{
	machine_up(1, NULL);
	driver_probe();
	dev.fail_activate = true;
	driver_start();
	CHECK_EQ(dev.activates, 1);
	CHECK(!dev.vd.active);
	CHECK(get_status() & VIRTIO_STATUS_NEEDS_RESET);
	/* the driver resets: NEEDS_RESET clears, and it can start again */
	dev.fail_activate = false;
	driver_start();
	CHECK_EQ(dev.activates, 2);
	CHECK(dev.vd.active);
	CHECK(!(get_status() & VIRTIO_STATUS_NEEDS_RESET));
	machine_down();
}

static void test_reset(void)
{
	machine_up(1, NULL);
	driver_probe();
	driver_start();
	CHECK(dev.vd.active);
	uint8_t running = get_status();
	wr(COMMON(VIRTIO_PCI_COMMON_MSIX), 2, 0);

	status(0);
	/* the loop has not run: the device is still being reset */
	CHECK_EQ(get_status(), running);
	CHECK_EQ(dev.resets, 0);
	status(VIRTIO_STATUS_ACKNOWLEDGE);          /* too early: dropped */
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, 0);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2, 16);
	CHECK_EQ(get_status(), running);
	pump();
	CHECK_EQ(dev.resets, 1);
	CHECK(!dev.vd.active);
	CHECK_EQ(get_status(), 0);
	CHECK_EQ(dev.vd.driver_features, 0);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_MSIX), 2), VIRTIO_PCI_NO_VECTOR);
	for (unsigned q = 0; q < NQUEUES; q++) {
		wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, q);
		CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2), QMAX);
		CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_ENABLE), 2), 0);
		CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_MSIX), 2), VIRTIO_PCI_NO_VECTOR);
		CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_DESCLO), 8), 0);
	}
	/* reset of a device at status 0 is immediate */
	status(VIRTIO_STATUS_ACKNOWLEDGE);
	CHECK_EQ(get_status(), VIRTIO_STATUS_ACKNOWLEDGE);
	status(0);
	pump();
	CHECK_EQ(get_status(), 0);
	status(0);
	CHECK_EQ(get_status(), 0);
	status(VIRTIO_STATUS_ACKNOWLEDGE);
	CHECK_EQ(get_status(), VIRTIO_STATUS_ACKNOWLEDGE);
	/* and the device starts again */
	driver_start();
	CHECK_EQ(dev.activates, 2);
	CHECK(dev.vd.active);
	machine_down();
}

static void test_queue_select_out_of_range(void)
{
	machine_up(1, NULL);
	driver_probe();
	const uint16_t sel[] = { NQUEUES, 64, 0xffff };
	for (unsigned i = 0; i < 3; i++) {
		wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, sel[i]);
		CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2), sel[i]);
		wr(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2, 16);
		wr(COMMON(VIRTIO_PCI_COMMON_Q_MSIX), 2, 1);
		wr(COMMON(VIRTIO_PCI_COMMON_Q_DESCLO), 8, 0x1000);
		wr(COMMON(VIRTIO_PCI_COMMON_Q_ENABLE), 2, 1);
		CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2), 0);
		CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_MSIX), 2), 0);
		CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_ENABLE), 2), 0);
		CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_NOFF), 2), 0);
		CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_DESCLO), 8), 0);
	}
	for (unsigned q = 0; q < NQUEUES; q++) {
		CHECK_EQ(dev.vd.vqs[q].size, QMAX);
		CHECK(!dev.vd.vqs[q].enabled);
	}
	/* past the last field of common config: reads 0, writes ignored */
	CHECK_EQ(rd(COMMON(0x38), 4), 0);
	wr(COMMON(0x3c), 4, 0xffffffff);
	CHECK_EQ(rd(COMMON(0x3c), 4), 0);
	CHECK_EQ(rd(COMMON(0xff8), 8), 0);
	/* a partial write to a field is dropped */
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 1, 1);
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT + 1), 1, 1);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2), 0xffff);
	machine_down();
}

static void test_device_config(void)
{
	machine_up(1, NULL);
	driver_probe();
	CHECK_EQ(rd(L.device, 1), 0x10);
	CHECK_EQ(rd(L.device + 2, 2), 0x1312);
	CHECK_EQ(rd(L.device + 8, 4), 0x1b1a1918);
	CHECK_EQ(rd(L.device, 8), 0x1716151413121110ull);
	int reads = dev.config_reads;
	/* beyond config_size, or running over its end: 0, device not asked */
	CHECK_EQ(rd(L.device + 10, 4), 0);
	CHECK_EQ(rd(L.device + 12, 1), 0);
	CHECK_EQ(rd(L.device + 0xffc, 4), 0);
	CHECK_EQ(rd(L.device + 0xffe, 4), 0);         /* straddles into the notify page */
	CHECK_EQ(rd(L.device + 6, 8), 0);
	CHECK_EQ(dev.config_reads, reads);
	wr(L.device + 4, 2, 0xbeef);
	CHECK_EQ(dev.config[4], 0xef);
	CHECK_EQ(dev.config[5], 0xbe);
	int writes = dev.config_writes;
	wr(L.device + 11, 2, 0xffff);
	wr(L.device + 12, 4, 0xffffffff);
	wr(L.device + 0x800, 8, ~0ull);
	CHECK_EQ(dev.config_writes, writes);
	CHECK_EQ(dev.config[11], 0x1b);
	/* config generation */
	uint64_t gen = rd(COMMON(VIRTIO_PCI_COMMON_CFGGENERATION), 1);
	virtio_config_changed(&dev.vd);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_CFGGENERATION), 1), (gen + 1) & 0xff);
	machine_down();
}

static void msix_entry(unsigned v, uint64_t addr, uint32_t data, bool masked)
{
	uint64_t e = L.table + 16 * v;
	wr(e + 0, 4, (uint32_t)addr);
	wr(e + 4, 4, (uint32_t)(addr >> 32));
	wr(e + 8, 4, data);
	wr(e + 12, 4, masked);
}

static void test_msix(void)
{
	machine_up(1, NULL);
	driver_probe();
	driver_start();
	unsigned ctl = L.msix_cap + 2;
	/* power-on: all entries masked, MSI-X off */
	for (unsigned v = 0; v < L.nvec; v++)
		CHECK_EQ(rd(L.table + 16 * v + 12, 4), 1);
	CHECK_EQ(cfg_read(ctl, 2), NQUEUES);         /* table size - 1, off */
	cfg_write(ctl, 2, 0xffff);
	CHECK_EQ(cfg_read(ctl, 2), 0xc000 | NQUEUES); /* only enable and mask-all move */

	/* Linux: enable with mask-all, program, unmask function */
	cfg_write(ctl, 2, 0xc000);
	for (unsigned v = 0; v < L.nvec; v++)
		msix_entry(v, 0xfee00000 + v * 0x1000 + 3, 0x4000 + v, true);
	CHECK_EQ(rd(L.table + 16 + 0, 4), 0xfee01000);  /* low address bits read 0 */
	CHECK_EQ(rd(L.table + 16 + 8, 4), 0x4001);
	wr(L.table + 16 + 12, 4, 0xfffffffe);           /* reserved bits stay 0 */
	CHECK_EQ(rd(L.table + 16 + 12, 4), 0);
	wr(L.table + 16 + 12, 4, 1);
	CHECK_EQ(rd(L.table + 16, 8), 0x00000000fee01000ull);
	CHECK_EQ(rd(L.table + 16 * L.nvec, 4), 0);      /* past the table */
	CHECK_EQ(rd(L.table + 2, 2), 0);                /* not a dword: reads 0 */
	wr(L.table + 1, 4, 0xffffffff);
	CHECK_EQ(rd(L.table, 4), 0xfee00000);
	cfg_write(ctl, 2, 0x8000);

	/* queue 0 uses vector 1: masked, the signal waits in the PBA */
	virtio_signal_queue(&dev.vd, 0);
	CHECK_EQ(virtio_pci_interrupts(vp, 1), 0);
	CHECK_EQ(rd(L.pba, 4), 1u << 1);
	CHECK_EQ(rd(L.pba, 8), 1u << 1);
	wr(L.pba, 4, 0);                                /* read-only */
	CHECK_EQ(rd(L.pba, 4), 1u << 1);
	wr(L.table + 16 + 12, 4, 0);                    /* unmask: it fires */
	CHECK_EQ(virtio_pci_interrupts(vp, 1), 1);
	CHECK_EQ(rd(L.pba, 4), 0);
	virtio_signal_queue(&dev.vd, 0);
	CHECK_EQ(virtio_pci_interrupts(vp, 1), 2);
	/* function mask */
	cfg_write(ctl, 2, 0xc000);
	virtio_signal_queue(&dev.vd, 0);
	CHECK_EQ(virtio_pci_interrupts(vp, 1), 2);
	CHECK_EQ(rd(L.pba, 4), 1u << 1);
	cfg_write(ctl + 1, 1, 0x80);                    /* a byte write clears mask-all */
	CHECK_EQ(virtio_pci_interrupts(vp, 1), 3);
	/* MSI-X disabled: nothing delivered */
	cfg_write(ctl, 2, 0);
	virtio_signal_queue(&dev.vd, 0);
	CHECK_EQ(virtio_pci_interrupts(vp, 1), 3);
	cfg_write(ctl, 2, 0x8000);
	CHECK_EQ(virtio_pci_interrupts(vp, 1), 4);
	/* config changes go to msix_config */
	wr(COMMON(VIRTIO_PCI_COMMON_MSIX), 2, 0);
	wr(L.table + 12, 4, 0);
	virtio_config_changed(&dev.vd);
	CHECK_EQ(virtio_pci_interrupts(vp, 0), 1);
	/* a queue without a vector, or a queue that does not exist */
	wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, 2);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_Q_MSIX), 2), 3);
	virtio_signal_queue(&dev.vd, 7);
	CHECK_EQ(virtio_pci_interrupts(vp, 99), 0);
	/* ISR: both causes, cleared by the read */
	CHECK_EQ(rd(L.isr, 1), 3);
	CHECK_EQ(rd(L.isr, 1), 0);
	virtio_config_changed(&dev.vd);
	CHECK_EQ(rd(L.isr, 4), 2);
	CHECK_EQ(rd(L.isr, 1), 0);
	/* without KVM there are no eventfds */
	CHECK_EQ(virtio_kick_fd(&dev.vd, 0), -1);
	CHECK_EQ(virtio_call_fd(&dev.vd, 0), -1);
	machine_down();
}

static void test_notify(void)
{
	machine_up(1, NULL);
	driver_probe();
	/* before DRIVER_OK, a notification reaches nobody */
	wr(L.notify + 4, 2, 1);
	pump();
	CHECK_EQ(dev.notifies[1], 0);
	driver_start();
	int base[NQUEUES];
	for (unsigned q = 0; q < NQUEUES; q++)
		base[q] = dev.notifies[q];
	/* vp_notify: a 16-bit write of the queue index at its notify address */
	wr(L.notify + 2 * L.multiplier, 2, 2);
	CHECK_EQ(dev.notifies[2], base[2]);           /* on the loop, not here */
	pump();
	CHECK_EQ(dev.notifies[2], base[2] + 1);
	CHECK_EQ(dev.notifies[0], base[0]);
	/* several before the loop runs: each queue once */
	wr(L.notify + 0, 2, 0);
	wr(L.notify + 4, 2, 1);
	wr(L.notify + 4, 2, 1);
	pump();
	CHECK_EQ(dev.notifies[0], base[0] + 1);
	CHECK_EQ(dev.notifies[1], base[1] + 1);
	/* past the last queue: ignored */
	wr(L.notify + 4 * NQUEUES, 2, NQUEUES);
	wr(L.notify + 0xffe, 2, 0);
	pump();
	CHECK_EQ(dev.notifies[2], base[2] + 1);
	/* reads of the notify region are 0 */
	CHECK_EQ(rd(L.notify, 4), 0);
	machine_down();
}

/* A struct kvm without a VM: realize does nothing, and the KVM wrappers fail
 * with messages naming the ioctl, leaving the routing table as it was. */
static void test_without_vm(void)
{
	struct kvm k;
	memset(&k, 0, sizeof(k));
	k.sys_fd = k.vm_fd = -1;
	machine_up(1, &k);
	driver_probe();
	driver_start();
	CHECK(dev.vd.active);
	CHECK_EQ(virtio_kick_fd(&dev.vd, 0), -1);
	CHECK_EQ(virtio_call_fd(&dev.vd, 0), -1);
	machine_down();

	CHECK_EQ(kvm_routes_init(&k), 0);
	CHECK_EQ(k.nroutes, 40);
	int ioapic = 0, master = 0, slave = 0;
	bool gsi2_pic = false, gsi9_slave1 = false;
	for (unsigned i = 0; i < k.nroutes; i++) {
		const struct kvm_irq_routing_entry *e = &k.routes[i];
		CHECK_EQ(e->type, KVM_IRQ_ROUTING_IRQCHIP);
		if (e->u.irqchip.irqchip == KVM_IRQCHIP_IOAPIC) {
			ioapic++;
			CHECK_EQ(e->u.irqchip.pin, e->gsi);
		} else if (e->u.irqchip.irqchip == KVM_IRQCHIP_PIC_MASTER) {
			master++;
			CHECK(e->gsi < 8);
			gsi2_pic |= e->gsi == 2 && e->u.irqchip.pin == 2;
		} else {
			slave++;
			CHECK(e->gsi >= 8 && e->gsi < 16);
			gsi9_slave1 |= e->gsi == 9 && e->u.irqchip.pin == 1;
		}
	}
	CHECK_EQ(ioapic, 24);
	CHECK_EQ(master, 8);
	CHECK_EQ(slave, 8);
	CHECK(gsi2_pic && gsi9_slave1);
	unsigned gsi = 0;
	CHECK_EQ(kvm_msi_route_add(&k, 0xfee00000, 0x4041, &gsi), -1);
	CHECK_CONTAINS(vmm_error(), "KVM_SET_GSI_ROUTING");
	CHECK_EQ(k.nroutes, 40);
	CHECK_EQ(k.next_msi_gsi, KVM_MSI_GSI_BASE);
	CHECK_EQ(kvm_msi_route_update(&k, 24, 0xfee00000, 0), -1);
	CHECK_CONTAINS(vmm_error(), "GSI 24");
	CHECK_EQ(kvm_msi_route_update(&k, 2, 0xfee00000, 0), -1); /* an irqchip route */
	CHECK_EQ(kvm_ioeventfd(&k, 0xc0003000, 3, 0, true), -1);
	CHECK_CONTAINS(vmm_error(), "length 3");
	CHECK_EQ(kvm_ioeventfd(&k, 0xc0003000, 0, 0, true), -1);
	CHECK_CONTAINS(vmm_error(), "KVM_IOEVENTFD");
	CHECK_EQ(kvm_irqfd(&k, 0, 24, false), -1);
	CHECK_CONTAINS(vmm_error(), "KVM_IRQFD deassign");
	kvm_destroy(&k);
	CHECK(!k.routes_ready);
	CHECK(k.routes == NULL);
	kvm_destroy(&k); /* twice, as vm_free may */
	CHECK_EQ(kvm_msi_route_add(&k, 0, 0, &gsi), -1);
}

static uint32_t rnd_state = 0x2545f491;

static uint32_t rnd(void)
{
	return xorshift32(&rnd_state);
}

static void test_garbage(void)
{
	static const unsigned lens[] = { 1, 2, 4, 8 };
	machine_up(1, NULL);
	driver_probe();
	driver_start();
	/* every register offset of every region, random widths and values */
	for (int round = 0; round < 4; round++) {
		for (uint64_t off = 0; off < VIRTIO_PCI_BAR_SIZE; off++) {
			if ((off & 0xfff) >= 0x100 && (rnd() & 15))
				continue; /* sample the empty tail of each page */
			unsigned len = lens[rnd() % 4];
			uint64_t val = ((uint64_t)rnd() << 32) | rnd();
			if (rnd() & 1)
				wr(bar + off, len, val);
			else
				rd(bar + off, len);
			if ((off & 0x3f) == 0)
				pump();
		}
		pump();
	}
	/* config space too, then put the BAR back and check it still answers */
	for (int i = 0; i < 20000; i++) {
		unsigned len = lens[rnd() % 3];
		unsigned reg = rnd() & 0xff;
		reg &= ~(len - 1);
		if (rnd() & 1)
			cfg_write(reg, len, rnd());
		else
			cfg_read(reg, len);
		virtio_signal_queue(&dev.vd, rnd() % (NQUEUES + 2));
		if ((i & 0xff) == 0)
			pump();
	}
	cfg_write(0x10, 4, (uint32_t)bar);
	cfg_write(0x04, 2, PCI_COMMAND_MEMORY);
	CHECK_EQ(rd(COMMON(VIRTIO_PCI_COMMON_NUMQ), 2), NQUEUES);
	driver_start();
	CHECK(dev.vd.active);
	machine_down();
}

/* vCPU threads hammer config space and the registers while the main
 * thread runs the loop and signals queues (meant for -fsanitize=thread). */
static _Atomic int stop_threads;

static void *vcpu_thread(void *arg)
{
	uint32_t x = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
	while (!stop_threads) {
		xorshift32(&x);
		unsigned off = x % 0x40;
		uint64_t v = 0;
		switch (x >> 29) {
		case 0: bus_read(&mmio, L.common + off, &v, 1); break;
		case 1: v = x & 0xff; bus_write(&mmio, L.common + VIRTIO_PCI_COMMON_STATUS, &v, 1); break;
		case 2: v = x % 4; bus_write(&mmio, L.common + VIRTIO_PCI_COMMON_Q_SELECT, &v, 2); break;
		case 3: bus_read(&mmio, L.table + (x % 64) * 4, &v, 4); break;
		case 4: v = x & 1; bus_write(&mmio, L.table + 16 * (x % 4) + 12, &v, 4); break;
		case 5: v = (x & 0xf) == 0 ? 0 : x % 3; bus_write(&mmio, L.notify + 4 * (x % 3), &v, 2); break;
		case 6: bus_read(&mmio, L.device + (x % 12), &v, 1); break;
		default: {
			uint32_t a = 0x80000000u | (slot << 11) | ((x % 64) * 4);
			bus_write(&pio, 0xcf8, &a, 4);
			bus_read(&pio, 0xcfc, &v, 4);
			break;
		}
		}
	}
	return NULL;
}

static void test_vcpu_threads(void)
{
	machine_up(1, NULL);
	driver_probe();
	driver_start();
	cfg_write(L.msix_cap + 2, 2, 0x8000);
	pthread_t t[3];
	stop_threads = 0;
	for (uintptr_t i = 0; i < 3; i++)
		CHECK_EQ(pthread_create(&t[i], NULL, vcpu_thread, (void *)(i + 1)), 0);
	for (int i = 0; i < 20000; i++) {
		virtio_signal_queue(&dev.vd, (unsigned)i % NQUEUES);
		if (i % 16 == 0)
			virtio_config_changed(&dev.vd);
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	stop_threads = 1;
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	pump();
	machine_down();
}

int main(void)
{
	RUN(test_identity);
	RUN(test_features);
	RUN(test_queue_setup_and_activate);
	RUN(test_activate_failure);
	RUN(test_reset);
	RUN(test_queue_select_out_of_range);
	RUN(test_device_config);
	RUN(test_msix);
	RUN(test_notify);
	RUN(test_without_vm);
	RUN(test_garbage);
	RUN(test_vcpu_threads);
	return CHECK_DONE();
}
