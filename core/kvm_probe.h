/* Can this machine's /dev/kvm run a standard x86-64 Linux guest?
 *
 * The answer comes in two steps so that every case can be tested without
 * the machine that has it: kvm_facts_gather() reads what the host shows (the
 * device, its API version and capabilities, a trial KVM_CREATE_VM, the KVM
 * modules in /sys/module and the CPU's vmx/svm flags), and kvm_decide() is a
 * pure function of those facts.
 *
 * The decision wants positive evidence: a vendor module (kvm_intel with the
 * vmx flag, kvm_amd with svm) beside a /dev/kvm that works. A backend known
 * not to run stock kernels (kvm_pvm, which runs only guest kernels built for
 * PVM) or one it cannot name is refused, unless the facts say the user
 * forced it (VMM_KVM_FORCE=1: a PVM guest kernel, or a backend this check
 * does not know). */
#ifndef VMM_KVM_PROBE_H
#define VMM_KVM_PROBE_H

#include <stdbool.h>

struct kvm_facts {
	bool device_exists;     /* /dev/kvm is there */
	int open_errno;         /* 0: opened read-write; else why not */
	int api_version;        /* KVM_GET_API_VERSION, -1 when not asked */
	const char *missing_cap; /* the first capability the VMM needs that is missing, or NULL */
	bool create_vm_tried;
	int create_vm_errno;    /* 0: KVM_CREATE_VM worked */
	bool mod_kvm_intel, mod_kvm_amd, mod_kvm_pvm; /* /sys/module/NAME */
	bool cpu_vmx, cpu_svm;  /* flags of /proc/cpuinfo */
	bool forced;            /* VMM_KVM_FORCE=1 */
};

struct kvm_verdict {
	bool usable;
	/* "kvm_intel", "kvm_amd", "kvm_pvm", "none" (no usable device) or
	 * "unknown" (a device, but no module this check knows). */
	const char *backend;
	/* Why it cannot run the guest, one line without advice ("/dev/kvm is
	 * kvm-pvm, which runs only PVM guest kernels"); for a usable one, a
	 * description ("kvm_amd on a CPU with svm"). */
	char reason[256];
	/* What to do about it, one clause ("run it in the nested-KVM test host
	 * ..."), or NULL when usable. */
	const char *advice;
};

/* The environment variable that accepts a backend this check refuses when
 * the device itself works (VMM_KVM_FORCE=1). */
#define KVM_FORCE_ENV "VMM_KVM_FORCE"

/* Reads the facts of this machine. With sys_fd and vm_fd non-NULL, the fds
 * of /dev/kvm and of the trial VM are handed to the caller (or -1) instead of
 * closed, so that kvm_create() does not open twice. Never fails: what cannot
 * be read is a fact too. */
void kvm_facts_gather(struct kvm_facts *f, int *sys_fd, int *vm_fd);

/* The decision over the facts: pure, no system call. */
void kvm_decide(const struct kvm_facts *f, struct kvm_verdict *v);

/* gather + decide. */
void kvm_probe(struct kvm_verdict *v);

#endif
