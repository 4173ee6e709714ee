#include "pci.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "migstream.h"

/* The host bridge: an Intel ID, so that Linux's pci_sanity_check accepts the
 * bus even if it looked at the vendor only; class "host bridge" (0x0600) is
 * what it looks for first. 0x0d57 has no quirk in Linux. */
#define HOST_BRIDGE_VENDOR 0x8086
#define HOST_BRIDGE_DEVICE 0x0d57
#define HOST_BRIDGE_CLASS  0x060000

#define CONF1_ENABLE   0x80000000u
#define CONF1_RESERVED 0x7f000000u /* bits 30:24: AMD's extended register bits live here */

#define BAR_LOW_FLAGS 0xfu /* memory BAR bits 3:0: space, type, prefetchable */

struct pci_bus {
	pthread_mutex_t lock;
	uint32_t address;       /* 0xCF8 */
	struct pci_device *slots[PCI_MAX_SLOTS];
	struct pci_device host;
	uint64_t next_mmio;     /* first free byte of the window */
};

static const struct pci_device_ops no_ops;

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

static uint16_t get16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static void put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, sizeof(v));
}

/* --- devices ------------------------------------------------------------------ */

void pci_device_init(struct pci_device *d, const char *name, const struct pci_device_ops *ops, void *opaque,
		     uint16_t vendor, uint16_t device, uint32_t class_code, uint8_t revision)
{
	memset(d, 0, sizeof(*d));
	d->name = name;
	d->ops = ops ? ops : &no_ops;
	d->opaque = opaque;
	d->slot = -1;
	d->cap_end = PCI_CAP_START;
	for (unsigned i = 0; i < PCI_NUM_BARS; i++)
		d->bars[i].decoded = PCI_BAR_UNMAPPED;
	put16(d->config + PCI_VENDOR_ID, vendor);
	put16(d->config + PCI_DEVICE_ID, device);
	d->config[PCI_REVISION_ID] = revision;
	d->config[PCI_CLASS_PROG] = (uint8_t)class_code;
	d->config[PCI_CLASS_PROG + 1] = (uint8_t)(class_code >> 8);
	d->config[PCI_CLASS_PROG + 2] = (uint8_t)(class_code >> 16);
	d->config[PCI_HEADER_TYPE] = 0; /* type 0, single function */
	put16(d->wmask + PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
					      PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE);
	d->wmask[PCI_CACHE_LINE_SIZE] = 0xff;
	d->wmask[PCI_LATENCY_TIMER] = 0xff;
	d->wmask[PCI_INTERRUPT_LINE] = 0xff;
}

void pci_device_set_subsystem(struct pci_device *d, uint16_t vendor, uint16_t id)
{
	put16(d->config + PCI_SUBSYSTEM_VENDOR, vendor);
	put16(d->config + PCI_SUBSYSTEM_ID, id);
}

static bool bar_taken(const struct pci_device *d, unsigned bar)
{
	return d->bars[bar].size || d->bars[bar].is64;
}

int pci_device_add_bar(struct pci_device *d, unsigned bar, uint64_t size, bool is64)
{
	if (bar >= PCI_NUM_BARS || (is64 && bar + 1 >= PCI_NUM_BARS))
		return vmm_fail("%s: BAR %u: no such BAR register%s", d->name, bar, is64 ? " pair" : "");
	if (size < 16 || (size & (size - 1)) || (!is64 && size > (1ull << 31)))
		return vmm_fail("%s: BAR %u: size 0x%llx is not a power of 2 from 16 bytes to %s", d->name, bar,
				(unsigned long long)size, is64 ? "any" : "2 GiB");
	if (bar_taken(d, bar) || (is64 && bar_taken(d, bar + 1)))
		return vmm_fail("%s: BAR %u: already in use", d->name, bar);
	if (d->slot >= 0)
		return vmm_fail("%s: BAR %u: the device is already on the bus", d->name, bar);
	d->bars[bar] = (struct pci_bar){ .size = size, .is64 = is64, .decoded = PCI_BAR_UNMAPPED };
	uint64_t mask = ~(size - 1);
	uint8_t *reg = d->config + PCI_BASE_ADDRESS_0 + 4 * bar;
	uint8_t *wm = d->wmask + PCI_BASE_ADDRESS_0 + 4 * bar;
	put32(reg, is64 ? PCI_BAR_MEM_TYPE_64 : 0);
	put32(wm, (uint32_t)mask & ~BAR_LOW_FLAGS);
	if (is64) {
		/* the upper half: size 0, is64 marks it taken */
		d->bars[bar + 1] = (struct pci_bar){ .is64 = true, .decoded = PCI_BAR_UNMAPPED };
		put32(reg + 4, 0);
		put32(wm + 4, (uint32_t)(mask >> 32));
	}
	return 0;
}

int pci_add_capability(struct pci_device *d, const void *cap, unsigned len)
{
	unsigned off = d->cap_end;
	if (len < 2 || off + len > PCI_CONFIG_SIZE)
		return vmm_fail("%s: capability of %u bytes does not fit at 0x%x", d->name, len, off);
	memcpy(d->config + off, cap, len);
	memset(d->wmask + off, 0, len);
	d->config[off + 1] = 0;
	if (d->last_cap)
		d->config[d->last_cap + 1] = (uint8_t)off;
	else
		d->config[PCI_CAPABILITY_LIST] = (uint8_t)off;
	put16(d->config + PCI_STATUS, get16(d->config + PCI_STATUS) | PCI_STATUS_CAP_LIST);
	d->last_cap = (uint8_t)off;
	d->cap_end = (off + len + 3) & ~3u;
	return (int)off;
}

void pci_device_set_wmask(struct pci_device *d, unsigned offset, const void *mask, unsigned len)
{
	if (offset >= PCI_CONFIG_SIZE || len > PCI_CONFIG_SIZE - offset)
		return;
	memcpy(d->wmask + offset, mask, len);
}

unsigned pci_find_capability(const struct pci_device *d, uint8_t id)
{
	if (!(get16(d->config + PCI_STATUS) & PCI_STATUS_CAP_LIST))
		return 0;
	unsigned pos = d->config[PCI_CAPABILITY_LIST] & ~3u;
	for (int ttl = 48; ttl > 0 && pos >= PCI_CAP_START; ttl--) {
		if (d->config[pos] == id)
			return pos;
		pos = d->config[pos + 1] & ~3u;
	}
	return 0;
}

/* --- BAR decoding ----------------------------------------------------------- */

static uint64_t bar_programmed(const struct pci_device *d, unsigned bar)
{
	const uint8_t *reg = d->config + PCI_BASE_ADDRESS_0 + 4 * bar;
	uint64_t addr = get32(reg) & ~BAR_LOW_FLAGS;
	if (d->bars[bar].is64)
		addr |= (uint64_t)get32(reg + 4) << 32;
	return addr;
}

/* Where BAR `bar` decodes given the config space now. */
static uint64_t bar_decode(const struct pci_device *d, unsigned bar)
{
	const struct pci_bar *b = &d->bars[bar];
	if (!b->size || !(get16(d->config + PCI_COMMAND) & PCI_COMMAND_MEMORY))
		return PCI_BAR_UNMAPPED;
	uint64_t addr = bar_programmed(d, bar);
	if (addr < PCI_MMIO_WINDOW_START || addr >= PCI_MMIO_WINDOW_END ||
	    b->size > PCI_MMIO_WINDOW_END - addr)
		return PCI_BAR_UNMAPPED;
	return addr;
}

/* Bus lock held. Tells the device about every BAR whose decoding changed. */
static void update_decode(struct pci_device *d)
{
	for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
		if (!d->bars[i].size)
			continue;
		uint64_t now = bar_decode(d, i), old = d->bars[i].decoded;
		if (now == old)
			continue;
		d->bars[i].decoded = now;
		if (d->ops->bar_moved)
			d->ops->bar_moved(d, i, old, now);
	}
}

uint64_t pci_bar_address(struct pci_device *d, unsigned bar)
{
	if (bar >= PCI_NUM_BARS || !d->bars[bar].size)
		return 0;
	struct pci_bus *b = d->bus;
	if (b)
		pthread_mutex_lock(&b->lock);
	uint64_t addr = bar_programmed(d, bar);
	if (b)
		pthread_mutex_unlock(&b->lock);
	return addr;
}

uint64_t pci_bar_decoded(struct pci_device *d, unsigned bar)
{
	if (bar >= PCI_NUM_BARS)
		return PCI_BAR_UNMAPPED;
	struct pci_bus *b = d->bus;
	if (b)
		pthread_mutex_lock(&b->lock);
	uint64_t addr = d->bars[bar].decoded;
	if (b)
		pthread_mutex_unlock(&b->lock);
	return addr;
}

/* --- configuration mechanism #1 ------------------------------------------------- */

/* The function the address register selects, or NULL; *reg gets the dword
 * register offset. Bus lock held. */
static struct pci_device *selected(struct pci_bus *b, unsigned *reg)
{
	uint32_t a = b->address;
	if (!(a & CONF1_ENABLE) || (a & CONF1_RESERVED))
		return NULL;
	unsigned busn = (a >> 16) & 0xff, dev = (a >> 11) & 0x1f, fn = (a >> 8) & 0x7;
	if (busn != 0 || fn != 0)
		return NULL;
	*reg = a & 0xfc;
	return b->slots[dev];
}

static void config_read(struct pci_device *d, unsigned off, void *data, unsigned len)
{
	memcpy(data, d->config + off, len);
}

static void config_write(struct pci_device *d, unsigned off, const void *data, unsigned len)
{
	const uint8_t *src = data;
	bool decode = false;
	for (unsigned i = 0; i < len; i++) {
		unsigned o = off + i;
		d->config[o] = (uint8_t)((d->config[o] & ~d->wmask[o]) | (src[i] & d->wmask[o]));
		if ((o >= PCI_COMMAND && o < PCI_COMMAND + 2) ||
		    (o >= PCI_BASE_ADDRESS_0 && o < PCI_BASE_ADDRESS_0 + 4 * PCI_NUM_BARS))
			decode = true;
	}
	if (decode)
		update_decode(d);
	if (d->ops->config_written)
		d->ops->config_written(d, off, len);
}

static void address_read(void *opaque, uint64_t offset, void *data, unsigned len)
{
	struct pci_bus *b = opaque;
	if (offset != 0 || len != 4) {
		memset(data, 0xff, len); /* the register is dword-only */
		return;
	}
	pthread_mutex_lock(&b->lock);
	uint32_t v = b->address;
	pthread_mutex_unlock(&b->lock);
	memcpy(data, &v, 4);
}

static void address_write(void *opaque, uint64_t offset, const void *data, unsigned len)
{
	struct pci_bus *b = opaque;
	if (offset != 0 || len != 4)
		return; /* e.g. Linux's byte write to 0xCFB while probing */
	uint32_t v;
	memcpy(&v, data, 4);
	pthread_mutex_lock(&b->lock);
	b->address = v & ~3u;
	pthread_mutex_unlock(&b->lock);
}

static void data_read(void *opaque, uint64_t offset, void *data, unsigned len)
{
	struct pci_bus *b = opaque;
	unsigned reg = 0;
	memset(data, 0xff, len);
	if (len > 4 || offset + len > 4)
		return;
	pthread_mutex_lock(&b->lock);
	struct pci_device *d = selected(b, &reg);
	if (d)
		config_read(d, reg + (unsigned)offset, data, len);
	pthread_mutex_unlock(&b->lock);
}

static void data_write(void *opaque, uint64_t offset, const void *data, unsigned len)
{
	struct pci_bus *b = opaque;
	unsigned reg = 0;
	if (len > 4 || offset + len > 4)
		return;
	pthread_mutex_lock(&b->lock);
	struct pci_device *d = selected(b, &reg);
	if (d)
		config_write(d, reg + (unsigned)offset, data, len);
	pthread_mutex_unlock(&b->lock);
}

static const struct bus_ops address_ops = { address_read, address_write };
static const struct bus_ops data_ops = { data_read, data_write };

/* --- the MMIO window ------------------------------------------------------------ */

/* The device and BAR decoding [gpa, gpa + len), or NULL. */
static struct pci_device *claim(struct pci_bus *b, uint64_t gpa, unsigned len, unsigned *bar, uint64_t *off)
{
	struct pci_device *found = NULL;
	pthread_mutex_lock(&b->lock);
	for (unsigned s = 0; s < PCI_MAX_SLOTS && !found; s++) {
		struct pci_device *d = b->slots[s];
		if (!d)
			continue;
		for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
			uint64_t base = d->bars[i].decoded;
			if (base == PCI_BAR_UNMAPPED || gpa < base || gpa - base >= d->bars[i].size ||
			    len > d->bars[i].size - (gpa - base))
				continue;
			found = d;
			*bar = i;
			*off = gpa - base;
			break;
		}
	}
	pthread_mutex_unlock(&b->lock);
	return found;
}

static void window_read(void *opaque, uint64_t offset, void *data, unsigned len)
{
	struct pci_bus *b = opaque;
	unsigned bar;
	uint64_t off;
	struct pci_device *d = claim(b, PCI_MMIO_WINDOW_START + offset, len, &bar, &off);
	if (d && d->ops->bar_read)
		d->ops->bar_read(d, bar, off, data, len);
	else
		memset(data, 0xff, len);
}

static void window_write(void *opaque, uint64_t offset, const void *data, unsigned len)
{
	struct pci_bus *b = opaque;
	unsigned bar;
	uint64_t off;
	struct pci_device *d = claim(b, PCI_MMIO_WINDOW_START + offset, len, &bar, &off);
	if (d && d->ops->bar_write)
		d->ops->bar_write(d, bar, off, data, len);
}

static const struct bus_ops window_ops = { window_read, window_write };

/* --- the bus ---------------------------------------------------------------------- */

struct pci_bus *pci_bus_new(struct bus *pio, struct bus *mmio)
{
	struct pci_bus *b = calloc(1, sizeof(*b));
	if (!b) {
		vmm_fail("PCI bus: out of memory");
		return NULL;
	}
	pthread_mutex_init(&b->lock, NULL);
	b->next_mmio = PCI_MMIO_WINDOW_START;
	pci_device_init(&b->host, "host-bridge", NULL, NULL, HOST_BRIDGE_VENDOR, HOST_BRIDGE_DEVICE,
			HOST_BRIDGE_CLASS, 0);
	b->host.bus = b;
	b->host.slot = 0;
	b->slots[0] = &b->host;
	if (bus_register(pio, PCI_CONF_ADDRESS_PORT, 4, &address_ops, b, "pci-address") ||
	    bus_register(pio, PCI_CONF_DATA_PORT, 4, &data_ops, b, "pci-data") ||
	    bus_register(mmio, PCI_MMIO_WINDOW_START, PCI_MMIO_WINDOW_END - PCI_MMIO_WINDOW_START, &window_ops,
			 b, "pci-window")) {
		vmm_fail_context("PCI bus");
		pci_bus_free(b);
		return NULL;
	}
	return b;
}

void pci_bus_free(struct pci_bus *b)
{
	if (!b)
		return;
	pthread_mutex_destroy(&b->lock);
	free(b);
}

int pci_bus_add(struct pci_bus *b, struct pci_device *d)
{
	pthread_mutex_lock(&b->lock);
	int rc = -1;
	unsigned slot = 1;
	while (slot < PCI_MAX_SLOTS && b->slots[slot])
		slot++;
	if (slot == PCI_MAX_SLOTS) {
		vmm_fail("%s: the PCI bus is full (%d slots)", d->name, PCI_MAX_SLOTS - 1);
		goto out;
	}
	if (d->slot >= 0) {
		vmm_fail("%s: already on a PCI bus", d->name);
		goto out;
	}
	/* Lay the BARs out first, commit only if all fit. */
	uint64_t next = b->next_mmio, addr[PCI_NUM_BARS] = { 0 };
	for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
		uint64_t size = d->bars[i].size;
		if (!size)
			continue;
		uint64_t align = size < 4096 ? 4096 : size;
		uint64_t base = (next + align - 1) & ~(align - 1);
		if (base < next || base >= PCI_MMIO_WINDOW_END || size > PCI_MMIO_WINDOW_END - base) {
			vmm_fail("%s: BAR %u (0x%llx bytes) does not fit in the PCI MMIO window", d->name, i,
				 (unsigned long long)size);
			goto out;
		}
		addr[i] = base;
		next = base + size;
	}
	for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
		if (!d->bars[i].size)
			continue;
		uint8_t *reg = d->config + PCI_BASE_ADDRESS_0 + 4 * i;
		put32(reg, (get32(reg) & BAR_LOW_FLAGS) | (uint32_t)addr[i]);
		if (d->bars[i].is64)
			put32(reg + 4, (uint32_t)(addr[i] >> 32));
		d->bars[i].decoded = PCI_BAR_UNMAPPED;
	}
	b->next_mmio = next;
	d->bus = b;
	d->slot = (int)slot;
	b->slots[slot] = d;
	rc = 0;
out:
	pthread_mutex_unlock(&b->lock);
	return rc;
}

void pci_bus_remove(struct pci_bus *b, struct pci_device *d)
{
	if (!b || d->slot < 0 || d->bus != b)
		return;
	pthread_mutex_lock(&b->lock);
	if (b->slots[d->slot] == d)
		b->slots[d->slot] = NULL;
	d->slot = -1;
	d->bus = NULL;
	pthread_mutex_unlock(&b->lock);
}

/* --- local migration ------------------------------------------------------------ */

static void bus_lock(struct pci_device *d)
{
	if (d->bus)
		pthread_mutex_lock(&d->bus->lock);
}

static void bus_unlock(struct pci_device *d)
{
	if (d->bus)
		pthread_mutex_unlock(&d->bus->lock);
}

void pci_config_save(struct pci_device *d, struct mig_buf *b)
{
	uint8_t config[PCI_CONFIG_SIZE];
	bus_lock(d);
	memcpy(config, d->config, sizeof(config));
	bus_unlock(d);
	mig_put_u8(b, (uint8_t)d->slot);
	mig_put_bytes(b, config, sizeof(config));
}

static uint32_t class_of(const uint8_t *config)
{
	return (uint32_t)config[PCI_CLASS_PROG] | (uint32_t)config[PCI_CLASS_PROG + 1] << 8 |
	       (uint32_t)config[PCI_CLASS_PROG + 2] << 16;
}

/* Bus lock held. Whether `config` describes the function d is. */
static int check_identity(const struct pci_device *d, unsigned slot, const uint8_t *config)
{
	const uint8_t *here = d->config;
	if (get16(config + PCI_VENDOR_ID) != get16(here + PCI_VENDOR_ID) ||
	    get16(config + PCI_DEVICE_ID) != get16(here + PCI_DEVICE_ID))
		return vmm_fail("pci 00:%02x.0: device %04x:%04x in the stream, %04x:%04x here", d->slot,
				get16(config + PCI_VENDOR_ID), get16(config + PCI_DEVICE_ID),
				get16(here + PCI_VENDOR_ID), get16(here + PCI_DEVICE_ID));
	if (class_of(config) != class_of(here))
		return vmm_fail("pci 00:%02x.0: class %06x in the stream, %06x here", d->slot, class_of(config),
				class_of(here));
	if (slot != (unsigned)d->slot)
		return vmm_fail("pci 00:%02x.0: the stream's function is at 00:%02x.0", d->slot, slot);
	for (unsigned o = 0; o < PCI_CONFIG_SIZE; o++) {
		uint8_t ro = (uint8_t)~d->wmask[o];
		if ((config[o] & ro) != (here[o] & ro))
			return vmm_fail("pci 00:%02x.0: read-only config byte 0x%02x is 0x%02x in the stream, "
					"0x%02x here (a different function layout)",
					d->slot, o, config[o] & ro, here[o] & ro);
	}
	return 0;
}

int pci_config_decode(struct pci_device *d, struct mig_cursor *c, struct pci_saved_config *out)
{
	out->slot = mig_get_u8(c);
	mig_get_bytes(c, out->config, sizeof(out->config));
	if (c->short_read)
		return mig_cursor_finish(c);
	bus_lock(d);
	int rc = check_identity(d, out->slot, out->config);
	bus_unlock(d);
	return rc;
}

void pci_config_apply(struct pci_device *d, const struct pci_saved_config *s)
{
	bus_lock(d);
	config_write(d, 0, s->config, PCI_CONFIG_SIZE);
	bus_unlock(d);
}
