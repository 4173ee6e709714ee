/* A virtio-pci modern driver's register access. */
#include "pci.h"
#include "virtio.h"
#include "virtio_pci.h"
#include "virtio_pci_driver.h"

const struct vpci_target *vpci;

uint32_t cfg_read(unsigned reg, unsigned len)
{
	uint32_t a = 0x80000000u | (*vpci->slot << 11) | (reg & 0xfc), v = 0;
	bus_write(vpci->pio, 0xcf8, &a, 4);
	bus_read(vpci->pio, 0xcfc + (reg & 3), &v, len);
	return v;
}

void cfg_write(unsigned reg, unsigned len, uint32_t v)
{
	uint32_t a = 0x80000000u | (*vpci->slot << 11) | (reg & 0xfc);
	bus_write(vpci->pio, 0xcf8, &a, 4);
	bus_write(vpci->pio, 0xcfc + (reg & 3), &v, len);
}

uint64_t rd(uint64_t addr, unsigned len)
{
	uint64_t v = 0;
	bus_read(vpci->mmio, addr, &v, len);
	return v;
}

void wr(uint64_t addr, unsigned len, uint64_t v)
{
	bus_write(vpci->mmio, addr, &v, len);
}

void status(uint8_t s)
{
	wr(COMMON(VIRTIO_PCI_COMMON_STATUS), 1, s);
}

uint8_t get_status(void)
{
	return (uint8_t)rd(COMMON(VIRTIO_PCI_COMMON_STATUS), 1);
}

void write_features(uint64_t f)
{
	wr(COMMON(VIRTIO_PCI_COMMON_GFSELECT), 4, 0);
	wr(COMMON(VIRTIO_PCI_COMMON_GF), 4, (uint32_t)f);
	wr(COMMON(VIRTIO_PCI_COMMON_GFSELECT), 4, 1);
	wr(COMMON(VIRTIO_PCI_COMMON_GF), 4, (uint32_t)(f >> 32));
}

uint64_t ring(unsigned q, unsigned which)
{
	return 0x100000 + q * 0x10000 + which * 0x4000;
}

int vpci_probe(struct vpci_layout *L, uint64_t *common_out)
{
	*L = (struct vpci_layout){ 0 };
	L->bar = cfg_read(0x10, 4) & ~0xfu;
	cfg_write(0x04, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	unsigned pos = cfg_read(0x34, 1) & ~3u;
	for (int ttl = 48; pos >= 0x40 && ttl > 0; ttl--) {
		unsigned id = cfg_read(pos, 1);
		if (id == PCI_CAP_ID_MSIX) {
			L->msix_cap = pos;
			L->nvec = (cfg_read(pos + 2, 2) & 0x7ff) + 1;
			L->table = L->bar + (cfg_read(pos + 4, 4) & ~7u);
			L->pba = L->bar + (cfg_read(pos + 8, 4) & ~7u);
		} else if (id == PCI_CAP_ID_VNDR) {
			uint64_t at = L->bar + cfg_read(pos + 8, 4);
			switch (cfg_read(pos + 3, 1)) {
			case VIRTIO_PCI_CAP_COMMON_CFG: L->common = at; break;
			case VIRTIO_PCI_CAP_NOTIFY_CFG: L->notify = at, L->multiplier = cfg_read(pos + 16, 4); break;
			case VIRTIO_PCI_CAP_ISR_CFG: L->isr = at; break;
			case VIRTIO_PCI_CAP_DEVICE_CFG: L->device = at; break;
			}
		}
		pos = cfg_read(pos + 1, 1) & ~3u;
	}
	*common_out = L->common;
	return L->common && L->notify && L->isr && L->table && L->pba ? 0 : -1;
}

uint8_t vpci_reset(void (*pump)(void))
{
	status(0);
	for (int i = 0; i < 10 && get_status(); i++)
		pump();
	return get_status();
}

uint8_t vpci_start(const struct vpci_layout *L, uint64_t features, unsigned nq, uint16_t qsize,
		   void (*pump)(void))
{
	vpci_reset(pump);
	status(VIRTIO_STATUS_ACKNOWLEDGE);
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	write_features(features);
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	for (unsigned v = 0; v < L->nvec; v++) {
		uint64_t e = L->table + 16 * v;
		wr(e + 0, 4, 0xfee00000);
		wr(e + 4, 4, 0);
		wr(e + 8, 4, 0x4040 + v);
		wr(e + 12, 4, 0);
	}
	cfg_write(L->msix_cap + 2, 2, 0x8000); /* MSI-X enable */
	wr(COMMON(VIRTIO_PCI_COMMON_MSIX), 2, 0);
	for (unsigned q = 0; q < nq; q++) {
		wr(COMMON(VIRTIO_PCI_COMMON_Q_SELECT), 2, q);
		wr(COMMON(VIRTIO_PCI_COMMON_Q_SIZE), 2, qsize);
		wr(COMMON(VIRTIO_PCI_COMMON_Q_MSIX), 2, q + 1);
		wr(COMMON(VIRTIO_PCI_COMMON_Q_DESCLO), 8, ring(q, 0));
		wr(COMMON(VIRTIO_PCI_COMMON_Q_AVAILLO), 8, ring(q, 1));
		wr(COMMON(VIRTIO_PCI_COMMON_Q_USEDLO), 8, ring(q, 2));
		wr(COMMON(VIRTIO_PCI_COMMON_Q_ENABLE), 2, 1);
	}
	status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
	       VIRTIO_STATUS_DRIVER_OK);
	pump();
	return get_status();
}
