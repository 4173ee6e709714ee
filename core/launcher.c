#include "launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"

extern char **environ;

/* ---- the wire: one SOCK_SEQPACKET message each, header then payload ---- */

enum {
	MSG_SPAWN = 1,	 /* a = argc, b = SPAWN_IN_FD; fds: out [, in]; payload: strings */
	MSG_KILL = 2,	 /* a = signal */
	MSG_ALLOW = 3,	 /* a = count; payload: names */
	MSG_SPAWNED = 10, /* a = pid, b = errno (0: started); payload: what failed */
	MSG_EXITED = 11,  /* a = exit code or -1, b = signal */
	MSG_ALLOWED = 12, /* b = errno; payload: what failed */
};
#define SPAWN_IN_FD 1

struct msg_hdr {
	uint32_t type, id;
	int32_t a, b;
};

static int send_msg(int fd, const struct msg_hdr *h, const void *payload, size_t len, const int *fds, int nfds)
{
	struct iovec iov[2] = { { (void *)h, sizeof(*h) }, { (void *)payload, len } };
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
	if (nfds > 0) {
		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	}
	ssize_t n;
	do
		n = sendmsg(fd, &m, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -1 : 0;
}

/* One message into buf (cap bytes, NUL added after it): 1 + its payload
 * length, 0 at end of stream, -1 on error (errno; EMSGSIZE for a cut
 * message or a short header). Up to 2 fds into fds (the rest closed), *nfds how many. */
static ssize_t recv_msg(int fd, struct msg_hdr *h, char *buf, size_t cap, int *fds, int *nfds, int flags)
{
	struct iovec iov[2] = { { h, sizeof(*h) }, { buf, cap } };
	union {
		char buf[CMSG_SPACE(8 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	ssize_t n;
	do
		n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | flags);
	while (n < 0 && errno == EINTR);
	*nfds = 0;
	if (n < 0)
		return -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int got[8];
		memcpy(got, CMSG_DATA(c), (k > 8 ? 8 : k) * sizeof(int));
		for (size_t i = 0; i < k && i < 8; i++) {
			if (*nfds < 2)
				fds[(*nfds)++] = got[i];
			else
				close(got[i]);
		}
	}
	if (n == 0)
		return 0;
	if ((size_t)n < sizeof(*h) || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		for (int i = 0; i < *nfds; i++)
			close(fds[i]);
		*nfds = 0;
		errno = EMSGSIZE;
		return -1;
	}
	size_t len = (size_t)n - sizeof(*h);
	buf[len] = '\0';
	return (ssize_t)len + 1;
}

/* ---- decoding (shared with the fuzz target) ---- */

/* n strings from buf[0..len) into out[]: each must end inside buf. */
static int split_strings(char *buf, size_t len, uint32_t n, char **out, const char *what)
{
	size_t at = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (at >= len)
			return vmm_fail("launcher: %s: %u strings announced, %u present", what, n, i);
		char *end = memchr(buf + at, '\0', len - at);
		if (!end)
			return vmm_fail("launcher: %s: string %u runs past the message", what, i + 1);
		out[i] = buf + at;
		at = (size_t)(end - buf) + 1;
	}
	if (at != len)
		return vmm_fail("launcher: %s: %zu bytes after the last string", what, len - at);
	return 0;
}

int launcher_parse_spawn(char *buf, size_t len, uint32_t argc, struct launcher_spawn_req *req)
{
	if (argc < 1 || argc > LAUNCHER_MAX_ARGS)
		return vmm_fail("launcher: spawn: argc %u is not 1 to %d", argc, LAUNCHER_MAX_ARGS);
	char *s[LAUNCHER_MAX_ARGS + 2];
	if (split_strings(buf, len, argc + 2, s, "spawn") < 0)
		return -1;
	if (s[0][0] == '\0')
		return vmm_fail("launcher: spawn: the program name is empty");
	req->argc = (int)argc;
	memcpy(req->argv, s, argc * sizeof(char *));
	req->argv[argc] = NULL;
	req->stdin_path = s[argc][0] ? s[argc] : NULL;
	req->stdout_path = s[argc + 1][0] ? s[argc + 1] : NULL;
	return 0;
}

int launcher_parse_allow(char *buf, size_t len, uint32_t n, char **names, size_t max)
{
	if (n > max)
		return vmm_fail("launcher: allow: %u programs, at most %zu", n, max);
	if (n == 0)
		return len == 0 ? 0 : vmm_fail("launcher: allow: %zu bytes after the last string", len);
	return split_strings(buf, len, n, names, "allow");
}

/* ---- the VMM's side ---- */

static struct {
	int fd;
	pid_t pid;
	launcher_exit_fn *on_exit;
	uint32_t *live; /* ids started and not yet reported ended */
	size_t nlive, cap;
} self = { .fd = -1 };

int launcher_fd(void) { return self.fd; }

static int track(uint32_t id)
{
	if (self.nlive == self.cap) {
		size_t cap = self.cap ? self.cap * 2 : 16;
		uint32_t *n = realloc(self.live, cap * sizeof(*n));
		if (!n)
			return vmm_fail("launcher: out of memory");
		self.live = n;
		self.cap = cap;
	}
	self.live[self.nlive++] = id;
	return 0;
}

static void untrack(uint32_t id)
{
	for (size_t i = 0; i < self.nlive; i++)
		if (self.live[i] == id) {
			self.live[i] = self.live[--self.nlive];
			return;
		}
}

/* The launcher went away: every command it had is lost. */
static int gone(const char *why)
{
	vmm_fail("the host command launcher (pid %d) is gone: %s", (int)self.pid, why);
	char msg[256];
	snprintf(msg, sizeof(msg), "%s", vmm_error());
	close(self.fd);
	self.fd = -1;
	(void)waitpid(self.pid, NULL, WNOHANG);
	while (self.nlive) {
		uint32_t id = self.live[--self.nlive];
		if (self.on_exit)
			self.on_exit(id, -1, 0, 1);
	}
	return vmm_fail("%s", msg);
}

int launcher_start(launcher_exit_fn *on_exit)
{
	self.on_exit = on_exit;
	if (self.fd >= 0)
		return 0;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return vmm_fail("launcher: socketpair: %s", strerror(errno));
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	/* the child's end at fd 3 (dup2 clears CLOEXEC); the VMM's end closes */
	posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
	posix_spawnattr_t at;
	posix_spawnattr_init(&at);
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	char *argv[] = { "vmm", "__launcher", "3", NULL };
	pid_t pid;
	int err = posix_spawn(&pid, "/proc/self/exe", &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(sv[1]);
	if (err) {
		close(sv[0]);
		return vmm_fail("launcher: starting /proc/self/exe: %s", strerror(err));
	}
	self.fd = sv[0];
	self.pid = pid;
	return 0;
}

/* Handles one message from the launcher (not a reply to wait_for). */
static void handle(const struct msg_hdr *h)
{
	if (h->type != MSG_EXITED)
		return;
	untrack(h->id);
	if (self.on_exit)
		self.on_exit(h->id, h->a, h->b, 0);
}

/* The next message from the launcher (flags: 0 or MSG_DONTWAIT): 1 and the
 * message, 0 if none is there (MSG_DONTWAIT), -1 once the launcher is gone. */
static int next_msg(struct msg_hdr *h, char *buf, size_t cap, int flags)
{
	int fds[2], nfds;
	ssize_t n = recv_msg(self.fd, h, buf, cap - 1, fds, &nfds, flags);
	for (int i = 0; i < nfds; i++)
		close(fds[i]); /* the launcher sends none */
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && (flags & MSG_DONTWAIT))
		return 0;
	if (n < 0)
		return gone(strerror(errno));
	if (n == 0)
		return gone("it closed its socket");
	return 1;
}

/* Reads messages until one of type `type` for id arrives (in *h, payload in
 * buf); the ends of other commands are handled on the way. */
static int wait_for(uint32_t type, uint32_t id, struct msg_hdr *h, char *buf, size_t cap)
{
	for (;;) {
		struct pollfd p = { .fd = self.fd, .events = POLLIN };
		int r = poll(&p, 1, 10000);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return gone(strerror(errno));
		if (r == 0)
			return gone("no answer in 10 s");
		if (next_msg(h, buf, cap, 0) < 0)
			return -1;
		if (h->type == type && h->id == id)
			return 0;
		handle(h);
	}
}

/* Sends request h (payload buf[0..len), fds) and waits for its answer of
 * type `reply` in *r: 0, or -1 with the launcher's message (in buf). */
static int transact(const struct msg_hdr *h, char *buf, size_t len, const int *fds, int nfds, uint32_t reply,
		    struct msg_hdr *r)
{
	if (send_msg(self.fd, h, buf, len, fds, nfds) < 0)
		return gone(strerror(errno));
	if (wait_for(reply, h->id, r, buf, 4096))
		return -1;
	if (r->b != 0)
		return vmm_fail("%s", buf[0] ? buf : strerror(r->b));
	return 0;
}

/* Appends s and its NUL to a message payload in buf (*len so far). */
static int pack(char *buf, size_t *len, const char *s, const char *what)
{
	size_t n = strlen(s) + 1;
	if (*len + n > LAUNCHER_MAX_MSG - sizeof(struct msg_hdr) - 1)
		return vmm_fail("%s: longer than %zu bytes", what, LAUNCHER_MAX_MSG - sizeof(struct msg_hdr) - 1);
	memcpy(buf + *len, s, n);
	*len += n;
	return 0;
}

/* A buffer for one request, or NULL with a message (no launcher, no
 * memory). */
static char *request_buffer(void)
{
	if (self.fd < 0) {
		vmm_fail("the host command launcher is not running");
		return NULL;
	}
	char *buf = malloc(LAUNCHER_MAX_MSG);
	if (!buf)
		vmm_fail("launcher: out of memory");
	return buf;
}

int launcher_spawn(uint32_t id, const struct launcher_cmd *cmd, pid_t *pid)
{
	char *buf = request_buffer();
	if (!buf)
		return -1;
	size_t len = 0;
	int argc = 0;
	int rc = 0;
	const char *tail[2] = { cmd->stdin_path ? cmd->stdin_path : "", cmd->stdout_path ? cmd->stdout_path : "" };
	for (; cmd->argv[argc]; argc++)
		;
	if (argc < 1 || argc > LAUNCHER_MAX_ARGS)
		rc = vmm_fail("argv must have 1 to %d strings", LAUNCHER_MAX_ARGS);
	for (int i = 0; !rc && i < argc + 2; i++)
		rc = pack(buf, &len, i < argc ? cmd->argv[i] : tail[i - argc], cmd->argv[0]);
	int fds[2] = { cmd->out_fd, cmd->in_fd };
	struct msg_hdr h = { MSG_SPAWN, id, argc, cmd->in_fd >= 0 ? SPAWN_IN_FD : 0 }, r;
	if (!rc)
		rc = transact(&h, buf, len, fds, cmd->in_fd >= 0 ? 2 : 1, MSG_SPAWNED, &r);
	if (!rc) {
		*pid = r.a;
		rc = track(id);
	}
	free(buf);
	return rc;
}

int launcher_kill(uint32_t id, int sig)
{
	if (self.fd < 0)
		return vmm_fail("the host command launcher is not running");
	struct msg_hdr h = { MSG_KILL, id, sig, 0 };
	if (send_msg(self.fd, &h, NULL, 0, NULL, 0) < 0)
		return gone(strerror(errno));
	return 0;
}

int launcher_dispatch(void)
{
	char buf[4096];
	struct msg_hdr h;
	int got = 0;
	while (self.fd >= 0 && (got = next_msg(&h, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		handle(&h);
	return got < 0 ? -1 : 0;
}

int launcher_allow(const char *const *programs, size_t n)
{
	char *buf = request_buffer();
	if (!buf)
		return -1;
	size_t len = 0;
	int rc = 0;
	if (n > LAUNCHER_MAX_ARGS)
		rc = vmm_fail("at most %d programs may be allowed, not %zu", LAUNCHER_MAX_ARGS, n);
	for (size_t i = 0; !rc && i < n; i++)
		rc = programs[i][0] ? pack(buf, &len, programs[i], "the allowed programs' names")
				    : vmm_fail("an allowed program's name is empty");
	struct msg_hdr h = { MSG_ALLOW, 0, (int32_t)n, 0 }, r;
	if (!rc)
		rc = transact(&h, buf, len, NULL, 0, MSG_ALLOWED, &r);
	free(buf);
	return rc;
}

/* ---- the launcher's side ---- */

struct child {
	uint32_t id;
	pid_t pid;
};

static struct {
	struct child *kids;
	size_t nkids, cap;
	bool locked;	  /* an allowlist was set */
	char **allowed;	  /* resolved real paths */
	size_t nallowed;
} L;

static void reply(int fd, uint32_t type, uint32_t id, int a, int err, const char *text)
{
	struct msg_hdr h = { type, id, a, err };
	(void)send_msg(fd, &h, text, text ? strlen(text) + 1 : 0, NULL, 0);
}

/* name -> the real path of the executable PATH (or the name, if it has a
 * '/') leads to, malloc'd; NULL with errno. */
static char *resolve(const char *name)
{
	if (strchr(name, '/'))
		return realpath(name, NULL);
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	char cand[PATH_MAX];
	for (const char *p = path; p;) {
		const char *colon = strchr(p, ':');
		size_t dlen = colon ? (size_t)(colon - p) : strlen(p);
		if (snprintf(cand, sizeof(cand), "%.*s/%s", (int)dlen, dlen ? p : ".", name) < (int)sizeof(cand) &&
		    access(cand, X_OK) == 0) {
			struct stat st;
			if (stat(cand, &st) == 0 && S_ISREG(st.st_mode))
				return realpath(cand, NULL);
		}
		p = colon ? colon + 1 : NULL;
	}
	errno = ENOENT;
	return NULL;
}

static void do_allow(int fd, char *buf, size_t len, uint32_t n)
{
	char *names[LAUNCHER_MAX_ARGS];
	char msg[512];
	if (L.locked) {
		reply(fd, MSG_ALLOWED, 0, 0, EPERM, "the allowed host commands are already set and cannot change");
		return;
	}
	if (launcher_parse_allow(buf, len, n, names, LAUNCHER_MAX_ARGS) < 0) {
		reply(fd, MSG_ALLOWED, 0, 0, EINVAL, vmm_error());
		return;
	}
	char **res = calloc(n ? n : 1, sizeof(char *));
	if (!res) {
		reply(fd, MSG_ALLOWED, 0, 0, ENOMEM, "launcher: out of memory");
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (!(res[i] = resolve(names[i]))) {
			snprintf(msg, sizeof(msg), "allowed host command %s: %s", names[i], strerror(errno));
			for (uint32_t j = 0; j < i; j++)
				free(res[j]);
			free(res);
			reply(fd, MSG_ALLOWED, 0, 0, ENOENT, msg);
			return;
		}
	}
	L.allowed = res;
	L.nallowed = n;
	L.locked = true;
	reply(fd, MSG_ALLOWED, 0, 0, 0, NULL);
}

static int open_redirect(const char *path, int flags, const char *what, char *msg, size_t msglen)
{
	int fd = open(path, flags | O_CLOEXEC, 0644);
	if (fd < 0)
		snprintf(msg, msglen, "%s %s: %s", what, path, strerror(errno));
	return fd;
}

static void do_spawn(int sock, const struct msg_hdr *h, char *buf, size_t len, int *fds, int nfds)
{
	struct launcher_spawn_req req;
	char msg[512] = "";
	int err = 0, in = -1, out = -1;
	char *exe = NULL;
	bool want_in = h->b & SPAWN_IN_FD;
	if (nfds != (want_in ? 2 : 1)) {
		snprintf(msg, sizeof(msg), "launcher: spawn: %d fds sent, %d expected", nfds, want_in ? 2 : 1);
		err = EINVAL;
	} else if (h->a < 1 || launcher_parse_spawn(buf, len, (uint32_t)h->a, &req) < 0) {
		snprintf(msg, sizeof(msg), "%s", h->a < 1 ? "launcher: spawn: no program" : vmm_error());
		err = EINVAL;
	} else if (want_in && req.stdin_path) {
		snprintf(msg, sizeof(msg), "launcher: spawn: stdin is both a pipe and %s", req.stdin_path);
		err = EINVAL;
	}
	if (!err && L.locked) {
		exe = resolve(req.argv[0]);
		bool ok = false;
		for (size_t i = 0; exe && i < L.nallowed; i++)
			ok |= strcmp(exe, L.allowed[i]) == 0;
		if (!ok) {
			snprintf(msg, sizeof(msg), "%s: not among the host commands allowed after the VMM was locked",
				 req.argv[0]);
			err = EPERM;
		}
	}
	if (!err && req.stdin_path && (in = open_redirect(req.stdin_path, O_RDONLY, "stdin", msg, sizeof(msg))) < 0)
		err = errno;
	if (!err && req.stdout_path &&
	    (out = open_redirect(req.stdout_path, O_WRONLY | O_CREAT | O_TRUNC, "stdout", msg, sizeof(msg))) < 0)
		err = errno;
	if (!err && !want_in && in < 0 &&
	    (in = open_redirect("/dev/null", O_RDONLY, "stdin", msg, sizeof(msg))) < 0)
		err = errno;
	int ep[2] = { -1, -1 };
	if (!err && pipe2(ep, O_CLOEXEC) < 0) {
		err = errno;
		snprintf(msg, sizeof(msg), "launcher: pipe: %s", strerror(err));
	}
	pid_t pid = -1;
	if (!err) {
		int stdio[3] = { want_in ? fds[1] : in, out >= 0 ? out : fds[0], fds[0] };
		pid = fork();
		if (pid == 0) {
			close(ep[0]);
			/* above 2 first, so that dup2 onto 0..2 cannot clobber a source */
			for (int i = 0; i < 3; i++)
				if ((stdio[i] = fcntl(stdio[i], F_DUPFD_CLOEXEC, 10)) < 0)
					goto fail;
			for (int i = 0; i < 3; i++)
				if (dup2(stdio[i], i) < 0)
					goto fail;
			sigset_t none;
			sigemptyset(&none);
			sigprocmask(SIG_SETMASK, &none, NULL);
			signal(SIGPIPE, SIG_DFL); /* the launcher ignores it; exec would keep that */
			/* its own process group: a kill reaches a whole pipeline (sh -c
			 * 'a | b'), not only its shell */
			(void)setpgid(0, 0);
			if (exe)
				execve(exe, req.argv, environ);
			else
				execvp(req.argv[0], req.argv);
fail:;
			int e = errno;
			(void)!write(ep[1], &e, sizeof(e));
			_exit(127);
		}
		close(ep[1]);
		if (pid < 0) {
			err = errno;
			snprintf(msg, sizeof(msg), "launcher: fork: %s", strerror(err));
		} else {
			int e = 0;
			ssize_t k;
			do
				k = read(ep[0], &e, sizeof(e));
			while (k < 0 && errno == EINTR);
			if (k == sizeof(e)) {
				err = e;
				snprintf(msg, sizeof(msg), "%s: %s", req.argv[0], strerror(e));
				(void)waitpid(pid, NULL, 0);
				pid = -1;
			}
		}
		close(ep[0]);
	}
	free(exe);
	if (in >= 0)
		close(in); /* /dev/null too, when it stood in */
	if (out >= 0)
		close(out);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (!err) {
		if (L.nkids == L.cap) {
			size_t cap = L.cap ? L.cap * 2 : 16;
			struct child *n = realloc(L.kids, cap * sizeof(*n));
			if (!n) {
				kill(pid, SIGKILL);
				(void)waitpid(pid, NULL, 0);
				reply(sock, MSG_SPAWNED, h->id, 0, ENOMEM, "launcher: out of memory");
				return;
			}
			L.kids = n;
			L.cap = cap;
		}
		L.kids[L.nkids++] = (struct child){ h->id, pid };
	}
	reply(sock, MSG_SPAWNED, h->id, err ? 0 : pid, err, err ? msg : NULL);
}

/* The command's process group (see the fork), or the command alone if the
 * group is gone; never after it was reaped (its pid may be reused). */
static void do_kill(const struct msg_hdr *h)
{
	for (size_t i = 0; i < L.nkids; i++)
		if (L.kids[i].id == h->id && h->a > 0 && h->a < _NSIG && kill(-L.kids[i].pid, h->a) < 0)
			(void)kill(L.kids[i].pid, h->a);
}

static void reap(int sock)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (size_t i = 0; i < L.nkids; i++) {
			if (L.kids[i].pid != pid)
				continue;
			int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
			int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
			reply(sock, MSG_EXITED, L.kids[i].id, code, sig, NULL);
			L.kids[i] = L.kids[--L.nkids];
			break;
		}
	}
}

int launcher_main(int sock)
{
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0)
		return 1;
	int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		fprintf(stderr, "vmm launcher: signalfd: %s\n", strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	if (fcntl(sock, F_SETFD, FD_CLOEXEC) < 0)
		return 1;
	char *buf = malloc(LAUNCHER_MAX_MSG + 1);
	if (!buf)
		return 1;
	for (;;) {
		struct pollfd p[2] = { { .fd = sock, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (p[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == sizeof(si))
				;
			reap(sock);
		}
		if (!p[0].revents)
			continue;
		struct msg_hdr h;
		int fds[2], nfds;
		ssize_t n = recv_msg(sock, &h, buf, LAUNCHER_MAX_MSG, fds, &nfds, 0);
		if (n == 0 || (n < 0 && errno != EMSGSIZE))
			return 0; /* the VMM is gone: its commands run on as orphans */
		if (n < 0)
			continue; /* a message cut short: dropped */
		size_t len = (size_t)n - 1;
		switch (h.type) {
		case MSG_SPAWN: do_spawn(sock, &h, buf, len, fds, nfds); nfds = 0; break;
		case MSG_KILL: do_kill(&h); break;
		case MSG_ALLOW: do_allow(sock, buf, len, (uint32_t)h.a); break;
		default: break;
		}
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
	}
}
