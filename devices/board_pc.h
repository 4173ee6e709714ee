/* The legacy PC board (board_pc.c): the devices every VM has, created in
 * this order and named by their kind. */
#ifndef VMM_BOARD_PC_H
#define VMM_BOARD_PC_H

#include "device.h"

extern const struct device_type pc_serial_type, pc_rtc_type, pc_i8042_type, pc_pci_host_type;
extern const struct device_type *const board_pc_types[]; /* NULL-terminated */

/* The PCI bus of the board's host bridge, for a PCI function being created
 * on h; NULL with a message if there is none. */
struct pci_bus;
struct pci_bus *board_pc_pci_bus(const struct device_host *h);

#endif
