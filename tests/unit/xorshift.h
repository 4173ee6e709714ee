/* Reproducible random numbers for tests: Marsaglia's xorshift32. */
#ifndef VMM_TEST_XORSHIFT_H
#define VMM_TEST_XORSHIFT_H

#include <stdint.h>

/* Advances *state (never 0) and returns it. */
static inline uint32_t xorshift32(uint32_t *state)
{
	uint32_t x = *state;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *state = x;
}

#endif
