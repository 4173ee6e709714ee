/* Fuzz target of the migration stream loader: the input is a byte stream
 * as the target receives it (without fds). It is walked section by section
 * with mig_parse(), and each section goes to its loader: for now the
 * machine description (machine_from_fdt); device loaders are added in
 * load_section().
 *
 * Beyond "never crash", it checks what the loaders promise: a parsed
 * section has the length and type its header announced, and a description
 * that parses is within bounds and survives machine_to_fdt() and a second
 * parse unchanged. A broken promise abort()s (the fuzzer's crash).
 *
 * Built with -DLIBFUZZER (clang -fsanitize=fuzzer) this is a libFuzzer
 * target. Otherwise main() below is a standalone driver:
 *   fuzz_migstream [-runs=N] [-seed=S] [-write-seeds=DIR] [FILE...]
 * It mutates a few valid streams built in code (byte flips, truncation,
 * insertion, deletion, header and length-field edits, FDT word edits in
 * description payloads) and, half of the time, recomputes every section's
 * CRC so that mutations reach the payload parsers. FILEs are replayed
 * once each (a crash input). A failing input is written to
 * fuzz_migstream-crash.bin in the current directory. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "machine.h"
#include "migstream.h"

/* --- the target ------------------------------------------------------------- */

static const uint8_t *current;
static size_t current_len;
static unsigned long long stat_descriptions, stat_descriptions_ok, stat_sections;

#define REQUIRE(cond, ...)                                                                   \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_migstream: %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                        \
			fputc('\n', stderr);                                                 \
			abort();                                                             \
		}                                                                            \
	} while (0)

static void load_description(const struct mig_section *s)
{
	struct machine_desc d, again;
	stat_descriptions++;
	if (machine_from_fdt(s->payload, s->len, &d)) {
		REQUIRE(vmm_error()[0], "a refusal without a message");
		return;
	}
	stat_descriptions_ok++;
	REQUIRE(machine_desc_check(&d) == 0, "parsed description out of bounds: %s", vmm_error());
	REQUIRE(d.nnets <= MACHINE_MAX_NETS, "nnets %u", d.nnets);

	void *blob;
	size_t len;
	REQUIRE(machine_to_fdt(&d, &blob, &len) == 0, "cannot rebuild a parsed description: %s", vmm_error());
	REQUIRE(machine_from_fdt(blob, len, &again) == 0, "cannot reparse a rebuilt description: %s",
		vmm_error());
	REQUIRE(!memcmp(&d, &again, sizeof(d)), "round trip changed the description");
	free(blob);
}

/* One section that mig_parse() accepted. */
static void load_section(const struct mig_section *s)
{
	switch (s->type) {
	case MIG_DESCRIPTION:
		load_description(s);
		break;
	default: /* device loaders go here */
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	current = data;
	current_len = size;
	size_t off = 0;
	while (off < size) {
		struct mig_section s;
		size_t used;
		if (mig_parse(data + off, size - off, &used, &s)) {
			REQUIRE(vmm_error()[0], "a refusal without a message");
			REQUIRE(s.payload == NULL && s.nfds == 0, "a failed parse left a payload or fds");
			break;
		}
		stat_sections++;
		REQUIRE(used >= MIG_HEADER_SIZE && used <= size - off, "used %zu of %zu", used, size - off);
		REQUIRE(s.len == used - MIG_HEADER_SIZE, "len %u, used %zu", s.len, used);
		REQUIRE(s.len == 0 || s.payload, "no payload for %u bytes", s.len);
		REQUIRE(s.nfds == 0, "%u fds from memory", s.nfds);
		REQUIRE(s.type >= 1 && s.type <= MIG_TYPE_MAX, "type %u", s.type);
		load_section(&s);
		mig_section_free(&s);
		off += used;
	}
	return 0;
}

#ifndef LIBFUZZER
/* --- the standalone driver -------------------------------------------------- */

#define MAX_INPUT (256u << 10)

struct bytes {
	uint8_t *p;
	size_t len;
};

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static size_t below(size_t n)
{
	return n ? (size_t)(rng() % n) : 0;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fprintf(stderr, "fuzz_migstream: out of memory\n");
		exit(1);
	}
	return p;
}

static void append_section(struct bytes *b, uint32_t type, uint32_t id, const void *payload, uint32_t len)
{
	b->p = xrealloc(b->p, b->len + MIG_HEADER_SIZE + len);
	mig_header_encode(b->p + b->len, type, id, payload, len, 0);
	if (len)
		memcpy(b->p + b->len + MIG_HEADER_SIZE, payload, len);
	b->len += MIG_HEADER_SIZE + len;
}

static void sample_desc(struct machine_desc *d, unsigned nnets)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "fuzz-%u", nnets);
	d->mem_size = (64ull + nnets) << 20;
	d->ncpus = 1 + nnets;
	d->nnets = nnets;
	for (unsigned i = 0; i < nnets; i++) {
		struct machine_net *n = &d->nets[i];
		snprintf(n->name, sizeof(n->name), "net%u", i);
		snprintf(n->ifname, sizeof(n->ifname), "tap%u", i);
		uint8_t mac[6] = { 0x52, 0x54, 0, 0, 0, (uint8_t)i };
		memcpy(n->mac, mac, 6);
		n->queue_pairs = 1 + i % 8;
		n->queue_size = (uint16_t)(64u << (i % 5));
		n->vhost = i & 1;
		n->transfer = (i & 2) != 0;
	}
}

static void append_description(struct bytes *b, unsigned nnets)
{
	struct machine_desc d;
	void *blob;
	size_t len;
	sample_desc(&d, nnets);
	if (machine_to_fdt(&d, &blob, &len)) {
		fprintf(stderr, "fuzz_migstream: machine_to_fdt: %s\n", vmm_error());
		exit(1);
	}
	append_section(b, MIG_DESCRIPTION, 0, blob, (uint32_t)len);
	free(blob);
}

static void append_u64_section(struct bytes *b, uint32_t type, uint64_t v)
{
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(v >> (8 * i));
	append_section(b, type, 0, le, sizeof(le));
}

/* Valid streams: what a source sends, as far as it is fd-free. */
static unsigned build_seeds(struct bytes *seeds)
{
	static const uint8_t hello[8] = { 0x39, 0x30, 0, 0, 1, 0, 0, 0 }; /* pid 12345, backend transfer */
	static const char err[] = "source: out of patience";
	memset(seeds, 0, 4 * sizeof(*seeds));

	append_section(&seeds[0], MIG_HELLO, 0, hello, sizeof(hello));
	append_description(&seeds[0], MACHINE_MAX_NETS);
	append_section(&seeds[0], MIG_END, 0, NULL, 0);

	append_description(&seeds[1], 0);
	append_u64_section(&seeds[1], MIG_FREEZE, 123456789);
	append_section(&seeds[1], MIG_END, 0, NULL, 0);
	append_section(&seeds[1], MIG_COMMIT, 0, NULL, 0);

	append_description(&seeds[2], 2);

	append_section(&seeds[3], MIG_HELLO, 0, hello, sizeof(hello));
	append_description(&seeds[3], 1);
	append_section(&seeds[3], MIG_ERROR, 0, err, sizeof(err) - 1);
	return 4;
}

/* Header fields, little-endian, at these offsets (migstream.h). */
#define H_TYPE 6
#define H_LEN 12
#define H_NFDS 16

static uint32_t load_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Offsets of the section headers found by walking the length fields (at
 * most max); a header whose payload runs past the end still counts. */
static size_t find_headers(const struct bytes *b, size_t *offs, size_t max)
{
	size_t n = 0;
	for (size_t off = 0; off + MIG_HEADER_SIZE <= b->len && n < max;) {
		offs[n++] = off;
		off += MIG_HEADER_SIZE + (size_t)load_le32(b->p + off + H_LEN);
	}
	return n;
}

/* Rewrites every complete section's header with a correct CRC (and the
 * right magic and version). */
static void fix_crcs(struct bytes *b)
{
	size_t off = 0;
	while (off + MIG_HEADER_SIZE <= b->len) {
		uint8_t *h = b->p + off;
		uint32_t len = load_le32(h + H_LEN);
		if (len > b->len - off - MIG_HEADER_SIZE)
			break;
		uint32_t type = (uint32_t)h[H_TYPE] | (uint32_t)h[H_TYPE + 1] << 8;
		mig_header_encode(h, type, load_le32(h + 8), h + MIG_HEADER_SIZE, len, load_le32(h + H_NFDS));
		off += MIG_HEADER_SIZE + len;
	}
}

static void insert_bytes(struct bytes *b, size_t at, const uint8_t *src, size_t n)
{
	if (b->len + n > MAX_INPUT)
		return;
	b->p = xrealloc(b->p, b->len + n);
	memmove(b->p + at + n, b->p + at, b->len - at);
	memcpy(b->p + at, src, n);
	b->len += n;
}

static const uint32_t interesting[] = {
	0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 24, 63, 64, 65, 255, 256, 1023, 1024, 1025, 4096,
	0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffff0, 0xfffffffc, 0xffffffff,
	0xd00dfeed, /* FDT magic */ 0x00000001, 0x00000002, 0x00000003, 0x00000009, /* FDT tokens */
	MIG_MAX_SECTION, MIG_MAX_SECTION + 1, MIG_MAX_FDS, MIG_MAX_FDS + 1,
};
#define NINTERESTING (sizeof(interesting) / sizeof(interesting[0]))

static uint32_t pick_value(const struct bytes *b)
{
	switch (rng() % 4) {
	case 0:
		return (uint32_t)rng();
	case 1:
		return (uint32_t)b->len + (uint32_t)below(9) - 4;
	default:
		return interesting[below(NINTERESTING)];
	}
}

/* A big-endian word edit inside a description payload: reaches the FDT
 * header fields, tokens, offsets and property lengths. */
static void edit_fdt_word(struct bytes *b)
{
	size_t offs[64];
	size_t n = find_headers(b, offs, 64), start = below(n);
	for (size_t i = 0; i < n; i++) {
		size_t h = offs[(start + i) % n];
		uint32_t len = load_le32(b->p + h + H_LEN);
		uint32_t type = (uint32_t)b->p[h + H_TYPE] | (uint32_t)b->p[h + H_TYPE + 1] << 8;
		if (type != MIG_DESCRIPTION || len < 4 || len > b->len - h - MIG_HEADER_SIZE)
			continue;
		size_t at = h + MIG_HEADER_SIZE + 4 * below(len / 4);
		uint32_t v = pick_value(b);
		if (rng() & 1) /* small deltas of what is there */
			v = ((uint32_t)b->p[at] << 24 | (uint32_t)b->p[at + 1] << 16 | (uint32_t)b->p[at + 2] << 8 |
			     b->p[at + 3]) + (uint32_t)below(17) - 8;
		for (int k = 0; k < 4; k++)
			b->p[at + k] = (uint8_t)(v >> (24 - 8 * k));
		return;
	}
}

/* A header field edit: len (most often), type or nfds. */
static void edit_header(struct bytes *b)
{
	size_t offs[64];
	size_t n = find_headers(b, offs, 64);
	if (!n)
		return;
	uint8_t *h = b->p + offs[below(n)];
	switch (rng() % 4) {
	case 0:
		h[H_TYPE] = (uint8_t)below(MIG_TYPE_MAX + 2);
		h[H_TYPE + 1] = (rng() % 8) ? 0 : (uint8_t)rng();
		break;
	case 1:
		store_le32(h + H_NFDS, (rng() & 1) ? 0 : pick_value(b));
		break;
	default: {
		uint32_t len = load_le32(h + H_LEN);
		store_le32(h + H_LEN, (rng() & 1) ? len + (uint32_t)below(17) - 8 : pick_value(b));
	}
	}
}

static void mutate_once(struct bytes *b)
{
	uint8_t junk[16];
	size_t n;
	switch (rng() % 9) {
	case 0: /* flip a bit */
		if (b->len)
			b->p[below(b->len)] ^= (uint8_t)(1u << below(8));
		break;
	case 1: /* set a byte */
		if (b->len)
			b->p[below(b->len)] = (uint8_t)rng();
		break;
	case 2: /* truncate */
		b->len = below(b->len + 1);
		break;
	case 3: /* insert random bytes */
		n = 1 + below(sizeof(junk));
		for (size_t i = 0; i < n; i++)
			junk[i] = (uint8_t)rng();
		insert_bytes(b, below(b->len + 1), junk, n);
		break;
	case 4: /* delete a range */
		if (b->len) {
			size_t at = below(b->len);
			size_t cut = 1 + below(b->len - at < 64 ? b->len - at : 64);
			memmove(b->p + at, b->p + at + cut, b->len - at - cut);
			b->len -= cut;
		}
		break;
	case 5: /* duplicate a range (e.g. a whole section) elsewhere */
		if (b->len) {
			size_t at = below(b->len);
			size_t cnt = 1 + below(b->len - at);
			uint8_t *copy = xrealloc(NULL, cnt);
			memcpy(copy, b->p + at, cnt);
			insert_bytes(b, below(b->len + 1), copy, cnt);
			free(copy);
		}
		break;
	case 6:
		edit_header(b);
		break;
	default:
		edit_fdt_word(b);
		break;
	}
}

/* Saves the input being run (async-signal-safe: also called from a
 * crash's signal handler). */
static void dump_current(void)
{
	static const char msg[] = "fuzz_migstream: input written to fuzz_migstream-crash.bin\n";
	if (!current)
		return;
	int fd = open("fuzz_migstream-crash.bin", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	for (size_t done = 0; done < current_len;) {
		ssize_t n = write(fd, current + done, current_len - done);
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	close(fd);
	if (write(2, msg, sizeof(msg) - 1) < 0)
		return;
}

/* ASan calls this before its report (deadly signals included). */
void __asan_on_error(void);
void __asan_on_error(void)
{
	dump_current();
}

static void on_crash(int sig)
{
	dump_current();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void on_hang(int sig)
{
	static const char msg[] = "fuzz_migstream: one input ran for more than 10 s (a hang)\n";
	(void)sig;
	dump_current();
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

/* Without a sanitizer owning them, crash signals save the input first;
 * an input running 10 s (alarm() before each) counts as a hang. */
static void catch_crashes(void)
{
	signal(SIGALRM, on_hang);
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		struct sigaction old;
		if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
		    !(old.sa_flags & SA_SIGINFO))
			signal(sigs[i], on_crash);
	}
}

static int parse_u64_arg(const char *arg, const char *prefix, unsigned long long *out)
{
	size_t n = strlen(prefix);
	if (strncmp(arg, prefix, n))
		return 0;
	char *end;
	errno = 0;
	*out = strtoull(arg + n, &end, 0);
	if (errno || end == arg + n || *end) {
		fprintf(stderr, "fuzz_migstream: bad %s\n", arg);
		exit(2);
	}
	return 1;
}

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "fuzz_migstream: %s: %s\n", path, strerror(errno));
		return 1;
	}
	struct bytes b = { xrealloc(NULL, MAX_INPUT), 0 };
	b.len = fread(b.p, 1, MAX_INPUT, f);
	fclose(f);
	alarm(10);
	LLVMFuzzerTestOneInput(b.p, b.len);
	printf("fuzz_migstream: %s: %zu bytes replayed\n", path, b.len);
	free(b.p);
	return 0;
}

static int write_seeds(const char *dir, const struct bytes *seeds, unsigned nseeds)
{
	for (unsigned i = 0; i < nseeds; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/seed-%u.bin", dir, i);
		FILE *f = fopen(path, "wb");
		if (!f || fwrite(seeds[i].p, 1, seeds[i].len, f) != seeds[i].len || fclose(f)) {
			fprintf(stderr, "fuzz_migstream: %s: %s\n", path, strerror(errno));
			return 1;
		}
	}
	printf("fuzz_migstream: %u seeds written to %s\n", nseeds, dir);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long long runs = 10000, seed = 1;
	const char *seed_dir = NULL;
	int nfiles = 0, rc = 0;
	catch_crashes();
	for (int i = 1; i < argc; i++) {
		if (parse_u64_arg(argv[i], "-runs=", &runs) || parse_u64_arg(argv[i], "-seed=", &seed))
			continue;
		if (!strncmp(argv[i], "-write-seeds=", 13)) {
			seed_dir = argv[i] + 13;
			continue;
		}
		if (argv[i][0] == '-') {
			fprintf(stderr, "usage: fuzz_migstream [-runs=N] [-seed=S] [-write-seeds=DIR] [FILE...]\n");
			return 2;
		}
		rc |= replay_file(argv[i]);
		nfiles++;
	}
	if (nfiles)
		return rc;

	struct bytes seeds[4];
	unsigned nseeds = build_seeds(seeds);
	if (seed_dir)
		return write_seeds(seed_dir, seeds, nseeds);

	/* Each valid seed must load entirely: the baseline the mutations break. */
	for (unsigned i = 0; i < nseeds; i++) {
		unsigned long long before = stat_descriptions_ok;
		LLVMFuzzerTestOneInput(seeds[i].p, seeds[i].len);
		REQUIRE(stat_descriptions_ok == before + 1, "seed %u: its description was refused: %s", i,
			vmm_error());
	}

	rng_state = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
	struct bytes b = { NULL, 0 };
	for (unsigned long long run = 0; run < runs; run++) {
		const struct bytes *s = &seeds[below(nseeds)];
		b.p = xrealloc(b.p, s->len);
		memcpy(b.p, s->p, s->len);
		b.len = s->len;
		unsigned nmut = 1 + (unsigned)below(4);
		for (unsigned m = 0; m < nmut; m++)
			mutate_once(&b);
		if (rng() & 1)
			fix_crcs(&b);
		alarm(10);
		LLVMFuzzerTestOneInput(b.p, b.len);
	}
	printf("fuzz_migstream: %llu runs, seed %llu: %llu sections parsed, %llu descriptions reached, "
	       "%llu accepted\n",
	       runs, seed, stat_sections, stat_descriptions, stat_descriptions_ok);
	free(b.p);
	for (unsigned i = 0; i < nseeds; i++)
		free(seeds[i].p);
	return 0;
}
#endif
