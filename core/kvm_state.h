/* KVM state of the vCPUs and of the VM (in-kernel irqchip, PIT, kvmclock)
 * for local migration: the payloads of the MIG_VCPU and MIG_MACHINE
 * sections (migstream.h).
 *
 * A payload is a sequence of pieces, each
 *
 *   u32 tag      enum kvm_state_tag
 *   u32 len      bytes that follow
 *   len bytes    the piece
 *
 * (integers little-endian). Most pieces are a kernel struct as KVM returns
 * it (source and target run on the same host), so a loader checks that
 * `len` is exactly the size of the struct it expects; the variable ones are
 * described below. A loader refuses a truncated payload, an unknown,
 * missing or repeated tag, and bad counts, with a message naming the vCPU
 * and the piece, and does so before its first ioctl.
 *
 * Both sides must be the same machine: a vCPU's CPUID on the target must
 * be the one it had on the source (set with KVM_SET_CPUID2 before the
 * load), and the xsave size KVM reports must be the same. */
#ifndef VMM_KVM_STATE_H
#define VMM_KVM_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "kvm.h"
#include "migstream.h"

enum kvm_state_tag {
	/* MIG_VCPU */
	KVM_STATE_REGS = 1,   /* struct kvm_regs */
	KVM_STATE_XSAVE,      /* KVM's xsave area: 4096 bytes, or the size
			       * KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) gives */
	KVM_STATE_XCRS,       /* struct kvm_xcrs */
	KVM_STATE_SREGS,      /* struct kvm_sregs */
	KVM_STATE_MSRS,       /* u32 n (<= KVM_STATE_MAX_MSRS), then n x
			       * (u32 index, u64 value) */
	KVM_STATE_MP_STATE,   /* struct kvm_mp_state */
	KVM_STATE_LAPIC,      /* struct kvm_lapic_state */
	KVM_STATE_EVENTS,     /* struct kvm_vcpu_events */
	KVM_STATE_DEBUGREGS,  /* struct kvm_debugregs */
	KVM_STATE_VCPU_TAGS = KVM_STATE_DEBUGREGS,

	/* MIG_MACHINE */
	KVM_STATE_PIC_MASTER = 0x101, /* struct kvm_irqchip, chip_id 0 */
	KVM_STATE_PIC_SLAVE,          /* struct kvm_irqchip, chip_id 1 */
	KVM_STATE_IOAPIC,             /* struct kvm_irqchip, chip_id 2 */
	KVM_STATE_PIT,                /* struct kvm_pit_state2 */
	KVM_STATE_CLOCK,              /* struct kvm_clock_data */
};

#define KVM_STATE_MAX_MSRS 1024
#define KVM_STATE_MAX_XSAVE (1u << 20) /* far above any xsave area */

/* Source, vCPU parked (outside KVM_RUN): appends the vCPU's whole state
 * (every MSR of KVM_GET_MSR_INDEX_LIST that KVM lets us read) to b.
 * kvm_sys_fd is /dev/kvm. -1 with a message naming the vCPU and the piece;
 * b may then hold part of a payload. */
int vcpu_state_save(int vcpu_fd, unsigned id, int kvm_sys_fd, struct mig_buf *b);

/* Target, fresh vCPU (CPUID set with KVM_SET_CPUID2, never run): checks
 * the whole payload first, then restores in the order QEMU uses: regs,
 * xsave, xcrs, sregs, MSRs (all but the TSC deadline), mp_state, LAPIC,
 * the TSC deadline MSR (it takes effect only once the LAPIC timer is in
 * TSC-deadline mode), vCPU events, debug registers. -1 with a message
 * naming the vCPU and the piece ("vcpu 1: msrs: KVM_SET_MSRS set 12 of 40
 * (first refused: 0xc0010015)"). The xsave size is checked against KVM's
 * (KVM_CHECK_EXTENSION on kvm_sys_fd, /dev/kvm). */
int vcpu_state_load(int vcpu_fd, unsigned id, int kvm_sys_fd, const void *payload, size_t len);

/* Source, every vCPU parked: appends the irqchip (PIC master, PIC slave,
 * IOAPIC), the PIT (KVM_GET_PIT2) and the kvmclock (KVM_GET_CLOCK). */
int machine_state_save(struct kvm *k, struct mig_buf *b);

/* Target, after kvm_create (irqchip and PIT exist), before any vCPU runs:
 * checks the whole payload, then sets the three chips, the PIT and the
 * clock. The clock is restored to the value captured at save (the guest
 * sees no time pass while it was frozen). */
int machine_state_load(struct kvm *k, const void *payload, size_t len);

#endif
