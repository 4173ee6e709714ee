/* PCI bus 0 behind configuration mechanism #1 (PCI Local Bus 3.0, 3.2.2.3.2):
 * the address register at port 0xCF8 (32-bit accesses only) and the data
 * window at 0xCFC-0xCFF (1, 2 or 4 bytes at any offset inside the dword).
 * Slot 0 holds a host bridge, so that Linux's type 1 probe and sanity check
 * succeed without firmware or ACPI; devices take the other 31 slots, one
 * function each, header type 0.
 *
 * Memory BARs are assigned when a device is added, naturally aligned, from
 * the MMIO window [PCI_MMIO_WINDOW_START, PCI_MMIO_WINDOW_END) below the
 * IOAPIC. The whole window is ONE range on the MMIO bus: an access is given
 * to the BAR that decodes the address at that moment (memory space enabled
 * in the command register, BAR wholly inside the window), so the guest may
 * move BARs without the bus table changing while vCPUs run. Nothing else
 * may be registered on the MMIO bus inside the window.
 *
 * Threads: configuration accesses come on vCPU threads and are serialised by
 * one lock per PCI bus; the device hooks marked "bus lock held" run under it
 * (they may take the device's own lock, never the other way round). BAR
 * accesses run on vCPU threads without the bus lock. */
#ifndef VMM_PCI_H
#define VMM_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "bus.h"
#include "memory.h"

#define PCI_CONF_ADDRESS_PORT 0xcf8
#define PCI_CONF_DATA_PORT    0xcfc

#define PCI_MMIO_WINDOW_START GUEST_PCI_HOLE_START
#define PCI_MMIO_WINDOW_END   0xfec00000ull /* the IOAPIC */

#define PCI_MAX_SLOTS    32
#define PCI_CONFIG_SIZE  256
#define PCI_NUM_BARS     6
#define PCI_BAR_UNMAPPED UINT64_MAX

/* Configuration header registers (type 0). */
#define PCI_VENDOR_ID        0x00
#define PCI_DEVICE_ID        0x02
#define PCI_COMMAND          0x04
#define PCI_STATUS           0x06
#define PCI_REVISION_ID      0x08
#define PCI_CLASS_PROG       0x09
#define PCI_CACHE_LINE_SIZE  0x0c
#define PCI_LATENCY_TIMER    0x0d
#define PCI_HEADER_TYPE      0x0e
#define PCI_BASE_ADDRESS_0   0x10
#define PCI_SUBSYSTEM_VENDOR 0x2c
#define PCI_SUBSYSTEM_ID     0x2e
#define PCI_ROM_ADDRESS      0x30
#define PCI_CAPABILITY_LIST  0x34
#define PCI_INTERRUPT_LINE   0x3c
#define PCI_INTERRUPT_PIN    0x3d
#define PCI_CAP_START        0x40 /* first byte after the standard header */

#define PCI_COMMAND_IO      0x0001
#define PCI_COMMAND_MEMORY  0x0002
#define PCI_COMMAND_MASTER  0x0004
#define PCI_COMMAND_PARITY  0x0040
#define PCI_COMMAND_SERR    0x0100
#define PCI_COMMAND_INTX_DISABLE 0x0400
#define PCI_STATUS_CAP_LIST 0x0010

#define PCI_BAR_MEM_TYPE_64   0x4
#define PCI_BAR_MEM_PREFETCH  0x8

#define PCI_CAP_ID_MSIX 0x11
#define PCI_CAP_ID_VNDR 0x09

struct pci_device;
struct pci_bus;

struct pci_device_ops {
	/* A guest access to BAR `bar` at `offset` from its start (len 1, 2, 4
	 * or 8; the access lies inside the BAR). vCPU thread, no bus lock. */
	void (*bar_read)(struct pci_device *d, unsigned bar, uint64_t offset, void *data, unsigned len);
	void (*bar_write)(struct pci_device *d, unsigned bar, uint64_t offset, const void *data, unsigned len);
	/* The guest-physical address at which BAR `bar` decodes changed;
	 * PCI_BAR_UNMAPPED stands for "not decoded". Bus lock held. */
	void (*bar_moved)(struct pci_device *d, unsigned bar, uint64_t old_addr, uint64_t new_addr);
	/* After the guest wrote config bytes [offset, offset + len) (already
	 * merged through the writable mask into d->config). Bus lock held. */
	void (*config_written)(struct pci_device *d, unsigned offset, unsigned len);
};

struct pci_bar {
	uint64_t size;     /* 0: no BAR here (or the upper half of a 64-bit one) */
	bool is64;
	uint64_t decoded;  /* where it decodes now, or PCI_BAR_UNMAPPED */
};

/* A function as the bus sees it. Embed it in the device's state; fill it
 * with pci_device_init, BARs and capabilities, then pci_bus_add. */
struct pci_device {
	const char *name;
	const struct pci_device_ops *ops;
	void *opaque;
	uint8_t config[PCI_CONFIG_SIZE];
	uint8_t wmask[PCI_CONFIG_SIZE];  /* bits the guest may change */
	struct pci_bar bars[PCI_NUM_BARS];
	uint8_t last_cap;  /* offset of the last capability, 0 if none */
	unsigned cap_end;  /* first free byte for the next capability */
	struct pci_bus *bus;
	int slot;          /* -1 until added */
};

/* The bus: registers ports 0xCF8 and 0xCFC on `pio`, the MMIO window on
 * `mmio`, and the host bridge at 00:00.0. NULL with a message on failure. */
struct pci_bus *pci_bus_new(struct bus *pio, struct bus *mmio);
/* Does not unregister its ranges (buses have no removal): free it together
 * with the buses, after every device on it. */
void pci_bus_free(struct pci_bus *b);

/* Header type 0, the given identity, class code 0xCCSSPP (class, subclass,
 * programming interface), no BARs, no capabilities, interrupt pin none. The
 * command register's I/O, memory, bus master, parity, SERR and INTx disable
 * bits, the cache line size, the latency timer and the interrupt line are
 * writable. */
void pci_device_init(struct pci_device *d, const char *name, const struct pci_device_ops *ops, void *opaque,
		     uint16_t vendor, uint16_t device, uint32_t class_code, uint8_t revision);
void pci_device_set_subsystem(struct pci_device *d, uint16_t vendor, uint16_t id);

/* A memory BAR of `size` bytes (a power of 2, at least 16; non-prefetchable);
 * a 64-bit BAR also takes register bar + 1. Before pci_bus_add. */
int pci_device_add_bar(struct pci_device *d, unsigned bar, uint64_t size, bool is64);

/* Appends a capability: `cap` holds the whole structure, ID in byte 0 (byte
 * 1, the next pointer, is filled in here). Read-only unless the caller then
 * opens bits with pci_device_set_wmask. Returns its config offset, or -1 if
 * it does not fit in the 256 bytes. */
int pci_add_capability(struct pci_device *d, const void *cap, unsigned len);
void pci_device_set_wmask(struct pci_device *d, unsigned offset, const void *mask, unsigned len);

/* Offset of the first capability with this ID, 0 if none (walks the list as
 * a driver does). */
unsigned pci_find_capability(const struct pci_device *d, uint8_t id);

/* Puts d in the first free slot (1-31) and assigns its BARs (memory decode
 * stays off until the guest enables it). -1 with a message if no slot or
 * no room is left in the window. */
int pci_bus_add(struct pci_bus *b, struct pci_device *d);
/* Takes d off the bus (no more config or BAR accesses reach it). */
void pci_bus_remove(struct pci_bus *b, struct pci_device *d);

/* The address programmed in a BAR (flags masked), whether or not it
 * decodes. Takes the bus lock: not from a hook. */
uint64_t pci_bar_address(struct pci_device *d, unsigned bar);
/* Where a BAR decodes now, or PCI_BAR_UNMAPPED. Takes the bus lock. */
uint64_t pci_bar_decoded(struct pci_device *d, unsigned bar);

/* --- local migration ---------------------------------------------------------
 * A function's state is its configuration space: the bytes the guest can
 * write (command, BARs, interrupt line, capability bits opened with
 * pci_device_set_wmask such as MSI-X message control). The stream holds the
 * slot and all 256 bytes; the read-only ones only serve to check that the
 * target built the same function. */

struct mig_buf;
struct mig_cursor;

/* The decoded, checked state of one function. */
struct pci_saved_config {
	uint8_t slot;
	uint8_t config[PCI_CONFIG_SIZE];
};

/* Appends u8 slot, then the 256 config bytes. Takes the bus lock (not from
 * a hook); changes nothing. */
void pci_config_save(struct pci_device *d, struct mig_buf *b);

/* Reads what pci_config_save wrote into *out and checks it against d:
 * same slot, same vendor:device and class ("pci 00:03.0: device 1af4:1041
 * in the stream, 1af4:1042 here"), every read-only bit equal. Changes
 * nothing on d; -1 with a message naming the field, or the cursor's
 * "truncated" message if the payload ran out. */
int pci_config_decode(struct pci_device *d, struct mig_cursor *c, struct pci_saved_config *out);

/* Writes the writable bits of a checked state as a guest's config write
 * would: BARs moved or (un)decoded by the command register reach the
 * device's bar_moved hook, then config_written covers the whole space.
 * Takes the bus lock (the hooks then take the device's lock). */
void pci_config_apply(struct pci_device *d, const struct pci_saved_config *s);

#endif
