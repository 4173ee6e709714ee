/* cpuid_setup_vcpu on a synthetic KVM_GET_SUPPORTED_CPUID result. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "x86_boot.h"

#define NENT 6
#define HOST_EBX_LOW 0x00000800u  /* CLFLUSH line size: must survive */
#define HOST_ECX     0x00000201u  /* SSE3, SSSE3 */
#define HOST_EDX     0x178bfbffu  /* includes HTT (bit 28) */

static struct kvm_cpuid2 *make_cpuid(void)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + NENT * sizeof(c->entries[0]));
	c->nent = NENT;
	c->entries[0] = (struct kvm_cpuid_entry2){ .function = 0, .eax = 0x1f, .ebx = 0x756e6547 };
	c->entries[1] = (struct kvm_cpuid_entry2){ .function = 1, .eax = 0x906ea,
		.ebx = 0x12340000u | HOST_EBX_LOW, .ecx = HOST_ECX, .edx = HOST_EDX };
	c->entries[2] = (struct kvm_cpuid_entry2){ .function = 0xb, .index = 0,
		.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 1, .ebx = 2, .ecx = 0x100, .edx = 99 };
	c->entries[3] = (struct kvm_cpuid_entry2){ .function = 0xb, .index = 1,
		.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 4, .ebx = 8, .ecx = 0x201, .edx = 99 };
	c->entries[4] = (struct kvm_cpuid_entry2){ .function = 0x1f, .index = 0,
		.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 1, .ebx = 2, .ecx = 0x100, .edx = 99 };
	c->entries[5] = (struct kvm_cpuid_entry2){ .function = 0x80000001, .edx = 0x2c100800 };
	return c;
}

static void leaf1(const struct kvm_cpuid2 *c, unsigned apic_id, unsigned count, int htt)
{
	const struct kvm_cpuid_entry2 *e = &c->entries[1];
	CHECK_EQ(e->eax, 0x906ea);
	CHECK_EQ(e->ebx >> 24, apic_id);
	CHECK_EQ((e->ebx >> 16) & 0xff, count);
	CHECK_EQ(e->ebx & 0xffff, HOST_EBX_LOW);
	CHECK_EQ(e->ecx, HOST_ECX | 0x80000000u);
	CHECK_EQ(e->edx, htt ? HOST_EDX : HOST_EDX & ~(1u << 28));
}

static void topology_leaves(const struct kvm_cpuid2 *c, unsigned apic_id)
{
	for (unsigned i = 2; i <= 4; i++)
		CHECK_EQ(c->entries[i].edx, apic_id);
	/* the rest of the topology leaves as KVM gave them */
	CHECK_EQ(c->entries[2].ecx, 0x100);
	CHECK_EQ(c->entries[3].ecx, 0x201);
	CHECK_EQ(c->entries[3].ebx, 8);
}

static void untouched_leaves(const struct kvm_cpuid2 *c)
{
	CHECK_EQ(c->entries[0].eax, 0x1f);
	CHECK_EQ(c->entries[0].ebx, 0x756e6547);
	CHECK_EQ(c->entries[0].edx, 0);
	CHECK_EQ(c->entries[5].edx, 0x2c100800);
}

static void vcpu3_of_4(void)
{
	struct kvm_cpuid2 *c = make_cpuid();
	cpuid_setup_vcpu(c, 3, 4);
	leaf1(c, 3, 4, 1);
	topology_leaves(c, 3);
	untouched_leaves(c);
	free(c);
}

static void single_vcpu(void)
{
	struct kvm_cpuid2 *c = make_cpuid();
	cpuid_setup_vcpu(c, 0, 1);
	leaf1(c, 0, 1, 0);
	topology_leaves(c, 0);
	untouched_leaves(c);
	free(c);
}

static void count_rounds_up(void)
{
	struct kvm_cpuid2 *c = make_cpuid();
	cpuid_setup_vcpu(c, 4, 5);
	leaf1(c, 4, 8, 1);
	free(c);
	c = make_cpuid();
	cpuid_setup_vcpu(c, 63, X86_MAX_VCPUS);
	leaf1(c, 63, 64, 1);
	topology_leaves(c, 63);
	free(c);
}

static void idempotent(void)
{
	struct kvm_cpuid2 *c = make_cpuid();
	cpuid_setup_vcpu(c, 5, 8);
	cpuid_setup_vcpu(c, 1, 2);
	leaf1(c, 1, 2, 1);
	topology_leaves(c, 1);
	free(c);
}

int main(void)
{
	RUN(vcpu3_of_4);
	RUN(single_vcpu);
	RUN(count_rounds_up);
	RUN(idempotent);
	return CHECK_DONE();
}
