/* vCPU and machine KVM state (kvm_state.h). The bad-input cases need no
 * KVM: every payload is refused while it is checked, before any ioctl (the
 * vCPU fd is -1, and no message may come from KVM). The round trips need
 * a usable /dev/kvm (kvm_probe.h; scripts/testhost): a real-mode guest counts in EAX on one VM,
 * its state moves to a second VM over the same guest memory, and the count
 * goes on from where it was. Without one: 77 if the rest passed. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "kvm.h"
#include "kvm_probe.h"
#include "kvm_state.h"
#include "memory.h"
#include "migstream.h"
#include "x86_boot.h"

/* --- building payloads ------------------------------------------------------ */

struct layout {
	uint32_t tag;
	size_t len;
	const void *content; /* NULL: zeros (an MSR piece of zeros has count 0) */
};

static void put_piece(struct mig_buf *b, uint32_t tag, const void *p, size_t n)
{
	mig_put_u32(b, tag);
	mig_put_u32(b, (uint32_t)n);
	if (p) {
		mig_put_bytes(b, p, n);
		return;
	}
	for (size_t i = 0; i < n; i++)
		mig_put_u8(b, 0);
}

static void build(struct mig_buf *b, const struct layout *l, size_t n)
{
	mig_buf_init(b);
	for (size_t i = 0; i < n; i++)
		put_piece(b, l[i].tag, l[i].content, l[i].len);
}

/* A well-formed vCPU payload, piece by piece. */
static size_t vcpu_layout(struct layout *l)
{
	const struct layout def[] = {
		{ KVM_STATE_REGS, sizeof(struct kvm_regs), NULL },
		{ KVM_STATE_XSAVE, 4096, NULL },
		{ KVM_STATE_XCRS, sizeof(struct kvm_xcrs), NULL },
		{ KVM_STATE_SREGS, sizeof(struct kvm_sregs), NULL },
		{ KVM_STATE_MSRS, 4, NULL },
		{ KVM_STATE_MP_STATE, sizeof(struct kvm_mp_state), NULL },
		{ KVM_STATE_LAPIC, sizeof(struct kvm_lapic_state), NULL },
		{ KVM_STATE_EVENTS, sizeof(struct kvm_vcpu_events), NULL },
		{ KVM_STATE_DEBUGREGS, sizeof(struct kvm_debugregs), NULL },
	};
	memcpy(l, def, sizeof(def));
	return sizeof(def) / sizeof(def[0]);
}

static struct kvm_irqchip chip_ids[3] = { { .chip_id = 0 }, { .chip_id = 1 }, { .chip_id = 2 } };

static size_t machine_layout(struct layout *l)
{
	const struct layout def[] = {
		{ KVM_STATE_PIC_MASTER, sizeof(struct kvm_irqchip), &chip_ids[0] },
		{ KVM_STATE_PIC_SLAVE, sizeof(struct kvm_irqchip), &chip_ids[1] },
		{ KVM_STATE_IOAPIC, sizeof(struct kvm_irqchip), &chip_ids[2] },
		{ KVM_STATE_PIT, sizeof(struct kvm_pit_state2), NULL },
		{ KVM_STATE_CLOCK, sizeof(struct kvm_clock_data), NULL },
	};
	memcpy(l, def, sizeof(def));
	return sizeof(def) / sizeof(def[0]);
}

/* Refused while being checked: -1, and no message from KVM or /dev/kvm. */
static bool refused_early(int rc)
{
	const char *e = vmm_error();
	return rc == -1 && !strstr(e, "KVM_") && !strstr(e, "/dev/kvm");
}

static void expect_vcpu_refused(const struct layout *l, size_t n, const char *msg)
{
	struct mig_buf b;
	build(&b, l, n);
	CHECK_EQ(mig_buf_ok(&b, "test"), 0);
	int rc = vcpu_state_load(-1, 1, -1, b.data, b.len);
	CHECK(refused_early(rc));
	CHECK_CONTAINS(vmm_error(), msg);
	mig_buf_free(&b);
}

static struct kvm no_kvm = { .sys_fd = -1, .vm_fd = -1 };

static void expect_machine_refused(const struct layout *l, size_t n, const char *msg)
{
	struct mig_buf b;
	build(&b, l, n);
	int rc = machine_state_load(&no_kvm, b.data, b.len);
	CHECK(refused_early(rc));
	CHECK_CONTAINS(vmm_error(), msg);
	mig_buf_free(&b);
}

/* --- bad input, no KVM needed ---------------------------------------------------- */

/* The well-formed payloads the cases below spoil pass every check: what
 * stops them is the first ioctl (fds -1). */
static void test_well_formed_pass_checks(void)
{
	struct layout l[16];
	struct mig_buf b;
	build(&b, l, vcpu_layout(l));
	CHECK_EQ(vcpu_state_load(-1, 1, -1, b.data, b.len), -1);
	CHECK(!refused_early(-1));
	mig_buf_free(&b);
	build(&b, l, machine_layout(l));
	CHECK_EQ(machine_state_load(&no_kvm, b.data, b.len), -1);
	CHECK_CONTAINS(vmm_error(), "machine: pic master: KVM_SET_IRQCHIP");
	mig_buf_free(&b);
}

static void test_vcpu_truncated(void)
{
	struct layout l[16];
	size_t n = vcpu_layout(l);
	struct mig_buf b;
	build(&b, l, n);
	unsigned bad = 0;
	for (size_t cut = 0; cut < b.len; cut++)
		if (!refused_early(vcpu_state_load(-1, 1, -1, b.data, cut)))
			bad++;
	CHECK_EQ(bad, 0);
	vcpu_state_load(-1, 1, -1, b.data, 0);
	CHECK_CONTAINS(vmm_error(), "vcpu 1: missing piece regs");
	vcpu_state_load(-1, 1, -1, b.data, 6); /* inside the first tag+length */
	CHECK_CONTAINS(vmm_error(), "vcpu 1: truncated");
	vcpu_state_load(-1, 1, -1, b.data, b.len - 1);
	CHECK_CONTAINS(vmm_error(), "vcpu 1: debugregs: truncated: the piece claims 128 bytes, 127 left");
	mig_buf_free(&b);
}

static void test_vcpu_unknown_tag(void)
{
	struct layout l[16];
	size_t n = vcpu_layout(l);
	l[n++] = (struct layout){ 0x77, 4, NULL };
	expect_vcpu_refused(l, n, "vcpu 1: unknown piece tag 0x77");
	l[n - 1].tag = KVM_STATE_IOAPIC; /* a machine piece has no place here */
	expect_vcpu_refused(l, n, "unknown piece tag 0x103");
}

static void test_vcpu_wrong_length(void)
{
	struct layout l[16];
	size_t n = vcpu_layout(l);
	l[0].len -= 8;
	expect_vcpu_refused(l, n, "vcpu 1: regs: 136 bytes, expected 144");
	n = vcpu_layout(l);
	l[6].len += 1;
	expect_vcpu_refused(l, n, "vcpu 1: lapic: 1025 bytes, expected 1024");
	n = vcpu_layout(l);
	l[1].len = 100;
	expect_vcpu_refused(l, n, "vcpu 1: xsave: 100 bytes, expected 4096 to");
	n = vcpu_layout(l);
	l[4].len = 2;
	expect_vcpu_refused(l, n, "vcpu 1: msrs: 2 bytes, too short for a count");
}

static void test_vcpu_duplicate_and_missing(void)
{
	struct layout l[16];
	size_t n = vcpu_layout(l);
	l[n++] = l[0];
	expect_vcpu_refused(l, n, "vcpu 1: regs: duplicate piece");
	n = vcpu_layout(l);
	l[6] = l[--n]; /* lapic replaced by debugregs */
	expect_vcpu_refused(l, n, "vcpu 1: missing piece lapic");
}

static void test_vcpu_msr_counts(void)
{
	struct layout l[16];
	size_t n = vcpu_layout(l);
	size_t big = 4 + 1025 * 12;
	uint8_t *msrs = calloc(1, big);
	CHECK(msrs != NULL);
	if (!msrs)
		return;
	msrs[0] = 0x01, msrs[1] = 0x04; /* 1025 */
	l[4] = (struct layout){ KVM_STATE_MSRS, big, msrs };
	expect_vcpu_refused(l, n, "vcpu 1: msrs: 1025 MSRs, at most 1024");
	msrs[0] = 0xff, msrs[1] = 0xff, msrs[2] = 0xff, msrs[3] = 0xff;
	expect_vcpu_refused(l, n, "4294967295 MSRs, at most 1024");
	msrs[0] = 2, msrs[1] = msrs[2] = msrs[3] = 0;
	l[4].len = 4 + 12;
	expect_vcpu_refused(l, n, "vcpu 1: msrs: 16 bytes for 2 MSRs, expected 28");
	free(msrs);
}

static void test_vcpu_bad_values(void)
{
	struct layout l[16];
	size_t n = vcpu_layout(l);
	struct kvm_mp_state mp = { .mp_state = 99 };
	l[5].content = &mp;
	expect_vcpu_refused(l, n, "vcpu 1: mp_state: unknown state 99");

	n = vcpu_layout(l);
	struct kvm_vcpu_events ev = { .flags = 0x80000000u | KVM_VCPUEVENT_VALID_SHADOW };
	l[7].content = &ev;
	expect_vcpu_refused(l, n, "vcpu 1: events: unknown flags 0x80000000");

	n = vcpu_layout(l);
	struct kvm_xcrs xcrs = { .nr_xcrs = KVM_MAX_XCRS + 1 };
	l[2].content = &xcrs;
	expect_vcpu_refused(l, n, "vcpu 1: xcrs: 17 registers");

	n = vcpu_layout(l);
	struct kvm_debugregs dr = { .flags = 1 };
	l[8].content = &dr;
	expect_vcpu_refused(l, n, "vcpu 1: debugregs: flags 0x1");
}

static void test_machine_bad_input(void)
{
	struct layout l[16];
	size_t n = machine_layout(l);
	struct mig_buf b;
	build(&b, l, n);
	unsigned bad = 0;
	for (size_t cut = 0; cut < b.len; cut++)
		if (!refused_early(machine_state_load(&no_kvm, b.data, cut)))
			bad++;
	CHECK_EQ(bad, 0);
	mig_buf_free(&b);

	l[n++] = (struct layout){ KVM_STATE_REGS, sizeof(struct kvm_regs), NULL };
	expect_machine_refused(l, n, "machine: unknown piece tag 0x1");
	n = machine_layout(l);
	l[3].len--;
	expect_machine_refused(l, n, "machine: pit: ");
	CHECK_CONTAINS(vmm_error(), "expected");
	n = machine_layout(l);
	l[n++] = l[2];
	expect_machine_refused(l, n, "machine: ioapic: duplicate piece");
	n = machine_layout(l) - 1;
	expect_machine_refused(l, n, "machine: missing piece clock");
	n = machine_layout(l);
	l[1].content = &chip_ids[0];
	expect_machine_refused(l, n, "machine: pic slave: chip id 0, expected 1");
}

/* --- round trips, with KVM -------------------------------------------------- */

#define CODE_GPA 0x1000
#define OUT_PORT 0x10
#define MSR_IA32_SYSENTER_CS 0x174
#define APIC_TPR 0x80

struct testvm {
	struct kvm k;
	int vcpu;
	struct kvm_run *run;
};

static void testvm_destroy(struct testvm *t)
{
	if (t->run)
		munmap(t->run, (size_t)t->k.run_mmap_size);
	if (t->vcpu >= 0)
		close(t->vcpu);
	kvm_destroy(&t->k);
}

/* One vCPU with the host's CPUID, over guest memory m. */
static int testvm_create(struct testvm *t, const struct guest_mem *m)
{
	memset(t, 0, sizeof(*t));
	t->vcpu = -1;
	if (kvm_create(&t->k))
		return -1;
	if (kvm_map_memory(&t->k, m))
		goto fail;
	t->vcpu = kvm_create_vcpu(&t->k, 0, &t->run);
	if (t->vcpu < 0)
		goto fail;
	struct kvm_cpuid2 *cpuid = kvm_supported_cpuid(&t->k);
	if (!cpuid)
		goto fail;
	cpuid_setup_vcpu(cpuid, 0, 1);
	int rc = ioctl(t->vcpu, KVM_SET_CPUID2, cpuid);
	free(cpuid);
	if (rc < 0) {
		vmm_fail_errno("KVM_SET_CPUID2");
		goto fail;
	}
	return 0;
fail:
	testvm_destroy(t);
	return -1;
}

/* Real mode at CODE_GPA: inc eax; out 0x10, al; jmp back. */
static int start_guest(struct testvm *t)
{
	struct kvm_sregs sregs;
	if (ioctl(t->vcpu, KVM_GET_SREGS, &sregs) < 0)
		return vmm_fail_errno("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(t->vcpu, KVM_SET_SREGS, &sregs) < 0)
		return vmm_fail_errno("KVM_SET_SREGS");
	struct kvm_regs regs = { .rip = CODE_GPA, .rflags = 2 };
	if (ioctl(t->vcpu, KVM_SET_REGS, &regs) < 0)
		return vmm_fail_errno("KVM_SET_REGS");
	return 0;
}

/* Runs until the guest's next OUT to OUT_PORT; *al is the byte. */
static int run_to_out(struct testvm *t, uint8_t *al)
{
	for (int i = 0; i < 100; i++) {
		if (ioctl(t->vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			return vmm_fail_errno("KVM_RUN");
		}
		struct kvm_run *r = t->run;
		if (r->exit_reason == KVM_EXIT_IO && r->io.port == OUT_PORT && r->io.direction == KVM_EXIT_IO_OUT &&
		    r->io.size == 1) {
			*al = *((uint8_t *)r + r->io.data_offset);
			return 0;
		}
		if (r->exit_reason != KVM_EXIT_INTR)
			return vmm_fail("unexpected exit %u", r->exit_reason);
	}
	return vmm_fail("no OUT in 100 runs");
}

/* Completes the pending OUT inside KVM, as a parked vCPU thread has. */
static int park(struct testvm *t)
{
	t->run->immediate_exit = 1;
	int rc = ioctl(t->vcpu, KVM_RUN, 0);
	int err = errno;
	t->run->immediate_exit = 0;
	if (rc == 0 || err != EINTR)
		return vmm_fail("KVM_RUN with immediate_exit: %d (%s)", rc, strerror(err));
	return 0;
}

static int set_msr(int fd, uint32_t index, uint64_t value)
{
	struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = { { .nmsrs = 1 }, { .index = index, .data = value } };
	return ioctl(fd, KVM_SET_MSRS, &m) == 1 ? 0 : vmm_fail("KVM_SET_MSRS 0x%x", index);
}

static uint64_t get_msr(int fd, uint32_t index)
{
	struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = { { .nmsrs = 1 }, { .index = index } };
	return ioctl(fd, KVM_GET_MSRS, &m) == 1 ? m.e.data : ~0ull;
}

static int set_tpr(int fd, uint32_t tpr)
{
	struct kvm_lapic_state lapic;
	if (ioctl(fd, KVM_GET_LAPIC, &lapic) < 0)
		return vmm_fail_errno("KVM_GET_LAPIC");
	memcpy(lapic.regs + APIC_TPR, &tpr, sizeof(tpr));
	return ioctl(fd, KVM_SET_LAPIC, &lapic) < 0 ? vmm_fail_errno("KVM_SET_LAPIC") : 0;
}

static uint32_t get_tpr(int fd)
{
	struct kvm_lapic_state lapic;
	uint32_t tpr = ~0u;
	if (ioctl(fd, KVM_GET_LAPIC, &lapic) == 0)
		memcpy(&tpr, lapic.regs + APIC_TPR, sizeof(tpr));
	return tpr;
}

static int get_chip(struct kvm *k, unsigned id, struct kvm_irqchip *c)
{
	memset(c, 0, sizeof(*c));
	c->chip_id = id;
	return ioctl(k->vm_fd, KVM_GET_IRQCHIP, c) < 0 ? vmm_fail_errno("KVM_GET_IRQCHIP %u", id) : 0;
}

/* Distinctive machine state on vm: an IOAPIC route, the PIC mask, a PIT count. */
static int mark_machine(struct kvm *k)
{
	struct kvm_irqchip c;
	if (get_chip(k, KVM_IRQCHIP_IOAPIC, &c))
		return -1;
	c.chip.ioapic.redirtbl[5].bits = 0x10035 | (3ull << 56); /* masked, vector 0x35, dest 3 */
	if (ioctl(k->vm_fd, KVM_SET_IRQCHIP, &c) < 0)
		return vmm_fail_errno("KVM_SET_IRQCHIP ioapic");
	if (get_chip(k, KVM_IRQCHIP_PIC_MASTER, &c))
		return -1;
	c.chip.pic.imr = 0xfb;
	if (ioctl(k->vm_fd, KVM_SET_IRQCHIP, &c) < 0)
		return vmm_fail_errno("KVM_SET_IRQCHIP pic");
	struct kvm_pit_state2 pit;
	memset(&pit, 0, sizeof(pit));
	if (ioctl(k->vm_fd, KVM_GET_PIT2, &pit) < 0)
		return vmm_fail_errno("KVM_GET_PIT2");
	pit.channels[0].count = 0x1234;
	pit.channels[0].mode = 2;
	if (ioctl(k->vm_fd, KVM_SET_PIT2, &pit) < 0)
		return vmm_fail_errno("KVM_SET_PIT2");
	return 0;
}

static void check_machine(struct kvm *k, const struct kvm_clock_data *saved)
{
	struct kvm_irqchip c;
	CHECK_EQ(get_chip(k, KVM_IRQCHIP_IOAPIC, &c), 0);
	CHECK_EQ(c.chip.ioapic.redirtbl[5].bits, 0x10035 | (3ull << 56));
	CHECK_EQ(get_chip(k, KVM_IRQCHIP_PIC_MASTER, &c), 0);
	CHECK_EQ(c.chip.pic.imr, 0xfb);
	struct kvm_pit_state2 pit;
	memset(&pit, 0, sizeof(pit));
	CHECK_EQ(ioctl(k->vm_fd, KVM_GET_PIT2, &pit), 0);
	CHECK_EQ(pit.channels[0].count, 0x1234);
	CHECK_EQ(pit.channels[0].mode, 2);
	struct kvm_clock_data clock;
	memset(&clock, 0, sizeof(clock));
	CHECK_EQ(ioctl(k->vm_fd, KVM_GET_CLOCK, &clock), 0);
	CHECK(clock.clock >= saved->clock);
	CHECK(clock.clock < saved->clock + 30000000000ull); /* not 30 s later under TCG */
}

/* Copies payload p into out, piece `tag` replaced by `content` (n bytes,
 * zeros if NULL). */
static void replace_piece(const struct mig_buf *p, uint32_t tag, const void *content, size_t n, struct mig_buf *out)
{
	struct mig_cursor c;
	mig_cursor_init(&c, p->data, p->len, "test payload");
	mig_buf_init(out);
	while (mig_cursor_left(&c) >= 8) {
		uint32_t t = mig_get_u32(&c), len = mig_get_u32(&c);
		const void *data = mig_get_view(&c, len);
		if (!data)
			break;
		if (t == tag)
			put_piece(out, t, content, n);
		else
			put_piece(out, t, data, len);
	}
	CHECK_EQ(mig_cursor_finish(&c), 0);
}

/* Payloads that pass the checks of the format but not KVM's. */
static void check_refused_by_kvm(int vcpu, int sys_fd, const struct mig_buf *good)
{
	struct mig_buf bad;
	replace_piece(good, KVM_STATE_XSAVE, NULL, 4096 + 8192, &bad);
	CHECK_EQ(vcpu_state_load(vcpu, 3, sys_fd, bad.data, bad.len), -1);
	CHECK_CONTAINS(vmm_error(), "vcpu 3: xsave: 12288 bytes, but KVM here uses");
	mig_buf_free(&bad);

	const uint8_t msr[] = { 1, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde, 1, 0, 0, 0, 0, 0, 0, 0 };
	replace_piece(good, KVM_STATE_MSRS, msr, sizeof(msr), &bad);
	CHECK_EQ(vcpu_state_load(vcpu, 3, sys_fd, bad.data, bad.len), -1);
	CHECK_CONTAINS(vmm_error(), "vcpu 3: msrs: KVM_SET_MSRS set 0 of 1 (first refused: 0xdeadbeef)");
	mig_buf_free(&bad);
}

static void check_sregs_equal(const struct kvm_sregs *a, const struct kvm_sregs *b)
{
	CHECK_EQ(a->cr0, b->cr0);
	CHECK_EQ(a->cr3, b->cr3);
	CHECK_EQ(a->cr4, b->cr4);
	CHECK_EQ(a->efer, b->efer);
	CHECK_EQ(a->apic_base, b->apic_base);
	CHECK_EQ(a->cs.base, b->cs.base);
	CHECK_EQ(a->cs.selector, b->cs.selector);
	CHECK_EQ(a->cs.limit, b->cs.limit);
	CHECK_EQ(a->ss.selector, b->ss.selector);
	CHECK_EQ(a->ds.base, b->ds.base);
	CHECK_EQ(a->gdt.base, b->gdt.base);
	CHECK_EQ(a->gdt.limit, b->gdt.limit);
	CHECK_EQ(a->idt.limit, b->idt.limit);
}

static void test_round_trip(void)
{
	struct guest_mem m;
	static const uint8_t code[] = { 0x66, 0x40, 0xe6, OUT_PORT, 0xeb, 0xfa };
	struct testvm a, b;
	struct mig_buf vcpu_buf, machine_buf;
	mig_buf_init(&vcpu_buf);
	mig_buf_init(&machine_buf);
	if (guest_mem_create(&m, 2 << 20, "test-kvm-state") || guest_mem_write(&m, CODE_GPA, code, sizeof(code))) {
		fprintf(stderr, "  guest memory: %s\n", vmm_error());
		CHECK(0);
		return;
	}
	if (testvm_create(&a, &m)) {
		fprintf(stderr, "  VM a: %s\n", vmm_error());
		CHECK(0);
		guest_mem_destroy(&m);
		return;
	}
	CHECK_EQ(start_guest(&a), 0);
	CHECK_EQ(set_msr(a.vcpu, MSR_IA32_SYSENTER_CS, 0x1234), 0);
	CHECK_EQ(set_tpr(a.vcpu, 0x20), 0);
	CHECK_EQ(mark_machine(&a.k), 0);
	uint8_t al = 0;
	for (unsigned i = 1; i <= 10; i++) {
		CHECK_EQ(run_to_out(&a, &al), 0);
		CHECK_EQ(al, i);
	}
	CHECK_EQ(park(&a), 0);
	struct kvm_regs regs_a, regs_b;
	struct kvm_sregs sregs_a, sregs_b;
	CHECK_EQ(ioctl(a.vcpu, KVM_GET_REGS, &regs_a), 0);
	CHECK_EQ(ioctl(a.vcpu, KVM_GET_SREGS, &sregs_a), 0);
	CHECK_EQ(regs_a.rax, 10);
	int rc = vcpu_state_save(a.vcpu, 0, a.k.sys_fd, &vcpu_buf);
	if (rc)
		fprintf(stderr, "  vcpu_state_save: %s\n", vmm_error());
	CHECK_EQ(rc, 0);
	rc = machine_state_save(&a.k, &machine_buf);
	if (rc)
		fprintf(stderr, "  machine_state_save: %s\n", vmm_error());
	CHECK_EQ(rc, 0);
	printf("  vcpu payload %zu bytes, machine payload %zu bytes\n", vcpu_buf.len, machine_buf.len);
	struct kvm_clock_data saved_clock;
	memcpy(&saved_clock, machine_buf.data + machine_buf.len - sizeof(saved_clock), sizeof(saved_clock));
	testvm_destroy(&a);

	if (testvm_create(&b, &m)) {
		fprintf(stderr, "  VM b: %s\n", vmm_error());
		CHECK(0);
		goto out;
	}
	rc = machine_state_load(&b.k, machine_buf.data, machine_buf.len);
	if (rc)
		fprintf(stderr, "  machine_state_load: %s\n", vmm_error());
	CHECK_EQ(rc, 0);
	rc = vcpu_state_load(b.vcpu, 0, b.k.sys_fd, vcpu_buf.data, vcpu_buf.len);
	if (rc)
		fprintf(stderr, "  vcpu_state_load: %s\n", vmm_error());
	CHECK_EQ(rc, 0);
	CHECK_EQ(ioctl(b.vcpu, KVM_GET_REGS, &regs_b), 0);
	CHECK_EQ(ioctl(b.vcpu, KVM_GET_SREGS, &sregs_b), 0);
	CHECK(memcmp(&regs_a, &regs_b, sizeof(regs_a)) == 0);
	check_sregs_equal(&sregs_a, &sregs_b);
	CHECK_EQ(get_msr(b.vcpu, MSR_IA32_SYSENTER_CS), 0x1234);
	CHECK_EQ(get_tpr(b.vcpu), 0x20);
	check_machine(&b.k, &saved_clock);
	for (unsigned i = 11; i <= 13; i++) {
		CHECK_EQ(run_to_out(&b, &al), 0);
		CHECK_EQ(al, i);
	}
	CHECK_EQ(ioctl(b.vcpu, KVM_GET_REGS, &regs_b), 0);
	CHECK_EQ(regs_b.rax, 13);

	/* A real payload cut short is refused before any ioctl. */
	rc = vcpu_state_load(b.vcpu, 0, b.k.sys_fd, vcpu_buf.data, vcpu_buf.len - 1);
	CHECK(refused_early(rc));
	check_refused_by_kvm(b.vcpu, b.k.sys_fd, &vcpu_buf);
	testvm_destroy(&b);
out:
	mig_buf_free(&vcpu_buf);
	mig_buf_free(&machine_buf);
	guest_mem_destroy(&m);
}

int main(void)
{
	RUN(test_well_formed_pass_checks);
	RUN(test_vcpu_truncated);
	RUN(test_vcpu_unknown_tag);
	RUN(test_vcpu_wrong_length);
	RUN(test_vcpu_duplicate_and_missing);
	RUN(test_vcpu_msr_counts);
	RUN(test_vcpu_bad_values);
	RUN(test_machine_bad_input);

	struct kvm_verdict kvm;
	kvm_probe(&kvm);
	if (!kvm.usable) {
		printf("skipping the KVM round trips: %s (run through scripts/testhost)\n", kvm.reason);
		int failed = CHECK_DONE();
		return failed ? failed : 77;
	}
	RUN(test_round_trip);
	return CHECK_DONE();
}
