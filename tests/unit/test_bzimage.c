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
	return CHECK_DONE();
}
