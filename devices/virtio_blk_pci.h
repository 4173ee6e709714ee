/* The "virtio-blk" device type: a virtio-blk disk (virtio_blk.h) over
 * virtio-pci (virtio_pci.h) on the board's PCI bus. Its configuration, as
 * the fields table in virtio_blk_pci.c checks it, the machine description
 * carries it and Lua gives it (vm:add_disk):
 *   path        the image: a raw file or a block device, the backend (made
 *               absolute when it is opened, so a target finds it too)
 *   readonly    open it read-only; the guest sees a read-only disk
 *   cache       "writeback" (default), "writethrough" or "none" (O_DIRECT)
 *   serial      what get-id answers, at most 20 bytes
 *   queues      1..VIRTIO_BLK_MAX_QUEUES request queues
 *   queue_size  a power of 2, 64..1024
 * State (one section, version 1): the PCI function's, then virtio-blk's.
 * Backend: the image's open fd (with its OFD locks) and its identity. */
#ifndef VMM_VIRTIO_BLK_PCI_H
#define VMM_VIRTIO_BLK_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "device.h"
#include "virtio_blk.h"

#define BLK_PATH_SIZE 1024
#define BLK_CACHE_SIZE 16

struct virtio_blk_pci_config {
	char path[BLK_PATH_SIZE];
	char serial[VIRTIO_BLK_ID_BYTES + 1];
	char cache[BLK_CACHE_SIZE];
	uint32_t queues;
	uint16_t queue_size;
	bool readonly;
};

/* "writeback", "writethrough", "none" -> the mode; -1 for anything else. */
int virtio_blk_cache_parse(const char *s, enum blk_cache *out);

extern const struct device_type virtio_blk_pci_type;

#endif
