#include "fake_vhost_user.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "err.h"
#include "virtio.h"

#define MAX_PAYLOAD 4096

void fake_vu_defaults(struct fake_vu *f)
{
	memset(f, 0, sizeof(*f));
	f->features = VIRTIO_BIT(VIRTIO_F_VERSION_1) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES);
	f->protocol_features = (1ull << VHOST_USER_PROTOCOL_F_MQ) | (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |
			       (1ull << VHOST_USER_PROTOCOL_F_CONFIG) | (1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD);
	f->queue_num = 4;
	uint64_t sectors = (1 << 20) / 512;
	memcpy(f->config, &sectors, 8); /* virtio-blk: capacity first */
	f->listen_fd = f->conn_fd = f->inflight_fd = -1;
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

static int send_reply(int fd, uint32_t request, const void *payload, uint32_t size, int pass_fd)
{
	uint8_t buf[12 + MAX_PAYLOAD];
	uint32_t h[3] = { request, VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY, size };
	memcpy(buf, h, 12);
	memcpy(buf + 12, payload, size);
	struct iovec iov = { buf, 12 + size };
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (pass_fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		m.msg_control = ctl.b;
		m.msg_controllen = sizeof(ctl.b);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	return sendmsg(fd, &m, MSG_NOSIGNAL) == (ssize_t)(12 + size) ? 0 : -1;
}

/* One message: header, payload, fds (closed here, the inode of the first
 * kept). 0, or -1 on EOF or a bad message. */
static int read_msg(struct fake_vu *f, int fd, uint32_t hdr[3], uint8_t *payload, ino_t *ino)
{
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)]; } ctl;
	struct iovec iov = { hdr, 12 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b) };
	ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | MSG_WAITALL);
	if (n != 12)
		return -1;
	*ino = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		unsigned nfds = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (unsigned i = 0; i < nfds; i++) {
			int x;
			memcpy(&x, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			struct stat st;
			if (i == 0 && fstat(x, &st) == 0)
				*ino = st.st_ino;
			close(x);
		}
	}
	if (hdr[2] > MAX_PAYLOAD) {
		snprintf(f->error, sizeof(f->error), "request %u with %u payload bytes", hdr[0], hdr[2]);
		return -1;
	}
	if (hdr[2] && recv(fd, payload, hdr[2], MSG_WAITALL) != (ssize_t)hdr[2])
		return -1;
	return 0;
}

/* The inflight region: per queue a header and queue_size entries, rounded
 * up to 64 bytes as libvhost-user lays it. */
static int make_inflight(struct fake_vu *f, uint16_t nq, uint16_t qs)
{
	uint64_t stride = (VHOST_USER_INFLIGHT_HDR + (uint64_t)VHOST_USER_INFLIGHT_DESC * qs + 63) & ~63ull;
	uint64_t size = stride * nq;
	int fd = memfd_create("fake-vu-inflight", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (unsigned q = 0; q < nq; q++) {
		uint8_t h[VHOST_USER_INFLIGHT_HDR] = { 0 };
		put16(h + 8, 1);
		put16(h + 10, qs);
		if (pwrite(fd, h, sizeof(h), (off_t)(q * stride)) != (ssize_t)sizeof(h)) {
			close(fd);
			return -1;
		}
	}
	struct stat st;
	fstat(fd, &st);
	f->inflight_fd = fd;
	f->inflight_ino = st.st_ino;
	f->inflight = (struct vhost_user_inflight){ .mmap_size = size, .num_queues = nq, .queue_size = qs };
	return 0;
}

static bool has_own_reply(uint32_t r)
{
	return r == VHOST_USER_GET_FEATURES || r == VHOST_USER_GET_PROTOCOL_FEATURES ||
	       r == VHOST_USER_GET_QUEUE_NUM || r == VHOST_USER_GET_VRING_BASE || r == VHOST_USER_GET_CONFIG ||
	       r == VHOST_USER_GET_INFLIGHT_FD;
}

/* Serves one message; -1 ends the connection. */
static int serve(struct fake_vu *f, int fd)
{
	uint32_t h[3];
	uint8_t p[MAX_PAYLOAD];
	ino_t ino;
	if (read_msg(f, fd, h, p, &ino))
		return -1;
	uint32_t req = h[0];
	pthread_mutex_lock(&f->lock);
	if (req < FAKE_VU_MAX_REQUEST)
		f->counts[req]++;
	uint8_t out[MAX_PAYLOAD];
	uint32_t n = 0;
	int pass = -1, rc = 0;
	switch (req) {
	case VHOST_USER_GET_FEATURES: memcpy(out, &f->features, 8); n = 8; break;
	case VHOST_USER_GET_PROTOCOL_FEATURES: memcpy(out, &f->protocol_features, 8); n = 8; break;
	case VHOST_USER_GET_QUEUE_NUM: { uint64_t q = f->queue_num; memcpy(out, &q, 8); n = 8; break; }
	case VHOST_USER_SET_VRING_BASE: {
		uint32_t idx, num;
		memcpy(&idx, p, 4), memcpy(&num, p + 4, 4);
		if (idx < VHOST_USER_MAX_QUEUES)
			f->vring_base[idx] = (uint16_t)num;
		break;
	}
	case VHOST_USER_SET_VRING_CALL:
	case VHOST_USER_SET_VRING_KICK: {
		/* as libvhost-user: the kick starts the ring, and what it
		 * serves then is signalled through the call fd */
		uint64_t v;
		memcpy(&v, p, 8);
		unsigned idx = (unsigned)(v & 0xff);
		if (idx >= VHOST_USER_MAX_QUEUES)
			break;
		if (req == VHOST_USER_SET_VRING_CALL)
			f->call_set[idx] = true;
		else if (!f->call_set[idx] && !f->error[0])
			snprintf(f->error, sizeof(f->error), "SET_VRING_KICK for vring %u before its SET_VRING_CALL",
				 idx);
		break;
	}
	case VHOST_USER_GET_VRING_BASE: {
		uint32_t idx;
		memcpy(&idx, p, 4);
		if (idx < VHOST_USER_MAX_QUEUES)
			f->call_set[idx] = false; /* a stopped ring's fds are closed */
		uint32_t s[2] = { idx, idx < VHOST_USER_MAX_QUEUES ? f->vring_base[idx] : 0 };
		memcpy(out, s, 8);
		n = 8;
		break;
	}
	case VHOST_USER_GET_CONFIG: {
		uint32_t off, size;
		memcpy(&off, p, 4), memcpy(&size, p + 4, 4);
		if (off + size > VHOST_USER_MAX_CONFIG) {
			snprintf(f->error, sizeof(f->error), "GET_CONFIG at %u size %u", off, size);
			rc = -1;
			break;
		}
		memcpy(out, p, 12);
		memcpy(out + 12, f->config + off, size);
		n = 12 + size;
		break;
	}
	case VHOST_USER_GET_INFLIGHT_FD: {
		uint16_t nq, qs;
		memcpy(&nq, p + 16, 2), memcpy(&qs, p + 18, 2);
		if (f->inflight_fd < 0 && make_inflight(f, nq, qs)) {
			rc = -1;
			break;
		}
		uint64_t told = f->inflight.mmap_size + f->inflight_overstate;
		memcpy(out, &told, 8);
		memcpy(out + 8, &f->inflight.mmap_offset, 8);
		memcpy(out + 16, &f->inflight.num_queues, 2);
		memcpy(out + 18, &f->inflight.queue_size, 2);
		memset(out + 20, 0, 4);
		n = 24;
		pass = f->inflight_fd;
		break;
	}
	case VHOST_USER_SET_INFLIGHT_FD: f->set_inflight_ino = ino; break;
	default: break;
	}
	pthread_mutex_unlock(&f->lock);
	if (rc)
		return -1;
	if (has_own_reply(req))
		return send_reply(fd, req, out, n, pass);
	if (h[1] & VHOST_USER_FLAG_NEED_REPLY) {
		uint64_t ok = 0;
		return send_reply(fd, req, &ok, 8, -1);
	}
	return 0;
}

static void *server(void *arg)
{
	struct fake_vu *f = arg;
	for (;;) {
		int c = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			return NULL; /* the listening socket was shut down */
		}
		pthread_mutex_lock(&f->lock);
		f->connections++;
		f->conn_fd = c;
		bool stop = f->stopping;
		pthread_mutex_unlock(&f->lock);
		while (!stop && serve(f, c) == 0)
			;
		pthread_mutex_lock(&f->lock);
		f->conn_fd = -1;
		stop = f->stopping;
		pthread_mutex_unlock(&f->lock);
		close(c);
		if (stop)
			return NULL;
	}
}

int fake_vu_start(struct fake_vu *f, const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(a.sun_path))
		return vmm_fail("fake vhost-user backend: %s: path too long", path);
	snprintf(f->path, sizeof(f->path), "%s", path);
	memcpy(a.sun_path, path, strlen(path) + 1);
	unlink(path);
	f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(f->listen_fd, 4) < 0)
		return vmm_fail_errno("fake vhost-user backend: %s", path);
	pthread_mutex_init(&f->lock, NULL);
	int rc = pthread_create(&f->thread, NULL, server, f);
	if (rc)
		return vmm_fail("fake vhost-user backend: pthread_create: %s", strerror(rc));
	return 0;
}

void fake_vu_hang_up(struct fake_vu *f)
{
	pthread_mutex_lock(&f->lock);
	if (f->conn_fd >= 0)
		shutdown(f->conn_fd, SHUT_RDWR);
	pthread_mutex_unlock(&f->lock);
}

void fake_vu_stop(struct fake_vu *f)
{
	pthread_mutex_lock(&f->lock);
	f->stopping = true;
	if (f->conn_fd >= 0)
		shutdown(f->conn_fd, SHUT_RDWR);
	pthread_mutex_unlock(&f->lock);
	shutdown(f->listen_fd, SHUT_RDWR);
	pthread_join(f->thread, NULL);
	close(f->listen_fd);
	f->listen_fd = -1;
	unlink(f->path);
	if (f->inflight_fd >= 0)
		close(f->inflight_fd);
	f->inflight_fd = -1;
	pthread_mutex_destroy(&f->lock);
}

unsigned fake_vu_count(struct fake_vu *f, uint32_t request)
{
	pthread_mutex_lock(&f->lock);
	unsigned n = request < FAKE_VU_MAX_REQUEST ? f->counts[request] : 0;
	pthread_mutex_unlock(&f->lock);
	return n;
}

int fake_vu_mark_inflight(struct fake_vu *f, unsigned q, uint16_t desc, bool inflight, uint16_t used_idx)
{
	pthread_mutex_lock(&f->lock);
	int rc = -1;
	if (f->inflight_fd >= 0 && q < f->inflight.num_queues && desc < f->inflight.queue_size) {
		uint64_t base = q * (f->inflight.mmap_size / f->inflight.num_queues);
		uint8_t v = inflight;
		uint8_t u[2];
		put16(u, used_idx);
		if (pwrite(f->inflight_fd, &v, 1,
			   (off_t)(base + VHOST_USER_INFLIGHT_HDR + (uint64_t)VHOST_USER_INFLIGHT_DESC * desc)) == 1 &&
		    pwrite(f->inflight_fd, u, 2, (off_t)(base + 14)) == 2)
			rc = 0;
	}
	pthread_mutex_unlock(&f->lock);
	return rc;
}
