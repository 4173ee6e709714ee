/* e820_build over guest memory layouts of several sizes. e820_build only
 * reads the region table, so the layouts wrap a dummy buffer. */
#include <stdint.h>

#include "check.h"
#include "x86_boot.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static uint8_t dummy;

static size_t build(uint64_t size, struct e820_entry *e, size_t max)
{
	struct guest_mem m;
	if (guest_mem_wrap(&m, &dummy, size))
		return 0;
	return e820_build(&m, e, max);
}

static void check_entry(const struct e820_entry *e, uint64_t addr, uint64_t size, uint32_t type)
{
	CHECK_EQ(e->addr, addr);
	CHECK_EQ(e->size, size);
	CHECK_EQ(e->type, type);
}

/* Sorted, non-empty, non-overlapping, no RAM in the PCI hole; returns RAM bytes. */
static uint64_t check_map(const struct e820_entry *e, size_t n)
{
	uint64_t ram = 0;
	for (size_t i = 0; i < n; i++) {
		CHECK(e[i].size > 0);
		if (i > 0)
			CHECK(e[i - 1].addr + e[i - 1].size <= e[i].addr);
		if (e[i].type == E820_RAM) {
			ram += e[i].size;
			CHECK(e[i].addr + e[i].size <= GUEST_PCI_HOLE_START ||
			      e[i].addr >= GUEST_HIGH_RAM_START);
		}
	}
	return ram;
}

static void one_mib(void)
{
	struct e820_entry e[8];
	size_t n = build(MiB, e, 8);

	CHECK_EQ(n, 2);
	check_entry(&e[0], 0, X86_EBDA_GPA, E820_RAM);
	check_entry(&e[1], X86_EBDA_GPA, MiB - X86_EBDA_GPA, E820_RESERVED);
	CHECK_EQ(check_map(e, n), X86_EBDA_GPA);
}

static void mib_128(void)
{
	struct e820_entry e[8];
	size_t n = build(128 * MiB, e, 8);

	CHECK_EQ(n, 3);
	check_entry(&e[0], 0, X86_EBDA_GPA, E820_RAM);
	check_entry(&e[1], X86_EBDA_GPA, MiB - X86_EBDA_GPA, E820_RESERVED);
	check_entry(&e[2], MiB, 127 * MiB, E820_RAM);
	CHECK_EQ(check_map(e, n), 128 * MiB - (MiB - X86_EBDA_GPA));
}

static void exactly_3_gib(void)
{
	struct e820_entry e[8];
	size_t n = build(3 * GiB, e, 8);

	CHECK_EQ(n, 3);
	check_entry(&e[2], MiB, 3 * GiB - MiB, E820_RAM);
	CHECK_EQ(check_map(e, n), 3 * GiB - (MiB - X86_EBDA_GPA));
}

static void gib_4(void)
{
	struct e820_entry e[8];
	size_t n = build(4 * GiB, e, 8);

	CHECK_EQ(n, 4);
	check_entry(&e[2], MiB, 3 * GiB - MiB, E820_RAM);
	check_entry(&e[3], 4 * GiB, 1 * GiB, E820_RAM);
	CHECK_EQ(check_map(e, n), 4 * GiB - (MiB - X86_EBDA_GPA));
}

static void truncated_to_max(void)
{
	struct e820_entry e[8];
	e[2].addr = 0x1234;

	CHECK_EQ(build(4 * GiB, e, 2), 2);
	CHECK_EQ(e[2].addr, 0x1234); /* nothing written past max */
	CHECK_EQ(build(4 * GiB, e, 0), 0);
}

int main(void)
{
	RUN(one_mib);
	RUN(mib_128);
	RUN(exactly_3_gib);
	RUN(gib_4);
	RUN(truncated_to_max);
	return CHECK_DONE();
}
