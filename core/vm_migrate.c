#include "vm_migrate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "kvm_state.h"
#include "migstream.h"
#include "rtc.h"
#include "serial8250.h"
#include "virtio_net.h"
#include "virtio_pci.h"
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
	uint32_t hello_flags;
	struct machine_desc d;
	bool frozen, was_running;
	unsigned quiesced; /* nets quiesced so far */
};

static int receive_hello(struct migrate_source *s)
{
	struct mig_section sec;
	if (mig_expect(&s->c, MIG_HELLO, &sec))
		return -1;
	struct mig_cursor cur;
	mig_cursor_init(&cur, sec.payload, sec.len, "hello");
	s->r.peer_pid = (pid_t)mig_get_u32(&cur);
	s->hello_flags = mig_get_u32(&cur);
	int rc = mig_cursor_finish(&cur);
	mig_section_free(&sec);
	return rc;
}

static int send_description(struct migrate_source *s)
{
	struct vm *vm = s->vm;
	struct machine_desc *d = &s->d;
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", vm->name);
	d->mem_size = vm->mem_size;
	d->ncpus = vm->ncpus;
	d->nnets = vm->nnets;
	bool transfer = s->o.backend_transfer && (s->hello_flags & MIG_HELLO_BACKEND_TRANSFER);
	for (unsigned i = 0; i < vm->nnets; i++) {
		d->nets[i] = vm->nets[i].desc;
		d->nets[i].transfer_allowed = s->o.net_transfer[i];
		d->nets[i].transfer = transfer && s->o.net_transfer[i];
	}
	void *blob;
	size_t len;
	if (machine_to_fdt(d, &blob, &len))
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
	if (n != s->d.nnets)
		rc = vmm_fail("plan: %u devices, the description has %u", n, s->d.nnets);
	for (unsigned i = 0; rc == 0 && i < n; i++) {
		uint8_t take = mig_get_u8(&cur);
		if (take > 1 || (take && !s->d.nets[i].transfer))
			rc = vmm_fail("plan: %s: takes a backend that was not offered (%u)", s->d.nets[i].name, take);
		s->r.transferred[i] = take == 1;
	}
	if (rc == 0)
		rc = mig_cursor_finish(&cur);
	mig_section_free(&sec);
	s->r.nnets = s->d.nnets;
	return rc;
}

static int send_memory_and_backends(struct migrate_source *s)
{
	struct mig_buf b;
	mig_buf_init(&b);
	mig_put_u64(&b, s->vm->mem.size);
	if (send_buf(&s->c, MIG_MEMORY, 0, &b, &s->vm->mem.fd, 1))
		return -1;
	for (unsigned i = 0; i < s->vm->nnets; i++) {
		if (!s->r.transferred[i])
			continue;
		struct virtio_net *n = s->vm->nets[i].dev;
		int fds[MIG_MAX_FDS];
		unsigned nfds = virtio_net_tap_fds(n, fds, MIG_MAX_FDS);
		mig_buf_init(&b);
		if (virtio_net_backend_save(n, &b)) {
			mig_buf_free(&b);
			return -1;
		}
		if (send_buf(&s->c, MIG_BACKEND, i, &b, fds, nfds))
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
	for (; s->quiesced < vm->nnets; s->quiesced++)
		if (virtio_net_quiesce(vm->nets[s->quiesced].dev))
			return -1;
	return 0;
}

/* Undoes freeze(); the VM runs as before. */
static void thaw(struct migrate_source *s)
{
	struct vm *vm = s->vm;
	while (s->quiesced > 0)
		if (virtio_net_unquiesce(vm->nets[--s->quiesced].dev))
			fprintf(stderr, "vmm: %s: rollback: %s\n", vm->name, vmm_error());
	if (s->frozen && s->was_running && vm_resume(vm))
		fprintf(stderr, "vmm: %s: rollback: %s\n", vm->name, vmm_error());
	s->frozen = false;
}

static int send_saved(struct migrate_source *s, uint32_t type, uint32_t id, int rc, struct mig_buf *b)
{
	if (rc) {
		mig_buf_free(b);
		return -1;
	}
	return send_buf(&s->c, type, id, b, NULL, 0);
}

static int send_state(struct migrate_source *s)
{
	struct vm *vm = s->vm;
	struct mig_buf b;
	mig_buf_init(&b);
	mig_put_u64(&b, s->r.freeze_ns);
	if (send_buf(&s->c, MIG_FREEZE, 0, &b, NULL, 0))
		return -1;
	for (unsigned i = 0; i < vm->ncpus; i++) {
		mig_buf_init(&b);
		int rc = vcpu_state_save(vm->vcpus.vcpus[i].fd, i, vm->kvm.sys_fd, &b);
		if (send_saved(s, MIG_VCPU, i, rc, &b))
			return -1;
	}
	mig_buf_init(&b);
	if (send_saved(s, MIG_MACHINE, 0, machine_state_save(&vm->kvm, &b), &b))
		return -1;
	mig_buf_init(&b);
	if (send_saved(s, MIG_SERIAL, 0, serial8250_save(vm->serial, &b), &b))
		return -1;
	mig_buf_init(&b);
	if (send_saved(s, MIG_RTC, 0, rtc_save(vm->rtc, &b), &b))
		return -1;
	for (unsigned i = 0; i < vm->nnets; i++) {
		mig_buf_init(&b);
		if (send_saved(s, MIG_PCI_FUNCTION, i, virtio_pci_save(vm->nets[i].pci, &b), &b))
			return -1;
		mig_buf_init(&b);
		if (send_saved(s, MIG_NET, i, virtio_net_save(vm->nets[i].dev, &b), &b))
			return -1;
	}
	return mig_send(&s->c, MIG_END, 0, NULL, 0, NULL, 0);
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
	for (unsigned i = 0; i < vm->nnets; i++) {
		virtio_pci_free(vm->nets[i].pci);
		virtio_net_free(vm->nets[i].dev);
	}
	vm->nnets = 0;
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
	free(s);
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
	*s = (struct migrate_source){ .vm = vm, .c = { fd, timeout_of(o->timeout_ms), "target" }, .o = *o };
	if (receive_hello(s) || send_description(s) || receive_plan(s) || send_memory_and_backends(s)) {
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
	give_up(s);
	*r = s->r;
	free(s);
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
	free(t);
}

int migrate_offer(struct migrate_target *t, bool backend_transfer, struct machine_desc *d)
{
	if (t->offered)
		return vmm_fail("migration: the description was already received");
	struct mig_buf b;
	mig_buf_init(&b);
	mig_put_u32(&b, (uint32_t)getpid());
	mig_put_u32(&b, backend_transfer ? MIG_HELLO_BACKEND_TRANSFER : 0);
	if (send_buf(&t->c, MIG_HELLO, 0, &b, NULL, 0))
		return -1;
	struct mig_section sec;
	if (mig_expect(&t->c, MIG_DESCRIPTION, &sec))
		return -1;
	int rc = machine_from_fdt(sec.payload, sec.len, &t->d);
	mig_section_free(&sec);
	if (rc)
		return -1;
	t->offered = true;
	*d = t->d;
	return 0;
}

/* What the target holds while it receives. */
struct incoming {
	struct migrate_target *t;
	const struct migrate_plan *p;
	struct migrate_report *r;
	struct vm *vm;
	struct mig_section memory;
	struct mig_section backend[VM_MAX_NETS];
	bool got_vcpu[X86_MAX_VCPUS], got_machine, got_serial, got_rtc;
	bool got_pci[VM_MAX_NETS], got_net[VM_MAX_NETS];
};

static int send_plan(struct incoming *in)
{
	const struct machine_desc *d = &in->t->d;
	struct mig_buf b;
	mig_buf_init(&b);
	mig_put_u32(&b, d->nnets);
	for (unsigned i = 0; i < d->nnets; i++) {
		bool take = in->p->take_backend[i];
		if (take && !d->nets[i].transfer) {
			mig_buf_free(&b);
			return vmm_fail("%s: its backend was not offered", d->nets[i].name);
		}
		if (!take && !in->p->ifname[i][0]) {
			mig_buf_free(&b);
			return vmm_fail("%s: no TAP named to replace the backend", d->nets[i].name);
		}
		mig_put_u8(&b, take);
		in->r->transferred[i] = take;
	}
	in->r->nnets = d->nnets;
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
	for (unsigned i = 0; i < d->nnets; i++) {
		if (!in->p->take_backend[i])
			continue;
		struct mig_section *s = &in->backend[i];
		if (mig_expect(&in->t->c, MIG_BACKEND, s))
			return -1;
		if (s->id != i)
			return vmm_fail("backend section for device %u, expected %u (%s)", s->id, i, d->nets[i].name);
		if (s->nfds != d->nets[i].queue_pairs)
			return vmm_fail("%s: backend: %u fds, the description has %u queue pairs", d->nets[i].name,
					s->nfds, d->nets[i].queue_pairs);
	}
	return 0;
}

static int add_net(struct incoming *in, unsigned i)
{
	const struct machine_net *m = &in->t->d.nets[i];
	bool take = in->p->take_backend[i];
	struct virtio_net_options o = {
		.name = m->name,
		.ifname = take ? NULL : in->p->ifname[i],
		.tap_fds = take ? in->backend[i].fds : NULL,
		.queue_pairs = m->queue_pairs,
		.queue_size = m->queue_size,
		.vhost = m->vhost,
		.incoming = take,
	};
	memcpy(o.mac, m->mac, sizeof(o.mac));
	if (vm_add_net(in->vm, &o))
		return -1;
	if (take) { /* the device owns them now */
		for (unsigned q = 0; q < in->backend[i].nfds; q++)
			in->backend[i].fds[q] = -1;
		struct vm_net *net = &in->vm->nets[i];
		snprintf(net->desc.ifname, sizeof(net->desc.ifname), "%s", m->ifname);
		if (virtio_net_backend_check(net->dev, in->backend[i].payload, in->backend[i].len))
			return vmm_fail_context("%s", m->name);
	}
	return 0;
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
		.incoming = true,
	};
	in->vm = vm_new(&cfg);
	if (!in->vm)
		return -1;
	for (unsigned i = 0; i < d->nnets; i++)
		if (add_net(in, i))
			return -1;
	if (vm_prepare_incoming(in->vm, in->memory.fds[0]))
		return -1;
	in->memory.fds[0] = -1; /* the VM's now */
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
	case MIG_SERIAL:
		return seen_once(&in->got_serial, 1, s->id, "serial") ||
		       serial8250_load(vm->serial, s->payload, s->len) ? -1 : 0;
	case MIG_RTC:
		return seen_once(&in->got_rtc, 1, s->id, "rtc") || rtc_load(vm->rtc, s->payload, s->len) ? -1 : 0;
	case MIG_PCI_FUNCTION:
		if (seen_once(in->got_pci, vm->nnets, s->id, "pci function"))
			return -1;
		return virtio_pci_load(vm->nets[s->id].pci, s->payload, s->len);
	case MIG_NET:
		if (seen_once(in->got_net, vm->nnets, s->id, "net"))
			return -1;
		if (!in->got_pci[s->id])
			return vmm_fail("net section for %u before its pci function", s->id);
		return virtio_net_load(vm->nets[s->id].dev, s->payload, s->len);
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
	if (!in->got_machine || !in->got_serial || !in->got_rtc)
		return vmm_fail("the state ended without the %s", !in->got_machine ? "machine (irqchip, PIT, clock)"
								  : !in->got_serial ? "serial port" : "RTC");
	for (unsigned i = 0; i < vm->nnets; i++)
		if (!in->got_pci[i] || !in->got_net[i])
			return vmm_fail("the state ended without %s's %s", vm->nets[i].desc.name,
					!in->got_pci[i] ? "pci function" : "net state");
	return 0;
}

static int receive_state(struct incoming *in)
{
	struct mig_section s;
	if (mig_expect(&in->t->c, MIG_FREEZE, &s))
		return -1;
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
		 mig_send(&t->c, MIG_PREPARED, 0, NULL, 0, NULL, 0) || receive_state(&in) ? -1 : 0;
	if (rc == 0) {
		r->loaded_ns = monotonic_ns();
		rc = mig_send(&t->c, MIG_READY, 0, NULL, 0, NULL, 0) || expect_empty(&t->c, MIG_COMMIT) ? -1 : 0;
	}
	char msg[512];
	snprintf(msg, sizeof(msg), "%s", vmm_error());
	mig_section_free(&in.memory);
	for (unsigned i = 0; i < VM_MAX_NETS; i++)
		mig_section_free(&in.backend[i]);
	if (rc) {
		mig_send_error(&t->c, msg);
		vm_free(in.vm);
		vmm_fail("migration: %s", msg);
		return NULL;
	}
	r->commit_ns = monotonic_ns();
	in.vm->incoming_loaded = true;
	in.vm->state = VM_PAUSED;
	return in.vm;
}
