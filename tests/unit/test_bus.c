/* Bus registration and dispatch. */
#include <stdint.h>

#include "bus.h"
#include "check.h"
#include "err.h"

/* A device that records its last access. */
struct probe {
	int reads, writes;
	uint64_t offset;
	unsigned len;
	uint8_t written[8];
};

static void probe_read(void *opaque, uint64_t offset, void *data, unsigned len)
{
	struct probe *p = opaque;
	p->reads++;
	p->offset = offset;
	p->len = len;
	memset(data, 0x5a, len);
}

static void probe_write(void *opaque, uint64_t offset, const void *data, unsigned len)
{
	struct probe *p = opaque;
	p->writes++;
	p->offset = offset;
	p->len = len;
	memcpy(p->written, data, len);
}

static const struct bus_ops probe_ops = { probe_read, probe_write };
static const struct bus_ops no_ops = { NULL, NULL };

static void test_sorted_insert(void)
{
	struct bus b;
	bus_init(&b, "pio");
	struct probe p[40];
	/* 40 ranges of 4 registered in a scrambled order (grows the table) */
	for (unsigned i = 0; i < 40; i++) {
		unsigned k = (i * 17) % 40;
		CHECK_EQ(bus_register(&b, 0x1000 + 0x10 * k, 4, &probe_ops, &p[k], "dev"), 0);
	}
	CHECK_EQ(b.n, 40);
	int sorted = 1;
	for (size_t i = 0; i < b.n; i++)
		sorted &= b.ranges[i].base == 0x1000 + 0x10 * i && b.ranges[i].opaque == &p[i];
	CHECK(sorted);
	for (unsigned k = 0; k < 40; k++)
		CHECK(bus_find(&b, 0x1000 + 0x10 * k + 3) == &b.ranges[k]);

	/* before the first and after the last */
	CHECK_EQ(bus_register(&b, 0x10, 0x10, &probe_ops, NULL, "low"), 0);
	CHECK_EQ(bus_register(&b, 0xffff, 1, &probe_ops, NULL, "high"), 0);
	CHECK_EQ(b.ranges[0].base, 0x10);
	CHECK_EQ(b.ranges[b.n - 1].base, 0xffff);
	bus_destroy(&b);
	CHECK_EQ(b.n, 0);
	CHECK(b.ranges == NULL);
	CHECK(strcmp(b.name, "pio") == 0);
	CHECK(bus_find(&b, 0x10) == NULL);
	bus_destroy(&b); /* twice is harmless */
}

static void test_overlap_refused(void)
{
	struct bus b;
	bus_init(&b, "mmio");
	CHECK_EQ(bus_register(&b, 0x100, 0x10, &probe_ops, NULL, "uart"), 0);
	const struct { uint64_t base, len; } bad[] = {
		{ 0x100, 0x10 }, /* same */
		{ 0xf8, 0x9 },   /* over the start */
		{ 0x10f, 0x10 }, /* over the end */
		{ 0x104, 0x4 },  /* inside */
		{ 0x0, 0x1000 }, /* around */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_EQ(bus_register(&b, bad[i].base, bad[i].len, &probe_ops, NULL, "rtc"), -1);
		CHECK_CONTAINS(vmm_error(), "rtc");
		CHECK_CONTAINS(vmm_error(), "uart");
		CHECK_CONTAINS(vmm_error(), "mmio");
	}
	CHECK_EQ(b.n, 1);
	/* adjacent on both sides is fine */
	CHECK_EQ(bus_register(&b, 0xf0, 0x10, &probe_ops, NULL, "below"), 0);
	CHECK_EQ(bus_register(&b, 0x110, 0x10, &probe_ops, NULL, "above"), 0);
	CHECK_EQ(b.n, 3);
	/* starting in a gap and running into a neighbour */
	CHECK_EQ(bus_register(&b, 0xe8, 0x10, &probe_ops, NULL, "late"), -1);
	CHECK_CONTAINS(vmm_error(), "late");
	CHECK_CONTAINS(vmm_error(), "below");
	CHECK_EQ(bus_register(&b, 0x11f, 2, &probe_ops, NULL, "late"), -1);
	CHECK_CONTAINS(vmm_error(), "above");
	bus_destroy(&b);
}

static void test_bad_ranges(void)
{
	struct bus b;
	bus_init(&b, "mmio");
	CHECK_EQ(bus_register(&b, 0x100, 0, &probe_ops, NULL, "empty"), -1);
	CHECK_CONTAINS(vmm_error(), "empty");
	CHECK_EQ(bus_register(&b, UINT64_MAX, 2, &probe_ops, NULL, "wrap"), -1);
	CHECK_CONTAINS(vmm_error(), "wrap");
	CHECK_EQ(bus_register(&b, 1, UINT64_MAX, &probe_ops, NULL, "huge"), -1);
	/* a range ending exactly at 2^64 is refused too: its end is not
	 * representable, and lookups compare against base + len */
	CHECK_EQ(bus_register(&b, UINT64_MAX - 0xf, 0x10, &probe_ops, NULL, "top"), -1);
	CHECK_EQ(b.n, 0);
	/* one byte short of that is fine, and its last byte is found */
	CHECK_EQ(bus_register(&b, UINT64_MAX - 0xf, 0xf, &probe_ops, NULL, "top"), 0);
	CHECK(bus_find(&b, UINT64_MAX - 1) != NULL);
	CHECK(bus_find(&b, UINT64_MAX) == NULL);
	bus_destroy(&b);
}

static void test_find_edges(void)
{
	struct bus b;
	bus_init(&b, "pio");
	CHECK_EQ(bus_register(&b, 0x3f8, 8, &probe_ops, NULL, "com1"), 0);
	CHECK_EQ(bus_register(&b, 0x400, 4, &probe_ops, NULL, "next"), 0);
	CHECK(bus_find(&b, 0x3f7) == NULL);
	const struct bus_range *r = bus_find(&b, 0x3f8);
	CHECK(r && strcmp(r->name, "com1") == 0);
	CHECK(bus_find(&b, 0x3ff) == r);
	r = bus_find(&b, 0x400);       /* end of com1 is the start of next */
	CHECK(r && strcmp(r->name, "next") == 0);
	CHECK(bus_find(&b, 0x403) == r);
	CHECK(bus_find(&b, 0x404) == NULL);
	CHECK(bus_find(&b, 0) == NULL);
	CHECK(bus_find(&b, UINT64_MAX) == NULL);
	bus_destroy(&b);
}

static void test_dispatch(void)
{
	struct bus b;
	struct probe p = { 0 };
	bus_init(&b, "pio");
	CHECK_EQ(bus_register(&b, 0x10, 8, &probe_ops, &p, "dev"), 0);

	uint32_t v = 0;
	CHECK(bus_read(&b, 0x14, &v, 4));  /* last 4 bytes: dispatched */
	CHECK_EQ(v, 0x5a5a5a5a);
	CHECK_EQ(p.reads, 1);
	CHECK_EQ(p.offset, 4);
	CHECK_EQ(p.len, 4);

	uint16_t w = 0xbeef;
	CHECK(bus_write(&b, 0x17, &w, 1));
	CHECK_EQ(p.writes, 1);
	CHECK_EQ(p.offset, 7);
	CHECK_EQ(p.written[0], 0xef);

	/* unclaimed: all ones, not dispatched */
	uint64_t q = 0;
	CHECK(!bus_read(&b, 0x18, &q, 8));
	CHECK_EQ(q, UINT64_MAX);
	v = 0;
	CHECK(!bus_read(&b, 0xf, &v, 2));
	CHECK_EQ(v, 0xffff);
	CHECK(!bus_write(&b, 0x18, &w, 2));

	/* straddling the end (or the start) of the range: not dispatched */
	v = 0;
	CHECK(!bus_read(&b, 0x16, &v, 4));
	CHECK_EQ(v, 0xffffffff);
	CHECK(!bus_write(&b, 0x17, &w, 2));
	CHECK(!bus_read(&b, 0xe, &v, 4));
	CHECK(bus_read(&b, 0x10, &q, 8)); /* exactly the range: dispatched */
	CHECK_EQ(p.reads, 2);
	CHECK_EQ(p.writes, 1);

	/* a device without callbacks reads as all ones */
	CHECK_EQ(bus_register(&b, 0x20, 4, &no_ops, NULL, "mute"), 0);
	v = 0;
	CHECK(!bus_read(&b, 0x20, &v, 4));
	CHECK_EQ(v, 0xffffffff);
	CHECK(!bus_write(&b, 0x20, &v, 4));
	bus_destroy(&b);
}

int main(void)
{
	RUN(test_sorted_insert);
	RUN(test_overlap_refused);
	RUN(test_bad_ranges);
	RUN(test_find_edges);
	RUN(test_dispatch);
	return CHECK_DONE();
}
