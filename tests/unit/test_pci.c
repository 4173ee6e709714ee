/* PCI bus 0: configuration mechanism #1, the host bridge, BARs and their
 * decoding through the MMIO window, capabilities. No KVM: the tests play
 * the guest through the port and MMIO buses as a vCPU would. */
#include <stdint.h>

#include "bus.h"
#include "check.h"
#include "err.h"
#include "pci.h"

static struct bus pio, mmio;

static void outl(uint16_t port, uint32_t v) { bus_write(&pio, port, &v, 4); }
static void outb(uint16_t port, uint8_t v) { bus_write(&pio, port, &v, 1); }
static uint32_t inl(uint16_t port) { uint32_t v = 0; bus_read(&pio, port, &v, 4); return v; }
static uint8_t inb(uint16_t port) { uint8_t v = 0; bus_read(&pio, port, &v, 1); return v; }

/* Linux's conf1 accessors: address, then the data port + (reg & 3). */
static uint32_t conf1_address(unsigned busn, unsigned devfn, unsigned reg)
{
	return 0x80000000u | (busn << 16) | (devfn << 8) | (reg & 0xfc);
}

static uint32_t cfg_read_bdf(unsigned busn, unsigned devfn, unsigned reg, unsigned len)
{
	outl(0xcf8, conf1_address(busn, devfn, reg));
	uint32_t v = 0;
	bus_read(&pio, 0xcfc + (reg & 3), &v, len);
	return v;
}

static uint32_t cfg_read(unsigned slot, unsigned reg, unsigned len)
{
	return cfg_read_bdf(0, slot << 3, reg, len);
}

static void cfg_write(unsigned slot, unsigned reg, unsigned len, uint32_t v)
{
	outl(0xcf8, conf1_address(0, slot << 3, reg));
	bus_write(&pio, 0xcfc + (reg & 3), &v, len);
}

/* A device that records BAR accesses and moves. */
struct rec {
	struct pci_device pci;
	int reads, writes, moves, cfg_writes;
	unsigned bar, last_cfg_off, last_cfg_len;
	uint64_t offset, old_addr, new_addr;
	unsigned len;
	uint64_t written;
};

static void rec_read(struct pci_device *d, unsigned bar, uint64_t offset, void *data, unsigned len)
{
	struct rec *r = d->opaque;
	r->reads++;
	r->bar = bar;
	r->offset = offset;
	r->len = len;
	memset(data, 0xa5, len);
}

static void rec_write(struct pci_device *d, unsigned bar, uint64_t offset, const void *data, unsigned len)
{
	struct rec *r = d->opaque;
	r->writes++;
	r->bar = bar;
	r->offset = offset;
	r->len = len;
	r->written = 0;
	memcpy(&r->written, data, len);
}

static void rec_moved(struct pci_device *d, unsigned bar, uint64_t old_addr, uint64_t new_addr)
{
	struct rec *r = d->opaque;
	r->moves++;
	r->bar = bar;
	r->old_addr = old_addr;
	r->new_addr = new_addr;
}

static void rec_cfg(struct pci_device *d, unsigned off, unsigned len)
{
	struct rec *r = d->opaque;
	r->cfg_writes++;
	r->last_cfg_off = off;
	r->last_cfg_len = len;
}

static const struct pci_device_ops rec_ops = { rec_read, rec_write, rec_moved, rec_cfg };

static struct pci_bus *setup(void)
{
	bus_init(&pio, "pio");
	bus_init(&mmio, "mmio");
	struct pci_bus *b = pci_bus_new(&pio, &mmio);
	CHECK(b != NULL);
	return b;
}

static void teardown(struct pci_bus *b)
{
	pci_bus_free(b);
	bus_destroy(&pio);
	bus_destroy(&mmio);
}

static void rec_init(struct rec *r, uint16_t device)
{
	memset(r, 0, sizeof(*r));
	pci_device_init(&r->pci, "rec", &rec_ops, r, 0x1234, device, 0x020000, 3);
}

/* arch/x86/pci/direct.c: pci_check_type1 then pci_sanity_check. */
static void test_linux_probe(void)
{
	struct pci_bus *b = setup();
	outb(0xcfb, 0x01);                /* a byte write to the address register: dropped */
	uint32_t tmp = inl(0xcf8);
	outl(0xcf8, 0x80000000);
	CHECK_EQ(inl(0xcf8), 0x80000000);
	/* sanity check: a host bridge or an Intel/Compaq device on bus 0 */
	int found = -1;
	for (unsigned devfn = 0; devfn < 0x100 && found < 0; devfn++) {
		uint16_t cls = (uint16_t)cfg_read_bdf(0, devfn, 0x0a, 2);
		uint16_t vendor = (uint16_t)cfg_read_bdf(0, devfn, 0x00, 2);
		if (cls == 0x0600 || cls == 0x0300 || vendor == 0x8086 || vendor == 0x0e11)
			found = (int)devfn;
	}
	CHECK_EQ(found, 0);
	outl(0xcf8, tmp);
	CHECK_EQ(inl(0xcf8), tmp);
	/* pci_check_type2 must not think it found a type 2 bridge */
	outb(0xcfb, 0);
	outb(0xcf8, 0);
	outb(0xcfa, 0);
	CHECK(inb(0xcf8) != 0 || inb(0xcfa) != 0);
	/* word accesses to the address register are dropped too */
	uint16_t w = 0x1234;
	outl(0xcf8, 0x80000010);
	bus_write(&pio, 0xcf8, &w, 2);
	CHECK_EQ(inl(0xcf8), 0x80000010);
	/* bits 1:0 of the address register read as 0 */
	outl(0xcf8, 0x80000003);
	CHECK_EQ(inl(0xcf8), 0x80000000);
	teardown(b);
}

static void test_host_bridge(void)
{
	struct pci_bus *b = setup();
	CHECK_EQ(cfg_read(0, 0x00, 4), 0x0d578086);
	CHECK_EQ(cfg_read(0, 0x08, 4) >> 8, 0x060000);
	CHECK_EQ(cfg_read(0, 0x0e, 1), 0);  /* header type 0, single function */
	CHECK_EQ(cfg_read(0, 0x0a, 2), 0x0600);
	CHECK_EQ(cfg_read(0, 0x0b, 1), 0x06);
	/* IDs are read-only */
	cfg_write(0, 0x00, 4, 0);
	cfg_write(0, 0x08, 4, 0xffffffff);
	CHECK_EQ(cfg_read(0, 0x00, 4), 0x0d578086);
	CHECK_EQ(cfg_read(0, 0x08, 4) >> 8, 0x060000);
	/* no BARs, no capabilities */
	for (unsigned reg = 0x10; reg < 0x28; reg += 4) {
		cfg_write(0, reg, 4, 0xffffffff);
		CHECK_EQ(cfg_read(0, reg, 4), 0);
	}
	CHECK_EQ(cfg_read(0, 0x06, 2) & 0x10, 0);
	teardown(b);
}

static void test_no_device(void)
{
	struct pci_bus *b = setup();
	CHECK_EQ(cfg_read(5, 0x00, 4), 0xffffffff);
	CHECK_EQ(cfg_read(31, 0x00, 2), 0xffff);
	CHECK_EQ(cfg_read_bdf(0, 1, 0x00, 4), 0xffffffff);       /* 00:00.1 */
	CHECK_EQ(cfg_read_bdf(1, 0, 0x00, 4), 0xffffffff);       /* bus 1 */
	CHECK_EQ(cfg_read_bdf(255, 0xff, 0xfc, 4), 0xffffffff);
	/* extended register bits (AMD's 27:24) address nothing here */
	outl(0xcf8, 0x81000000);
	CHECK_EQ(inl(0xcfc), 0xffffffff);
	/* enable bit clear: no configuration cycle */
	outl(0xcf8, 0x00000000);
	CHECK_EQ(inl(0xcfc), 0xffffffff);
	uint16_t one = 0x0002;
	outl(0xcf8, 0x00000004);
	bus_write(&pio, 0xcfc, &one, 2);
	CHECK_EQ(cfg_read(0, 0x04, 2), 0); /* the host bridge's command did not change */
	/* writes to empty slots are dropped without harm */
	cfg_write(7, 0x04, 4, 0xffffffff);
	CHECK_EQ(cfg_read(7, 0x04, 4), 0xffffffff);
	teardown(b);
}

static void test_data_port_widths(void)
{
	struct pci_bus *b = setup();
	outl(0xcf8, conf1_address(0, 0, 0));
	CHECK_EQ(inb(0xcfc), 0x86);
	CHECK_EQ(inb(0xcfd), 0x80);
	CHECK_EQ(inb(0xcfe), 0x57);
	CHECK_EQ(inb(0xcff), 0x0d);
	uint16_t w = 0;
	CHECK(bus_read(&pio, 0xcfe, &w, 2));
	CHECK_EQ(w, 0x0d57);
	CHECK(bus_read(&pio, 0xcfd, &w, 2));  /* unaligned inside the dword */
	CHECK_EQ(w, 0x5780);
	/* straddling the end of the data window: not claimed */
	uint32_t v = 0;
	CHECK(!bus_read(&pio, 0xcfe, &v, 4));
	CHECK_EQ(v, 0xffffffff);
	/* the last dword of config space */
	CHECK_EQ(cfg_read(0, 0xfc, 4), 0);
	CHECK_EQ(cfg_read(0, 0xff, 1), 0);
	teardown(b);
}

static void test_bar_sizing(void)
{
	struct pci_bus *b = setup();
	struct rec r;
	rec_init(&r, 1);
	CHECK_EQ(pci_device_add_bar(&r.pci, 0, 0x4000, false), 0);
	CHECK_EQ(pci_device_add_bar(&r.pci, 2, 0x100000, true), 0);
	CHECK_EQ(pci_device_add_bar(&r.pci, 3, 0x1000, false), -1); /* upper half of BAR 2 */
	CHECK_CONTAINS(vmm_error(), "in use");
	CHECK_EQ(pci_device_add_bar(&r.pci, 5, 0x1000, true), -1);  /* no BAR 6 */
	CHECK_EQ(pci_device_add_bar(&r.pci, 4, 0x3000, false), -1); /* not a power of 2 */
	CHECK_EQ(pci_device_add_bar(&r.pci, 4, 8, false), -1);
	CHECK_EQ(pci_bus_add(b, &r.pci), 0);
	CHECK_EQ(r.pci.slot, 1);
	CHECK_EQ(pci_device_add_bar(&r.pci, 4, 0x1000, false), -1); /* too late */

	uint32_t bar0 = cfg_read(1, 0x10, 4);
	CHECK(bar0 >= PCI_MMIO_WINDOW_START && bar0 < PCI_MMIO_WINDOW_END);
	CHECK_EQ(bar0 % 0x4000, 0);
	CHECK_EQ(pci_bar_address(&r.pci, 0), bar0);
	uint64_t bar2 = cfg_read(1, 0x18, 4) | ((uint64_t)cfg_read(1, 0x1c, 4) << 32);
	CHECK_EQ(bar2 & 0xf, 0x4);             /* 64-bit memory */
	bar2 &= ~0xfull;
	CHECK_EQ(bar2 % 0x100000, 0);
	CHECK(bar2 >= PCI_MMIO_WINDOW_START && bar2 + 0x100000 <= PCI_MMIO_WINDOW_END);
	CHECK(bar2 >= bar0 + 0x4000 || bar2 + 0x100000 <= bar0); /* no overlap */

	/* Linux's __pci_read_base: decode off, write ~0, read, restore */
	cfg_write(1, 0x10, 4, 0xffffffff);
	CHECK_EQ(cfg_read(1, 0x10, 4), 0xffffc000);
	cfg_write(1, 0x10, 4, bar0);
	CHECK_EQ(cfg_read(1, 0x10, 4), bar0);
	cfg_write(1, 0x18, 4, 0xffffffff);
	cfg_write(1, 0x1c, 4, 0xffffffff);
	CHECK_EQ(cfg_read(1, 0x18, 4), 0xfff00004);
	CHECK_EQ(cfg_read(1, 0x1c, 4), 0xffffffff);
	cfg_write(1, 0x18, 4, (uint32_t)bar2);
	cfg_write(1, 0x1c, 4, (uint32_t)(bar2 >> 32));
	CHECK_EQ(pci_bar_address(&r.pci, 2), bar2);
	/* unimplemented BARs and the ROM size as 0 */
	for (unsigned reg = 0x14; reg <= 0x24; reg += (reg == 0x14 ? 0xc : 4)) {
		cfg_write(1, reg, 4, 0xffffffff);
		CHECK_EQ(cfg_read(1, reg, 4), 0);
	}
	cfg_write(1, 0x30, 4, 0xfffff800);
	CHECK_EQ(cfg_read(1, 0x30, 4), 0);
	/* a byte write to a BAR goes through the mask too */
	cfg_write(1, 0x10, 1, 0xff);
	CHECK_EQ(cfg_read(1, 0x10, 4), bar0);
	CHECK_EQ(r.moves, 0); /* decode never turned on */
	teardown(b);
}

static void test_write_masks(void)
{
	struct pci_bus *b = setup();
	struct rec r;
	rec_init(&r, 2);
	pci_device_set_subsystem(&r.pci, 0x1af4, 0x0001);
	CHECK_EQ(pci_bus_add(b, &r.pci), 0);
	const unsigned ro[] = { 0x00, 0x08, 0x0e, 0x2c, 0x34, 0x3d };
	uint32_t before[6];
	for (unsigned i = 0; i < 6; i++)
		before[i] = cfg_read(1, ro[i] & ~3u, 4);
	for (unsigned off = 0; off < 0x40; off++)
		if (off < 0x04 || off >= 0x08)
			cfg_write(1, off, 1, 0xff);
	CHECK_EQ(cfg_read(1, 0x00, 4), 0x00021234);
	CHECK_EQ(cfg_read(1, 0x08, 4), 0x02000003);
	CHECK_EQ(cfg_read(1, 0x2c, 4), 0x00011af4);
	CHECK_EQ(cfg_read(1, 0x3d, 1), 0);        /* interrupt pin: none */
	CHECK_EQ(cfg_read(1, 0x3c, 1), 0xff);     /* interrupt line: writable */
	CHECK_EQ(cfg_read(1, 0x0c, 1), 0xff);     /* cache line size */
	CHECK_EQ(cfg_read(1, 0x0e, 1), 0);
	CHECK_EQ(cfg_read(1, 0x08, 4), before[1]);
	/* command: only the implemented bits; status: read-only */
	cfg_write(1, 0x04, 4, 0xffffffff);
	CHECK_EQ(cfg_read(1, 0x04, 2), 0x0547);
	CHECK_EQ(cfg_read(1, 0x06, 2), 0);
	cfg_write(1, 0x05, 1, 0x00);
	CHECK_EQ(cfg_read(1, 0x04, 2), 0x0047);
	CHECK(r.cfg_writes > 0);
	CHECK_EQ(r.last_cfg_off, 0x05);
	CHECK_EQ(r.last_cfg_len, 1);
	/* beyond the header: nothing writable, reads 0 */
	cfg_write(1, 0x80, 4, 0xffffffff);
	CHECK_EQ(cfg_read(1, 0x80, 4), 0);
	cfg_write(1, 0xfc, 4, 0xffffffff);
	CHECK_EQ(cfg_read(1, 0xfc, 4), 0);
	teardown(b);
}

static void test_capabilities(void)
{
	struct pci_bus *b = setup();
	struct rec r;
	rec_init(&r, 3);
	const uint8_t msix[12] = { PCI_CAP_ID_MSIX, 0xee, 0x03, 0x00, 0x00, 0x40, 0, 0, 0x00, 0x50, 0, 0 };
	const uint8_t vndr[16] = { PCI_CAP_ID_VNDR, 0, 16, 1 };
	const uint8_t odd[5] = { 0x05, 0, 1, 2, 3 };
	int c1 = pci_add_capability(&r.pci, msix, sizeof(msix));
	int c2 = pci_add_capability(&r.pci, vndr, sizeof(vndr));
	int c3 = pci_add_capability(&r.pci, odd, sizeof(odd));
	int c4 = pci_add_capability(&r.pci, vndr, sizeof(vndr));
	CHECK_EQ(c1, 0x40);
	CHECK_EQ(c2, 0x4c);
	CHECK_EQ(c3, 0x5c);
	CHECK_EQ(c4, 0x64);                       /* dword aligned after 5 bytes */
	const uint16_t ctl = 0xc000;
	pci_device_set_wmask(&r.pci, (unsigned)c1 + 2, &ctl, 2);
	CHECK_EQ(pci_find_capability(&r.pci, PCI_CAP_ID_MSIX), 0x40);
	CHECK_EQ(pci_find_capability(&r.pci, PCI_CAP_ID_VNDR), 0x4c);
	CHECK_EQ(pci_find_capability(&r.pci, 0x10), 0);
	CHECK_EQ(pci_bus_add(b, &r.pci), 0);

	/* the walk a driver does */
	CHECK(cfg_read(1, 0x06, 2) & 0x10);
	unsigned pos = cfg_read(1, 0x34, 1), n = 0;
	unsigned seen[8];
	while (pos && n < 8) {
		seen[n++] = pos;
		pos = cfg_read(1, pos + 1, 1);
	}
	CHECK_EQ(n, 4);
	CHECK_EQ(seen[0], 0x40);
	CHECK_EQ(seen[3], 0x64);
	CHECK_EQ(cfg_read(1, 0x40, 1), PCI_CAP_ID_MSIX);
	CHECK_EQ(cfg_read(1, 0x44, 4), 0x4000);
	/* only the bits opened by the mask move */
	cfg_write(1, 0x42, 2, 0xffff);
	CHECK_EQ(cfg_read(1, 0x42, 2), 0xc003);
	cfg_write(1, 0x41, 1, 0);                 /* the next pointer is read-only */
	CHECK_EQ(cfg_read(1, 0x41, 1), 0x4c);
	cfg_write(1, 0x4c, 4, 0);
	CHECK_EQ(cfg_read(1, 0x4c, 4), 0x01105c09); /* vendor cap: id, next, len, type */

	/* the list ends inside 256 bytes */
	struct rec full;
	rec_init(&full, 4);
	uint8_t big[188] = { PCI_CAP_ID_VNDR };
	CHECK_EQ(pci_add_capability(&full.pci, big, 64), 0x40);
	CHECK_EQ(pci_add_capability(&full.pci, big, 129), -1); /* would end at 0x101 */
	CHECK_CONTAINS(vmm_error(), "does not fit");
	CHECK_EQ(pci_add_capability(&full.pci, big, 128), 0x80); /* ends at 0x100 exactly */
	CHECK_EQ(pci_add_capability(&full.pci, big, 2), -1);
	struct rec exact;
	rec_init(&exact, 5);
	CHECK_EQ(pci_add_capability(&exact.pci, big, 188), 0x40);
	CHECK_EQ(pci_add_capability(&exact.pci, big, 4), 0xfc);  /* the last dword */
	CHECK_EQ(pci_add_capability(&exact.pci, big, 2), -1);
	CHECK_EQ(pci_find_capability(&exact.pci, PCI_CAP_ID_VNDR), 0x40);
	teardown(b);
}

static void test_bar_decode_and_move(void)
{
	struct pci_bus *b = setup();
	struct rec r;
	rec_init(&r, 5);
	CHECK_EQ(pci_device_add_bar(&r.pci, 0, 0x2000, false), 0);
	CHECK_EQ(pci_bus_add(b, &r.pci), 0);
	uint64_t a = pci_bar_address(&r.pci, 0);
	uint32_t v = 0;

	/* decode off: the window is claimed (by the PCI bus) but reads float */
	CHECK(bus_read(&mmio, a, &v, 4));
	CHECK_EQ(v, 0xffffffff);
	CHECK_EQ(r.reads, 0);
	CHECK_EQ(pci_bar_decoded(&r.pci, 0), PCI_BAR_UNMAPPED);

	/* memory space enable: the BAR decodes, the device hears of it */
	cfg_write(1, 0x04, 2, PCI_COMMAND_MEMORY);
	CHECK_EQ(r.moves, 1);
	CHECK_EQ(r.old_addr, PCI_BAR_UNMAPPED);
	CHECK_EQ(r.new_addr, a);
	CHECK_EQ(pci_bar_decoded(&r.pci, 0), a);
	CHECK(bus_read(&mmio, a + 0x18, &v, 4));
	CHECK_EQ(v, 0xa5a5a5a5);
	CHECK_EQ(r.reads, 1);
	CHECK_EQ(r.offset, 0x18);
	CHECK_EQ(r.len, 4);
	uint64_t q = 0x1122334455667788ull;
	CHECK(bus_write(&mmio, a + 0x1ff8, &q, 8));
	CHECK_EQ(r.writes, 1);
	CHECK_EQ(r.offset, 0x1ff8);
	CHECK_EQ(r.written, q);
	/* straddling the end of the BAR: not the device's */
	CHECK(bus_read(&mmio, a + 0x1ffc, &q, 8));
	CHECK_EQ(q, UINT64_MAX);
	CHECK_EQ(r.reads, 1);
	/* rewriting the same command does not move anything */
	cfg_write(1, 0x04, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	CHECK_EQ(r.moves, 1);

	/* the guest moves the BAR while decoding */
	uint64_t na = 0xd0000000;
	cfg_write(1, 0x10, 4, (uint32_t)na);
	CHECK_EQ(r.moves, 2);
	CHECK_EQ(r.old_addr, a);
	CHECK_EQ(r.new_addr, na);
	v = 0;
	CHECK(bus_read(&mmio, a + 0x18, &v, 4));
	CHECK_EQ(v, 0xffffffff);
	CHECK_EQ(r.reads, 1);
	CHECK(bus_read(&mmio, na + 4, &v, 2));
	CHECK_EQ(r.reads, 2);
	CHECK_EQ(r.offset, 4);
	CHECK_EQ(r.len, 2);

	/* sizing while decoding (Linux avoids it, others may not): the
	 * transient ~0 address is outside the window, so it stops decoding */
	cfg_write(1, 0x10, 4, 0xffffffff);
	CHECK_EQ(r.moves, 3);
	CHECK_EQ(r.new_addr, PCI_BAR_UNMAPPED);
	cfg_write(1, 0x10, 4, (uint32_t)na);
	CHECK_EQ(r.moves, 4);
	CHECK_EQ(r.new_addr, na);

	/* below the window: not decoded */
	cfg_write(1, 0x10, 4, 0x80000000);
	CHECK_EQ(r.moves, 5);
	CHECK_EQ(r.new_addr, PCI_BAR_UNMAPPED);
	cfg_write(1, 0x10, 4, (uint32_t)na);

	/* decode off again */
	cfg_write(1, 0x04, 2, 0);
	CHECK_EQ(r.moves, 7);
	CHECK_EQ(r.old_addr, na);
	CHECK_EQ(r.new_addr, PCI_BAR_UNMAPPED);
	int reads = r.reads;
	CHECK(bus_read(&mmio, na, &v, 4));
	CHECK_EQ(v, 0xffffffff);
	CHECK(!bus_write(&mmio, 0xfec00000, &v, 4)); /* the IOAPIC is not in the window */
	CHECK_EQ(r.reads, reads);

	/* removed from the bus: gone from config space and the window */
	cfg_write(1, 0x04, 2, PCI_COMMAND_MEMORY);
	pci_bus_remove(b, &r.pci);
	CHECK_EQ(cfg_read(1, 0, 4), 0xffffffff);
	CHECK(bus_read(&mmio, na, &v, 4));
	CHECK_EQ(r.reads, reads);
	teardown(b);
}

static void test_bus_limits(void)
{
	struct pci_bus *b = setup();
	static struct rec r[32];
	for (unsigned i = 0; i < 31; i++) {
		rec_init(&r[i], (uint16_t)i);
		CHECK_EQ(pci_device_add_bar(&r[i].pci, 0, 0x1000, false), 0);
		CHECK_EQ(pci_bus_add(b, &r[i].pci), 0);
		CHECK_EQ(r[i].pci.slot, (int)i + 1);
	}
	rec_init(&r[31], 99);
	CHECK_EQ(pci_bus_add(b, &r[31].pci), -1);
	CHECK_CONTAINS(vmm_error(), "full");
	CHECK_EQ(pci_bus_add(b, &r[0].pci), -1);   /* twice */
	/* every slot answers with its own identity */
	for (unsigned i = 0; i < 31; i++)
		CHECK_EQ(cfg_read(i + 1, 0x02, 2), i);
	/* a freed slot is reused */
	pci_bus_remove(b, &r[4].pci);
	CHECK_EQ(pci_bus_add(b, &r[31].pci), 0);
	CHECK_EQ(r[31].pci.slot, 5);
	teardown(b);

	/* the window runs out */
	b = setup();
	struct rec big, small;
	rec_init(&big, 1);
	rec_init(&small, 2);
	CHECK_EQ(pci_device_add_bar(&big.pci, 0, 1ull << 31, false), 0); /* 2 GiB: never fits */
	CHECK_EQ(pci_bus_add(b, &big.pci), -1);
	CHECK_CONTAINS(vmm_error(), "window");
	CHECK_EQ(big.pci.slot, -1);
	CHECK_EQ(pci_device_add_bar(&small.pci, 0, 0x10, false), 0);
	CHECK_EQ(pci_bus_add(b, &small.pci), 0);
	CHECK_EQ(pci_bar_address(&small.pci, 0), PCI_MMIO_WINDOW_START); /* the failure took nothing */
	teardown(b);

	/* something already in the window */
	bus_init(&pio, "pio");
	bus_init(&mmio, "mmio");
	static const struct bus_ops none = { NULL, NULL };
	CHECK_EQ(bus_register(&mmio, 0xd0000000, 0x1000, &none, NULL, "squatter"), 0);
	CHECK(pci_bus_new(&pio, &mmio) == NULL);
	CHECK_CONTAINS(vmm_error(), "squatter");
	bus_destroy(&pio);
	bus_destroy(&mmio);
}

int main(void)
{
	RUN(test_linux_probe);
	RUN(test_host_bridge);
	RUN(test_no_device);
	RUN(test_data_port_widths);
	RUN(test_bar_sizing);
	RUN(test_write_masks);
	RUN(test_capabilities);
	RUN(test_bar_decode_and_move);
	RUN(test_bus_limits);
	return CHECK_DONE();
}
