/* The BIOS e820 memory map handed to the kernel in boot_params. */
#include "x86_boot.h"

#define ONE_MIB 0x100000ull

struct e820_out {
	struct e820_entry *entries;
	size_t n, max;
};

/* Appends one range; empty ranges and ranges past `max` are dropped. */
static void add_range(struct e820_out *out, uint64_t addr, uint64_t end, uint32_t type)
{
	if (end <= addr || out->n == out->max)
		return;
	out->entries[out->n++] = (struct e820_entry){ .addr = addr, .size = end - addr, .type = type };
}

size_t e820_build(const struct guest_mem *m, struct e820_entry *entries, size_t max)
{
	struct e820_out out = { .entries = entries, .n = 0, .max = max };
	uint64_t low_end = guest_mem_low_end(m);

	add_range(&out, 0, X86_EBDA_GPA < low_end ? X86_EBDA_GPA : low_end, E820_RAM);
	add_range(&out, X86_EBDA_GPA, ONE_MIB, E820_RESERVED);
	add_range(&out, ONE_MIB, low_end, E820_RAM);
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct guest_region *r = &m->regions[i];
		if (r->gpa >= GUEST_HIGH_RAM_START)
			add_range(&out, r->gpa, r->gpa + r->size, E820_RAM);
	}
	return out.n;
}
