/* Thin, checked wrappers over the KVM API (Documentation/virt/kvm/api.rst):
 * the system fd, the VM fd, memory slots, the in-kernel irqchip and PIT. */
#ifndef VMM_KVM_H
#define VMM_KVM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <linux/kvm.h>

#include "memory.h"

struct kvm {
	int sys_fd;        /* /dev/kvm */
	int vm_fd;
	int run_mmap_size; /* size of each vCPU's kvm_run mapping */

	/* GSI routing. KVM_SET_GSI_ROUTING replaces the whole table, so this is
	 * the whole table: the irqchip routes KVM installs with
	 * KVM_CREATE_IRQCHIP (GSI 0-15 to the IOAPIC pin of the same number and
	 * to the PIC, GSI 16-23 to the IOAPIC only) followed by the MSI routes,
	 * whose GSIs start at KVM_MSI_GSI_BASE. vCPU threads update MSI routes
	 * (MSI-X table writes), hence the lock. */
	pthread_mutex_t routes_lock;
	bool routes_ready;  /* kvm_routes_init() ran; false in a zeroed struct */
	struct kvm_irq_routing_entry *routes;
	unsigned nroutes, routes_cap;
	unsigned next_msi_gsi;
};

#define KVM_MSI_GSI_BASE 24  /* the first GSI past the IOAPIC's 24 pins */
#define KVM_MAX_MSI_ROUTES 1024

/* Opens /dev/kvm, checks the API version and the capabilities this VMM
 * relies on, creates a VM with an in-kernel irqchip and PIT. */
int kvm_create(struct kvm *k);
void kvm_destroy(struct kvm *k);

/* Registers every region of guest RAM as a memory slot. */
int kvm_map_memory(struct kvm *k, const struct guest_mem *m);

/* Drives a legacy interrupt line (GSI) of the PIC/IOAPIC. */
int kvm_irq_line(struct kvm *k, unsigned gsi, int level);

/* KVM_GET_SUPPORTED_CPUID, grown until it fits; caller frees. */
struct kvm_cpuid2 *kvm_supported_cpuid(struct kvm *k);

/* Creates vCPU `id` and maps its kvm_run; returns the fd. */
int kvm_create_vcpu(struct kvm *k, unsigned id, struct kvm_run **run);

/* KVM_CHECK_EXTENSION on the VM: > 0 if supported (some capabilities
 * return a count), 0 if not, -1 with a message on error. */
int kvm_check_extension(struct kvm *k, int cap);

/* Writes of `len` bytes (1, 2, 4 or 8) to guest-physical MMIO `addr` signal
 * eventfd `fd` inside KVM instead of exiting to the VMM (no datamatch).
 * len 0 matches a write of any length; it needs KVM_CAP_IOEVENTFD_ANY_LENGTH
 * and lets KVM use its fast MMIO path: virtio-pci asks for 0 when the
 * capability is there and for 2 otherwise (Linux notifies with a 16-bit
 * write of the queue index). Deassigning takes the same addr, len and fd. */
int kvm_ioeventfd(struct kvm *k, uint64_t addr, unsigned len, int fd, bool assign);

/* Binds eventfd `fd` to `gsi`: a write to fd raises the GSI's route. While
 * unbound, writes accumulate in the eventfd's counter; binding an fd whose
 * counter is non-zero raises the interrupt at once. */
int kvm_irqfd(struct kvm *k, int fd, unsigned gsi, bool assign);

/* Sets up the routing table with KVM's default irqchip routes (no ioctl).
 * kvm_create calls it; exposed for tests. */
int kvm_routes_init(struct kvm *k);

/* Adds an MSI route (message address and data as the guest programs them in
 * an MSI-X table entry) on a new GSI, commits the table; *gsi is set. On
 * failure the table is left as it was. Thread-safe. */
int kvm_msi_route_add(struct kvm *k, uint64_t addr, uint32_t data, unsigned *gsi);
/* Changes the message of an MSI route and commits the table (no ioctl if
 * nothing changed). Thread-safe. */
int kvm_msi_route_update(struct kvm *k, unsigned gsi, uint64_t addr, uint32_t data);
/* Drops an MSI route (its GSI is not reused) and commits the table. */
int kvm_msi_route_remove(struct kvm *k, unsigned gsi);

#endif
