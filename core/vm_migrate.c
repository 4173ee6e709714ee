#include "vm_migrate.h"

#include <errno.h>
#include <link.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "device.h"
#include "err.h"
#include "kvm_state.h"
#include "migstream.h"
#include "vm_priv.h"
#include "x86_boot.h"

static int timeout_of(int ms)
{
	return ms > 0 ? ms : MIGRATE_DEFAULT_TIMEOUT_MS;
}

/* Sends a section whose payload is a mig_buf (freed here). */
static int send_buf(struct mig_conn *c, uint32_t type, uint32_t id, struct mig_buf *b, const int *fds,
		    unsigned nfds)
{
	int rc = mig_buf_ok(b, mig_type_name(type));
	if (rc == 0)
		rc = mig_send(c, type, id, b->data, b->len, fds, nfds);
	mig_buf_free(b);
	return rc;
}

/* ---- source ------------------------------------------------------------- */

struct migrate_source {
	struct vm *vm;
	struct mig_conn c;
	struct migrate_options o;
	struct migrate_report r;
	struct mig_hello hello; /* the target's pid, flags, the versions it loads */
	struct machine_desc d;
	int pidfd; /* the target's process (HELLO's pid): the late rollback kills it */
	bool previews; /* the target loads MIG_PREVIEW (MIG_FEATURE_PREVIEW) */
	bool frozen, was_running;
	unsigned quiesced; /* devices quiesced so far */
};

static void free_source(struct migrate_source *s)
{
	if (s->pidfd >= 0)
		close(s->pidfd);
	free(s);
}

static int receive_hello(struct migrate_source *s)
{
	struct mig_section sec;
	if (mig_expect(&s->c, MIG_HELLO, &sec))
		return -1;
	int rc = mig_hello_decode(sec.payload, sec.len, &s->hello);
	mig_section_free(&sec);
	if (rc)
		return -1;
	s->r.peer_pid = (pid_t)s->hello.pid;
	for (unsigned i = 0; i < s->hello.nkinds; i++) {
		const struct mig_kind_versions *k = &s->hello.kinds[i];
		if (!strcmp(k->kind, MIG_FEATURE_PREVIEW) && k->min <= 1 && k->max >= 1)
			s->previews = true;
	}
	/* The process that will run the VM: if it fails after COMMIT, it is
	 * killed before the VM may resume here, so it must exist now. */
	if ((s->pidfd = pidfd_open(s->r.peer_pid, 0)) < 0)
		return vmm_fail_errno("hello: target pid %u: pidfd_open", s->hello.pid);
	return 0;
}

/* The version to write device d's state in: the newest that both ends
 * know; -1 with one line if there is none. */
static int pick_version(const struct migrate_source *s, const struct device *d, uint16_t *out)
{
	const struct device_type *t = d->type;
	*out = 0;
	if (!t->state_version)
		return 0;
	for (unsigned i = 0; i < s->hello.nkinds; i++) {
		const struct mig_kind_versions *v = &s->hello.kinds[i];
		if (strcmp(v->kind, t->kind))
			continue;
		uint16_t best = t->state_version < v->max ? t->state_version : v->max;
		if (best < v->min || best < t->state_min_save)
			return vmm_fail("%s: the target loads %s state versions %u..%u, this build writes %u..%u",
					d->name, t->kind, v->min, v->max, t->state_min_save, t->state_version);
		*out = best;
		return 0;
	}
	return vmm_fail("%s: the target does not know devices of kind %s", d->name, t->kind);
}

static int send_description(struct migrate_source *s)
{
	struct vm *vm = s->vm;
	struct machine_desc *d = &s->d;
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", vm->name);
	d->mem_size = vm->mem_size;
	d->ncpus = vm->ncpus;
	snprintf(d->board, sizeof(d->board), "%s", vm->registry->board);
	if (!vm->cpuid || vm->cpuid->nent > MACHINE_MAX_CPUID)
		return vmm_fail("%s: %s CPUID table to describe", vm->name, vm->cpuid ? "too large a" : "no");
	d->ncpuid = vm->cpuid->nent;
	for (unsigned i = 0; i < d->ncpuid; i++) {
		const struct kvm_cpuid_entry2 *e = &vm->cpuid->entries[i];
		d->cpuid[i] = (struct machine_cpuid){ e->function, e->index, e->flags, e->eax, e->ebx, e->ecx, e->edx };
	}
	if (vm->ndevices > MACHINE_MAX_DEVICES)
		return vmm_fail("%s: %u devices, a migration carries at most %d", vm->name, vm->ndevices,
				MACHINE_MAX_DEVICES);
	d->ndevices = vm->ndevices;
	bool transfer = s->o.backend_transfer && (s->hello.flags & MIG_HELLO_BACKEND_TRANSFER);
	for (unsigned i = 0; i < vm->ndevices; i++) {
		struct device *dev = vm->devices[i];
		struct machine_device *m = &d->devices[i];
		m->type = dev->type;
		snprintf(m->name, sizeof(m->name), "%s", dev->name);
		m->config = dev->config; /* borrowed: d is never freed */
		m->transfer_allowed = dev->backend_transfer;
		bool allowed = s->o.device[i] ? s->o.device[i] > 0 : dev->backend_transfer;
		m->transfer = transfer && dev->type->backend_fds && allowed;
		if (pick_version(s, dev, &m->state_version))
			return -1;
		m->preview = s->previews && dev->type->state_version && dev->type->preview_save;
	}
	void *blob;
	size_t len;
	if (machine_to_fdt(d, vm->registry, &blob, &len))
		return -1;
	int rc = mig_send(&s->c, MIG_DESCRIPTION, 0, blob, len, NULL, 0);
	free(blob);
	return rc;
}

static int receive_plan(struct migrate_source *s)
{
	struct mig_section sec;
	if (mig_expect(&s->c, MIG_PLAN, &sec))
		return -1;
	struct mig_cursor cur;
	mig_cursor_init(&cur, sec.payload, sec.len, "plan");
	uint32_t n = mig_get_u32(&cur);
	int rc = 0;
	if (n != s->d.ndevices)
		rc = vmm_fail("plan: %u devices, the description has %u", n, s->d.ndevices);
	for (unsigned i = 0; rc == 0 && i < n; i++) {
		uint8_t take = mig_get_u8(&cur);
		if (take > 1 || (take && !s->d.devices[i].transfer))
			rc = vmm_fail("plan: %s: takes a backend that was not offered (%u)", s->d.devices[i].name,
				      take);
		s->r.transferred[i] = take == 1;
	}
	if (rc == 0)
		rc = mig_cursor_finish(&cur);
	mig_section_free(&sec);
	s->r.ndevices = s->d.ndevices;
	return rc;
}

static int send_memory_and_backends(struct migrate_source *s)
{
	struct mig_buf b;
	mig_buf_init(&b);
	mig_put_u64(&b, s->vm->mem.size);
	if (send_buf(&s->c, MIG_MEMORY, 0, &b, &s->vm->mem.fd, 1))
		return -1;
	for (unsigned i = 0; i < s->vm->ndevices; i++) {
		if (!s->r.transferred[i])
			continue;
		struct device *d = s->vm->devices[i];
		int fds[MIG_MAX_FDS];
		unsigned nfds = d->type->backend_fds(d, fds, MIG_MAX_FDS);
		if (nfds > MIG_MAX_FDS)
			return vmm_fail("%s: %u backend fds, a section carries at most %d", d->name, nfds, MIG_MAX_FDS);
		mig_buf_init(&b);
		if (d->type->backend_save && d->type->backend_save(d, &b)) {
			mig_buf_free(&b);
			return -1;
		}
		if (send_buf(&s->c, MIG_BACKEND, i, &b, fds, nfds))
			return -1;
	}
	return 0;
}

/* Before the freeze: what the target may set up ahead (device.h). */
static int send_previews(struct migrate_source *s)
{
	for (unsigned i = 0; i < s->vm->ndevices; i++) {
		if (!s->d.devices[i].preview)
			continue;
		struct device *d = s->vm->devices[i];
		struct mig_buf b;
		mig_buf_init(&b);
		if (d->type->preview_save(d, s->d.devices[i].state_version, &b)) {
			mig_buf_free(&b);
			return vmm_fail_context("%s: preview", d->name);
		}
		if (send_buf(&s->c, MIG_PREVIEW, i, &b, NULL, 0))
			return -1;
	}
	return 0;
}

static int expect_empty(struct mig_conn *c, uint32_t type)
{
	struct mig_section sec;
	if (mig_expect(c, type, &sec))
		return -1;
	int rc = sec.len ? vmm_fail("%s section: %u unexpected bytes", mig_type_name(type), sec.len) : 0;
	mig_section_free(&sec);
	return rc;
}

static int freeze(struct migrate_source *s)
{
	struct vm *vm = s->vm;
	s->was_running = vm->state == VM_RUNNING;
	if (s->was_running && vm_pause(vm))
		return -1;
	s->frozen = true;
	s->r.freeze_ns = monotonic_ns();
	for (; s->quiesced < vm->ndevices; s->quiesced++) {
		struct device *d = vm->devices[s->quiesced];
		d->backend_leaving = s->r.transferred[s->quiesced];
		if (d->type->quiesce && d->type->quiesce(d)) {
			d->backend_leaving = false; /* a failed quiesce undoes itself */
			return -1;
		}
	}
	return 0;
}

/* Undoes freeze(); the VM runs as before. */
static void thaw(struct migrate_source *s)
{
	struct vm *vm = s->vm;
	while (s->quiesced > 0) {
		struct device *d = vm->devices[--s->quiesced];
		if (d->type->unquiesce && d->type->unquiesce(d))
			fprintf(stderr, "vmm: %s: rollback: %s\n", vm->name, vmm_error());
		d->backend_leaving = false;
	}
	if (s->frozen && s->was_running && vm_resume(vm))
		fprintf(stderr, "vmm: %s: rollback: %s\n", vm->name, vmm_error());
	s->frozen = false;
}

/* Adds a saved section (its payload b, freed here) to the batch. */
static int batch_saved(struct mig_buf *batch, uint32_t type, uint32_t id, int rc, struct mig_buf *b)
{
	if (rc == 0)
		rc = mig_buf_ok(b, mig_type_name(type)) || mig_batch_add(batch, type, id, b->data, b->len) ? -1 : 0;
	mig_buf_free(b);
	return rc;
}

/* The whole state, FREEZE to END, saved into one batch and sent with one
 * write: the target is woken once, and loads it all in one go. */
static int send_state(struct migrate_source *s)
{
	struct vm *vm = s->vm;
	struct mig_buf batch, b;
	mig_buf_init(&batch);
	mig_buf_init(&b);
	mig_put_u64(&b, s->r.freeze_ns);
	int rc = batch_saved(&batch, MIG_FREEZE, 0, 0, &b);
	for (unsigned i = 0; rc == 0 && i < vm->ncpus; i++) {
		mig_buf_init(&b);
		rc = batch_saved(&batch, MIG_VCPU, i, vcpu_state_save(vm->vcpus.vcpus[i].fd, i, vm->kvm.sys_fd, &b),
				 &b);
	}
	if (rc == 0) {
		mig_buf_init(&b);
		rc = batch_saved(&batch, MIG_MACHINE, 0, machine_state_save(&vm->kvm, &b), &b);
	}
	for (unsigned i = 0; rc == 0 && i < vm->ndevices; i++) {
		struct device *d = vm->devices[i];
		if (!d->type->save)
			continue;
		uint16_t version = s->d.devices[i].state_version;
		mig_buf_init(&b);
		mig_put_u16(&b, version);
		if (batch_saved(&batch, MIG_DEVICE, i, d->type->save(d, version, &b), &b))
			rc = vmm_fail_context("%s", d->name);
	}
	if (rc == 0)
		rc = mig_batch_add(&batch, MIG_END, 0, NULL, 0);
	s->r.sent_ns = monotonic_ns();
	if (rc == 0)
		return mig_batch_send(&s->c, &batch);
	mig_buf_free(&batch);
	return -1;
}

/* After COMMIT: the VM belongs to the target. The vCPUs stop for good and
 * the devices go at once, so nothing here reads a TAP or writes guest
 * memory again; closing our copies of the TAP fds leaves the target's. */
static void give_up(struct migrate_source *s)
{
	struct vm *vm = s->vm;
	char why[64];
	snprintf(why, sizeof(why), "migrated to process %d", (int)s->r.peer_pid);
	vm_stop_with(vm, why);
	vm_drop_devices(vm);
}

static int check_migratable(struct vm *vm)
{
	if (vm->state != VM_RUNNING && vm->state != VM_PAUSED)
		return vmm_fail("%s: cannot migrate: the VM is %s", vm->name, vm_state_name(vm->state));
	if (vm->incoming_loaded)
		return vmm_fail("%s: cannot migrate: the VM has not run here yet", vm->name);
	return 0;
}

/* Tells the target why, undoes the freeze; the VM runs on. Frees s. */
static int fail_source(struct migrate_source *s)
{
	char msg[512];
	snprintf(msg, sizeof(msg), "%s", vmm_error());
	mig_send_error(&s->c, msg);
	thaw(s);
	vmm_fail("%s: migration failed, the VM runs on here: %s", s->vm->name, msg);
	free_source(s);
	return -1;
}

struct migrate_source *migrate_source_begin(struct vm *vm, int fd, const struct migrate_options *o)
{
	if (check_migratable(vm))
		return NULL;
	struct migrate_source *s = calloc(1, sizeof(*s));
	if (!s) {
		vmm_fail("out of memory");
		return NULL;
	}
	*s = (struct migrate_source){
		.vm = vm, .c = { fd, timeout_of(o->timeout_ms), "target" }, .o = *o, .pidfd = -1
	};
	if (receive_hello(s) || send_description(s) || receive_plan(s) || send_memory_and_backends(s) ||
	    send_previews(s)) {
		fail_source(s);
		return NULL;
	}
	return s;
}

int migrate_source_fd(const struct migrate_source *s)
{
	return s->c.fd;
}

void migrate_source_cancel(struct migrate_source *s, const char *why)
{
	if (s) {
		vmm_fail("%s", why);
		fail_source(s);
	}
}

/* Whether the target sent MIG_STARTING before it went: everything it sent
 * is in the socket now, so nothing here waits. */
static bool said_starting(struct migrate_source *s)
{
	struct mig_conn c = s->c;
	c.timeout_ms = 0;
	struct mig_section sec;
	while (mig_recv(&c, &sec) == 0) {
		bool starting = sec.type == MIG_STARTING;
		mig_section_free(&sec);
		if (starting)
			return true;
	}
	return false;
}

/* The target failed between COMMIT and MIG_STARTING (`why`). Its vCPUs
 * have not run, but it holds the guest RAM and may hold the backends: the
 * VM resumes here only once the target is certainly gone, never on a mere
 * timeout. -1 always; the message says where the VM is. */
static int fail_after_commit(struct migrate_source *s, struct migrate_report *r)
{
	char why[512];
	snprintf(why, sizeof(why), "%s", vmm_error());
	struct vm *vm = s->vm;
	int pid = (int)s->r.peer_pid;
	r->after_commit = true;
	if (pidfd_send_signal(s->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH) {
		vmm_fail_errno("%s: migration failed after the commit point (%s), and killing target process %d failed; "
			       "the VM stays paused here: kill it, then vm:resume()", vm->name, why, pid);
		free_source(s);
		return -1;
	}
	struct pollfd p = { .fd = s->pidfd, .events = POLLIN };
	int n;
	while ((n = poll(&p, 1, s->c.timeout_ms)) < 0 && errno == EINTR)
		;
	if (n != 1) {
		vmm_fail("%s: migration failed after the commit point (%s); target process %d did not exit within %d ms "
			 "of SIGKILL, so the VM stays paused here: vm:resume() once it is gone", vm->name, why, pid,
			 s->c.timeout_ms);
		free_source(s);
		return -1;
	}
	if (said_starting(s)) {
		/* It may have run the guest: this copy of the state is stale. */
		give_up(s);
		vmm_fail("%s: the target process %d started the VM and then died (%s); the VM is lost", vm->name, pid,
			 why);
		free_source(s);
		return -1;
	}
	thaw(s);
	vmm_fail("%s: migration failed after the commit point, the VM runs on here (target process %d killed): %s",
		 vm->name, pid, why);
	free_source(s);
	return -1;
}

int migrate_source_finish(struct migrate_source *s, struct migrate_report *r)
{
	memset(r, 0, sizeof(*r));
	if (check_migratable(s->vm) || expect_empty(&s->c, MIG_PREPARED) || freeze(s) || send_state(s) ||
	    expect_empty(&s->c, MIG_READY))
		return fail_source(s);
	s->r.loaded_ns = monotonic_ns();
	if (mig_send(&s->c, MIG_COMMIT, 0, NULL, 0, NULL, 0))
		return fail_source(s);
	s->r.commit_ns = monotonic_ns();
	/* Still paused, devices and backends kept, until the target starts. */
	if (expect_empty(&s->c, MIG_STARTING))
		return fail_after_commit(s, r);
	give_up(s);
	*r = s->r;
	free_source(s);
	return 0;
}

int migrate_send(struct vm *vm, int fd, const struct migrate_options *o, struct migrate_report *r)
{
	struct migrate_source *s = migrate_source_begin(vm, fd, o);
	if (!s) {
		memset(r, 0, sizeof(*r));
		return -1;
	}
	return migrate_source_finish(s, r);
}

/* ---- target ------------------------------------------------------------- */

struct migrate_target {
	struct mig_conn c;
	bool offered;
	const struct device_registry *registry;
	struct machine_desc d;
};

struct migrate_target *migrate_target_new(int fd, int timeout_ms)
{
	struct migrate_target *t = calloc(1, sizeof(*t));
	if (!t) {
		vmm_fail("out of memory");
		return NULL;
	}
	t->c = (struct mig_conn){ fd, timeout_of(timeout_ms), "source" };
	return t;
}

void migrate_target_free(struct migrate_target *t)
{
	if (t)
		machine_desc_free(&t->d);
	free(t);
}

/* The state versions this build loads, of every type that has state. */
static int hello_of(const struct device_registry *r, bool backend_transfer, struct mig_hello *h)
{
	memset(h, 0, sizeof(*h));
	h->pid = (uint32_t)getpid();
	h->flags = backend_transfer ? MIG_HELLO_BACKEND_TRANSFER : 0;
	const struct device_type *const *lists[] = { r->board_types, r->types };
	for (unsigned l = 0; l < 2; l++)
		for (const struct device_type *const *t = lists[l]; *t; t++) {
			if (!(*t)->state_version)
				continue;
			if (h->nkinds == MIG_HELLO_MAX_KINDS || strlen((*t)->kind) > MIG_KIND_MAX)
				return vmm_fail("hello: device kind %s: more than %d kinds, or a name over %d bytes",
						(*t)->kind, MIG_HELLO_MAX_KINDS, MIG_KIND_MAX);
			struct mig_kind_versions *k = &h->kinds[h->nkinds++];
			snprintf(k->kind, sizeof(k->kind), "%s", (*t)->kind);
			k->min = (*t)->state_min_load;
			k->max = (*t)->state_version;
		}
	if (h->nkinds == MIG_HELLO_MAX_KINDS)
		return vmm_fail("hello: no room for the feature %s", MIG_FEATURE_PREVIEW);
	h->kinds[h->nkinds++] = (struct mig_kind_versions){ MIG_FEATURE_PREVIEW, 1, 1 };
	return 0;
}

int migrate_offer(struct migrate_target *t, bool backend_transfer, const struct device_registry *r,
		  const struct machine_desc **d)
{
	if (t->offered)
		return vmm_fail("migration: the description was already received");
	struct mig_hello h;
	if (hello_of(r, backend_transfer, &h))
		return -1;
	struct mig_buf b;
	mig_buf_init(&b);
	mig_hello_encode(&b, &h);
	if (send_buf(&t->c, MIG_HELLO, 0, &b, NULL, 0))
		return -1;
	struct mig_section sec;
	if (mig_expect(&t->c, MIG_DESCRIPTION, &sec))
		return -1;
	machine_desc_free(&t->d);
	int rc = machine_from_fdt(sec.payload, sec.len, r, &t->d);
	mig_section_free(&sec);
	if (rc)
		return -1;
	t->registry = r;
	t->offered = true;
	*d = &t->d;
	return 0;
}

/* What the target holds while it receives. */
struct incoming {
	struct migrate_target *t;
	const struct migrate_plan *p;
	struct migrate_report *r;
	struct vm *vm;
	struct mig_section memory;
	struct mig_section backend[MACHINE_MAX_DEVICES];
	bool got_vcpu[X86_MAX_VCPUS], got_machine;
	bool got_device[MACHINE_MAX_DEVICES];
};

static int send_plan(struct incoming *in)
{
	const struct machine_desc *d = &in->t->d;
	struct mig_buf b;
	mig_buf_init(&b);
	mig_put_u32(&b, d->ndevices);
	for (unsigned i = 0; i < d->ndevices; i++) {
		const struct machine_device *m = &d->devices[i];
		bool take = in->p->take_backend[i];
		int rc = 0;
		if (take && !m->transfer)
			rc = vmm_fail("%s: its backend was not offered", m->name);
		else if (!take && device_backend_field(m->type) && !in->p->backend[i][0])
			rc = vmm_fail("%s: no %s named to replace the backend", m->name,
				      m->type->backend_label ? m->type->backend_label : "backend");
		if (rc) {
			mig_buf_free(&b);
			return -1;
		}
		mig_put_u8(&b, take);
		in->r->transferred[i] = take;
	}
	in->r->ndevices = d->ndevices;
	return send_buf(&in->t->c, MIG_PLAN, 0, &b, NULL, 0);
}

static int receive_memory(struct incoming *in)
{
	struct mig_section *s = &in->memory;
	if (mig_expect(&in->t->c, MIG_MEMORY, s))
		return -1;
	struct mig_cursor cur;
	mig_cursor_init(&cur, s->payload, s->len, "memory");
	uint64_t size = mig_get_u64(&cur);
	if (mig_cursor_finish(&cur))
		return -1;
	if (size != in->t->d.mem_size)
		return vmm_fail("memory section: %llu bytes, the description says %llu", (unsigned long long)size,
				(unsigned long long)in->t->d.mem_size);
	if (s->nfds != 1)
		return vmm_fail("memory section: %u fds, expected the guest RAM memfd", s->nfds);
	return 0;
}

static int receive_backends(struct incoming *in)
{
	const struct machine_desc *d = &in->t->d;
	for (unsigned i = 0; i < d->ndevices; i++) {
		if (!in->p->take_backend[i])
			continue;
		struct mig_section *s = &in->backend[i];
		if (mig_expect(&in->t->c, MIG_BACKEND, s))
			return -1;
		if (s->id != i)
			return vmm_fail("backend section for device %u, expected %u (%s)", s->id, i, d->devices[i].name);
	}
	return 0;
}

/* Device i of the description, beyond the board's: created from its
 * configuration, with the source's backend or the one the plan names. */
static int add_device(struct incoming *in, unsigned i)
{
	const struct machine_device *m = &in->t->d.devices[i];
	const struct device_type *t = m->type;
	bool take = in->p->take_backend[i];
	uint8_t config[t->config_size ? t->config_size : 1];
	memcpy(config, m->config, t->config_size);
	const struct dev_field *bf = device_backend_field(t);
	if (!take && bf) {
		if (strlen(in->p->backend[i]) >= bf->size)
			return vmm_fail("%s: %s \"%s\" is too long", m->name, bf->name, in->p->backend[i]);
		snprintf((char *)config + bf->offset, bf->size, "%s", in->p->backend[i]);
	}
	struct mig_section *b = &in->backend[i];
	struct dev_backend backend = { b->fds, b->nfds, b->payload, b->len };
	if (vm_add_device(in->vm, t, m->name, config, m->transfer_allowed, take ? &backend : NULL))
		return -1;
	if (take) /* the device owns them now */
		for (unsigned q = 0; q < b->nfds; q++)
			b->fds[q] = -1;
	return 0;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

/* dl_iterate_phdr callback: maps this program's and its libraries'
 * loaded segments in the page tables. */
static int populate_object(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	(void)data;
	long page = sysconf(_SC_PAGESIZE);
	for (unsigned i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || page <= 0)
			continue;
		uintptr_t start = (info->dlpi_addr + ph->p_vaddr) & ~(uintptr_t)(page - 1);
		uintptr_t end = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
		/* Advisory: a kernel before 5.14 lacks it, and the code faults in. */
		(void)madvise((void *)start, end - start, MADV_POPULATE_READ);
	}
	return 0;
}

/* Before the freeze, the target does once what it does in it, so that the
 * freeze finds its code and KVM's paths warm: maps its code in its page
 * tables, and saves and loads the (fresh) state of every vCPU and of the
 * machine, which the source's state then overwrites. */
static int warm_up(struct vm *vm)
{
	dl_iterate_phdr(populate_object, NULL);
	struct mig_buf b;
	for (unsigned i = 0; i < vm->ncpus; i++) {
		int fd = vm->vcpus.vcpus[i].fd;
		mig_buf_init(&b);
		int rc = vcpu_state_save(fd, i, vm->kvm.sys_fd, &b) || mig_buf_ok(&b, "vcpu") ||
			 vcpu_state_load(fd, i, vm->kvm.sys_fd, b.data, b.len) ? -1 : 0;
		mig_buf_free(&b);
		if (rc)
			return vmm_fail_context("%s: warming up", vm->name);
	}
	mig_buf_init(&b);
	int rc = machine_state_save(&vm->kvm, &b) || mig_buf_ok(&b, "machine") ||
		 machine_state_load(&vm->kvm, b.data, b.len) ? -1 : 0;
	mig_buf_free(&b);
	return rc ? vmm_fail_context("%s: warming up", vm->name) : 0;
}

static int build_vm(struct incoming *in, const struct vm_config *local)
{
	const struct machine_desc *d = &in->t->d;
	struct vm_config cfg = {
		.name = d->name,
		.mem_size = d->mem_size,
		.ncpus = d->ncpus,
		.console_fd = local->console_fd,
		.loop = local->loop,
		.devices = in->t->registry,
		.incoming = true,
	};
	in->vm = vm_new(&cfg);
	if (!in->vm)
		return -1;
	/* The board made the same devices as the source's (the description
	 * was checked against it); the rest come from their nodes. */
	if (in->vm->nboard > d->ndevices)
		return vmm_fail("the description has %u devices, the board alone %u", d->ndevices, in->vm->nboard);
	for (unsigned i = in->vm->nboard; i < d->ndevices; i++)
		if (add_device(in, i))
			return -1;
	if (vm_set_cpuid(in->vm, d->cpuid, d->ncpuid) || vm_prepare_incoming(in->vm, in->memory.fds[0]))
		return -1;
	in->memory.fds[0] = -1; /* the VM's now */
	return warm_up(in->vm);
}

/* The previews the description announced, in device order, each loaded
 * into its device as it comes (before the freeze). */
static int receive_previews(struct incoming *in)
{
	const struct machine_desc *d = &in->t->d;
	for (unsigned i = 0; i < d->ndevices; i++) {
		if (!d->devices[i].preview)
			continue;
		struct mig_section sec;
		if (mig_expect(&in->t->c, MIG_PREVIEW, &sec))
			return -1;
		struct device *dev = in->vm->devices[i];
		int rc = 0;
		if (sec.id != i)
			rc = vmm_fail("preview section for device %u, expected %u (%s)", sec.id, i, dev->name);
		else if (sec.nfds)
			rc = vmm_fail("preview section for %s: carries %u unexpected fds", dev->name, sec.nfds);
		else if (dev->type->preview_load(dev, d->devices[i].state_version, sec.payload, sec.len))
			rc = vmm_fail_context("%s: preview", dev->name);
		mig_section_free(&sec);
		if (rc)
			return -1;
	}
	return 0;
}

/* Marks section type/id as seen; refuses a repeat or an id out of range. */
static int seen_once(bool *seen, unsigned n, uint32_t id, const char *what)
{
	if (id >= n)
		return vmm_fail("%s section for %u: out of range (%u)", what, id, n);
	if (seen[id])
		return vmm_fail("%s section for %u: received twice", what, id);
	seen[id] = true;
	return 0;
}

static int load_device(struct incoming *in, const struct mig_section *s)
{
	struct vm *vm = in->vm;
	if (seen_once(in->got_device, vm->ndevices, s->id, "device"))
		return -1;
	struct device *d = vm->devices[s->id];
	if (!d->type->load)
		return vmm_fail("device section for %u (%s): a %s has no state", s->id, d->name, d->type->kind);
	struct mig_cursor cur;
	mig_cursor_init(&cur, s->payload, s->len, d->name);
	uint16_t version = mig_get_u16(&cur);
	if (cur.short_read)
		return vmm_fail("device section for %u (%s): no version", s->id, d->name);
	uint16_t want = in->t->d.devices[s->id].state_version;
	if (version != want)
		return vmm_fail("%s: %s state version %u, the description said %u", d->name, d->type->kind, version,
				want);
	if (d->type->load(d, version, s->payload + 2, s->len - 2))
		return vmm_fail_context("%s", d->name);
	return 0;
}

static int load_section(struct incoming *in, const struct mig_section *s)
{
	struct vm *vm = in->vm;
	switch (s->type) {
	case MIG_VCPU:
		if (seen_once(in->got_vcpu, vm->ncpus, s->id, "vcpu"))
			return -1;
		return vcpu_state_load(vm->vcpus.vcpus[s->id].fd, s->id, vm->kvm.sys_fd, s->payload, s->len);
	case MIG_MACHINE:
		return seen_once(&in->got_machine, 1, s->id, "machine") ||
		       machine_state_load(&vm->kvm, s->payload, s->len) ? -1 : 0;
	case MIG_DEVICE:
		return load_device(in, s);
	default:
		return vmm_fail("unexpected %s section in the VM state", mig_type_name(s->type));
	}
}

static int check_complete(struct incoming *in)
{
	struct vm *vm = in->vm;
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (!in->got_vcpu[i])
			return vmm_fail("the state ended without vcpu %u", i);
	if (!in->got_machine)
		return vmm_fail("the state ended without the machine (irqchip, PIT, clock)");
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (vm->devices[i]->type->load && !in->got_device[i])
			return vmm_fail("the state ended without %s's", vm->devices[i]->name);
	return 0;
}

static int receive_state(struct incoming *in)
{
	struct mig_section s;
	if (mig_expect(&in->t->c, MIG_FREEZE, &s))
		return -1;
	in->r->sent_ns = monotonic_ns();
	struct mig_cursor cur;
	mig_cursor_init(&cur, s.payload, s.len, "freeze");
	in->r->freeze_ns = mig_get_u64(&cur);
	int rc = mig_cursor_finish(&cur);
	mig_section_free(&s);
	while (rc == 0) {
		if (mig_recv(&in->t->c, &s))
			return -1;
		if (s.type == MIG_END) {
			mig_section_free(&s);
			return check_complete(in);
		}
		if (s.type == MIG_ERROR) {
			mig_section_free(&s); /* mig_expect phrases the source's message */
			return vmm_fail("the source gave up while sending the state");
		}
		rc = s.nfds ? vmm_fail("%s section: carries %u unexpected fds", mig_type_name(s.type), s.nfds)
			    : load_section(in, &s);
		mig_section_free(&s);
	}
	return -1;
}

struct vm *migrate_receive(struct migrate_target *t, const struct migrate_plan *p,
			   const struct vm_config *local, struct migrate_report *r)
{
	memset(r, 0, sizeof(*r));
	if (!t->offered) {
		vmm_fail("migration: receive the description first");
		return NULL;
	}
	t->offered = false; /* one attempt per connection */
	struct incoming in = { .t = t, .p = p, .r = r };
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	if (getsockopt(t->c.fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
		r->peer_pid = cred.pid;
	int rc = send_plan(&in) || receive_memory(&in) || receive_backends(&in) || build_vm(&in, local) ||
		 receive_previews(&in) || mig_send(&t->c, MIG_PREPARED, 0, NULL, 0, NULL, 0) ||
		 receive_state(&in) ? -1 : 0;
	if (rc == 0) {
		r->loaded_ns = monotonic_ns();
		rc = mig_send(&t->c, MIG_READY, 0, NULL, 0, NULL, 0) || expect_empty(&t->c, MIG_COMMIT) ? -1 : 0;
	}
	char msg[512];
	snprintf(msg, sizeof(msg), "%s", vmm_error());
	mig_section_free(&in.memory);
	for (unsigned i = 0; i < MACHINE_MAX_DEVICES; i++)
		mig_section_free(&in.backend[i]);
	if (rc) {
		mig_send_error(&t->c, msg);
		vm_free(in.vm); /* closes our copies of adopted fds; the source keeps its own */
		vmm_fail("migration: %s", msg);
		return NULL;
	}
	r->commit_ns = monotonic_ns();
	in.vm->incoming_loaded = true;
	in.vm->awaiting_start = true;
	in.vm->state = VM_PAUSED;
	return in.vm;
}

int migrate_start(struct migrate_target *t, struct vm *vm)
{
	if (!vm->awaiting_start)
		return vmm_fail("%s: not a VM received on this connection and waiting to start", vm->name);
	/* Once this is sent, the source never resumes its copy. If it cannot
	 * be sent, the source is gone or rolling back (it kills this process
	 * first): the VM must not run here. */
	if (mig_send(&t->c, MIG_STARTING, 0, NULL, 0, NULL, 0))
		return vmm_fail_context("%s: not started", vm->name);
	vm->awaiting_start = false;
	return vm_resume(vm);
}
