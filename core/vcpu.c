#include "vcpu.h"
#include "sandbox.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"

#define SIG_VCPU_KICK SIGUSR2

static void kick_handler(int sig)
{
	(void)sig; /* its only job is to make KVM_RUN return EINTR */
}

static int install_kick_handler(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIG_VCPU_KICK, &sa, NULL))
		return vmm_fail_errno("sigaction(SIGUSR2) for vCPU kicks");
	return 0;
}

int vcpu_group_init(struct vcpu_group *g, unsigned n, struct bus *pio, struct bus *mmio,
		    const struct vcpu_host *host)
{
	memset(g, 0, sizeof(*g));
	g->vcpus = calloc(n, sizeof(*g->vcpus));
	if (!g->vcpus)
		return vmm_fail("cannot allocate %u vCPUs", n);
	for (unsigned i = 0; i < n; i++)
		g->vcpus[i] = (struct vcpu){ .group = g, .id = i, .fd = -1 };
	g->n = n;
	g->pio = pio;
	g->mmio = mmio;
	g->host = *host;
	g->request = VCPU_RUN;
	pthread_mutex_init(&g->lock, NULL);
	pthread_condattr_t attr; /* timed waits on the monotonic clock */
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cond, &attr);
	pthread_condattr_destroy(&attr);
	return install_kick_handler();
}

/* --- exits ------------------------------------------------------------- */

static void handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	unsigned size = run->io.size;

	/* data_offset and count come from KVM, but stay inside the mapping. */
	if (run->io.data_offset >= (uint64_t)v->run_size ||
	    (uint64_t)size * run->io.count > (uint64_t)v->run_size - run->io.data_offset)
		return;
	for (uint32_t i = 0; i < run->io.count; i++, data += size) {
		if (run->io.direction == KVM_EXIT_IO_OUT)
			bus_write(v->group->pio, run->io.port, data, size);
		else
			bus_read(v->group->pio, run->io.port, data, size);
	}
}

static void handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	unsigned len = run->mmio.len;
	if (len == 0 || len > sizeof(run->mmio.data))
		return;
	if (run->mmio.is_write)
		bus_write(v->group->mmio, run->mmio.phys_addr, run->mmio.data, len);
	else
		bus_read(v->group->mmio, run->mmio.phys_addr, run->mmio.data, len);
}

static void report(struct vcpu *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(struct vcpu *v, const char *fmt, ...)
{
	char why[640];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	v->group->host.fatal(v->group->host.opaque, v->id, why);
}

/* A triple fault (KVM_EXIT_SHUTDOWN): where the vCPU was and the tables
 * an event delivery reads, the first things to look at. */
static void report_shutdown(struct vcpu *v)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	struct kvm_vcpu_events e;
	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s) < 0 ||
	    ioctl(v->fd, KVM_GET_VCPU_EVENTS, &e) < 0) {
		report(v, "guest shutdown (triple fault) on vCPU %u; its registers are unreadable: %s", v->id,
		       strerror(errno));
		return;
	}
	report(v,
	       "guest shutdown (triple fault) on vCPU %u: rip 0x%llx rsp 0x%llx rflags 0x%llx cs 0x%x ss 0x%x "
	       "cr0 0x%llx cr3 0x%llx cr4 0x%llx efer 0x%llx gdt 0x%llx/%u idt 0x%llx/%u tr 0x%x@0x%llx "
	       "gs.base 0x%llx; event: irq %s%u exception %s%u",
	       v->id, (unsigned long long)r.rip, (unsigned long long)r.rsp, (unsigned long long)r.rflags,
	       s.cs.selector, s.ss.selector, (unsigned long long)s.cr0, (unsigned long long)s.cr3,
	       (unsigned long long)s.cr4, (unsigned long long)s.efer, (unsigned long long)s.gdt.base, s.gdt.limit,
	       (unsigned long long)s.idt.base, s.idt.limit, s.tr.selector, (unsigned long long)s.tr.base,
	       (unsigned long long)s.gs.base, e.interrupt.injected ? "injected " : "", e.interrupt.nr,
	       e.exception.injected ? "injected " : e.exception.pending ? "pending " : "", e.exception.nr);
}

/* Handles one exit; returns false when the vCPU cannot go on. */
static bool handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		atomic_fetch_add_explicit(&v->io_exits, 1, memory_order_relaxed);
		handle_io(v);
		return true;
	case KVM_EXIT_MMIO:
		atomic_fetch_add_explicit(&v->mmio_exits, 1, memory_order_relaxed);
		handle_mmio(v);
		return true;
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_SHUTDOWN:
		report_shutdown(v);
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		report(v, "guest %s", run->system_event.type == KVM_SYSTEM_EVENT_RESET ? "reset" : "shutdown");
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		report(v, "vCPU %u: KVM_EXIT_FAIL_ENTRY, hardware reason 0x%llx", v->id,
		       (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		report(v, "vCPU %u: KVM internal error, suberror %u", v->id, run->internal.suberror);
		return false;
	default:
		report(v, "vCPU %u: unexpected KVM exit reason %u", v->id, run->exit_reason);
		return false;
	}
}

/* --- the run loop ------------------------------------------------------ */

/* Parks while a pause is requested. `may_park` is false right after a port
 * or MMIO exit: KVM_RUN must be entered once more to complete that access
 * (immediate_exit makes it return EINTR at once). Returns the request. */
static enum vcpu_request wait_for_run(struct vcpu *v, bool may_park)
{
	struct vcpu_group *g = v->group;
	pthread_mutex_lock(&g->lock);
	while (g->request == VCPU_PAUSE && may_park) {
		g->parked++;
		pthread_cond_broadcast(&g->cond);
		pthread_cond_wait(&g->cond, &g->lock);
		g->parked--;
	}
	enum vcpu_request r = g->request;
	pthread_mutex_unlock(&g->lock);
	return r;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	sigset_t kick;
	sigemptyset(&kick);
	sigaddset(&kick, SIG_VCPU_KICK);
	pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
	atomic_store(&v->tid, gettid());
	char name[16];
	snprintf(name, sizeof(name), "vcpu%u", v->id);
	(void)pthread_setname_np(pthread_self(), name); /* cosmetic: top, perf, /proc */

	bool may_park = true;
	if (sandbox_enter(SANDBOX_VCPU) < 0) {
		report(v, "vCPU %u: %s", v->id, vmm_error());
		goto out;
	}
	for (;;) {
		enum vcpu_request r = wait_for_run(v, may_park);
		if (r == VCPU_STOP && may_park)
			break;
		int rc = ioctl(v->fd, KVM_RUN, 0);
		atomic_fetch_add_explicit(&v->runs, 1, memory_order_relaxed);
		if (rc < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				may_park = true;
				continue;
			}
			report(v, "vCPU %u: KVM_RUN: %s", v->id, strerror(errno));
			break;
		}
		may_park = v->run->exit_reason != KVM_EXIT_IO && v->run->exit_reason != KVM_EXIT_MMIO;
		if (!handle_exit(v))
			break;
	}

out:;
	struct vcpu_group *g = v->group;
	pthread_mutex_lock(&g->lock);
	g->live--;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int vcpu_group_start(struct vcpu_group *g, bool paused)
{
	pthread_mutex_lock(&g->lock);
	g->request = paused ? VCPU_PAUSE : VCPU_RUN;
	pthread_mutex_unlock(&g->lock);
	sigset_t all, old;
	sigfillset(&all);
	/* vCPU threads inherit a full mask and unblock only the kick, so that
	 * SIGINT, SIGCHLD and friends go to the main thread. */
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = 0;
	for (unsigned i = 0; i < g->n; i++) {
		struct vcpu *v = &g->vcpus[i];
		pthread_mutex_lock(&g->lock);
		g->live++;
		pthread_mutex_unlock(&g->lock);
		int err = pthread_create(&v->thread, NULL, vcpu_thread, v);
		if (err) {
			pthread_mutex_lock(&g->lock);
			g->live--;
			pthread_mutex_unlock(&g->lock);
			errno = err;
			rc = vmm_fail_errno("pthread_create for vCPU %u", i);
			break;
		}
		v->started = true;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* Called with g->lock held. */
static void kick_all(struct vcpu_group *g)
{
	for (unsigned i = 0; i < g->n; i++) {
		struct vcpu *v = &g->vcpus[i];
		if (!v->started)
			continue;
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		pthread_kill(v->thread, SIG_VCPU_KICK);
	}
}

int vcpu_group_pause(struct vcpu_group *g)
{
	pthread_mutex_lock(&g->lock);
	if (g->request == VCPU_STOP) {
		pthread_mutex_unlock(&g->lock);
		return vmm_fail("cannot pause: the vCPUs are stopping");
	}
	g->request = VCPU_PAUSE;
	kick_all(g);
	/* Bounded: a vCPU that never leaves KVM_RUN must not hang the caller
	 * (a migration then rolls back instead). The kicks are repeated, in
	 * case one came before the thread re-entered KVM_RUN. */
	uint64_t start = monotonic_ns() / 1000000u, next_kick = start + VCPU_KICK_INTERVAL_MS;
	while (g->parked < g->live) {
		uint64_t now = monotonic_ns() / 1000000u;
		if (now - start >= VCPU_PAUSE_TIMEOUT_MS) {
			unsigned stuck = g->live - g->parked, live = g->live;
			g->request = VCPU_RUN;
			pthread_cond_broadcast(&g->cond);
			pthread_mutex_unlock(&g->lock);
			return vmm_fail("pause: %u of %u vCPUs still in KVM_RUN after %u ms; the VM runs on", stuck,
					live, VCPU_PAUSE_TIMEOUT_MS);
		}
		if (now >= next_kick) {
			kick_all(g);
			next_kick = now + VCPU_KICK_INTERVAL_MS;
		}
		struct timespec until = { .tv_sec = (time_t)(next_kick / 1000), .tv_nsec = (long)(next_kick % 1000) * 1000000 };
		pthread_cond_timedwait(&g->cond, &g->lock, &until);
	}
	pthread_mutex_unlock(&g->lock);
	return 0;
}

int vcpu_group_resume(struct vcpu_group *g)
{
	pthread_mutex_lock(&g->lock);
	if (g->request == VCPU_STOP) {
		pthread_mutex_unlock(&g->lock);
		return vmm_fail("cannot resume: the vCPUs are stopping");
	}
	g->request = VCPU_RUN;
	for (unsigned i = 0; i < g->n; i++)
		if (g->vcpus[i].run)
			__atomic_store_n(&g->vcpus[i].run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	return 0;
}

void vcpu_group_stop(struct vcpu_group *g)
{
	pthread_mutex_lock(&g->lock);
	g->request = VCPU_STOP;
	kick_all(g);
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	for (unsigned i = 0; i < g->n; i++) {
		if (g->vcpus[i].started)
			pthread_join(g->vcpus[i].thread, NULL);
		g->vcpus[i].started = false;
	}
}

void vcpu_group_destroy(struct vcpu_group *g)
{
	if (!g->vcpus)
		return;
	vcpu_group_stop(g);
	for (unsigned i = 0; i < g->n; i++) {
		struct vcpu *v = &g->vcpus[i];
		if (v->run)
			munmap(v->run, (size_t)v->run_size);
		if (v->fd >= 0)
			close(v->fd);
	}
	free(g->vcpus);
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cond);
	memset(g, 0, sizeof(*g));
}

void vcpu_stats(struct vcpu_group *g, unsigned i, struct vcpu_stats *out)
{
	struct vcpu *v = &g->vcpus[i];
	*out = (struct vcpu_stats){
		.tid = atomic_load(&v->tid),
		.runs = atomic_load_explicit(&v->runs, memory_order_relaxed),
		.io_exits = atomic_load_explicit(&v->io_exits, memory_order_relaxed),
		.mmio_exits = atomic_load_explicit(&v->mmio_exits, memory_order_relaxed),
	};
}
