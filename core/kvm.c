#include "kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "err.h"
#include "kvm_probe.h"

/* Below 4 GiB, in the PCI hole; used by KVM on Intel only. */
#define KVM_IDENTITY_MAP_GPA 0xfeffc000ull
#define KVM_TSS_GPA          0xfeffd000ull

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
	if (!k->routes_ready && kvm_routes_init(k))
		return -1;
	/* One decision on whether this /dev/kvm can run the guest (missing,
	 * no permission, wrong API, a capability missing, or a backend such as
	 * kvm-pvm that runs no stock kernel): a clear line at once, never a
	 * vCPU spinning until a boot timeout. It opens /dev/kvm and creates the
	 * VM itself; its fds are kept. */
	struct kvm_facts facts;
	struct kvm_verdict verdict;
	kvm_facts_gather(&facts, &k->sys_fd, &k->vm_fd);
	kvm_decide(&facts, &verdict);
	if (!verdict.usable) {
		vmm_fail("%s: %s", verdict.reason, verdict.advice);
		goto fail;
	}
	k->run_mmap_size = ioctl(k->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (k->run_mmap_size < (int)sizeof(struct kvm_run)) {
		vmm_fail_errno("KVM_GET_VCPU_MMAP_SIZE");
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
	if (k->routes_ready) {
		pthread_mutex_destroy(&k->routes_lock);
		free(k->routes);
		k->routes = NULL;
		k->nroutes = k->routes_cap = 0;
		k->routes_ready = false;
	}
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

int kvm_check_extension(struct kvm *k, int cap)
{
	int r = ioctl(k->sys_fd, KVM_CHECK_EXTENSION, cap);
	if (r < 0)
		return vmm_fail_errno("KVM_CHECK_EXTENSION %d", cap);
	return r;
}

/* --- ioeventfd and irqfd --------------------------------------------------- */

int kvm_ioeventfd(struct kvm *k, uint64_t addr, unsigned len, int fd, bool assign)
{
	if (len != 0 && len != 1 && len != 2 && len != 4 && len != 8)
		return vmm_fail("KVM_IOEVENTFD 0x%llx: length %u (0, 1, 2, 4 or 8)", (unsigned long long)addr, len);
	struct kvm_ioeventfd io = {
		.addr = addr,
		.len = len,
		.fd = fd,
		.flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
	};
	if (ioctl(k->vm_fd, KVM_IOEVENTFD, &io) < 0)
		return vmm_fail_errno("KVM_IOEVENTFD %s 0x%llx len %u fd %d", assign ? "assign" : "deassign",
				      (unsigned long long)addr, len, fd);
	return 0;
}

int kvm_irqfd(struct kvm *k, int fd, unsigned gsi, bool assign)
{
	struct kvm_irqfd irq = {
		.fd = (uint32_t)fd,
		.gsi = gsi,
		.flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN,
	};
	if (ioctl(k->vm_fd, KVM_IRQFD, &irq) < 0)
		return vmm_fail_errno("KVM_IRQFD %s fd %d gsi %u", assign ? "assign" : "deassign", fd, gsi);
	return 0;
}

/* --- GSI routing ------------------------------------------------------------- */

#define KVM_IOAPIC_PINS 24
#define KVM_PIC_PINS    16

static struct kvm_irq_routing_entry irqchip_route(unsigned gsi, unsigned chip, unsigned pin)
{
	struct kvm_irq_routing_entry e = { .gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP };
	e.u.irqchip.irqchip = chip;
	e.u.irqchip.pin = pin;
	return e;
}

int kvm_routes_init(struct kvm *k)
{
	unsigned cap = KVM_IOAPIC_PINS + KVM_PIC_PINS + 16;
	struct kvm_irq_routing_entry *r = calloc(cap, sizeof(*r));
	if (!r)
		return vmm_fail("GSI routing table: out of memory");
	/* The table KVM_CREATE_IRQCHIP installs (kvm_setup_default_irq_routing):
	 * every GSI below 16 goes to the IOAPIC pin of the same number and to
	 * the PIC (master for 0-7, slave for 8-15, pin = GSI % 8), the cascade
	 * GSI 2 included; GSI 16-23 to the IOAPIC only. */
	unsigned n = 0;
	for (unsigned gsi = 0; gsi < KVM_IOAPIC_PINS; gsi++) {
		r[n++] = irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, gsi);
		if (gsi < KVM_PIC_PINS)
			r[n++] = irqchip_route(gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, gsi % 8);
	}
	pthread_mutex_init(&k->routes_lock, NULL);
	k->routes = r;
	k->nroutes = n;
	k->routes_cap = cap;
	k->next_msi_gsi = KVM_MSI_GSI_BASE;
	k->routes_ready = true;
	return 0;
}

/* Hands the whole table to KVM. Called with routes_lock held. */
static int commit_routes(struct kvm *k)
{
	struct kvm_irq_routing *t = calloc(1, sizeof(*t) + k->nroutes * sizeof(t->entries[0]));
	if (!t)
		return vmm_fail("KVM_SET_GSI_ROUTING: out of memory");
	t->nr = k->nroutes;
	memcpy(t->entries, k->routes, k->nroutes * sizeof(t->entries[0]));
	int rc = ioctl(k->vm_fd, KVM_SET_GSI_ROUTING, t);
	int saved = errno;
	free(t);
	errno = saved;
	if (rc < 0)
		return vmm_fail_errno("KVM_SET_GSI_ROUTING (%u routes)", k->nroutes);
	return 0;
}

static void set_msi(struct kvm_irq_routing_entry *e, uint64_t addr, uint32_t data)
{
	e->u.msi.address_lo = (uint32_t)addr;
	e->u.msi.address_hi = (uint32_t)(addr >> 32);
	e->u.msi.data = data;
}

static struct kvm_irq_routing_entry *find_msi(struct kvm *k, unsigned gsi)
{
	for (unsigned i = 0; i < k->nroutes; i++)
		if (k->routes[i].gsi == gsi && k->routes[i].type == KVM_IRQ_ROUTING_MSI)
			return &k->routes[i];
	return NULL;
}

int kvm_msi_route_add(struct kvm *k, uint64_t addr, uint32_t data, unsigned *gsi)
{
	if (!k->routes_ready)
		return vmm_fail("MSI route: no GSI routing table (KVM not created)");
	pthread_mutex_lock(&k->routes_lock);
	int rc = -1;
	if (k->next_msi_gsi >= KVM_MSI_GSI_BASE + KVM_MAX_MSI_ROUTES) {
		vmm_fail("MSI route: all %d MSI GSIs are in use", KVM_MAX_MSI_ROUTES);
		goto out;
	}
	if (k->nroutes == k->routes_cap) {
		unsigned cap = 2 * k->routes_cap;
		struct kvm_irq_routing_entry *r = realloc(k->routes, cap * sizeof(*r));
		if (!r) {
			vmm_fail("MSI route: out of memory");
			goto out;
		}
		k->routes = r;
		k->routes_cap = cap;
	}
	struct kvm_irq_routing_entry *e = &k->routes[k->nroutes];
	*e = (struct kvm_irq_routing_entry){ .gsi = k->next_msi_gsi, .type = KVM_IRQ_ROUTING_MSI };
	set_msi(e, addr, data);
	k->nroutes++;
	if (commit_routes(k)) {
		k->nroutes--;
		goto out;
	}
	*gsi = k->next_msi_gsi++;
	rc = 0;
out:
	pthread_mutex_unlock(&k->routes_lock);
	return rc;
}

int kvm_msi_route_update(struct kvm *k, unsigned gsi, uint64_t addr, uint32_t data)
{
	if (!k->routes_ready)
		return vmm_fail("MSI route: no GSI routing table (KVM not created)");
	pthread_mutex_lock(&k->routes_lock);
	int rc = 0;
	struct kvm_irq_routing_entry *e = find_msi(k, gsi);
	if (!e) {
		rc = vmm_fail("MSI route: GSI %u is not an MSI route", gsi);
	} else {
		struct kvm_irq_routing_entry old = *e;
		set_msi(e, addr, data);
		if (memcmp(&old, e, sizeof(old)) != 0 && commit_routes(k)) {
			*e = old;
			rc = -1;
		}
	}
	pthread_mutex_unlock(&k->routes_lock);
	return rc;
}

int kvm_msi_route_remove(struct kvm *k, unsigned gsi)
{
	if (!k->routes_ready)
		return vmm_fail("MSI route: no GSI routing table (KVM not created)");
	pthread_mutex_lock(&k->routes_lock);
	int rc = 0;
	struct kvm_irq_routing_entry *e = find_msi(k, gsi);
	if (!e) {
		rc = vmm_fail("MSI route: GSI %u is not an MSI route", gsi);
	} else {
		struct kvm_irq_routing_entry old = *e;
		unsigned i = (unsigned)(e - k->routes);
		memmove(e, e + 1, (k->nroutes - i - 1) * sizeof(*e));
		k->nroutes--;
		if (commit_routes(k)) {
			memmove(&k->routes[i + 1], &k->routes[i], (k->nroutes - i) * sizeof(*e));
			k->routes[i] = old;
			k->nroutes++;
			rc = -1;
		}
	}
	pthread_mutex_unlock(&k->routes_lock);
	return rc;
}
