#include "bus.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

void bus_init(struct bus *b, const char *name)
{
	memset(b, 0, sizeof(*b));
	b->name = name;
}

void bus_destroy(struct bus *b)
{
	free(b->ranges);
	bus_init(b, b->name);
}

/* Index of the first range whose end is above addr. */
static size_t lower_bound(const struct bus *b, uint64_t addr)
{
	size_t lo = 0, hi = b->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct bus_range *r = &b->ranges[mid];
		if (r->base + r->len <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int bus_register(struct bus *b, uint64_t base, uint64_t len, const struct bus_ops *ops,
		 void *opaque, const char *name)
{
	if (len == 0 || base + len < base)
		return vmm_fail("%s bus: %s: bad range 0x%llx+0x%llx", b->name, name,
				(unsigned long long)base, (unsigned long long)len);
	size_t i = lower_bound(b, base);
	if (i < b->n && b->ranges[i].base < base + len)
		return vmm_fail("%s bus: %s at 0x%llx+0x%llx overlaps %s at 0x%llx+0x%llx",
				b->name, name, (unsigned long long)base, (unsigned long long)len,
				b->ranges[i].name, (unsigned long long)b->ranges[i].base,
				(unsigned long long)b->ranges[i].len);
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 16;
		struct bus_range *r = realloc(b->ranges, cap * sizeof(*r));
		if (!r)
			return vmm_fail("%s bus: out of memory", b->name);
		b->ranges = r;
		b->cap = cap;
	}
	memmove(&b->ranges[i + 1], &b->ranges[i], (b->n - i) * sizeof(*b->ranges));
	b->ranges[i] = (struct bus_range){ base, len, ops, opaque, name };
	b->n++;
	return 0;
}

const struct bus_range *bus_find(const struct bus *b, uint64_t addr)
{
	size_t i = lower_bound(b, addr);
	if (i < b->n && b->ranges[i].base <= addr)
		return &b->ranges[i];
	return NULL;
}

static const struct bus_range *claim(const struct bus *b, uint64_t addr, unsigned len)
{
	const struct bus_range *r = bus_find(b, addr);
	if (!r || len > r->len - (addr - r->base))
		return NULL;
	return r;
}

bool bus_read(const struct bus *b, uint64_t addr, void *data, unsigned len)
{
	const struct bus_range *r = claim(b, addr, len);
	if (!r || !r->ops->read) {
		memset(data, 0xff, len);
		return false;
	}
	r->ops->read(r->opaque, addr - r->base, data, len);
	return true;
}

bool bus_write(const struct bus *b, uint64_t addr, const void *data, unsigned len)
{
	const struct bus_range *r = claim(b, addr, len);
	if (!r || !r->ops->write)
		return false;
	r->ops->write(r->opaque, addr - r->base, data, len);
	return true;
}
