/* 16550A UART. What Linux's 8250 driver probes and uses is modelled; the rest
 * is approximated:
 *
 * - Transmission is immediate: a byte written to THR goes to host->output
 *   (or, in loopback, to the receive side) at once, so LSR always shows
 *   THRE|TEMT. Writing THR clears a pending THRE interrupt, but since THR is
 *   empty again straight away the interrupt re-arms, as a real UART does one
 *   character time later; Linux's transmit path waits for that interrupt to
 *   send the next 16 bytes.
 * - The THRE interrupt arms when IER.ETBEI goes from 0 to 1 (THR is always
 *   empty) and after every THR write; reading IIR while THRE is the reported
 *   source disarms it. Linux's startup test toggles ETBEI and expects it.
 * - Receive: an input ring of SERIAL_INPUT_MAX bytes (fed by
 *   serial8250_input from the main thread, and by THR writes in loopback)
 *   stands for the sender, flow-controlled. The 16-byte hardware FIFO is its
 *   first bytes: once the guest has read the FIFO empty through RBR, it is
 *   refilled (up to 16) by its next access other than an RBR read, or by new
 *   input. So LSR.DR reads set while any data is queued, but the RX-data
 *   interrupt drops for a moment after every 16 bytes. IRQ4 is
 *   edge-triggered: without that dip the line would stay high through an ISR
 *   that gives up (Linux stops after 512 passes of 256 bytes) and input would
 *   stall for good. There is no trigger level, no character timeout (IIR
 *   reports 0x04), no overrun and no line errors, so the receiver-line-status
 *   interrupt never fires.
 * - FCR "clear RX FIFO" drops the FIFO (at most 16 bytes: the oldest, which
 *   the guest could see); what is queued beyond it stays, as still on the
 *   wire. Toggling FCR.FIFO_EN drops nothing (a real 16550A would clear both
 *   FIFOs), so the enable/clear/disable sequence Linux runs at startup loses
 *   at most 16 bytes.
 * - Host input is queued whatever the mode, including loopback.
 * - MSR: DCD|DSR|CTS outside loopback; in loopback, the MCR outputs as a
 *   loopback plug wires them (DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD), with
 *   the delta bits set on change and cleared by reading MSR.
 * - The IRQ line is the UART's INTR gated as on a PC: asserted only while
 *   MCR.OUT2 is set and MCR.LOOP is clear (loopback forces the OUT2 pin
 *   inactive). IIR reports pending sources whatever the gate.
 *
 * Locking: one mutex guards the state. host->irq is called with it held, so
 * that level changes reach the host in the order they happen; it must not
 * call back into this device. host->output is called with no lock held, so
 * it may (e.g. echo through serial8250_input). */
#include "serial8250.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "migstream.h"

/* Register offsets (DLAB=0 meaning first). */
#define REG_RBR_THR_DLL 0
#define REG_IER_DLM     1
#define REG_IIR_FCR     2
#define REG_LCR         3
#define REG_MCR         4
#define REG_LSR         5
#define REG_MSR         6
#define REG_SCR         7

#define IER_ERBFI 0x01 /* RX data available */
#define IER_ETBEI 0x02 /* THR empty */
#define IER_ELSI  0x04 /* receiver line status */
#define IER_EDSSI 0x08 /* modem status */
#define IER_MASK  0x0f /* bits 4-7 read 0 on a 16550A (Linux probes b6) */

#define IIR_NO_INT 0x01
#define IIR_MSI    0x00
#define IIR_THRI   0x02
#define IIR_RDI    0x04
#define IIR_RLSI   0x06
#define IIR_FIFO   0xc0 /* FIFOs enabled; bit 5 (64-byte FIFO) stays 0 */

#define FCR_ENABLE    0x01
#define FCR_CLEAR_RCV 0x02
#define FCR_CLEAR_XMT 0x04
#define FCR_KEEP      0xc9 /* enable, DMA mode, trigger level */

#define LCR_DLAB 0x80

#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR   0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

#define MSR_DCTS  0x01
#define MSR_DDSR  0x02
#define MSR_TERI  0x04
#define MSR_DDCD  0x08
#define MSR_CTS   0x10
#define MSR_DSR   0x20
#define MSR_RI    0x40
#define MSR_DCD   0x80
#define MSR_DELTA 0x0f

#define HW_FIFO_SIZE 16
#define POWER_ON_DIVISOR 12 /* 9600 baud from 1.8432 MHz */

struct serial8250 {
	pthread_mutex_t lock;
	struct serial8250_host host;

	uint8_t ier, lcr, mcr, msr, scr, fcr, dll, dlm;
	uint8_t rbr;       /* last byte received: what RBR reads when empty */
	bool thr_ipending; /* THRE interrupt armed (meaningful when ETBEI) */
	int irq_level;     /* last level reported to host->irq */

	uint8_t *rx;       /* ring of SERIAL_INPUT_MAX bytes */
	size_t rx_head;    /* index of the oldest byte */
	size_t rx_count;
	size_t rx_fifo;    /* how many of the oldest the guest sees (<= 16) */
};

/* --- receive ring --------------------------------------------------------- */

static size_t rx_push(struct serial8250 *s, const uint8_t *buf, size_t len)
{
	size_t room = SERIAL_INPUT_MAX - s->rx_count;
	if (len > room)
		len = room;
	size_t tail = (s->rx_head + s->rx_count) % SERIAL_INPUT_MAX;
	size_t first = SERIAL_INPUT_MAX - tail;
	if (first > len)
		first = len;
	memcpy(s->rx + tail, buf, first);
	memcpy(s->rx, buf + first, len - first);
	s->rx_count += len;
	return len;
}

/* Drops n bytes (at most the FIFO's) from the FIFO and the ring. */
static void rx_drop(struct serial8250 *s, size_t n)
{
	if (n > s->rx_fifo)
		n = s->rx_fifo;
	s->rx_head = (s->rx_head + n) % SERIAL_INPUT_MAX;
	s->rx_count -= n;
	s->rx_fifo -= n;
	if (s->rx_count == 0)
		s->rx_head = 0;
}

/* Once the guest has emptied the FIFO, the next bytes arrive. */
static void rx_refill(struct serial8250 *s)
{
	if (s->rx_fifo == 0)
		s->rx_fifo = s->rx_count < HW_FIFO_SIZE ? s->rx_count : HW_FIFO_SIZE;
}

static uint8_t rx_pop(struct serial8250 *s)
{
	if (s->rx_fifo) {
		s->rbr = s->rx[s->rx_head];
		rx_drop(s, 1);
	}
	return s->rbr;
}

/* --- state ---------------------------------------------------------------- */

/* MSR status bits (high nibble) as the modem lines currently read. */
static uint8_t modem_lines(const struct serial8250 *s)
{
	if (!(s->mcr & MCR_LOOP))
		return MSR_DCD | MSR_DSR | MSR_CTS;
	uint8_t v = 0;
	if (s->mcr & MCR_DTR)
		v |= MSR_DSR;
	if (s->mcr & MCR_RTS)
		v |= MSR_CTS;
	if (s->mcr & MCR_OUT1)
		v |= MSR_RI;
	if (s->mcr & MCR_OUT2)
		v |= MSR_DCD;
	return v;
}

/* Recomputes the MSR status bits, latching deltas for what changed. */
static void update_msr(struct serial8250 *s)
{
	uint8_t old = s->msr, now = modem_lines(s), delta = 0;
	if ((old ^ now) & MSR_CTS)
		delta |= MSR_DCTS;
	if ((old ^ now) & MSR_DSR)
		delta |= MSR_DDSR;
	if ((old & MSR_RI) && !(now & MSR_RI))
		delta |= MSR_TERI;
	if ((old ^ now) & MSR_DCD)
		delta |= MSR_DDCD;
	s->msr = now | (old & MSR_DELTA) | delta;
}

static uint8_t lsr(const struct serial8250 *s)
{
	return LSR_THRE | LSR_TEMT | (s->rx_fifo ? LSR_DR : 0);
}

/* The highest-priority pending interrupt, in IIR encoding (without the FIFO
 * bits). No line errors are ever reported, so IIR_RLSI never comes up. */
static uint8_t pending_source(const struct serial8250 *s)
{
	if ((s->ier & IER_ERBFI) && s->rx_fifo)
		return IIR_RDI;
	if ((s->ier & IER_ETBEI) && s->thr_ipending)
		return IIR_THRI;
	if ((s->ier & IER_EDSSI) && (s->msr & MSR_DELTA))
		return IIR_MSI;
	return IIR_NO_INT;
}

/* Call with the lock held, after any state change. */
static void update_irq(struct serial8250 *s)
{
	int level = pending_source(s) != IIR_NO_INT &&
		    (s->mcr & (MCR_OUT2 | MCR_LOOP)) == MCR_OUT2;
	if (level == s->irq_level)
		return;
	s->irq_level = level;
	if (s->host.irq)
		s->host.irq(s->host.opaque, level);
}

static void reset_locked(struct serial8250 *s)
{
	s->ier = 0;
	s->lcr = 0;
	s->mcr = 0;
	s->scr = 0;
	s->fcr = 0;
	s->dll = POWER_ON_DIVISOR;
	s->dlm = 0;
	s->rbr = 0;
	s->thr_ipending = false;
	s->msr = modem_lines(s); /* no deltas at power-on */
	s->rx_head = 0;
	s->rx_count = 0;
	s->rx_fifo = 0;
	update_irq(s);
}

/* --- lifecycle ------------------------------------------------------------ */

struct serial8250 *serial8250_new(const struct serial8250_host *host)
{
	struct serial8250 *s = calloc(1, sizeof(*s));
	if (!s) {
		vmm_fail("serial8250: out of memory");
		return NULL;
	}
	s->rx = malloc(SERIAL_INPUT_MAX);
	if (!s->rx) {
		free(s);
		vmm_fail("serial8250: cannot allocate %u bytes of input buffer", SERIAL_INPUT_MAX);
		return NULL;
	}
	int err = pthread_mutex_init(&s->lock, NULL);
	if (err) {
		free(s->rx);
		free(s);
		errno = err;
		vmm_fail_errno("serial8250: pthread_mutex_init");
		return NULL;
	}
	if (host)
		s->host = *host;
	reset_locked(s); /* irq_level is 0 already: no callback */
	return s;
}

void serial8250_free(struct serial8250 *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s->rx);
	free(s);
}

void serial8250_reset(struct serial8250 *s)
{
	pthread_mutex_lock(&s->lock);
	reset_locked(s);
	pthread_mutex_unlock(&s->lock);
}

size_t serial8250_input(struct serial8250 *s, const uint8_t *buf, size_t len)
{
	pthread_mutex_lock(&s->lock);
	size_t n = rx_push(s, buf, len);
	rx_refill(s);
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* --- guest side ----------------------------------------------------------- */

static uint8_t read_reg(struct serial8250 *s, uint64_t offset)
{
	bool dlab = s->lcr & LCR_DLAB;
	uint8_t v;

	switch (offset) {
	case REG_RBR_THR_DLL:
		return dlab ? s->dll : rx_pop(s);
	case REG_IER_DLM:
		return dlab ? s->dlm : s->ier;
	case REG_IIR_FCR:
		v = pending_source(s);
		if (v == IIR_THRI)
			s->thr_ipending = false;
		return v | ((s->fcr & FCR_ENABLE) ? IIR_FIFO : 0);
	case REG_LCR:
		return s->lcr;
	case REG_MCR:
		return s->mcr;
	case REG_LSR:
		return lsr(s);
	case REG_MSR:
		v = s->msr;
		s->msr &= ~MSR_DELTA;
		return v;
	case REG_SCR:
		return s->scr;
	default: /* not a register: nothing drives the bus */
		return 0xff;
	}
}

/* Returns true when *out holds a byte to hand to host->output. */
static bool write_reg(struct serial8250 *s, uint64_t offset, uint8_t v, uint8_t *out)
{
	bool dlab = s->lcr & LCR_DLAB;

	switch (offset) {
	case REG_RBR_THR_DLL:
		if (dlab) {
			s->dll = v;
			return false;
		}
		s->thr_ipending = true; /* sent at once: THR is empty again */
		if (s->mcr & MCR_LOOP) {
			rx_push(s, &v, 1); /* dropped if the ring is full */
			return false;
		}
		*out = v;
		return true;
	case REG_IER_DLM:
		if (dlab) {
			s->dlm = v;
		} else {
			uint8_t changed = s->ier ^ (v & IER_MASK);
			s->ier = v & IER_MASK;
			if (changed & IER_ETBEI)
				s->thr_ipending = s->ier & IER_ETBEI;
		}
		return false;
	case REG_IIR_FCR:
		if (!(v & FCR_ENABLE)) {
			s->fcr = 0; /* other bits are ignored unless FIFO_EN is set */
			return false;
		}
		if (v & FCR_CLEAR_RCV)
			rx_drop(s, s->rx_fifo);
		/* FCR_CLEAR_XMT: nothing is ever waiting to be sent. */
		s->fcr = v & FCR_KEEP;
		return false;
	case REG_LCR:
		s->lcr = v;
		return false;
	case REG_MCR:
		s->mcr = v & MCR_MASK;
		update_msr(s);
		return false;
	case REG_SCR:
		s->scr = v;
		return false;
	default: /* LSR and MSR writes (factory test) and unknown offsets */
		return false;
	}
}

static void bus_read_op(void *opaque, uint64_t offset, void *data, unsigned len)
{
	struct serial8250 *s = opaque;
	uint8_t *d = data;

	if (len == 0)
		return;
	memset(d, 0, len);
	pthread_mutex_lock(&s->lock);
	bool rbr = offset == REG_RBR_THR_DLL && !(s->lcr & LCR_DLAB);
	if (!rbr)
		rx_refill(s); /* an RBR read may empty the FIFO: see the top */
	d[0] = read_reg(s, offset);
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

static void bus_write_op(void *opaque, uint64_t offset, const void *data, unsigned len)
{
	struct serial8250 *s = opaque;
	uint8_t out;
	bool send;

	if (len == 0)
		return;
	pthread_mutex_lock(&s->lock);
	rx_refill(s);
	send = write_reg(s, offset, *(const uint8_t *)data, &out);
	rx_refill(s); /* loopback may have queued the first byte */
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
	if (send && s->host.output)
		s->host.output(s->host.opaque, &out, 1);
}

const struct bus_ops serial8250_bus_ops = {
	.read = bus_read_op,
	.write = bus_write_op,
};

/* --- migration ------------------------------------------------------------ */

int serial8250_save(struct serial8250 *s, struct mig_buf *b)
{
	pthread_mutex_lock(&s->lock);
	const uint8_t regs[] = { s->ier, s->lcr, s->mcr, s->msr, s->scr, s->fcr, s->dll, s->dlm, s->rbr };
	mig_put_bytes(b, regs, sizeof(regs));
	mig_put_u8(b, s->thr_ipending);
	mig_put_u32(b, (uint32_t)s->rx_fifo);
	mig_put_u32(b, (uint32_t)s->rx_count);
	size_t first = SERIAL_INPUT_MAX - s->rx_head;
	if (first > s->rx_count)
		first = s->rx_count;
	mig_put_bytes(b, s->rx + s->rx_head, first);
	mig_put_bytes(b, s->rx, s->rx_count - first);
	pthread_mutex_unlock(&s->lock);
	return mig_buf_ok(b, "serial");
}

/* What a loaded state must satisfy: what the guest could have set
 * through the registers, and the queue bounds. */
static int check_loaded(const uint8_t *r, uint8_t thr, uint32_t fifo, uint32_t count)
{
	uint8_t ier = r[0], mcr = r[2], msr = r[3], fcr = r[5];
	if (ier & ~IER_MASK)
		return vmm_fail("serial: IER 0x%02x has bits a 16550A does not keep (0x%02x)", ier, IER_MASK);
	if (mcr & ~MCR_MASK)
		return vmm_fail("serial: MCR 0x%02x has bits a 16550A does not keep (0x%02x)", mcr, MCR_MASK);
	if (fcr & ~FCR_KEEP || (fcr && !(fcr & FCR_ENABLE)))
		return vmm_fail("serial: FCR state 0x%02x is not one a write could leave", fcr);
	struct serial8250 lines = { .mcr = mcr };
	if ((msr & ~MSR_DELTA) != modem_lines(&lines))
		return vmm_fail("serial: MSR 0x%02x does not match the modem lines of MCR 0x%02x", msr, mcr);
	if (thr > 1)
		return vmm_fail("serial: THRE pending flag is %u (0 or 1)", thr);
	if (count > SERIAL_INPUT_MAX)
		return vmm_fail("serial: %u bytes queued for the guest (at most %u)", count, SERIAL_INPUT_MAX);
	if (fifo > HW_FIFO_SIZE || fifo > count)
		return vmm_fail("serial: %u bytes in the FIFO (at most %u, and at most the %u queued)", fifo,
				HW_FIFO_SIZE, count);
	return 0;
}

int serial8250_load(struct serial8250 *s, const void *p, size_t len)
{
	struct mig_cursor c;
	mig_cursor_init(&c, p, len, "serial");
	uint8_t regs[9];
	mig_get_bytes(&c, regs, sizeof(regs));
	uint8_t thr = mig_get_u8(&c);
	uint32_t fifo = mig_get_u32(&c);
	uint32_t count = mig_get_u32(&c);
	if (c.short_read)
		return mig_cursor_finish(&c);
	if (check_loaded(regs, thr, fifo, count))
		return -1;
	const uint8_t *bytes = mig_get_view(&c, count);
	if (mig_cursor_finish(&c))
		return -1;

	pthread_mutex_lock(&s->lock);
	s->ier = regs[0];
	s->lcr = regs[1];
	s->mcr = regs[2];
	s->msr = regs[3];
	s->scr = regs[4];
	s->fcr = regs[5];
	s->dll = regs[6];
	s->dlm = regs[7];
	s->rbr = regs[8];
	s->thr_ipending = thr;
	s->rx_head = 0;
	s->rx_count = count;
	s->rx_fifo = fifo;
	if (count)
		memcpy(s->rx, bytes, count);
	/* report the level even if unchanged: the interrupt controller was
	 * restored on its own and must agree with the line */
	s->irq_level = pending_source(s) != IIR_NO_INT && (s->mcr & (MCR_OUT2 | MCR_LOOP)) == MCR_OUT2;
	if (s->host.irq)
		s->host.irq(s->host.opaque, s->irq_level);
	pthread_mutex_unlock(&s->lock);
	return 0;
}
