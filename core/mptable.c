/* Intel MultiProcessor Specification 1.4 tables: the floating pointer
 * structure followed by the configuration table (header + base entries).
 * The table is assembled in a local buffer by a small builder, so that more
 * buses and interrupt entries (PCI) can be added without changing the rest,
 * then copied into guest RAM in one bounds-checked write. */
#include "x86_boot.h"

#include <string.h>

#include "err.h"

#define MP_SPEC_REV      4          /* 1.4 */
#define MP_LAPIC_GPA     0xfee00000u
#define MP_IOAPIC_GPA    0xfec00000u
#define MP_LAPIC_VERSION 0x14       /* integrated APIC */
#define MP_IOAPIC_VERSION 0x11
#define MP_ALL_LAPICS    0xff
#define MP_ISA_BUS_ID    0
#define MP_ISA_IRQS      16
#define MP_ISA_CASCADE_IRQ 2        /* the 8259 cascade: not routed */

/* A family 6 processor with an FPU and a local APIC (CPUID leaf 1 EDX). */
#define MP_CPU_SIGNATURE ((6u << 8) | (1u << 4) | 1u) /* family 6, model 1, stepping 1 */
#define MP_CPU_FEATURES  ((1u << 0) | (1u << 9))       /* FPU, APIC */

/* Room for the header, X86_MAX_VCPUS processors and a few hundred 8-byte
 * entries: enough for an ISA bus, a PCI bus and its interrupt entries. */
#define MP_TABLE_MAX 4096

enum mp_entry_type {
	MP_PROCESSOR = 0,
	MP_BUS = 1,
	MP_IOAPIC = 2,
	MP_IO_INTERRUPT = 3,
	MP_LOCAL_INTERRUPT = 4,
};

enum mp_interrupt_type { MP_INT = 0, MP_NMI = 1, MP_SMI = 2, MP_EXTINT = 3 };

#define MP_CPU_ENABLED 0x01
#define MP_CPU_BSP     0x02
#define MP_IOAPIC_ENABLED 0x01
#define MP_IRQ_CONFORMS 0x0000 /* polarity and trigger mode as the bus says */

struct mp_floating_pointer {
	char signature[4];       /* "_MP_" */
	uint32_t config_table;   /* physical address of the configuration table */
	uint8_t length;          /* in 16-byte units: 1 */
	uint8_t spec_rev;
	uint8_t checksum;        /* all bytes sum to 0 */
	uint8_t features[5];     /* 0: a configuration table is present */
} __attribute__((packed));

struct mp_config_header {
	char signature[4];       /* "PCMP" */
	uint16_t base_length;    /* header + base entries */
	uint8_t spec_rev;
	uint8_t checksum;        /* base_length bytes sum to 0 */
	char oem_id[8];
	char product_id[12];
	uint32_t oem_table;
	uint16_t oem_table_size;
	uint16_t entry_count;
	uint32_t lapic_addr;
	uint16_t ext_length;
	uint8_t ext_checksum;
	uint8_t reserved;
} __attribute__((packed));

struct mp_processor {
	uint8_t type;
	uint8_t lapic_id;
	uint8_t lapic_version;
	uint8_t flags;
	uint32_t signature;
	uint32_t features;
	uint32_t reserved[2];
} __attribute__((packed));

struct mp_bus {
	uint8_t type;
	uint8_t bus_id;
	char bus_type[6];        /* blank-padded: "ISA   ", "PCI   " */
} __attribute__((packed));

struct mp_ioapic {
	uint8_t type;
	uint8_t id;
	uint8_t version;
	uint8_t flags;
	uint32_t addr;
} __attribute__((packed));

/* I/O and local interrupt assignment entries share one layout. */
struct mp_interrupt {
	uint8_t type;
	uint8_t irq_type;
	uint16_t flags;
	uint8_t src_bus;
	uint8_t src_irq;
	uint8_t dst_apic;        /* IOAPIC id, or LAPIC id (0xff: all) */
	uint8_t dst_pin;         /* IOAPIC INTIN, or LAPIC LINTIN */
} __attribute__((packed));

_Static_assert(sizeof(struct mp_floating_pointer) == 16, "MP floating pointer is 16 bytes");
_Static_assert(sizeof(struct mp_config_header) == 44, "MP configuration header is 44 bytes");
_Static_assert(sizeof(struct mp_processor) == 20, "MP processor entry is 20 bytes");
_Static_assert(sizeof(struct mp_bus) == 8, "MP bus entry is 8 bytes");
_Static_assert(sizeof(struct mp_ioapic) == 8, "MP IOAPIC entry is 8 bytes");
_Static_assert(sizeof(struct mp_interrupt) == 8, "MP interrupt entry is 8 bytes");

/* The configuration table being assembled; the floating pointer comes first
 * in the buffer, the header right after it. */
struct mp_builder {
	uint8_t buf[MP_TABLE_MAX];
	size_t len;
	uint16_t entries;
	int overflow;
};

#define MP_HEADER_AT sizeof(struct mp_floating_pointer)

static void mp_append(struct mp_builder *b, const void *entry, size_t size)
{
	if (b->overflow || size > sizeof(b->buf) - b->len) {
		b->overflow = 1;
		return;
	}
	memcpy(b->buf + b->len, entry, size);
	b->len += size;
	b->entries++;
}

static void mp_add_processor(struct mp_builder *b, unsigned apic_id)
{
	struct mp_processor e = {
		.type = MP_PROCESSOR,
		.lapic_id = (uint8_t)apic_id,
		.lapic_version = MP_LAPIC_VERSION,
		.flags = MP_CPU_ENABLED | (apic_id == 0 ? MP_CPU_BSP : 0),
		.signature = MP_CPU_SIGNATURE,
		.features = MP_CPU_FEATURES,
	};
	mp_append(b, &e, sizeof(e));
}

/* `name` is the bus type, at most 6 characters ("ISA", "PCI"). */
static void mp_add_bus(struct mp_builder *b, unsigned bus_id, const char *name)
{
	struct mp_bus e = { .type = MP_BUS, .bus_id = (uint8_t)bus_id };
	memset(e.bus_type, ' ', sizeof(e.bus_type));
	memcpy(e.bus_type, name, strnlen(name, sizeof(e.bus_type)));
	mp_append(b, &e, sizeof(e));
}

static void mp_add_ioapic(struct mp_builder *b, unsigned id)
{
	struct mp_ioapic e = {
		.type = MP_IOAPIC,
		.id = (uint8_t)id,
		.version = MP_IOAPIC_VERSION,
		.flags = MP_IOAPIC_ENABLED,
		.addr = MP_IOAPIC_GPA,
	};
	mp_append(b, &e, sizeof(e));
}

static void mp_add_io_interrupt(struct mp_builder *b, unsigned bus_id, unsigned bus_irq,
				unsigned ioapic_id, unsigned pin)
{
	struct mp_interrupt e = {
		.type = MP_IO_INTERRUPT,
		.irq_type = MP_INT,
		.flags = MP_IRQ_CONFORMS,
		.src_bus = (uint8_t)bus_id,
		.src_irq = (uint8_t)bus_irq,
		.dst_apic = (uint8_t)ioapic_id,
		.dst_pin = (uint8_t)pin,
	};
	mp_append(b, &e, sizeof(e));
}

static void mp_add_local_interrupt(struct mp_builder *b, enum mp_interrupt_type type,
				   unsigned lint)
{
	struct mp_interrupt e = {
		.type = MP_LOCAL_INTERRUPT,
		.irq_type = (uint8_t)type,
		.flags = MP_IRQ_CONFORMS,
		.src_bus = MP_ISA_BUS_ID,
		.src_irq = 0,
		.dst_apic = MP_ALL_LAPICS,
		.dst_pin = (uint8_t)lint,
	};
	mp_append(b, &e, sizeof(e));
}

static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return (uint8_t)-sum;
}

/* Reserves room for the floating pointer and the configuration header. */
static void mp_begin(struct mp_builder *b)
{
	memset(b, 0, sizeof(*b));
	b->len = MP_HEADER_AT + sizeof(struct mp_config_header);
}

/* Fills in the floating pointer and the header for a table at `gpa`. */
static void mp_finish(struct mp_builder *b, uint64_t gpa)
{
	struct mp_config_header h = {
		.signature = { 'P', 'C', 'M', 'P' },
		.base_length = (uint16_t)(b->len - MP_HEADER_AT),
		.spec_rev = MP_SPEC_REV,
		.entry_count = b->entries,
		.lapic_addr = MP_LAPIC_GPA,
	};
	memcpy(h.oem_id, "LUAVMM  ", sizeof(h.oem_id));
	memcpy(h.product_id, "LUAVMM 0.1  ", sizeof(h.product_id));
	memcpy(b->buf + MP_HEADER_AT, &h, sizeof(h));
	b->buf[MP_HEADER_AT + offsetof(struct mp_config_header, checksum)] =
		checksum(b->buf + MP_HEADER_AT, h.base_length);

	struct mp_floating_pointer f = {
		.signature = { '_', 'M', 'P', '_' },
		.config_table = (uint32_t)(gpa + MP_HEADER_AT),
		.length = 1,
		.spec_rev = MP_SPEC_REV,
	};
	f.checksum = checksum((const uint8_t *)&f, sizeof(f));
	memcpy(b->buf, &f, sizeof(f));
}

/* Processors, the ISA bus, the IOAPIC and the ISA and local interrupts. */
static void mp_add_isa_system(struct mp_builder *b, unsigned ncpus)
{
	unsigned ioapic_id = ncpus;

	for (unsigned cpu = 0; cpu < ncpus; cpu++)
		mp_add_processor(b, cpu);
	mp_add_bus(b, MP_ISA_BUS_ID, "ISA");
	mp_add_ioapic(b, ioapic_id);
	for (unsigned irq = 0; irq < MP_ISA_IRQS; irq++)
		if (irq != MP_ISA_CASCADE_IRQ)
			mp_add_io_interrupt(b, MP_ISA_BUS_ID, irq, ioapic_id, irq);
	mp_add_local_interrupt(b, MP_EXTINT, 0);
	mp_add_local_interrupt(b, MP_NMI, 1);
}

static int check_placement(uint64_t gpa, unsigned ncpus)
{
	if (ncpus < 1 || ncpus > X86_MAX_VCPUS)
		return vmm_fail("MP table: %u CPUs, must be 1 to %d", ncpus, X86_MAX_VCPUS);
	if (gpa % 16)
		return vmm_fail("MP table at 0x%llx: not 16-byte aligned", (unsigned long long)gpa);
	return 0;
}

int mptable_write(const struct guest_mem *m, uint64_t gpa, unsigned ncpus)
{
	struct mp_builder b;

	if (check_placement(gpa, ncpus))
		return -1;
	mp_begin(&b);
	mp_add_isa_system(&b, ncpus);
	if (b.overflow)
		return vmm_fail("MP table for %u CPUs exceeds %d bytes", ncpus, MP_TABLE_MAX);
	if (gpa + b.len > 0x100000000ull)
		return vmm_fail("MP table at 0x%llx: must lie below 4 GiB (32-bit pointers)",
				(unsigned long long)gpa);
	mp_finish(&b, gpa);
	if (!guest_mem_ptr(m, gpa, b.len))
		return vmm_fail("MP table of %zu bytes at 0x%llx does not fit in guest RAM",
				b.len, (unsigned long long)gpa);
	if (guest_mem_write(m, gpa, b.buf, b.len))
		return -1;
	return (int)b.len;
}
