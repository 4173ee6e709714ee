/* x86_boot_load into a 64 MiB buffer playing guest RAM, then every structure
 * read back at its documented offset; and the register state. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "err.h"
#include "x86_boot.h"

#define MiB (1ull << 20)
#define MEM_SIZE (64 * MiB)
#define SETUP_BYTES (5 * 512)
#define KERNEL_BYTES 8192

struct kernel_spec {
	uint32_t init_size;
	uint32_t pref_address;    /* where it decompresses if loaded below */
	uint32_t cmdline_size;
	uint32_t initrd_addr_max;
};

static const struct kernel_spec std_kernel = {
	.init_size = 16 * MiB, .pref_address = 16 * MiB, .cmdline_size = 255, .initrd_addr_max = 0x7fffffff,
};

static uint8_t image[SETUP_BYTES + KERNEL_BYTES];
static struct bzimage bz;
static uint8_t *ram;
static struct guest_mem mem;

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { return get16(p) | (uint32_t)get16(p + 2) << 16; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

/* A protocol 2.15 bzImage with 4 setup sectors, parsed into bz. */
static void make_kernel(const struct kernel_spec *k)
{
	memset(image, 0, sizeof(image));
	image[0x1f1] = 4;
	put16(image + 0x1fe, 0xaa55);
	image[0x200] = 0xeb;
	image[0x201] = 0x6a;             /* header ends at 0x26c */
	memcpy(image + 0x202, "HdrS", 4);
	put16(image + 0x206, 0x020f);
	image[0x211] = 0x01;             /* LOADED_HIGH */
	put32(image + 0x22c, k->initrd_addr_max);
	put32(image + 0x230, 0x200000);
	put16(image + 0x236, 0x0003);    /* XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G */
	put32(image + 0x238, k->cmdline_size);
	put32(image + 0x258, k->pref_address);
	put32(image + 0x260, k->init_size);
	memset(image + 0x26c, 0x55, 0x20); /* past the header: must not be copied */
	for (size_t i = 0; i < KERNEL_BYTES; i++)
		image[SETUP_BYTES + i] = (uint8_t)(i * 7 + 1);
	if (bzimage_parse(&bz, image, sizeof(image)))
		fprintf(stderr, "  make_kernel: %s\n", vmm_error());
}

static void setup_ram(void)
{
	ram = calloc(1, MEM_SIZE);
	CHECK(ram != NULL);
	CHECK_EQ(guest_mem_wrap(&mem, ram, MEM_SIZE), 0);
}

static int load(const char *cmdline, const uint8_t *initrd, size_t initrd_size,
		struct x86_boot_info *info)
{
	struct x86_boot_config cfg = {
		.kernel = &bz, .initrd = initrd, .initrd_size = initrd_size,
		.cmdline = cmdline, .ncpus = 2,
	};
	return x86_boot_load(&mem, &cfg, info);
}

static int all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return 0;
	return 1;
}

static void check_setup_header(const uint8_t *bp)
{
	CHECK_EQ(bp[0x1f1], 4);                   /* setup_sects */
	CHECK_EQ(get16(bp + 0x1fe), 0xaa55);
	CHECK(memcmp(bp + 0x202, "HdrS", 4) == 0);
	CHECK_EQ(get16(bp + 0x206), 0x020f);
	CHECK_EQ(get32(bp + 0x260), 16 * MiB);    /* init_size */
	CHECK_EQ(get16(bp + 0x236), 0x0003);
	CHECK_EQ(bp[0x1ef], 0);                   /* sentinel */
	CHECK(all_zero(bp + 0x26c, 0x290 - 0x26c)); /* header copy stopped at its end */
	CHECK_EQ(bp[0x210], 0xff);                /* type_of_loader */
	CHECK_EQ(bp[0x211], 0x81);                /* LOADED_HIGH | CAN_USE_HEAP */
	CHECK_EQ(get16(bp + 0x224), 0xfe00);      /* heap_end_ptr */
	CHECK_EQ(get16(bp + 0x1fa), 0xffff);      /* vid_mode */
	CHECK_EQ(get32(bp + 0x228), X86_CMDLINE_GPA);
	CHECK_EQ(get32(bp + 0x0c8), 0);           /* ext_cmd_line_ptr */
}

static void check_e820(const uint8_t *bp)
{
	struct e820_entry want[8];
	size_t n = e820_build(&mem, want, 8);
	CHECK_EQ(n, 3);
	CHECK_EQ(bp[0x1e8], n);
	for (size_t i = 0; i < n; i++) {
		const uint8_t *e = bp + 0x2d0 + 20 * i;
		CHECK_EQ(get64(e), want[i].addr);
		CHECK_EQ(get64(e + 8), want[i].size);
		CHECK_EQ(get32(e + 16), want[i].type);
	}
	CHECK_EQ(get64(bp + 0x2d0 + 40), MiB);
	CHECK_EQ(get64(bp + 0x2d0 + 48), MEM_SIZE - MiB);
	CHECK(all_zero(bp + 0x2d0 + 20 * n, 20));
}

static void check_page_tables(void)
{
	const uint8_t *pml4 = ram + X86_PML4_GPA, *pdpt = pml4 + 0x1000, *pd = pdpt + 0x1000;
	CHECK_EQ(get64(pml4), X86_PML4_GPA + 0x1000 + 3);
	CHECK(all_zero(pml4 + 8, 0x1000 - 8));
	for (unsigned i = 0; i < 4; i++)
		CHECK_EQ(get64(pdpt + 8 * i), X86_PML4_GPA + 0x2000 + 0x1000 * i + 3);
	CHECK(all_zero(pdpt + 32, 0x1000 - 32));
	CHECK_EQ(get64(pd), 0x83);
	CHECK_EQ(get64(pd + 8), 0x200083);
	CHECK_EQ(get64(pd + 0x1000), 0x40000083);       /* second PD starts at 1 GiB */
	CHECK_EQ(get64(pd + 4 * 0x1000 - 8), 0xffe00083); /* last 2 MiB below 4 GiB */
}

static void check_gdt(void)
{
	const uint8_t *gdt = ram + X86_GDT_GPA;
	CHECK_EQ(get64(gdt), 0);
	CHECK_EQ(get64(gdt + 8), 0);
	CHECK_EQ(get64(gdt + X86_BOOT_CS), 0x00af9b000000ffffull);
	CHECK_EQ(get64(gdt + X86_BOOT_DS), 0x00cf93000000ffffull);
	CHECK_EQ((get64(gdt + X86_BOOT_TR) >> 40) & 0x9f, 0x8b); /* present busy 64-bit TSS */
	CHECK_EQ(get64(gdt + X86_BOOT_TR + 8), 0);
}

static void full_layout(void)
{
	static uint8_t initrd[5000];
	const char *cmdline = "console=ttyS0 reboot=k panic=1";
	struct x86_boot_info info;
	memset(initrd, 0xab, sizeof(initrd));
	make_kernel(&std_kernel);
	setup_ram();

	CHECK_EQ(load(cmdline, initrd, sizeof(initrd), &info), 0);
	CHECK_EQ(info.entry, X86_KERNEL_GPA + 0x200);
	CHECK_EQ(info.boot_params, X86_BOOT_PARAMS_GPA);
	CHECK_EQ(info.initrd_gpa, (MEM_SIZE - sizeof(initrd)) & ~0xfffull);
	CHECK(memcmp(ram + X86_KERNEL_GPA, image + SETUP_BYTES, KERNEL_BYTES) == 0);
	CHECK(memcmp(ram + X86_CMDLINE_GPA, cmdline, strlen(cmdline) + 1) == 0);
	CHECK(memcmp(ram + info.initrd_gpa, initrd, sizeof(initrd)) == 0);

	const uint8_t *bp = ram + X86_BOOT_PARAMS_GPA;
	check_setup_header(bp);
	CHECK_EQ(get32(bp + 0x218), info.initrd_gpa);
	CHECK_EQ(get32(bp + 0x21c), sizeof(initrd));
	CHECK_EQ(get32(bp + 0x0c0), 0);
	CHECK_EQ(get32(bp + 0x0c4), 0);
	check_e820(bp);
	check_page_tables();
	check_gdt();
	CHECK(memcmp(ram + X86_MPTABLE_GPA, "_MP_", 4) == 0);
	free(ram);
}

static void no_initrd(void)
{
	struct x86_boot_info info;
	make_kernel(&std_kernel);
	setup_ram();

	CHECK_EQ(load(NULL, NULL, 0, &info), 0);
	CHECK_EQ(info.initrd_gpa, 0);
	CHECK_EQ(get32(ram + X86_BOOT_PARAMS_GPA + 0x218), 0);
	CHECK_EQ(get32(ram + X86_BOOT_PARAMS_GPA + 0x21c), 0);
	CHECK_EQ(ram[X86_CMDLINE_GPA], 0);
	free(ram);
}

static void initrd_below_addr_max(void)
{
	static uint8_t initrd[5000];
	struct kernel_spec k = std_kernel;
	struct x86_boot_info info;
	k.initrd_addr_max = 48 * MiB - 1;
	make_kernel(&k);
	setup_ram();

	CHECK_EQ(load("", initrd, sizeof(initrd), &info), 0);
	CHECK_EQ(info.initrd_gpa, 0x2ffe000);
	CHECK(info.initrd_gpa + sizeof(initrd) <= 48 * MiB);
	CHECK_EQ(info.initrd_gpa % 4096, 0);
	free(ram);
}

static void initrd_exact_fit(void)
{
	size_t room = MEM_SIZE - 32 * MiB; /* the kernel runs in [16 MiB, 32 MiB) */
	uint8_t *initrd = calloc(1, room + 1);
	struct x86_boot_info info;
	make_kernel(&std_kernel);
	setup_ram();

	CHECK_EQ(load("", initrd, room, &info), 0);
	CHECK_EQ(info.initrd_gpa, 32 * MiB);
	CHECK_EQ(load("", initrd, room + 1, &info), -1);
	CHECK_CONTAINS(vmm_error(), "does not fit");
	free(initrd);
	free(ram);
}

static void cmdline_too_long(void)
{
	struct kernel_spec k = std_kernel;
	struct x86_boot_info info;
	k.cmdline_size = 16;
	make_kernel(&k);
	setup_ram();

	CHECK_EQ(load("0123456789abcdef", NULL, 0, &info), 0); /* exactly 16: fits */
	CHECK_EQ(load("0123456789abcdefX", NULL, 0, &info), -1);
	CHECK_CONTAINS(vmm_error(), "command line is 17 bytes, longer than the limit of 16 bytes "
		       "(kernel cmdline_size 16)");
	free(ram);
}

static void cmdline_longer_than_buffer(void)
{
	struct kernel_spec k = std_kernel;
	struct x86_boot_info info;
	char *cmdline = malloc(X86_CMDLINE_MAX + 1);
	k.cmdline_size = 0xffffffff;
	make_kernel(&k);
	setup_ram();
	memset(cmdline, 'x', X86_CMDLINE_MAX);
	cmdline[X86_CMDLINE_MAX] = 0;

	CHECK_EQ(load(cmdline, NULL, 0, &info), -1);
	CHECK_CONTAINS(vmm_error(), "command line is 65536 bytes, longer than the limit of 65535");
	cmdline[X86_CMDLINE_MAX - 1] = 0;
	CHECK_EQ(load(cmdline, NULL, 0, &info), 0);
	CHECK_EQ(ram[X86_CMDLINE_GPA + X86_CMDLINE_MAX - 1], 0);
	free(cmdline);
	free(ram);
}

static void initrd_too_big(void)
{
	size_t size = 60 * MiB;
	uint8_t *initrd = calloc(1, size);
	struct x86_boot_info info;
	make_kernel(&std_kernel);
	setup_ram();

	CHECK_EQ(load("", initrd, size, &info), -1);
	CHECK_CONTAINS(vmm_error(), "initrd of 62914560 bytes does not fit between the end of "
		       "the kernel (0x2000000) and 0x4000000");
	CHECK(all_zero(ram, MEM_SIZE)); /* nothing written */
	free(initrd);
	free(ram);
}

static void memory_too_small(void)
{
	struct kernel_spec k = std_kernel;
	struct x86_boot_info info;
	k.init_size = MEM_SIZE;
	make_kernel(&k);
	setup_ram();

	CHECK_EQ(load("", NULL, 0, &info), -1);
	CHECK_CONTAINS(vmm_error(), "guest memory too small for the kernel: it needs 0x4000000 "
		       "bytes (init_size) from 0x1000000, where it decompresses, but low RAM "
		       "ends at 0x4000000");
	CHECK(all_zero(ram, MEM_SIZE));
	/* 1 MiB + 50 MiB would fit, but it runs from pref_address (16 MiB) */
	k.init_size = 50 * MiB;
	make_kernel(&k);
	CHECK_EQ(load("", NULL, 0, &info), -1);
	CHECK_CONTAINS(vmm_error(), "it needs 0x3200000 bytes (init_size) from 0x1000000");
	free(ram);
}

/* pref_address below the load address: it runs at 1 MiB rounded up to
 * kernel_alignment (2 MiB). */
static void low_pref_address(void)
{
	static uint8_t initrd[4096];
	struct kernel_spec k = std_kernel;
	struct x86_boot_info info;
	k.pref_address = 0;
	k.init_size = 62 * MiB;
	make_kernel(&k);
	setup_ram();

	CHECK_EQ(load("", initrd, sizeof(initrd), &info), -1);
	CHECK_CONTAINS(vmm_error(), "initrd of 4096 bytes does not fit between the end of "
		       "the kernel (0x4000000)");
	CHECK_EQ(load("", NULL, 0, &info), 0);
	k.init_size = 62 * MiB + 1;
	make_kernel(&k);
	CHECK_EQ(load("", NULL, 0, &info), -1);
	CHECK_CONTAINS(vmm_error(), "it needs 0x3e00001 bytes (init_size) from 0x200000");
	free(ram);
}

static void bad_cpu_count(void)
{
	struct x86_boot_info info;
	struct x86_boot_config cfg = { .kernel = &bz, .cmdline = "", .ncpus = 0 };
	make_kernel(&std_kernel);
	setup_ram();

	CHECK_EQ(x86_boot_load(&mem, &cfg, &info), -1);
	CHECK_CONTAINS(vmm_error(), "0 CPUs");
	free(ram);
}

static void check_flat(const struct kvm_segment *s, uint16_t selector, uint8_t type)
{
	CHECK_EQ(s->base, 0);
	CHECK_EQ(s->limit, 0xffffffff);
	CHECK_EQ(s->selector, selector);
	CHECK_EQ(s->type, type);
	CHECK_EQ(s->present, 1);
	CHECK_EQ(s->s, 1);
	CHECK_EQ(s->dpl, 0);
	CHECK_EQ(s->g, 1);
}

static void registers(void)
{
	struct x86_boot_info info = { .entry = 0x100200, .boot_params = 0x7000 };
	struct kvm_regs regs;
	memset(&regs, 0x5a, sizeof(regs));
	x86_boot_regs(&regs, &info);
	CHECK_EQ(regs.rip, 0x100200);
	CHECK_EQ(regs.rsi, 0x7000);
	CHECK_EQ(regs.rflags, 2);
	CHECK_EQ(regs.rsp, X86_BOOT_STACK_GPA);
	CHECK_EQ(regs.rax, 0);
	CHECK_EQ(regs.rdi, 0);

	struct kvm_sregs sregs = { .cr0 = 0x60000010, .apic_base = 0xfee00900 };
	sregs.idt.limit = 0xffff;
	x86_boot_sregs(&sregs);
	CHECK_EQ(sregs.cr0, 0x80000011);
	CHECK_EQ(sregs.cr3, X86_PML4_GPA);
	CHECK_EQ(sregs.cr4, 0x20);
	CHECK_EQ(sregs.efer, 0x500);
	CHECK_EQ(sregs.gdt.base, X86_GDT_GPA);
	CHECK_EQ(sregs.gdt.limit, 6 * 8 - 1);
	CHECK_EQ(sregs.apic_base, 0xfee00900); /* untouched */
	CHECK_EQ(sregs.idt.limit, 0xffff);
	check_flat(&sregs.cs, X86_BOOT_CS, 0xb);
	CHECK_EQ(sregs.cs.l, 1);
	CHECK_EQ(sregs.cs.db, 0);
	const struct kvm_segment *data[] = { &sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss };
	for (size_t i = 0; i < 5; i++) {
		check_flat(data[i], X86_BOOT_DS, 0x3);
		CHECK_EQ(data[i]->db, 1);
		CHECK_EQ(data[i]->l, 0);
	}
	CHECK_EQ(sregs.tr.selector, X86_BOOT_TR);
	CHECK_EQ(sregs.tr.type, 0xb);
	CHECK_EQ(sregs.tr.s, 0);
	CHECK_EQ(sregs.tr.present, 1);
	CHECK_EQ(sregs.tr.limit, 0x67);
}

int main(void)
{
	RUN(full_layout);
	RUN(no_initrd);
	RUN(initrd_below_addr_max);
	RUN(initrd_exact_fit);
	RUN(cmdline_too_long);
	RUN(cmdline_longer_than_buffer);
	RUN(initrd_too_big);
	RUN(memory_too_small);
	RUN(low_pref_address);
	RUN(bad_cpu_count);
	RUN(registers);
	return CHECK_DONE();
}
