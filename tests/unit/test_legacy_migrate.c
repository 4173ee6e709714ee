/* Migration of the 16550A and the CMOS RTC: a driver sets registers through
 * the port bus, the state is saved, loaded into a fresh device, and the
 * target must then answer every read as the source does. Bad payloads fail
 * with a message and leave the target as it was. */
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "check.h"
#include "err.h"
#include "migstream.h"
#include "rtc.h"
#include "serial8250.h"
#include "uart_rig.h"

/* ---- serial ---- */

/* Everything a driver can read, in a fixed order (reads have effects: MSR
 * deltas, THRE, the FIFO), then every queued byte. Two UARTs in the same
 * state give the same transcript. */
static size_t transcript(struct uart_rig *u, uint8_t *out, size_t cap)
{
	size_t n = 0;
	uint8_t lcr = inb(u, LCR);
	outb(u, LCR, lcr | 0x80);
	out[n++] = inb(u, DLL);
	out[n++] = inb(u, DLM);
	outb(u, LCR, lcr);
	static const unsigned regs[] = { IER, LCR, MCR, LSR, SCR, MSR, IIR, IIR, MSR };
	for (size_t i = 0; i < sizeof(regs) / sizeof(regs[0]); i++)
		out[n++] = inb(u, regs[i]);
	out[n++] = (uint8_t)u->host.level;
	while (n < cap && (inb(u, LSR) & 0x01))
		out[n++] = inb(u, RBR);
	return n;
}

static int save_serial(struct uart_rig *u, struct mig_buf *b)
{
	mig_buf_init(b);
	return serial8250_save(u->s, b);
}

/* A driver's set-up: 115200 8N1, FIFO on, interrupts on, OUT2. */
static void driver_setup(struct uart_rig *u, uint8_t ier, uint8_t mcr)
{
	outb(u, LCR, 0x80);
	outb(u, DLL, 0x01);
	outb(u, DLM, 0x00);
	outb(u, LCR, 0x03);
	outb(u, FCR, 0xc7);
	outb(u, IER, ier);
	outb(u, MCR, mcr);
	outb(u, SCR, 0x5a);
}

/* Feeds input_len bytes, lets the driver read `reads` of them, then moves
 * the UART; `queued` bytes must be left for the guest on both sides. */
static void round_trip(struct uart_rig *src, size_t input_len, unsigned reads, size_t queued)
{
	uint8_t *in = malloc(input_len ? input_len : 1);
	for (size_t i = 0; i < input_len; i++)
		in[i] = (uint8_t)('a' + i % 26);
	CHECK_EQ(serial8250_input(src->s, in, input_len), input_len);
	for (unsigned i = 0; i < reads; i++) {
		inb(src, LSR);
		inb(src, RBR);
	}

	struct mig_buf b;
	CHECK_EQ(save_serial(src, &b), 0);
	struct uart_rig dst;
	uart_rig_init(&dst);
	CHECK_EQ(serial8250_load(dst.s, b.data, b.len), 0);
	CHECK_EQ(dst.host.irq_calls, 1); /* told the level even if it is 0 */
	CHECK_EQ(dst.host.level, src->host.level);

	size_t cap = input_len + 64;
	uint8_t *a = malloc(cap), *z = malloc(cap);
	size_t na = transcript(src, a, cap), nz = transcript(&dst, z, cap);
	CHECK_EQ(na, nz);
	CHECK_EQ(na, 12 + queued);
	CHECK(memcmp(a, z, na < nz ? na : nz) == 0);
	mig_buf_free(&b);
	uart_rig_destroy(&dst);
	free(in);
	free(a);
	free(z);
}

static void serial_round_trip_with_pending_input(void)
{
	struct uart_rig u;
	uart_rig_init(&u);
	driver_setup(&u, 0x05, 0x0b); /* RX data + line status; DTR RTS OUT2 */
	/* 40 bytes queued, 3 read: 13 left in the FIFO, 24 behind it; the
	 * line is up (data ready, OUT2) and must be up on the target */
	round_trip(&u, 40, 3, 37);
	uart_rig_destroy(&u);
}

static void serial_round_trip_loopback_msr_deltas(void)
{
	struct uart_rig u;
	uart_rig_init(&u);
	driver_setup(&u, 0x0a, 0x0b); /* THRE + modem status */
	outb(&u, MCR, 0x1f);          /* loopback: MSR lines follow MCR, deltas latched */
	outb(&u, THR, 'x');           /* looped back into the receiver */
	round_trip(&u, 0, 0, 1);
	uart_rig_destroy(&u);
}

static void serial_round_trip_power_on_and_queue_wrap(void)
{
	struct uart_rig u;
	uart_rig_init(&u);
	round_trip(&u, 0, 0, 0);
	/* a queue that wraps around the end of the ring: all but 4 bytes of
	 * a nearly full ring read, then 30 more queued */
	driver_setup(&u, 0x01, 0x08);
	uint8_t *junk = calloc(1, SERIAL_INPUT_MAX);
	CHECK_EQ(serial8250_input(u.s, junk, SERIAL_INPUT_MAX - 8), SERIAL_INPUT_MAX - 8);
	free(junk);
	for (size_t i = 0; i < SERIAL_INPUT_MAX - 12; i++) {
		if (i % 16 == 0)
			inb(&u, LSR); /* the FIFO refills on an access other than RBR */
		inb(&u, RBR);
	}
	round_trip(&u, 30, 5, 29);
	uart_rig_destroy(&u);
}

static void irq_reraised_after_load(void)
{
	struct uart_rig u;
	uart_rig_init(&u);
	driver_setup(&u, 0x01, 0x08);
	CHECK_EQ(serial8250_input(u.s, (const uint8_t *)"z", 1), 1);
	CHECK_EQ(u.host.level, 1);
	struct mig_buf b;
	CHECK_EQ(save_serial(&u, &b), 0);
	/* the same UART loaded again: the level is reported again */
	int calls = u.host.irq_calls;
	CHECK_EQ(serial8250_load(u.s, b.data, b.len), 0);
	CHECK_EQ(u.host.irq_calls, calls + 1);
	CHECK_EQ(u.host.level, 1);
	CHECK_EQ(inb(&u, RBR), 'z');
	CHECK_EQ(u.host.level, 0);
	mig_buf_free(&b);
	uart_rig_destroy(&u);
}

/* Offsets in the serial payload (serial8250.h). */
#define S_IER 0
#define S_MCR 2
#define S_MSR 3
#define S_FCR 5
#define S_THR 9
#define S_FIFO 10
#define S_COUNT 14
#define S_BYTES 18

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void expect_bad(const uint8_t *good, size_t len, size_t off, const uint8_t *patch, size_t plen,
		       const char *msg)
{
	uint8_t *p = malloc(len + 1);
	memcpy(p, good, len);
	if (patch)
		memcpy(p + off, patch, plen);
	struct uart_rig dst;
	uart_rig_init(&dst);
	outb(&dst, SCR, 0x77);
	CHECK_EQ(serial8250_load(dst.s, p, len), -1);
	CHECK_CONTAINS(vmm_error(), msg);
	CHECK_EQ(inb(&dst, SCR), 0x77); /* untouched */
	CHECK_EQ(dst.host.irq_calls, 0);
	uart_rig_destroy(&dst);
	free(p);
}

static void serial_bad_input(void)
{
	struct uart_rig u;
	uart_rig_init(&u);
	driver_setup(&u, 0x01, 0x0b);
	CHECK_EQ(serial8250_input(u.s, (const uint8_t *)"abcdefghij", 10), 10);
	struct mig_buf b;
	CHECK_EQ(save_serial(&u, &b), 0);
	CHECK_EQ(b.len, S_BYTES + 10);
	uint8_t v[4];

	for (size_t cut = 0; cut < b.len; cut += 5)
		expect_bad(b.data, cut, 0, NULL, 0, "truncated");
	uint8_t *longer = calloc(1, b.len + 1);
	memcpy(longer, b.data, b.len);
	expect_bad(longer, b.len + 1, 0, NULL, 0, "trailing");
	free(longer);
	v[0] = 0xff;
	expect_bad(b.data, b.len, S_IER, v, 1, "IER");
	v[0] = 0x3f;
	expect_bad(b.data, b.len, S_MCR, v, 1, "MCR");
	v[0] = 0x10; /* CTS only, but not in loopback the lines read DCD DSR CTS */
	expect_bad(b.data, b.len, S_MSR, v, 1, "MSR");
	v[0] = 0x02;
	expect_bad(b.data, b.len, S_FCR, v, 1, "FCR");
	v[0] = 2;
	expect_bad(b.data, b.len, S_THR, v, 1, "THRE");
	put32(v, 17);
	expect_bad(b.data, b.len, S_FIFO, v, 4, "17 bytes in the FIFO");
	put32(v, 11);
	expect_bad(b.data, b.len, S_FIFO, v, 4, "FIFO");
	put32(v, 9); /* fewer queued than the FIFO holds */
	expect_bad(b.data, b.len, S_COUNT, v, 4, "at most the 9 queued");
	put32(v, 11); /* more announced than sent */
	expect_bad(b.data, b.len, S_COUNT, v, 4, "truncated");
	put32(v, SERIAL_INPUT_MAX + 1);
	expect_bad(b.data, b.len, S_COUNT, v, 4, "queued for the guest");
	put32(v, 0xffffffffu);
	expect_bad(b.data, b.len, S_COUNT, v, 4, "queued for the guest");
	mig_buf_free(&b);
	uart_rig_destroy(&u);
}

/* ---- rtc ---- */

static uint8_t cmos_in(struct bus *b, unsigned off)
{
	uint8_t v = 0;
	bus_read(b, RTC_PORT_BASE + off, &v, 1);
	return v;
}

static void cmos_out(struct bus *b, unsigned off, uint8_t v)
{
	bus_write(b, RTC_PORT_BASE + off, &v, 1);
}

static void rtc_round_trip(void)
{
	struct bus a, z;
	bus_init(&a, "pio");
	bus_init(&z, "pio");
	struct rtc *src = rtc_new(), *dst = rtc_new();
	CHECK_EQ(bus_register(&a, RTC_PORT_BASE, RTC_PORTS, &rtc_bus_ops, src, "rtc"), 0);
	CHECK_EQ(bus_register(&z, RTC_PORT_BASE, RTC_PORTS, &rtc_bus_ops, dst, "rtc"), 0);
	for (unsigned i = 0x0e; i < 0x80; i++) {
		if (i == 0x32)
			continue; /* century: from the clock */
		cmos_out(&a, 0, (uint8_t)i);
		cmos_out(&a, 1, (uint8_t)(i * 13 + 1));
	}
	cmos_out(&a, 0, 0x0a);
	cmos_out(&a, 1, 0xa7); /* UIP is read-only: stored as 0x27 */
	cmos_out(&a, 0, 0x0b);
	cmos_out(&a, 1, 0x06);
	cmos_out(&a, 0, 0x80 | 0x21); /* NMI bit, index 0x21 left selected */

	struct mig_buf b;
	mig_buf_init(&b);
	CHECK_EQ(rtc_save(src, &b), 0);
	CHECK_EQ(b.len, 129);
	CHECK_EQ(rtc_load(dst, b.data, b.len), 0);
	/* the selected index travelled: a data read without an index write */
	CHECK_EQ(cmos_in(&z, 1), cmos_in(&a, 1));
	CHECK_EQ(cmos_in(&z, 0), 0x21);
	for (unsigned i = 0x0a; i < 0x80; i++) {
		if (i <= 0x09 || i == 0x32)
			continue;
		cmos_out(&a, 0, (uint8_t)i);
		cmos_out(&z, 0, (uint8_t)i);
		uint8_t x = cmos_in(&a, 1), y = cmos_in(&z, 1);
		if (x != y)
			fprintf(stderr, "  cmos 0x%02x: 0x%02x != 0x%02x\n", i, x, y);
		CHECK_EQ(x, y);
	}
	cmos_out(&z, 0, 0x0a);
	CHECK_EQ(cmos_in(&z, 1), 0x27);

	/* bad input: the target keeps what it had */
	uint8_t p[129];
	memcpy(p, b.data, sizeof(p));
	struct {
		unsigned off;
		uint8_t v;
		const char *msg;
	} bad[] = {
		{ 0, 0x80, "index register 0x80" },
		{ 1 + 0x0a, 0xa6, "UIP" },
		{ 1 + 0x0c, 0x01, "register C" },
		{ 1 + 0x0d, 0x00, "register D" },
	};
	cmos_out(&z, 0, 0x40);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t q[129];
		memcpy(q, p, sizeof(q));
		q[bad[i].off] = bad[i].v;
		CHECK_EQ(rtc_load(dst, q, sizeof(q)), -1);
		CHECK_CONTAINS(vmm_error(), bad[i].msg);
		CHECK_EQ(cmos_in(&z, 0), 0x40);
	}
	CHECK_EQ(rtc_load(dst, p, 128), -1);
	CHECK_CONTAINS(vmm_error(), "rtc: truncated");
	CHECK_EQ(rtc_load(dst, p, 0), -1);
	CHECK_CONTAINS(vmm_error(), "truncated");
	uint8_t longer[130] = { 0 };
	memcpy(longer, p, 129);
	CHECK_EQ(rtc_load(dst, longer, sizeof(longer)), -1);
	CHECK_CONTAINS(vmm_error(), "trailing");
	CHECK_EQ(cmos_in(&z, 0), 0x40);

	mig_buf_free(&b);
	bus_destroy(&a);
	bus_destroy(&z);
	rtc_free(src);
	rtc_free(dst);
}

int main(void)
{
	RUN(serial_round_trip_with_pending_input);
	RUN(serial_round_trip_loopback_msr_deltas);
	RUN(serial_round_trip_power_on_and_queue_wrap);
	RUN(irq_reraised_after_load);
	RUN(serial_bad_input);
	RUN(rtc_round_trip);
	return CHECK_DONE();
}
