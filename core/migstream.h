/* The local-migration wire format: sections over a connected UNIX stream
 * socket, file descriptors passed with SCM_RIGHTS.
 *
 * A section is a 24-byte header followed by `len` payload bytes:
 *
 *   u32 magic     MIG_MAGIC ("LVMG" little-endian)
 *   u16 version   MIG_VERSION (the framing; each device's state has its own)
 *   u16 type      enum mig_type
 *   u32 id        which instance (vCPU index, device index), else 0
 *   u32 len       payload bytes, at most MIG_MAX_SECTION
 *   u32 nfds      descriptors sent with the header (SCM_RIGHTS), at most MIG_MAX_FDS
 *   u32 crc       CRC-32C over the first 20 header bytes and the payload
 *
 * All integers little-endian. The descriptors ride on the sendmsg() that
 * carries the header, so the receiver gets them with the header's bytes.
 * Everything received is untrusted: the header is checked (magic, version,
 * known type, length and fd bounds), the CRC catches any flipped byte, and
 * a section must arrive with exactly the fds its header announces.
 *
 * Payloads are written with struct mig_buf and read with struct
 * mig_cursor, whose gets never read past the end: a short payload makes
 * mig_cursor_finish() fail with a message naming the section. */
#ifndef VMM_MIGSTREAM_H
#define VMM_MIGSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MIG_MAGIC       0x474d564cu /* "LVMG" */
#define MIG_VERSION     2
#define MIG_HEADER_SIZE 24
#define MIG_MAX_SECTION (16u << 20)
#define MIG_MAX_FDS     32

/* Section types: explicit numbers that never change; new types are
 * appended. T = target (the new process), S = source. In protocol order: */
enum mig_type {
	MIG_HELLO = 1,        /* T->S: u32 pid, u32 flags (MIG_HELLO_*), the state
	                       * versions it loads: u32 n, n x {u8 len, kind[len],
	                       * u16 min, u16 max} */
	MIG_DESCRIPTION = 2,  /* S->T: the machine description, an FDT (machine.h) */
	MIG_PLAN = 3,         /* T->S: u32 n, then n x u8: take device i's backend */
	MIG_MEMORY = 4,       /* S->T: u64 bytes; 1 fd: the guest RAM memfd */
	MIG_BACKEND = 5,      /* S->T: id = device index; payload: its backend_save;
	                       * fds: its backend_fds */
	MIG_PREPARED = 6,     /* T->S: VM built, waiting for the state */
	MIG_FREEZE = 7,       /* S->T: u64 CLOCK_MONOTONIC ns when the vCPUs stopped */
	MIG_VCPU = 8,         /* S->T: id = vCPU index (kvm_state.h) */
	MIG_MACHINE = 9,      /* S->T: irqchip, PIT, clock (kvm_state.h) */
	/* 10..13: stream version 1's serial, RTC, PCI function and net
	 * sections, which MIG_DEVICE replaced. */
	MIG_END = 14,         /* S->T: every state section was sent */
	MIG_READY = 15,       /* T->S: everything loaded; the target may run the VM */
	MIG_COMMIT = 16,      /* S->T: the target may finish; the source stays
	                       * paused, able to resume, until MIG_STARTING */
	MIG_ERROR = 17,       /* either way: a message (text, not NUL-terminated) */
	MIG_DEVICE = 18,      /* S->T: id = device index: u16 state version (the
	                       * description's), then the type's state */
	MIG_STARTING = 19,    /* T->S: everything is done, the vCPUs start now:
	                       * the point of no return */
	/* An attach session on a control socket (`vmm attach`): a client's
	 * first section is MIG_ATTACH instead of MIG_HELLO. C = the client,
	 * V = the VMM it attaches to. Text payloads are not NUL-terminated. */
	MIG_ATTACH = 20,      /* C->V: u32 attach version (1), u32 flags (0) */
	MIG_ATTACHED = 21,    /* V->C: text, the VM's name */
	MIG_EVAL = 22,        /* C->V: a Lua chunk (text) */
	MIG_OUTPUT = 23,      /* V->C: u8 stream (1 stdout, 2 stderr), then text */
	MIG_RESULT = 24,      /* V->C: u8 0 (the chunk ran) or 1 (it failed), then
	                       * the error's text */
	MIG_INTERRUPT = 25,   /* C->V: stop the running chunk (Ctrl-C) */
	MIG_COMPLETE = 26,    /* C->V: text, the word before the cursor (Tab) */
	MIG_COMPLETIONS = 27, /* V->C: the words that complete it, '\n'-separated */
	MIG_PREVIEW = 28,     /* S->T, after the backends, only to a target whose
	                       * HELLO has the feature MIG_FEATURE_PREVIEW: one
	                       * per device the description marks `preview`, in
	                       * device order; id = device index; payload: the
	                       * type's preview_save, in the device's state
	                       * version (the description's) */
	MIG_TYPE_MAX = MIG_PREVIEW,
};

#define MIG_ATTACH_VERSION 1u
/* MIG_ATTACH flags: the client completes names through the VMM. A VMM that
 * can ends ATTACHED's name with "\0complete"; one that cannot (an older
 * build) ignores the flag, and the client completes nothing. */
#define MIG_ATTACH_COMPLETE 1u

#define MIG_HELLO_BACKEND_TRANSFER 1u /* the target accepts backends */

const char *mig_type_name(uint32_t type); /* "vcpu", ...; "unknown" */
/* Whether type is a section type of this stream version. */
bool mig_type_known(uint32_t type);

/* --- payload writer --------------------------------------------------------- */

struct mig_buf {
	uint8_t *data;
	size_t len, cap;
	bool oom; /* an allocation failed; mig_buf_ok() reports it */
};

void mig_buf_init(struct mig_buf *b);
void mig_buf_free(struct mig_buf *b);
void mig_put_u8(struct mig_buf *b, uint8_t v);
void mig_put_u16(struct mig_buf *b, uint16_t v);
void mig_put_u32(struct mig_buf *b, uint32_t v);
void mig_put_u64(struct mig_buf *b, uint64_t v);
void mig_put_bytes(struct mig_buf *b, const void *p, size_t n);
/* 0, or -1 with a message if an allocation failed. */
int mig_buf_ok(const struct mig_buf *b, const char *what);

/* --- payload reader --------------------------------------------------------- */

struct mig_cursor {
	const uint8_t *p;
	size_t len, off;
	const char *what; /* "vcpu 1", for messages */
	bool short_read;  /* a get ran past the end; it returned zeros */
};

void mig_cursor_init(struct mig_cursor *c, const void *p, size_t len, const char *what);
uint8_t mig_get_u8(struct mig_cursor *c);
uint16_t mig_get_u16(struct mig_cursor *c);
uint32_t mig_get_u32(struct mig_cursor *c);
uint64_t mig_get_u64(struct mig_cursor *c);
void mig_get_bytes(struct mig_cursor *c, void *dst, size_t n); /* zero-fills on a short read */
/* Pointer to the next n bytes (consumed), or NULL on a short read. */
const void *mig_get_view(struct mig_cursor *c, size_t n);
size_t mig_cursor_left(const struct mig_cursor *c);
/* 0 if every get was in bounds and every byte was consumed; else -1 with
 * "<what>: truncated (needs more than N bytes)" or "<what>: N unexpected
 * trailing bytes". */
int mig_cursor_finish(struct mig_cursor *c);

/* --- HELLO ------------------------------------------------------------------ */

#define MIG_HELLO_MAX_KINDS 64        /* state version ranges in a HELLO */

/* Optional parts of the protocol, announced by the target as HELLO ranges
 * whose name begins with '+' (no device kind does): a source that knows
 * the feature and a version in the range uses it; an older source looks
 * for its device kinds only and ignores them. The range is that of the
 * feature's format. */
#define MIG_FEATURE_PREVIEW "+preview" /* MIG_PREVIEW, format 1 */
#define MIG_KIND_MAX 31               /* bytes in a device kind's name */

/* The HELLO payload: who the target is and which device state versions
 * it loads, by device kind. */
struct mig_hello {
	uint32_t pid;   /* the target's process (1..INT32_MAX) */
	uint32_t flags; /* MIG_HELLO_* */
	unsigned nkinds;
	struct mig_kind_versions {
		char kind[MIG_KIND_MAX + 1];
		uint16_t min, max;
	} kinds[MIG_HELLO_MAX_KINDS];
};

/* Appends h to b (its bounds are the caller's: nkinds, kind lengths). */
void mig_hello_encode(struct mig_buf *b, const struct mig_hello *h);
/* Decodes and checks an untrusted HELLO payload: pid in range, at most
 * MIG_HELLO_MAX_KINDS kinds, each named by 1..MIG_KIND_MAX bytes without
 * NUL, min <= max, no kind twice, nothing left over. -1 with a message
 * naming the bad field. Pure: the fuzz target calls it. */
int mig_hello_decode(const void *payload, size_t len, struct mig_hello *h);

/* --- sections --------------------------------------------------------------- */

struct mig_header {
	uint32_t type, id, len, nfds;
};

struct mig_section {
	uint32_t type, id;
	uint8_t *payload; /* len bytes (malloc'd, NULL if len is 0) */
	uint32_t len;
	int fds[MIG_MAX_FDS];
	unsigned nfds;
};

/* Checks a received header (magic, version, type, bounds; not the CRC)
 * and decodes it. -1 with a message naming the bad field. Pure: the fuzz
 * target calls it. */
int mig_header_decode(const uint8_t raw[MIG_HEADER_SIZE], struct mig_header *h);
/* Fills raw[] for a section, CRC included. */
void mig_header_encode(uint8_t raw[MIG_HEADER_SIZE], uint32_t type, uint32_t id, const void *payload,
		       uint32_t len, uint32_t nfds);
/* CRC-32C (Castagnoli). */
uint32_t mig_crc32c(uint32_t crc, const void *p, size_t n);
/* Whether raw's CRC matches the header bytes and the payload. */
bool mig_crc_ok(const uint8_t raw[MIG_HEADER_SIZE], const void *payload, uint32_t len);

/* Decodes one whole section from memory (no fds: nfds must be 0): the
 * fuzz target's entry point, and what mig_recv does after reading.
 * *used is the number of bytes the section took. */
int mig_parse(const uint8_t *buf, size_t len, size_t *used, struct mig_section *s);

/* A connected UNIX stream socket. Every wait is bounded by timeout_ms
 * (poll); a timeout, EOF or reset gives a message saying which. */
struct mig_conn {
	int fd;
	int timeout_ms;
	const char *peer; /* "target", "source": for messages */
};

int mig_send(struct mig_conn *c, uint32_t type, uint32_t id, const void *payload, size_t len,
	     const int *fds, unsigned nfds);
/* Sections without fds gathered in memory and sent with one write, so
 * that the peer is woken once for all of them, not once per section: the
 * same bytes on the wire as mig_send one by one. mig_batch_add takes the
 * payload's bytes (the caller keeps its buffer); mig_batch_send sends and
 * empties the batch (also on failure). */
int mig_batch_add(struct mig_buf *batch, uint32_t type, uint32_t id, const void *payload, size_t len);
int mig_batch_send(struct mig_conn *c, struct mig_buf *batch);
/* Receives one section, checked as described above. Received fds are
 * O_CLOEXEC and belong to s (mig_section_free closes those not taken: a
 * taker sets s->fds[i] = -1). */
int mig_recv(struct mig_conn *c, struct mig_section *s);
/* mig_recv, then: a MIG_ERROR section becomes -1 with "<peer>: <its
 * text>"; any other type than `type` is -1 with "expected <type> from
 * <peer>, got <type>". */
int mig_expect(struct mig_conn *c, uint32_t type, struct mig_section *s);
void mig_section_free(struct mig_section *s);
/* Best effort: tells the peer why we give up (MIG_ERROR with `msg`). */
void mig_send_error(struct mig_conn *c, const char *msg);

#endif
