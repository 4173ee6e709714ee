/* The machine description as an FDT: builder, checker and the parser of
 * untrusted blobs (layout and limits in machine.h). */
#include "machine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfdt.h>

#include "err.h"
#include "x86_boot.h"

#define MiB (1ull << 20)
#define TiB (1ull << 40)
#define MEM_MIN (32 * MiB)
#define MEM_MAX TiB
#define QUEUE_PAIRS_MAX 8
#define QUEUE_SIZE_MIN 64
#define QUEUE_SIZE_MAX 1024

#define PREFIX "machine description: "

/* Node paths for messages: "/" or "/nets/net@3". */
struct node_path {
	char s[32];
};

static struct node_path net_path(unsigned i)
{
	struct node_path p;
	snprintf(p.s, sizeof(p.s), "/nets/net@%u", i);
	return p;
}

/* A string from the wire made printable for a message: at most 32
 * characters, anything outside ASCII 0x20..0x7e shown as '?'. */
static const char *printable(const char *s, size_t n, char out[40])
{
	size_t j = 0;
	for (size_t i = 0; i < n && s[i] && j < 32; i++)
		out[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (j == 32 && n > 32 && s[32])
		out[j++] = '.', out[j++] = '.', out[j++] = '.';
	out[j] = '\0';
	return out;
}

/* --- value checks, shared by the builder and the parser --------------------- */

static int check_mem_size(uint64_t v)
{
	if (v % 4096 || v < MEM_MIN || v > MEM_MAX)
		return vmm_fail(PREFIX "/: memory-size %llu (must be a multiple of 4096 from 32 MiB to 1 TiB)",
				(unsigned long long)v);
	return 0;
}

static int check_vcpus(uint64_t v)
{
	if (v < 1 || v > X86_MAX_VCPUS)
		return vmm_fail(PREFIX "/: vcpus %llu (must be 1..%d)", (unsigned long long)v, X86_MAX_VCPUS);
	return 0;
}

static int check_queue_pairs(const char *path, uint64_t v)
{
	if (v < 1 || v > QUEUE_PAIRS_MAX)
		return vmm_fail(PREFIX "%s: queue-pairs %llu (must be 1..%d)", path, (unsigned long long)v,
				QUEUE_PAIRS_MAX);
	return 0;
}

static int check_queue_size(const char *path, uint64_t v)
{
	if (v < QUEUE_SIZE_MIN || v > QUEUE_SIZE_MAX || (v & (v - 1)))
		return vmm_fail(PREFIX "%s: queue-size %llu (must be a power of 2 from %d to %d)", path,
				(unsigned long long)v, QUEUE_SIZE_MIN, QUEUE_SIZE_MAX);
	return 0;
}

/* A string held in a char[size] field: NUL-terminated, 1..size-1 bytes. */
static int check_string(const char *path, const char *prop, const char *s, size_t size)
{
	size_t n = strnlen(s, size);
	char buf[40];
	if (n == 0 || n == size)
		return vmm_fail(PREFIX "%s: %s \"%s\" is %s%zu bytes long (must be 1..%zu)", path, prop,
				printable(s, n, buf), n == size ? "at least " : "", n, size - 1);
	return 0;
}

/* What the kernel accepts as an interface name (dev_valid_name). */
static int check_ifname(const char *path, const char *s, size_t size)
{
	if (check_string(path, "ifname", s, size))
		return -1;
	char buf[40];
	if (strpbrk(s, "/ %") || !strcmp(s, ".") || !strcmp(s, ".."))
		return vmm_fail(PREFIX "%s: ifname \"%s\" (no '/', ' ' or '%%', not \".\" or \"..\")", path,
				printable(s, size, buf));
	return 0;
}

static int check_net(const struct machine_net *n, unsigned i)
{
	struct node_path p = net_path(i);
	const char *path = p.s;
	if (check_string(path, "name", n->name, sizeof(n->name)) ||
	    check_ifname(path, n->ifname, sizeof(n->ifname)) || check_queue_pairs(path, n->queue_pairs) ||
	    check_queue_size(path, n->queue_size))
		return -1;
	return 0;
}

/* Names and ifnames are unique. Nets before i are already checked. */
static int check_net_unique(const struct machine_desc *d, unsigned i)
{
	const struct machine_net *n = &d->nets[i];
	char buf[40];
	for (unsigned j = 0; j < i; j++) {
		if (!strcmp(d->nets[j].name, n->name))
			return vmm_fail(PREFIX "%s: name \"%s\" already used by /nets/net@%u", net_path(i).s,
					printable(n->name, sizeof(n->name), buf), j);
		if (!strcmp(d->nets[j].ifname, n->ifname))
			return vmm_fail(PREFIX "%s: ifname \"%s\" already used by /nets/net@%u", net_path(i).s,
					printable(n->ifname, sizeof(n->ifname), buf), j);
	}
	return 0;
}

int machine_desc_check(const struct machine_desc *d)
{
	if (check_string("/", "name", d->name, sizeof(d->name)) || check_mem_size(d->mem_size) ||
	    check_vcpus(d->ncpus))
		return -1;
	if (d->nnets > MACHINE_MAX_NETS)
		return vmm_fail(PREFIX "/nets: %u nets (at most %d)", d->nnets, MACHINE_MAX_NETS);
	for (unsigned i = 0; i < d->nnets; i++)
		if (check_net(&d->nets[i], i) || check_net_unique(d, i))
			return -1;
	return 0;
}

/* --- builder ---------------------------------------------------------------- */

static int put_net(void *fdt, const struct machine_net *n, unsigned i)
{
	char node[16];
	snprintf(node, sizeof(node), "net@%u", i);
	int err = fdt_begin_node(fdt, node);
	if (!err)
		err = fdt_property_string(fdt, "name", n->name);
	if (!err)
		err = fdt_property_string(fdt, "ifname", n->ifname);
	if (!err)
		err = fdt_property(fdt, "mac", n->mac, sizeof(n->mac));
	if (!err)
		err = fdt_property_u32(fdt, "queue-pairs", n->queue_pairs);
	if (!err)
		err = fdt_property_u32(fdt, "queue-size", n->queue_size);
	if (!err && n->vhost)
		err = fdt_property(fdt, "vhost", NULL, 0);
	if (!err && n->transfer)
		err = fdt_property(fdt, "backend-transfer", NULL, 0);
	if (!err && n->transfer_allowed)
		err = fdt_property(fdt, "backend-transfer-allowed", NULL, 0);
	if (!err)
		err = fdt_end_node(fdt);
	return err;
}

/* Writes the whole tree into buf (size bytes): 0 or a libfdt error. */
static int put_tree(void *buf, int size, const struct machine_desc *d)
{
	int err = fdt_create(buf, size);
	if (!err)
		err = fdt_finish_reservemap(buf);
	if (!err)
		err = fdt_begin_node(buf, "");
	if (!err)
		err = fdt_property_string(buf, "compatible", MACHINE_COMPATIBLE);
	if (!err)
		err = fdt_property_string(buf, "name", d->name);
	if (!err)
		err = fdt_property_u64(buf, "memory-size", d->mem_size);
	if (!err)
		err = fdt_property_u32(buf, "vcpus", d->ncpus);
	if (!err)
		err = fdt_begin_node(buf, "nets");
	for (unsigned i = 0; !err && i < d->nnets; i++)
		err = put_net(buf, &d->nets[i], i);
	if (!err)
		err = fdt_end_node(buf); /* nets */
	if (!err)
		err = fdt_end_node(buf); /* root */
	if (!err)
		err = fdt_finish(buf);
	return err;
}

int machine_to_fdt(const struct machine_desc *d, void **blob, size_t *len)
{
	*blob = NULL;
	*len = 0;
	if (machine_desc_check(d))
		return -1;
	/* A full description takes about 1.5 KiB; grow on the odd chance. */
	for (int size = 4096; size <= 65536; size *= 2) {
		void *buf = calloc(1, (size_t)size);
		if (!buf)
			return vmm_fail(PREFIX "out of memory");
		int err = put_tree(buf, size, d);
		if (!err) {
			*blob = buf;
			*len = fdt_totalsize(buf);
			return 0;
		}
		free(buf);
		if (err != -FDT_ERR_NOSPACE)
			return vmm_fail(PREFIX "building the FDT: %s", fdt_strerror(err));
	}
	return vmm_fail(PREFIX "building the FDT: larger than 64 KiB");
}

/* --- parser ----------------------------------------------------------------- */

/* A required property's value and length; NULL with a message if it is
 * absent or unreadable. */
static const void *get_prop(const void *fdt, int node, const char *path, const char *prop, int *len)
{
	const void *v = fdt_getprop(fdt, node, prop, len);
	if (!v) {
		if (*len == -FDT_ERR_NOTFOUND)
			vmm_fail(PREFIX "%s: no property %s", path, prop);
		else
			vmm_fail(PREFIX "%s: property %s: %s", path, prop, fdt_strerror(*len));
	}
	return v;
}

/* A string property into dst[size]: one NUL, at its end, and 1..size-1
 * characters before it. */
static int get_string(const void *fdt, int node, const char *path, const char *prop, char *dst, size_t size)
{
	int len;
	const char *v = get_prop(fdt, node, path, prop, &len);
	if (!v)
		return -1;
	char buf[40];
	const char *nul = memchr(v, '\0', (size_t)len);
	if (!nul || (size_t)(nul - v) != (size_t)len - 1)
		return vmm_fail(PREFIX "%s: %s \"%s\" (%d bytes) is not one NUL-terminated string", path, prop,
				printable(v, (size_t)len, buf), len);
	if ((size_t)len - 1 >= size || len == 1)
		return vmm_fail(PREFIX "%s: %s \"%s\" is %d bytes long (must be 1..%zu)", path, prop,
				printable(v, (size_t)len, buf), len - 1, size - 1);
	memcpy(dst, v, (size_t)len);
	return 0;
}

static int get_u32(const void *fdt, int node, const char *path, const char *prop, uint32_t *out)
{
	int len;
	const void *v = get_prop(fdt, node, path, prop, &len);
	if (!v)
		return -1;
	if (len != 4)
		return vmm_fail(PREFIX "%s: %s is %d bytes (must be a 4-byte u32)", path, prop, len);
	fdt32_t raw;
	memcpy(&raw, v, sizeof(raw));
	*out = fdt32_to_cpu(raw);
	return 0;
}

static int get_u64(const void *fdt, int node, const char *path, const char *prop, uint64_t *out)
{
	int len;
	const void *v = get_prop(fdt, node, path, prop, &len);
	if (!v)
		return -1;
	if (len != 8)
		return vmm_fail(PREFIX "%s: %s is %d bytes (must be an 8-byte u64, two cells)", path, prop,
				len);
	fdt64_t raw;
	memcpy(&raw, v, sizeof(raw));
	*out = fdt64_to_cpu(raw);
	return 0;
}

/* An empty property: present (true) or absent (false). */
static int get_flag(const void *fdt, int node, const char *path, const char *prop, bool *out)
{
	int len;
	const void *v = fdt_getprop(fdt, node, prop, &len);
	*out = v != NULL;
	if (!v && len != -FDT_ERR_NOTFOUND)
		return vmm_fail(PREFIX "%s: property %s: %s", path, prop, fdt_strerror(len));
	if (v && len != 0)
		return vmm_fail(PREFIX "%s: %s has %d bytes (must be an empty boolean property)", path, prop,
				len);
	return 0;
}

static int get_mac(const void *fdt, int node, const char *path, uint8_t mac[6])
{
	int len;
	const void *v = get_prop(fdt, node, path, "mac", &len);
	if (!v)
		return -1;
	if (len != 6)
		return vmm_fail(PREFIX "%s: mac is %d bytes (must be 6)", path, len);
	memcpy(mac, v, 6);
	return 0;
}

static int parse_net(const void *fdt, int node, unsigned i, struct machine_net *n)
{
	struct node_path p = net_path(i);
	uint32_t pairs, qsize;
	if (get_string(fdt, node, p.s, "name", n->name, sizeof(n->name)) ||
	    get_string(fdt, node, p.s, "ifname", n->ifname, sizeof(n->ifname)) ||
	    check_ifname(p.s, n->ifname, sizeof(n->ifname)) || get_mac(fdt, node, p.s, n->mac) ||
	    get_u32(fdt, node, p.s, "queue-pairs", &pairs) || check_queue_pairs(p.s, pairs) ||
	    get_u32(fdt, node, p.s, "queue-size", &qsize) || check_queue_size(p.s, qsize) ||
	    get_flag(fdt, node, p.s, "vhost", &n->vhost) ||
	    get_flag(fdt, node, p.s, "backend-transfer", &n->transfer) ||
	    get_flag(fdt, node, p.s, "backend-transfer-allowed", &n->transfer_allowed))
		return -1;
	n->queue_pairs = pairs;
	n->queue_size = (uint16_t)qsize;
	return 0;
}

/* "net@<i>" with i a decimal without leading zeros, below
 * MACHINE_MAX_NETS: 0 and *index; else -1 with a message. */
static int net_index(const char *name, int len, unsigned *index)
{
	char buf[40];
	const char *digits = name + 4;
	int ndigits = len - 4;
	if (len < 5 || memcmp(name, "net@", 4))
		return vmm_fail(PREFIX "/nets: unexpected node \"%s\" (only net@<index>)",
				printable(name, (size_t)len, buf));
	if (ndigits != 1 || digits[0] < '0' || digits[0] >= '0' + MACHINE_MAX_NETS)
		return vmm_fail(PREFIX "/nets: node \"%s\": index must be 0..%d", printable(name, (size_t)len, buf),
				MACHINE_MAX_NETS - 1);
	*index = (unsigned)(digits[0] - '0');
	return 0;
}

static int parse_nets(const void *fdt, struct machine_desc *d)
{
	int nets = fdt_subnode_offset(fdt, 0, "nets");
	if (nets < 0)
		return vmm_fail(PREFIX "/nets: %s", nets == -FDT_ERR_NOTFOUND ? "no such node" : fdt_strerror(nets));
	unsigned seen = 0; /* bit i: net@i found */
	int node;
	fdt_for_each_subnode(node, fdt, nets) {
		int len;
		const char *name = fdt_get_name(fdt, node, &len);
		unsigned i = 0;
		if (!name)
			return vmm_fail(PREFIX "/nets: a child node: %s", fdt_strerror(len));
		if (net_index(name, len, &i))
			return -1;
		if (seen & (1u << i))
			return vmm_fail(PREFIX "/nets: two nodes net@%u", i);
		seen |= 1u << i;
		if (parse_net(fdt, node, i, &d->nets[i]))
			return -1;
	}
	if (node != -FDT_ERR_NOTFOUND)
		return vmm_fail(PREFIX "/nets: %s", fdt_strerror(node));
	d->nnets = (unsigned)__builtin_popcount(seen);
	if (seen != (1u << d->nnets) - 1)
		return vmm_fail(PREFIX "/nets: net@%d missing (indices must run from 0 without gaps)",
				__builtin_ctz(~seen));
	for (unsigned i = 0; i < d->nnets; i++)
		if (check_net_unique(d, i))
			return -1;
	return 0;
}

static int parse_root(const void *fdt, struct machine_desc *d)
{
	int len;
	const char *compat = get_prop(fdt, 0, "/", "compatible", &len);
	if (!compat)
		return -1;
	char buf[40];
	if (len != sizeof(MACHINE_COMPATIBLE) || memcmp(compat, MACHINE_COMPATIBLE, sizeof(MACHINE_COMPATIBLE)))
		return vmm_fail(PREFIX "/: compatible \"%s\" (must be \"" MACHINE_COMPATIBLE "\")",
				printable(compat, (size_t)len, buf));
	uint32_t vcpus;
	if (get_string(fdt, 0, "/", "name", d->name, sizeof(d->name)) ||
	    get_u64(fdt, 0, "/", "memory-size", &d->mem_size) || check_mem_size(d->mem_size) ||
	    get_u32(fdt, 0, "/", "vcpus", &vcpus) || check_vcpus(vcpus))
		return -1;
	d->ncpus = vcpus;
	return 0;
}

/* libfdt 1.6.1's fdt_next_tag() returns the offset it was given for a
 * property of length -12, on which fdt_check_full() (and every node walk)
 * loops forever: walk the tags once, refusing any that does not move on.
 * Terminates: offsets strictly grow, within the structure block. */
static int check_tags_advance(const void *fdt)
{
	int off = 0, next;
	for (;;) {
		uint32_t tag = fdt_next_tag(fdt, off, &next);
		if (next < 0)
			return vmm_fail(PREFIX "malformed FDT structure at offset %d: %s", off, fdt_strerror(next));
		if (next <= off)
			return vmm_fail(PREFIX "malformed FDT structure: the tag at offset %d does not advance",
					off);
		if (tag == FDT_END)
			return 0;
		off = next;
	}
}

/* The header and structure checks of libfdt, on an aligned copy. */
static int check_blob(const void *fdt, size_t len)
{
	int err = fdt_check_header(fdt);
	if (err)
		return vmm_fail(PREFIX "bad FDT header: %s", fdt_strerror(err));
	/* Older versions name nodes by full path, a libfdt code path where
	 * fdt_check_full() of libfdt 1.6.1 dereferences a NULL name (a root
	 * node name without '/'). The builder writes version 17. */
	if (fdt_version(fdt) != 17)
		return vmm_fail(PREFIX "FDT version %u (must be 17)", fdt_version(fdt));
	if (fdt_totalsize(fdt) > len)
		return vmm_fail(PREFIX "FDT total size %u exceeds the %zu bytes received", fdt_totalsize(fdt), len);
	if (fdt_off_dt_struct(fdt) % 4 || fdt_off_mem_rsvmap(fdt) % 8)
		return vmm_fail(PREFIX "misaligned FDT blocks (structure at %u, reserve map at %u)",
				fdt_off_dt_struct(fdt), fdt_off_mem_rsvmap(fdt));
	if (check_tags_advance(fdt))
		return -1;
	err = fdt_check_full(fdt, len);
	if (err)
		return vmm_fail(PREFIX "malformed FDT: %s", fdt_strerror(err));
	return 0;
}

int machine_from_fdt(const void *blob, size_t len, struct machine_desc *d)
{
	memset(d, 0, sizeof(*d));
	if (len > MACHINE_MAX_BLOB)
		return vmm_fail(PREFIX "%zu bytes (at most %u)", len, MACHINE_MAX_BLOB);
	if (len < sizeof(struct fdt_header))
		return vmm_fail(PREFIX "%zu bytes, too short for an FDT header", len);
	/* libfdt reads the structure with aligned loads: parse a malloc'd copy. */
	void *fdt = malloc(len);
	if (!fdt)
		return vmm_fail(PREFIX "out of memory");
	memcpy(fdt, blob, len);
	int err = check_blob(fdt, len) || parse_root(fdt, d) || parse_nets(fdt, d) ? -1 : 0;
	free(fdt);
	if (err)
		memset(d, 0, sizeof(*d));
	return err;
}
