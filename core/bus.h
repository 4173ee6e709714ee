/* A bus maps address ranges (I/O ports or MMIO) to device callbacks.
 * Ranges are registered while the VM is being composed, before any vCPU
 * runs; dispatch is then lock-free (the table never changes while vCPUs run).
 * Each device serialises its own state with its own lock. */
#ifndef VMM_BUS_H
#define VMM_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bus_ops {
	/* offset is relative to the registered base; len is 1, 2, 4 or 8. */
	void (*read)(void *opaque, uint64_t offset, void *data, unsigned len);
	void (*write)(void *opaque, uint64_t offset, const void *data, unsigned len);
};

struct bus_range {
	uint64_t base, len;
	const struct bus_ops *ops;
	void *opaque;
	const char *name;
};

struct bus {
	const char *name; /* "pio" or "mmio", for messages */
	struct bus_range *ranges; /* sorted by base, never overlapping */
	size_t n, cap;
};

void bus_init(struct bus *b, const char *name);
void bus_destroy(struct bus *b);

/* Fails (with a message naming both devices) if [base, base+len) overlaps a
 * registered range, or if len is 0 or the range wraps. */
int bus_register(struct bus *b, uint64_t base, uint64_t len, const struct bus_ops *ops,
		 void *opaque, const char *name);

/* The range containing addr, or NULL. */
const struct bus_range *bus_find(const struct bus *b, uint64_t addr);

/* Dispatch an access. An access nobody claims, or one that straddles the end
 * of a range, reads as all ones and writes are dropped; returns false then. */
bool bus_read(const struct bus *b, uint64_t addr, void *data, unsigned len);
bool bus_write(const struct bus *b, uint64_t addr, const void *data, unsigned len);

#endif
