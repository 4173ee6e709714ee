/* Fuzz target of the two places where a backend's bytes are decoded: the
 * vhost-user reply check (vhost_user_parse_reply) and the inflight region
 * (vhost_user_inflight_position). An input is one byte that picks the
 * request, need_ack, the config size and the fd count, then the reply's
 * bytes; or the byte 0xff, a u16 queue size (taken modulo 256, plus 1), a
 * u16 ring used index, then one queue's region. Whatever the input: no
 * read past it; an accepted reply is consistent (its header says what was
 * asked, its payload fits), an accepted region puts the next avail index
 * at most a queue ahead of the used one; a refusal names the request, or
 * the region.
 *
 * Built with -DLIBFUZZER (clang -fsanitize=fuzzer) this is a libFuzzer
 * target; otherwise a standalone driver that mutates valid replies:
 *   fuzz_vhost_user [-runs=N] [-seed=S] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "vhost_user.h"
#include "driver.h"
#include "xorshift.h"

static const uint32_t requests[] = {
	VHOST_USER_GET_FEATURES, VHOST_USER_GET_PROTOCOL_FEATURES, VHOST_USER_GET_QUEUE_NUM,
	VHOST_USER_GET_VRING_BASE, VHOST_USER_GET_CONFIG, VHOST_USER_GET_INFLIGHT_FD,
	VHOST_USER_SET_MEM_TABLE, VHOST_USER_SET_VRING_ADDR, VHOST_USER_SET_OWNER,
};
#define NREQ (sizeof(requests) / sizeof(requests[0]))
static const uint32_t config_sizes[] = { 0, 8, 60, 256, 257 };

#define REQUIRE(cond, ...) do { if (!(cond)) { fprintf(stderr, "fuzz_vhost_user: " __VA_ARGS__); \
	fprintf(stderr, " (%s)\n", #cond); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REGION_PICK 0xff

static int fuzz_region(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	uint16_t qs = (uint16_t)(1 + (data[0] | data[1] << 8) % 256), used = (uint16_t)(data[2] | data[3] << 8);
	size_t len = size - 4;
	uint8_t *buf = malloc(len ? len : 1);
	REQUIRE(buf, "out of memory");
	memcpy(buf, data + 4, len);
	uint16_t last = 0;
	int rc = vhost_user_inflight_position(buf, len, qs, used, 0, &last);
	if (rc == 0)
		REQUIRE((uint16_t)(last - used) <= qs, "next avail %u for used %u in a queue of %u", last, used, qs);
	else if (rc < 0)
		REQUIRE(strstr(vmm_error(), "inflight region"), "refusal without the region: %s", vmm_error());
	else
		REQUIRE(rc == 1, "rc %d", rc);
	free(buf);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] == REGION_PICK)
		return fuzz_region(data + 1, size - 1);
	uint8_t pick = data[0];
	uint32_t request = requests[(pick & 0x0f) % NREQ];
	bool need_ack = pick & 0x10;
	uint32_t config = config_sizes[((pick >> 5) & 3) % 5];
	unsigned nfds = pick >> 7;
	/* a copy of exactly the reply's bytes, so that a read past them is
	 * caught by ASan */
	size_t len = size - 1;
	uint8_t *buf = malloc(len ? len : 1);
	REQUIRE(buf, "out of memory");
	memcpy(buf, data + 1, len);
	struct vhost_user_reply r;
	if (vhost_user_parse_reply(buf, len, nfds, request, need_ack, config, &r) == 0) {
		REQUIRE(r.request == request, "accepted a reply to %u for %u", r.request, request);
		REQUIRE(VHOST_USER_HDR_SIZE + (size_t)r.size == len, "size %u of %zu bytes", r.size, len);
		REQUIRE(request != VHOST_USER_GET_CONFIG || r.config.size == config, "config %u", r.config.size);
		REQUIRE(config <= VHOST_USER_MAX_CONFIG, "config size %u accepted", config);
	} else {
		REQUIRE(strstr(vmm_error(), vhost_user_request_name(request)), "refusal without the request: %s",
			vmm_error());
	}
	free(buf);
	return 0;
}

#ifndef LIBFUZZER
static uint32_t rng_state;

static uint32_t rng(void) { return xorshift32(&rng_state); }

/* A valid reply to request (with the pick byte first) -> its length. */
static size_t seed(uint8_t *out, unsigned ri, bool ack, unsigned ci)
{
	uint32_t request = requests[ri], config = config_sizes[ci];
	uint32_t size = 8;
	if (request == VHOST_USER_GET_CONFIG)
		size = 12 + (config > 256 ? 0 : config);
	else if (request == VHOST_USER_GET_INFLIGHT_FD)
		size = 24;
	else if ((request == VHOST_USER_SET_OWNER || request == VHOST_USER_SET_MEM_TABLE ||
		  request == VHOST_USER_SET_VRING_ADDR) && !ack)
		size = 0;
	out[0] = (uint8_t)(ri | (ack ? 0x10 : 0) | ci << 5 | (request == VHOST_USER_GET_INFLIGHT_FD ? 0x80 : 0));
	uint32_t h[3] = { request, VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY, size };
	memcpy(out + 1, h, 12);
	memset(out + 13, 0, size);
	if (request == VHOST_USER_GET_CONFIG) {
		uint32_t c[3] = { 0, config, 0 };
		memcpy(out + 13, c, 12);
	}
	return 13 + size;
}

#define REGION_QS 8

/* A region input: queue size 8, ring used index 6; the region's used_idx
 * 5 with a last batch of one (head 2), heads 2, 4 and 7 marked in flight:
 * next avail 8. */
static size_t region_seed(uint8_t *out)
{
	size_t len = VHOST_USER_INFLIGHT_HDR + VHOST_USER_INFLIGHT_DESC * REGION_QS;
	out[0] = REGION_PICK;
	out[1] = REGION_QS - 1, out[2] = 0; /* 1 + 7 % 256 */
	out[3] = 6, out[4] = 0;
	uint8_t *r = out + 5;
	memset(r, 0, len);
	r[8] = 1;             /* version */
	r[10] = REGION_QS;    /* desc_num */
	r[12] = 2;            /* last_batch_head */
	r[14] = 5;            /* used_idx */
	r[VHOST_USER_INFLIGHT_HDR + 16 * 2] = 1;
	r[VHOST_USER_INFLIGHT_HDR + 16 * 4] = 1;
	r[VHOST_USER_INFLIGHT_HDR + 16 * 7] = 1;
	return 5 + len;
}

int main(int argc, char **argv)
{
	unsigned long runs = 100000, s = 1;
	if (fuzz_driver_args(argc, argv, "fuzz_vhost_user", &runs, &s))
		return 2;
	rng_state = s ? (uint32_t)s : 1;
	/* every seed must be accepted: the mutations start from replies the
	 * parser takes */
	uint8_t buf[13 + 24 + 256 + 64];
	unsigned seeds_ok = 0;
	for (unsigned ri = 0; ri < NREQ; ri++)
		for (unsigned ci = 0; ci < 4; ci++) {
			/* the SET_ requests have a reply only as an acknowledgement */
			bool ack = requests[ri] == VHOST_USER_SET_OWNER || requests[ri] == VHOST_USER_SET_MEM_TABLE ||
				   requests[ri] == VHOST_USER_SET_VRING_ADDR;
			size_t n = seed(buf, ri, ack, ci);
			struct vhost_user_reply r;
			int rc = vhost_user_parse_reply(buf + 1, n - 1, buf[0] >> 7, requests[ri], ack, config_sizes[ci],
							&r);
			bool want_ok = requests[ri] != VHOST_USER_GET_CONFIG || config_sizes[ci] <= 256;
			REQUIRE((rc == 0) == want_ok, "seed %u/%u: %s", ri, ci, vmm_error());
			seeds_ok++;
		}
	uint8_t region[5 + VHOST_USER_INFLIGHT_HDR + VHOST_USER_INFLIGHT_DESC * REGION_QS];
	size_t rn = region_seed(region);
	uint16_t last;
	REQUIRE(vhost_user_inflight_position(region + 5, rn - 5, REGION_QS, 6, 0, &last) == 0 && last == 8,
		"region seed: %s", vmm_error());
	seeds_ok++;
	for (unsigned long i = 0; i < runs; i++) {
		if (rng() % 4 == 0) { /* a region */
			uint8_t r[sizeof(region) + 16];
			size_t n = region_seed(r);
			for (unsigned k = 1 + rng() % 4; k > 0; k--) {
				switch (rng() % 3) {
				case 0: r[1 + rng() % (n - 1)] ^= (uint8_t)(1u << (rng() % 8)); break;
				case 1: r[1 + rng() % (n - 1)] = (uint8_t)rng(); break;
				default: if (n > 2) n -= 1 + rng() % (n - 2); break;
				}
			}
			LLVMFuzzerTestOneInput(r, n);
			continue;
		}
		size_t n = seed(buf, (unsigned)(rng() % NREQ), rng() & 1, (unsigned)(rng() % 5));
		unsigned flips = 1 + (unsigned)(rng() % 4);
		for (unsigned k = 0; k < flips; k++) {
			switch (rng() % 4) {
			case 0: buf[rng() % n] ^= (uint8_t)(1u << (rng() % 8)); break;
			case 1: buf[rng() % n] = (uint8_t)rng(); break;
			case 2: if (n > 1) n -= 1 + rng() % (n - 1); break; /* truncate */
			default: { /* extend */
				size_t more = rng() % 16;
				if (n + more > sizeof(buf))
					break;
				for (size_t j = 0; j < more; j++)
					buf[n + j] = (uint8_t)rng();
				n += more;
			}
			}
		}
		LLVMFuzzerTestOneInput(buf, n);
	}
	printf("fuzz_vhost_user: %u seeds, %lu mutated replies and regions, no crash\n", seeds_ok, runs);
	return 0;
}
#endif
