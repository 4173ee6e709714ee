/* A virtio-pci modern driver's register access, for tests without KVM:
 * config mechanism #1 on the port bus, the BAR's regions on the memory bus,
 * as Linux's virtio_pci_modern reaches them. No CHECKs here (check.h's
 * counters are per file). */
#ifndef VMM_TEST_VIRTIO_PCI_DRIVER_H
#define VMM_TEST_VIRTIO_PCI_DRIVER_H

#include <stdint.h>

#include "bus.h"

/* Where the helpers below reach a function: the test's buses, and the slot
 * and common config address it keeps (read at each access). */
struct vpci_target {
	struct bus *pio, *mmio;
	const unsigned *slot;
	const uint64_t *common;
};

extern const struct vpci_target *vpci; /* the function the helpers talk to */

#define COMMON(off) (*vpci->common + (off))

/* A config space read through 0xcf8/0xcfc. */
uint32_t cfg_read(unsigned reg, unsigned len);

/* A config space write through 0xcf8/0xcfc. */
void cfg_write(unsigned reg, unsigned len, uint32_t v);

/* An MMIO read. */
uint64_t rd(uint64_t addr, unsigned len);

/* An MMIO write. */
void wr(uint64_t addr, unsigned len, uint64_t v);

/* Writes device_status. */
void status(uint8_t s);

/* Reads device_status. */
uint8_t get_status(void);

/* Writes driver_feature, both halves. */
void write_features(uint64_t f);

/* Where queue q's descriptor table (which 0), avail (1) or used ring (2) is. */
uint64_t ring(unsigned q, unsigned which);

#endif
