/* Fuzz target of the launcher's request decoding (launcher_parse_spawn,
 * launcher_parse_allow): what a compromised VMM could send the process
 * that runs its host commands. An input is one byte (bit 7: an ALLOW, else
 * a SPAWN; the rest, with the next byte, the announced count) and the
 * payload. Whatever the input: no read past it; an accepted SPAWN has argc
 * strings, a NULL after them, non-empty argv[0], and every string and
 * redirection inside the payload; an accepted ALLOW as many names as
 * announced, each inside the payload; a refusal says "launcher:".
 *
 * Built with -DLIBFUZZER (clang -fsanitize=fuzzer) this is a libFuzzer
 * target; otherwise a standalone driver that mutates valid requests:
 *   fuzz_launcher [-runs=N] [-seed=S] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "launcher.h"
#include "driver.h"
#include "xorshift.h"

#define REQUIRE(cond, ...) do { if (!(cond)) { fprintf(stderr, "fuzz_launcher: " __VA_ARGS__); \
	fprintf(stderr, " (%s)\n", #cond); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const char *s, const char *buf, size_t len)
{
	return s >= buf && s < buf + len && memchr(s, '\0', (size_t)(buf + len - s)) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint32_t count = (uint32_t)(data[0] & 0x7f) << 8 | data[1];
	size_t len = size - 2;
	/* the launcher's buffer: the payload and the NUL recv_msg puts after it */
	char *buf = malloc(len + 1);
	REQUIRE(buf, "out of memory");
	memcpy(buf, data + 2, len);
	buf[len] = '\0';
	if (data[0] & 0x80) {
		char *names[64];
		if (launcher_parse_allow(buf, len, count, names, 64) == 0) {
			REQUIRE(count <= 64, "%u names accepted", count);
			for (uint32_t i = 0; i < count; i++)
				REQUIRE(inside(names[i], buf, len), "name %u outside the payload", i);
		} else {
			REQUIRE(strstr(vmm_error(), "launcher:"), "refusal without its origin: %s", vmm_error());
		}
	} else {
		struct launcher_spawn_req req;
		if (launcher_parse_spawn(buf, len, count, &req) == 0) {
			REQUIRE(req.argc >= 1 && (uint32_t)req.argc == count && req.argc <= LAUNCHER_MAX_ARGS,
				"argc %d for %u", req.argc, count);
			REQUIRE(req.argv[req.argc] == NULL, "argv not NULL-terminated");
			REQUIRE(req.argv[0][0] != '\0', "empty program accepted");
			for (int i = 0; i < req.argc; i++)
				REQUIRE(inside(req.argv[i], buf, len), "argv[%d] outside the payload", i);
			REQUIRE(!req.stdin_path || inside(req.stdin_path, buf, len), "stdin outside");
			REQUIRE(!req.stdout_path || inside(req.stdout_path, buf, len), "stdout outside");
		} else {
			REQUIRE(strstr(vmm_error(), "launcher:"), "refusal without its origin: %s", vmm_error());
		}
	}
	free(buf);
	return 0;
}

#ifndef LIBFUZZER
static uint32_t rng_state = 1;
static uint32_t rng(void) { return xorshift32(&rng_state); }

/* A valid request: SPAWN "sh -c 'echo hi'" with stdout redirected, or ALLOW
 * "ping md5sum". -> its size. */
static size_t seed(uint8_t *b, int allow)
{
	static const char spawn[] = "sh\0-c\0echo hi\0\0/tmp/out";
	static const char names[] = "ping\0md5sum";
	const char *p = allow ? names : spawn;
	size_t n = allow ? sizeof(names) : sizeof(spawn);
	b[0] = allow ? 0x80 : 0;
	b[1] = allow ? 2 : 3;
	memcpy(b + 2, p, n);
	return 2 + n;
}

int main(int argc, char **argv)
{
	unsigned long runs = 100000, s = 1;
	if (fuzz_driver_args(argc, argv, "fuzz_launcher", &runs, &s))
		return 2;
	rng_state = s ? (uint32_t)s : 1;
	uint8_t buf[256];
	/* the seeds must be accepted: the mutations start from valid requests */
	for (int allow = 0; allow < 2; allow++) {
		size_t n = seed(buf, allow);
		char copy[64];
		memcpy(copy, buf + 2, n - 2);
		struct launcher_spawn_req req;
		char *names[4];
		int rc = allow ? launcher_parse_allow(copy, n - 2, 2, names, 4) : launcher_parse_spawn(copy, n - 2, 3, &req);
		REQUIRE(rc == 0, "seed %d: %s", allow, vmm_error());
	}
	for (unsigned long i = 0; i < runs; i++) {
		size_t n = seed(buf, rng() & 1);
		for (unsigned k = 1 + rng() % 4; k > 0; k--) {
			switch (rng() % 5) {
			case 0: buf[rng() % n] ^= (uint8_t)(1u << (rng() % 8)); break;
			case 1: buf[rng() % n] = (uint8_t)rng(); break;
			case 2: if (n > 2) buf[2 + rng() % (n - 2)] = '\0'; break; /* split a string */
			case 3: if (n > 2) n -= rng() % (n - 1); break;	  /* truncate */
			default: { /* extend */
				size_t add = rng() % 32;
				if (n + add > sizeof(buf))
					add = sizeof(buf) - n;
				for (size_t j = 0; j < add; j++)
					buf[n + j] = rng() % 3 ? (uint8_t)('a' + rng() % 26) : 0;
				n += add;
			}
			}
		}
		LLVMFuzzerTestOneInput(buf, n);
	}
	printf("fuzz_launcher: %lu runs, seed %lu: no failure\n", runs, s);
	return 0;
}
#endif
