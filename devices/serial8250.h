/* 8250/16550A UART, as the PC's COM1 (ports 0x3f8-0x3ff, IRQ 4).
 * The guest side runs on vCPU threads through serial8250_bus_ops; the host
 * side (input) comes from the main thread. A mutex guards the state.
 * Interrupt line level is reported through irq() whenever it changes.
 * Accesses wider than a byte act on their first byte (reads fill the rest with
 * 0). What is modelled and what is approximated: see serial8250.c. */
#ifndef VMM_SERIAL8250_H
#define VMM_SERIAL8250_H

#include <stddef.h>
#include <stdint.h>

#include "bus.h"

#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_IRQ  4
#define SERIAL_PORTS     8

struct serial8250;

/* Either callback may be NULL. irq() is called with the device lock held (so
 * level changes arrive in order) and must not call back into the device;
 * output() is called with no lock held. */
struct serial8250_host {
	void (*irq)(void *opaque, int level);                    /* line level changed */
	void (*output)(void *opaque, const uint8_t *buf, size_t len); /* guest transmitted */
	void *opaque;
};

struct serial8250 *serial8250_new(const struct serial8250_host *host);
void serial8250_free(struct serial8250 *s);

/* Reset to power-on state (input buffer emptied). */
void serial8250_reset(struct serial8250 *s);

/* Queues bytes for the guest to receive. Returns how many were accepted
 * (fewer than len when the input buffer, SERIAL_INPUT_MAX bytes, is full). */
#define SERIAL_INPUT_MAX (1u << 20)
size_t serial8250_input(struct serial8250 *s, const uint8_t *buf, size_t len);

extern const struct bus_ops serial8250_bus_ops;

/* Migration (MIG_SERIAL). The payload, little-endian:
 *   u8 ier, lcr, mcr, msr, scr, fcr, dll, dlm, rbr
 *   u8 thr_ipending (0 or 1)
 *   u32 fifo    bytes of the queue the guest sees as its 16-byte FIFO (<= 16)
 *   u32 count   bytes queued for the guest (fifo <= count <= SERIAL_INPUT_MAX)
 *   count bytes, oldest first
 * IIR is not stored: it is computed from the rest. serial8250_save takes a
 * consistent snapshot under the lock (vCPUs may still run).
 * serial8250_load checks everything before it changes anything (register
 * bits that cannot be set, MSR lines not matching MCR, counts out of
 * bounds, trailing bytes: -1 with a message, the device untouched), then
 * replaces the state and calls host->irq with the line's level, whatever
 * was reported before, so the interrupt controller agrees with it. */
struct mig_buf;
int serial8250_save(struct serial8250 *s, struct mig_buf *b);
int serial8250_load(struct serial8250 *s, const void *p, size_t len);

#endif
