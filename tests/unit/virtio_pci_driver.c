/* A virtio-pci modern driver's register access. */
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
