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

/* ---- ELF vmlinux ---- */

#define ELF_PHDR_SIZE 56
#define PT_LOAD 1
#define ELF_MIN_GPA 0x100000ull /* below: boot_params, page tables, cmdline */
#define ELF_MAX_END (1ull << 32)

static int elf_segments(struct bzimage *bz, const uint8_t *image, size_t avail, size_t size)
{
	uint64_t phoff = get64(image + 32);
	uint16_t phentsize = get16(image + 54), phnum = get16(image + 56);
	if (phentsize != ELF_PHDR_SIZE)
		return vmm_fail("ELF kernel: program header entries of %u bytes, not %d", phentsize, ELF_PHDR_SIZE);
	if (phoff > avail || (uint64_t)phnum * ELF_PHDR_SIZE > avail - phoff)
		return vmm_fail("ELF kernel: %u program headers at 0x%llx run past the %zu bytes read", phnum,
				(unsigned long long)phoff, avail);
	uint64_t lo = UINT64_MAX, hi = 0;
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *ph = image + phoff + (size_t)i * ELF_PHDR_SIZE;
		if (get32(ph) != PT_LOAD)
			continue;
		uint64_t off = get64(ph + 8), paddr = get64(ph + 24), filesz = get64(ph + 32), memsz = get64(ph + 40);
		if (bz->nsegs == X86_ELF_MAX_SEGMENTS)
			return vmm_fail("ELF kernel: more than %d loadable segments", X86_ELF_MAX_SEGMENTS);
		if (off > size || filesz > size - off)
			return vmm_fail("ELF kernel: segment %u (0x%llx bytes at offset 0x%llx) runs past the "
					"file's %zu bytes", i, (unsigned long long)filesz, (unsigned long long)off, size);
		if (filesz > memsz)
			return vmm_fail("ELF kernel: segment %u has more file bytes (0x%llx) than memory (0x%llx)", i,
					(unsigned long long)filesz, (unsigned long long)memsz);
		if (paddr < ELF_MIN_GPA || paddr > ELF_MAX_END || memsz > ELF_MAX_END - paddr)
			return vmm_fail("ELF kernel: segment %u at 0x%llx (0x%llx bytes) is not between 1 MiB and 4 GiB",
					i, (unsigned long long)paddr, (unsigned long long)memsz);
		bz->segs[bz->nsegs++] = (struct kernel_segment){
			.gpa = paddr, .offset = off, .data = avail == size ? image + off : NULL, .filesz = filesz,
			.memsz = memsz
		};
		if (paddr < lo)
			lo = paddr;
		if (paddr + memsz > hi)
			hi = paddr + memsz;
	}
	if (!bz->nsegs)
		return vmm_fail("ELF kernel: no loadable segment");
	int in = 0;
	for (unsigned i = 0; i < bz->nsegs; i++)
		in |= bz->entry >= bz->segs[i].gpa && bz->entry - bz->segs[i].gpa < bz->segs[i].filesz;
	if (!in)
		return vmm_fail("ELF kernel: the entry point 0x%llx is in no loaded segment",
				(unsigned long long)bz->entry);
	bz->pref_address = lo;
	bz->init_size = (uint32_t)(hi - lo);
	return 0;
}

int elf_kernel_parse(struct bzimage *bz, const uint8_t *image, size_t avail, size_t size)
{
	memset(bz, 0, sizeof(*bz));
	if (!image || avail > size)
		avail = 0;
	if (avail < 64 || memcmp(image, "\177ELF", 4))
		return vmm_fail("not an ELF kernel: no ELF header");
	if (image[4] != 2 || image[5] != 1)
		return vmm_fail("ELF kernel: not 64-bit little-endian (class %u, data %u)", image[4], image[5]);
	if (get16(image + 16) != 2 || get16(image + 18) != 62)
		return vmm_fail("ELF kernel: not an x86-64 executable (type %u, machine %u)", get16(image + 16),
				get16(image + 18));
	bz->elf = 1;
	bz->entry = get64(image + 24);
	if (elf_segments(bz, image, avail, size))
		return -1;
	/* what the 64-bit boot protocol's setup header would say */
	bz->version = 0x020f;
	bz->loadflags = LOADFLAG_LOADED_HIGH;
	bz->xloadflags = XLF_KERNEL_64;
	bz->initrd_addr_max = 0x7fffffff;
	bz->kernel_alignment = 0x200000;
	bz->cmdline_size = 2047; /* COMMAND_LINE_SIZE - 1 on x86 */
	return 0;
}

int kernel_parse(struct bzimage *bz, const uint8_t *image, size_t avail, size_t size)
{
	if (image && avail >= 4 && memcmp(image, "\177ELF", 4) == 0)
		return elf_kernel_parse(bz, image, avail, size);
	return bzimage_parse(bz, image, avail);
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
