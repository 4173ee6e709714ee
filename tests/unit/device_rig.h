/* A device rig: the registry's device types built on a device_host with
 * buses, guest RAM and a loop, and no KVM, so that tests and the fuzz
 * target reach every type through the registry alone. rig_up() creates the
 * board's devices; rig_instance() adds one of an addable type from its
 * fixture: the type's defaults, a MAC, and a backend this process can
 * open (a network device gets a persistent TAP named after it, which
 * needs a private network namespace: rig_private_netns(); the TAPs go with
 * the namespace when the process exits). Shared by test_device_types.c
 * and tests/fuzz/fuzz_migstream.c. */
#ifndef VMM_DEVICE_RIG_H
#define VMM_DEVICE_RIG_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "bus.h"
#include "device.h"
#include "kvm.h"
#include "memory.h"

#define RIG_RAM_SIZE (1u << 20)
#define RIG_MAX_DEVS 16

struct rig {
	struct device_host host;
	struct bus pio, mmio;
	struct kvm kvm; /* no KVM: fds -1 */
	struct guest_mem mem;
	uint8_t *ram;   /* RIG_RAM_SIZE zeroed bytes (rig_up_kvm: its size) */
	bool with_kvm;  /* rig_up_kvm: a VM, guest RAM a memfd */
	uv_loop_t loop;
	struct device *devs[RIG_MAX_DEVS];
	unsigned n;
	unsigned irq_calls; /* calls of host.irq_line so far */
};

/* Enters a private network namespace (root only); whether TAPs can now be
 * made. Once per process, before rig_up(). */
bool rig_private_netns(void);
/* -1 with a message when something cannot be set up. */
int rig_up(struct rig *r);
/* The same with a KVM VM (in-kernel irqchip, routes; no vCPU) and guest
 * RAM of ram_size bytes in a memfd, registered with it: devices get
 * ioeventfds and irqfds, as in a VMM. 1 with a message when this machine
 * has no KVM that can make a VM. */
int rig_up_kvm(struct rig *r, uint64_t ram_size);
void rig_down(struct rig *r);
/* The device of type t on r: the board's, or a new one named "dev<n>"
 * (n also makes its MAC and TAP name unique). NULL when this process
 * cannot give it a backend, or it could not be created (said on stderr). */
struct device *rig_instance(struct rig *r, const struct device_type *t, unsigned n);
/* Whether guest RAM is still all zeros. */
bool rig_ram_untouched(const struct rig *r);

#endif
