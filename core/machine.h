/* The machine description: what the migration source sends first
 * (MIG_DESCRIPTION) so that the target rebuilds the same VM without the
 * user repeating the configuration. On the wire it is a flattened device
 * tree (libfdt):
 *
 *   / {
 *       compatible = "luavmm,machine-v2";
 *       name = "web";                    string, 1..63 bytes
 *       memory-size = <hi lo>;           u64: multiple of 4096, 32 MiB..1 TiB
 *       vcpus = <2>;                     u32: 1..X86_MAX_VCPUS
 *       board = "pc";                    the registry's board
 *       cpuid = <f i fl a b c d ...>;    the CPUID table the guest was given
 *                                        (before the per-vCPU APIC ids): 7
 *                                        cells an entry (function, index,
 *                                        flags, eax, ebx, ecx, edx),
 *                                        1..MACHINE_MAX_CPUID entries, each
 *                                        (function, index) once, flags 0 or
 *                                        KVM_CPUID_FLAG_SIGNIFCANT_INDEX; the
 *                                        target gives the guest this table,
 *                                        not its own build's
 *       devices {
 *           device@0 {                   device@0 .. device@(n-1): the VM's
 *                                        list, the board's devices first
 *               kind = "virtio-net";     a type of the registry (device.h)
 *               name = "net0";           string, 1..15 bytes, unique
 *               state-version = <1>;     the version of its state section
 *                                        (devices with state only)
 *               backend-transfer;        the source offers its backend
 *               backend-transfer-allowed; the device's own opt-in
 *               preview;                 a MIG_PREVIEW of its state follows
 *                                        (only to a target that asked)
 *               ifname = "tap0"; ...     the type's fields (dev_field): a
 *                                        string, a u32 cell, an empty
 *                                        property for a flag, 6 bytes for
 *                                        a MAC; checked by the type's table
 *           };
 *       };
 *   };
 *
 * The parser takes untrusted bytes: every refusal is -1 with a message
 * naming the node, the property and the bad value, e.g.
 * "machine description: /devices/device@4: queues 9 (must be 1..8)".
 * Unknown properties are ignored (a later version may add some; the
 * compatible string changes if old parsers must refuse). */
#ifndef VMM_MACHINE_H
#define VMM_MACHINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "device.h"

#define MACHINE_MAX_DEVICES 48
#define MACHINE_MAX_CPUID 256 /* KVM's own limit (KVM_MAX_CPUID_ENTRIES) */
#define MACHINE_COMPATIBLE "luavmm,machine-v2"
#define MACHINE_MAX_BLOB (1u << 20) /* the parser refuses larger inputs */

struct machine_device {
	const struct device_type *type;
	char name[DEVICE_NAME_MAX];
	void *config;           /* type->config_size bytes, owned (NULL when 0) */
	uint16_t state_version; /* 0 for a device without state */
	bool transfer;          /* the source offers its backend */
	bool transfer_allowed;  /* the device's own opt-in, kept across migrations */
	bool preview;           /* a preview of its state follows (MIG_PREVIEW) */
};

struct machine_cpuid {
	uint32_t function, index, flags, eax, ebx, ecx, edx;
};

struct machine_desc {
	char name[64];
	uint64_t mem_size;
	unsigned ncpus;
	char board[16];
	unsigned ncpuid;
	struct machine_cpuid cpuid[MACHINE_MAX_CPUID];
	unsigned ndevices;
	struct machine_device devices[MACHINE_MAX_DEVICES];
};

/* Whether a and b describe the same machine (configs compared by value). */
bool machine_desc_equal(const struct machine_desc *a, const struct machine_desc *b);

/* Frees the configs and zeroes d. */
void machine_desc_free(struct machine_desc *d);

/* Whether d holds only values the parser accepts (the same checks and
 * messages), the board's devices first as registry r has them.
 * machine_to_fdt calls it, so a source never sends a description its
 * target would refuse. */
int machine_desc_check(const struct machine_desc *d, const struct device_registry *r);

/* Builds the FDT of d (checked first) into a malloc'd *blob of *len bytes.
 * -1 with a message on a bad description or an allocation failure. */
int machine_to_fdt(const struct machine_desc *d, const struct device_registry *r, void **blob, size_t *len);

/* Parses and checks an untrusted FDT of len bytes (at most
 * MACHINE_MAX_BLOB; bytes after the FDT's total size are ignored) against
 * the types of registry r (an unknown kind is refused, naming it). On
 * success fills all of *d (free it with machine_desc_free); on failure *d is
 * zeroed. blob needs no alignment. */
int machine_from_fdt(const void *blob, size_t len, const struct device_registry *r, struct machine_desc *d);

#endif
