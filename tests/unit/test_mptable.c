/* mptable_write, read back byte by byte as a guest OS would (MP spec 1.4). */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "err.h"
#include "x86_boot.h"

#define MEM_SIZE (1u << 20)
#define HEADER_BYTES 44

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { return get16(p) | (uint32_t)get16(p + 2) << 16; }

static uint8_t sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;
	for (size_t i = 0; i < len; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

struct seen {
	unsigned processors, buses, ioapics, io_ints, local_ints;
	unsigned irq_pins[16]; /* how many I/O interrupt entries per ISA IRQ */
};

static void check_processor(const uint8_t *e, struct seen *s)
{
	unsigned id = e[1];
	CHECK_EQ(id, s->processors);           /* APIC ids 0..n-1 in order */
	CHECK_EQ(e[2], 0x14);
	CHECK_EQ(e[3], id == 0 ? 0x03 : 0x01); /* enabled, BSP only on 0 */
	CHECK_EQ((get32(e + 4) >> 8) & 0xf, 6); /* family 6 */
	CHECK(get32(e + 8) & (1u << 9));       /* APIC feature */
	s->processors++;
}

static void check_ioapic(const uint8_t *e, unsigned ncpus, struct seen *s)
{
	CHECK_EQ(e[1], ncpus);
	CHECK_EQ(e[2], 0x11);
	CHECK_EQ(e[3], 0x01);
	CHECK_EQ(get32(e + 4), 0xfec00000u);
	s->ioapics++;
}

static void check_io_int(const uint8_t *e, unsigned ncpus, struct seen *s)
{
	CHECK_EQ(e[1], 0);              /* INT */
	CHECK_EQ(get16(e + 2), 0);      /* conforms to the bus */
	CHECK_EQ(e[4], 0);              /* the ISA bus */
	CHECK(e[5] < 16 && e[5] != 2);
	CHECK_EQ(e[6], ncpus);          /* the IOAPIC */
	CHECK_EQ(e[7], e[5]);           /* IRQ n on INTIN n */
	if (e[5] < 16)
		s->irq_pins[e[5]]++;
	s->io_ints++;
}

static void check_local_int(const uint8_t *e, struct seen *s)
{
	/* first ExtINT on LINT0, then NMI on LINT1, both to every LAPIC */
	CHECK_EQ(e[1], s->local_ints == 0 ? 3 : 1);
	CHECK_EQ(e[6], 0xff);
	CHECK_EQ(e[7], s->local_ints);
	s->local_ints++;
}

/* Walks the base entries; returns the bytes they take. */
static size_t walk_entries(const uint8_t *p, size_t len, unsigned count, unsigned ncpus,
			   struct seen *s)
{
	size_t off = 0;
	for (unsigned i = 0; i < count && off < len; i++) {
		const uint8_t *e = p + off;
		switch (e[0]) {
		case 0: check_processor(e, s); off += 20; break;
		case 1:
			CHECK(memcmp(e + 2, "ISA   ", 6) == 0);
			s->buses++;
			off += 8;
			break;
		case 2: check_ioapic(e, ncpus, s); off += 8; break;
		case 3: check_io_int(e, ncpus, s); off += 8; break;
		case 4: check_local_int(e, s); off += 8; break;
		default: CHECK(!"unknown entry type"); return off;
		}
	}
	return off;
}

static void check_table(unsigned ncpus)
{
	uint8_t *buf = calloc(1, MEM_SIZE);
	struct guest_mem m;
	CHECK_EQ(guest_mem_wrap(&m, buf, MEM_SIZE), 0);
	int written = mptable_write(&m, X86_MPTABLE_GPA, ncpus);

	const uint8_t *f = buf + X86_MPTABLE_GPA;
	CHECK(memcmp(f, "_MP_", 4) == 0);
	CHECK_EQ(sum(f, 16), 0);
	CHECK_EQ(f[8], 1);  /* length in paragraphs */
	CHECK_EQ(f[9], 4);  /* spec 1.4 */
	CHECK_EQ(f[11], 0); /* a configuration table follows, no default config */
	uint32_t cfg = get32(f + 4);
	CHECK_EQ(cfg, X86_MPTABLE_GPA + 16);

	const uint8_t *h = buf + (cfg < MEM_SIZE - HEADER_BYTES ? cfg : 0);
	uint16_t len = get16(h + 4);
	CHECK(memcmp(h, "PCMP", 4) == 0);
	CHECK_EQ(h[6], 4);
	CHECK_EQ(sum(h, len), 0);
	CHECK_EQ(get32(h + 36), 0xfee00000u);
	CHECK_EQ(written, 16 + len);

	struct seen s = { 0 };
	unsigned count = get16(h + 34);
	CHECK_EQ(walk_entries(h + HEADER_BYTES, len - HEADER_BYTES, count, ncpus, &s),
		 len - HEADER_BYTES);
	CHECK_EQ(count, ncpus + 1 + 1 + 15 + 2);
	CHECK_EQ(s.processors, ncpus);
	CHECK_EQ(s.buses, 1);
	CHECK_EQ(s.ioapics, 1);
	CHECK_EQ(s.io_ints, 15);
	CHECK_EQ(s.local_ints, 2);
	for (unsigned irq = 0; irq < 16; irq++)
		CHECK_EQ(s.irq_pins[irq], irq == 2 ? 0 : 1);
	free(buf);
}

static void one_cpu(void) { check_table(1); }
static void two_cpus(void) { check_table(2); }
static void max_cpus(void) { check_table(X86_MAX_VCPUS); }

static void does_not_fit(void)
{
	uint8_t *buf = calloc(1, MEM_SIZE);
	struct guest_mem m;
	CHECK_EQ(guest_mem_wrap(&m, buf, MEM_SIZE), 0);

	CHECK_EQ(mptable_write(&m, MEM_SIZE - 256, 64), -1);
	CHECK_CONTAINS(vmm_error(), "MP table of 1492 bytes at 0xfff00 does not fit in guest RAM");
	CHECK_EQ(sum(buf + MEM_SIZE - 256, 256), 0); /* nothing written */
	CHECK_EQ(mptable_write(&m, 2 * MEM_SIZE, 1), -1);
	CHECK_CONTAINS(vmm_error(), "does not fit in guest RAM");
	free(buf);
}

static void bad_arguments(void)
{
	uint8_t *buf = calloc(1, MEM_SIZE);
	struct guest_mem m;
	CHECK_EQ(guest_mem_wrap(&m, buf, MEM_SIZE), 0);

	CHECK_EQ(mptable_write(&m, X86_MPTABLE_GPA, 0), -1);
	CHECK_CONTAINS(vmm_error(), "0 CPUs, must be 1 to 64");
	CHECK_EQ(mptable_write(&m, X86_MPTABLE_GPA, 65), -1);
	CHECK_CONTAINS(vmm_error(), "65 CPUs");
	CHECK_EQ(mptable_write(&m, X86_MPTABLE_GPA + 8, 1), -1);
	CHECK_CONTAINS(vmm_error(), "0xf0008: not 16-byte aligned");
	free(buf);
}

int main(void)
{
	RUN(one_cpu);
	RUN(two_cpus);
	RUN(max_cpus);
	RUN(does_not_fit);
	RUN(bad_arguments);
	return CHECK_DONE();
}
