/* The 16550A as a vCPU sees it: every access goes through a pio bus with the
 * UART registered at COM1, and a fake host records output and IRQ levels. */
#include <pthread.h>
#include <stdlib.h>

#include "bus.h"
#include "check.h"
#include "err.h"
#include "serial8250.h"
#include "uart_rig.h"

/* Tears the rig down: no IRQ call may have repeated the line's level. */
static void rig_destroy_checked(struct uart_rig *r)
{
	CHECK_EQ(r->host.irq_repeats, 0);
	uart_rig_destroy(r);
}

/* A byte as a driver reads it: LSR.DR first, then RBR. -1 when none. */
static int rx(struct uart_rig *r)
{
	if (!(inb(r, LSR) & 0x01))
		return -1;
	return inb(r, RBR);
}

static size_t input_str(struct uart_rig *r, const char *str)
{
	return serial8250_input(r->s, (const uint8_t *)str, strlen(str));
}

/* The checks of Linux's autoconfig() and autoconfig_16550a(), in order. */
static void test_probe_16550a(void)
{
	struct uart_rig r;
	uart_rig_init(&r);

	CHECK_EQ(inb(&r, LSR), 0x60); /* THRE|TEMT, no data */
	CHECK_EQ(inb(&r, IIR), 0x01);

	/* IER: all four enables stick, nothing else */
	uint8_t save_ier = inb(&r, IER);
	outb(&r, IER, 0);
	CHECK_EQ(inb(&r, IER) & 0x0f, 0);
	outb(&r, IER, 0x0f);
	CHECK_EQ(inb(&r, IER) & 0x0f, 0x0f);
	outb(&r, IER, save_ier);

	/* scratch register */
	outb(&r, SCR, 0xa5);
	CHECK_EQ(inb(&r, SCR), 0xa5);
	outb(&r, SCR, 0x5a);
	CHECK_EQ(inb(&r, SCR), 0x5a);

	/* loopback: MCR LOOP|OUT2|RTS reads back as DCD|CTS in MSR */
	uint8_t save_mcr = inb(&r, MCR), save_lcr = inb(&r, LCR);
	outb(&r, MCR, 0x10 | 0x0a);
	CHECK_EQ(inb(&r, MSR) & 0xf0, 0x90);
	outb(&r, MCR, save_mcr);

	/* FIFO: EFR write (FCR on a 16550A) with LCR 0xbf, then enable */
	outb(&r, LCR, 0xbf);
	outb(&r, FCR, 0);
	outb(&r, LCR, 0);
	outb(&r, FCR, 0x01);
	CHECK_EQ(inb(&r, IIR) >> 6, 3); /* 16550A */

	/* not a ST16C650 (EFR with DLAB reads non-zero) */
	outb(&r, LCR, 0x80);
	CHECK(inb(&r, IIR) != 0);
	outb(&r, LCR, 0xbf);
	CHECK(inb(&r, IIR) != 0);

	/* not a 16750: no 64-byte FIFO bit */
	outb(&r, LCR, 0);
	outb(&r, FCR, 0x21);
	CHECK_EQ(inb(&r, IIR) >> 5, 6);
	outb(&r, FCR, 0x01);
	outb(&r, LCR, 0x80);
	outb(&r, FCR, 0x21);
	CHECK_EQ(inb(&r, IIR) >> 5, 6);
	outb(&r, FCR, 0x01);
	outb(&r, LCR, 0);

	/* not an XScale: IER bit 6 (UUE) does not stick */
	outb(&r, IER, 0x40);
	CHECK_EQ(inb(&r, IER), 0);

	outb(&r, LCR, save_lcr);
	CHECK_EQ(inb(&r, MSR) & 0xf0, 0xb0); /* DCD|DSR|CTS out of loopback */
	CHECK_EQ(r.host.nout, 0);
	CHECK_EQ(r.host.irq_calls, 0);
	rig_destroy_checked(&r);
}

static void test_transmit(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	outb(&r, LCR, 0x03);
	outb(&r, THR, 'h');
	outb(&r, THR, 'i');
	CHECK_EQ(r.host.nout, 2);
	CHECK(memcmp(r.host.out, "hi", 2) == 0);
	CHECK_EQ(inb(&r, LSR), 0x60); /* transmit is immediate */
	CHECK_EQ(r.host.irq_calls, 0);  /* ETBEI off */

	/* a 2-byte write acts on its first byte; a 2-byte read fills with 0 */
	uint16_t w = '!' | ('?' << 8);
	CHECK(bus_write(&r.pio, COM1 + THR, &w, 2));
	CHECK_EQ(r.host.nout, 3);
	CHECK_EQ(r.host.out[2], '!');
	uint32_t d = 0xdeadbeef;
	CHECK(bus_read(&r.pio, COM1 + LSR, &d, 2));
	CHECK_EQ(d, 0xdead0060);
	d = 0xdeadbeef;
	CHECK(bus_read(&r.pio, COM1 + MCR, &d, 4)); /* MCR = 0, LSR, MSR, SCR ignored */
	CHECK_EQ(d, 0);

	/* a device offset past the registers is ignored */
	uint8_t b = 0x41;
	serial8250_bus_ops.write(r.s, 8, &b, 1);
	serial8250_bus_ops.read(r.s, 9, &b, 1);
	CHECK_EQ(b, 0xff);
	CHECK_EQ(r.host.nout, 3);
	rig_destroy_checked(&r);
}

static void test_receive_irq(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	CHECK_EQ(input_str(&r, "ab"), 2);
	CHECK_EQ(inb(&r, LSR), 0x61);
	CHECK_EQ(r.host.level, 0); /* IER 0 */
	CHECK_EQ(inb(&r, IIR), 0x01);

	outb(&r, IER, 0x01);
	CHECK_EQ(inb(&r, IIR), 0x04); /* pending, but OUT2 gates the line */
	CHECK_EQ(r.host.level, 0);
	outb(&r, MCR, 0x0b);          /* DTR|RTS|OUT2 */
	CHECK_EQ(r.host.level, 1);
	CHECK_EQ(r.host.irq_calls, 1);
	outb(&r, MCR, 0x03);
	CHECK_EQ(r.host.level, 0);
	outb(&r, MCR, 0x0b);
	CHECK_EQ(r.host.level, 1);

	CHECK_EQ(inb(&r, RBR), 'a');
	CHECK_EQ(r.host.level, 1);
	CHECK_EQ(inb(&r, IIR), 0x04); /* reading IIR does not clear RX data */
	CHECK_EQ(inb(&r, RBR), 'b');
	CHECK_EQ(r.host.level, 0);
	CHECK_EQ(inb(&r, LSR), 0x60);
	CHECK_EQ(inb(&r, IIR), 0x01);
	CHECK_EQ(inb(&r, RBR), 'b'); /* empty: the last byte again, no change */
	CHECK_EQ(r.host.level, 0);

	/* input raises the line by itself (main thread side) */
	int calls = r.host.irq_calls;
	CHECK_EQ(input_str(&r, "c"), 1);
	CHECK_EQ(r.host.level, 1);
	CHECK_EQ(r.host.irq_calls, calls + 1);
	CHECK_EQ(input_str(&r, "d"), 1); /* already high: no call */
	CHECK_EQ(r.host.irq_calls, calls + 1);
	outb(&r, IER, 0);
	CHECK_EQ(r.host.level, 0);
	rig_destroy_checked(&r);
}

static void test_thre_irq(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	outb(&r, MCR, 0x08);
	CHECK_EQ(r.host.level, 0);
	outb(&r, IER, 0x02); /* enabling ETBEI with THR empty arms THRE */
	CHECK_EQ(r.host.level, 1);
	CHECK_EQ(inb(&r, IIR), 0x02);
	CHECK_EQ(r.host.level, 0); /* cleared by the IIR read */
	CHECK_EQ(inb(&r, IIR), 0x01);
	outb(&r, IER, 0x02);       /* same value: no new edge */
	CHECK_EQ(r.host.level, 0);

	/* Linux's startup test: toggling ETBEI re-arms it */
	outb(&r, IER, 0);
	outb(&r, IER, 0x02);
	CHECK_EQ(inb(&r, IIR), 0x02);
	CHECK_EQ(r.host.level, 0);

	/* writing THR clears it; the byte leaves at once, so it re-arms: the
	 * line rises again, which is how the driver sends its next burst */
	outb(&r, THR, 'x');
	CHECK_EQ(r.host.level, 1);
	CHECK_EQ(r.host.nout, 1);
	outb(&r, IER, 0); /* the driver stops tx by clearing ETBEI */
	CHECK_EQ(r.host.level, 0);
	CHECK_EQ(inb(&r, IIR), 0x01);

	/* an ISR pass: IIR read drops the line, THR writes raise it again */
	outb(&r, IER, 0x02);
	int calls = r.host.irq_calls;
	CHECK_EQ(inb(&r, IIR), 0x02);
	for (int i = 0; i < 16; i++)
		outb(&r, THR, 'a' + i);
	CHECK_EQ(r.host.level, 1);
	CHECK_EQ(r.host.irq_calls, calls + 2);
	CHECK_EQ(r.host.nout, 17);
	rig_destroy_checked(&r);
}

static void test_iir_priority(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	outb(&r, FCR, 0x07);
	outb(&r, MCR, 0x08);
	outb(&r, IER, 0x0f);
	CHECK_EQ(inb(&r, IIR), 0xc2);        /* THRE */
	outb(&r, IER, 0);
	outb(&r, IER, 0x0f);                 /* re-arm THRE */
	CHECK_EQ(input_str(&r, "z"), 1);
	CHECK_EQ(inb(&r, IIR), 0xc4);        /* RX data beats THRE */
	CHECK_EQ(inb(&r, IIR), 0xc4);        /* and does not clear it */
	CHECK_EQ(inb(&r, RBR), 'z');
	CHECK_EQ(inb(&r, IIR), 0xc2);        /* THRE still armed */
	CHECK_EQ(inb(&r, IIR), 0xc1);
	CHECK_EQ(r.host.level, 0);

	/* modem status comes last: loopback makes deltas (the line is gated
	 * in loopback, IIR still reports) */
	outb(&r, IER, 0);
	outb(&r, MCR, 0x10 | 0x08);   /* LOOP|OUT2: CTS, DSR drop, DCD stays */
	outb(&r, IER, 0x0f);
	CHECK_EQ(input_str(&r, "y"), 1);
	CHECK_EQ(inb(&r, IIR), 0xc4);
	CHECK_EQ(inb(&r, RBR), 'y');
	CHECK_EQ(inb(&r, IIR), 0xc2);
	CHECK_EQ(inb(&r, IIR), 0xc0);        /* modem status */
	CHECK_EQ(inb(&r, MSR), 0x80 | 0x03); /* DCD; DCTS|DDSR */
	CHECK_EQ(inb(&r, IIR), 0xc1);        /* MSR read cleared the deltas */
	CHECK_EQ(inb(&r, MSR), 0x80);
	CHECK_EQ(r.host.level, 0);
	CHECK_EQ(r.host.irq_calls, 4);       /* THRE up, down, up, down */

	/* FIFO disabled: no 0xc0 */
	outb(&r, FCR, 0);
	CHECK_EQ(inb(&r, IIR), 0x01);
	rig_destroy_checked(&r);
}

static void test_dlab(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	outb(&r, IER, 0x05);
	CHECK_EQ(input_str(&r, "q"), 1);
	outb(&r, LCR, 0x83);
	outb(&r, DLL, 0x01);
	outb(&r, DLM, 0x02);
	CHECK_EQ(inb(&r, DLL), 0x01);  /* does not consume input */
	CHECK_EQ(inb(&r, DLM), 0x02);
	CHECK_EQ(inb(&r, LCR), 0x83);
	CHECK_EQ(r.host.nout, 0);
	CHECK_EQ(inb(&r, LSR), 0x61);
	outb(&r, LCR, 0x03);
	CHECK_EQ(inb(&r, IER), 0x05);
	CHECK_EQ(inb(&r, RBR), 'q');
	outb(&r, THR, 'w');
	CHECK_EQ(r.host.nout, 1);
	outb(&r, LCR, 0x83);
	CHECK_EQ(inb(&r, DLL), 0x01);  /* THR write left the divisor alone */
	CHECK_EQ(inb(&r, DLM), 0x02);
	rig_destroy_checked(&r);
}

static void test_loopback(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	outb(&r, IER, 0x01);
	outb(&r, MCR, 0x10 | 0x08);
	outb(&r, THR, 'x');
	CHECK_EQ(r.host.nout, 0);      /* not transmitted */
	CHECK_EQ(inb(&r, LSR), 0x61);
	CHECK_EQ(inb(&r, IIR), 0x04);
	CHECK_EQ(r.host.level, 0);     /* loopback disconnects OUT2 */
	CHECK_EQ(inb(&r, RBR), 'x');
	CHECK_EQ(inb(&r, LSR), 0x60);

	outb(&r, MCR, 0x1f);
	CHECK_EQ(inb(&r, MSR) & 0xf0, 0xf0);
	outb(&r, MCR, 0x10 | 0x01);
	CHECK_EQ(inb(&r, MSR), 0x20 | 0x0d); /* DSR; DCTS|TERI|DDCD */
	outb(&r, MCR, 0x10 | 0x02);
	CHECK_EQ(inb(&r, MSR), 0x10 | 0x03);
	outb(&r, MCR, 0x10 | 0x04);
	CHECK_EQ(inb(&r, MSR) & 0xf0, 0x40);

	/* back to normal: the line is driven again for pending data */
	outb(&r, THR, 'y');
	outb(&r, MCR, 0x08);
	CHECK_EQ(r.host.level, 1);
	CHECK_EQ(inb(&r, MSR) & 0xf0, 0xb0);
	CHECK_EQ(inb(&r, RBR), 'y');
	CHECK_EQ(r.host.level, 0);
	outb(&r, THR, 'z');
	CHECK_EQ(r.host.nout, 1);
	CHECK_EQ(r.host.out[0], 'z');
	rig_destroy_checked(&r);
}

static void test_input_full(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	uint8_t *big = malloc(SERIAL_INPUT_MAX);
	CHECK(big != NULL);
	if (!big)
		return;
	for (size_t i = 0; i < SERIAL_INPUT_MAX; i++)
		big[i] = (uint8_t)(i * 7);
	CHECK_EQ(serial8250_input(r.s, big, SERIAL_INPUT_MAX - 10), SERIAL_INPUT_MAX - 10);
	CHECK_EQ(serial8250_input(r.s, big + SERIAL_INPUT_MAX - 10, 20), 10);
	CHECK_EQ(serial8250_input(r.s, big, 1), 0);
	CHECK_EQ(inb(&r, RBR), big[0]);
	CHECK_EQ(serial8250_input(r.s, big, 5), 1); /* one slot free, wraps */

	/* loopback into a full ring drops the byte, silently */
	outb(&r, MCR, 0x10);
	outb(&r, THR, 0x42);
	outb(&r, MCR, 0);

	int ok = 1;
	for (size_t i = 1; i < SERIAL_INPUT_MAX; i++)
		ok &= rx(&r) == big[i];
	CHECK(ok);
	CHECK_EQ(rx(&r), big[0]); /* the wrapped byte */
	CHECK_EQ(rx(&r), -1);
	CHECK_EQ(inb(&r, LSR), 0x60);
	free(big);
	rig_destroy_checked(&r);
}

/* FCR "clear RX" drops only what the 16-byte FIFO holds; what is queued
 * beyond it is still on the wire and stays. */
static void test_fcr_clear(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	char msg[41];
	for (int i = 0; i < 40; i++)
		msg[i] = 'A' + i;
	msg[40] = 0;
	CHECK_EQ(input_str(&r, msg), 40);
	outb(&r, FCR, 0x01);
	outb(&r, FCR, 0x07); /* A..P */
	outb(&r, FCR, 0x00); /* enabling/disabling alone drops nothing */
	CHECK_EQ(rx(&r), 'A' + 16);
	outb(&r, FCR, 0x02); /* without FIFO_EN the other bits are ignored */
	CHECK_EQ(rx(&r), 'A' + 17);
	outb(&r, FCR, 0x03); /* the 14 left of the second 16 */
	int ok = 1;
	for (int i = 32; i < 40; i++)
		ok &= rx(&r) == 'A' + i;
	CHECK(ok);
	CHECK_EQ(rx(&r), -1);
	outb(&r, FCR, 0x03); /* empty: harmless */
	CHECK_EQ(inb(&r, LSR), 0x60);
	CHECK_EQ(input_str(&r, "k"), 1);
	CHECK_EQ(rx(&r), 'k');
	rig_destroy_checked(&r);
}

/* The FIFO is the first 16 queued bytes: when the guest reads it empty the
 * line dips, so an edge-triggered PIC sees the next 16 as new data. */
static void test_rx_fifo_window(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	uint8_t data[40];
	for (int i = 0; i < 40; i++)
		data[i] = (uint8_t)(0x80 + i);
	CHECK_EQ(serial8250_input(r.s, data, sizeof(data)), 40);
	outb(&r, MCR, 0x08);
	outb(&r, IER, 0x01);
	CHECK_EQ(r.host.level, 1);
	int calls = r.host.irq_calls;
	int ok = 1;
	for (int i = 0; i < 16; i++) /* RBR alone: the FIFO runs dry */
		ok &= inb(&r, RBR) == data[i];
	CHECK(ok);
	CHECK_EQ(r.host.level, 0);
	CHECK_EQ(inb(&r, RBR), data[15]);   /* empty FIFO: the last byte again */
	CHECK_EQ(r.host.irq_calls, calls + 1);
	CHECK_EQ(inb(&r, LSR), 0x61);       /* next 16 arrived: new edge */
	CHECK_EQ(r.host.level, 1);
	CHECK_EQ(r.host.irq_calls, calls + 2);
	for (int i = 16; i < 32; i++)
		ok &= inb(&r, RBR) == data[i];
	CHECK(ok);
	CHECK_EQ(r.host.level, 0);
	CHECK_EQ(inb(&r, IIR), 0x04);       /* an ISR's IIR read refills too */
	CHECK_EQ(r.host.level, 1);
	for (int i = 32; i < 40; i++)
		ok &= rx(&r) == data[i];
	CHECK(ok);
	CHECK_EQ(inb(&r, IIR), 0x01);
	CHECK_EQ(r.host.level, 0);

	/* input while the FIFO is empty shows up at once */
	CHECK_EQ(input_str(&r, "xy"), 2);
	CHECK_EQ(r.host.level, 1);
	CHECK_EQ(inb(&r, RBR), 'x');
	CHECK_EQ(inb(&r, RBR), 'y');
	CHECK_EQ(r.host.level, 0);
	rig_destroy_checked(&r);
}

static void test_reset(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	outb(&r, LCR, 0x83);
	outb(&r, DLL, 0x01);
	outb(&r, LCR, 0x03);
	outb(&r, FCR, 0xc7);
	outb(&r, SCR, 0x77);
	outb(&r, MCR, 0x0b);
	outb(&r, IER, 0x0f);
	CHECK_EQ(input_str(&r, "pending"), 7);
	CHECK_EQ(r.host.level, 1);

	serial8250_reset(r.s);
	CHECK_EQ(r.host.level, 0); /* the line drops, reported once */
	CHECK_EQ(inb(&r, IER), 0);
	CHECK_EQ(inb(&r, IIR), 0x01);
	CHECK_EQ(inb(&r, LCR), 0);
	CHECK_EQ(inb(&r, MCR), 0);
	CHECK_EQ(inb(&r, LSR), 0x60);
	CHECK_EQ(inb(&r, MSR), 0xb0);
	CHECK_EQ(inb(&r, SCR), 0);
	outb(&r, IER, 0x01);
	outb(&r, MCR, 0x08);
	CHECK_EQ(r.host.level, 0); /* input was emptied */
	CHECK_EQ(input_str(&r, "n"), 1);
	CHECK_EQ(r.host.level, 1);
	CHECK_EQ(inb(&r, RBR), 'n');
	rig_destroy_checked(&r);
}

/* Linux's serial8250_interrupt(): passes until IIR says no interrupt, at most
 * 512, each reading at most 256 bytes. */
static size_t linux_isr(struct uart_rig *r, uint8_t *got, size_t n)
{
	for (int pass = 0; pass < 512; pass++) {
		if (inb(r, IIR) & 0x01)
			break;
		uint8_t lsr = inb(r, LSR);
		int max = 256;
		while (lsr & 0x01) {
			got[n++] = inb(r, RBR);
			if (--max == 0)
				break;
			lsr = inb(r, LSR);
		}
		inb(r, MSR);
	}
	return n;
}

/* A full ring drained by interrupts alone, through an edge-triggered PIC:
 * every ISR that gives up must leave an edge behind. */
static void test_linux_isr_full_ring(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	uint8_t *data = malloc(SERIAL_INPUT_MAX), *got = malloc(SERIAL_INPUT_MAX);
	CHECK(data && got);
	if (!data || !got)
		return;
	for (size_t i = 0; i < SERIAL_INPUT_MAX; i++)
		data[i] = (uint8_t)(i % 253);
	CHECK_EQ(serial8250_input(r.s, data, SERIAL_INPUT_MAX), SERIAL_INPUT_MAX);
	outb(&r, MCR, 0x0b);
	outb(&r, IER, 0x05);
	size_t n = 0;
	int interrupts = 0;
	while (r.host.edge && interrupts < 100000) {
		r.host.edge = 0;
		interrupts++;
		n = linux_isr(&r, got, n);
	}
	CHECK_EQ(n, SERIAL_INPUT_MAX);
	CHECK(memcmp(data, got, SERIAL_INPUT_MAX) == 0);
	CHECK(interrupts > 1); /* more than one ISR's worth */
	CHECK_EQ(r.host.level, 0);
	CHECK_EQ(inb(&r, LSR), 0x60);
	free(data);
	free(got);
	rig_destroy_checked(&r);
}

/* Host input from another thread while a "vCPU" drains RBR. */
#define STREAM_LEN 200000

static void *producer(void *arg)
{
	struct serial8250 *s = arg;
	uint8_t chunk[97];
	size_t sent = 0;
	while (sent < STREAM_LEN) {
		size_t n = STREAM_LEN - sent < sizeof(chunk) ? STREAM_LEN - sent : sizeof(chunk);
		for (size_t i = 0; i < n; i++)
			chunk[i] = (uint8_t)((sent + i) % 251);
		size_t done = 0;
		while (done < n)
			done += serial8250_input(s, chunk + done, n - done);
		sent += n;
	}
	return NULL;
}

static void test_threaded_input(void)
{
	struct uart_rig r;
	uart_rig_init(&r);
	outb(&r, MCR, 0x08);
	outb(&r, IER, 0x01);
	pthread_t t;
	CHECK_EQ(pthread_create(&t, NULL, producer, r.s), 0);
	size_t got = 0;
	int ok = 1;
	while (got < STREAM_LEN) {
		if (inb(&r, LSR) & 0x01)
			ok &= inb(&r, RBR) == got++ % 251;
	}
	pthread_join(t, NULL);
	CHECK(ok);
	CHECK_EQ(inb(&r, LSR), 0x60);
	CHECK_EQ(r.host.level, 0);
	rig_destroy_checked(&r);
}

int main(void)
{
	RUN(test_probe_16550a);
	RUN(test_transmit);
	RUN(test_receive_irq);
	RUN(test_thre_irq);
	RUN(test_iir_priority);
	RUN(test_dlab);
	RUN(test_loopback);
	RUN(test_input_full);
	RUN(test_fcr_clear);
	RUN(test_rx_fifo_window);
	RUN(test_reset);
	RUN(test_linux_isr_full_ring);
	RUN(test_threaded_input);
	return CHECK_DONE();
}
