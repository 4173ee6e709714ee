/* A virtual machine: guest RAM, vCPU threads, the in-kernel irqchip and PIT,
 * and a list of devices (device.h: the board's, then those added), booted
 * directly from a bzImage. This is the whole
 * interface the Lua binding uses; nothing here knows about Lua or libuv.
 *
 * Threads: vm_* functions are called from one thread (the main thread).
 * vCPU threads run KVM_RUN and dispatch exits to devices. Anything that the
 * main thread should notice (console output, a state change such as a guest
 * shutdown) signals the eventfd returned by vm_event_fd(); the main thread
 * then calls vm_poll(). */
#ifndef VMM_VM_H
#define VMM_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "console.h"

enum vm_state {
	VM_CREATED, /* composed, never started */
	VM_RUNNING,
	VM_PAUSED,
	VM_STOPPED, /* terminal: by vm_stop, guest shutdown, or a fatal error */
};

const char *vm_state_name(enum vm_state s); /* "created", "running", ... */

struct vm_config {
	const char *name;        /* for messages and the memfd name */
	uint64_t mem_size;       /* bytes, multiple of 4096 */
	unsigned ncpus;          /* 1..X86_MAX_VCPUS */
	const char *kernel_path; /* bzImage */
	const char *initrd_path; /* NULL for none */
	const char *cmdline;     /* NULL for "" */
	int console_fd;          /* sink for guest output, -1 for capture only; not owned */
	struct uv_loop_s *loop;  /* runs the devices' datapaths; NULL: no such devices */
	const struct device_registry *devices; /* the types a VM is built from */
	bool incoming;           /* built by a local migration (vm_migrate.h): no kernel */
};

struct vm;

/* Validates the configuration and reads and checks the kernel and initrd
 * files. Touches no KVM, so it works (and fails clearly) anywhere. */
struct vm *vm_new(const struct vm_config *cfg);
void vm_free(struct vm *vm); /* stops the VM first if it runs */

/* Creates the KVM VM, loads the kernel and starts every vCPU. */
int vm_start(struct vm *vm);
/* Parks every vCPU outside KVM_RUN; returns when all are parked. */
int vm_pause(struct vm *vm);
/* Also starts an incoming VM once its migration committed (it is "paused"
 * then): its devices resume their datapaths, then the vCPUs run. */
int vm_resume(struct vm *vm);
/* Local migration, target side (vm_migrate.c drives it): creates the KVM
 * VM over the guest RAM memfd received from the source (the VM takes fd on
 * success), realizes the devices and creates the vCPUs without running
 * them. */
int vm_prepare_incoming(struct vm *vm, int mem_fd);
/* Stops and joins the vCPU threads. The VM cannot be started again. */
int vm_stop(struct vm *vm);

enum vm_state vm_state(struct vm *vm);
/* Why the VM stopped: "stopped by the host", "guest shutdown", or an error. */
const char *vm_stop_reason(struct vm *vm);

/* Readable (eventfd) when something happened; vm_poll() clears it, flushes
 * console output to the sink and updates the state. */
int vm_event_fd(struct vm *vm);
void vm_poll(struct vm *vm);

/* Adds a device of type t (before vm_start), built from a copy of config
 * (checked against the type's fields first; the type may complete it, as
 * the description will show). Its backend is opened now, so a bad
 * configuration fails here: -1 with a message naming the device. Names
 * are unique in a VM, and so are the backends of one type (two devices on
 * one TAP would each get some of its queues). `in`: a backend adopted
 * from a migration source (its fds belong to the VM on success and stay
 * the caller's on failure), NULL otherwise. */
struct device;
struct device_type;
struct dev_backend;
#define VM_MAX_DEVICES 32
int vm_add_device(struct vm *vm, const struct device_type *t, const char *name, const void *config,
		  bool backend_transfer, const struct dev_backend *in);
/* Every device, the board's first: 0..vm_device_count()-1. */
unsigned vm_device_count(struct vm *vm);
struct device *vm_device(struct vm *vm, unsigned i);
/* The device named name, or NULL. */
struct device *vm_device_by_name(struct vm *vm, const char *name);

struct console *vm_console(struct vm *vm);
/* Queues console input for the guest; returns bytes accepted. */
size_t vm_console_input(struct vm *vm, const void *buf, size_t len);

/* The boot-time marker: the guest writes VM_BOOT_MARK_VALUE to port
 * VM_BOOT_MARK_PORT (as Firecracker's init does); the VMM records the time.
 * Returns 0 and fills *ns (CLOCK_MONOTONIC) once it happened, -1 before. */
#define VM_BOOT_MARK_PORT 0x3f0
#define VM_BOOT_MARK_VALUE 123
int vm_boot_mark(struct vm *vm, uint64_t *ns);

const char *vm_name(struct vm *vm);
/* vCPU i's activity counters (vcpu.h); i < vm_ncpus. */
struct vcpu_stats;
void vm_vcpu_stats(struct vm *vm, unsigned i, struct vcpu_stats *out);
unsigned vm_ncpus(struct vm *vm);
/* Where a paused vCPU is: its registers and whether it halted, read with
 * KVM_GET_REGS, KVM_GET_SREGS and KVM_GET_MP_STATE. For telling where a
 * guest that stopped answering spins. Fails unless the VM is paused. */
struct vcpu_where {
	uint64_t rip, rsp, rflags, cr0, cr2, cr3, cr4, efer;
	uint16_t cs;
	uint32_t mp_state; /* KVM_MP_STATE_* */
};
int vm_vcpu_where(struct vm *vm, unsigned i, struct vcpu_where *out);
uint64_t vm_mem_size(struct vm *vm);

#endif
