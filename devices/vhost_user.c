/* The vhost-user front end (vhost_user.h): requests out, replies checked. */
#include "vhost_user.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "err.h"

#define DEFAULT_TIMEOUT_MS 5000
#define STATE_SIZE 8          /* u32 index, u32 num */
#define ADDR_SIZE 40          /* u32 index, u32 flags, u64 desc, used, avail, log */
#define CONFIG_HDR 12         /* u32 offset, u32 size, u32 flags */
#define INFLIGHT_SIZE 24      /* u64 size, u64 offset, u16 queues, u16 queue size, padding */
#define INFLIGHT_PACKED 20    /* the same without the padding */

/* ---- little-endian fields ---- */

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

const char *vhost_user_request_name(uint32_t request)
{
	switch (request) {
	case VHOST_USER_GET_FEATURES: return "GET_FEATURES";
	case VHOST_USER_SET_FEATURES: return "SET_FEATURES";
	case VHOST_USER_SET_OWNER: return "SET_OWNER";
	case VHOST_USER_RESET_OWNER: return "RESET_OWNER";
	case VHOST_USER_SET_MEM_TABLE: return "SET_MEM_TABLE";
	case VHOST_USER_SET_VRING_NUM: return "SET_VRING_NUM";
	case VHOST_USER_SET_VRING_ADDR: return "SET_VRING_ADDR";
	case VHOST_USER_SET_VRING_BASE: return "SET_VRING_BASE";
	case VHOST_USER_GET_VRING_BASE: return "GET_VRING_BASE";
	case VHOST_USER_SET_VRING_KICK: return "SET_VRING_KICK";
	case VHOST_USER_SET_VRING_CALL: return "SET_VRING_CALL";
	case VHOST_USER_SET_VRING_ERR: return "SET_VRING_ERR";
	case VHOST_USER_GET_PROTOCOL_FEATURES: return "GET_PROTOCOL_FEATURES";
	case VHOST_USER_SET_PROTOCOL_FEATURES: return "SET_PROTOCOL_FEATURES";
	case VHOST_USER_GET_QUEUE_NUM: return "GET_QUEUE_NUM";
	case VHOST_USER_SET_VRING_ENABLE: return "SET_VRING_ENABLE";
	case VHOST_USER_GET_CONFIG: return "GET_CONFIG";
	case VHOST_USER_SET_CONFIG: return "SET_CONFIG";
	case VHOST_USER_GET_INFLIGHT_FD: return "GET_INFLIGHT_FD";
	case VHOST_USER_SET_INFLIGHT_FD: return "SET_INFLIGHT_FD";
	default: {
		static _Thread_local char buf[24];
		snprintf(buf, sizeof(buf), "request %u", request);
		return buf;
	}
	}
}

/* ---- the pure reply check ---- */

/* The payload bytes that request's reply has; 0 for one without a reply. */
static uint32_t reply_size(uint32_t request, bool need_ack, uint32_t config_size)
{
	switch (request) {
	case VHOST_USER_GET_FEATURES:
	case VHOST_USER_GET_PROTOCOL_FEATURES:
	case VHOST_USER_GET_QUEUE_NUM:
		return 8;
	case VHOST_USER_GET_VRING_BASE:
		return STATE_SIZE;
	case VHOST_USER_GET_CONFIG:
		return CONFIG_HDR + config_size;
	case VHOST_USER_GET_INFLIGHT_FD:
		return INFLIGHT_SIZE;
	default:
		return need_ack ? 8 : 0;
	}
}

int vhost_user_parse_reply(const void *buf, size_t len, unsigned nfds, uint32_t request, bool need_ack,
			   uint32_t config_size, struct vhost_user_reply *out)
{
	const uint8_t *p = buf;
	const char *name = vhost_user_request_name(request);
	memset(out, 0, sizeof(*out));
	if (len < VHOST_USER_HDR_SIZE)
		return vmm_fail("%s: reply of %zu bytes, shorter than a header", name, len);
	uint32_t req = get32(p), flags = get32(p + 4), size = get32(p + 8);
	if ((flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION)
		return vmm_fail("%s: reply of version %u, expected %u", name, flags & VHOST_USER_VERSION_MASK,
				VHOST_USER_VERSION);
	if (!(flags & VHOST_USER_FLAG_REPLY))
		return vmm_fail("%s: the backend sent %s without the reply flag", name, vhost_user_request_name(req));
	if (req != request)
		return vmm_fail("%s: the reply answers %s", name, vhost_user_request_name(req));
	if (config_size > VHOST_USER_MAX_CONFIG)
		return vmm_fail("%s: %u configuration bytes asked, at most %d", name, config_size,
				VHOST_USER_MAX_CONFIG);
	uint32_t want = reply_size(request, need_ack, config_size);
	bool packed_inflight = request == VHOST_USER_GET_INFLIGHT_FD && size == INFLIGHT_PACKED;
	if (size != want && !packed_inflight)
		return vmm_fail("%s: reply of %u bytes, expected %u", name, size, want);
	if (len != VHOST_USER_HDR_SIZE + (size_t)size)
		return vmm_fail("%s: reply header says %u bytes, %zu came", name, size, len - VHOST_USER_HDR_SIZE);
	unsigned want_fds = request == VHOST_USER_GET_INFLIGHT_FD ? 1 : 0;
	if (nfds != want_fds)
		return vmm_fail("%s: reply with %u file descriptors, expected %u", name, nfds, want_fds);
	const uint8_t *pl = p + VHOST_USER_HDR_SIZE;
	out->request = req;
	out->size = size;
	switch (request) {
	case VHOST_USER_GET_FEATURES:
	case VHOST_USER_GET_PROTOCOL_FEATURES:
	case VHOST_USER_GET_QUEUE_NUM:
		out->u64 = get64(pl);
		break;
	case VHOST_USER_GET_VRING_BASE:
		out->state.index = get32(pl);
		out->state.num = get32(pl + 4);
		break;
	case VHOST_USER_GET_CONFIG:
		out->config.offset = get32(pl);
		out->config.size = get32(pl + 4);
		out->config.flags = get32(pl + 8);
		if (out->config.size != config_size)
			return vmm_fail("%s: reply of %u configuration bytes, %u asked", name, out->config.size,
					config_size);
		memcpy(out->config.data, pl + CONFIG_HDR, config_size);
		break;
	case VHOST_USER_GET_INFLIGHT_FD:
		out->inflight.mmap_size = get64(pl);
		out->inflight.mmap_offset = get64(pl + 8);
		out->inflight.num_queues = get16(pl + 16);
		out->inflight.queue_size = get16(pl + 18);
		break;
	default: /* a REPLY_ACK */
		if (!need_ack) /* reply_size said 0: a request that has no reply */
			return vmm_fail("%s: a reply to a request that has none", name);
		out->u64 = get64(pl);
		if (out->u64 != 0)
			return vmm_fail("%s: the backend refused it (status %llu)", name, (unsigned long long)out->u64);
		break;
	}
	return 0;
}

/* ---- the connection ---- */

static int broken(struct vhost_user *u)
{
	if (!u->broken) {
		u->broken = true;
		snprintf(u->why, sizeof(u->why), "%s", vmm_error());
	}
	return vmm_fail("%s: vhost-user: %s", u->name, u->why);
}

static void init(struct vhost_user *u, const char *name, int fd)
{
	memset(u, 0, sizeof(*u));
	u->fd = fd;
	u->timeout_ms = DEFAULT_TIMEOUT_MS;
	snprintf(u->name, sizeof(u->name), "%s", name ? name : "vhost-user");
}

int vhost_user_connect(struct vhost_user *u, const char *name, const char *path)
{
	init(u, name, -1);
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (!path || !*path || strlen(path) >= sizeof(a.sun_path))
		return vmm_fail("vhost-user socket %s: %s", path ? path : "(none)",
				path && *path ? "path too long for a UNIX socket" : "no path");
	memcpy(a.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vmm_fail_errno("vhost-user socket %s: socket", path);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		vmm_fail_errno("vhost-user socket %s: connect", path);
		close(fd);
		return -1;
	}
	u->fd = fd;
	return 0;
}

void vhost_user_adopt(struct vhost_user *u, const char *name, int fd, uint64_t features,
		      uint64_t protocol_features, uint32_t queue_num)
{
	init(u, name, fd);
	u->features = features;
	u->protocol_features = protocol_features;
	u->queue_num = queue_num;
}

void vhost_user_close(struct vhost_user *u)
{
	if (u->fd >= 0)
		close(u->fd);
	u->fd = -1;
}

int vhost_user_release(struct vhost_user *u)
{
	int fd = u->fd;
	u->fd = -1;
	return fd;
}

bool vhost_user_broken(const struct vhost_user *u)
{
	return u->broken;
}

static int check_usable(struct vhost_user *u, uint32_t request)
{
	if (u->broken)
		return vmm_fail("%s: vhost-user: %s", u->name, u->why);
	if (u->fd < 0)
		return vmm_fail("%s: vhost-user: %s: not connected", u->name, vhost_user_request_name(request));
	return 0;
}

static bool has_protocol(const struct vhost_user *u, unsigned bit)
{
	return u->protocol_features & (1ull << bit);
}

/* Sends one message: the header and payload in one sendmsg with the fds. */
static int send_msg(struct vhost_user *u, uint32_t request, uint32_t flags, const void *payload, uint32_t size,
		    const int *fds, unsigned nfds)
{
	uint8_t buf[VHOST_USER_HDR_SIZE + VHOST_USER_MAX_PAYLOAD];
	if (size > VHOST_USER_MAX_PAYLOAD || nfds > VHOST_USER_MAX_FDS)
		return vmm_fail("%s: vhost-user: %s: %u bytes and %u fds is too much", u->name,
				vhost_user_request_name(request), size, nfds);
	put32(buf, request);
	put32(buf + 4, VHOST_USER_VERSION | flags);
	put32(buf + 8, size);
	if (size)
		memcpy(buf + VHOST_USER_HDR_SIZE, payload, size);
	size_t len = VHOST_USER_HDR_SIZE + size, off = 0;

	union {
		char buf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
		struct cmsghdr align;
	} control;
	memset(&control, 0, sizeof(control));
	while (off < len) {
		struct iovec iov = { .iov_base = buf + off, .iov_len = len - off };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (off == 0 && nfds > 0) { /* the fds ride on the first bytes */
			m.msg_control = control.buf;
			m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			struct cmsghdr *c = CMSG_FIRSTHDR(&m);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
		}
		ssize_t n = sendmsg(u->fd, &m, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			vmm_fail_errno("%s: sending", vhost_user_request_name(request));
			return broken(u);
		}
		off += (size_t)n;
	}
	return 0;
}

/* Waits up to u->timeout_ms for the socket to be readable. */
static int wait_readable(struct vhost_user *u, uint32_t request, int deadline_ms_left)
{
	struct pollfd p = { .fd = u->fd, .events = POLLIN };
	for (;;) {
		int rc = poll(&p, 1, deadline_ms_left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0) {
			vmm_fail_errno("%s: waiting for the reply", vhost_user_request_name(request));
			return -1;
		}
		if (rc == 0) {
			vmm_fail("%s: no reply in %d ms", vhost_user_request_name(request), u->timeout_ms);
			return -1;
		}
		return 0;
	}
}

static uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* Reads exactly len bytes (the first read may bring fds). -1 on EOF,
 * error or timeout, message set (no "broken" yet). */
static int read_exact(struct vhost_user *u, uint32_t request, uint8_t *buf, size_t len, int *fds, unsigned *nfds,
		      uint64_t deadline)
{
	size_t off = 0;
	while (off < len) {
		uint64_t now = now_ms();
		int left = now >= deadline ? 0 : (int)(deadline - now);
		if (wait_readable(u, request, left))
			return -1;
		struct iovec iov = { .iov_base = buf + off, .iov_len = len - off };
		union {
			char buf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
			struct cmsghdr align;
		} control;
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
				    .msg_controllen = sizeof(control.buf) };
		ssize_t n = recvmsg(u->fd, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			vmm_fail_errno("%s: reading the reply", vhost_user_request_name(request));
			return -1;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			unsigned k = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			int *got = (int *)CMSG_DATA(c);
			for (unsigned i = 0; i < k; i++) {
				if (*nfds < VHOST_USER_MAX_FDS)
					fds[(*nfds)++] = got[i];
				else
					close(got[i]);
			}
		}
		if (m.msg_flags & MSG_CTRUNC) {
			vmm_fail("%s: the reply carried more file descriptors than any reply has",
				 vhost_user_request_name(request));
			return -1;
		}
		if (n == 0) {
			vmm_fail("%s: the backend closed the connection", vhost_user_request_name(request));
			return -1;
		}
		off += (size_t)n;
	}
	return 0;
}

/* Reads and checks the reply to request; *fd gets the one fd of a reply
 * that has one (the caller's then). */
static int read_reply(struct vhost_user *u, uint32_t request, bool need_ack, uint32_t config_size,
		      struct vhost_user_reply *out, int *fd)
{
	uint8_t buf[VHOST_USER_HDR_SIZE + VHOST_USER_MAX_PAYLOAD];
	int fds[VHOST_USER_MAX_FDS];
	unsigned nfds = 0;
	uint64_t deadline = now_ms() + (uint64_t)(u->timeout_ms > 0 ? u->timeout_ms : 0);
	if (read_exact(u, request, buf, VHOST_USER_HDR_SIZE, fds, &nfds, deadline))
		goto fail;
	uint32_t size = get32(buf + 8);
	uint32_t want = reply_size(request, need_ack, config_size);
	if (size > VHOST_USER_MAX_PAYLOAD || size > want) { /* before reading it */
		vmm_fail("%s: reply of %u bytes, expected %u", vhost_user_request_name(request), size, want);
		goto fail;
	}
	if (read_exact(u, request, buf + VHOST_USER_HDR_SIZE, size, fds, &nfds, deadline))
		goto fail;
	if (vhost_user_parse_reply(buf, VHOST_USER_HDR_SIZE + size, nfds, request, need_ack, config_size, out))
		goto fail;
	if (fd)
		*fd = nfds ? fds[0] : -1;
	else
		close_fds(fds, nfds);
	return 0;
fail:
	close_fds(fds, nfds);
	return broken(u);
}

/* A request without a reply of its own: with REPLY_ACK, asks for one. */
static int request(struct vhost_user *u, uint32_t req, const void *payload, uint32_t size, const int *fds,
		   unsigned nfds)
{
	if (check_usable(u, req))
		return -1;
	bool ack = has_protocol(u, VHOST_USER_PROTOCOL_F_REPLY_ACK);
	if (send_msg(u, req, ack ? VHOST_USER_FLAG_NEED_REPLY : 0, payload, size, fds, nfds))
		return -1;
	if (!ack)
		return 0;
	struct vhost_user_reply r;
	return read_reply(u, req, true, 0, &r, NULL);
}

/* A request with a reply (GET_*). */
static int query(struct vhost_user *u, uint32_t req, const void *payload, uint32_t size, uint32_t config_size,
		 struct vhost_user_reply *out, int *fd)
{
	if (check_usable(u, req) || send_msg(u, req, 0, payload, size, NULL, 0))
		return -1;
	return read_reply(u, req, false, config_size, out, fd);
}

static int request_u64(struct vhost_user *u, uint32_t req, uint64_t v)
{
	uint8_t p[8];
	put64(p, v);
	return request(u, req, p, sizeof(p), NULL, 0);
}

static int request_state(struct vhost_user *u, uint32_t req, uint32_t index, uint32_t num)
{
	uint8_t p[STATE_SIZE];
	put32(p, index);
	put32(p + 4, num);
	return request(u, req, p, sizeof(p), NULL, 0);
}

int vhost_user_handshake(struct vhost_user *u, uint64_t wanted_protocol)
{
	struct vhost_user_reply r;
	if (query(u, VHOST_USER_GET_FEATURES, NULL, 0, 0, &r, NULL))
		return -1;
	u->features = r.u64;
	u->protocol_features = 0;
	u->queue_num = 0;
	if (u->features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES)) {
		if (query(u, VHOST_USER_GET_PROTOCOL_FEATURES, NULL, 0, 0, &r, NULL))
			return -1;
		/* never BACKEND_REQ: its channel's fd would have to travel too */
		uint64_t p = r.u64 & wanted_protocol & ~(1ull << VHOST_USER_PROTOCOL_F_BACKEND_REQ);
		/* REPLY_ACK applies from the next request on: not to this one */
		uint8_t b[8];
		put64(b, p);
		if (check_usable(u, VHOST_USER_SET_PROTOCOL_FEATURES) ||
		    send_msg(u, VHOST_USER_SET_PROTOCOL_FEATURES, 0, b, 8, NULL, 0))
			return -1;
		u->protocol_features = p;
		if (has_protocol(u, VHOST_USER_PROTOCOL_F_MQ)) {
			if (query(u, VHOST_USER_GET_QUEUE_NUM, NULL, 0, 0, &r, NULL))
				return -1;
			if (r.u64 == 0 || r.u64 > VHOST_USER_MAX_QUEUES)
				return vmm_fail("%s: vhost-user: GET_QUEUE_NUM: %llu queues (1 to %d)", u->name,
						(unsigned long long)r.u64, VHOST_USER_MAX_QUEUES);
			u->queue_num = (uint32_t)r.u64;
		}
	}
	return request(u, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0);
}

int vhost_user_set_features(struct vhost_user *u, uint64_t features)
{
	uint64_t pf = 1ull << VHOST_USER_F_PROTOCOL_FEATURES;
	uint64_t extra = features & ~u->features & ~pf;
	if (extra)
		return vmm_fail("%s: vhost-user: SET_FEATURES: 0x%llx not offered by the backend", u->name,
				(unsigned long long)extra);
	if (u->features & pf)
		features |= pf;
	return request_u64(u, VHOST_USER_SET_FEATURES, features);
}

int vhost_user_set_mem_table(struct vhost_user *u, const struct guest_mem *mem)
{
	if (!mem || mem->fd < 0 || !mem->host || mem->nregions == 0 || mem->nregions > VHOST_USER_MAX_REGIONS)
		return vmm_fail("%s: vhost-user: SET_MEM_TABLE: no guest RAM in a memfd to share", u->name);
	uint8_t p[VHOST_USER_MAX_PAYLOAD] = { 0 };
	int fds[VHOST_USER_MAX_REGIONS];
	put32(p, mem->nregions);
	for (unsigned i = 0; i < mem->nregions; i++) {
		const struct guest_region *r = &mem->regions[i];
		uint8_t *e = p + 8 + 32 * i;
		put64(e, r->gpa);
		put64(e + 8, r->size);
		put64(e + 16, (uint64_t)(uintptr_t)(mem->host + r->offset));
		put64(e + 24, r->offset);
		fds[i] = mem->fd;
	}
	return request(u, VHOST_USER_SET_MEM_TABLE, p, 8 + 32 * mem->nregions, fds, mem->nregions);
}

int vhost_user_get_config(struct vhost_user *u, uint32_t offset, void *buf, uint32_t len)
{
	if (!has_protocol(u, VHOST_USER_PROTOCOL_F_CONFIG))
		return vmm_fail("%s: vhost-user: GET_CONFIG: the backend has no CONFIG protocol feature", u->name);
	if (len == 0 || len > VHOST_USER_MAX_CONFIG || offset > VHOST_USER_MAX_CONFIG - len)
		return vmm_fail("%s: vhost-user: GET_CONFIG: %u bytes from %u (at most %d in all)", u->name, len,
				offset, VHOST_USER_MAX_CONFIG);
	uint8_t p[CONFIG_HDR + VHOST_USER_MAX_CONFIG] = { 0 };
	put32(p, offset);
	put32(p + 4, len);
	struct vhost_user_reply r;
	if (query(u, VHOST_USER_GET_CONFIG, p, CONFIG_HDR + len, len, &r, NULL))
		return -1;
	if (r.config.offset != offset) {
		vmm_fail("GET_CONFIG: reply for offset %u, %u asked", r.config.offset, offset);
		return broken(u);
	}
	memcpy(buf, r.config.data, len);
	return 0;
}

int vhost_user_vring_start(struct vhost_user *u, unsigned idx, const struct vhost_vring *r)
{
	char who[64];
	snprintf(who, sizeof(who), "%s: vhost-user: start", u->name);
	if (idx >= VHOST_USER_MAX_QUEUES || (u->queue_num && idx >= u->queue_num))
		return vmm_fail("%s: vring %u: the backend serves %u queues", who, idx,
				u->queue_num ? u->queue_num : VHOST_USER_MAX_QUEUES);
	if (vhost_vring_check(r, who, idx))
		return -1;
	if (request_state(u, VHOST_USER_SET_VRING_NUM, idx, r->size) ||
	    request_state(u, VHOST_USER_SET_VRING_BASE, idx, r->last_avail))
		return vmm_fail_context("vring %u", idx);
	uint8_t a[ADDR_SIZE] = { 0 };
	put32(a, idx);
	put32(a + 4, 0); /* no dirty log */
	put64(a + 8, (uint64_t)(uintptr_t)r->desc);
	put64(a + 16, (uint64_t)(uintptr_t)r->used);
	put64(a + 24, (uint64_t)(uintptr_t)r->avail);
	put64(a + 32, 0);
	if (request(u, VHOST_USER_SET_VRING_ADDR, a, sizeof(a), NULL, 0))
		return vmm_fail_context("vring %u", idx);
	/* The call fd before the kick: a backend may start the ring on
	 * SET_VRING_KICK and serve what the guest queued at once
	 * (libvhost-user kicks itself then), and it must have somewhere to
	 * signal (qemu-storage-daemon panicked, "Error writing eventfd: Bad
	 * file descriptor", when a guest reset's restart sent them the other
	 * way round). */
	uint8_t f[8];
	put64(f, idx | (r->call_fd < 0 ? VHOST_USER_VRING_NOFD : 0));
	if (request(u, VHOST_USER_SET_VRING_CALL, f, sizeof(f), &r->call_fd, r->call_fd < 0 ? 0 : 1))
		return vmm_fail_context("vring %u", idx);
	put64(f, idx);
	if (request(u, VHOST_USER_SET_VRING_KICK, f, sizeof(f), &r->kick_fd, 1))
		return vmm_fail_context("vring %u", idx);
	/* with protocol features a ring starts disabled */
	if ((u->features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES)) &&
	    request_state(u, VHOST_USER_SET_VRING_ENABLE, idx, 1))
		return vmm_fail_context("vring %u", idx);
	return 0;
}

int vhost_user_vring_stop(struct vhost_user *u, unsigned idx, uint16_t *last_avail)
{
	if (idx >= VHOST_USER_MAX_QUEUES)
		return vmm_fail("%s: vhost-user: stop: no vring %u", u->name, idx);
	if ((u->features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES)) &&
	    request_state(u, VHOST_USER_SET_VRING_ENABLE, idx, 0))
		return vmm_fail_context("vring %u", idx);
	uint8_t p[STATE_SIZE];
	put32(p, idx);
	put32(p + 4, 0);
	struct vhost_user_reply r;
	if (query(u, VHOST_USER_GET_VRING_BASE, p, sizeof(p), 0, &r, NULL))
		return vmm_fail_context("vring %u", idx);
	if (r.state.index != idx || r.state.num > 0xffff) {
		vmm_fail("GET_VRING_BASE: reply for vring %u at %u, vring %u asked", r.state.index, r.state.num, idx);
		return broken(u);
	}
	if (last_avail)
		*last_avail = (uint16_t)r.state.num;
	return 0;
}

int vhost_user_get_inflight(struct vhost_user *u, uint16_t num_queues, uint16_t queue_size,
			    struct vhost_user_inflight *out, int *fd)
{
	if (!has_protocol(u, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD))
		return vmm_fail("%s: vhost-user: GET_INFLIGHT_FD: INFLIGHT_SHMFD was not negotiated", u->name);
	uint8_t p[INFLIGHT_SIZE] = { 0 };
	put16(p + 16, num_queues);
	put16(p + 18, queue_size);
	struct vhost_user_reply r;
	*fd = -1;
	if (query(u, VHOST_USER_GET_INFLIGHT_FD, p, sizeof(p), 0, &r, fd))
		return -1;
	if (r.inflight.mmap_size == 0) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return vmm_fail("%s: vhost-user: GET_INFLIGHT_FD: an empty region", u->name);
	}
	const struct vhost_user_inflight *g = &r.inflight;
	const char *bad = NULL;
	char why[128];
	struct stat st;
	if (g->num_queues != num_queues || g->queue_size != queue_size) {
		snprintf(why, sizeof(why), "a region for %u queues of %u, %u of %u asked", g->num_queues,
			 g->queue_size, num_queues, queue_size);
		bad = why;
	} else if (g->mmap_size > VHOST_USER_INFLIGHT_MAX ||
		   g->mmap_size / num_queues < VHOST_USER_INFLIGHT_HDR + (uint64_t)VHOST_USER_INFLIGHT_DESC * queue_size) {
		snprintf(why, sizeof(why), "a region of %llu bytes for %u queues of %u",
			 (unsigned long long)g->mmap_size, num_queues, queue_size);
		bad = why;
	} else if (g->mmap_offset % 4096 || g->mmap_offset > VHOST_USER_INFLIGHT_MAX) {
		snprintf(why, sizeof(why), "region offset %llu", (unsigned long long)g->mmap_offset);
		bad = why;
	} else if (fstat(*fd, &st) < 0 || (uint64_t)st.st_size < g->mmap_offset + g->mmap_size) {
		snprintf(why, sizeof(why), "its fd holds %lld bytes, the region ends at %llu", (long long)st.st_size,
			 (unsigned long long)(g->mmap_offset + g->mmap_size));
		bad = why;
	}
	if (bad) {
		close(*fd);
		*fd = -1;
		vmm_fail("GET_INFLIGHT_FD: %s", bad);
		return broken(u);
	}
	*out = *g;
	return 0;
}

int vhost_user_inflight_position(const void *region, size_t len, uint16_t queue_size, uint16_t ring_used,
				 unsigned q, uint16_t *last_avail)
{
	const uint8_t *b = region;
	if (queue_size == 0 || len < VHOST_USER_INFLIGHT_HDR + (size_t)VHOST_USER_INFLIGHT_DESC * queue_size)
		return vmm_fail("inflight region of queue %u: %zu bytes for a queue of %u", q, len, queue_size);
	uint16_t version = get16(b + 8), desc_num = get16(b + 10), head = get16(b + 12), used = get16(b + 14);
	if (version == 0)
		return 1;
	if (version != 1)
		return vmm_fail("inflight region of queue %u: version %u, expected 1", q, version);
	if (desc_num != queue_size)
		return vmm_fail("inflight region of queue %u: desc_num %u, the queue has %u", q, desc_num, queue_size);
	const uint8_t *desc = b + VHOST_USER_INFLIGHT_HDR;
	unsigned n = 0;
	for (unsigned i = 0; i < queue_size; i++) {
		uint8_t f = desc[VHOST_USER_INFLIGHT_DESC * i];
		if (f > 1)
			return vmm_fail("inflight region of queue %u: descriptor %u has inflight %u", q, i, f);
		n += f;
	}
	/* the last batch: completed in the used ring, maybe not yet cleared
	 * here. Walked once, each entry counted off once (a list that loops
	 * is refused). */
	uint16_t batch = (uint16_t)(ring_used - used);
	if (batch > queue_size)
		return vmm_fail("inflight region of queue %u: used_idx %u, the ring's is %u", q, used, ring_used);
	uint8_t *seen = batch ? calloc(queue_size, 1) : NULL;
	if (batch && !seen)
		return vmm_fail("inflight region of queue %u: out of memory", q);
	int rc = 0;
	for (unsigned k = 0; k < batch; k++) {
		if (head >= queue_size || seen[head]) {
			rc = vmm_fail("inflight region of queue %u: last batch entry %u is %s", q, k,
				      head >= queue_size ? "out of the queue" : "in the list twice");
			break;
		}
		seen[head] = 1;
		const uint8_t *e = desc + VHOST_USER_INFLIGHT_DESC * head;
		n -= e[0];
		head = get16(e + 6);
	}
	free(seen);
	if (rc)
		return rc;
	*last_avail = (uint16_t)(ring_used + n);
	return 0;
}

int vhost_user_inflight_read(int fd, const struct vhost_user_inflight *in, unsigned q, uint16_t ring_used,
			     uint16_t *last_avail)
{
	if (in->num_queues == 0 || q >= in->num_queues)
		return vmm_fail("inflight region: queue %u of %u", q, in->num_queues);
	uint64_t stride = in->mmap_size / in->num_queues;
	size_t len = VHOST_USER_INFLIGHT_HDR + (size_t)VHOST_USER_INFLIGHT_DESC * in->queue_size;
	if (stride < len)
		return vmm_fail("inflight region: %llu bytes a queue, a queue of %u needs %zu",
				(unsigned long long)stride, in->queue_size, len);
	uint8_t *buf = malloc(len);
	if (!buf)
		return vmm_fail("inflight region: out of memory");
	ssize_t got = pread(fd, buf, len, (off_t)(in->mmap_offset + q * stride));
	int rc;
	if (got < 0)
		rc = vmm_fail_errno("inflight region of queue %u: pread", q);
	else if ((size_t)got != len)
		rc = vmm_fail("inflight region of queue %u: %zd of %zu bytes (the backend shrank it?)", q, got, len);
	else
		rc = vhost_user_inflight_position(buf, len, in->queue_size, ring_used, q, last_avail);
	free(buf);
	return rc;
}

int vhost_user_set_inflight(struct vhost_user *u, const struct vhost_user_inflight *in, int fd)
{
	if (!has_protocol(u, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD))
		return vmm_fail("%s: vhost-user: SET_INFLIGHT_FD: INFLIGHT_SHMFD was not negotiated", u->name);
	if (fd < 0)
		return vmm_fail("%s: vhost-user: SET_INFLIGHT_FD: no fd", u->name);
	uint8_t p[INFLIGHT_SIZE] = { 0 };
	put64(p, in->mmap_size);
	put64(p + 8, in->mmap_offset);
	put16(p + 16, in->num_queues);
	put16(p + 18, in->queue_size);
	return request(u, VHOST_USER_SET_INFLIGHT_FD, p, sizeof(p), &fd, 1);
}

int vhost_user_check_idle(struct vhost_user *u)
{
	if (u->broken)
		return vmm_fail("%s: vhost-user: %s", u->name, u->why);
	if (u->fd < 0)
		return 0;
	struct pollfd p = { .fd = u->fd, .events = POLLIN };
	int rc;
	while ((rc = poll(&p, 1, 0)) < 0 && errno == EINTR)
		;
	if (rc <= 0)
		return 0;
	if (p.revents & (POLLHUP | POLLERR)) {
		vmm_fail("the backend closed the connection");
		return broken(u);
	}
	uint8_t junk[64];
	ssize_t n = recv(u->fd, junk, sizeof(junk), MSG_DONTWAIT);
	if (n == 0)
		vmm_fail("the backend closed the connection");
	else if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	else if (n < 0)
		vmm_fail_errno("reading the connection");
	else
		vmm_fail("the backend sent %zd bytes unasked", n);
	return broken(u);
}
