/* The "virtio-net" device type: virtio-net (virtio_net.h) over virtio-pci
 * (virtio_pci.h) on the board's PCI bus. Its configuration, as the fields
 * table in virtio_net_pci.c checks it, the machine description carries it
 * and Lua gives it (vm:add_net):
 *   ifname      the TAP (opened, created if absent): 1..15 bytes, the backend
 *   mac         six bytes, unicast, not all zero
 *   queues      queue pairs, 1..VIRTIO_NET_MAX_PAIRS (a multi-queue TAP)
 *   queue_size  a power of 2, 64..1024
 *   vhost       the kernel datapath (vhost-net) instead of the userspace one
 * State (one section, version 1): the PCI function's, then virtio-net's.
 * Backend: the TAP's queue fds and what the kernel says of them. */
#ifndef VMM_VIRTIO_NET_PCI_H
#define VMM_VIRTIO_NET_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "device.h"

#define IFNAME_SIZE 16

struct virtio_net_pci_config {
	char ifname[IFNAME_SIZE];
	uint8_t mac[6];
	uint32_t queues;
	uint16_t queue_size;
	bool vhost;
};

extern const struct device_type virtio_net_pci_type;

#endif
