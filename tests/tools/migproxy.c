/* migproxy: a man in the middle for failure tests of local migration.
 *
 *   migproxy LISTEN_PATH UPSTREAM_PATH [--truncate-after N] [--flip-byte OFFSET]
 *            [--wrong-fd] [--close-after-type T]
 *
 * Listens on the UNIX stream socket LISTEN_PATH (it appears, by rename,
 * only once it accepts connections), accepts ONE connection (the migration
 * target), connects to UPSTREAM_PATH (the source VMM's control socket) and
 * forwards bytes both ways, SCM_RIGHTS fds included.
 *
 * Both directions are cut into sections (migstream.h: 24-byte header +
 * len) and each section is forwarded once complete, its fds on the
 * sendmsg() that carries its header, as mig_send() does: the receiver
 * gets the fds with the header's bytes. The fds of one recvmsg() belong to
 * the last section header that starts in those bytes (the kernel ends a
 * read after the message that carried fds). A stream that is not made of
 * sections is forwarded raw as it comes.
 *
 * Faults, on the source->target direction only, offsets counted from its
 * first byte:
 *   --truncate-after N   forward exactly N bytes, then close both sides
 *   --flip-byte OFFSET   xor 0x01 into that byte (before any CRC check)
 *   --wrong-fd           the fds of MIG_BACKEND sections become a pipe's read end
 *   --close-after-type T close both sides right after the first complete
 *                        section of type T (a number or a name: "vcpu")
 *   --truncate-in-type T close both sides in the middle of the first
 *                        section of type T
 *   --flip-in-type T     xor 0x01 into the middle byte of the payload of the
 *                        first section of type T
 *   --plan-count N       (target->source) rewrite the device count of the
 *                        target's PLAN to N, with a valid CRC, so that the
 *                        source's own checks must refuse it
 *   --plan-take I        (target->source) make the target's PLAN take the
 *                        backend of device I (its byte becomes 1), with a
 *                        valid CRC, whether or not the source offered it
 *   --stall-after-type T forward nothing more from the source after the
 *                        first section of type T, keeping both connections
 *                        open ("migproxy: stalled after <type>")
 *   --kill-target-at-type T
 *                        when the first section of type T from the source
 *                        is complete, SIGKILL the target (the pid in its
 *                        HELLO) instead of forwarding it, wait until it is
 *                        gone, then close both sides: to the source, the
 *                        target died right after that section went out
 * Each fault done prints one line on stderr ("migproxy: flipped byte 1234
 * (section vcpu)"), and a last line sums up. Exits 0 once either side
 * closed (or a fault closed both), after forwarding what was pending;
 * 1 on a usage or setup error. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "migstream.h"

#define READ_CHUNK (256u << 10)
#define QUEUE_LIMIT (8u << 20)  /* stop reading a side while this much waits for the other */
#define FLUSH_TIMEOUT_MS 5000   /* at the end, for pending output */

struct faults {
	long long truncate_after; /* -1: none */
	long long flip_byte;      /* -1: none */
	bool wrong_fd;
	unsigned close_after_type; /* 0: none */
	unsigned truncate_in_type; /* 0: none; else cut in the middle of the first such section */
	unsigned flip_in_type;     /* 0: none; else flip the middle byte of its payload */
	unsigned stall_after_type; /* 0: none; else forward nothing more after it */
	long long plan_count;      /* -1: none; else the target's PLAN claims this many devices */
	long long plan_take;       /* -1: none; else the target's PLAN takes device I's backend */
	unsigned kill_at_type;     /* 0: none; else kill the target when this section arrives */
};

static struct faults faults = { -1, -1, false, 0, 0, 0, 0, -1, -1, 0 };
static uint32_t target_pid; /* from the target's HELLO; 0 until then */
static bool stalled; /* --stall-after-type happened: source->target holds everything */
static bool closing; /* a fault ends the session once the output is flushed */

/* Fds received, waiting to go out with the section at stream offset off. */
struct fd_mark {
	uint64_t off;
	int fd;
};

/* One piece of output: bytes, and fds for its first sendmsg(). */
struct out_msg {
	struct out_msg *next;
	uint8_t *data;
	size_t len, sent;
	int fds[MIG_MAX_FDS];
	unsigned nfds;
};

/* One direction of the proxy. */
struct dir {
	const char *name; /* "source->target" */
	const char *from; /* "source" */
	int in, out;
	bool faults;

	uint8_t *buf; /* received, not yet forwarded; buf[0] is at stream offset base */
	size_t len, cap;
	uint64_t base;
	struct fd_mark *marks;
	size_t nmarks, markcap;
	bool raw; /* not a section stream: bytes go out as they come */
	bool eof;

	struct out_msg *head, *tail;
	size_t queued;
	uint64_t forwarded;
	unsigned sections, fds_passed;
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("migproxy: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		say("out of memory");
		exit(1);
	}
	return p;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* --- output ----------------------------------------------------------------- */

static void queue_out(struct dir *d, const uint8_t *data, size_t len, const int *fds, unsigned nfds)
{
	struct out_msg *m = xrealloc(NULL, sizeof(*m));
	memset(m, 0, sizeof(*m));
	m->data = xrealloc(NULL, len);
	memcpy(m->data, data, len);
	m->len = len;
	memcpy(m->fds, fds, nfds * sizeof(int));
	m->nfds = nfds;
	if (d->tail)
		d->tail->next = m;
	else
		d->head = m;
	d->tail = m;
	d->queued += len;
	d->fds_passed += nfds;
}

static void close_fds(int *fds, unsigned *nfds)
{
	for (unsigned i = 0; i < *nfds; i++)
		close(fds[i]);
	*nfds = 0;
}

static void pop_out(struct dir *d)
{
	struct out_msg *m = d->head;
	d->head = m->next;
	if (!d->head)
		d->tail = NULL;
	close_fds(m->fds, &m->nfds);
	free(m->data);
	free(m);
}

/* Writes what the socket takes now. 0 (possibly with output left: wait
 * for POLLOUT), or -1 when the receiving side is gone. */
static int write_some(struct dir *d)
{
	while (d->head) {
		struct out_msg *m = d->head;
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(sizeof(int) * MIG_MAX_FDS)];
		} control;
		struct iovec iov = { .iov_base = m->data + m->sent, .iov_len = m->len - m->sent };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (m->nfds) {
			memset(&control, 0, sizeof(control));
			msg.msg_control = control.buf;
			msg.msg_controllen = CMSG_SPACE(sizeof(int) * m->nfds);
			struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int) * m->nfds);
			memcpy(CMSG_DATA(cm), m->fds, sizeof(int) * m->nfds);
		}
		ssize_t n = m->len ? sendmsg(d->out, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) : 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n < 0) {
			say("%s: sending: %s", d->name, strerror(errno));
			return -1;
		}
		close_fds(m->fds, &m->nfds); /* they went with the first bytes */
		m->sent += (size_t)n;
		d->queued -= (size_t)n;
		if (m->sent == m->len)
			pop_out(d);
	}
	return 0;
}

/* --- faults and forwarding -------------------------------------------------- */

static const char *section_name(uint32_t type)
{
	return type ? mig_type_name(type) : "unknown";
}

/* Queues len bytes of the stream from its current offset (d->forwarded),
 * applying the byte faults. type 0: raw bytes, no known section. */
static void emit(struct dir *d, uint8_t *data, size_t len, int *fds, unsigned nfds, uint32_t type)
{
	uint64_t start = d->forwarded;
	if (d->faults && faults.flip_byte >= 0 && (uint64_t)faults.flip_byte >= start &&
	    (uint64_t)faults.flip_byte < start + len) {
		data[faults.flip_byte - (long long)start] ^= 0x01;
		say("flipped byte %lld (section %s)", faults.flip_byte, section_name(type));
	}
	if (d->faults && faults.truncate_after >= 0 && start <= (uint64_t)faults.truncate_after &&
	    start + len >= (uint64_t)faults.truncate_after) {
		size_t keep = (size_t)((uint64_t)faults.truncate_after - start);
		if (!closing)
			say("truncated after %lld bytes (in section %s, %zu of its %zu bytes sent)",
			    faults.truncate_after, section_name(type), keep, len);
		len = keep;
		closing = true;
		if (!len)
			close_fds(fds, &nfds);
	}
	if (len || nfds)
		queue_out(d, data, len, fds, nfds);
	d->forwarded += len;
}

/* Moves the fds marked before stream offset end into fds[] (at most
 * MIG_MAX_FDS; extra ones are closed). */
static unsigned take_fds(struct dir *d, uint64_t end, int fds[MIG_MAX_FDS])
{
	unsigned n = 0;
	size_t kept = 0;
	for (size_t i = 0; i < d->nmarks; i++) {
		if (d->marks[i].off >= end)
			d->marks[kept++] = d->marks[i];
		else if (n < MIG_MAX_FDS)
			fds[n++] = d->marks[i].fd;
		else
			close(d->marks[i].fd);
	}
	d->nmarks = kept;
	return n;
}

/* --wrong-fd: every fd becomes the read end of a fresh pipe. */
static void replace_with_pipes(int *fds, unsigned nfds, uint32_t id)
{
	for (unsigned i = 0; i < nfds; i++) {
		int p[2];
		if (pipe2(p, O_CLOEXEC)) {
			say("pipe: %s", strerror(errno));
			exit(1);
		}
		close(fds[i]);
		close(p[1]);
		fds[i] = p[0];
	}
	say("replaced the %u fds of section backend %u with a pipe's read end", nfds, id);
}

static void consume(struct dir *d, size_t n)
{
	memmove(d->buf, d->buf + n, d->len - n);
	d->len -= n;
	d->base += n;
}

/* --plan-count and --plan-take: the PLAN section (u32 device count, then
 * one byte per device: 1 takes its backend) at the front of the buffer is
 * rewritten and its header re-encoded, so that its CRC stays valid. */
static void rewrite_plan(struct dir *d, size_t n, uint32_t id, unsigned nfds)
{
	uint8_t *payload = d->buf + MIG_HEADER_SIZE;
	size_t len = n - MIG_HEADER_SIZE;
	bool changed = false;
	if (faults.plan_count >= 0 && len >= 4) {
		uint32_t v = (uint32_t)faults.plan_count;
		for (int i = 0; i < 4; i++)
			payload[i] = (uint8_t)(v >> (8 * i));
		say("rewrote the plan's device count to %u (checksum recomputed)", v);
		faults.plan_count = -1;
		changed = true;
	}
	if (faults.plan_take >= 0 && len >= 4 && (unsigned long long)faults.plan_take < len - 4) {
		payload[4 + faults.plan_take] = 1;
		say("made the plan take the backend of device %lld (checksum recomputed)", faults.plan_take);
		faults.plan_take = -1;
		changed = true;
	}
	if (changed)
		mig_header_encode(d->buf, MIG_PLAN, id, payload, (uint32_t)len, nfds);
}

/* --kill-target-at-type: SIGKILL, then wait until the process is gone. */
static void kill_target(uint32_t type)
{
	if (!target_pid) {
		say("no HELLO from the target: nothing to kill at %s", section_name(type));
		return;
	}
	int pidfd = pidfd_open((pid_t)target_pid, 0);
	if (pidfd < 0 || pidfd_send_signal(pidfd, SIGKILL, NULL, 0) < 0) {
		say("cannot kill target process %u: %s", target_pid, strerror(errno));
	} else {
		struct pollfd p = { .fd = pidfd, .events = POLLIN };
		if (poll(&p, 1, 10000) != 1)
			say("target process %u did not exit within 10 s of SIGKILL", target_pid);
		else
			say("killed target process %u when the source's %s section arrived", target_pid,
			    section_name(type));
	}
	if (pidfd >= 0)
		close(pidfd);
}

/* Forwards the complete section of n bytes at the front of the buffer. */
static void forward_section(struct dir *d, size_t n, uint32_t type, uint32_t id)
{
	if (!d->faults && type == MIG_HELLO && n >= MIG_HEADER_SIZE + 4 && !target_pid) {
		const uint8_t *p = d->buf + MIG_HEADER_SIZE;
		target_pid = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
	}
	if (d->faults && faults.kill_at_type == type) {
		faults.kill_at_type = 0;
		kill_target(type);
		consume(d, n);
		closing = true;
		return;
	}
	int fds[MIG_MAX_FDS];
	unsigned nfds = take_fds(d, d->base + n, fds);
	if (d->faults && faults.wrong_fd && type == MIG_BACKEND && nfds)
		replace_with_pipes(fds, nfds, id);
	if (!d->faults && type == MIG_PLAN)
		rewrite_plan(d, n, id, nfds);
	if (d->faults && faults.truncate_in_type == type) {
		faults.truncate_after = (long long)(d->forwarded + n / 2);
		faults.truncate_in_type = 0;
	}
	if (d->faults && faults.flip_in_type == type && n > MIG_HEADER_SIZE) {
		faults.flip_byte = (long long)(d->forwarded + MIG_HEADER_SIZE + (n - MIG_HEADER_SIZE) / 2);
		faults.flip_in_type = 0;
	}
	uint64_t before = d->forwarded;
	emit(d, d->buf, n, fds, nfds, type);
	consume(d, n);
	if (d->forwarded - before == n) /* not cut by --truncate-after */
		d->sections++;
	if (d->faults && faults.stall_after_type == type) {
		say("stalled after %s (type %u, id %u)", section_name(type), type, id);
		faults.stall_after_type = 0;
		stalled = true;
	}
	if (d->faults && !closing && faults.close_after_type == type) {
		say("closing both sides after section %s (type %u, id %u)", section_name(type), type, id);
		closing = true;
	}
}

/* Forwards everything buffered as it is (a raw stream, or the rest of an
 * incomplete section when its sender closed). */
static void forward_raw(struct dir *d)
{
	int fds[MIG_MAX_FDS];
	unsigned nfds = take_fds(d, UINT64_MAX, fds);
	uint32_t type = !d->raw && d->len >= 8 ? (uint32_t)d->buf[6] | (uint32_t)d->buf[7] << 8 : 0;
	if (d->len || nfds)
		emit(d, d->buf, d->len, fds, nfds, type <= MIG_TYPE_MAX ? type : 0);
	consume(d, d->len);
}

/* Forwards every complete section in the buffer; on a header that is not
 * one, says so and switches to raw forwarding. */
static void forward_ready(struct dir *d)
{
	while (!d->raw && !closing && !(d->faults && stalled) && d->len >= MIG_HEADER_SIZE) {
		struct mig_header h;
		if (mig_header_decode(d->buf, &h)) {
			say("%s: byte %llu: not a section header (%s); forwarding the rest raw", d->name,
			    (unsigned long long)d->base, vmm_error());
			d->raw = true;
			break;
		}
		if (d->len < MIG_HEADER_SIZE + (size_t)h.len)
			return;
		forward_section(d, MIG_HEADER_SIZE + h.len, h.type, h.id);
	}
	if (d->raw && !closing)
		forward_raw(d);
}

/* --- input ------------------------------------------------------------------ */

/* Where the fds of a read of [from, from + n) belong: the last section
 * header that starts in it (the buffer starts at a section boundary),
 * else the read's first byte. */
static uint64_t fd_offset(const struct dir *d, size_t from)
{
	size_t at = from;
	if (d->raw)
		return d->base + from;
	for (size_t s = 0; s < d->len;) {
		if (s >= from)
			at = s;
		if (d->len - s < MIG_HEADER_SIZE)
			break;
		s += MIG_HEADER_SIZE + (size_t)le32(d->buf + s + 12);
	}
	return d->base + at;
}

static void mark_fds(struct dir *d, struct msghdr *msg, uint64_t off)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			if (d->nmarks == d->markcap) {
				d->markcap = d->markcap ? 2 * d->markcap : 64;
				d->marks = xrealloc(d->marks, d->markcap * sizeof(*d->marks));
			}
			int fd;
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			d->marks[d->nmarks++] = (struct fd_mark){ off, fd };
		}
	}
}

/* One recvmsg() from d->in, then forwards what is complete. Sets d->eof
 * when the sending side closed (or failed). */
static void read_some(struct dir *d)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * MIG_MAX_FDS)];
	} control;
	if (d->cap - d->len < READ_CHUNK) {
		d->cap = d->len + READ_CHUNK;
		d->buf = xrealloc(d->buf, d->cap);
	}
	struct iovec iov = { .iov_base = d->buf + d->len, .iov_len = READ_CHUNK };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			      .msg_controllen = sizeof(control.buf) };
	ssize_t n = recvmsg(d->in, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		if (n < 0)
			say("%s: receiving: %s", d->name, strerror(errno));
		d->eof = true;
		return;
	}
	if (msg.msg_flags & MSG_CTRUNC)
		say("%s: more than %d fds in one read: some were lost", d->name, MIG_MAX_FDS);
	size_t from = d->len;
	d->len += (size_t)n;
	mark_fds(d, &msg, fd_offset(d, from));
	forward_ready(d);
}

/* --- sockets ---------------------------------------------------------------- */

static int unix_addr(const char *path, struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a->sun_path)) {
		say("%s: path too long for a UNIX socket", path);
		return -1;
	}
	strcpy(a->sun_path, path);
	return 0;
}

/* Binds a temporary name, listens, then renames it to path: a client
 * that sees path can connect. */
static int listen_at(const char *path)
{
	char tmp[sizeof(((struct sockaddr_un *)0)->sun_path) + 32];
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	struct sockaddr_un a;
	if (unix_addr(tmp, &a))
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		say("socket: %s", strerror(errno));
		return -1;
	}
	unlink(tmp);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 1) || rename(tmp, path)) {
		say("listening on %s: %s", path, strerror(errno));
		unlink(tmp);
		close(fd);
		return -1;
	}
	return fd;
}

static int connect_to(const char *path)
{
	struct sockaddr_un a;
	if (unix_addr(path, &a))
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		say("socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		say("connecting to %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int set_nonblocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* --- the session ------------------------------------------------------------ */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes what is pending in both directions, for at most
 * FLUSH_TIMEOUT_MS; a side that is gone or not reading is given up. */
static void flush_all(struct dir *dirs[2])
{
	int64_t deadline = now_ms() + FLUSH_TIMEOUT_MS;
	bool dead[2] = { false, false };
	for (;;) {
		struct pollfd p[2];
		int np = 0;
		struct dir *which[2];
		for (int i = 0; i < 2; i++) {
			if (!dead[i] && dirs[i]->head && write_some(dirs[i]))
				dead[i] = true;
			if (!dead[i] && dirs[i]->head) {
				p[np] = (struct pollfd){ .fd = dirs[i]->out, .events = POLLOUT };
				which[np++] = dirs[i];
			}
		}
		int64_t left = deadline - now_ms();
		if (!np)
			return;
		if (left <= 0) {
			say("gave up flushing: a side does not read");
			return;
		}
		if (poll(p, (nfds_t)np, (int)left) < 0 && errno != EINTR)
			return;
		for (int k = 0; k < np; k++)
			if (p[k].revents & (POLLERR | POLLHUP))
				dead[which[k] == dirs[0] ? 0 : 1] = true;
	}
}

/* Forwards until a side closes or a fault ends it. */
static void relay(struct dir *s2t, struct dir *t2s)
{
	struct dir *dirs[2] = { s2t, t2s };
	bool gone = false; /* a receiving side failed */
	while (!closing && !gone && !s2t->eof && !t2s->eof) {
		struct pollfd p[2];
		/* p[i] watches dirs[i]->in for reading and dirs[1-i]->out (the same fd) for writing. */
		for (int i = 0; i < 2; i++) {
			p[i] = (struct pollfd){ .fd = dirs[i]->in };
			if (dirs[i]->queued < QUEUE_LIMIT)
				p[i].events |= POLLIN;
			if (dirs[1 - i]->head)
				p[i].events |= POLLOUT;
		}
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			say("poll: %s", strerror(errno));
			return;
		}
		for (int i = 0; i < 2 && !closing; i++) {
			if (p[i].revents & (POLLIN | POLLHUP | POLLERR))
				read_some(dirs[i]);
			if ((p[i].revents & POLLOUT) && write_some(dirs[1 - i]))
				gone = true;
		}
	}
	for (int i = 0; i < 2; i++) {
		if (dirs[i]->eof && !closing)
			say("%s closed the connection", dirs[i]->from);
		if (!closing && !(dirs[i]->faults && stalled)) /* what a closed sender sent still goes */
			forward_raw(dirs[i]);
	}
	flush_all(dirs);
}

static void free_dir(struct dir *d)
{
	while (d->head)
		pop_out(d);
	for (size_t i = 0; i < d->nmarks; i++)
		close(d->marks[i].fd);
	free(d->marks);
	free(d->buf);
}

/* --- arguments -------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: migproxy LISTEN_PATH UPSTREAM_PATH [--truncate-after N] [--flip-byte OFFSET]\n"
			"                [--wrong-fd] [--close-after-type T] [--truncate-in-type T]\n"
			"                [--flip-in-type T] [--stall-after-type T] [--plan-count N]\n"
			"                [--plan-take I] [--kill-target-at-type T]\n");
	exit(1);
}

static long long parse_count(const char *opt, const char *s)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 0);
	if (errno || end == s || *end || v < 0) {
		say("%s %s: not a byte count", opt, s);
		exit(1);
	}
	return v;
}

static unsigned parse_type(const char *s)
{
	for (unsigned t = 1; t <= MIG_TYPE_MAX; t++)
		if (!strcmp(s, mig_type_name(t)))
			return t;
	long long v = parse_count("--close-after-type", s);
	if (v < 1 || v > MIG_TYPE_MAX) {
		say("--close-after-type %s: not a section type (1..%d or a name)", s, MIG_TYPE_MAX);
		exit(1);
	}
	return (unsigned)v;
}

static void parse_faults(int argc, char **argv)
{
	for (int i = 3; i < argc; i++) {
		const char *opt = argv[i];
		if (!strcmp(opt, "--wrong-fd")) {
			faults.wrong_fd = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		const char *val = argv[++i];
		if (!strcmp(opt, "--truncate-after"))
			faults.truncate_after = parse_count(opt, val);
		else if (!strcmp(opt, "--flip-byte"))
			faults.flip_byte = parse_count(opt, val);
		else if (!strcmp(opt, "--close-after-type"))
			faults.close_after_type = parse_type(val);
		else if (!strcmp(opt, "--truncate-in-type"))
			faults.truncate_in_type = parse_type(val);
		else if (!strcmp(opt, "--flip-in-type"))
			faults.flip_in_type = parse_type(val);
		else if (!strcmp(opt, "--plan-count"))
			faults.plan_count = parse_count(opt, val);
		else if (!strcmp(opt, "--plan-take"))
			faults.plan_take = parse_count(opt, val);
		else if (!strcmp(opt, "--stall-after-type"))
			faults.stall_after_type = parse_type(val);
		else if (!strcmp(opt, "--kill-target-at-type"))
			faults.kill_at_type = parse_type(val);
		else
			usage();
	}
}

int main(int argc, char **argv)
{
	if (argc < 3)
		usage();
	parse_faults(argc, argv);
	int lfd = listen_at(argv[1]);
	if (lfd < 0)
		return 1;
	int target = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (target < 0)
		say("accept on %s: %s", argv[1], strerror(errno));
	close(lfd);
	unlink(argv[1]);
	if (target < 0)
		return 1;
	int source = connect_to(argv[2]);
	if (source < 0 || set_nonblocking(source) || set_nonblocking(target)) {
		close(target);
		return 1;
	}

	struct dir s2t = { .name = "source->target", .from = "source", .in = source, .out = target, .faults = true };
	struct dir t2s = { .name = "target->source", .from = "target", .in = target, .out = source };
	if (faults.truncate_after == 0) { /* nothing at all goes through */
		say("truncated after 0 bytes");
		closing = true;
	}
	relay(&s2t, &t2s);
	say("done: source->target %llu bytes, %u sections, %u fds; target->source %llu bytes, %u sections, %u fds",
	    (unsigned long long)s2t.forwarded, s2t.sections, s2t.fds_passed, (unsigned long long)t2s.forwarded,
	    t2s.sections, t2s.fds_passed);
	close(source);
	close(target);
	free_dir(&s2t);
	free_dir(&t2s);
	return 0;
}
