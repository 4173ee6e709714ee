/* Saving and restoring the KVM state of vCPUs and of the VM (kvm_state.h).
 * Loading goes in two phases: split and check the payload into a struct
 * holding every piece (no ioctl, so any bad input is refused before KVM is
 * touched), then hand the pieces to KVM. */
#include "kvm_state.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "err.h"

#define XSAVE_LEGACY_SIZE 4096 /* sizeof(struct kvm_xsave) without AMX & co */
#define MSR_BATCH 128          /* KVM takes fewer than 256 MSRs per ioctl */
#define MSR_PIECE_ENTRY 12     /* u32 index + u64 value */
#define MSR_INDEX_LIST_MAX 16384

#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_KVM_ASYNC_PF_EN   0x4b564d02 /* after MSR_KVM_ASYNC_PF_INT, as QEMU does */

#define EVENT_FLAGS_KNOWN                                                                          \
	(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR | KVM_VCPUEVENT_VALID_SHADOW | \
	 KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_PAYLOAD | KVM_VCPUEVENT_VALID_TRIPLE_FAULT)

/* --- pieces ------------------------------------------------------------------- */

struct piece_spec {
	uint32_t tag;
	const char *name;
	uint32_t size; /* exact byte length; 0: variable, checked by its parser */
};

struct piece {
	const uint8_t *data;
	uint32_t len;
	bool seen;
};

static const struct piece_spec vcpu_specs[] = {
	{ KVM_STATE_REGS, "regs", sizeof(struct kvm_regs) },
	{ KVM_STATE_XSAVE, "xsave", 0 },
	{ KVM_STATE_XCRS, "xcrs", sizeof(struct kvm_xcrs) },
	{ KVM_STATE_SREGS, "sregs", sizeof(struct kvm_sregs) },
	{ KVM_STATE_MSRS, "msrs", 0 },
	{ KVM_STATE_MP_STATE, "mp_state", sizeof(struct kvm_mp_state) },
	{ KVM_STATE_LAPIC, "lapic", sizeof(struct kvm_lapic_state) },
	{ KVM_STATE_EVENTS, "events", sizeof(struct kvm_vcpu_events) },
	{ KVM_STATE_DEBUGREGS, "debugregs", sizeof(struct kvm_debugregs) },
};
#define NVCPU_SPECS (sizeof(vcpu_specs) / sizeof(vcpu_specs[0]))

static const struct piece_spec machine_specs[] = {
	{ KVM_STATE_PIC_MASTER, "pic master", sizeof(struct kvm_irqchip) },
	{ KVM_STATE_PIC_SLAVE, "pic slave", sizeof(struct kvm_irqchip) },
	{ KVM_STATE_IOAPIC, "ioapic", sizeof(struct kvm_irqchip) },
	{ KVM_STATE_PIT, "pit", sizeof(struct kvm_pit_state2) },
	{ KVM_STATE_CLOCK, "clock", sizeof(struct kvm_clock_data) },
};
#define NMACHINE_SPECS (sizeof(machine_specs) / sizeof(machine_specs[0]))

static void put_piece(struct mig_buf *b, uint32_t tag, const void *p, size_t n)
{
	mig_put_u32(b, tag);
	mig_put_u32(b, (uint32_t)n);
	mig_put_bytes(b, p, n);
}

static int find_spec(const struct piece_spec *specs, size_t n, uint32_t tag)
{
	for (size_t i = 0; i < n; i++)
		if (specs[i].tag == tag)
			return (int)i;
	return -1;
}

/* Cuts the payload into pieces, out[i] for specs[i]: every tag known and
 * present exactly once, every fixed-size piece of its exact size. */
static int split_pieces(const char *who, const void *payload, size_t len, const struct piece_spec *specs,
			size_t nspecs, struct piece *out)
{
	struct mig_cursor c;
	mig_cursor_init(&c, payload, len, who);
	memset(out, 0, nspecs * sizeof(*out));
	while (mig_cursor_left(&c) > 0) {
		size_t at = c.off;
		uint32_t tag = mig_get_u32(&c), n = mig_get_u32(&c);
		if (c.short_read)
			return mig_cursor_finish(&c);
		int i = find_spec(specs, nspecs, tag);
		if (i < 0)
			return vmm_fail("%s: unknown piece tag 0x%x at byte %zu", who, tag, at);
		const struct piece_spec *s = &specs[i];
		if (out[i].seen)
			return vmm_fail("%s: %s: duplicate piece (tag 0x%x)", who, s->name, tag);
		if (n > mig_cursor_left(&c))
			return vmm_fail("%s: %s: truncated: the piece claims %u bytes, %zu left", who, s->name, n,
					mig_cursor_left(&c));
		if (s->size && n != s->size)
			return vmm_fail("%s: %s: %u bytes, expected %u", who, s->name, n, s->size);
		out[i] = (struct piece){ .data = mig_get_view(&c, n), .len = n, .seen = true };
	}
	if (mig_cursor_finish(&c))
		return -1;
	for (size_t i = 0; i < nspecs; i++)
		if (!out[i].seen)
			return vmm_fail("%s: missing piece %s (tag 0x%x)", who, specs[i].name, specs[i].tag);
	return 0;
}

/* A fixed-size piece copied out (the payload need not be aligned). */
static void piece_copy(const struct piece *p, void *dst)
{
	memcpy(dst, p->data, p->len);
}

/* --- xsave size ----------------------------------------------------------- */

/* The size of the xsave area KVM exchanges: KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)
 * if it says more than 4096 (AMX and later), else 4096 (KVM_GET_XSAVE). */
static int xsave_size(int sys_fd)
{
	int r = ioctl(sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	if (r < 0)
		return vmm_fail_errno("KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)");
	return r > XSAVE_LEGACY_SIZE ? r : XSAVE_LEGACY_SIZE;
}

/* --- saving a vCPU ------------------------------------------------------------ */

/* Zeroes buf, fills it with `req`, appends it as piece `tag`. */
static int save_struct(int fd, unsigned long req, const char *req_name, const char *who, uint32_t tag,
		       void *buf, size_t size, struct mig_buf *b)
{
	memset(buf, 0, size);
	if (ioctl(fd, req, buf) < 0)
		return vmm_fail_errno("%s: %s", who, req_name);
	put_piece(b, tag, buf, size);
	return 0;
}

static int save_xsave(int fd, const char *who, int sys_fd, struct mig_buf *b)
{
	int size = xsave_size(sys_fd);
	if (size < 0)
		return vmm_fail_context("%s: xsave", who);
	void *x = calloc(1, (size_t)size);
	if (!x)
		return vmm_fail("%s: xsave: out of memory (%d bytes)", who, size);
	bool big = size > XSAVE_LEGACY_SIZE;
	int rc = ioctl(fd, big ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, x);
	if (rc < 0)
		vmm_fail_errno("%s: xsave: %s", who, big ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE");
	else
		put_piece(b, KVM_STATE_XSAVE, x, (size_t)size);
	free(x);
	return rc < 0 ? -1 : 0;
}

/* KVM_GET_MSR_INDEX_LIST, grown on E2BIG (KVM then says how many). */
static struct kvm_msr_list *msr_index_list(int sys_fd, const char *who)
{
	uint32_t n = 64;
	for (int tries = 0; tries < 8; tries++) {
		struct kvm_msr_list *l = calloc(1, sizeof(*l) + n * sizeof(l->indices[0]));
		if (!l) {
			vmm_fail("%s: msrs: out of memory", who);
			return NULL;
		}
		l->nmsrs = n;
		if (ioctl(sys_fd, KVM_GET_MSR_INDEX_LIST, l) == 0)
			return l;
		int err = errno;
		uint32_t want = l->nmsrs;
		free(l);
		errno = err;
		if (err != E2BIG) {
			vmm_fail_errno("%s: msrs: KVM_GET_MSR_INDEX_LIST", who);
			return NULL;
		}
		if (want <= n || want > MSR_INDEX_LIST_MAX) {
			vmm_fail("%s: msrs: KVM_GET_MSR_INDEX_LIST wants %u entries", who, want);
			return NULL;
		}
		n = want;
	}
	vmm_fail("%s: msrs: KVM_GET_MSR_INDEX_LIST keeps growing", who);
	return NULL;
}

static struct kvm_msrs *alloc_msrs(unsigned n)
{
	return calloc(1, sizeof(struct kvm_msrs) + n * sizeof(struct kvm_msr_entry));
}

/* Reads every MSR of `list` that KVM lets us read into *out. KVM_GET_MSRS
 * stops at the first MSR it cannot read: that one is skipped. */
static int read_msrs(int fd, const char *who, const struct kvm_msr_list *list, struct kvm_msrs *out)
{
	struct kvm_msrs *batch = alloc_msrs(MSR_BATCH);
	if (!batch)
		return vmm_fail("%s: msrs: out of memory", who);
	out->nmsrs = 0;
	uint32_t i = 0;
	while (i < list->nmsrs) {
		uint32_t n = list->nmsrs - i < MSR_BATCH ? list->nmsrs - i : MSR_BATCH;
		memset(batch, 0, sizeof(*batch) + MSR_BATCH * sizeof(batch->entries[0]));
		batch->nmsrs = n;
		for (uint32_t j = 0; j < n; j++)
			batch->entries[j].index = list->indices[i + j];
		int r = ioctl(fd, KVM_GET_MSRS, batch);
		if (r < 0 || (uint32_t)r > n) {
			if (r < 0)
				vmm_fail_errno("%s: msrs: KVM_GET_MSRS of %u from 0x%x", who, n, list->indices[i]);
			else
				vmm_fail("%s: msrs: KVM_GET_MSRS read %d of %u", who, r, n);
			free(batch);
			return -1;
		}
		memcpy(&out->entries[out->nmsrs], batch->entries, (size_t)r * sizeof(batch->entries[0]));
		out->nmsrs += (uint32_t)r;
		i += (uint32_t)r;
		if ((uint32_t)r < n)
			i++; /* unreadable: skip it */
	}
	free(batch);
	return 0;
}

static int save_msrs(int fd, const char *who, int sys_fd, struct mig_buf *b)
{
	struct kvm_msr_list *list = msr_index_list(sys_fd, who);
	if (!list)
		return -1;
	struct kvm_msrs *m = alloc_msrs(list->nmsrs);
	int rc = -1;
	if (!m)
		vmm_fail("%s: msrs: out of memory", who);
	else if (read_msrs(fd, who, list, m) == 0) {
		if (m->nmsrs > KVM_STATE_MAX_MSRS) {
			vmm_fail("%s: msrs: %u readable MSRs, at most %d fit a payload", who, m->nmsrs,
				 KVM_STATE_MAX_MSRS);
		} else {
			mig_put_u32(b, KVM_STATE_MSRS);
			mig_put_u32(b, 4 + m->nmsrs * MSR_PIECE_ENTRY);
			mig_put_u32(b, m->nmsrs);
			for (uint32_t i = 0; i < m->nmsrs; i++) {
				mig_put_u32(b, m->entries[i].index);
				mig_put_u64(b, m->entries[i].data);
			}
			rc = 0;
		}
	}
	free(m);
	free(list);
	return rc;
}

/* Big enough for any fixed-size piece. */
union piece_buf {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_mp_state mp_state;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	struct kvm_debugregs debugregs;
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
};

int vcpu_state_save(int fd, unsigned id, int sys_fd, struct mig_buf *b)
{
	char who[32];
	snprintf(who, sizeof(who), "vcpu %u", id);
	union piece_buf u;
#define SAVE(req, tag, field) save_struct(fd, req, #req, who, tag, &u.field, sizeof(u.field), b)
	if (SAVE(KVM_GET_REGS, KVM_STATE_REGS, regs) || save_xsave(fd, who, sys_fd, b) ||
	    SAVE(KVM_GET_XCRS, KVM_STATE_XCRS, xcrs) || SAVE(KVM_GET_SREGS, KVM_STATE_SREGS, sregs) ||
	    save_msrs(fd, who, sys_fd, b) || SAVE(KVM_GET_MP_STATE, KVM_STATE_MP_STATE, mp_state) ||
	    SAVE(KVM_GET_LAPIC, KVM_STATE_LAPIC, lapic) || SAVE(KVM_GET_VCPU_EVENTS, KVM_STATE_EVENTS, events) ||
	    SAVE(KVM_GET_DEBUGREGS, KVM_STATE_DEBUGREGS, debugregs))
		return -1;
#undef SAVE
	return mig_buf_ok(b, who);
}

/* --- loading a vCPU --------------------------------------------------------- */

/* A vCPU payload, checked and decoded. */
struct vcpu_state {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_mp_state mp_state;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	struct kvm_debugregs debugregs;
	void *xsave;
	uint32_t xsave_len;
	struct kvm_msrs *msrs;      /* restored before the LAPIC */
	struct kvm_msrs *late_msrs; /* the TSC deadline: after the LAPIC */
};

static void vcpu_state_free(struct vcpu_state *s)
{
	free(s->xsave);
	free(s->msrs);
	free(s->late_msrs);
}

/* The piece of `tag` once split_pieces succeeded (all are present). */
static struct piece *vcpu_piece(struct piece *p, uint32_t tag)
{
	return &p[find_spec(vcpu_specs, NVCPU_SPECS, tag)];
}

/* u32 n, then n x (u32 index, u64 value); split into the MSRs set with the
 * rest and the TSC deadline, which waits for the LAPIC. ASYNC_PF_EN goes
 * last of the first group (its interrupt MSR must be set before). */
static int parse_msrs(const char *who, const struct piece *p, struct vcpu_state *s)
{
	struct mig_cursor c;
	mig_cursor_init(&c, p->data, p->len, who);
	uint32_t n = mig_get_u32(&c);
	if (c.short_read)
		return vmm_fail("%s: msrs: %u bytes, too short for a count", who, p->len);
	if (n > KVM_STATE_MAX_MSRS)
		return vmm_fail("%s: msrs: %u MSRs, at most %d", who, n, KVM_STATE_MAX_MSRS);
	if (p->len != 4 + (size_t)n * MSR_PIECE_ENTRY)
		return vmm_fail("%s: msrs: %u bytes for %u MSRs, expected %zu", who, p->len, n,
				4 + (size_t)n * MSR_PIECE_ENTRY);
	s->msrs = alloc_msrs(n);
	s->late_msrs = alloc_msrs(n);
	if (!s->msrs || !s->late_msrs)
		return vmm_fail("%s: msrs: out of memory", who);
	struct kvm_msr_entry async_pf = { 0 };
	bool have_async_pf = false;
	for (uint32_t i = 0; i < n; i++) {
		struct kvm_msr_entry e = { .index = mig_get_u32(&c) };
		e.data = mig_get_u64(&c);
		if (e.index == MSR_IA32_TSC_DEADLINE)
			s->late_msrs->entries[s->late_msrs->nmsrs++] = e;
		else if (e.index == MSR_KVM_ASYNC_PF_EN && !have_async_pf)
			async_pf = e, have_async_pf = true;
		else
			s->msrs->entries[s->msrs->nmsrs++] = e;
	}
	if (have_async_pf)
		s->msrs->entries[s->msrs->nmsrs++] = async_pf;
	return mig_cursor_finish(&c);
}

static int parse_xsave(const char *who, const struct piece *p, struct vcpu_state *s)
{
	if (p->len < XSAVE_LEGACY_SIZE || p->len > KVM_STATE_MAX_XSAVE)
		return vmm_fail("%s: xsave: %u bytes, expected %d to %u", who, p->len, XSAVE_LEGACY_SIZE,
				KVM_STATE_MAX_XSAVE);
	s->xsave = malloc(p->len);
	if (!s->xsave)
		return vmm_fail("%s: xsave: out of memory", who);
	memcpy(s->xsave, p->data, p->len);
	s->xsave_len = p->len;
	return 0;
}

/* Values KVM would refuse anyway, refused here with a better message. */
static int check_vcpu_values(const char *who, const struct vcpu_state *s)
{
	if (s->xcrs.nr_xcrs > KVM_MAX_XCRS || s->xcrs.flags)
		return vmm_fail("%s: xcrs: %u registers, flags 0x%x (at most %d, no flags)", who, s->xcrs.nr_xcrs,
				s->xcrs.flags, KVM_MAX_XCRS);
	if (s->mp_state.mp_state > KVM_MP_STATE_SUSPENDED)
		return vmm_fail("%s: mp_state: unknown state %u", who, s->mp_state.mp_state);
	if (s->events.flags & ~(uint32_t)EVENT_FLAGS_KNOWN)
		return vmm_fail("%s: events: unknown flags 0x%x", who, s->events.flags & ~(uint32_t)EVENT_FLAGS_KNOWN);
	if (s->debugregs.flags)
		return vmm_fail("%s: debugregs: flags 0x%llx (must be 0)", who, (unsigned long long)s->debugregs.flags);
	return 0;
}

/* Everything but the xsave size, which needs KVM: no syscall. */
static int parse_vcpu(const char *who, const void *payload, size_t len, struct vcpu_state *s)
{
	struct piece p[NVCPU_SPECS];
	if (split_pieces(who, payload, len, vcpu_specs, NVCPU_SPECS, p))
		return -1;
	piece_copy(vcpu_piece(p, KVM_STATE_REGS), &s->regs);
	piece_copy(vcpu_piece(p, KVM_STATE_SREGS), &s->sregs);
	piece_copy(vcpu_piece(p, KVM_STATE_XCRS), &s->xcrs);
	piece_copy(vcpu_piece(p, KVM_STATE_MP_STATE), &s->mp_state);
	piece_copy(vcpu_piece(p, KVM_STATE_LAPIC), &s->lapic);
	piece_copy(vcpu_piece(p, KVM_STATE_EVENTS), &s->events);
	piece_copy(vcpu_piece(p, KVM_STATE_DEBUGREGS), &s->debugregs);
	if (parse_xsave(who, vcpu_piece(p, KVM_STATE_XSAVE), s) || parse_msrs(who, vcpu_piece(p, KVM_STATE_MSRS), s))
		return -1;
	return check_vcpu_values(who, s);
}

static int check_xsave_size(int sys_fd, const char *who, const struct vcpu_state *s)
{
	int size = xsave_size(sys_fd);
	if (size < 0)
		return vmm_fail_context("%s: xsave", who);
	if ((uint32_t)size != s->xsave_len)
		return vmm_fail("%s: xsave: %u bytes, but KVM here uses %d (not the same host or guest permissions?)",
				who, s->xsave_len, size);
	return 0;
}

static int set_struct(int fd, unsigned long req, const char *req_name, const char *who, const char *piece,
		      void *buf)
{
	if (ioctl(fd, req, buf) < 0)
		return vmm_fail_errno("%s: %s: %s", who, piece, req_name);
	return 0;
}

/* KVM_SET_MSRS in batches; KVM stops at the first MSR it refuses. */
static int write_msrs(int fd, const char *who, const struct kvm_msrs *m)
{
	struct kvm_msrs *batch = alloc_msrs(MSR_BATCH);
	if (!batch)
		return vmm_fail("%s: msrs: out of memory", who);
	int rc = 0;
	for (uint32_t i = 0; i < m->nmsrs && rc == 0;) {
		uint32_t n = m->nmsrs - i < MSR_BATCH ? m->nmsrs - i : MSR_BATCH;
		batch->nmsrs = n;
		memcpy(batch->entries, &m->entries[i], n * sizeof(batch->entries[0]));
		int r = ioctl(fd, KVM_SET_MSRS, batch);
		if (r < 0)
			rc = vmm_fail_errno("%s: msrs: KVM_SET_MSRS of %u from 0x%x", who, n, m->entries[i].index);
		else if ((uint32_t)r < n)
			rc = vmm_fail("%s: msrs: KVM_SET_MSRS set %u of %u (first refused: 0x%x)", who, i + (uint32_t)r,
				      m->nmsrs, m->entries[i + (uint32_t)r].index);
		else
			i += n;
	}
	free(batch);
	return rc;
}

static int restore_vcpu(int fd, const char *who, struct vcpu_state *s)
{
	/* The kernel reads nmi.pending and sipi_vector only when told to. */
	s->events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
#define SET(req, piece, field) set_struct(fd, req, #req, who, piece, &s->field)
	if (SET(KVM_SET_REGS, "regs", regs) || set_struct(fd, KVM_SET_XSAVE, "KVM_SET_XSAVE", who, "xsave", s->xsave) ||
	    (s->xcrs.nr_xcrs && SET(KVM_SET_XCRS, "xcrs", xcrs)) || SET(KVM_SET_SREGS, "sregs", sregs) ||
	    write_msrs(fd, who, s->msrs) || SET(KVM_SET_MP_STATE, "mp_state", mp_state) ||
	    SET(KVM_SET_LAPIC, "lapic", lapic) || write_msrs(fd, who, s->late_msrs) ||
	    SET(KVM_SET_VCPU_EVENTS, "events", events) || SET(KVM_SET_DEBUGREGS, "debugregs", debugregs))
		return -1;
#undef SET
	return 0;
}

int vcpu_state_load(int fd, unsigned id, int kvm_sys_fd, const void *payload, size_t len)
{
	char who[32];
	snprintf(who, sizeof(who), "vcpu %u", id);
	struct vcpu_state *s = calloc(1, sizeof(*s));
	if (!s)
		return vmm_fail("%s: out of memory", who);
	int rc = parse_vcpu(who, payload, len, s) || check_xsave_size(kvm_sys_fd, who, s) || restore_vcpu(fd, who, s) ? -1 : 0;
	vcpu_state_free(s);
	free(s);
	return rc;
}

/* --- the machine -------------------------------------------------------------- */

static int save_chip(struct kvm *k, uint32_t chip_id, uint32_t tag, struct mig_buf *b)
{
	struct kvm_irqchip chip;
	memset(&chip, 0, sizeof(chip));
	chip.chip_id = chip_id;
	if (ioctl(k->vm_fd, KVM_GET_IRQCHIP, &chip) < 0)
		return vmm_fail_errno("machine: irqchip %u: KVM_GET_IRQCHIP", chip_id);
	put_piece(b, tag, &chip, sizeof(chip));
	return 0;
}

int machine_state_save(struct kvm *k, struct mig_buf *b)
{
	union piece_buf u;
	if (save_chip(k, KVM_IRQCHIP_PIC_MASTER, KVM_STATE_PIC_MASTER, b) ||
	    save_chip(k, KVM_IRQCHIP_PIC_SLAVE, KVM_STATE_PIC_SLAVE, b) ||
	    save_chip(k, KVM_IRQCHIP_IOAPIC, KVM_STATE_IOAPIC, b) ||
	    save_struct(k->vm_fd, KVM_GET_PIT2, "pit: KVM_GET_PIT2", "machine", KVM_STATE_PIT, &u.pit,
			sizeof(u.pit), b) ||
	    save_struct(k->vm_fd, KVM_GET_CLOCK, "clock: KVM_GET_CLOCK", "machine", KVM_STATE_CLOCK, &u.clock,
			sizeof(u.clock), b))
		return -1;
	return mig_buf_ok(b, "machine");
}

struct machine_state {
	struct kvm_irqchip chips[3]; /* indexed by chip id */
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
};

static int parse_machine(const void *payload, size_t len, struct machine_state *s)
{
	struct piece p[NMACHINE_SPECS];
	if (split_pieces("machine", payload, len, machine_specs, NMACHINE_SPECS, p))
		return -1;
	for (uint32_t chip = 0; chip < 3; chip++) {
		piece_copy(&p[chip], &s->chips[chip]);
		if (s->chips[chip].chip_id != chip)
			return vmm_fail("machine: %s: chip id %u, expected %u", machine_specs[chip].name,
					s->chips[chip].chip_id, chip);
	}
	piece_copy(&p[3], &s->pit);
	piece_copy(&p[4], &s->clock);
	return 0;
}

static int restore_machine(struct kvm *k, struct machine_state *s)
{
	for (unsigned chip = 0; chip < 3; chip++)
		if (ioctl(k->vm_fd, KVM_SET_IRQCHIP, &s->chips[chip]) < 0)
			return vmm_fail_errno("machine: %s: KVM_SET_IRQCHIP", machine_specs[chip].name);
	if (ioctl(k->vm_fd, KVM_SET_PIT2, &s->pit) < 0)
		return vmm_fail_errno("machine: pit: KVM_SET_PIT2");
	/* The value as captured, no flags: KVM_CLOCK_REALTIME would advance
	 * the clock by the time that passed since, and older kernels refuse
	 * any flag. */
	struct kvm_clock_data clock = { .clock = s->clock.clock };
	if (ioctl(k->vm_fd, KVM_SET_CLOCK, &clock) < 0)
		return vmm_fail_errno("machine: clock: KVM_SET_CLOCK 0x%llx", (unsigned long long)clock.clock);
	return 0;
}

int machine_state_load(struct kvm *k, const void *payload, size_t len)
{
	struct machine_state s;
	memset(&s, 0, sizeof(s));
	if (parse_machine(payload, len, &s))
		return -1;
	return restore_machine(k, &s);
}
