/* The migration wire format: CRC, payload writer/reader, header checks,
 * sections with fds over a socketpair, and every failure a peer can cause
 * (corruption, truncation, silence, wrong fds), without leaking fds. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "migstream.h"

/* --- helpers ---------------------------------------------------------------- */

static int count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void make_pair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		perror("socketpair");
		exit(1);
	}
}

static struct mig_conn conn(int fd, int timeout_ms, const char *peer)
{
	return (struct mig_conn){ .fd = fd, .timeout_ms = timeout_ms, .peer = peer };
}

static bool same_file(int a, int b)
{
	struct stat sa, sb;
	if (fstat(a, &sa) || fstat(b, &sb))
		return false;
	return sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev;
}

/* Writes bytes on a socket, with fds on the same sendmsg() if nfds > 0. */
static void send_raw(int fd, const void *p, size_t len, const int *fds, unsigned nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 64)];
	} control;
	struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
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
	if (sendmsg(fd, &msg, MSG_NOSIGNAL) != (ssize_t)len) {
		perror("sendmsg");
		exit(1);
	}
}

/* A well-formed section (header + payload) in one malloc'd block. */
static uint8_t *encode_section(uint32_t type, uint32_t id, const void *payload, uint32_t len,
			       uint32_t nfds, size_t *total)
{
	uint8_t *raw = malloc(MIG_HEADER_SIZE + len + 1);
	mig_header_encode(raw, type, id, payload, len, nfds);
	if (len)
		memcpy(raw + MIG_HEADER_SIZE, payload, len);
	*total = MIG_HEADER_SIZE + len;
	return raw;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* --- CRC, writer, reader ---------------------------------------------------- */

static void test_crc32c_known_vector_and_chaining(void)
{
	const char *v = "123456789";
	CHECK_EQ(mig_crc32c(0, v, 9), 0xE3069283u);
	CHECK_EQ(mig_crc32c(mig_crc32c(0, v, 4), v + 4, 5), 0xE3069283u);
	CHECK_EQ(mig_crc32c(mig_crc32c(0, v, 0), v, 9), 0xE3069283u);
	CHECK_EQ(mig_crc32c(0, "", 0), 0);
}

static void test_buf_and_cursor_round_trip_every_width(void)
{
	struct mig_buf b;
	mig_buf_init(&b);
	mig_put_u8(&b, 0xab);
	mig_put_u16(&b, 0x1234);
	mig_put_u32(&b, 0x11223344);
	mig_put_u64(&b, 0x0102030405060708ull);
	mig_put_bytes(&b, "hello", 5);
	for (int i = 0; i < 1000; i++) /* forces several doublings */
		mig_put_u32(&b, (uint32_t)i * 2654435761u);
	CHECK_EQ(mig_buf_ok(&b, "test"), 0);
	CHECK_EQ(b.len, 1 + 2 + 4 + 8 + 5 + 4000);
	/* little-endian on the wire, whatever the host */
	static const uint8_t expect[] = { 0xab, 0x34, 0x12, 0x44, 0x33, 0x22, 0x11,
					  8, 7, 6, 5, 4, 3, 2, 1 };
	CHECK(memcmp(b.data, expect, sizeof(expect)) == 0);

	struct mig_cursor c;
	mig_cursor_init(&c, b.data, b.len, "test section");
	CHECK_EQ(mig_get_u8(&c), 0xab);
	CHECK_EQ(mig_get_u16(&c), 0x1234);
	CHECK_EQ(mig_get_u32(&c), 0x11223344);
	CHECK_EQ(mig_get_u64(&c), 0x0102030405060708ull);
	char word[5];
	mig_get_bytes(&c, word, 5);
	CHECK(memcmp(word, "hello", 5) == 0);
	const uint8_t *view = mig_get_view(&c, 4);
	CHECK(view != NULL && view[0] == 0 && view[3] == 0);
	for (int i = 1; i < 1000; i++)
		CHECK_EQ(mig_get_u32(&c), (uint32_t)i * 2654435761u);
	CHECK_EQ(mig_cursor_left(&c), 0);
	CHECK_EQ(mig_cursor_finish(&c), 0);
	mig_buf_free(&b);
	CHECK(b.data == NULL && b.len == 0);
}

static void test_buf_oom_is_sticky_and_reported(void)
{
	struct mig_buf b;
	mig_buf_init(&b);
	mig_put_u32(&b, 1);
	mig_put_bytes(&b, "x", SIZE_MAX); /* cannot fit: sets oom */
	CHECK(b.oom);
	size_t len = b.len;
	mig_put_u64(&b, 2);
	CHECK_EQ(b.len, len);
	CHECK_EQ(mig_buf_ok(&b, "vcpu 3"), -1);
	CHECK_CONTAINS(vmm_error(), "vcpu 3");
	CHECK_CONTAINS(vmm_error(), "out of memory");
	mig_buf_free(&b);
}

static void test_cursor_short_read_gives_zeros_and_finish_says_truncated(void)
{
	const uint8_t data[3] = { 1, 2, 3 };
	struct mig_cursor c;
	mig_cursor_init(&c, data, sizeof(data), "vcpu 1");
	CHECK_EQ(mig_get_u16(&c), 0x0201);
	CHECK_EQ(mig_get_u32(&c), 0); /* past the end */
	CHECK(c.short_read);
	CHECK_EQ(mig_get_u8(&c), 0); /* sticky, even though one byte is left */
	CHECK_EQ(mig_get_u64(&c), 0);
	uint8_t out[4] = { 9, 9, 9, 9 };
	mig_get_bytes(&c, out, sizeof(out));
	CHECK(out[0] == 0 && out[1] == 0 && out[2] == 0 && out[3] == 0);
	CHECK(mig_get_view(&c, 1) == NULL);
	CHECK_EQ(mig_cursor_finish(&c), -1);
	CHECK_CONTAINS(vmm_error(), "vcpu 1: truncated");

	mig_cursor_init(&c, NULL, 0, "empty");
	CHECK_EQ(mig_get_u8(&c), 0);
	CHECK_EQ(mig_cursor_finish(&c), -1);
	CHECK_CONTAINS(vmm_error(), "empty: truncated");
}

static void test_cursor_trailing_bytes_fail(void)
{
	const uint8_t data[10] = { 0 };
	struct mig_cursor c;
	mig_cursor_init(&c, data, sizeof(data), "serial");
	mig_get_u32(&c);
	CHECK_EQ(mig_cursor_left(&c), 6);
	CHECK_EQ(mig_cursor_finish(&c), -1);
	CHECK_CONTAINS(vmm_error(), "serial: 6 unexpected trailing bytes");
}

/* --- headers and mig_parse -------------------------------------------------- */

static void check_header_rejected(size_t at, const uint8_t *value, size_t n, const char *msg)
{
	uint8_t raw[MIG_HEADER_SIZE];
	struct mig_header h;
	mig_header_encode(raw, MIG_VCPU, 1, NULL, 0, 0);
	memcpy(raw + at, value, n);
	CHECK_EQ(mig_header_decode(raw, &h), -1);
	CHECK_CONTAINS(vmm_error(), msg);
}

static void test_header_decode_rejects_bad_fields_naming_the_value(void)
{
	uint8_t raw[MIG_HEADER_SIZE];
	struct mig_header h;
	mig_header_encode(raw, MIG_DEVICE, 7, "ab", 2, 3);
	CHECK_EQ(mig_header_decode(raw, &h), 0);
	CHECK(h.type == MIG_DEVICE && h.id == 7 && h.len == 2 && h.nfds == 3);

	check_header_rejected(0, (const uint8_t[]){ 0xef, 0xbe, 0xad, 0xde }, 4, "bad magic 0xdeadbeef");
	check_header_rejected(4, (const uint8_t[]){ 9, 0 }, 2, "stream version 9, this vmm speaks 2");
	check_header_rejected(6, (const uint8_t[]){ 0, 0 }, 2, "unknown section type 0");
	check_header_rejected(6, (const uint8_t[]){ MIG_TYPE_MAX + 1, 0 }, 2, "unknown section type 29");
	/* stream version 1's per-kind sections are gone, and stay refused */
	for (uint8_t retired = 10; retired <= 13; retired++) {
		char want[32];
		snprintf(want, sizeof(want), "unknown section type %u", retired);
		check_header_rejected(6, (const uint8_t[]){ retired, 0 }, 2, want);
	}
	check_header_rejected(12, (const uint8_t[]){ 1, 0, 0, 1 }, 4, "16777217");
	check_header_rejected(16, (const uint8_t[]){ 33, 0, 0, 0 }, 4, "33 fds");
}

static void test_type_names(void)
{
	CHECK_CONTAINS(mig_type_name(MIG_VCPU), "vcpu");
	CHECK_CONTAINS(mig_type_name(MIG_HELLO), "hello");
	CHECK_CONTAINS(mig_type_name(MIG_ERROR), "error");
	CHECK_CONTAINS(mig_type_name(0), "unknown");
	CHECK_CONTAINS(mig_type_name(1000), "unknown");
}

static void test_parse_valid_section_and_its_failures(void)
{
	size_t total, used = 99;
	struct mig_section s;
	uint8_t *raw = encode_section(MIG_DEVICE, 4, "payload", 7, 0, &total);
	CHECK_EQ(mig_parse(raw, total, &used, &s), 0);
	CHECK_EQ(used, total);
	CHECK(s.type == MIG_DEVICE && s.id == 4 && s.len == 7 && s.nfds == 0);
	CHECK(s.payload && memcmp(s.payload, "payload", 7) == 0);
	mig_section_free(&s);

	CHECK_EQ(mig_parse(raw, total - 1, &used, &s), -1);
	CHECK_CONTAINS(vmm_error(), "truncated");
	CHECK_EQ(mig_parse(raw, 10, &used, &s), -1);
	CHECK_CONTAINS(vmm_error(), "truncated");
	raw[MIG_HEADER_SIZE + 3] ^= 0x10;
	CHECK_EQ(mig_parse(raw, total, &used, &s), -1);
	CHECK_CONTAINS(vmm_error(), "device section: checksum mismatch (corrupt stream)");
	free(raw);

	raw = encode_section(MIG_MEMORY, 0, NULL, 0, 1, &total);
	CHECK_EQ(mig_parse(raw, total, &used, &s), -1);
	CHECK_CONTAINS(vmm_error(), "section announces fds but came without any");
	CHECK(s.payload == NULL && s.nfds == 0);
	mig_section_free(&s); /* harmless after a failure */
	free(raw);
}

static void test_parse_random_garbage_never_crashes(void)
{
	enum { ITERATIONS = 100000, MAXLEN = 96 };
	size_t total;
	uint8_t *valid = encode_section(MIG_FREEZE, 0, "\1\2\3\4\5\6\7\10", 8, 0, &total);
	uint8_t buf[MAXLEN];
	int parsed = 0;

	rng_state = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < ITERATIONS; i++) {
		size_t len = rng_next() % MAXLEN;
		if (i % 2) { /* pure garbage */
			for (size_t k = 0; k < len; k++)
				buf[k] = (uint8_t)rng_next();
		} else { /* a valid section with a few bytes changed, maybe cut */
			len = total;
			memcpy(buf, valid, total);
			for (int k = rng_next() % 3; k >= 0; k--)
				buf[rng_next() % total] = (uint8_t)rng_next();
			if (rng_next() % 4 == 0)
				len = rng_next() % total;
		}
		size_t used = 0;
		struct mig_section s;
		if (mig_parse(buf, len, &used, &s) == 0) {
			parsed++;
			CHECK(used <= len);
			CHECK(s.len == 0 || s.payload != NULL);
		} else {
			CHECK(used == 0 && s.payload == NULL);
		}
		mig_section_free(&s);
	}
	CHECK(parsed < ITERATIONS / 100); /* corruption is caught */

	struct mig_section s;
	size_t used;
	CHECK_EQ(mig_parse(valid, total, &used, &s), 0);
	CHECK_EQ(s.type, MIG_FREEZE);
	mig_section_free(&s);
	free(valid);
}

/* --- sections over a socketpair -------------------------------------------- */

static void send_and_receive_fds(unsigned nfds)
{
	int sv[2], files[3];
	make_pair(sv);
	for (unsigned i = 0; i < nfds; i++)
		files[i] = memfd_create("migstream-test", MFD_CLOEXEC);
	struct mig_conn src = conn(sv[0], 1000, "target"), dst = conn(sv[1], 1000, "source");
	CHECK_EQ(mig_send(&src, MIG_BACKEND, 2, "tap", 3, files, nfds), 0);
	struct mig_section s;
	CHECK_EQ(mig_recv(&dst, &s), 0);
	CHECK(s.type == MIG_BACKEND && s.id == 2 && s.len == 3);
	CHECK(s.payload && memcmp(s.payload, "tap", 3) == 0);
	CHECK_EQ(s.nfds, nfds);
	for (unsigned i = 0; i < nfds && i < s.nfds; i++) {
		CHECK(same_file(files[i], s.fds[i]));
		CHECK(fcntl(s.fds[i], F_GETFD) & FD_CLOEXEC);
	}
	mig_section_free(&s);
	for (unsigned i = 0; i < nfds; i++)
		close(files[i]);
	close(sv[0]);
	close(sv[1]);
}

static void test_send_recv_section_without_fds(void)
{
	int before = count_open_fds();
	send_and_receive_fds(0);
	CHECK_EQ(count_open_fds(), before);
}

static void test_send_recv_section_with_one_fd(void)
{
	int before = count_open_fds();
	send_and_receive_fds(1);
	CHECK_EQ(count_open_fds(), before);
}

static void test_send_recv_section_with_three_fds(void)
{
	int before = count_open_fds();
	send_and_receive_fds(3);
	CHECK_EQ(count_open_fds(), before);
}

static void test_send_recv_empty_payload(void)
{
	int sv[2];
	make_pair(sv);
	struct mig_conn src = conn(sv[0], 1000, "target"), dst = conn(sv[1], 1000, "source");
	struct mig_section s;
	CHECK_EQ(mig_send(&src, MIG_END, 0, NULL, 0, NULL, 0), 0);
	CHECK_EQ(mig_send(&src, MIG_COMMIT, 0, NULL, 0, NULL, 0), 0);
	CHECK_EQ(mig_expect(&dst, MIG_END, &s), 0);
	CHECK(s.len == 0 && s.payload == NULL);
	mig_section_free(&s);
	CHECK_EQ(mig_expect(&dst, MIG_COMMIT, &s), 0);
	mig_section_free(&s);
	close(sv[0]);
	close(sv[1]);
}

/* A batch puts on the wire the bytes the sections would put one by one:
 * the receiver reads the same sections; the batch is empty afterwards. */
static void test_batch_sends_the_bytes_of_its_sections_in_one_write(void)
{
	int a[2], b[2];
	make_pair(a);
	make_pair(b);
	struct mig_conn one = conn(a[0], 1000, "target"), batched = conn(b[0], 1000, "target");
	CHECK_EQ(mig_send(&one, MIG_FREEZE, 0, "12345678", 8, NULL, 0), 0);
	CHECK_EQ(mig_send(&one, MIG_VCPU, 1, "regs", 4, NULL, 0), 0);
	CHECK_EQ(mig_send(&one, MIG_END, 0, NULL, 0, NULL, 0), 0);
	struct mig_buf batch;
	mig_buf_init(&batch);
	CHECK_EQ(mig_batch_add(&batch, MIG_FREEZE, 0, "12345678", 8), 0);
	CHECK_EQ(mig_batch_add(&batch, MIG_VCPU, 1, "regs", 4), 0);
	CHECK_EQ(mig_batch_add(&batch, MIG_END, 0, NULL, 0), 0);
	CHECK_EQ(mig_batch_add(&batch, MIG_TYPE_MAX + 1, 0, NULL, 0), -1);
	CHECK_CONTAINS(vmm_error(), "unknown type 29");
	CHECK_EQ(batch.len, 3 * MIG_HEADER_SIZE + 12);
	CHECK_EQ(mig_batch_send(&batched, &batch), 0);
	CHECK_EQ(batch.len, 0);
	uint8_t x[256], y[256];
	ssize_t nx = read(a[1], x, sizeof(x)), ny = read(b[1], y, sizeof(y));
	CHECK_EQ(nx, 3 * MIG_HEADER_SIZE + 12);
	CHECK(nx == ny && memcmp(x, y, (size_t)nx) == 0);
	/* to a peer that is gone: the error names it, the batch is emptied */
	CHECK_EQ(mig_batch_add(&batch, MIG_END, 0, NULL, 0), 0);
	close(b[1]);
	CHECK_EQ(mig_batch_send(&batched, &batch), -1);
	CHECK_CONTAINS(vmm_error(), "target closed the connection (sending end section)");
	CHECK_EQ(batch.len, 0);
	mig_buf_free(&batch);
	close(a[0]);
	close(a[1]);
	close(b[0]);
}

struct sender {
	struct mig_conn c;
	const uint8_t *payload;
	size_t len;
	int rc;
	char err[1024];
};

static void *sender_thread(void *arg)
{
	struct sender *t = arg;
	t->rc = mig_send(&t->c, MIG_DESCRIPTION, 0, t->payload, t->len, NULL, 0);
	snprintf(t->err, sizeof(t->err), "%s", vmm_error());
	return NULL;
}

static void test_send_recv_5mib_payload_through_a_nonblocking_socket(void)
{
	enum { SIZE = 5 << 20 };
	uint8_t *payload = malloc(SIZE);
	for (size_t i = 0; i < SIZE; i++)
		payload[i] = (uint8_t)(i * 31 + (i >> 12));
	int sv[2];
	make_pair(sv);
	/* the sender meets EAGAIN and waits with poll */
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	struct sender t = { .c = conn(sv[0], 5000, "target"), .payload = payload, .len = SIZE };
	pthread_t th;
	CHECK_EQ(pthread_create(&th, NULL, sender_thread, &t), 0);
	struct mig_conn dst = conn(sv[1], 5000, "source");
	struct mig_section s;
	CHECK_EQ(mig_recv(&dst, &s), 0);
	pthread_join(th, NULL);
	CHECK_EQ(t.rc, 0);
	if (t.rc)
		fprintf(stderr, "  sender: %s\n", t.err);
	CHECK_EQ(s.len, SIZE);
	CHECK(s.payload && memcmp(s.payload, payload, SIZE) == 0);
	mig_section_free(&s);
	free(payload);
	close(sv[0]);
	close(sv[1]);
}

static void test_send_to_a_peer_that_does_not_read_times_out(void)
{
	enum { SIZE = 4 << 20 };
	uint8_t *payload = calloc(1, SIZE);
	int sv[2];
	make_pair(sv);
	struct mig_conn src = conn(sv[0], 50, "target");
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	CHECK_EQ(mig_send(&src, MIG_DESCRIPTION, 0, payload, SIZE, NULL, 0), -1);
	CHECK_CONTAINS(vmm_error(), "target: not reading");
	free(payload);
	close(sv[0]);
	close(sv[1]);
}

static void test_send_rejects_oversized_section(void)
{
	int sv[2];
	make_pair(sv);
	struct mig_conn src = conn(sv[0], 50, "target");
	int fds[MIG_MAX_FDS + 1] = { 0 };
	CHECK_EQ(mig_send(&src, MIG_VCPU, 0, "", (size_t)MIG_MAX_SECTION + 1, NULL, 0), -1);
	CHECK_CONTAINS(vmm_error(), "16777217");
	CHECK_EQ(mig_send(&src, MIG_VCPU, 0, NULL, 0, fds, MIG_MAX_FDS + 1), -1);
	CHECK_CONTAINS(vmm_error(), "33 fds");
	CHECK_EQ(mig_send(&src, 0, 0, NULL, 0, NULL, 0), -1);
	CHECK_CONTAINS(vmm_error(), "unknown type 0");
	close(sv[0]);
	close(sv[1]);
}

static void test_send_to_a_closed_peer_says_closed(void)
{
	int sv[2];
	make_pair(sv);
	close(sv[1]);
	struct mig_conn src = conn(sv[0], 50, "target");
	CHECK_EQ(mig_send(&src, MIG_HELLO, 0, "x", 1, NULL, 0), -1);
	CHECK_CONTAINS(vmm_error(), "target closed the connection");
	close(sv[0]);
}

static void test_flipped_payload_byte_gives_checksum_message(void)
{
	int sv[2], before = count_open_fds();
	make_pair(sv);
	int file = memfd_create("migstream-test", MFD_CLOEXEC);
	size_t total;
	uint8_t *raw = encode_section(MIG_VCPU, 1, "registers", 9, 1, &total);
	raw[MIG_HEADER_SIZE + 4] ^= 0x01;
	send_raw(sv[0], raw, total, &file, 1);
	struct mig_conn dst = conn(sv[1], 1000, "source");
	struct mig_section s;
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "vcpu section: checksum mismatch (corrupt stream)");
	CHECK(s.nfds == 0 && s.payload == NULL);
	free(raw);
	close(file);
	close(sv[0]);
	close(sv[1]);
	CHECK_EQ(count_open_fds(), before);
}

static void test_peer_closing_mid_payload_says_in_the_middle(void)
{
	int sv[2];
	make_pair(sv);
	size_t total;
	uint8_t *raw = encode_section(MIG_MACHINE, 0, "0123456789", 10, 0, &total);
	send_raw(sv[0], raw, total - 4, NULL, 0);
	close(sv[0]);
	struct mig_conn dst = conn(sv[1], 1000, "source");
	struct mig_section s;
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "source closed the connection in the middle of a section");
	free(raw);
	close(sv[1]);
}

static void test_peer_closing_mid_header_says_in_the_middle(void)
{
	int sv[2];
	make_pair(sv);
	send_raw(sv[0], "LVMG", 4, NULL, 0);
	close(sv[0]);
	struct mig_conn dst = conn(sv[1], 1000, "source");
	struct mig_section s;
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "in the middle of a section");
	close(sv[1]);
}

static void test_peer_closing_between_sections_says_closed(void)
{
	int sv[2];
	make_pair(sv);
	close(sv[0]);
	struct mig_conn dst = conn(sv[1], 1000, "source");
	struct mig_section s;
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "source closed the connection");
	CHECK(strstr(vmm_error(), "middle") == NULL);
	close(sv[1]);
}

static void test_connection_reset_is_named(void)
{
	int sv[2];
	make_pair(sv);
	/* closing with unread data resets the connection */
	send_raw(sv[1], "unread", 6, NULL, 0);
	close(sv[0]);
	struct mig_conn c = conn(sv[1], 1000, "target");
	struct mig_section s;
	CHECK_EQ(mig_recv(&c, &s), -1);
	CHECK_CONTAINS(vmm_error(), "target: connection reset");
	close(sv[1]);
}

static void test_silent_peer_times_out_with_no_data(void)
{
	int sv[2];
	make_pair(sv);
	struct mig_conn dst = conn(sv[1], 50, "source");
	struct mig_section s;
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "source: no data for 50 ms");
	close(sv[0]);
	close(sv[1]);
}

static void test_bad_header_from_peer_is_named(void)
{
	int sv[2];
	make_pair(sv);
	uint8_t raw[MIG_HEADER_SIZE];
	mig_header_encode(raw, MIG_VCPU, 0, NULL, 0, 0);
	raw[4] = 3; /* version */
	send_raw(sv[0], raw, sizeof(raw), NULL, 0);
	struct mig_conn dst = conn(sv[1], 1000, "source");
	struct mig_section s;
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "source");
	CHECK_CONTAINS(vmm_error(), "stream version 3, this vmm speaks 2");
	close(sv[0]);
	close(sv[1]);
}

static void test_error_section_becomes_peer_message(void)
{
	int sv[2];
	make_pair(sv);
	struct mig_conn src = conn(sv[0], 1000, "target"), dst = conn(sv[1], 1000, "source");
	vmm_fail("the caller's own message");
	mig_send_error(&src, "no room for 4096 MiB");
	CHECK_CONTAINS(vmm_error(), "the caller's own message"); /* kept */
	struct mig_section s;
	CHECK_EQ(mig_expect(&dst, MIG_VCPU, &s), -1);
	CHECK_CONTAINS(vmm_error(), "source: no room for 4096 MiB");
	CHECK(s.payload == NULL);

	/* hostile text: control characters replaced, length capped */
	char evil[2000];
	memset(evil, 'a', sizeof(evil));
	memcpy(evil, "bad\n\x1b[2J", 8);
	CHECK_EQ(mig_send(&src, MIG_ERROR, 0, evil, sizeof(evil), NULL, 0), 0);
	CHECK_EQ(mig_expect(&dst, MIG_READY, &s), -1);
	CHECK_CONTAINS(vmm_error(), "source: bad??[2Jaaa");
	CHECK(strlen(vmm_error()) <= strlen("source: ") + 512);
	close(sv[0]);
	close(sv[1]);
}

static void test_expect_wrong_type_names_both_types(void)
{
	int sv[2], before = count_open_fds();
	make_pair(sv);
	int file = memfd_create("migstream-test", MFD_CLOEXEC);
	struct mig_conn src = conn(sv[0], 1000, "target"), dst = conn(sv[1], 1000, "source");
	CHECK_EQ(mig_send(&src, MIG_MEMORY, 0, "12345678", 8, &file, 1), 0);
	struct mig_section s;
	CHECK_EQ(mig_expect(&dst, MIG_PREPARED, &s), -1);
	CHECK_CONTAINS(vmm_error(), "expected prepared from source, got memory");
	CHECK(s.nfds == 0);
	close(file);
	close(sv[0]);
	close(sv[1]);
	CHECK_EQ(count_open_fds(), before);
}

/* Every way a peer can get the fds wrong: each fails and leaks nothing. */
static void test_fd_failures_leak_nothing(void)
{
	int before = count_open_fds();
	int files[40];
	for (int i = 0; i < 40; i++)
		files[i] = memfd_create("migstream-test", MFD_CLOEXEC);
	int opened = count_open_fds();
	struct mig_section s;
	size_t total;

	/* header announces 2 fds, 1 arrives */
	int sv[2];
	make_pair(sv);
	struct mig_conn dst = conn(sv[1], 1000, "source");
	uint8_t *raw = encode_section(MIG_BACKEND, 0, "q", 1, 2, &total);
	send_raw(sv[0], raw, total, files, 1);
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "backend section: header announces 2 fds, 1 arrived");
	free(raw);

	/* header announces none, 3 arrive */
	raw = encode_section(MIG_BACKEND, 0, "q", 1, 0, &total);
	send_raw(sv[0], raw, total, files, 3);
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "header announces 0 fds, 3 arrived");
	free(raw);

	/* an fd arriving with the payload, not the header */
	raw = encode_section(MIG_DEVICE, 0, "payload", 7, 1, &total);
	send_raw(sv[0], raw, MIG_HEADER_SIZE, files, 1);
	send_raw(sv[0], raw + MIG_HEADER_SIZE, total - MIG_HEADER_SIZE, files + 1, 1);
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "arrived with the payload");
	free(raw);
	close(sv[0]);
	close(sv[1]);

	/* more fds than a section may carry */
	make_pair(sv);
	dst = conn(sv[1], 1000, "source");
	raw = encode_section(MIG_BACKEND, 0, NULL, 0, 0, &total);
	send_raw(sv[0], raw, total, files, 40);
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "too many file descriptors");
	free(raw);
	close(sv[0]);
	close(sv[1]);

	/* fds then a truncated payload */
	make_pair(sv);
	dst = conn(sv[1], 1000, "source");
	raw = encode_section(MIG_BACKEND, 0, "state", 5, 2, &total);
	send_raw(sv[0], raw, total - 1, files, 2);
	close(sv[0]);
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "in the middle");
	free(raw);
	close(sv[1]);

	/* fds then silence */
	make_pair(sv);
	dst = conn(sv[1], 50, "source");
	raw = encode_section(MIG_BACKEND, 0, "state", 5, 2, &total);
	send_raw(sv[0], raw, MIG_HEADER_SIZE, files, 2);
	CHECK_EQ(mig_recv(&dst, &s), -1);
	CHECK_CONTAINS(vmm_error(), "no data for 50 ms");
	free(raw);
	close(sv[0]);
	close(sv[1]);

	CHECK_EQ(count_open_fds(), opened);
	for (int i = 0; i < 40; i++)
		close(files[i]);
	CHECK_EQ(count_open_fds(), before);
}

/* ---- HELLO ---- */

static struct mig_hello sample_hello(void)
{
	struct mig_hello h = { .pid = 4242, .flags = MIG_HELLO_BACKEND_TRANSFER, .nkinds = 2 };
	snprintf(h.kinds[0].kind, sizeof(h.kinds[0].kind), "serial8250");
	h.kinds[0].min = 1, h.kinds[0].max = 1;
	snprintf(h.kinds[1].kind, sizeof(h.kinds[1].kind), "virtio-net");
	h.kinds[1].min = 1, h.kinds[1].max = 3;
	return h;
}

static void test_hello_round_trip(void)
{
	struct mig_hello h = sample_hello(), back;
	struct mig_buf b;
	mig_buf_init(&b);
	mig_hello_encode(&b, &h);
	CHECK_EQ(b.len, 12 + (1 + 10 + 4) * 2);
	CHECK_EQ(mig_hello_decode(b.data, b.len, &back), 0);
	CHECK(memcmp(&h, &back, sizeof(h)) == 0);
	mig_buf_free(&b);
}

/* Encodes h, lets edit() change the bytes, and expects decode to fail
 * with a message containing want. */
static void check_hello_rejected(const struct mig_hello *h, void (*edit)(struct mig_buf *), const char *want)
{
	struct mig_buf b;
	mig_buf_init(&b);
	mig_hello_encode(&b, h);
	if (edit)
		edit(&b);
	struct mig_hello out;
	CHECK_EQ(mig_hello_decode(b.data, b.len, &out), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), want);
	mig_buf_free(&b);
}

static void drop_last_byte(struct mig_buf *b) { b->len--; }
static void add_trailing_byte(struct mig_buf *b) { mig_put_u8(b, 0); }
static void count_says_65(struct mig_buf *b) { b->data[8] = 65; }
static void count_says_3(struct mig_buf *b) { b->data[8] = 3; }
static void kind_length_0(struct mig_buf *b) { b->data[12] = 0; }
static void kind_length_32(struct mig_buf *b) { b->data[12] = 32; }
static void nul_in_kind(struct mig_buf *b) { b->data[13 + 3] = 0; }

static void test_hello_decode_refuses_bad_input_naming_the_field(void)
{
	struct mig_hello h = sample_hello();
	check_hello_rejected(&h, drop_last_byte, "hello: truncated");
	check_hello_rejected(&h, add_trailing_byte, "hello: 1 unexpected trailing byte");
	check_hello_rejected(&h, count_says_65, "hello: 65 state version ranges (at most 64)");
	check_hello_rejected(&h, count_says_3, "hello: truncated");
	check_hello_rejected(&h, kind_length_0, "hello: range 0: a device kind of 0 bytes (1..31)");
	check_hello_rejected(&h, kind_length_32, "hello: range 0: a device kind of 32 bytes (1..31)");
	check_hello_rejected(&h, nul_in_kind, "hello: range 0: the device kind has a NUL byte");
	check_hello_rejected(&(struct mig_hello){ .pid = 0 }, NULL, "hello: target pid 0 is not a process id");
	check_hello_rejected(&(struct mig_hello){ .pid = 0x80000000u }, NULL,
			     "hello: target pid 2147483648 is not a process id");
	check_hello_rejected(&(struct mig_hello){ .pid = 7, .flags = 6 }, NULL, "hello: unknown flags 0x6");
	struct mig_hello inverted = sample_hello();
	inverted.kinds[1].min = 4;
	check_hello_rejected(&inverted, NULL, "hello: virtio-net: state versions 4..3 (min above max)");
	struct mig_hello twice = sample_hello();
	memcpy(&twice.kinds[1], &twice.kinds[0], sizeof(twice.kinds[0]));
	check_hello_rejected(&twice, NULL, "hello: serial8250: state versions given twice");
	struct mig_hello out;
	CHECK_EQ(mig_hello_decode(NULL, 0, &out), (unsigned long long)-1);
	CHECK_CONTAINS(vmm_error(), "hello: truncated");
}

static void test_hello_decode_of_random_bytes_never_crashes(void)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	struct mig_hello h = sample_hello(), out;
	struct mig_buf b;
	mig_buf_init(&b);
	mig_hello_encode(&b, &h);
	for (int i = 0; i < 20000; i++) {
		uint8_t copy[64];
		memcpy(copy, b.data, b.len);
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		copy[x % b.len] ^= (uint8_t)(x >> 32);
		size_t len = (x >> 40) % (b.len + 1);
		if (mig_hello_decode(copy, len, &out) == 0) {
			CHECK(out.pid >= 1 && out.pid <= INT32_MAX && out.nkinds <= MIG_HELLO_MAX_KINDS);
			for (unsigned k = 0; k < out.nkinds; k++)
				CHECK(out.kinds[k].kind[0] && out.kinds[k].min <= out.kinds[k].max);
		}
	}
	mig_buf_free(&b);
}

int main(void)
{
	RUN(test_crc32c_known_vector_and_chaining);
	RUN(test_buf_and_cursor_round_trip_every_width);
	RUN(test_buf_oom_is_sticky_and_reported);
	RUN(test_cursor_short_read_gives_zeros_and_finish_says_truncated);
	RUN(test_cursor_trailing_bytes_fail);
	RUN(test_header_decode_rejects_bad_fields_naming_the_value);
	RUN(test_type_names);
	RUN(test_hello_round_trip);
	RUN(test_hello_decode_refuses_bad_input_naming_the_field);
	RUN(test_hello_decode_of_random_bytes_never_crashes);
	RUN(test_parse_valid_section_and_its_failures);
	RUN(test_parse_random_garbage_never_crashes);
	RUN(test_send_recv_section_without_fds);
	RUN(test_send_recv_section_with_one_fd);
	RUN(test_send_recv_section_with_three_fds);
	RUN(test_send_recv_empty_payload);
	RUN(test_batch_sends_the_bytes_of_its_sections_in_one_write);
	RUN(test_send_recv_5mib_payload_through_a_nonblocking_socket);
	RUN(test_send_to_a_peer_that_does_not_read_times_out);
	RUN(test_send_rejects_oversized_section);
	RUN(test_send_to_a_closed_peer_says_closed);
	RUN(test_flipped_payload_byte_gives_checksum_message);
	RUN(test_peer_closing_mid_payload_says_in_the_middle);
	RUN(test_peer_closing_mid_header_says_in_the_middle);
	RUN(test_peer_closing_between_sections_says_closed);
	RUN(test_connection_reset_is_named);
	RUN(test_silent_peer_times_out_with_no_data);
	RUN(test_bad_header_from_peer_is_named);
	RUN(test_error_section_becomes_peer_message);
	RUN(test_expect_wrong_type_names_both_types);
	RUN(test_fd_failures_leak_nothing);
	return CHECK_DONE();
}
