/* The inside of struct vm, shared by vm.c (composing, running) and
 * vm_migrate.c (saving and loading it for local migration). Nothing else
 * includes this. */
#ifndef VMM_VM_PRIV_H
#define VMM_VM_PRIV_H

#include <pthread.h>
#include <stdbool.h>

#include "bus.h"
#include "x86_boot.h"
#include "console.h"
#include "device.h"
#include "kvm.h"
#include "machine.h"
#include "memory.h"
#include "vcpu.h"
#include "vm.h"

struct vm {
	char *name;
	uint64_t mem_size;
	unsigned ncpus;
	char *cmdline;

	/* Boot payload: opened and its header checked at vm_new (the fds kept,
	 * so that a VMM locked later still has them), read at vm_start and
	 * dropped once loaded. */
	int kernel_fd, initrd_fd;
	char *kernel_path, *initrd_path;
	uint8_t *kernel_image;
	size_t kernel_size;
	struct bzimage bzimage;
	uint8_t *initrd;
	size_t initrd_size;

	struct kvm kvm;
	struct guest_mem mem;
	struct bus pio, mmio;
	struct vcpu_group vcpus;
	/* The CPUID table the guest is given (each vCPU's APIC ids set on top):
	 * KVM's supported table at start, the source's on a migration target
	 * (it travels in the description, so a newer build never changes a
	 * running guest's CPU). */
	struct kvm_cpuid2 *cpuid;
	struct console console;
	int event_fd;

	struct uv_loop_s *loop;
	/* Every device, the board's first (in the registry's order), then
	 * those added, in order: a migration's target rebuilds the same list,
	 * and state sections name devices by their index in it. */
	const struct device_registry *registry;
	struct device_host host;
	struct device **devices;
	unsigned ndevices, nboard;
	struct device *console_dev; /* the first device with console_input */

	bool incoming;                /* built by a migration, not booted */
	uintptr_t ram_at;             /* incoming: where a device asked for guest RAM (0: anywhere) */
	bool incoming_loaded;         /* loaded and committed, vCPUs never ran here */
	bool awaiting_start;          /* ...and the source not told yet (migrate_start) */

	enum vm_state state;
	pthread_mutex_t lock;         /* guards stop_reason and stop_pending */
	char stop_reason[256];
	bool stop_pending;            /* a vCPU asked for the VM to stop */
	_Atomic uint64_t boot_mark_ns; /* 0 until the guest wrote the marker */
};

/* vm.c, for vm_migrate.c. */
void vm_stop_with(struct vm *vm, const char *reason);
/* The CPUID table of an incoming VM, before vm_prepare_incoming. */
int vm_set_cpuid(struct vm *vm, const struct machine_cpuid *entries, unsigned n);
/* Frees every device that vm_add_device added (the board's stay), after
 * the vCPUs stopped. */
void vm_drop_devices(struct vm *vm);

#endif
