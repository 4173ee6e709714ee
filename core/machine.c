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

#define PREFIX "machine description: "

/* Node paths for messages: "/" or "/devices/device@3". */
struct node_path {
	char s[32];
};

static struct node_path device_path(unsigned i)
{
	struct node_path p;
	snprintf(p.s, sizeof(p.s), "/devices/device@%u", i);
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

/* The devices' own checks (their fields, names, backends), and the board's
 * devices first, in the registry's order. */
static int check_devices(const struct machine_desc *d, const struct device_registry *r)
{
	if (d->ndevices > MACHINE_MAX_DEVICES)
		return vmm_fail(PREFIX "/devices: %u devices (at most %d)", d->ndevices, MACHINE_MAX_DEVICES);
	if (strcmp(d->board, r->board))
		return vmm_fail(PREFIX "/: board \"%s\" (this build has \"%s\")", d->board, r->board);
	unsigned nboard = 0;
	while (r->board_types[nboard])
		nboard++;
	for (unsigned i = 0; i < d->ndevices; i++) {
		const struct machine_device *m = &d->devices[i];
		struct node_path p = device_path(i);
		if (!m->type)
			return vmm_fail(PREFIX "%s: no device type", p.s);
		if (i < nboard && m->type != r->board_types[i])
			return vmm_fail(PREFIX "%s: kind %s where board %s has %s", p.s, m->type->kind, r->board,
					r->board_types[i]->kind);
		if (i >= nboard && !device_registry_addable(r, m->type))
			return vmm_fail(PREFIX "%s: kind %s is not a device type of this build", p.s, m->type->kind);
		if (check_string(p.s, "name", m->name, sizeof(m->name)))
			return -1;
		if (m->type->config_size && !m->config)
			return vmm_fail(PREFIX "%s: no configuration", p.s);
		char where[80];
		snprintf(where, sizeof(where), PREFIX "%s", p.s);
		if (dev_fields_check(m->type->fields, m->config, where))
			return -1;
		if (m->type->state_version && (m->state_version < m->type->state_min_load ||
					       m->state_version > m->type->state_version))
			return vmm_fail(PREFIX "%s: %s state version %u (this build loads %u..%u)", p.s,
					m->type->kind, m->state_version, m->type->state_min_load,
					m->type->state_version);
		for (unsigned j = 0; j < i; j++) {
			const struct machine_device *o = &d->devices[j];
			if (!strcmp(o->name, m->name))
				return vmm_fail(PREFIX "%s: name \"%s\" already used by device@%u", p.s, m->name, j);
			if (device_same_backend(m->type, m->config, o->type, o->config))
				return vmm_fail(PREFIX "%s: %s \"%s\" already used by device@%u", p.s,
						device_backend_field(m->type)->name,
						device_backend_name(m->type, m->config), j);
		}
	}
	if (d->ndevices < nboard)
		return vmm_fail(PREFIX "/devices: %u devices, board %s has %u", d->ndevices, r->board, nboard);
	return 0;
}

#define CPUID_FLAG_SIGNIFICANT_INDEX 1u /* KVM_CPUID_FLAG_SIGNIFCANT_INDEX */

static int check_cpuid(const struct machine_desc *d)
{
	if (d->ncpuid < 1 || d->ncpuid > MACHINE_MAX_CPUID)
		return vmm_fail(PREFIX "/: cpuid has %u entries (must be 1..%d)", d->ncpuid, MACHINE_MAX_CPUID);
	for (unsigned i = 0; i < d->ncpuid; i++) {
		const struct machine_cpuid *e = &d->cpuid[i];
		if (e->flags & ~CPUID_FLAG_SIGNIFICANT_INDEX)
			return vmm_fail(PREFIX "/: cpuid entry %u (0x%x.%u): flags 0x%x (only 0x1, a significant index)",
					i, e->function, e->index, e->flags);
		for (unsigned j = 0; j < i; j++)
			if (d->cpuid[j].function == e->function && d->cpuid[j].index == e->index)
				return vmm_fail(PREFIX "/: cpuid entry %u: 0x%x.%u already given by entry %u", i,
						e->function, e->index, j);
	}
	return 0;
}

int machine_desc_check(const struct machine_desc *d, const struct device_registry *r)
{
	if (check_string("/", "name", d->name, sizeof(d->name)) || check_mem_size(d->mem_size) ||
	    check_vcpus(d->ncpus) || check_string("/", "board", d->board, sizeof(d->board)) || check_cpuid(d))
		return -1;
	return check_devices(d, r);
}

bool machine_desc_equal(const struct machine_desc *a, const struct machine_desc *b)
{
	if (strcmp(a->name, b->name) || a->mem_size != b->mem_size || a->ncpus != b->ncpus ||
	    strcmp(a->board, b->board) || a->ndevices != b->ndevices || a->ncpuid != b->ncpuid ||
	    memcmp(a->cpuid, b->cpuid, a->ncpuid * sizeof(a->cpuid[0])))
		return false;
	for (unsigned i = 0; i < a->ndevices && i < MACHINE_MAX_DEVICES; i++) {
		const struct machine_device *x = &a->devices[i], *y = &b->devices[i];
		if (x->type != y->type || strcmp(x->name, y->name) || x->state_version != y->state_version ||
		    x->transfer != y->transfer || x->transfer_allowed != y->transfer_allowed || x->preview != y->preview)
			return false;
		if (x->type && x->type->config_size && (!x->config || !y->config ||
							memcmp(x->config, y->config, x->type->config_size)))
			return false;
	}
	return true;
}

void machine_desc_free(struct machine_desc *d)
{
	for (unsigned i = 0; i < d->ndevices && i < MACHINE_MAX_DEVICES; i++)
		free(d->devices[i].config);
	memset(d, 0, sizeof(*d));
}

/* --- builder ---------------------------------------------------------------- */

static int put_field(void *fdt, const struct dev_field *f, const void *config)
{
	const char *p = (const char *)config + f->offset;
	switch (f->kind) {
	case DEV_STRING:
		return *p || !f->optional ? fdt_property_string(fdt, f->name, p) : 0;
	case DEV_U32:
	case DEV_U16:
		return fdt_property_u32(fdt, f->name, dev_field_number(f, config));
	case DEV_FLAG:
		return *(const bool *)p ? fdt_property(fdt, f->name, NULL, 0) : 0;
	case DEV_MAC:
		return fdt_property(fdt, f->name, p, 6);
	}
	return 0;
}

static int put_device(void *fdt, const struct machine_device *m, unsigned i)
{
	char node[24];
	snprintf(node, sizeof(node), "device@%u", i);
	int err = fdt_begin_node(fdt, node);
	if (!err)
		err = fdt_property_string(fdt, "kind", m->type->kind);
	if (!err)
		err = fdt_property_string(fdt, "name", m->name);
	if (!err && m->type->state_version)
		err = fdt_property_u32(fdt, "state-version", m->state_version);
	if (!err && m->transfer)
		err = fdt_property(fdt, "backend-transfer", NULL, 0);
	if (!err && m->transfer_allowed)
		err = fdt_property(fdt, "backend-transfer-allowed", NULL, 0);
	if (!err && m->preview)
		err = fdt_property(fdt, "preview", NULL, 0);
	for (const struct dev_field *f = m->type->fields; !err && f && f->name; f++)
		err = put_field(fdt, f, m->config);
	if (!err)
		err = fdt_end_node(fdt);
	return err;
}

static int put_cpuid(void *fdt, const struct machine_desc *d)
{
	fdt32_t cells[MACHINE_MAX_CPUID * 7];
	for (unsigned i = 0; i < d->ncpuid; i++) {
		const struct machine_cpuid *e = &d->cpuid[i];
		const uint32_t v[7] = { e->function, e->index, e->flags, e->eax, e->ebx, e->ecx, e->edx };
		for (unsigned k = 0; k < 7; k++)
			cells[i * 7 + k] = cpu_to_fdt32(v[k]);
	}
	return fdt_property(fdt, "cpuid", cells, (int)(d->ncpuid * 7 * sizeof(fdt32_t)));
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
		err = fdt_property_string(buf, "board", d->board);
	if (!err)
		err = put_cpuid(buf, d);
	if (!err)
		err = fdt_begin_node(buf, "devices");
	for (unsigned i = 0; !err && i < d->ndevices; i++)
		err = put_device(buf, &d->devices[i], i);
	if (!err)
		err = fdt_end_node(buf); /* devices */
	if (!err)
		err = fdt_end_node(buf); /* root */
	if (!err)
		err = fdt_finish(buf);
	return err;
}

int machine_to_fdt(const struct machine_desc *d, const struct device_registry *r, void **blob, size_t *len)
{
	*blob = NULL;
	*len = 0;
	if (machine_desc_check(d, r))
		return -1;
	/* A full description takes a few KiB; grow on the odd chance. */
	for (int size = 8192; size <= 65536; size *= 2) {
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

static int get_field(const void *fdt, int node, const char *path, const struct dev_field *f, void *config)
{
	char *p = (char *)config + f->offset;
	int len;
	if (f->kind == DEV_FLAG)
		return get_flag(fdt, node, path, f->name, (bool *)p);
	if (f->optional && !fdt_getprop(fdt, node, f->name, &len) && len == -FDT_ERR_NOTFOUND)
		return 0;
	switch (f->kind) {
	case DEV_STRING:
		return get_string(fdt, node, path, f->name, p, f->size);
	case DEV_U32:
	case DEV_U16: {
		uint32_t v;
		if (get_u32(fdt, node, path, f->name, &v))
			return -1;
		if (f->kind == DEV_U16) {
			if (v > 0xffff)
				return vmm_fail(PREFIX "%s: %s %u (must be %u..%u)", path, f->name, v, f->min, f->max);
			uint16_t w = (uint16_t)v;
			memcpy(p, &w, sizeof(w));
		} else {
			memcpy(p, &v, sizeof(v));
		}
		return 0;
	}
	case DEV_MAC: {
		const void *v = get_prop(fdt, node, path, f->name, &len);
		if (!v)
			return -1;
		if (len != 6)
			return vmm_fail(PREFIX "%s: %s is %d bytes (must be 6)", path, f->name, len);
		memcpy(p, v, 6);
		return 0;
	}
	case DEV_FLAG:
		break;
	}
	return 0;
}

static int parse_device(const void *fdt, int node, unsigned i, const struct device_registry *r,
			struct machine_device *m)
{
	struct node_path p = device_path(i);
	char kind[32];
	if (get_string(fdt, node, p.s, "kind", kind, sizeof(kind)))
		return -1;
	m->type = device_registry_find(r, kind);
	char buf[40];
	if (!m->type)
		return vmm_fail(PREFIX "%s: kind \"%s\" is not a device type of this build", p.s,
				printable(kind, sizeof(kind), buf));
	if (get_string(fdt, node, p.s, "name", m->name, sizeof(m->name)) ||
	    get_flag(fdt, node, p.s, "backend-transfer", &m->transfer) ||
	    get_flag(fdt, node, p.s, "backend-transfer-allowed", &m->transfer_allowed) ||
	    get_flag(fdt, node, p.s, "preview", &m->preview))
		return -1;
	if (m->preview && !(m->type->state_version && m->type->preview_load))
		return vmm_fail(PREFIX "%s: a %s has no preview to load", p.s, kind);
	if (m->type->state_version) {
		uint32_t v;
		if (get_u32(fdt, node, p.s, "state-version", &v))
			return -1;
		if (v < m->type->state_min_load || v > m->type->state_version)
			return vmm_fail(PREFIX "%s: %s state version %u (this build loads %u..%u)", p.s, kind, v,
					m->type->state_min_load, m->type->state_version);
		m->state_version = (uint16_t)v;
	}
	if (m->type->config_size) {
		m->config = calloc(1, m->type->config_size);
		if (!m->config)
			return vmm_fail(PREFIX "out of memory");
	}
	for (const struct dev_field *f = m->type->fields; f && f->name; f++)
		if (get_field(fdt, node, p.s, f, m->config))
			return -1;
	return 0;
}

/* "device@<i>" with i a decimal without leading zeros, below
 * MACHINE_MAX_DEVICES: 0 and *index; else -1 with a message. */
static int device_index(const char *name, int len, unsigned *index)
{
	char buf[40];
	static const char prefix[] = "device@";
	const size_t plen = sizeof(prefix) - 1;
	if ((size_t)len <= plen || memcmp(name, prefix, plen))
		return vmm_fail(PREFIX "/devices: unexpected node \"%s\" (only device@<index>)",
				printable(name, (size_t)len, buf));
	unsigned v = 0;
	for (size_t k = plen; k < (size_t)len; k++) {
		char c = name[k];
		if (c < '0' || c > '9' || (k == plen && c == '0' && (size_t)len > plen + 1) || v >= MACHINE_MAX_DEVICES)
			return vmm_fail(PREFIX "/devices: node \"%s\": index must be 0..%d",
					printable(name, (size_t)len, buf), MACHINE_MAX_DEVICES - 1);
		v = v * 10 + (unsigned)(c - '0');
	}
	if (v >= MACHINE_MAX_DEVICES)
		return vmm_fail(PREFIX "/devices: node \"%s\": index must be 0..%d", printable(name, (size_t)len, buf),
				MACHINE_MAX_DEVICES - 1);
	*index = v;
	return 0;
}

static int parse_devices(const void *fdt, const struct device_registry *r, struct machine_desc *d)
{
	int devs = fdt_subnode_offset(fdt, 0, "devices");
	if (devs < 0)
		return vmm_fail(PREFIX "/devices: %s", devs == -FDT_ERR_NOTFOUND ? "no such node" : fdt_strerror(devs));
	uint64_t seen = 0; /* bit i: device@i found */
	int node;
	fdt_for_each_subnode(node, fdt, devs) {
		int len;
		const char *name = fdt_get_name(fdt, node, &len);
		unsigned i = 0;
		if (!name)
			return vmm_fail(PREFIX "/devices: a child node: %s", fdt_strerror(len));
		if (device_index(name, len, &i))
			return -1;
		if (seen & (1ull << i))
			return vmm_fail(PREFIX "/devices: two nodes device@%u", i);
		seen |= 1ull << i;
		d->ndevices = i + 1 > d->ndevices ? i + 1 : d->ndevices;
		if (parse_device(fdt, node, i, r, &d->devices[i]))
			return -1;
	}
	if (node != -FDT_ERR_NOTFOUND)
		return vmm_fail(PREFIX "/devices: %s", fdt_strerror(node));
	unsigned n = (unsigned)__builtin_popcountll(seen);
	if (n != d->ndevices)
		return vmm_fail(PREFIX "/devices: device@%d missing (indices must run from 0 without gaps)",
				__builtin_ctzll(~seen));
	return check_devices(d, r);
}

static int parse_cpuid(const void *fdt, struct machine_desc *d)
{
	int len;
	const uint8_t *v = get_prop(fdt, 0, "/", "cpuid", &len);
	if (!v)
		return -1;
	if (len % 28 || len / 28 < 1 || len / 28 > MACHINE_MAX_CPUID)
		return vmm_fail(PREFIX "/: cpuid is %d bytes (must be 1..%d entries of 28)", len, MACHINE_MAX_CPUID);
	d->ncpuid = (unsigned)len / 28;
	for (unsigned i = 0; i < d->ncpuid; i++) {
		uint32_t w[7];
		for (unsigned k = 0; k < 7; k++) {
			fdt32_t raw;
			memcpy(&raw, v + (i * 7 + k) * 4, 4);
			w[k] = fdt32_to_cpu(raw);
		}
		d->cpuid[i] = (struct machine_cpuid){ w[0], w[1], w[2], w[3], w[4], w[5], w[6] };
	}
	return check_cpuid(d);
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
	    get_u32(fdt, 0, "/", "vcpus", &vcpus) || check_vcpus(vcpus) ||
	    get_string(fdt, 0, "/", "board", d->board, sizeof(d->board)) || parse_cpuid(fdt, d))
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

int machine_from_fdt(const void *blob, size_t len, const struct device_registry *r, struct machine_desc *d)
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
	int err = check_blob(fdt, len) || parse_root(fdt, d) || parse_devices(fdt, r, d) ? -1 : 0;
	free(fdt);
	if (err)
		machine_desc_free(d);
	return err;
}
