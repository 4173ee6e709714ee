#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus.h"
#include "clock.h"
#include "device.h"
#include "err.h"
#include "kvm.h"
#include "memory.h"
#include "vcpu.h"
#include "x86_boot.h"
#include "vm_priv.h"

#define VM_MIN_MEM       (32ull << 20)
#define VM_MAX_FILE_SIZE (1ull << 30) /* kernel or initrd */


const char *vm_state_name(enum vm_state s)
{
	static const char *const names[] = { "created", "running", "paused", "stopped" };
	return s <= VM_STOPPED ? names[s] : "unknown";
}

/* --- composing ----------------------------------------------------------- */

/* A boot file's size, checked: a regular file of at most VM_MAX_FILE_SIZE
 * bytes (again at vm_start: it may have changed since vm_new). */
static int file_size(const char *what, const char *path, int fd, size_t *size)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return vmm_fail_errno("%s %s: fstat", what, path);
	if (!S_ISREG(st.st_mode))
		return vmm_fail("%s %s: not a regular file", what, path);
	if ((uint64_t)st.st_size > VM_MAX_FILE_SIZE)
		return vmm_fail("%s %s: %lld bytes is more than the %llu allowed", what, path, (long long)st.st_size,
				(unsigned long long)VM_MAX_FILE_SIZE);
	*size = (size_t)st.st_size;
	return 0;
}

/* Opens a boot file: fd and size, or -1 with a message naming it. */
static int open_file(const char *what, const char *path, int *fd_out, size_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vmm_fail_errno("%s %s", what, path);
	if (file_size(what, path, fd, size)) {
		close(fd);
		return -1;
	}
	*fd_out = fd;
	return 0;
}

/* len bytes of fd at offset into dst. */
static int pread_all(const char *what, const char *path, int fd, uint8_t *dst, size_t len, uint64_t offset)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = pread(fd, dst + done, len - done, (off_t)(offset + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return vmm_fail_errno("%s %s: read", what, path);
		if (n == 0)
			return vmm_fail("%s %s: the file ends before byte %llu", what, path,
					(unsigned long long)(offset + len));
		done += (size_t)n;
	}
	return 0;
}

/* Reads size bytes from offset 0 of fd into a new buffer (*out). */
static int read_fd(const char *what, const char *path, int fd, size_t size, uint8_t **out)
{
	*out = malloc(size ? size : 1);
	if (!*out)
		return vmm_fail("%s %s: out of memory", what, path);
	if (pread_all(what, path, fd, *out, size, 0)) {
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

static int check_config(const struct vm_config *cfg)
{
	if (cfg->mem_size < VM_MIN_MEM || cfg->mem_size % 4096)
		return vmm_fail("memory %llu: must be a multiple of 4096 bytes and at least %llu MiB",
				(unsigned long long)cfg->mem_size, VM_MIN_MEM >> 20);
	if (cfg->ncpus < 1 || cfg->ncpus > X86_MAX_VCPUS)
		return vmm_fail("vcpus %u: must be from 1 to %d", cfg->ncpus, X86_MAX_VCPUS);
	if (!cfg->kernel_path && !cfg->incoming)
		return vmm_fail("kernel: missing");
	if (!cfg->devices)
		return vmm_fail("no device registry");
	return 0;
}

/* The largest setup a bzImage can have (setup_sects 255), and one byte of
 * kernel after it: enough of the file to check its header (or a vmlinux's
 * ELF and program headers). */
#define HEADER_READ ((255 + 1) * 512 + 1)

/* Reads the first `want` bytes of the kernel (of ksize) into *image and
 * parses them into *bz; checks the command line against the kernel. */
static int parse_kernel(struct vm *vm, size_t want, size_t ksize, uint8_t **image, struct bzimage *bz)
{
	if (read_fd("kernel", vm->kernel_path, vm->kernel_fd, want, image))
		return -1;
	if (kernel_parse(bz, *image, want, ksize))
		return vmm_fail_context("kernel %s", vm->kernel_path);
	size_t len = strlen(vm->cmdline);
	if (len > bz->cmdline_size)
		return vmm_fail("cmdline: %zu bytes, the kernel accepts at most %u", len, bz->cmdline_size);
	return 0;
}

/* At vm_new: opens the kernel and the initrd and checks the kernel's
 * header and the command line against it; nothing big is read yet. */
static int open_payload(struct vm *vm, const struct vm_config *cfg)
{
	size_t ksize = 0, isize = 0;
	if (!(vm->kernel_path = strdup(cfg->kernel_path)) ||
	    (cfg->initrd_path && !(vm->initrd_path = strdup(cfg->initrd_path))))
		return vmm_fail("out of memory");
	if (open_file("kernel", vm->kernel_path, &vm->kernel_fd, &ksize) ||
	    (vm->initrd_path && open_file("initrd", vm->initrd_path, &vm->initrd_fd, &isize)))
		return -1;
	uint8_t *head = NULL;
	struct bzimage bz;
	int rc = parse_kernel(vm, ksize < HEADER_READ ? ksize : HEADER_READ, ksize, &head, &bz);
	free(head);
	return rc;
}

/* At vm_start: reads the files (checked again: they may have changed since
 * vm_new). A bzImage is read whole; of a vmlinux only the headers, its
 * segments go straight into guest RAM (load_segments). */
static int read_payload(struct vm *vm)
{
	size_t ksize = 0;
	uint8_t magic[4] = { 0 };
	if (file_size("kernel", vm->kernel_path, vm->kernel_fd, &ksize) ||
	    pread_all("kernel", vm->kernel_path, vm->kernel_fd, magic, ksize < 4 ? ksize : 4, 0))
		return -1;
	bool elf = memcmp(magic, "\177ELF", 4) == 0;
	vm->kernel_size = elf && ksize > HEADER_READ ? HEADER_READ : ksize;
	if (parse_kernel(vm, vm->kernel_size, ksize, &vm->kernel_image, &vm->bzimage))
		return -1;
	if (vm->initrd_fd >= 0 && (file_size("initrd", vm->initrd_path, vm->initrd_fd, &vm->initrd_size) ||
				   read_fd("initrd", vm->initrd_path, vm->initrd_fd, vm->initrd_size, &vm->initrd)))
		return -1;
	return 0;
}

/* A vmlinux's segments, read from its file into guest RAM where they run:
 * one copy, not two. */
static int load_segments(struct vm *vm)
{
	for (unsigned i = 0; i < vm->bzimage.nsegs; i++) {
		const struct kernel_segment *sg = &vm->bzimage.segs[i];
		uint8_t *dst = guest_mem_ptr(&vm->mem, sg->gpa, sg->filesz);
		if (!dst)
			return vmm_fail("kernel %s: segment %u (0x%llx bytes at 0x%llx) is not in guest RAM",
					vm->kernel_path, i, (unsigned long long)sg->filesz, (unsigned long long)sg->gpa);
		if (pread_all("kernel", vm->kernel_path, vm->kernel_fd, dst, sg->filesz, sg->offset))
			return -1;
	}
	return 0;
}

static void drop_payload(struct vm *vm)
{
	free(vm->kernel_image);
	free(vm->initrd);
	vm->kernel_image = vm->initrd = NULL;
	if (vm->kernel_fd >= 0)
		close(vm->kernel_fd);
	if (vm->initrd_fd >= 0)
		close(vm->initrd_fd);
	vm->kernel_fd = vm->initrd_fd = -1;
	free(vm->kernel_path);
	free(vm->initrd_path);
	vm->kernel_path = vm->initrd_path = NULL;
}

/* --- what devices get from the VM (device_host) ----------------------------- */

static void host_irq_line(void *opaque, unsigned gsi, int level)
{
	struct vm *vm = opaque;
	if (vm->kvm.vm_fd >= 0 && kvm_irq_line(&vm->kvm, gsi, level))
		fprintf(stderr, "vmm: %s: %s\n", vm->name, vmm_error());
}

static void host_console_output(void *opaque, const uint8_t *buf, size_t len)
{
	struct vm *vm = opaque;
	console_put(&vm->console, buf, len);
}

static void vcpu_fatal(void *opaque, unsigned vcpu_id, const char *why);

static void host_guest_reset(void *opaque, const char *why)
{
	vcpu_fatal(opaque, 0, why);
}

static struct device *host_find(void *opaque, const char *kind)
{
	struct vm *vm = opaque;
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (!strcmp(vm->devices[i]->type->kind, kind))
			return vm->devices[i];
	return NULL;
}

static void signal_event(struct vm *vm)
{
	uint64_t one = 1;
	while (write(vm->event_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

/* The boot-time marker (vm.h): a port of the VM itself, not a device. */
static void boot_mark_write(void *opaque, uint64_t offset, const void *data, unsigned len)
{
	struct vm *vm = opaque;
	(void)offset;
	(void)len;
	if (*(const uint8_t *)data != VM_BOOT_MARK_VALUE)
		return;
	uint64_t expected = 0, now = monotonic_ns();
	if (atomic_compare_exchange_strong(&vm->boot_mark_ns, &expected, now))
		signal_event(vm);
}

static const struct bus_ops boot_mark_ops = { .write = boot_mark_write };

static int append_device(struct vm *vm, struct device *d, void *config)
{
	struct device **list = realloc(vm->devices, (vm->ndevices + 1) * sizeof(*list));
	if (!list) {
		d->type->free(d);
		free(config);
		return vmm_fail("%s: out of memory", vm->name);
	}
	vm->devices = list;
	d->config = config;
	vm->devices[vm->ndevices++] = d;
	if (!vm->console_dev && d->type->console_input)
		vm->console_dev = d;
	return 0;
}

static void host_ram_address(void *opaque, uintptr_t addr)
{
	struct vm *vm = opaque;
	if (vm->incoming && vm->kvm.vm_fd < 0 && !vm->ram_at)
		vm->ram_at = addr;
}

/* The board: every VM has its devices, named by their kind. */
static int add_board(struct vm *vm)
{
	vm->host = (struct device_host){
		.vm_name = vm->name,
		.kvm = &vm->kvm,
		.mem = &vm->mem,
		.pio = &vm->pio,
		.mmio = &vm->mmio,
		.loop = vm->loop,
		.opaque = vm,
		.incoming = vm->incoming,
		.irq_line = host_irq_line,
		.console_output = host_console_output,
		.guest_reset = host_guest_reset,
		.find = host_find,
		.ram_address = host_ram_address,
	};
	if (bus_register(&vm->pio, VM_BOOT_MARK_PORT, 1, &boot_mark_ops, vm, "boot-mark"))
		return -1;
	for (const struct device_type *const *t = vm->registry->board_types; *t; t++) {
		struct device *d = (*t)->create(&vm->host, (*t)->kind, NULL, NULL);
		if (!d || append_device(vm, d, NULL))
			return vmm_fail_context("%s: board %s", vm->name, vm->registry->board);
	}
	vm->nboard = vm->ndevices;
	return 0;
}

/* --- vCPU reports ---------------------------------------------------------- */

static void vcpu_fatal(void *opaque, unsigned vcpu_id, const char *why)
{
	struct vm *vm = opaque;
	(void)vcpu_id;
	pthread_mutex_lock(&vm->lock);
	if (!vm->stop_reason[0])
		snprintf(vm->stop_reason, sizeof(vm->stop_reason), "%s", why);
	vm->stop_pending = true;
	pthread_mutex_unlock(&vm->lock);
	signal_event(vm);
}

struct vm *vm_new(const struct vm_config *cfg)
{
	if (check_config(cfg))
		return NULL;
	struct vm *vm = calloc(1, sizeof(*vm));
	if (!vm) {
		vmm_fail("out of memory");
		return NULL;
	}
	vm->kvm.sys_fd = vm->kvm.vm_fd = -1;
	vm->mem.fd = -1;
	vm->event_fd = -1;
	vm->kernel_fd = vm->initrd_fd = -1;
	pthread_mutex_init(&vm->lock, NULL);
	bus_init(&vm->pio, "pio");
	bus_init(&vm->mmio, "mmio");
	vm->name = strdup(cfg->name ? cfg->name : "vm");
	vm->cmdline = strdup(cfg->cmdline ? cfg->cmdline : "");
	vm->mem_size = cfg->mem_size;
	vm->ncpus = cfg->ncpus;
	vm->loop = cfg->loop;
	vm->incoming = cfg->incoming;
	vm->registry = cfg->devices;
	vm->state = VM_CREATED;
	if (!vm->name || !vm->cmdline) {
		vmm_fail("out of memory");
		goto fail;
	}
	vm->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (vm->event_fd < 0) {
		vmm_fail_errno("eventfd");
		goto fail;
	}
	if (console_init(&vm->console, cfg->console_fd, vm->event_fd) ||
	    (!cfg->incoming && open_payload(vm, cfg)) || add_board(vm))
		goto fail;
	struct vcpu_host host = { vcpu_fatal, vm };
	if (vcpu_group_init(&vm->vcpus, vm->ncpus, &vm->pio, &vm->mmio, &host))
		goto fail;
	return vm;
fail:
	vm_free(vm);
	return NULL;
}

/* --- starting ---------------------------------------------------------------- */

#define APIC_LVT_LINT0 0x350
#define APIC_LVT_LINT1 0x360
#define APIC_MODE_NMI    0x4
#define APIC_MODE_EXTINT 0x7

static void set_lvt_mode(struct kvm_lapic_state *lapic, unsigned reg, uint32_t mode)
{
	uint32_t v;
	memcpy(&v, lapic->regs + reg, sizeof(v));
	v = (v & ~0x700u) | (mode << 8);
	memcpy(lapic->regs + reg, &v, sizeof(v));
}

/* LINT0 delivers the PIC's ExtINT and LINT1 NMIs, as a PC's firmware sets. */
static int setup_lapic(struct vcpu *v)
{
	struct kvm_lapic_state lapic;
	if (ioctl(v->fd, KVM_GET_LAPIC, &lapic) < 0)
		return vmm_fail_errno("vCPU %u: KVM_GET_LAPIC", v->id);
	set_lvt_mode(&lapic, APIC_LVT_LINT0, APIC_MODE_EXTINT);
	set_lvt_mode(&lapic, APIC_LVT_LINT1, APIC_MODE_NMI);
	if (ioctl(v->fd, KVM_SET_LAPIC, &lapic) < 0)
		return vmm_fail_errno("vCPU %u: KVM_SET_LAPIC", v->id);
	return 0;
}

static int setup_fpu(struct vcpu *v)
{
	struct kvm_fpu fpu = { .fcw = 0x37f, .mxcsr = 0x1f80 };
	if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
		return vmm_fail_errno("vCPU %u: KVM_SET_FPU", v->id);
	return 0;
}

/* The bootstrap processor enters the kernel directly; the others wait in KVM
 * for the INIT/SIPI the kernel sends through the local APIC. */
static int setup_bsp_registers(struct vcpu *v, const struct x86_boot_info *boot)
{
	struct kvm_sregs sregs;
	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return vmm_fail_errno("vCPU 0: KVM_GET_SREGS");
	x86_boot_sregs(&sregs);
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
		return vmm_fail_errno("vCPU 0: KVM_SET_SREGS");
	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	x86_boot_regs(&regs, boot);
	if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
		return vmm_fail_errno("vCPU 0: KVM_SET_REGS");
	return 0;
}

static int create_vcpus(struct vm *vm, const struct x86_boot_info *boot)
{
	if (!vm->cpuid && !(vm->cpuid = kvm_supported_cpuid(&vm->kvm)))
		return -1;
	struct kvm_cpuid2 *cpuid = vm->cpuid;
	int rc = 0;
	for (unsigned i = 0; i < vm->ncpus && rc == 0; i++) {
		struct vcpu *v = &vm->vcpus.vcpus[i];
		v->fd = kvm_create_vcpu(&vm->kvm, i, &v->run);
		if (v->fd < 0) {
			rc = -1;
			break;
		}
		v->run_size = vm->kvm.run_mmap_size;
		cpuid_setup_vcpu(cpuid, i, vm->ncpus);
		if (ioctl(v->fd, KVM_SET_CPUID2, cpuid) < 0)
			rc = vmm_fail_errno("vCPU %u: KVM_SET_CPUID2", i);
		else if (boot) /* an incoming VM gets its whole state from the stream */
			rc = setup_fpu(v) || setup_lapic(v) || (i == 0 && setup_bsp_registers(v, boot)) ? -1 : 0;
	}
	return rc;
}

int vm_set_cpuid(struct vm *vm, const struct machine_cpuid *entries, unsigned n)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
	if (!c)
		return vmm_fail("%s: CPUID table: out of memory", vm->name);
	c->nent = n;
	for (unsigned i = 0; i < n; i++) {
		const struct machine_cpuid *e = &entries[i];
		c->entries[i] = (struct kvm_cpuid_entry2){ .function = e->function, .index = e->index,
							   .flags = e->flags, .eax = e->eax, .ebx = e->ebx,
							   .ecx = e->ecx, .edx = e->edx };
	}
	free(vm->cpuid);
	vm->cpuid = c;
	return 0;
}

static int load_guest(struct vm *vm, struct x86_boot_info *boot)
{
	if (read_payload(vm))
		return -1;
	struct x86_boot_config bc = {
		.kernel = &vm->bzimage,
		.initrd = vm->initrd,
		.initrd_size = vm->initrd_size,
		.cmdline = vm->cmdline,
		.ncpus = vm->ncpus,
	};
	char memfd_name[80];
	snprintf(memfd_name, sizeof(memfd_name), "vmm-ram:%s", vm->name);
	if (guest_mem_create(&vm->mem, vm->mem_size, memfd_name) || kvm_map_memory(&vm->kvm, &vm->mem))
		return -1;
	if (vm->bzimage.elf) {
		if (load_segments(vm))
			return -1;
		bc.segments_loaded = 1;
	}
	if (x86_boot_load(&vm->mem, &bc, boot))
		return -1;
	drop_payload(vm);
	return 0;
}

static int realize_devices(struct vm *vm)
{
	for (unsigned i = 0; i < vm->ndevices; i++) {
		struct device *d = vm->devices[i];
		if (d->type->realize && d->type->realize(d))
			return vmm_fail_context("%s", d->name);
	}
	return 0;
}

int vm_start(struct vm *vm)
{
	if (vm->incoming)
		return vmm_fail("%s: an incoming VM is started by its migration", vm->name);
	if (vm->state != VM_CREATED)
		return vmm_fail("%s: cannot start: the VM is %s", vm->name, vm_state_name(vm->state));
	struct x86_boot_info boot;
	if (kvm_create(&vm->kvm) || load_guest(vm, &boot) || realize_devices(vm) || create_vcpus(vm, &boot) ||
	    vcpu_group_start(&vm->vcpus, false)) {
		vmm_fail_context("%s: start", vm->name);
		vcpu_group_stop(&vm->vcpus);
		vm->state = VM_STOPPED;
		snprintf(vm->stop_reason, sizeof(vm->stop_reason), "%s", vmm_error());
		return -1;
	}
	vm->state = VM_RUNNING;
	return 0;
}

int vm_prepare_incoming(struct vm *vm, int mem_fd)
{
	if (!vm->incoming || vm->state != VM_CREATED || vm->kvm.vm_fd >= 0)
		return vmm_fail("%s: not an incoming VM waiting for its memory", vm->name);
	if (kvm_create(&vm->kvm) || guest_mem_adopt(&vm->mem, mem_fd, vm->mem_size, vm->ram_at))
		return vmm_fail_context("%s: prepare", vm->name);
	/* Done before the freeze, so that it need not wait for them: the page
	 * tables of the RAM the guest uses, and the vCPU threads (parked). */
	if (guest_mem_populate_resident(&vm->mem) < 0)
		fprintf(stderr, "vmm: %s: guest RAM left to fault in: %s\n", vm->name, vmm_error());
	if (kvm_map_memory(&vm->kvm, &vm->mem) || realize_devices(vm) || create_vcpus(vm, NULL) ||
	    vcpu_group_start(&vm->vcpus, true))
		return vmm_fail_context("%s: prepare", vm->name);
	return 0;
}

/* The first resume of a VM that came by migration: its devices start their
 * datapaths from the loaded state, then its parked vCPUs run. */
static int start_loaded(struct vm *vm)
{
	for (unsigned i = 0; i < vm->ndevices; i++) {
		struct device *d = vm->devices[i];
		if (d->type->resume_loaded && d->type->resume_loaded(d))
			return vmm_fail_context("%s: %s", vm->name, d->name);
	}
	if (vcpu_group_resume(&vm->vcpus))
		return vmm_fail_context("%s: start", vm->name);
	vm->incoming_loaded = false;
	vm->state = VM_RUNNING;
	return 0;
}

/* --- running ---------------------------------------------------------------- */

int vm_pause(struct vm *vm)
{
	if (vm->state != VM_RUNNING)
		return vmm_fail("%s: cannot pause: the VM is %s", vm->name, vm_state_name(vm->state));
	if (vcpu_group_pause(&vm->vcpus))
		return -1;
	vm->state = VM_PAUSED;
	return 0;
}

int vm_resume(struct vm *vm)
{
	if (vm->state != VM_PAUSED)
		return vmm_fail("%s: cannot resume: the VM is %s", vm->name, vm_state_name(vm->state));
	if (vm->awaiting_start)
		return vmm_fail("%s: cannot resume: its migration is not finished (the source may still resume it); "
				"the migration starts it", vm->name);
	if (vm->incoming_loaded)
		return start_loaded(vm);
	if (vcpu_group_resume(&vm->vcpus))
		return -1;
	vm->state = VM_RUNNING;
	return 0;
}

void vm_stop_with(struct vm *vm, const char *reason)
{
	pthread_mutex_lock(&vm->lock);
	if (!vm->stop_reason[0])
		snprintf(vm->stop_reason, sizeof(vm->stop_reason), "%s", reason);
	vm->stop_pending = false;
	pthread_mutex_unlock(&vm->lock);
	vcpu_group_stop(&vm->vcpus);
	vm->state = VM_STOPPED;
	console_flush(&vm->console);
}

int vm_stop(struct vm *vm)
{
	if (vm->state == VM_STOPPED)
		return 0;
	vm_stop_with(vm, "stopped by the host");
	return 0;
}

enum vm_state vm_state(struct vm *vm)
{
	return vm->state;
}

const char *vm_stop_reason(struct vm *vm)
{
	return vm->state == VM_STOPPED ? vm->stop_reason : "";
}

int vm_event_fd(struct vm *vm)
{
	return vm->event_fd;
}

void vm_poll(struct vm *vm)
{
	uint64_t count;
	while (read(vm->event_fd, &count, sizeof(count)) < 0 && errno == EINTR)
		;
	if (console_flush(&vm->console))
		fprintf(stderr, "vmm: %s: %s\n", vm->name, vmm_error());
	pthread_mutex_lock(&vm->lock);
	bool pending = vm->stop_pending;
	pthread_mutex_unlock(&vm->lock);
	if (pending && vm->state != VM_STOPPED)
		vm_stop_with(vm, "");
}

/* Names are unique, and so are the backends of one type. */
static int check_unique(struct vm *vm, const struct device_type *t, const char *name, const void *config)
{
	for (unsigned i = 0; i < vm->ndevices; i++) {
		const struct device *d = vm->devices[i];
		if (!strcmp(d->name, name))
			return vmm_fail("%s: the device name %s is already taken", vm->name, name);
		if (device_same_backend(t, config, d->type, d->config))
			return vmm_fail("%s: %s: %s %s is already the backend of %s", vm->name, name,
					t->backend_label ? t->backend_label : device_backend_field(t)->name,
					device_backend_name(t, config), d->name);
	}
	return 0;
}

int vm_add_device(struct vm *vm, const struct device_type *t, const char *name, const void *config,
		  bool backend_transfer, const struct dev_backend *in)
{
	if (vm->state != VM_CREATED)
		return vmm_fail("%s: devices can only be added before the VM starts (it is %s)", vm->name,
				vm_state_name(vm->state));
	if (!device_registry_addable(vm->registry, t))
		return vmm_fail("%s: %s: a %s is not a device a VM can be given", vm->name, name ? name : "", t->kind);
	if (vm->ndevices - vm->nboard >= VM_MAX_DEVICES)
		return vmm_fail("%s: at most %d devices", vm->name, VM_MAX_DEVICES);
	if (!name || !*name || strlen(name) >= DEVICE_NAME_MAX)
		return vmm_fail("%s: device name \"%s\": must be 1..%d bytes", vm->name, name ? name : "",
				DEVICE_NAME_MAX - 1);
	char where[64];
	snprintf(where, sizeof(where), "%s: %s", vm->name, name);
	if (dev_fields_check(t->fields, config, where) || check_unique(vm, t, name, config))
		return -1;
	void *copy = calloc(1, t->config_size ? t->config_size : 1);
	if (!copy)
		return vmm_fail("%s: out of memory", where);
	memcpy(copy, config, t->config_size);
	struct device *d = t->create(&vm->host, name, copy, in);
	if (!d) {
		free(copy);
		return vmm_fail_context("%s", vm->name);
	}
	d->backend_transfer = backend_transfer;
	return append_device(vm, d, copy);
}

unsigned vm_device_count(struct vm *vm)
{
	return vm->ndevices;
}

struct device *vm_device(struct vm *vm, unsigned i)
{
	return i < vm->ndevices ? vm->devices[i] : NULL;
}

struct device *vm_device_by_name(struct vm *vm, const char *name)
{
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (!strcmp(vm->devices[i]->name, name))
			return vm->devices[i];
	return NULL;
}

void vm_drop_devices(struct vm *vm)
{
	while (vm->ndevices > vm->nboard) {
		struct device *d = vm->devices[--vm->ndevices];
		void *config = d->config;
		if (vm->console_dev == d)
			vm->console_dev = NULL;
		d->type->free(d);
		free(config);
	}
}

struct console *vm_console(struct vm *vm)
{
	return &vm->console;
}

size_t vm_console_input(struct vm *vm, const void *buf, size_t len)
{
	struct device *d = vm->console_dev;
	return d ? d->type->console_input(d, buf, len) : 0;
}

int vm_boot_mark(struct vm *vm, uint64_t *ns)
{
	uint64_t t = atomic_load(&vm->boot_mark_ns);
	if (!t)
		return -1;
	*ns = t;
	return 0;
}

const char *vm_name(struct vm *vm) { return vm->name; }
unsigned vm_ncpus(struct vm *vm) { return vm->ncpus; }
void vm_vcpu_stats(struct vm *vm, unsigned i, struct vcpu_stats *out) { vcpu_stats(&vm->vcpus, i, out); }
uint64_t vm_mem_size(struct vm *vm) { return vm->mem_size; }

int vm_vcpu_where(struct vm *vm, unsigned i, struct vcpu_where *out)
{
	if (vm->state != VM_PAUSED)
		return vmm_fail("%s: vCPU registers are read only while paused; the VM is %s", vm->name,
				vm_state_name(vm->state));
	if (i >= vm->ncpus)
		return vmm_fail("%s: no vCPU %u (it has %u)", vm->name, i, vm->ncpus);
	int fd = vm->vcpus.vcpus[i].fd;
	struct kvm_regs r;
	struct kvm_sregs s;
	struct kvm_mp_state mp;
	if (ioctl(fd, KVM_GET_REGS, &r) < 0)
		return vmm_fail_errno("%s: vCPU %u: KVM_GET_REGS", vm->name, i);
	if (ioctl(fd, KVM_GET_SREGS, &s) < 0)
		return vmm_fail_errno("%s: vCPU %u: KVM_GET_SREGS", vm->name, i);
	if (ioctl(fd, KVM_GET_MP_STATE, &mp) < 0)
		return vmm_fail_errno("%s: vCPU %u: KVM_GET_MP_STATE", vm->name, i);
	*out = (struct vcpu_where){ .rip = r.rip, .rsp = r.rsp, .rflags = r.rflags, .cr0 = s.cr0, .cr2 = s.cr2,
				    .cr3 = s.cr3, .cr4 = s.cr4, .efer = s.efer, .cs = s.cs.selector,
				    .mp_state = mp.mp_state };
	return 0;
}

void vm_free(struct vm *vm)
{
	if (!vm)
		return;
	if (vm->vcpus.vcpus)
		vcpu_group_destroy(&vm->vcpus);
	if (vm->console.buf)
		console_flush(&vm->console);
	console_destroy(&vm->console);
	/* In reverse: a PCI function goes before its host bridge. */
	vm->nboard = 0;
	vm_drop_devices(vm);
	free(vm->devices);
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
	guest_mem_destroy(&vm->mem);
	kvm_destroy(&vm->kvm);
	free(vm->cpuid);
	if (vm->event_fd >= 0)
		close(vm->event_fd);
	drop_payload(vm);
	pthread_mutex_destroy(&vm->lock);
	free(vm->name);
	free(vm->cmdline);
	free(vm);
}
