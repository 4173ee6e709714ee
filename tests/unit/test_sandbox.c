/* The per-thread seccomp filters (core/sandbox.c). Each case runs in a
 * forked child, in a thread of its own, because a filter cannot be lifted
 * and a refused call ends the process: the parent reads the child's exit
 * status and what it wrote to stderr. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "sandbox.h"

struct job {
	enum sandbox_role role;
	int (*body)(void); /* in the filtered thread: 0 when all went as expected */
};

static void *thread_main(void *arg)
{
	struct job *j = arg;
	(void)pthread_setname_np(pthread_self(), "sbx-test");
	if (sandbox_enter(j->role) < 0) {
		fprintf(stderr, "sandbox_enter: %s\n", vmm_error());
		_exit(90);
	}
	_exit(j->body());
}

/* Runs body in a child's thread under role's filter in mode -> its exit
 * status (128 + signal when killed); *err gets its stderr. */
static int run_filtered(enum sandbox_role role, enum sandbox_mode mode, int (*body)(void), char *err, size_t errlen)
{
	int p[2];
	if (pipe(p) < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(p[1], STDERR_FILENO);
		close(p[0]);
		sandbox_set_mode(mode);
		struct job j = { role, body };
		pthread_t t;
		if (pthread_create(&t, NULL, thread_main, &j) != 0)
			_exit(91);
		pthread_join(t, NULL);
		_exit(92);
	}
	close(p[1]);
	size_t n = 0;
	ssize_t k;
	while (n + 1 < errlen && (k = read(p[0], err + n, errlen - 1 - n)) > 0)
		n += (size_t)k;
	err[n] = '\0';
	close(p[0]);
	int status;
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* What a disk I/O thread does: file I/O, flush, the eventfd that wakes the
 * loop, malloc, the clock. */
static int io_fd = -1, io_efd = -1;

static int io_allowed(void)
{
	char buf[4096] = "data";
	if (pwrite(io_fd, buf, sizeof(buf), 0) != sizeof(buf) || pread(io_fd, buf, sizeof(buf), 0) != sizeof(buf))
		return 1;
	if (fdatasync(io_fd) < 0 || fsync(io_fd) < 0)
		return 2;
	uint64_t one = 1;
	if (write(io_efd, &one, sizeof(one)) != sizeof(one))
		return 3;
	void *m = malloc(1 << 20); /* mmap */
	free(m);
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		return 4;
	return 0;
}

static int opens_a_file(void)
{
	int fd = open("/etc/hostname", O_RDONLY);
	return fd >= 0 ? 0 : 5;
}

/* Opening is refused with EACCES, not fatally; an error message still
 * comes out. */
static int open_fails_with_eacces(void)
{
	int fd = open("/etc/hostname", O_RDONLY);
	if (fd >= 0 || errno != EACCES)
		return 10;
	return strcmp(strerror(EBADF), "Bad file descriptor") == 0 ? 0 : 11;
}

static int makes_a_directory(void)
{
	return mkdir("/tmp/test_sandbox_never", 0700) == 0 ? 0 : 12;
}

static int makes_a_socket(void)
{
	return socket(AF_UNIX, SOCK_STREAM, 0) >= 0 ? 0 : 6;
}

static int clone3_is_enosys(void)
{
	long rc = syscall(SYS_clone3, NULL, 0);
	return rc == -1 && errno == ENOSYS ? 0 : 7;
}

static int kvm_ioctl_then_other(void)
{
	/* a KVM ioctl on a non-KVM fd: allowed by the filter, refused by the
	 * kernel (ENOTTY); then one of another type is the filter's to refuse */
	if (ioctl(io_efd, KVM_GET_API_VERSION, 0) != -1 || errno != ENOTTY)
		return 8;
	int n;
	ioctl(io_efd, FIONREAD, &n); /* 'T': allowed (TUN's type) */
	ioctl(io_efd, 0x8913 /* SIOCGIFFLAGS, type 0x89 */, &n);
	return 0;
}

/* What a locked main thread does: the loop, sockets, pipes, fd passing,
 * threads, the devices' ioctls. */
static void *nothing(void *arg) { return arg; }

static int main_allowed(void)
{
	int sv[2], p[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0 || pipe2(p, O_CLOEXEC) < 0)
		return 20;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = sv[0] }, out;
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sv[0], &ev) < 0 || epoll_wait(ep, &out, 1, 0) != 0)
		return 21;
	char byte = 'x';
	struct iovec iov = { &byte, 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u = { 0 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &p[0], sizeof(int));
	if (sendmsg(sv[1], &m, 0) != 1 || recvmsg(sv[0], &m, 0) != 1)
		return 22;
	pthread_t t;
	if (pthread_create(&t, NULL, nothing, NULL) != 0 || pthread_join(t, NULL) != 0)
		return 23;
	if (ioctl(io_efd, KVM_GET_API_VERSION, 0) != -1 || errno != ENOTTY)
		return 24;
	int n;
	ioctl(io_efd, 0x8913 /* SIOCGIFFLAGS */, &n);
	return io_allowed() ? 25 : 0;
}

/* Files fail with EACCES, programs with EPERM: errors Lua reports. */
static int main_refuses_files_and_programs(void)
{
	if (open("/etc/hostname", O_RDONLY) >= 0 || errno != EACCES)
		return 30;
	if (mkdir("/tmp/test_sandbox_never", 0700) == 0 || errno != EACCES)
		return 31;
	if (unlink("/tmp/test_sandbox_never") == 0 || errno != EACCES)
		return 32;
	if (rename("/tmp/a", "/tmp/b") == 0 || errno != EACCES)
		return 33;
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	if (pid >= 0 || errno != EPERM)
		return 34;
	char *argv[] = { "true", NULL };
	if (execve("/bin/true", argv, NULL) == 0 || errno != EPERM)
		return 35;
	return 0;
}

static int main_inet_socket(void)
{
	return socket(AF_INET, SOCK_STREAM, 0) >= 0 ? 40 : 41;
}

/* A thread started after the lock has the main filter and may add its own
 * (a stricter one): under the I/O filter a socket is refused. */
static void *io_thread_after_lock(void *arg)
{
	(void)arg;
	if (sandbox_enter(SANDBOX_IO) < 0)
		_exit(50);
	if (open("/etc/hostname", O_RDONLY) >= 0 || errno != EACCES)
		_exit(51);
	(void)socket(AF_UNIX, SOCK_STREAM, 0);
	_exit(52);
}

static int main_then_io_thread(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, io_thread_after_lock, NULL) != 0)
		return 53;
	pthread_join(t, NULL);
	return 54;
}

static void setup_files(void)
{
	char path[] = "/tmp/test_sandbox_XXXXXX";
	io_fd = mkstemp(path);
	unlink(path);
	io_efd = eventfd(0, EFD_NONBLOCK);
}

static void an_io_thread_does_file_io_flush_and_wakeups(void)
{
	char err[512];
	CHECK_EQ(run_filtered(SANDBOX_IO, SANDBOX_ON, io_allowed, err, sizeof(err)), 0);
	CHECK_EQ(strlen(err), 0);
}

static void a_refused_call_ends_the_process_with_a_line_naming_it(void)
{
	char err[512];
	CHECK_EQ(run_filtered(SANDBOX_IO, SANDBOX_ON, makes_a_socket, err, sizeof(err)), 128 + SIGSYS);
	CHECK_CONTAINS(err, "vmm: seccomp: thread sbx-test made a system call its filter refuses: socket (41)");
	CHECK_EQ(run_filtered(SANDBOX_VCPU, SANDBOX_ON, makes_a_directory, err, sizeof(err)), 128 + SIGSYS);
	CHECK_CONTAINS(err, "refuses: mkdir (83)");
	rmdir("/tmp/test_sandbox_never");
}

static void opening_a_file_fails_with_eacces_and_errors_still_read(void)
{
	char err[512];
	CHECK_EQ(run_filtered(SANDBOX_VCPU, SANDBOX_ON, open_fails_with_eacces, err, sizeof(err)), 0);
	CHECK_EQ(run_filtered(SANDBOX_IO, SANDBOX_ON, open_fails_with_eacces, err, sizeof(err)), 0);
	CHECK_EQ(strlen(err), 0);
}

static void clone3_fails_with_enosys_so_glibc_uses_clone(void)
{
	char err[512];
	CHECK_EQ(run_filtered(SANDBOX_VCPU, SANDBOX_ON, clone3_is_enosys, err, sizeof(err)), 0);
	CHECK_EQ(run_filtered(SANDBOX_IO, SANDBOX_ON, clone3_is_enosys, err, sizeof(err)), 0);
}

static void a_vcpu_thread_may_use_kvm_ioctls_not_others(void)
{
	char err[512];
	CHECK_EQ(run_filtered(SANDBOX_VCPU, SANDBOX_ON, kvm_ioctl_then_other, err, sizeof(err)), 128 + SIGSYS);
	CHECK_CONTAINS(err, "refuses: ioctl (16)");
	/* the I/O thread may not use KVM's */
	CHECK_EQ(run_filtered(SANDBOX_IO, SANDBOX_ON, kvm_ioctl_then_other, err, sizeof(err)), 128 + SIGSYS);
}

static void off_and_log_modes_let_everything_through(void)
{
	char err[512];
	CHECK_EQ(run_filtered(SANDBOX_IO, SANDBOX_OFF, opens_a_file, err, sizeof(err)), 0);
	CHECK_EQ(run_filtered(SANDBOX_VCPU, SANDBOX_OFF, makes_a_socket, err, sizeof(err)), 0);
	CHECK_EQ(run_filtered(SANDBOX_VCPU, SANDBOX_LOG, makes_a_socket, err, sizeof(err)), 0);
	CHECK_EQ(strlen(err), 0);
}

static void a_locked_main_thread_runs_the_loop_sockets_fd_passing_and_threads(void)
{
	char err[512];
	CHECK_EQ(run_filtered(SANDBOX_MAIN, SANDBOX_ON, main_allowed, err, sizeof(err)), 0);
	CHECK_EQ(strlen(err), 0);
}

static void a_locked_main_thread_gets_eacces_for_files_and_eperm_for_programs(void)
{
	char err[512];
	CHECK_EQ(run_filtered(SANDBOX_MAIN, SANDBOX_ON, main_refuses_files_and_programs, err, sizeof(err)), 0);
	CHECK_EQ(strlen(err), 0);
}

static void a_locked_main_thread_ends_the_process_on_an_inet_socket(void)
{
	char err[512];
	CHECK_EQ(run_filtered(SANDBOX_MAIN, SANDBOX_ON, main_inet_socket, err, sizeof(err)), 128 + SIGSYS);
	CHECK_CONTAINS(err, "refuses: socket (41)");
}

static void a_thread_started_after_the_lock_adds_its_own_filter(void)
{
	char err[512];
	CHECK_EQ(run_filtered(SANDBOX_MAIN, SANDBOX_ON, main_then_io_thread, err, sizeof(err)), 128 + SIGSYS);
	CHECK_CONTAINS(err, "refuses: socket (41)");
}

/* In a child: the process is locked for good. */
static void locking_twice_fails(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		sandbox_set_mode(SANDBOX_ON);
		if (sandbox_locked() || sandbox_lock() < 0 || !sandbox_locked())
			_exit(1);
		if (sandbox_lock() == 0 || !strstr(vmm_error(), "locked already"))
			_exit(2);
		_exit(0);
	}
	int status = -1;
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void modes_parse_and_name(void)
{
	enum sandbox_mode m;
	CHECK(sandbox_parse_mode("off", &m) == 0 && m == SANDBOX_OFF);
	CHECK(sandbox_parse_mode("log", &m) == 0 && m == SANDBOX_LOG);
	CHECK(sandbox_parse_mode("on", &m) == 0 && m == SANDBOX_ON);
	CHECK(sandbox_parse_mode("yes", &m) < 0);
	CHECK_CONTAINS(vmm_error(), "seccomp mode \"yes\": expected on, off or log");
	CHECK(strcmp(sandbox_mode_name(SANDBOX_LOG), "log") == 0);
}

int main(void)
{
	setup_files();
	RUN(an_io_thread_does_file_io_flush_and_wakeups);
	RUN(a_refused_call_ends_the_process_with_a_line_naming_it);
	RUN(clone3_fails_with_enosys_so_glibc_uses_clone);
	RUN(opening_a_file_fails_with_eacces_and_errors_still_read);
	RUN(a_vcpu_thread_may_use_kvm_ioctls_not_others);
	RUN(off_and_log_modes_let_everything_through);
	RUN(a_locked_main_thread_runs_the_loop_sockets_fd_passing_and_threads);
	RUN(a_locked_main_thread_gets_eacces_for_files_and_eperm_for_programs);
	RUN(a_locked_main_thread_ends_the_process_on_an_inet_socket);
	RUN(a_thread_started_after_the_lock_adds_its_own_filter);
	RUN(locking_twice_fails);
	RUN(modes_parse_and_name);
	return CHECK_DONE();
}
