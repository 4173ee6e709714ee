#include "kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "err.h"

/* Below 4 GiB, in the PCI hole; used by KVM on Intel only. */
#define KVM_IDENTITY_MAP_GPA 0xfeffc000ull
#define KVM_TSS_GPA          0xfeffd000ull

static const struct { int cap; const char *name; } required_caps[] = {
	{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
	{ KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR" },
	{ KVM_CAP_PIT2, "KVM_CAP_PIT2" },
	{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
	{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
	{ KVM_CAP_IRQFD, "KVM_CAP_IRQFD" },
	{ KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD" },
};

static int open_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return vmm_fail("/dev/kvm: no such device: KVM is not available on this machine "
					"(load kvm-intel or kvm-amd, or run through scripts/testhost)");
		return vmm_fail_errno("open /dev/kvm");
	}
	return fd;
}

static int check_api(int sys_fd)
{
	int v = ioctl(sys_fd, KVM_GET_API_VERSION, 0);
	if (v < 0)
		return vmm_fail_errno("KVM_GET_API_VERSION");
	if (v != KVM_API_VERSION)
		return vmm_fail("KVM API version %d, expected %d", v, KVM_API_VERSION);
	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++)
		if (ioctl(sys_fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0)
			return vmm_fail("KVM lacks %s, which this VMM needs", required_caps[i].name);
	return 0;
}

static int setup_vm(struct kvm *k)
{
	uint64_t identity = KVM_IDENTITY_MAP_GPA;
	if (ioctl(k->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0)
		return vmm_fail_errno("KVM_SET_IDENTITY_MAP_ADDR");
	if (ioctl(k->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_GPA) < 0)
		return vmm_fail_errno("KVM_SET_TSS_ADDR");
	if (ioctl(k->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return vmm_fail_errno("KVM_CREATE_IRQCHIP");
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(k->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return vmm_fail_errno("KVM_CREATE_PIT2");
	return 0;
}

int kvm_create(struct kvm *k)
{
	k->sys_fd = k->vm_fd = -1;
	k->sys_fd = open_kvm();
	if (k->sys_fd < 0 || check_api(k->sys_fd))
		goto fail;
	k->run_mmap_size = ioctl(k->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (k->run_mmap_size < (int)sizeof(struct kvm_run)) {
		vmm_fail_errno("KVM_GET_VCPU_MMAP_SIZE");
		goto fail;
	}
	k->vm_fd = ioctl(k->sys_fd, KVM_CREATE_VM, 0);
	if (k->vm_fd < 0) {
		vmm_fail_errno("KVM_CREATE_VM");
		goto fail;
	}
	if (setup_vm(k))
		goto fail;
	return 0;
fail:
	kvm_destroy(k);
	return -1;
}

void kvm_destroy(struct kvm *k)
{
	if (k->vm_fd >= 0)
		close(k->vm_fd);
	if (k->sys_fd >= 0)
		close(k->sys_fd);
	k->sys_fd = k->vm_fd = -1;
}

int kvm_map_memory(struct kvm *k, const struct guest_mem *m)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct guest_region *r = &m->regions[i];
		struct kvm_userspace_memory_region slot = {
			.slot = i,
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uintptr_t)(m->host + r->offset),
		};
		if (ioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
			return vmm_fail_errno("KVM_SET_USER_MEMORY_REGION slot %u (0x%llx+0x%llx)", i,
					      (unsigned long long)r->gpa, (unsigned long long)r->size);
	}
	return 0;
}

int kvm_irq_line(struct kvm *k, unsigned gsi, int level)
{
	struct kvm_irq_level irq = { .irq = gsi, .level = level };
	if (ioctl(k->vm_fd, KVM_IRQ_LINE, &irq) < 0)
		return vmm_fail_errno("KVM_IRQ_LINE gsi %u level %d", gsi, level);
	return 0;
}

struct kvm_cpuid2 *kvm_supported_cpuid(struct kvm *k)
{
	for (unsigned n = 128; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c) {
			vmm_fail("KVM_GET_SUPPORTED_CPUID: out of memory");
			return NULL;
		}
		c->nent = n;
		if (ioctl(k->sys_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			return c;
		int saved = errno;
		free(c);
		errno = saved;
		if (errno != E2BIG) {
			vmm_fail_errno("KVM_GET_SUPPORTED_CPUID");
			return NULL;
		}
	}
	vmm_fail("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
	return NULL;
}

int kvm_create_vcpu(struct kvm *k, unsigned id, struct kvm_run **run)
{
	int fd = ioctl(k->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (fd < 0)
		return vmm_fail_errno("KVM_CREATE_VCPU %u", id);
	void *p = mmap(NULL, (size_t)k->run_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		vmm_fail_errno("mmap kvm_run of vCPU %u", id);
		close(fd);
		return -1;
	}
	*run = p;
	return fd;
}
