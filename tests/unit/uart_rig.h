/* A 16550A as a vCPU sees it: the UART on a port bus at COM1, and a fake
 * host that records the IRQ line and what the guest transmits. Header only,
 * as check.h: the CHECKs here count in the test that includes it. */
#ifndef VMM_TEST_UART_RIG_H
#define VMM_TEST_UART_RIG_H

#include <stdint.h>
#include <string.h>

#include "bus.h"
#include "check.h"
#include "serial8250.h"

#define COM1 SERIAL_COM1_BASE
#define RBR 0
#define THR 0
#define DLL 0
#define IER 1
#define DLM 1
#define IIR 2
#define FCR 2
#define LCR 3
#define MCR 4
#define LSR 5
#define MSR 6
#define SCR 7

struct fake_host {
	uint8_t out[4096];
	size_t nout;
	int level;        /* current line level */
	int irq_calls;
	int irq_repeats;  /* calls that did not change the level */
	int edge;         /* latched rising edge, as an edge-triggered PIC */
};

/* The UART's IRQ callback: records the level, repeats and rising edges. */
static inline void fake_irq(void *opaque, int level)
{
	struct fake_host *h = opaque;
	if (level == h->level)
		h->irq_repeats++;
	if (level && !h->level)
		h->edge = 1;
	h->level = level;
	h->irq_calls++;
}

/* The UART's output callback: keeps the first 4096 bytes transmitted. */
static inline void fake_output(void *opaque, const uint8_t *buf, size_t len)
{
	struct fake_host *h = opaque;
	for (size_t i = 0; i < len && h->nout < sizeof(h->out); i++)
		h->out[h->nout++] = buf[i];
}

struct uart_rig {
	struct fake_host host;
	struct serial8250 *s;
	struct bus pio;
};

/* A power-on UART registered at COM1 on a fresh port bus. */
static inline void uart_rig_init(struct uart_rig *r)
{
	memset(&r->host, 0, sizeof(r->host));
	struct serial8250_host h = { fake_irq, fake_output, &r->host };
	r->s = serial8250_new(&h);
	CHECK(r->s != NULL);
	bus_init(&r->pio, "pio");
	CHECK_EQ(bus_register(&r->pio, COM1, SERIAL_PORTS, &serial8250_bus_ops, r->s, "serial"), 0);
}

/* Frees the bus and the UART. */
static inline void uart_rig_destroy(struct uart_rig *r)
{
	bus_destroy(&r->pio);
	serial8250_free(r->s);
}

/* A vCPU's byte read of UART register reg. */
static inline uint8_t inb(struct uart_rig *r, unsigned reg)
{
	uint8_t v = 0;
	CHECK(bus_read(&r->pio, COM1 + reg, &v, 1));
	return v;
}

/* A vCPU's byte write of UART register reg. */
static inline void outb(struct uart_rig *r, unsigned reg, uint8_t v)
{
	CHECK(bus_write(&r->pio, COM1 + reg, &v, 1));
}

#endif
