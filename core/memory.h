/* Guest RAM: one memfd, mapped once in the VMM, so that it can be handed to
 * another process (SCM_RIGHTS) without copying. Guest-physical layout on x86:
 * low RAM from 0 up to the PCI hole (3 GiB), the rest from 4 GiB up.
 * Every guest-physical access goes through guest_mem_ptr(), which refuses
 * any range that is not wholly inside one RAM region. */
#ifndef VMM_MEMORY_H
#define VMM_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_PCI_HOLE_START 0xC0000000ull /* 3 GiB: MMIO hole up to 4 GiB */
#define GUEST_HIGH_RAM_START 0x100000000ull

struct guest_region {
	uint64_t gpa;    /* guest-physical start */
	uint64_t size;   /* bytes */
	uint64_t offset; /* offset in the memfd (and in the mapping) */
};

struct guest_mem {
	int fd;        /* memfd holding all of guest RAM, -1 if none */
	uint8_t *host; /* mapping of the whole memfd */
	uint64_t size; /* total RAM bytes */
	unsigned nregions;
	struct guest_region regions[2];
};

/* Creates `size` bytes of RAM (a multiple of 4 KiB, at least 1 MiB) in a new
 * memfd named `name`. */
int guest_mem_create(struct guest_mem *m, uint64_t size, const char *name);

/* Takes over guest RAM received from another process (local migration):
 * fd must be a memfd of exactly `size` bytes. `at` nonzero: map it at that
 * address if it is free in this process (the source's, for a backend that
 * knows the source's addresses), else anywhere; m->host says which. On
 * success m owns fd; on failure fd is left to the caller. */
int guest_mem_adopt(struct guest_mem *m, int fd, uint64_t size, uintptr_t at);

/* Maps, in this process's page tables, the pages of guest RAM that are
 * resident in its memfd, and no others (nothing is allocated): a target
 * of a migration does it before the freeze, so that the guest's first
 * accesses here do not each take a page fault. Advisory: a kernel
 * without MADV_POPULATE_WRITE (before 5.14) populates nothing. Returns
 * the bytes populated, or -1 with a message. */
int64_t guest_mem_populate_resident(struct guest_mem *m);

/* Lays out `size` bytes over an anonymous buffer the caller owns (no memfd):
 * lets tests play the guest without a VM. */
int guest_mem_wrap(struct guest_mem *m, void *buf, uint64_t size);

void guest_mem_destroy(struct guest_mem *m);

/* Host pointer to guest-physical [gpa, gpa+len), or NULL if any byte of it is
 * outside RAM or the range wraps. len 0 is treated as 1. */
void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* Copy into / out of guest RAM; -1 with a message naming the range if it is
 * not RAM. */
int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);
int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len);

/* End of low RAM (exclusive), i.e. the highest guest-physical address below
 * 4 GiB that is RAM, plus one. */
uint64_t guest_mem_low_end(const struct guest_mem *m);

#endif
