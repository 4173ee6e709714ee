/* Every device type this build knows: the board's, and those a VM can be
 * given. A new device type is its files plus one line here. */
#include "registry.h"

#include "board_pc.h"
#include "vhost_user_blk.h"
#include "virtio_blk_pci.h"
#include "virtio_net_pci.h"

static const struct device_type *const types[] = {
	&virtio_net_pci_type,
	&virtio_blk_pci_type,
	&vhost_user_blk_type,
	NULL,
};

const struct device_registry device_registry = {
	.board = "pc",
	.board_types = board_pc_types,
	.types = types,
};
