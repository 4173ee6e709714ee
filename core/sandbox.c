#include "sandbox.h"

#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "err.h"

/* ---- the mode ---- */

static _Atomic int mode_set = -1; /* -1: not chosen yet, VMM_SECCOMP decides */

int sandbox_parse_mode(const char *text, enum sandbox_mode *mode)
{
	static const char *const names[] = { [SANDBOX_ON] = "on", [SANDBOX_OFF] = "off", [SANDBOX_LOG] = "log" };
	for (int m = 0; m < 3; m++)
		if (strcmp(text, names[m]) == 0) {
			*mode = (enum sandbox_mode)m;
			return 0;
		}
	return vmm_fail("seccomp mode \"%s\": expected on, off or log", text);
}

const char *sandbox_mode_name(enum sandbox_mode mode)
{
	return mode == SANDBOX_OFF ? "off" : mode == SANDBOX_LOG ? "log" : "on";
}

void sandbox_set_mode(enum sandbox_mode mode) { atomic_store(&mode_set, (int)mode); }

enum sandbox_mode sandbox_mode(void)
{
	int m = atomic_load(&mode_set);
	if (m >= 0)
		return (enum sandbox_mode)m;
	enum sandbox_mode parsed = SANDBOX_ON;
	const char *env = getenv("VMM_SECCOMP");
	if (env && *env && sandbox_parse_mode(env, &parsed) < 0) {
		fprintf(stderr, "vmm: VMM_SECCOMP=%s is not on, off or log: the filters stay on\n", env);
		parsed = SANDBOX_ON;
	}
	int expected = -1;
	atomic_compare_exchange_strong(&mode_set, &expected, (int)parsed);
	return (enum sandbox_mode)atomic_load(&mode_set);
}

/* ---- what each role may do ---- */

/* Common to both: memory (malloc), locks, time, signals' return, the
 * eventfd writes that wake the main loop, and the thread's end. */
static const int common_calls[] = {
	SCMP_SYS(read),		   SCMP_SYS(write),	     SCMP_SYS(readv),	      SCMP_SYS(writev),
	SCMP_SYS(close),	   SCMP_SYS(futex),	     SCMP_SYS(sched_yield),   SCMP_SYS(nanosleep),
	SCMP_SYS(clock_nanosleep), SCMP_SYS(clock_gettime),  SCMP_SYS(gettimeofday),  SCMP_SYS(gettid),
	SCMP_SYS(getpid),	   SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn),  SCMP_SYS(madvise),
	SCMP_SYS(mmap),		   SCMP_SYS(munmap),	     SCMP_SYS(mprotect),      SCMP_SYS(mremap),
	SCMP_SYS(brk),		   SCMP_SYS(exit),	     SCMP_SYS(exit_group),    SCMP_SYS(restart_syscall),
	SCMP_SYS(fstat),	   SCMP_SYS(newfstatat),     SCMP_SYS(getrandom),     SCMP_SYS(pread64),
	SCMP_SYS(pwrite64),	   SCMP_SYS(preadv),	     SCMP_SYS(pwritev),	      SCMP_SYS(fsync),
	SCMP_SYS(fdatasync),	   SCMP_SYS(fallocate),
};

/* vCPU threads also run the devices' port and MMIO handlers: virtio
 * status and MSI-X changes reach KVM (irqfd, ioeventfd, routing), vhost
 * and TAP ioctls and the vhost-user socket; a notify may submit disk I/O. */
static const int vcpu_calls[] = {
	SCMP_SYS(eventfd2), SCMP_SYS(sendmsg), SCMP_SYS(recvmsg),	SCMP_SYS(sendto), SCMP_SYS(recvfrom),
	SCMP_SYS(poll),	    SCMP_SYS(ppoll),   SCMP_SYS(fcntl),		SCMP_SYS(lseek),  SCMP_SYS(io_uring_enter),
	SCMP_SYS(tgkill),   SCMP_SYS(dup),     SCMP_SYS(sigaltstack),
};

/* ioctl request types (the _IOC_TYPE byte) each role may use. */
static const unsigned vcpu_ioctl_types[] = { KVMIO, 0xAF /* VHOST_VIRTIO */, 'T' /* TUN, FIONBIO */ };
static const unsigned io_ioctl_types[] = { 0x12 /* BLKDISCARD, BLKZEROOUT */ };

/* ---- SIGSYS ---- */

#define NAMES 512
static char *call_names[NAMES]; /* resolved before any filter: the handler must not allocate */
static _Thread_local char thread_name[16];
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;

static void put(const char *s) { (void)!write(STDERR_FILENO, s, strlen(s)); }

static void on_sigsys(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	int nr = si->si_syscall;
	char num[16];
	int k = sizeof(num);
	num[--k] = '\0';
	unsigned u = nr < 0 ? 0 : (unsigned)nr;
	do
		num[--k] = (char)('0' + u % 10);
	while ((u /= 10) && k > 0);
	put("vmm: seccomp: thread ");
	put(thread_name[0] ? thread_name : "?");
	put(" made a system call its filter refuses: ");
	put(nr >= 0 && nr < NAMES && call_names[nr] ? call_names[nr] : "?");
	put(" (");
	put(num + k);
	put("); the VMM stops (VMM_SECCOMP=off turns the filters off)\n");
	_exit(128 + SIGSYS);
}

static void install_handler(void)
{
	for (int nr = 0; nr < NAMES; nr++)
		call_names[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
	struct sigaction sa = { .sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0)
		fprintf(stderr, "vmm: seccomp: sigaction(SIGSYS): %s\n", strerror(errno));
}

/* ---- building and loading ---- */

static int allow_all(scmp_filter_ctx ctx, const int *calls, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, calls[i], 0);
		if (rc < 0) {
			char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, calls[i]);
			vmm_fail("seccomp: allowing %s: %s", name ? name : "?", strerror(-rc));
			free(name);
			return -1;
		}
	}
	return 0;
}

static int allow_ioctls(scmp_filter_ctx ctx, const unsigned *types, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
					  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00, (scmp_datum_t)types[i] << 8));
		if (rc < 0)
			return vmm_fail("seccomp: allowing ioctls of type 0x%x: %s", types[i], strerror(-rc));
	}
	return 0;
}

int sandbox_enter(enum sandbox_role role)
{
	enum sandbox_mode mode = sandbox_mode();
	if (mode == SANDBOX_OFF)
		return 0;
	pthread_once(&handler_once, install_handler);
	if (prctl(PR_GET_NAME, thread_name) < 0)
		thread_name[0] = '\0';
	/* a blocked SIGSYS would kill without the handler's line */
	sigset_t sys;
	sigemptyset(&sys);
	sigaddset(&sys, SIGSYS);
	pthread_sigmask(SIG_UNBLOCK, &sys, NULL);

	/* glibc loads its message catalogs at the first strerror: now, while
	 * files may be opened (the catalogs are the process's, shared) */
	(void)strerror(EIO);

	scmp_filter_ctx ctx = seccomp_init(mode == SANDBOX_LOG ? SCMP_ACT_LOG : SCMP_ACT_TRAP);
	if (!ctx)
		return vmm_fail("seccomp: seccomp_init failed");
	int rc = allow_all(ctx, common_calls, sizeof(common_calls) / sizeof(common_calls[0]));
	if (!rc && role == SANDBOX_VCPU)
		rc = allow_all(ctx, vcpu_calls, sizeof(vcpu_calls) / sizeof(vcpu_calls[0])) ||
		     allow_ioctls(ctx, vcpu_ioctl_types, sizeof(vcpu_ioctl_types) / sizeof(vcpu_ioctl_types[0]));
	if (!rc && role == SANDBOX_IO)
		rc = allow_ioctls(ctx, io_ioctl_types, sizeof(io_ioctl_types) / sizeof(io_ioctl_types[0]));
	if (!rc) {
		int e = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
		if (e < 0)
			rc = vmm_fail("seccomp: clone3 -> ENOSYS: %s", strerror(-e));
	}
	if (!rc) {
		/* Opening files is refused with an error rather than fatally:
		 * glibc opens its message catalogs (libc.mo) at a thread's first
		 * strerror, on an error path that must report, not kill (seen
		 * with VMM_SECCOMP=log in the test host). They are warmed up
		 * above as well. */
		int e = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 0);
		if (!e)
			e = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(open), 0);
		if (e < 0)
			rc = vmm_fail("seccomp: open -> EACCES: %s", strerror(-e));
	}
	if (!rc) {
		int e = seccomp_load(ctx);
		if (e < 0)
			rc = vmm_fail("seccomp: loading the %s filter: %s", role == SANDBOX_VCPU ? "vCPU" : "I/O",
				      strerror(-e));
	}
	seccomp_release(ctx);
	return rc;
}
