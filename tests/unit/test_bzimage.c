/* bzimage_parse on synthetic images (and on the host's kernel, if readable). */
#include <glob.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "err.h"
#include "x86_boot.h"

#define KERNEL_BYTES 4096

struct image_spec {
	uint8_t setup_sects;  /* the raw header byte */
	uint16_t version;
	uint8_t loadflags;
	uint16_t xloadflags;
	size_t kernel_bytes;
};

static const struct image_spec good = {
	.setup_sects = 4, .version = 0x020f, .loadflags = 0x01, .xloadflags = 0x0003,
	.kernel_bytes = KERNEL_BYTES,
};

static uint8_t img[64 * 1024];

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }

/* Builds an image into img; returns its size. */
static size_t build(const struct image_spec *s)
{
	unsigned sects = s->setup_sects ? s->setup_sects : 4;
	size_t setup = (sects + 1) * 512u;

	memset(img, 0, sizeof(img));
	img[0x1f1] = s->setup_sects;
	put16(img + 0x1fe, 0xaa55);
	img[0x200] = 0xeb;                  /* jmp to the end of the header */
	img[0x201] = 0x6a;                  /* header ends at 0x26c */
	memcpy(img + 0x202, "HdrS", 4);
	put16(img + 0x206, s->version);
	img[0x211] = s->loadflags;
	put32(img + 0x22c, 0x7fffffff);     /* initrd_addr_max */
	put32(img + 0x230, 0x200000);       /* kernel_alignment */
	put16(img + 0x236, s->xloadflags);
	put32(img + 0x238, 2047);           /* cmdline_size */
	put32(img + 0x258, 0x1000000);      /* pref_address (low half) */
	put32(img + 0x260, 0x800000);       /* init_size */
	memset(img + setup, 0xcc, s->kernel_bytes);
	return setup + s->kernel_bytes;
}

static void expect_failure(size_t size, const char *needle)
{
	struct bzimage bz;
	CHECK_EQ(bzimage_parse(&bz, img, size), -1);
	CHECK_CONTAINS(vmm_error(), needle);
}

static void valid_image(void)
{
	struct bzimage bz;
	size_t size = build(&good);

	CHECK_EQ(bzimage_parse(&bz, img, size), 0);
	CHECK_EQ(bz.version, 0x020f);
	CHECK_EQ(bz.setup_sects, 4);
	CHECK_EQ(bz.loadflags, 0x01);
	CHECK_EQ(bz.xloadflags, 0x0003);
	CHECK_EQ(bz.initrd_addr_max, 0x7fffffff);
	CHECK_EQ(bz.kernel_alignment, 0x200000);
	CHECK_EQ(bz.cmdline_size, 2047);
	CHECK_EQ(bz.pref_address, 0x1000000);
	CHECK_EQ(bz.init_size, 0x800000);
	CHECK(bz.setup == img);
	CHECK_EQ(bz.setup_size, 5 * 512);
	CHECK(bz.kernel == img + 5 * 512);
	CHECK_EQ(bz.kernel_size, KERNEL_BYTES);
}

static void setup_sects_zero_means_four(void)
{
	struct image_spec s = good;
	struct bzimage bz;
	s.setup_sects = 0;
	size_t size = build(&s);

	CHECK_EQ(bzimage_parse(&bz, img, size), 0);
	CHECK_EQ(bz.setup_sects, 4);
	CHECK_EQ(bz.setup_size, 5 * 512);
	CHECK_EQ(bz.kernel_size, KERNEL_BYTES);
}

static void setup_sects_one(void)
{
	struct image_spec s = good;
	struct bzimage bz;
	s.setup_sects = 1;
	size_t size = build(&s);

	CHECK_EQ(bzimage_parse(&bz, img, size), 0);
	CHECK_EQ(bz.setup_size, 1024);
	CHECK(bz.kernel == img + 1024);
}

static void truncated_header(void)
{
	struct bzimage bz;
	build(&good);
	expect_failure(0, "not a bzImage: 0 bytes is too short");
	expect_failure(511, "not a bzImage: 511 bytes is too short");
	expect_failure(0x202, "too short for the setup header");  /* before the magic */
	expect_failure(0x205, "too short for the setup header");  /* inside the magic */
	CHECK_EQ(bzimage_parse(&bz, NULL, 1000), -1);
	CHECK_CONTAINS(vmm_error(), "not a bzImage: 0 bytes");
}

static void setup_past_end(void)
{
	struct image_spec s = good;
	s.setup_sects = 30;                 /* 31 * 512 = 15872 bytes of setup */
	build(&s);
	expect_failure(8192, "not a bzImage: setup_sects 30 means 15872 bytes of setup, "
		       "but the file has only 8192");
	s.setup_sects = 0;                  /* read as 4: 2560 bytes */
	build(&s);
	expect_failure(2559, "setup_sects 4 means 2560 bytes");
}

static void no_protected_mode_part(void)
{
	build(&good);
	expect_failure(5 * 512, "not a bzImage: no protected-mode kernel after the 2560 bytes");
}

static void corrupt_magic(void)
{
	size_t size = build(&good);
	img[0x205] = 'X';
	expect_failure(size, "not a bzImage: no \"HdrS\" magic at offset 0x202");
}

static void corrupt_boot_flag(void)
{
	size_t size = build(&good);
	img[0x1fe] = 0;
	expect_failure(size, "not a bzImage: boot flag at offset 0x1fe is 0xaa00, not 0xaa55");
}

static void old_protocol(void)
{
	struct image_spec s = good;
	s.version = 0x020b;
	size_t size = build(&s);
	expect_failure(size, "boot protocol 2.11 is too old: need 2.12 or later");
}

static void no_64bit_entry(void)
{
	struct image_spec s = good;
	s.xloadflags = 0x0002;
	size_t size = build(&s);
	expect_failure(size, "no 64-bit entry point: xloadflags 0x0002 lack XLF_KERNEL_64");
}

static void not_loaded_high(void)
{
	struct image_spec s = good;
	s.loadflags = 0;
	size_t size = build(&s);
	expect_failure(size, "not a bzImage: loadflags 0x00 lack LOADED_HIGH");
}

static uint8_t *read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	uint8_t *buf = NULL;
	if (fseek(f, 0, SEEK_END) == 0) {
		long len = ftell(f);
		buf = len > 0 ? malloc((size_t)len) : NULL;
		rewind(f);
		if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
			free(buf);
			buf = NULL;
		}
		*size = (size_t)len;
	}
	fclose(f);
	return buf;
}

static void host_kernel(void)
{
	glob_t g;
	size_t size = 0;
	uint8_t *buf = NULL;

	if (glob("/boot/vmlinuz-*", 0, NULL, &g) == 0) {
		buf = read_file(g.gl_pathv[0], &size);
		printf("  parsing %s\n", g.gl_pathv[0]);
	}
	if (!buf) {
		printf("  note: no readable /boot/vmlinuz-*, skipped\n");
		globfree(&g);
		return;
	}
	struct bzimage bz;
	CHECK_EQ(bzimage_parse(&bz, buf, size), 0);
	CHECK(bz.version >= 0x020c);
	CHECK(bz.xloadflags & 0x1);
	CHECK(bz.loadflags & 0x1);
	CHECK(bz.setup_size >= 1024 && bz.setup_size % 512 == 0);
	CHECK_EQ(bz.setup_size + bz.kernel_size, size);
	CHECK(bz.init_size >= bz.kernel_size);
	CHECK(bz.cmdline_size >= 255);
	CHECK(bz.kernel_alignment && !(bz.kernel_alignment & (bz.kernel_alignment - 1)));
	CHECK(bz.initrd_addr_max >= 0x37ffffff);
	free(buf);
	globfree(&g);
}

/* ---- ELF vmlinux ---- */

static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

/* An ELF64 x86-64 executable in img: nload PT_LOAD headers (plus a
 * PT_NOTE) at 64, segment i of 4096 file bytes at offset 4096 * (i + 1),
 * loaded at 16 MiB + 2 MiB * i with memsz 8192; entry at 16 MiB + 0x40.
 * Returns its size. */
static size_t build_elf(unsigned nload)
{
	memset(img, 0, sizeof(img));
	memcpy(img, "\177ELF", 4);
	img[4] = 2; /* 64-bit */
	img[5] = 1; /* little-endian */
	put16(img + 16, 2);  /* ET_EXEC */
	put16(img + 18, 62); /* EM_X86_64 */
	put64(img + 24, 0x1000040);
	put64(img + 32, 64); /* phoff */
	put16(img + 54, 56);
	put16(img + 56, (uint16_t)(nload + 1));
	for (unsigned i = 0; i <= nload; i++) {
		uint8_t *ph = img + 64 + 56 * i;
		if (i == nload) {
			put32(ph, 4); /* PT_NOTE: ignored */
			continue;
		}
		put32(ph, 1);
		put64(ph + 8, 4096ull * (i + 1));
		put64(ph + 24, 0x1000000ull + 0x200000ull * i);
		put64(ph + 32, 4096);
		put64(ph + 40, 8192);
	}
	return 4096 * (nload + 1);
}

static void elf_kernel_segments_and_entry(void)
{
	struct bzimage bz;
	size_t n = build_elf(2);
	CHECK_EQ(kernel_parse(&bz, img, n, n), 0);
	CHECK(bz.elf);
	CHECK_EQ(bz.nsegs, 2);
	CHECK_EQ(bz.entry, 0x1000040);
	CHECK_EQ(bz.segs[1].gpa, 0x1200000);
	CHECK_EQ(bz.segs[1].offset, 8192);
	CHECK(bz.segs[1].data == img + 8192);
	CHECK_EQ(bz.segs[1].memsz, 8192);
	CHECK_EQ(bz.pref_address, 0x1000000);
	CHECK_EQ(bz.init_size, 0x200000 + 8192);
	CHECK(bz.xloadflags & 1);
	/* only the headers read: the segments are known, not their bytes */
	CHECK_EQ(kernel_parse(&bz, img, 512, n), 0);
	CHECK(bz.segs[0].data == NULL);
}

static void elf_kernel_refusals_name_the_problem(void)
{
	struct bzimage bz;
	size_t n = build_elf(1);
	img[4] = 1;
	CHECK(kernel_parse(&bz, img, n, n) < 0);
	CHECK_CONTAINS(vmm_error(), "not 64-bit little-endian");
	n = build_elf(1);
	put16(img + 18, 3); /* EM_386 */
	CHECK(kernel_parse(&bz, img, n, n) < 0);
	CHECK_CONTAINS(vmm_error(), "not an x86-64 executable");
	n = build_elf(1);
	CHECK(kernel_parse(&bz, img, 512, n - 1) < 0); /* the file ends inside the segment */
	CHECK_CONTAINS(vmm_error(), "runs past the file's");
	n = build_elf(1);
	put64(img + 64 + 24, 0x9000); /* over the page tables */
	CHECK(kernel_parse(&bz, img, n, n) < 0);
	CHECK_CONTAINS(vmm_error(), "is not between 1 MiB and 4 GiB");
	n = build_elf(1);
	put64(img + 64 + 24, UINT64_MAX - 100); /* wraps */
	CHECK(kernel_parse(&bz, img, n, n) < 0);
	n = build_elf(1);
	put64(img + 64 + 32, 9000); /* filesz > memsz */
	CHECK(kernel_parse(&bz, img, n + 8192, n + 8192) < 0);
	CHECK_CONTAINS(vmm_error(), "more file bytes");
	n = build_elf(1);
	put64(img + 24, 0x5000000);
	CHECK(kernel_parse(&bz, img, n, n) < 0);
	CHECK_CONTAINS(vmm_error(), "entry point 0x5000000 is in no loaded segment");
	n = build_elf(1);
	put16(img + 56, 60000); /* program headers past what was read */
	CHECK(kernel_parse(&bz, img, n, n) < 0);
	CHECK_CONTAINS(vmm_error(), "run past the");
	n = build_elf(X86_ELF_MAX_SEGMENTS + 1);
	CHECK(kernel_parse(&bz, img, n, n) < 0);
	CHECK_CONTAINS(vmm_error(), "more than 16 loadable segments");
	n = build_elf(0);
	CHECK(kernel_parse(&bz, img, n, n) < 0);
	CHECK_CONTAINS(vmm_error(), "no loadable segment");
	CHECK(kernel_parse(&bz, img, 10, 10) < 0); /* ELF magic, then nothing */
	CHECK_CONTAINS(vmm_error(), "no ELF header");
}

int main(void)
{
	RUN(valid_image);
	RUN(setup_sects_zero_means_four);
	RUN(setup_sects_one);
	RUN(truncated_header);
	RUN(setup_past_end);
	RUN(no_protected_mode_part);
	RUN(corrupt_magic);
	RUN(corrupt_boot_flag);
	RUN(old_protocol);
	RUN(no_64bit_entry);
	RUN(not_loaded_high);
	RUN(host_kernel);
	RUN(elf_kernel_segments_and_entry);
	RUN(elf_kernel_refusals_name_the_problem);
	return CHECK_DONE();
}
