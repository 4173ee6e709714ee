#include "sandbox.h"

#include <errno.h>
#include <linux/kvm.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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

/* A locked main thread also runs the event loop (epoll), the control and
 * migration sockets (accept, connect, SCM_RIGHTS), the commands' output
 * pipes, netlink (the switch-over's address moves), the REPL's terminal,
 * and new threads. Each vCPU and disk I/O thread keeps its own filter on
 * top of the main one, and what they allow is allowed here too. */
static const int main_calls[] = {
	SCMP_SYS(epoll_wait),  SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_ctl),   SCMP_SYS(epoll_create1),
	SCMP_SYS(accept),      SCMP_SYS(accept4),     SCMP_SYS(connect),     SCMP_SYS(bind),
	SCMP_SYS(listen),      SCMP_SYS(shutdown),    SCMP_SYS(socketpair),  SCMP_SYS(getsockname),
	SCMP_SYS(getpeername), SCMP_SYS(getsockopt),  SCMP_SYS(setsockopt),  SCMP_SYS(pipe2),
	SCMP_SYS(dup2),	       SCMP_SYS(dup3),	      SCMP_SYS(rt_sigaction), SCMP_SYS(tkill),
	SCMP_SYS(getrusage),   SCMP_SYS(times),	      SCMP_SYS(clock_getres), SCMP_SYS(sysinfo),
	SCMP_SYS(uname),       SCMP_SYS(getuid),      SCMP_SYS(geteuid),     SCMP_SYS(getgid),
	SCMP_SYS(getegid),     SCMP_SYS(getppid),     SCMP_SYS(getcwd),	     SCMP_SYS(set_robust_list),
	SCMP_SYS(rseq),	       SCMP_SYS(sched_getaffinity), SCMP_SYS(statx), SCMP_SYS(select),
	SCMP_SYS(pselect6),
};

/* What users' Lua may ask of the file system (io.open, os.remove,
 * os.rename, require of a file) fails with EACCES instead of ending the
 * VMM: a locked VMM opens and changes no files. */
static const int main_refused_fs_calls[] = {
	SCMP_SYS(creat),   SCMP_SYS(openat2),	SCMP_SYS(mkdir),      SCMP_SYS(mkdirat),  SCMP_SYS(rmdir),
	SCMP_SYS(unlink),  SCMP_SYS(unlinkat),	SCMP_SYS(rename),     SCMP_SYS(renameat), SCMP_SYS(renameat2),
	SCMP_SYS(link),	   SCMP_SYS(linkat),	SCMP_SYS(symlink),    SCMP_SYS(symlinkat), SCMP_SYS(chmod),
	SCMP_SYS(fchmod),  SCMP_SYS(fchmodat),	SCMP_SYS(chown),      SCMP_SYS(fchown),   SCMP_SYS(fchownat),
	SCMP_SYS(lchown),  SCMP_SYS(truncate),	SCMP_SYS(utimensat),  SCMP_SYS(access),	  SCMP_SYS(faccessat),
	SCMP_SYS(faccessat2), SCMP_SYS(readlink), SCMP_SYS(readlinkat), SCMP_SYS(chdir),
};

/* ... and starting programs (os.execute, io.popen) with EPERM: host
 * commands go through the launcher (core/launcher.h). clone is allowed for
 * threads only (see add_main_rules). */
static const int main_refused_exec_calls[] = {
	SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(fork), SCMP_SYS(vfork),
};

/* ioctl request types (the _IOC_TYPE byte) each role may use. */
static const unsigned vcpu_ioctl_types[] = { KVMIO, 0xAF /* VHOST_VIRTIO */, 'T' /* TUN, FIONBIO */ };
static const unsigned io_ioctl_types[] = { 0x12 /* BLKDISCARD, BLKZEROOUT */ };
static const unsigned main_ioctl_types[] = { KVMIO, 0xAF, 'T' /* also the terminal's */, 0x12,
					     0x89 /* SIOC*: interfaces */ };

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

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* calls[0..n) get action (SCMP_ACT_ALLOW, SCMP_ACT_ERRNO(e), ...). */
static int add_calls(scmp_filter_ctx ctx, uint32_t action, const int *calls, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int rc = seccomp_rule_add(ctx, action, calls[i], 0);
		if (rc < 0) {
			char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, calls[i]);
			vmm_fail("seccomp: a rule for %s: %s", name ? name : "?", strerror(-rc));
			free(name);
			return -1;
		}
	}
	return 0;
}

static int allow_all(scmp_filter_ctx ctx, const int *calls, size_t n)
{
	return add_calls(ctx, SCMP_ACT_ALLOW, calls, n);
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

/* The main thread's rules that look at arguments: clone for threads only
 * (fork-like clones get EPERM), sockets of the local families only (UNIX:
 * control, migration, vhost-user; netlink), prctl for thread names, and
 * what a new thread needs to add its own filter. */
static int add_main_rules(scmp_filter_ctx ctx)
{
	struct {
		uint32_t action;
		int call;
		struct scmp_arg_cmp cmp;
		const char *what;
	} rules[] = {
		{ SCMP_ACT_ALLOW, SCMP_SYS(clone), SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD), "clone (threads)" },
		{ SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0), "clone (processes)" },
		{ SCMP_ACT_ALLOW, SCMP_SYS(socket), SCMP_A0(SCMP_CMP_EQ, AF_UNIX), "socket (AF_UNIX)" },
		{ SCMP_ACT_ALLOW, SCMP_SYS(socket), SCMP_A0(SCMP_CMP_EQ, AF_NETLINK), "socket (AF_NETLINK)" },
		{ SCMP_ACT_ALLOW, SCMP_SYS(prctl), SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME), "prctl (PR_SET_NAME)" },
		{ SCMP_ACT_ALLOW, SCMP_SYS(prctl), SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME), "prctl (PR_GET_NAME)" },
		/* a thread started later loads its own filter on top: only stricter */
		{ SCMP_ACT_ALLOW, SCMP_SYS(prctl), SCMP_A0(SCMP_CMP_EQ, PR_SET_NO_NEW_PRIVS), "prctl (NO_NEW_PRIVS)" },
		{ SCMP_ACT_ALLOW, SCMP_SYS(seccomp), SCMP_A0(SCMP_CMP_EQ, SECCOMP_SET_MODE_FILTER), "seccomp (filters)" },
	};
	for (size_t i = 0; i < N(rules); i++) {
		int rc = seccomp_rule_add(ctx, rules[i].action, rules[i].call, 1, rules[i].cmp);
		if (rc < 0)
			return vmm_fail("seccomp: %s: %s", rules[i].what, strerror(-rc));
	}
	return allow_all(ctx, main_calls, N(main_calls)) || allow_all(ctx, vcpu_calls, N(vcpu_calls)) ||
	       allow_ioctls(ctx, main_ioctl_types, N(main_ioctl_types)) ||
	       add_calls(ctx, SCMP_ACT_ERRNO(EACCES), main_refused_fs_calls, N(main_refused_fs_calls)) ||
	       add_calls(ctx, SCMP_ACT_ERRNO(EPERM), main_refused_exec_calls, N(main_refused_exec_calls)) ? -1 : 0;
}

static const char *role_name(enum sandbox_role role)
{
	return role == SANDBOX_VCPU ? "vCPU" : role == SANDBOX_IO ? "I/O" : "main";
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
	int rc = allow_all(ctx, common_calls, N(common_calls));
	if (!rc && role == SANDBOX_VCPU)
		rc = allow_all(ctx, vcpu_calls, N(vcpu_calls)) || allow_ioctls(ctx, vcpu_ioctl_types, N(vcpu_ioctl_types));
	if (!rc && role == SANDBOX_IO)
		rc = allow_ioctls(ctx, io_ioctl_types, N(io_ioctl_types));
	if (!rc && role == SANDBOX_MAIN)
		rc = add_main_rules(ctx);
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
			rc = vmm_fail("seccomp: loading the %s filter: %s", role_name(role), strerror(-e));
	}
	seccomp_release(ctx);
	return rc;
}

static _Atomic int locked;

int sandbox_locked(void) { return atomic_load(&locked); }

int sandbox_lock(void)
{
	if (atomic_load(&locked))
		return vmm_fail("the VMM is locked already");
	if (sandbox_enter(SANDBOX_MAIN) < 0)
		return -1;
	atomic_store(&locked, 1);
	return 0;
}
