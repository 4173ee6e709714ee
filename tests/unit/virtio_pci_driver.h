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

/* Where a probe found the function's regions (addresses on the memory bus). */
struct vpci_layout {
	uint64_t bar, common, notify, isr, device, table, pba;
	unsigned msix_cap, nvec;
	uint32_t multiplier;
};

/* vp_modern_probe's capability walk over BAR 0 where the board placed it,
 * memory decoding and bus mastering turned on; *common_out (the address
 * the helpers above use) set. -1 when a region is missing. */
int vpci_probe(struct vpci_layout *L, uint64_t *common_out);

/* Linux's start-up up to DRIVER_OK: reset (pump() until the device reads
 * 0), ACKNOWLEDGE, DRIVER, the features, FEATURES_OK, MSI-X on with every
 * entry unmasked (config vector 0, queue q vector q + 1), nq queues of
 * qsize at ring(q, ...), then DRIVER_OK and pump(). Returns the status the
 * device reads back. */
uint8_t vpci_start(const struct vpci_layout *L, uint64_t features, unsigned nq, uint16_t qsize,
		   void (*pump)(void));

/* A driver's reset: status 0, pump() until the device reads 0. */
uint8_t vpci_reset(void (*pump)(void));

#endif
