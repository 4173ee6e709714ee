/* The legacy PC that every VM has, as devices of the one interface: COM1
 * (an 8250 at 0x3f8, IRQ 4, the console), the CMOS clock at 0x70, the PS/2
 * controller's reset line at 0x60/0x64, and the PCI host bridge (config
 * mechanism #1 at 0xcf8/0xcfc) that PCI functions plug into. The chips are
 * modelled in their own files; this file wires them to the board. */
#include "board_pc.h"

#include <stdio.h>
#include <stdlib.h>

#include "bus.h"
#include "err.h"
#include "i8042.h"
#include "migstream.h"
#include "pci.h"
#include "rtc.h"
#include "serial8250.h"

/* ---- COM1 ---- */

struct com1 {
	struct device dev;
	const struct device_host *host;
	struct serial8250 *uart;
};

static void com1_irq(void *opaque, int level)
{
	struct com1 *c = opaque;
	c->host->irq_line(c->host->opaque, SERIAL_COM1_IRQ, level);
}

static void com1_output(void *opaque, const uint8_t *buf, size_t len)
{
	struct com1 *c = opaque;
	c->host->console_output(c->host->opaque, buf, len);
}

static void com1_free(struct device *d)
{
	struct com1 *c = (struct com1 *)d;
	serial8250_free(c->uart);
	free(c);
}

static struct device *com1_create(const struct device_host *h, const char *name, void *config,
				  const struct dev_backend *in)
{
	(void)config, (void)in;
	struct com1 *c = device_alloc(sizeof(*c), &pc_serial_type, name);
	if (!c)
		return NULL;
	c->host = h;
	struct serial8250_host sh = { com1_irq, com1_output, c };
	c->uart = serial8250_new(&sh);
	if (!c->uart || bus_register(h->pio, SERIAL_COM1_BASE, SERIAL_PORTS, &serial8250_bus_ops, c->uart, name)) {
		com1_free(&c->dev);
		return NULL;
	}
	return &c->dev;
}

static int com1_save(struct device *d, uint16_t version, struct mig_buf *b)
{
	(void)version;
	return serial8250_save(((struct com1 *)d)->uart, b);
}

static int com1_load(struct device *d, uint16_t version, const void *p, size_t len)
{
	(void)version;
	return serial8250_load(((struct com1 *)d)->uart, p, len);
}

static size_t com1_input(struct device *d, const uint8_t *buf, size_t len)
{
	return serial8250_input(((struct com1 *)d)->uart, buf, len);
}

const struct device_type pc_serial_type = {
	.kind = "serial8250",
	.state_version = 1, .state_min_save = 1, .state_min_load = 1,
	.create = com1_create,
	.free = com1_free,
	.save = com1_save,
	.load = com1_load,
	.console_input = com1_input,
};

/* ---- CMOS clock ---- */

struct cmos {
	struct device dev;
	struct rtc *rtc;
};

static void cmos_free(struct device *d)
{
	struct cmos *c = (struct cmos *)d;
	rtc_free(c->rtc);
	free(c);
}

static struct device *cmos_create(const struct device_host *h, const char *name, void *config,
				  const struct dev_backend *in)
{
	(void)config, (void)in;
	struct cmos *c = device_alloc(sizeof(*c), &pc_rtc_type, name);
	if (!c)
		return NULL;
	c->rtc = rtc_new();
	if (!c->rtc || bus_register(h->pio, RTC_PORT_BASE, RTC_PORTS, &rtc_bus_ops, c->rtc, name)) {
		if (!c->rtc)
			vmm_fail("%s: out of memory", name);
		cmos_free(&c->dev);
		return NULL;
	}
	return &c->dev;
}

static int cmos_save(struct device *d, uint16_t version, struct mig_buf *b)
{
	(void)version;
	return rtc_save(((struct cmos *)d)->rtc, b);
}

static int cmos_load(struct device *d, uint16_t version, const void *p, size_t len)
{
	(void)version;
	return rtc_load(((struct cmos *)d)->rtc, p, len);
}

const struct device_type pc_rtc_type = {
	.kind = "rtc",
	.state_version = 1, .state_min_save = 1, .state_min_load = 1,
	.create = cmos_create,
	.free = cmos_free,
	.save = cmos_save,
	.load = cmos_load,
};

/* ---- PS/2 controller: only its CPU reset line ---- */

struct ps2 {
	struct device dev;
	const struct device_host *host;
	struct i8042 chip;
};

static void ps2_reset(void *opaque)
{
	struct ps2 *p = opaque;
	p->host->guest_reset(p->host->opaque, "guest reset");
}

static void ps2_free(struct device *d)
{
	free(d);
}

static struct device *ps2_create(const struct device_host *h, const char *name, void *config,
				 const struct dev_backend *in)
{
	(void)config, (void)in;
	struct ps2 *p = device_alloc(sizeof(*p), &pc_i8042_type, name);
	if (!p)
		return NULL;
	p->host = h;
	p->chip = (struct i8042){ .reset = ps2_reset, .opaque = p };
	if (bus_register(h->pio, I8042_DATA_PORT, 1, &i8042_data_ops, &p->chip, "i8042-data") ||
	    bus_register(h->pio, I8042_COMMAND_PORT, 1, &i8042_command_ops, &p->chip, "i8042-command")) {
		ps2_free(&p->dev);
		return NULL;
	}
	return &p->dev;
}

const struct device_type pc_i8042_type = {
	.kind = "i8042",
	.create = ps2_create,
	.free = ps2_free,
};

/* ---- PCI host bridge ---- */

struct pci_host {
	struct device dev;
	struct pci_bus *bus;
};

static void pci_host_free(struct device *d)
{
	struct pci_host *p = (struct pci_host *)d;
	pci_bus_free(p->bus);
	free(p);
}

static struct device *pci_host_create(const struct device_host *h, const char *name, void *config,
				      const struct dev_backend *in)
{
	(void)config, (void)in;
	struct pci_host *p = device_alloc(sizeof(*p), &pc_pci_host_type, name);
	if (!p)
		return NULL;
	p->bus = pci_bus_new(h->pio, h->mmio);
	if (!p->bus) {
		free(p);
		return NULL;
	}
	return &p->dev;
}

const struct device_type pc_pci_host_type = {
	.kind = "pci-host",
	.create = pci_host_create,
	.free = pci_host_free,
};

struct pci_bus *board_pc_pci_bus(const struct device_host *h)
{
	struct device *d = h->find(h->opaque, pc_pci_host_type.kind);
	if (!d || d->type != &pc_pci_host_type) {
		vmm_fail("%s: no PCI host bridge on this board", h->vm_name);
		return NULL;
	}
	return ((struct pci_host *)d)->bus;
}

const struct device_type *const board_pc_types[] = {
	&pc_serial_type, &pc_rtc_type, &pc_i8042_type, &pc_pci_host_type, NULL,
};
