/* x86_64 Linux direct boot (Documentation/arch/x86/boot.rst): bzImage header
 * parsing, guest memory layout (boot_params, e820, command line, initrd,
 * identity page tables, GDT, MP table) and the vCPU register state for the
 * 64-bit entry point. Pure code over struct guest_mem: no KVM needed, so all
 * of it is unit-tested. */
#ifndef VMM_X86_BOOT_H
#define VMM_X86_BOOT_H

#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

#include "memory.h"

/* Fixed guest-physical layout below 1 MiB. */
#define X86_GDT_GPA         0x500ull
#define X86_BOOT_PARAMS_GPA 0x7000ull
#define X86_BOOT_STACK_GPA  0x8ff0ull  /* initial RSP: top of the free page 0x8000 */
#define X86_PML4_GPA        0x9000ull  /* PML4, PDPT at +0x1000, 4 PDs after */
#define X86_CMDLINE_GPA     0x20000ull
#define X86_CMDLINE_MAX     0x10000ull /* bytes reserved at X86_CMDLINE_GPA */
#define X86_EBDA_GPA        0x9fc00ull /* e820: reserved from here to 1 MiB */
#define X86_MPTABLE_GPA     0xf0000ull
#define X86_KERNEL_GPA      0x100000ull

#define X86_BOOT_CS 0x10 /* GDT selector of the flat 64-bit code segment */
#define X86_BOOT_DS 0x18 /* GDT selector of the flat data segment */
#define X86_BOOT_TR 0x20 /* GDT selector of the (16-byte) 64-bit TSS descriptor */

#define X86_MAX_VCPUS 64

/* A parsed bzImage; pointers point into the caller's image buffer. */
#define X86_ELF_MAX_SEGMENTS 16

/* One piece of an uncompressed ELF kernel (vmlinux): filesz bytes of the
 * file at gpa, then zeros up to memsz (the kernel clears its bss itself). */
struct kernel_segment {
	uint64_t gpa;
	uint64_t offset;          /* in the file */
	const uint8_t *data;
	size_t filesz;
	uint64_t memsz;
};

/* A kernel to boot: a bzImage, or an ELF vmlinux (elf set: no setup, the
 * header fields below filled in as the 64-bit boot protocol needs them). */
struct bzimage {
	int elf;                  /* an ELF vmlinux: segments and entry below */
	uint64_t entry;           /* ELF: the 64-bit entry (startup_64), physical */
	struct kernel_segment segs[X86_ELF_MAX_SEGMENTS];
	unsigned nsegs;
	uint16_t version;         /* boot protocol, e.g. 0x020f */
	uint8_t setup_sects;      /* 0 read as 4 */
	uint8_t loadflags;
	uint16_t xloadflags;
	uint32_t initrd_addr_max; /* highest address the initrd may end at, inclusive */
	uint32_t kernel_alignment;
	uint32_t cmdline_size;    /* max command line length, excluding NUL */
	uint64_t pref_address;
	uint32_t init_size;       /* memory the kernel needs from its load address */
	const uint8_t *setup;     /* boot sector + setup: (setup_sects + 1) * 512 bytes */
	size_t setup_size;
	const uint8_t *kernel;    /* the protected-mode kernel, loaded at 1 MiB */
	size_t kernel_size;
};

/* Validates and parses `size` bytes of `image`. Fails with a message that
 * starts with "not a bzImage: " (too small, no HdrS magic or 0xaa55 boot
 * flag, setup runs past the end of the file, no protected-mode part, no
 * LOADED_HIGH) or says why the kernel cannot be booted here (boot protocol
 * older than 2.12, no 64-bit entry point). */
int bzimage_parse(struct bzimage *bz, const uint8_t *image, size_t size);

/* An uncompressed ELF64 x86-64 kernel (vmlinux, as scripts/testhost
 * extracts from a bzImage): its PT_LOAD segments (at their physical
 * addresses, 1 MiB and up) and entry. The headers must lie within the
 * first `avail` bytes of image; the segments are checked against the file's
 * `size` (they are only read when avail == size). 0, or -1 with a message
 * naming what is wrong. */
int elf_kernel_parse(struct bzimage *bz, const uint8_t *image, size_t avail, size_t size);

/* A bzImage or a vmlinux, by its first bytes. */
int kernel_parse(struct bzimage *bz, const uint8_t *image, size_t avail, size_t size);

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type; /* E820_RAM or E820_RESERVED */
} __attribute__((packed));

#define E820_RAM      1
#define E820_RESERVED 2

/* The e820 map of `m`: RAM [0, EBDA), reserved [EBDA, 1 MiB), RAM from 1 MiB
 * to the end of low RAM, and high RAM from 4 GiB if any. Returns the number of
 * entries written (at most max). */
size_t e820_build(const struct guest_mem *m, struct e820_entry *out, size_t max);

/* Writes an Intel MP table (floating pointer + configuration table) at gpa
 * describing `ncpus` processors (APIC ids 0..ncpus-1, 0 the BSP), an ISA bus,
 * one IOAPIC (id ncpus, at 0xfec00000) with ISA IRQs 0-15 (but 2) on the same
 * pins, ExtINT on LINT0 and NMI on LINT1. Returns bytes written or -1. */
int mptable_write(const struct guest_mem *m, uint64_t gpa, unsigned ncpus);

struct x86_boot_config {
	const struct bzimage *kernel;
	int segments_loaded;    /* an ELF kernel's segments are in guest RAM already */
	const uint8_t *initrd;  /* NULL if none */
	size_t initrd_size;
	const char *cmdline;    /* NUL-terminated */
	unsigned ncpus;
};

struct x86_boot_info {
	uint64_t entry;        /* 64-bit entry point: kernel load address + 0x200 */
	uint64_t boot_params;  /* guest-physical address of boot_params (for RSI) */
	uint64_t initrd_gpa;   /* 0 if no initrd */
};

/* Lays out a whole boot in guest memory: kernel at 1 MiB, boot_params with
 * the copied setup header, type_of_loader 0xff, command line, e820 table,
 * initrd at the highest page-aligned address that ends at or below both
 * initrd_addr_max and the end of low RAM and above the kernel's init_size,
 * identity page tables mapping the first 4 GiB with 2 MiB pages, a GDT, and
 * the MP table. The kernel's init_size counts from where it decompresses:
 * its pref_address if loaded below it (as at 1 MiB), else the load address
 * rounded up to kernel_alignment. Fails, writing nothing, with a message
 * naming what does not fit (command line longer than cmdline_size, initrd too
 * large for memory, memory too small for the kernel). */
int x86_boot_load(const struct guest_mem *m, const struct x86_boot_config *cfg,
		  struct x86_boot_info *out);

/* Register state for entering the kernel in 64-bit mode: GDTR, flat segments
 * and TR from the GDT, CR0 PE|PG (and ET; CD and NW cleared), CR4 PAE,
 * EFER LME|LMA, CR3 the PML4; RIP = entry, RSI = boot_params,
 * RSP = X86_BOOT_STACK_GPA, RFLAGS = 2, all else 0. `sregs` must hold the
 * values read from the vCPU (only the fields above are changed). */
void x86_boot_sregs(struct kvm_sregs *sregs);
void x86_boot_regs(struct kvm_regs *regs, const struct x86_boot_info *info);

/* Adapts KVM_GET_SUPPORTED_CPUID output for vCPU `apic_id` of `ncpus`:
 * initial APIC id in leaf 1 EBX[31:24], logical count in EBX[23:16] (ncpus
 * rounded up to a power of two) with EDX.HTT set iff that count exceeds 1,
 * hypervisor bit in leaf 1 ECX, x2APIC id in EDX of every subleaf of leaves
 * 0xB and 0x1F. Other bits and leaves are left as they are. */
void cpuid_setup_vcpu(struct kvm_cpuid2 *cpuid, unsigned apic_id, unsigned ncpus);

#endif
