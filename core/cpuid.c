/* Per-vCPU CPUID: KVM_GET_SUPPORTED_CPUID describes what the host can offer;
 * each vCPU then needs its own APIC ids and the package's logical count. */
#include "x86_boot.h"

#define LEAF_FEATURES      0x1
#define LEAF_TOPOLOGY      0xb
#define LEAF_TOPOLOGY_V2   0x1f

#define EBX_APIC_ID_SHIFT  24
#define EBX_LOGICAL_SHIFT  16
#define EBX_ID_COUNT_MASK  0xffff0000u /* EBX[31:16]: APIC id, logical count */
#define ECX_HYPERVISOR     (1u << 31)
#define EDX_HTT            (1u << 28)

/* The number of APIC ids a package of `ncpus` spans: a power of two, since
 * the OS derives the package id from the bits above it. */
static unsigned logical_id_count(unsigned ncpus)
{
	unsigned count = 1;
	while (count < ncpus && count < 128)
		count <<= 1;
	return count;
}

static void setup_features(struct kvm_cpuid_entry2 *e, unsigned apic_id, unsigned ncpus)
{
	unsigned count = logical_id_count(ncpus);

	e->ebx = (e->ebx & ~EBX_ID_COUNT_MASK) | (apic_id & 0xff) << EBX_APIC_ID_SHIFT |
		 count << EBX_LOGICAL_SHIFT;
	e->ecx |= ECX_HYPERVISOR;
	if (count > 1)
		e->edx |= EDX_HTT;
	else
		e->edx &= ~EDX_HTT;
}

void cpuid_setup_vcpu(struct kvm_cpuid2 *cpuid, unsigned apic_id, unsigned ncpus)
{
	for (unsigned i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		switch (e->function) {
		case LEAF_FEATURES:
			setup_features(e, apic_id, ncpus);
			break;
		case LEAF_TOPOLOGY:
		case LEAF_TOPOLOGY_V2:
			e->edx = apic_id; /* the x2APIC id, on every subleaf */
			break;
		}
	}
}
