/* The machine description: what the migration source sends first
 * (MIG_DESCRIPTION) so that the target rebuilds the same VM without the
 * user repeating the configuration. On the wire it is a flattened device
 * tree (libfdt):
 *
 *   / {
 *       compatible = "luavmm,machine-v1";
 *       name = "web";                    string, 1..63 bytes
 *       memory-size = <hi lo>;           u64: multiple of 4096, 32 MiB..1 TiB
 *       vcpus = <2>;                     u32: 1..X86_MAX_VCPUS
 *       nets {
 *           net@0 {                      net@0 .. net@(n-1), n <= MACHINE_MAX_NETS
 *               name = "net0";           string, 1..15 bytes, unique
 *               ifname = "tap0";         string, 1..15 bytes, unique, no '/', ' ',
 *                                        '%', not "." or ".."
 *               mac = [52 54 00 12 34 56];    exactly 6 bytes
 *               queue-pairs = <1>;       u32: 1..8
 *               queue-size = <256>;      u32: power of 2, 64..1024
 *               vhost;                   empty boolean properties
 *               backend-transfer;        the source offers this net's backend
 *           };
 *       };
 *   };
 *
 * The parser takes untrusted bytes: every refusal is -1 with a message
 * naming the node, the property and the bad value, e.g.
 * "machine description: /nets/net@1: queue-pairs 9 (must be 1..8)".
 * Unknown properties and nodes are ignored (a later version may add some;
 * the compatible string changes if old parsers must refuse). */
#ifndef VMM_MACHINE_H
#define VMM_MACHINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MACHINE_MAX_NETS 8
#define MACHINE_COMPATIBLE "luavmm,machine-v1"
#define MACHINE_MAX_BLOB (1u << 20) /* the parser refuses larger inputs */

struct machine_net {
	char name[16];
	char ifname[16];
	uint8_t mac[6];
	unsigned queue_pairs;
	uint16_t queue_size;
	bool vhost;
	bool transfer; /* the source offers its backend */
	bool transfer_allowed; /* the device's own opt-in, kept across migrations */
};

struct machine_desc {
	char name[64];
	uint64_t mem_size;
	unsigned ncpus;
	unsigned nnets;
	struct machine_net nets[MACHINE_MAX_NETS];
};

/* Whether d holds only values the parser accepts (the same checks and
 * messages). machine_to_fdt calls it, so a source never sends a
 * description its target would refuse. */
int machine_desc_check(const struct machine_desc *d);

/* Builds the FDT of d (checked first) into a malloc'd *blob of *len bytes.
 * -1 with a message on a bad description or an allocation failure. */
int machine_to_fdt(const struct machine_desc *d, void **blob, size_t *len);

/* Parses and checks an untrusted FDT of len bytes (at most
 * MACHINE_MAX_BLOB; bytes after the FDT's total size are ignored). On
 * success fills all of *d (strings NUL-terminated, unused nets zeroed);
 * on failure *d is zeroed. blob needs no alignment. */
int machine_from_fdt(const void *blob, size_t len, struct machine_desc *d);

#endif
