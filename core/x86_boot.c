/* The 64-bit Linux boot protocol (Documentation/arch/x86/boot.rst): guest
 * memory layout and the register state at the kernel's 64-bit entry point.
 * First every placement is planned and checked, then everything is written,
 * so a configuration that does not fit leaves guest memory untouched. */
#include "x86_boot.h"

#include <string.h>

#include "err.h"

/* boot_params ("zero page") offsets, arch/x86/include/uapi/asm/bootparam.h.
 * The setup header sits at the same offsets as in the bzImage file. */
#define BP_SIZE              0x1000
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES      0x1e8
#define BP_HDR               0x1f1 /* struct setup_header */
#define BP_VID_MODE          0x1fa
#define BP_JUMP_OFFSET       0x201 /* the header ends at 0x202 + this byte */
#define BP_HDR_JUMP_BASE     0x202
#define BP_HDR_MAX_END       0x290 /* room boot_params leaves for the header */
#define BP_TYPE_OF_LOADER    0x210
#define BP_LOADFLAGS         0x211
#define BP_RAMDISK_IMAGE     0x218
#define BP_RAMDISK_SIZE      0x21c
#define BP_HEAP_END_PTR      0x224
#define BP_CMD_LINE_PTR      0x228
#define BP_HDR_BOOT_FLAG     0x1fe
#define BP_HDR_MAGIC         0x202
#define BP_HDR_VERSION       0x206
#define BP_HDR_KERNEL_ALIGNMENT 0x230
#define BP_HDR_XLOADFLAGS    0x236
#define BP_HDR_CMDLINE_SIZE  0x238
#define BP_E820_TABLE        0x2d0
#define BP_E820_MAX          128

#define LOADER_UNDEFINED 0xff   /* type_of_loader: no assigned id */
#define LOADED_HIGH      0x01
#define CAN_USE_HEAP     0x80
#define HEAP_END         0xfe00 /* end of the setup heap, minus 0x200 */
#define VID_MODE_NORMAL  0xffff

#define ENTRY_64_OFFSET 0x200   /* startup_64, from the kernel load address */

#define PAGE_SIZE  0x1000ull
#define HUGE_PAGE  0x200000ull  /* 2 MiB */
#define PT_ENTRIES 512
#define PT_PDS     4            /* page directories: 4 x 1 GiB */
#define PT_PAGES   (2 + PT_PDS) /* PML4, PDPT, the PDs */
#define PTE_PRESENT  0x001ull
#define PTE_WRITABLE 0x002ull
#define PTE_HUGE     0x080ull

/* GDT: null, null, code (X86_BOOT_CS), data (X86_BOOT_DS), then the 16-byte
 * 64-bit TSS descriptor (X86_BOOT_TR) that KVM wants TR to match. */
#define GDT_CODE64 0x00af9b000000ffffull /* base 0, limit 4G, L, DPL 0, execute/read */
#define GDT_DATA   0x00cf93000000ffffull /* base 0, limit 4G, D/B, read/write */
#define GDT_TSS64  0x00008b0000000067ull /* base 0, limit 0x67, busy 64-bit TSS */
static const uint64_t boot_gdt[] = { 0, 0, GDT_CODE64, GDT_DATA, GDT_TSS64, 0 };

#define CR0_PE   0x00000001ull
#define CR0_ET   0x00000010ull
#define CR0_NW   0x20000000ull
#define CR0_CD   0x40000000ull
#define CR0_PG   0x80000000ull
#define CR4_PAE  0x00000020ull
#define EFER_LME 0x00000100ull
#define EFER_LMA 0x00000400ull
#define RFLAGS_RESERVED 0x2ull

_Static_assert(sizeof(struct e820_entry) == 20, "boot_params e820 entries are 20 bytes");
_Static_assert(X86_PML4_GPA + PT_PAGES * PAGE_SIZE <= X86_CMDLINE_GPA, "page tables overlap");

/* Where everything goes, decided before anything is written. */
struct boot_plan {
	uint64_t kernel_end;  /* end of all the kernel uses (page-aligned) */
	size_t cmdline_len;
	uint64_t initrd_gpa;  /* 0: no initrd */
	size_t initrd_size;
};

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t align_down(uint64_t v, uint64_t a)
{
	return v & ~(a - 1);
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return align_down(v + a - 1, a);
}

/* Where the kernel decompresses and runs: a 64-bit bzImage loaded below its
 * pref_address (LOAD_PHYSICAL_ADDR) moves there; a relocatable one loaded
 * above it runs at its load address rounded up to kernel_alignment. From
 * there it needs init_size bytes (the compressed image is copied to the end
 * of that range before decompression). */
static uint64_t kernel_run_start(const struct bzimage *bz)
{
	uint64_t align = bz->kernel_alignment ? bz->kernel_alignment : 1;
	uint64_t start = (X86_KERNEL_GPA + align - 1) / align * align;

	return start > bz->pref_address ? start : bz->pref_address;
}

/* A vmlinux runs where it is loaded: its segments must lie in low RAM. */
static int plan_elf_kernel(const struct guest_mem *m, const struct bzimage *bz, int loaded, struct boot_plan *p)
{
	uint64_t low_end = guest_mem_low_end(m), end = 0;
	for (unsigned i = 0; i < bz->nsegs; i++) {
		const struct kernel_segment *s = &bz->segs[i];
		if (!s->data && s->filesz && !loaded)
			return vmm_fail("ELF kernel: segment %u was not read", i);
		if (s->gpa > low_end || s->memsz > low_end - s->gpa)
			return vmm_fail("guest memory too small for the kernel: its segment at 0x%llx needs 0x%llx "
					"bytes, but low RAM ends at 0x%llx", (unsigned long long)s->gpa,
					(unsigned long long)s->memsz, (unsigned long long)low_end);
		if (s->gpa + s->memsz > end)
			end = s->gpa + s->memsz;
	}
	p->kernel_end = align_up(end, PAGE_SIZE);
	return 0;
}

static int plan_kernel(const struct guest_mem *m, const struct bzimage *bz, int loaded, struct boot_plan *p)
{
	if (bz->elf)
		return plan_elf_kernel(m, bz, loaded, p);
	uint64_t run = kernel_run_start(bz);
	uint64_t low_end = guest_mem_low_end(m);

	if (X86_KERNEL_GPA + bz->kernel_size > low_end || run > low_end ||
	    bz->init_size > low_end - run)
		return vmm_fail("guest memory too small for the kernel: it needs 0x%x bytes "
				"(init_size) from 0x%llx, where it decompresses, but low RAM "
				"ends at 0x%llx", bz->init_size, (unsigned long long)run,
				(unsigned long long)low_end);
	uint64_t end = run + bz->init_size;
	if (end < X86_KERNEL_GPA + bz->kernel_size)
		end = X86_KERNEL_GPA + bz->kernel_size;
	p->kernel_end = align_up(end, PAGE_SIZE);
	return 0;
}

static int plan_cmdline(const struct bzimage *bz, const char *cmdline, struct boot_plan *p)
{
	uint64_t limit = bz->cmdline_size < X86_CMDLINE_MAX - 1 ? bz->cmdline_size
								: X86_CMDLINE_MAX - 1;
	size_t len = strlen(cmdline ? cmdline : "");

	if (len > limit)
		return vmm_fail("command line is %zu bytes, longer than the limit of %llu bytes "
				"(kernel cmdline_size %u)", len, (unsigned long long)limit,
				bz->cmdline_size);
	p->cmdline_len = len;
	return 0;
}

/* The highest page-aligned place ending at or below both initrd_addr_max+1
 * and the end of low RAM, above the kernel. */
static int plan_initrd(const struct guest_mem *m, const struct x86_boot_config *cfg,
		       struct boot_plan *p)
{
	uint64_t top = (uint64_t)cfg->kernel->initrd_addr_max + 1;
	uint64_t size = cfg->initrd_size;

	p->initrd_gpa = 0;
	p->initrd_size = 0;
	if (!cfg->initrd || !size)
		return 0;
	if (guest_mem_low_end(m) < top)
		top = guest_mem_low_end(m);
	if (size > top || align_down(top - size, PAGE_SIZE) < p->kernel_end)
		return vmm_fail("initrd of %llu bytes does not fit between the end of the kernel "
				"(0x%llx) and 0x%llx (the lower of initrd_addr_max+1 and the end "
				"of low RAM): %llu bytes free", (unsigned long long)size,
				(unsigned long long)p->kernel_end, (unsigned long long)top,
				(unsigned long long)(top > p->kernel_end ? top - p->kernel_end : 0));
	p->initrd_gpa = align_down(top - size, PAGE_SIZE);
	p->initrd_size = cfg->initrd_size;
	return 0;
}

static int plan_boot(const struct guest_mem *m, const struct x86_boot_config *cfg,
		     struct boot_plan *p)
{
	if (!cfg->kernel)
		return vmm_fail("boot: no kernel");
	if (cfg->ncpus < 1 || cfg->ncpus > X86_MAX_VCPUS)
		return vmm_fail("boot: %u CPUs, must be 1 to %d", cfg->ncpus, X86_MAX_VCPUS);
	if (plan_kernel(m, cfg->kernel, cfg->segments_loaded, p) || plan_cmdline(cfg->kernel, cfg->cmdline, p))
		return -1;
	return plan_initrd(m, cfg, p);
}

/* The kernel's setup header, copied from the image: 0x1f1 up to
 * 0x202 + the byte at 0x201. */
static void copy_setup_header(uint8_t *bp, const struct bzimage *bz)
{
	if (bz->elf) { /* no setup to copy: the fields the kernel reads */
		put16(bp + BP_HDR_BOOT_FLAG, 0xaa55);
		memcpy(bp + BP_HDR_MAGIC, "HdrS", 4);
		put16(bp + BP_HDR_VERSION, bz->version);
		bp[BP_LOADFLAGS] = bz->loadflags;
		put32(bp + BP_HDR_KERNEL_ALIGNMENT, bz->kernel_alignment);
		put32(bp + BP_HDR_CMDLINE_SIZE, bz->cmdline_size);
		put16(bp + BP_HDR_XLOADFLAGS, bz->xloadflags);
		return;
	}
	size_t end = BP_HDR_JUMP_BASE + bz->setup[BP_JUMP_OFFSET];

	if (end > BP_HDR_MAX_END)
		end = BP_HDR_MAX_END;
	if (end > bz->setup_size)
		end = bz->setup_size;
	memcpy(bp + BP_HDR, bz->setup + BP_HDR, end - BP_HDR);
}

static void set_loader_fields(uint8_t *bp, const struct boot_plan *p)
{
	bp[BP_TYPE_OF_LOADER] = LOADER_UNDEFINED;
	bp[BP_LOADFLAGS] |= LOADED_HIGH | CAN_USE_HEAP;
	put16(bp + BP_HEAP_END_PTR, HEAP_END);
	put16(bp + BP_VID_MODE, VID_MODE_NORMAL);
	put32(bp + BP_CMD_LINE_PTR, (uint32_t)X86_CMDLINE_GPA);
	put32(bp + BP_EXT_CMD_LINE_PTR, (uint32_t)(X86_CMDLINE_GPA >> 32));
	put32(bp + BP_RAMDISK_IMAGE, (uint32_t)p->initrd_gpa);
	put32(bp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(p->initrd_gpa >> 32));
	put32(bp + BP_RAMDISK_SIZE, (uint32_t)p->initrd_size);
	put32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)((uint64_t)p->initrd_size >> 32));
}

static void set_e820(uint8_t *bp, const struct guest_mem *m)
{
	struct e820_entry map[BP_E820_MAX];
	size_t n = e820_build(m, map, BP_E820_MAX);

	bp[BP_E820_ENTRIES] = (uint8_t)n;
	memcpy(bp + BP_E820_TABLE, map, n * sizeof(map[0]));
}

static int write_boot_params(const struct guest_mem *m, const struct bzimage *bz,
			     const struct boot_plan *p)
{
	uint8_t bp[BP_SIZE] = { 0 };

	copy_setup_header(bp, bz);
	set_loader_fields(bp, p);
	set_e820(bp, m);
	return guest_mem_write(m, X86_BOOT_PARAMS_GPA, bp, sizeof(bp));
}

/* PML4 -> PDPT -> 4 PDs of 2 MiB pages: virtual = physical for 0..4 GiB. */
static int write_page_tables(const struct guest_mem *m)
{
	uint8_t *pt = guest_mem_ptr(m, X86_PML4_GPA, PT_PAGES * PAGE_SIZE);
	uint64_t pdpt = X86_PML4_GPA + PAGE_SIZE, pd = pdpt + PAGE_SIZE;

	if (!pt)
		return vmm_fail("page tables at 0x%llx: not in guest RAM", X86_PML4_GPA);
	memset(pt, 0, PT_PAGES * PAGE_SIZE);
	put64(pt, pdpt | PTE_PRESENT | PTE_WRITABLE);
	for (unsigned i = 0; i < PT_PDS; i++)
		put64(pt + PAGE_SIZE + 8 * i, (pd + i * PAGE_SIZE) | PTE_PRESENT | PTE_WRITABLE);
	for (uint64_t page = 0; page < PT_PDS * PT_ENTRIES; page++)
		put64(pt + 2 * PAGE_SIZE + 8 * page,
		      page * HUGE_PAGE | PTE_PRESENT | PTE_WRITABLE | PTE_HUGE);
	return 0;
}

static int write_gdt(const struct guest_mem *m)
{
	uint8_t gdt[sizeof(boot_gdt)];

	for (size_t i = 0; i < sizeof(boot_gdt) / sizeof(boot_gdt[0]); i++)
		put64(gdt + 8 * i, boot_gdt[i]);
	return guest_mem_write(m, X86_GDT_GPA, gdt, sizeof(gdt));
}

static int write_images(const struct guest_mem *m, const struct x86_boot_config *cfg,
			const struct boot_plan *p)
{
	const char *cmdline = cfg->cmdline ? cfg->cmdline : "";

	const struct bzimage *bz = cfg->kernel;
	if (bz->elf) {
		/* the bss (memsz beyond filesz) is fresh guest RAM, zero already,
		 * and the kernel clears it again itself */
		for (unsigned i = 0; !cfg->segments_loaded && i < bz->nsegs; i++)
			if (guest_mem_write(m, bz->segs[i].gpa, bz->segs[i].data, bz->segs[i].filesz))
				return -1;
	} else if (guest_mem_write(m, X86_KERNEL_GPA, bz->kernel, bz->kernel_size)) {
		return -1;
	}
	if (guest_mem_write(m, X86_CMDLINE_GPA, cmdline, p->cmdline_len + 1))
		return -1;
	if (p->initrd_size && guest_mem_write(m, p->initrd_gpa, cfg->initrd, p->initrd_size))
		return -1;
	return 0;
}

int x86_boot_load(const struct guest_mem *m, const struct x86_boot_config *cfg,
		  struct x86_boot_info *out)
{
	struct boot_plan plan;

	if (plan_boot(m, cfg, &plan))
		return -1;
	if (write_images(m, cfg, &plan) || write_boot_params(m, cfg->kernel, &plan) ||
	    write_page_tables(m) || write_gdt(m) ||
	    mptable_write(m, X86_MPTABLE_GPA, cfg->ncpus) < 0)
		return -1;
	*out = (struct x86_boot_info){
		.entry = cfg->kernel->elf ? cfg->kernel->entry : X86_KERNEL_GPA + ENTRY_64_OFFSET,
		.boot_params = X86_BOOT_PARAMS_GPA,
		.initrd_gpa = plan.initrd_gpa,
	};
	return 0;
}

/* A KVM segment matching GDT descriptor `desc`. */
static struct kvm_segment segment_from_gdt(uint64_t desc, uint16_t selector)
{
	uint32_t limit = (uint32_t)((desc & 0xffff) | ((desc >> 48) & 0xf) << 16);
	uint8_t g = (desc >> 55) & 1;

	return (struct kvm_segment){
		.base = ((desc >> 16) & 0xffffff) | ((desc >> 56) & 0xff) << 24,
		.limit = g ? limit << 12 | 0xfff : limit,
		.selector = selector,
		.type = (desc >> 40) & 0xf,
		.s = (desc >> 44) & 1,
		.dpl = (desc >> 45) & 3,
		.present = (desc >> 47) & 1,
		.avl = (desc >> 52) & 1,
		.l = (desc >> 53) & 1,
		.db = (desc >> 54) & 1,
		.g = g,
	};
}

void x86_boot_sregs(struct kvm_sregs *sregs)
{
	struct kvm_segment data = segment_from_gdt(GDT_DATA, X86_BOOT_DS);

	sregs->gdt.base = X86_GDT_GPA;
	sregs->gdt.limit = sizeof(boot_gdt) - 1;
	sregs->cs = segment_from_gdt(GDT_CODE64, X86_BOOT_CS);
	sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
	sregs->tr = segment_from_gdt(GDT_TSS64, X86_BOOT_TR);
	sregs->cr0 = (sregs->cr0 | CR0_PE | CR0_PG | CR0_ET) & ~(CR0_CD | CR0_NW);
	sregs->cr3 = X86_PML4_GPA;
	sregs->cr4 |= CR4_PAE;
	sregs->efer |= EFER_LME | EFER_LMA;
}

void x86_boot_regs(struct kvm_regs *regs, const struct x86_boot_info *info)
{
	memset(regs, 0, sizeof(*regs));
	regs->rflags = RFLAGS_RESERVED;
	regs->rip = info->entry;
	regs->rsi = info->boot_params;
	regs->rsp = X86_BOOT_STACK_GPA;
}
