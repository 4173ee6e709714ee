/* A migration target gives its vCPUs the CPUID table of the description
 * (vm_set_cpuid), not the one its own KVM and build would make: the table
 * read back from each vCPU (KVM_GET_CPUID2) is the source's, with only the
 * vCPU's own APIC id set on top. Needs a usable /dev/kvm (kvm_probe.h;
 * scripts/testhost): 77 without one. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "kvm_probe.h"
#include "registry.h"
#include "vm_priv.h"

#define MiB (1ull << 20)

/* "luavmmTestCPU" is no vendor any build would give a guest. */
static const struct machine_cpuid table[] = {
	{ 0x0, 0, 0, 0x1, 0x6d76756c, 0x50435574, 0x7365546d },
	{ 0x1, 0, 0, 0x00000f61, 0x00000800, 0x80000001, 0x078bfbff },
};

static const struct kvm_cpuid_entry2 *find_leaf(const struct kvm_cpuid2 *c, uint32_t function)
{
	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == function)
			return &c->entries[i];
	return NULL;
}

static void test_target_vcpus_get_the_described_table(void)
{
	struct vm_config cfg = {
		.name = "cpuid", .mem_size = 32 * MiB, .ncpus = 2, .console_fd = -1,
		.devices = &device_registry, .incoming = true,
	};
	struct vm *vm = vm_new(&cfg);
	CHECK(vm != NULL);
	if (!vm)
		return;
	int fd = memfd_create("cpuid-test", MFD_CLOEXEC);
	CHECK(fd >= 0 && ftruncate(fd, (off_t)cfg.mem_size) == 0);
	CHECK_EQ(vm_set_cpuid(vm, table, 2), 0);
	int rc = vm_prepare_incoming(vm, fd);
	if (rc)
		fprintf(stderr, "  vm_prepare_incoming: %s\n", vmm_error());
	CHECK_EQ(rc, 0);
	for (unsigned v = 0; rc == 0 && v < cfg.ncpus; v++) {
		struct kvm_cpuid2 *got = calloc(1, sizeof(*got) + 64 * sizeof(got->entries[0]));
		/* Exactly the table's two entries: they do not fit in one
		 * (E2BIG), they do in two. (KVM_GET_CPUID2 does not write the
		 * count back, on success or on E2BIG.) */
		got->nent = 1;
		CHECK_EQ(ioctl(vm->vcpus.vcpus[v].fd, KVM_GET_CPUID2, got), -1);
		CHECK_EQ(errno, E2BIG);
		got->nent = 2;
		CHECK_EQ(ioctl(vm->vcpus.vcpus[v].fd, KVM_GET_CPUID2, got), 0);
		const struct kvm_cpuid_entry2 *l0 = find_leaf(got, 0), *l1 = find_leaf(got, 1);
		CHECK(l0 && l1);
		if (l0 && l1) {
			CHECK_EQ(l0->ebx, table[0].ebx);
			CHECK_EQ(l0->ecx, table[0].ecx);
			CHECK_EQ(l0->edx, table[0].edx);
			CHECK_EQ(l1->eax, table[1].eax);
			CHECK_EQ(l1->ebx >> 24, v); /* its own APIC id */
			CHECK(l1->ecx & (1u << 31)); /* and the hypervisor bit */
		}
		free(got);
	}
	vm_free(vm);
}

int main(void)
{
	struct kvm_verdict kvm;
	kvm_probe(&kvm);
	if (!kvm.usable) {
		printf("skipping: %s (run through scripts/testhost)\n", kvm.reason);
		return 77;
	}
	RUN(test_target_vcpus_get_the_described_table);
	return CHECK_DONE();
}
