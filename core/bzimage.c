/* bzImage header parsing (Documentation/arch/x86/boot.rst, "The real-mode
 * kernel header"). Offsets are from the start of the image file. */
#include "x86_boot.h"

#include <string.h>

#include "err.h"

#define HDR_SETUP_SECTS      0x1f1
#define HDR_BOOT_FLAG        0x1fe
#define HDR_MAGIC            0x202
#define HDR_VERSION          0x206
#define HDR_LOADFLAGS        0x211
#define HDR_INITRD_ADDR_MAX  0x22c
#define HDR_KERNEL_ALIGNMENT 0x230
#define HDR_XLOADFLAGS       0x236
#define HDR_CMDLINE_SIZE     0x238
#define HDR_PREF_ADDRESS     0x258
#define HDR_INIT_SIZE        0x260

#define BOOT_FLAG         0xaa55
#define MIN_VERSION       0x020c   /* 2.12: xloadflags and the 64-bit entry */
#define SECTOR_SIZE       512
#define DEFAULT_SETUP_SECTS 4      /* what setup_sects 0 means */

#define LOADFLAG_LOADED_HIGH 0x01
#define XLF_KERNEL_64        0x0001

/* Bytes needed to read the magic and the version. */
#define MIN_HEADER_BYTES (HDR_VERSION + 2)

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)get16(p) | (uint32_t)get16(p + 2) << 16;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* The magic, boot flag and protocol version: what says this is a bzImage we
 * can boot at all. Needs MIN_HEADER_BYTES of image. */
static int check_signature(const uint8_t *image, size_t size)
{
	if (size < MIN_HEADER_BYTES)
		return vmm_fail("not a bzImage: %zu bytes is too short for the setup header "
				"(need at least %d)", size, MIN_HEADER_BYTES);
	if (memcmp(image + HDR_MAGIC, "HdrS", 4))
		return vmm_fail("not a bzImage: no \"HdrS\" magic at offset 0x%x (found 0x%08x)",
				HDR_MAGIC, get32(image + HDR_MAGIC));
	if (get16(image + HDR_BOOT_FLAG) != BOOT_FLAG)
		return vmm_fail("not a bzImage: boot flag at offset 0x%x is 0x%04x, not 0x%04x",
				HDR_BOOT_FLAG, get16(image + HDR_BOOT_FLAG), BOOT_FLAG);
	uint16_t version = get16(image + HDR_VERSION);
	if (version < MIN_VERSION)
		return vmm_fail("kernel boot protocol %u.%02u is too old: need %u.%02u or later "
				"for the 64-bit entry point", version >> 8, version & 0xff,
				MIN_VERSION >> 8, MIN_VERSION & 0xff);
	return 0;
}

/* Splits the image into setup and protected-mode kernel. */
static int split_image(struct bzimage *bz, const uint8_t *image, size_t size)
{
	unsigned sects = image[HDR_SETUP_SECTS] ? image[HDR_SETUP_SECTS] : DEFAULT_SETUP_SECTS;
	size_t setup_size = (size_t)(sects + 1) * SECTOR_SIZE;

	if (setup_size > size)
		return vmm_fail("not a bzImage: setup_sects %u means %zu bytes of setup, "
				"but the file has only %zu", sects, setup_size, size);
	if (setup_size == size)
		return vmm_fail("not a bzImage: no protected-mode kernel after the %zu bytes of setup",
				setup_size);
	bz->setup_sects = (uint8_t)sects;
	bz->setup = image;
	bz->setup_size = setup_size;
	bz->kernel = image + setup_size;
	bz->kernel_size = size - setup_size;
	return 0;
}

/* Reads the fields of a header known to be whole (protocol >= 2.12, the
 * setup being at least 1024 bytes long covers all of them). */
static void read_fields(struct bzimage *bz, const uint8_t *image)
{
	bz->version = get16(image + HDR_VERSION);
	bz->loadflags = image[HDR_LOADFLAGS];
	bz->xloadflags = get16(image + HDR_XLOADFLAGS);
	bz->initrd_addr_max = get32(image + HDR_INITRD_ADDR_MAX);
	bz->kernel_alignment = get32(image + HDR_KERNEL_ALIGNMENT);
	bz->cmdline_size = get32(image + HDR_CMDLINE_SIZE);
	bz->pref_address = get64(image + HDR_PREF_ADDRESS);
	bz->init_size = get32(image + HDR_INIT_SIZE);
}

static int check_bootable(const struct bzimage *bz)
{
	if (!(bz->loadflags & LOADFLAG_LOADED_HIGH))
		return vmm_fail("not a bzImage: loadflags 0x%02x lack LOADED_HIGH (a zImage?)",
				bz->loadflags);
	if (!(bz->xloadflags & XLF_KERNEL_64))
		return vmm_fail("kernel has no 64-bit entry point: xloadflags 0x%04x lack XLF_KERNEL_64",
				bz->xloadflags);
	return 0;
}

int bzimage_parse(struct bzimage *bz, const uint8_t *image, size_t size)
{
	memset(bz, 0, sizeof(*bz));
	if (!image)
		size = 0;
	if (check_signature(image, size) || split_image(bz, image, size))
		return -1;
	read_fields(bz, image);
	return check_bootable(bz);
}
