/* The registry of this build's device types (registry.c), which the VM is
 * given (vm_config.devices) and the migration looks kinds up in. */
#ifndef VMM_REGISTRY_H
#define VMM_REGISTRY_H

#include "device.h"

extern const struct device_registry device_registry;

#endif
