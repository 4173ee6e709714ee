/* Thin, checked wrappers over the KVM API (Documentation/virt/kvm/api.rst):
 * the system fd, the VM fd, memory slots, the in-kernel irqchip and PIT. */
#ifndef VMM_KVM_H
#define VMM_KVM_H

#include <stdint.h>
#include <linux/kvm.h>

#include "memory.h"

struct kvm {
	int sys_fd;        /* /dev/kvm */
	int vm_fd;
	int run_mmap_size; /* size of each vCPU's kvm_run mapping */
};

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

#endif
