/* The local-migration wire format (see migstream.h): CRC-32C, the payload
 * writer and reader, header encoding and checking, and sections over a
 * UNIX stream socket with their fds passed by SCM_RIGHTS.
 *
 * Whatever is received is untrusted. On every failure of mig_recv() and
 * mig_parse() the section is left empty: every fd that arrived is closed
 * and the payload freed, so a caller only ever frees what succeeded
 * (freeing a failed section is harmless too). */
#include "migstream.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "err.h"

#define MIG_ERROR_TEXT_MAX 512 /* bytes of a peer's error message we show */

static const char *const type_names[] = {
	[MIG_HELLO] = "hello",
	[MIG_DESCRIPTION] = "description",
	[MIG_PLAN] = "plan",
	[MIG_MEMORY] = "memory",
	[MIG_BACKEND] = "backend",
	[MIG_PREPARED] = "prepared",
	[MIG_FREEZE] = "freeze",
	[MIG_VCPU] = "vcpu",
	[MIG_MACHINE] = "machine",
	[MIG_END] = "end",
	[MIG_READY] = "ready",
	[MIG_COMMIT] = "commit",
	[MIG_STARTING] = "starting",
	[MIG_ERROR] = "error",
	[MIG_DEVICE] = "device",
	[MIG_ATTACH] = "attach",
	[MIG_ATTACHED] = "attached",
	[MIG_EVAL] = "eval",
	[MIG_OUTPUT] = "output",
	[MIG_RESULT] = "result",
	[MIG_INTERRUPT] = "interrupt",
	[MIG_COMPLETE] = "complete",
	[MIG_COMPLETIONS] = "completions",
	[MIG_PREVIEW] = "preview",
};

bool mig_type_known(uint32_t type)
{
	return type >= 1 && type <= MIG_TYPE_MAX && type_names[type];
}

const char *mig_type_name(uint32_t type)
{
	return mig_type_known(type) ? type_names[type] : "unknown";
}

/* --- CRC-32C ---------------------------------------------------------------- */

#define CRC32C_POLY 0x82F63B78u /* Castagnoli, bit-reflected */

static uint32_t crc_table[256];
static pthread_once_t crc_table_once = PTHREAD_ONCE_INIT;

static void crc_table_build(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int bit = 0; bit < 8; bit++)
			c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc_table[i] = c;
	}
}

/* Standard pre- and post-inversion, so that the CRC of a||b is
 * mig_crc32c(mig_crc32c(0, a), b). */
uint32_t mig_crc32c(uint32_t crc, const void *p, size_t n)
{
	const uint8_t *b = p;

	pthread_once(&crc_table_once, crc_table_build);
	crc = ~crc;
	for (size_t i = 0; i < n; i++)
		crc = crc_table[(crc ^ b[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* --- little-endian helpers -------------------------------------------------- */

static void le16_store(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void le32_store(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void le64_store(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t le16_load(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32_load(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64_load(const uint8_t *p)
{
	return (uint64_t)le32_load(p) | (uint64_t)le32_load(p + 4) << 32;
}

/* --- payload writer --------------------------------------------------------- */

void mig_buf_init(struct mig_buf *b)
{
	memset(b, 0, sizeof(*b));
}

void mig_buf_free(struct mig_buf *b)
{
	free(b->data);
	mig_buf_init(b);
}

/* Room for n more bytes (capacity doubles), or NULL once oom is set. */
static uint8_t *buf_extend(struct mig_buf *b, size_t n)
{
	if (b->oom)
		return NULL;
	if (n > SIZE_MAX - b->len) {
		b->oom = true;
		return NULL;
	}
	size_t need = b->len + n;
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < need) {
			if (cap > SIZE_MAX / 2) {
				cap = need;
				break;
			}
			cap *= 2;
		}
		uint8_t *data = realloc(b->data, cap);
		if (!data) {
			b->oom = true;
			return NULL;
		}
		b->data = data;
		b->cap = cap;
	}
	uint8_t *at = b->data + b->len;
	b->len = need;
	return at;
}

void mig_put_u8(struct mig_buf *b, uint8_t v)
{
	uint8_t *p = buf_extend(b, 1);
	if (p)
		*p = v;
}

void mig_put_u16(struct mig_buf *b, uint16_t v)
{
	uint8_t *p = buf_extend(b, 2);
	if (p)
		le16_store(p, v);
}

void mig_put_u32(struct mig_buf *b, uint32_t v)
{
	uint8_t *p = buf_extend(b, 4);
	if (p)
		le32_store(p, v);
}

void mig_put_u64(struct mig_buf *b, uint64_t v)
{
	uint8_t *p = buf_extend(b, 8);
	if (p)
		le64_store(p, v);
}

void mig_put_bytes(struct mig_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	uint8_t *at = buf_extend(b, n);
	if (at)
		memcpy(at, p, n);
}

int mig_buf_ok(const struct mig_buf *b, const char *what)
{
	if (b->oom)
		return vmm_fail("%s: out of memory while encoding the section (%zu bytes so far)",
				what ? what : "section", b->len);
	return 0;
}

/* --- payload reader --------------------------------------------------------- */

void mig_cursor_init(struct mig_cursor *c, const void *p, size_t len, const char *what)
{
	c->p = p;
	c->len = p ? len : 0;
	c->off = 0;
	c->what = what;
	c->short_read = false;
}

/* The next n bytes (consumed), or NULL (and short_read set, sticky) when
 * fewer than n are left. */
static const uint8_t *cursor_take(struct mig_cursor *c, size_t n)
{
	static const uint8_t nothing[1];

	if (c->short_read || n > c->len - c->off) {
		c->short_read = true;
		return NULL;
	}
	if (n == 0)
		return c->p ? c->p + c->off : nothing;
	const uint8_t *at = c->p + c->off;
	c->off += n;
	return at;
}

uint8_t mig_get_u8(struct mig_cursor *c)
{
	const uint8_t *p = cursor_take(c, 1);
	return p ? p[0] : 0;
}

uint16_t mig_get_u16(struct mig_cursor *c)
{
	const uint8_t *p = cursor_take(c, 2);
	return p ? le16_load(p) : 0;
}

uint32_t mig_get_u32(struct mig_cursor *c)
{
	const uint8_t *p = cursor_take(c, 4);
	return p ? le32_load(p) : 0;
}

uint64_t mig_get_u64(struct mig_cursor *c)
{
	const uint8_t *p = cursor_take(c, 8);
	return p ? le64_load(p) : 0;
}

void mig_get_bytes(struct mig_cursor *c, void *dst, size_t n)
{
	const uint8_t *p = cursor_take(c, n);
	if (n == 0)
		return;
	if (p)
		memcpy(dst, p, n);
	else
		memset(dst, 0, n);
}

const void *mig_get_view(struct mig_cursor *c, size_t n)
{
	return cursor_take(c, n);
}

size_t mig_cursor_left(const struct mig_cursor *c)
{
	return c->len - c->off;
}

int mig_cursor_finish(struct mig_cursor *c)
{
	const char *what = c->what ? c->what : "section";

	if (c->short_read)
		return vmm_fail("%s: truncated (needs more than %zu bytes)", what, c->len);
	if (c->off != c->len)
		return vmm_fail("%s: %zu unexpected trailing bytes", what, c->len - c->off);
	return 0;
}

/* --- headers ---------------------------------------------------------------- */

/* Header layout: byte offsets of its fields. */
enum {
	HDR_MAGIC = 0,
	HDR_VERSION = 4,
	HDR_TYPE = 6,
	HDR_ID = 8,
	HDR_LEN = 12,
	HDR_NFDS = 16,
	HDR_CRC = 20,
};

static uint32_t section_crc(const uint8_t raw[MIG_HEADER_SIZE], const void *payload, uint32_t len)
{
	uint32_t crc = mig_crc32c(0, raw, HDR_CRC);
	return len ? mig_crc32c(crc, payload, len) : crc;
}

void mig_header_encode(uint8_t raw[MIG_HEADER_SIZE], uint32_t type, uint32_t id, const void *payload,
		       uint32_t len, uint32_t nfds)
{
	le32_store(raw + HDR_MAGIC, MIG_MAGIC);
	le16_store(raw + HDR_VERSION, MIG_VERSION);
	le16_store(raw + HDR_TYPE, (uint16_t)type);
	le32_store(raw + HDR_ID, id);
	le32_store(raw + HDR_LEN, len);
	le32_store(raw + HDR_NFDS, nfds);
	le32_store(raw + HDR_CRC, section_crc(raw, payload, len));
}

bool mig_crc_ok(const uint8_t raw[MIG_HEADER_SIZE], const void *payload, uint32_t len)
{
	return le32_load(raw + HDR_CRC) == section_crc(raw, payload, len);
}

int mig_header_decode(const uint8_t raw[MIG_HEADER_SIZE], struct mig_header *h)
{
	uint32_t magic = le32_load(raw + HDR_MAGIC);
	unsigned version = le16_load(raw + HDR_VERSION);

	memset(h, 0, sizeof(*h));
	if (magic != MIG_MAGIC)
		return vmm_fail("bad magic 0x%08x (expected 0x%08x): not a migration stream", magic,
				MIG_MAGIC);
	if (version != MIG_VERSION)
		return vmm_fail("stream version %u, this vmm speaks %u", version, MIG_VERSION);
	uint32_t type = le16_load(raw + HDR_TYPE);
	if (!mig_type_known(type))
		return vmm_fail("unknown section type %u", type);
	uint32_t len = le32_load(raw + HDR_LEN), nfds = le32_load(raw + HDR_NFDS);
	if (len > MIG_MAX_SECTION)
		return vmm_fail("%s section: length %u exceeds the limit of %u bytes", mig_type_name(type),
				len, MIG_MAX_SECTION);
	if (nfds > MIG_MAX_FDS)
		return vmm_fail("%s section: announces %u fds, at most %d are allowed", mig_type_name(type),
				nfds, MIG_MAX_FDS);
	*h = (struct mig_header){ .type = type, .id = le32_load(raw + HDR_ID), .len = len, .nfds = nfds };
	return 0;
}

/* --- sections --------------------------------------------------------------- */

static void section_init(struct mig_section *s)
{
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < MIG_MAX_FDS; i++)
		s->fds[i] = -1;
}

void mig_section_free(struct mig_section *s)
{
	for (unsigned i = 0; i < s->nfds && i < MIG_MAX_FDS; i++)
		if (s->fds[i] >= 0)
			close(s->fds[i]);
	free(s->payload);
	section_init(s);
}

/* Checks the payload's CRC and copies it into s; h comes from raw. */
static int section_fill(struct mig_section *s, const struct mig_header *h, const uint8_t *raw,
			const uint8_t *payload)
{
	if (!mig_crc_ok(raw, payload, h->len))
		return vmm_fail("%s section: checksum mismatch (corrupt stream)", mig_type_name(h->type));
	s->type = h->type;
	s->id = h->id;
	s->len = h->len;
	if (h->len) {
		s->payload = malloc(h->len);
		if (!s->payload)
			return vmm_fail("%s section: cannot allocate %u bytes", mig_type_name(h->type),
					h->len);
		memcpy(s->payload, payload, h->len);
	}
	return 0;
}

int mig_parse(const uint8_t *buf, size_t len, size_t *used, struct mig_section *s)
{
	struct mig_header h;

	section_init(s);
	*used = 0;
	if (len < MIG_HEADER_SIZE)
		return vmm_fail("stream truncated: %zu bytes, a section header needs %d", len,
				MIG_HEADER_SIZE);
	if (mig_header_decode(buf, &h))
		return -1;
	if (h.nfds)
		return vmm_fail("%s section announces fds but came without any (%u announced)",
				mig_type_name(h.type), h.nfds);
	if (len - MIG_HEADER_SIZE < h.len)
		return vmm_fail("%s section truncated: header announces %u payload bytes, %zu present",
				mig_type_name(h.type), h.len, len - MIG_HEADER_SIZE);
	if (section_fill(s, &h, buf, buf + MIG_HEADER_SIZE)) {
		mig_section_free(s);
		return -1;
	}
	*used = MIG_HEADER_SIZE + (size_t)h.len;
	return 0;
}

/* --- HELLO ----------------------------------------------------------------- */

void mig_hello_encode(struct mig_buf *b, const struct mig_hello *h)
{
	mig_put_u32(b, h->pid);
	mig_put_u32(b, h->flags);
	mig_put_u32(b, h->nkinds);
	for (unsigned i = 0; i < h->nkinds; i++) {
		const struct mig_kind_versions *k = &h->kinds[i];
		size_t len = strlen(k->kind);
		mig_put_u8(b, (uint8_t)len);
		mig_put_bytes(b, k->kind, len);
		mig_put_u16(b, k->min);
		mig_put_u16(b, k->max);
	}
}

int mig_hello_decode(const void *payload, size_t len, struct mig_hello *h)
{
	struct mig_cursor cur;
	mig_cursor_init(&cur, payload, len, "hello");
	memset(h, 0, sizeof(*h));
	h->pid = mig_get_u32(&cur);
	h->flags = mig_get_u32(&cur);
	uint32_t n = mig_get_u32(&cur);
	if (cur.short_read)
		return mig_cursor_finish(&cur);
	if (h->pid == 0 || h->pid > INT32_MAX)
		return vmm_fail("hello: target pid %u is not a process id", h->pid);
	if (h->flags & ~MIG_HELLO_BACKEND_TRANSFER)
		return vmm_fail("hello: unknown flags 0x%x", h->flags & ~MIG_HELLO_BACKEND_TRANSFER);
	if (n > MIG_HELLO_MAX_KINDS)
		return vmm_fail("hello: %u state version ranges (at most %d)", n, MIG_HELLO_MAX_KINDS);
	for (uint32_t i = 0; i < n; i++) {
		struct mig_kind_versions *k = &h->kinds[i];
		uint8_t klen = mig_get_u8(&cur);
		if (cur.short_read)
			break;
		if (klen == 0 || klen > MIG_KIND_MAX)
			return vmm_fail("hello: range %u: a device kind of %u bytes (1..%d)", i, klen, MIG_KIND_MAX);
		mig_get_bytes(&cur, k->kind, klen);
		k->min = mig_get_u16(&cur);
		k->max = mig_get_u16(&cur);
		if (cur.short_read)
			break;
		if (strlen(k->kind) != klen)
			return vmm_fail("hello: range %u: the device kind has a NUL byte", i);
		if (k->min > k->max)
			return vmm_fail("hello: %s: state versions %u..%u (min above max)", k->kind, k->min, k->max);
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(h->kinds[j].kind, k->kind))
				return vmm_fail("hello: %s: state versions given twice", k->kind);
		h->nkinds = i + 1;
	}
	return mig_cursor_finish(&cur);
}

/* --- the socket ------------------------------------------------------------- */

static const char *peer_name(const struct mig_conn *c)
{
	return c->peer ? c->peer : "peer";
}

/* Waits until c->fd is ready for `events` (POLLIN or POLLOUT), at most
 * c->timeout_ms (negative: no limit). Hang-ups and errors count as ready:
 * the following read or write reports them precisely. */
static int wait_ready(struct mig_conn *c, short events)
{
	struct pollfd pfd = { .fd = c->fd, .events = events };

	for (;;) {
		int n = poll(&pfd, 1, c->timeout_ms);
		if (n > 0) {
			if (pfd.revents & POLLNVAL)
				return vmm_fail("%s: connection fd %d is not open", peer_name(c), c->fd);
			return 0;
		}
		if (n == 0) {
			if (events == POLLIN)
				return vmm_fail("%s: no data for %d ms", peer_name(c), c->timeout_ms);
			return vmm_fail("%s: not reading, cannot send for %d ms", peer_name(c),
					c->timeout_ms);
		}
		if (errno != EINTR)
			return vmm_fail_errno("poll on the connection to %s", peer_name(c));
	}
}

/* Consumes n bytes already written from the front of iov[0..cnt). */
static void iov_advance(struct iovec *iov, size_t cnt, size_t n)
{
	for (size_t i = 0; i < cnt && n; i++) {
		size_t step = n < iov[i].iov_len ? n : iov[i].iov_len;
		iov[i].iov_base = (uint8_t *)iov[i].iov_base + step;
		iov[i].iov_len -= step;
		n -= step;
	}
}

static int send_failed(struct mig_conn *c, uint32_t type)
{
	if (errno == EPIPE)
		return vmm_fail("%s closed the connection (sending %s section)", peer_name(c),
				mig_type_name(type));
	if (errno == ECONNRESET)
		return vmm_fail("%s: connection reset (sending %s section)", peer_name(c),
				mig_type_name(type));
	return vmm_fail_errno("sending %s section to %s", mig_type_name(type), peer_name(c));
}

/* Writes the whole message; the fds (if any) ride on the first sendmsg()
 * that writes anything, later ones carry no control data. */
static int send_all(struct mig_conn *c, struct msghdr *msg, size_t total, uint32_t type)
{
	size_t done = 0;

	while (done < total) {
		ssize_t n = sendmsg(c->fd, msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (wait_ready(c, POLLOUT))
					return vmm_fail_context("sending %s section", mig_type_name(type));
				continue;
			}
			return send_failed(c, type);
		}
		if (n == 0)
			return vmm_fail("sending %s section to %s: the socket accepted nothing",
					mig_type_name(type), peer_name(c));
		done += (size_t)n;
		iov_advance(msg->msg_iov, msg->msg_iovlen, (size_t)n);
		msg->msg_control = NULL;
		msg->msg_controllen = 0;
	}
	return 0;
}

/* What this side may send: a known type, within the section's bounds. */
static int check_outgoing(uint32_t type, size_t len, unsigned nfds)
{
	if (!mig_type_known(type))
		return vmm_fail("cannot send a section of unknown type %u", type);
	if (len > MIG_MAX_SECTION)
		return vmm_fail("%s section: %zu bytes exceed the limit of %u", mig_type_name(type), len,
				MIG_MAX_SECTION);
	if (nfds > MIG_MAX_FDS)
		return vmm_fail("%s section: %u fds exceed the limit of %d", mig_type_name(type), nfds,
				MIG_MAX_FDS);
	return 0;
}

int mig_send(struct mig_conn *c, uint32_t type, uint32_t id, const void *payload, size_t len,
	     const int *fds, unsigned nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * MIG_MAX_FDS)];
	} control;
	uint8_t raw[MIG_HEADER_SIZE];

	if (check_outgoing(type, len, nfds))
		return -1;
	mig_header_encode(raw, type, id, payload, (uint32_t)len, nfds);
	struct iovec iov[2] = {
		{ .iov_base = raw, .iov_len = sizeof(raw) },
		{ .iov_base = (void *)payload, .iov_len = len },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
	if (nfds) {
		memset(&control, 0, sizeof(control));
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	return send_all(c, &msg, MIG_HEADER_SIZE + len, type);
}

int mig_batch_add(struct mig_buf *batch, uint32_t type, uint32_t id, const void *payload, size_t len)
{
	if (check_outgoing(type, len, 0))
		return -1;
	uint8_t raw[MIG_HEADER_SIZE];
	mig_header_encode(raw, type, id, payload, (uint32_t)len, 0);
	mig_put_bytes(batch, raw, sizeof(raw));
	mig_put_bytes(batch, payload, len);
	return mig_buf_ok(batch, mig_type_name(type));
}

int mig_batch_send(struct mig_conn *c, struct mig_buf *batch)
{
	int rc = mig_buf_ok(batch, "batch of sections");
	if (rc == 0 && batch->len) {
		uint32_t first = batch->len >= MIG_HEADER_SIZE ? le16_load(batch->data + HDR_TYPE) : 0; /* for messages */
		struct iovec iov = { .iov_base = batch->data, .iov_len = batch->len };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
		rc = send_all(c, &msg, batch->len, first);
	}
	mig_buf_free(batch);
	mig_buf_init(batch);
	return rc;
}

/* Takes the fds of every SCM_RIGHTS message in msg into s; beyond
 * MIG_MAX_FDS they are closed. Returns how many arrived. */
static unsigned collect_fds(struct msghdr *msg, struct mig_section *s)
{
	unsigned arrived = 0;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
		    cm->cmsg_len < CMSG_LEN(0))
			continue;
		size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		const uint8_t *data = CMSG_DATA(cm);
		for (size_t i = 0; i < n; i++) {
			int fd;
			memcpy(&fd, data + i * sizeof(int), sizeof(int));
			if (s->nfds < MIG_MAX_FDS)
				s->fds[s->nfds++] = fd;
			else
				close(fd);
			arrived++;
		}
	}
	return arrived;
}

/* Where mig_recv is, for messages and for the rule on fds. */
struct recv_state {
	bool in_section;        /* some bytes of this section were read */
	bool fds_allowed;       /* still reading the header */
	const char *what;       /* "header", "vcpu section" */
	unsigned fds_arrived;   /* over all reads, kept or not */
};

static int recv_eof(struct mig_conn *c, const struct recv_state *st)
{
	if (st->in_section)
		return vmm_fail("%s closed the connection in the middle of a section (reading the %s)",
				peer_name(c), st->what);
	return vmm_fail("%s closed the connection", peer_name(c));
}

/* One poll + recvmsg() into dst[0..n); returns the byte count (> 0) or -1. */
static ssize_t recv_some(struct mig_conn *c, uint8_t *dst, size_t n, struct mig_section *s,
			 struct recv_state *st)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * MIG_MAX_FDS)];
	} control;

	for (;;) {
		if (wait_ready(c, POLLIN))
			return -1;
		struct iovec iov = { .iov_base = dst, .iov_len = n };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
				      .msg_controllen = sizeof(control.buf) };
		ssize_t got = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
		if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
			continue;
		if (got < 0 && errno == ECONNRESET)
			return vmm_fail("%s: connection reset", peer_name(c));
		if (got < 0)
			return vmm_fail_errno("receiving the %s from %s", st->what, peer_name(c));
		unsigned fds = collect_fds(&msg, s);
		st->fds_arrived += fds;
		if ((msg.msg_flags & MSG_CTRUNC) || st->fds_arrived > MIG_MAX_FDS)
			return vmm_fail("%s: too many file descriptors with one section (more than %d)",
					peer_name(c), MIG_MAX_FDS);
		if (fds && !st->fds_allowed)
			return vmm_fail("%s: %u file descriptors arrived with the payload, not the header",
					st->what, fds);
		if (got == 0)
			return recv_eof(c, st);
		return got;
	}
}

static int recv_exact(struct mig_conn *c, uint8_t *dst, size_t n, struct mig_section *s,
		      struct recv_state *st)
{
	size_t done = 0;

	while (done < n) {
		ssize_t got = recv_some(c, dst + done, n - done, s, st);
		if (got < 0)
			return -1;
		done += (size_t)got;
		st->in_section = true;
	}
	return 0;
}

/* Everything after the header: payload, CRC, fd count. */
static int recv_body(struct mig_conn *c, const uint8_t *raw, const struct mig_header *h,
		     struct mig_section *s, struct recv_state *st)
{
	char what[64];
	uint8_t *payload = NULL;

	snprintf(what, sizeof(what), "%s section", mig_type_name(h->type));
	st->what = what;
	st->fds_allowed = false;
	if (h->len) {
		payload = malloc(h->len);
		if (!payload)
			return vmm_fail("%s: cannot allocate %u bytes", what, h->len);
		if (recv_exact(c, payload, h->len, s, st)) {
			free(payload);
			return -1;
		}
	}
	if (!mig_crc_ok(raw, payload, h->len)) {
		free(payload);
		return vmm_fail("%s: checksum mismatch (corrupt stream)", what);
	}
	s->type = h->type;
	s->id = h->id;
	s->len = h->len;
	s->payload = payload;
	if (st->fds_arrived != h->nfds)
		return vmm_fail("%s: header announces %u fds, %u arrived", what, h->nfds,
				st->fds_arrived);
	return 0;
}

int mig_recv(struct mig_conn *c, struct mig_section *s)
{
	struct recv_state st = { .fds_allowed = true, .what = "section header" };
	uint8_t raw[MIG_HEADER_SIZE];
	struct mig_header h;

	section_init(s);
	if (recv_exact(c, raw, sizeof(raw), s, &st))
		goto fail;
	if (mig_header_decode(raw, &h)) {
		vmm_fail_context("from %s", peer_name(c));
		goto fail;
	}
	if (recv_body(c, raw, &h, s, &st))
		goto fail;
	return 0;
fail:
	mig_section_free(s);
	return -1;
}

/* "<peer>: <text>" from a MIG_ERROR payload, made printable and short. */
static int peer_error(struct mig_conn *c, const struct mig_section *s)
{
	char text[MIG_ERROR_TEXT_MAX + 1];
	size_t n = s->len < MIG_ERROR_TEXT_MAX ? s->len : MIG_ERROR_TEXT_MAX;

	for (size_t i = 0; i < n; i++) {
		uint8_t ch = s->payload[i];
		text[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	text[n] = '\0';
	return vmm_fail("%s: %s", peer_name(c), n ? text : "(error without a message)");
}

int mig_expect(struct mig_conn *c, uint32_t type, struct mig_section *s)
{
	if (mig_recv(c, s))
		return -1;
	if (s->type == type)
		return 0;
	if (s->type == MIG_ERROR)
		peer_error(c, s);
	else
		vmm_fail("expected %s from %s, got %s", mig_type_name(type), peer_name(c),
			 mig_type_name(s->type));
	mig_section_free(s);
	return -1;
}

void mig_send_error(struct mig_conn *c, const char *msg)
{
	char saved[1024];
	int saved_errno = errno;
	size_t len = msg ? strnlen(msg, MIG_ERROR_TEXT_MAX) : 0;

	/* Keep the caller's message: it is usually what msg was made from. */
	snprintf(saved, sizeof(saved), "%s", vmm_error());
	mig_send(c, MIG_ERROR, 0, msg, len, NULL, 0);
	vmm_fail("%s", saved);
	errno = saved_errno;
}
