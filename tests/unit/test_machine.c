/* The machine description FDT: a round trip, every refusal of the parser
 * (each bad value written into a valid blob with libfdt's read-write API),
 * every truncation, and random byte flips that must never crash nor let an
 * out-of-bounds value through. The devices are the registry's: the PC
 * board's four, then eight virtio-net devices (devices 4..11). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libfdt.h>

#include "check.h"
#include "err.h"
#include "machine.h"
#include "registry.h"
#include "virtio_net_pci.h"
#include "x86_boot.h"

#define MiB (1ull << 20)
#define NBOARD 4
#define NNETS 8

static const struct device_registry *R = &device_registry;

/* A CPUID table like KVM's: leaf 0, leaf 1, leaf 7 with a significant
 * index (two subleaves), and a hypervisor leaf. */
static void add_cpuid(struct machine_desc *d)
{
	static const struct machine_cpuid table[] = {
		{ 0x0, 0, 0, 0xd, 0x68747541, 0x444d4163, 0x69746e65 },
		{ 0x1, 0, 0, 0x830f10, 0x800, 0xfed83203, 0x178bfbff },
		{ 0x7, 0, 1, 0x1, 0x219c91a9, 0x400004, 0x0 },
		{ 0x7, 1, 1, 0x0, 0x0, 0x0, 0x0 },
		{ 0x40000001, 0, 0, 0x1000089b, 0, 0, 0 },
	};
	d->ncpuid = sizeof(table) / sizeof(table[0]);
	memcpy(d->cpuid, table, sizeof(table));
}

static void add_board(struct machine_desc *d)
{
	add_cpuid(d);
	for (unsigned i = 0; R->board_types[i]; i++) {
		struct machine_device *m = &d->devices[d->ndevices++];
		m->type = R->board_types[i];
		snprintf(m->name, sizeof(m->name), "%s", m->type->kind);
		m->state_version = m->type->state_version;
	}
}

/* d is freed with machine_desc_free. */
static void full_desc(struct machine_desc *d)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", "web-frontend");
	d->mem_size = 512 * MiB;
	d->ncpus = 4;
	snprintf(d->board, sizeof(d->board), "%s", R->board);
	add_board(d);
	for (unsigned i = 0; i < NNETS; i++) {
		struct machine_device *m = &d->devices[d->ndevices++];
		m->type = &virtio_net_pci_type;
		snprintf(m->name, sizeof(m->name), "net%u", i);
		m->state_version = 1;
		m->transfer = (i & 2) != 0;
		m->transfer_allowed = (i & 6) != 0;
		m->preview = i == 3;
		struct virtio_net_pci_config *c = calloc(1, sizeof(*c));
		snprintf(c->ifname, sizeof(c->ifname), "vmtap%u", i);
		uint8_t mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, (uint8_t)(0x50 + i) };
		memcpy(c->mac, mac, 6);
		c->queues = 1 + i;
		c->queue_size = (uint16_t)(64u << (i % 5));
		c->vhost = i & 1;
		m->config = c;
	}
}

static struct virtio_net_pci_config *net(struct machine_desc *d, unsigned i)
{
	return d->devices[NBOARD + i].config;
}

/* A valid blob of desc d, reopened with room for edits. */
static void *editable(const struct machine_desc *d)
{
	void *blob;
	size_t len;
	if (machine_to_fdt(d, R, &blob, &len)) {
		fprintf(stderr, "  machine_to_fdt: %s\n", vmm_error());
		return NULL;
	}
	void *big = calloc(1, 65536);
	if (big && fdt_open_into(blob, big, 65536)) {
		free(big);
		big = NULL;
	}
	free(blob);
	return big;
}

/* Parses fdt (packed first) and expects a refusal whose message holds `msg`. */
static void expect_refusal(void *fdt, const char *msg)
{
	struct machine_desc d;
	CHECK_EQ(fdt_pack(fdt), 0);
	int rc = machine_from_fdt(fdt, fdt_totalsize(fdt), R, &d);
	CHECK_EQ(rc, -1);
	CHECK_CONTAINS(vmm_error(), msg);
	if (rc == -1)
		CHECK_EQ(d.ndevices, 0); /* zeroed on failure */
	else
		machine_desc_free(&d);
}

static int node_of(void *fdt, const char *path)
{
	int off = fdt_path_offset(fdt, path);
	CHECK(off >= 0);
	return off;
}

static void refuse_u32(const char *path, const char *prop, uint32_t v, const char *msg)
{
	struct machine_desc d;
	full_desc(&d);
	void *fdt = editable(&d);
	CHECK(fdt != NULL);
	machine_desc_free(&d);
	if (!fdt)
		return;
	CHECK_EQ(fdt_setprop_u32(fdt, node_of(fdt, path), prop, v), 0);
	expect_refusal(fdt, msg);
	free(fdt);
}

static void refuse_prop(const char *path, const char *prop, const void *v, int len, const char *msg)
{
	struct machine_desc d;
	full_desc(&d);
	void *fdt = editable(&d);
	CHECK(fdt != NULL);
	machine_desc_free(&d);
	if (!fdt)
		return;
	CHECK_EQ(fdt_setprop(fdt, node_of(fdt, path), prop, v, len), 0);
	expect_refusal(fdt, msg);
	free(fdt);
}

static void refuse_string(const char *path, const char *prop, const char *s, const char *msg)
{
	refuse_prop(path, prop, s, (int)strlen(s) + 1, msg);
}

static void refuse_missing(const char *path, const char *prop, const char *msg)
{
	struct machine_desc d;
	full_desc(&d);
	void *fdt = editable(&d);
	CHECK(fdt != NULL);
	machine_desc_free(&d);
	if (!fdt)
		return;
	CHECK_EQ(fdt_delprop(fdt, node_of(fdt, path), prop), 0);
	expect_refusal(fdt, msg);
	free(fdt);
}

static void round_trip(void)
{
	struct machine_desc d, back;
	full_desc(&d);
	void *blob;
	size_t len;
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), 0);
	CHECK(len > 0 && len < 8192);
	CHECK_EQ(machine_from_fdt(blob, len, R, &back), 0);
	CHECK(machine_desc_equal(&d, &back));
	machine_desc_free(&back);

	/* Unaligned input and trailing bytes are fine. */
	uint8_t *odd = malloc(len + 9);
	memcpy(odd + 1, blob, len);
	memset(odd + 1 + len, 0xee, 8);
	CHECK_EQ(machine_from_fdt(odd + 1, len + 8, R, &back), 0);
	CHECK(machine_desc_equal(&d, &back));
	machine_desc_free(&back);
	free(odd);
	free(blob);
	machine_desc_free(&d);

	/* The board alone, the smallest and largest machine. */
	memset(&d, 0, sizeof(d));
	strcpy(d.name, "x");
	strcpy(d.board, R->board);
	d.mem_size = 32 * MiB;
	d.ncpus = 1;
	add_board(&d);
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), 0);
	CHECK_EQ(machine_from_fdt(blob, len, R, &back), 0);
	CHECK(machine_desc_equal(&d, &back));
	machine_desc_free(&back);
	free(blob);
	memset(d.name, 'n', 63);
	d.mem_size = 1ull << 40;
	d.ncpus = X86_MAX_VCPUS;
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), 0);
	CHECK_EQ(machine_from_fdt(blob, len, R, &back), 0);
	CHECK(machine_desc_equal(&d, &back));
	machine_desc_free(&back);
	free(blob);
}

static void layout(void)
{
	struct machine_desc d;
	full_desc(&d);
	void *fdt;
	size_t len;
	CHECK_EQ(machine_to_fdt(&d, R, &fdt, &len), 0);
	machine_desc_free(&d);
	CHECK_EQ(fdt_node_check_compatible(fdt, 0, "luavmm,machine-v2"), 0);
	int plen;
	CHECK(!strcmp(fdt_getprop(fdt, 0, "board", &plen), "pc"));
	CHECK(!strcmp(fdt_getprop(fdt, fdt_path_offset(fdt, "/devices/device@0"), "kind", &plen), "serial8250"));
	int n = fdt_path_offset(fdt, "/devices/device@7"); /* net3 */
	CHECK(n >= 0);
	CHECK(!strcmp(fdt_getprop(fdt, n, "kind", &plen), "virtio-net"));
	CHECK(!strcmp(fdt_getprop(fdt, n, "name", &plen), "net3"));
	const fdt32_t *qp = fdt_getprop(fdt, n, "queues", &plen);
	CHECK(qp && plen == 4 && fdt32_to_cpu(*qp) == 4);
	const fdt32_t *sv = fdt_getprop(fdt, n, "state-version", &plen);
	CHECK(sv && plen == 4 && fdt32_to_cpu(*sv) == 1);
	CHECK(fdt_getprop(fdt, n, "vhost", &plen) && plen == 0);
	CHECK(fdt_getprop(fdt, n, "backend-transfer", &plen) && plen == 0);
	CHECK(fdt_getprop(fdt, n, "backend-transfer-allowed", &plen) && plen == 0);
	CHECK(fdt_getprop(fdt, n, "preview", &plen) && plen == 0);
	CHECK(fdt_getprop(fdt, n, "mac", &plen) && plen == 6);
	int n0 = fdt_path_offset(fdt, "/devices/device@4");
	CHECK(!fdt_getprop(fdt, n0, "backend-transfer-allowed", &plen));
	CHECK(!fdt_getprop(fdt, n0, "preview", &plen));
	CHECK(!fdt_getprop(fdt, n0, "vhost", &plen));
	/* Without state, no version: the PS/2 controller. */
	CHECK(!fdt_getprop(fdt, fdt_path_offset(fdt, "/devices/device@2"), "state-version", &plen));
	const fdt32_t *mem = fdt_getprop(fdt, 0, "memory-size", &plen);
	CHECK(mem && plen == 8 && fdt32_to_cpu(mem[0]) == 0 && fdt32_to_cpu(mem[1]) == 512 * MiB);
	const fdt32_t *cpuid = fdt_getprop(fdt, 0, "cpuid", &plen);
	CHECK(cpuid && plen == 5 * 28);
	CHECK(cpuid && fdt32_to_cpu(cpuid[7]) == 1 && fdt32_to_cpu(cpuid[7 * 2 + 2]) == 1); /* leaf 1; 7's flags */
	free(fdt);
}

/* The CPUID table travels whole: a bad one is refused, naming the entry. */
static void refuses_cpuid(void)
{
	refuse_missing("/", "cpuid", "/: no property cpuid");
	refuse_prop("/", "cpuid", "\0\0\0\1", 4, "/: cpuid is 4 bytes (must be 1..256 entries of 28)");
	refuse_prop("/", "cpuid", "", 0, "/: cpuid is 0 bytes");
	fdt32_t two[14] = { 0 };
	two[7 + 1] = 0; /* the same 0x0.0 twice */
	refuse_prop("/", "cpuid", two, sizeof(two), "/: cpuid entry 1: 0x0.0 already given by entry 0");
	two[7] = cpu_to_fdt32(7);
	two[7 + 2] = cpu_to_fdt32(2);
	refuse_prop("/", "cpuid", two, sizeof(two), "/: cpuid entry 1 (0x7.0): flags 0x2");
	static fdt32_t many[(MACHINE_MAX_CPUID + 1) * 7];
	for (unsigned i = 0; i <= MACHINE_MAX_CPUID; i++)
		many[i * 7] = cpu_to_fdt32(i);
	refuse_prop("/", "cpuid", many, sizeof(many), "/: cpuid is 7196 bytes (must be 1..256 entries of 28)");
	/* 256 distinct entries are fine. */
	struct machine_desc d, back;
	full_desc(&d);
	d.ncpuid = MACHINE_MAX_CPUID;
	for (unsigned i = 0; i < MACHINE_MAX_CPUID; i++)
		d.cpuid[i] = (struct machine_cpuid){ .function = 0x80000000u + i, .eax = i };
	void *blob;
	size_t len;
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), 0);
	CHECK_EQ(machine_from_fdt(blob, len, R, &back), 0);
	CHECK(machine_desc_equal(&d, &back));
	machine_desc_free(&back);
	free(blob);
	machine_desc_free(&d);
}

static void refuses_root(void)
{
	refuse_string("/", "compatible", "luavmm,machine-v1", "/: compatible \"luavmm,machine-v1\"");
	refuse_missing("/", "compatible", "/: no property compatible");
	refuse_missing("/", "name", "/: no property name");
	refuse_string("/", "name", "", "/: name \"\" is 0 bytes long (must be 1..63)");
	char long_name[65];
	memset(long_name, 'a', 64);
	long_name[64] = 0;
	refuse_string("/", "name", long_name, "is 64 bytes long (must be 1..63)");
	refuse_prop("/", "name", "abc", 3, "/: name \"abc\" (3 bytes) is not one NUL-terminated string");
	refuse_prop("/", "name", "ab\0cd", 6, "is not one NUL-terminated string");

	uint64_t mem = cpu_to_fdt64(32 * MiB - 4096);
	refuse_prop("/", "memory-size", &mem, 8, "/: memory-size 33550336 (must be a multiple of 4096");
	mem = cpu_to_fdt64((1ull << 40) + 4096);
	refuse_prop("/", "memory-size", &mem, 8, "/: memory-size 1099511631872");
	mem = cpu_to_fdt64(64 * MiB + 1);
	refuse_prop("/", "memory-size", &mem, 8, "memory-size 67108865");
	refuse_u32("/", "memory-size", 64 * MiB, "/: memory-size is 4 bytes (must be an 8-byte u64");
	refuse_missing("/", "memory-size", "/: no property memory-size");

	refuse_u32("/", "vcpus", 0, "/: vcpus 0 (must be 1..64)");
	refuse_u32("/", "vcpus", X86_MAX_VCPUS + 1, "/: vcpus 65 (must be 1..64)");
	refuse_prop("/", "vcpus", "\0\0\0\0\0\0\0\1", 8, "/: vcpus is 8 bytes (must be a 4-byte u32)");
	refuse_string("/", "board", "q35", "/: board \"q35\" (this build has \"pc\")");
	refuse_missing("/", "board", "/: no property board");
}

static void refuses_device_values(void)
{
	refuse_u32("/devices/device@5", "queues", 9, "machine description: /devices/device@5: queues 9 (must be 1..8)");
	refuse_u32("/devices/device@4", "queues", 0, "/devices/device@4: queues 0 (must be 1..8)");
	refuse_u32("/devices/device@6", "queue_size", 32, "/devices/device@6: queue_size 32 (must be 64..1024)");
	refuse_u32("/devices/device@6", "queue_size", 2048, "/devices/device@6: queue_size 2048");
	refuse_u32("/devices/device@6", "queue_size", 96, "/devices/device@6: queue_size 96 (must be a power of 2");
	refuse_u32("/devices/device@6", "queue_size", 65536 + 256, "/devices/device@6: queue_size 65792");
	refuse_missing("/devices/device@11", "queue_size", "/devices/device@11: no property queue_size");
	refuse_prop("/devices/device@7", "mac", "\1\2\3\4\5", 5, "/devices/device@7: mac is 5 bytes (must be 6)");
	refuse_prop("/devices/device@7", "mac", "\1\2\3\4\5\6\7", 7, "/devices/device@7: mac is 7 bytes (must be 6)");
	refuse_prop("/devices/device@7", "mac", "\1\2\3\4\5\6", 6, "/devices/device@7: mac 01:02:03:04:05:06 is a multicast");
	refuse_missing("/devices/device@7", "mac", "/devices/device@7: no property mac");
	refuse_u32("/devices/device@8", "vhost", 1, "/devices/device@8: vhost has 4 bytes (must be an empty boolean");
	refuse_u32("/devices/device@8", "backend-transfer", 1, "/devices/device@8: backend-transfer has 4 bytes");
	refuse_u32("/devices/device@8", "preview", 1, "/devices/device@8: preview has 4 bytes");
	refuse_prop("/devices/device@1", "preview", NULL, 0, "/devices/device@1: a rtc has no preview to load");
	refuse_u32("/devices/device@8", "state-version", 2, "/devices/device@8: virtio-net state version 2 (this build loads 1..1)");
	refuse_u32("/devices/device@0", "state-version", 0, "/devices/device@0: serial8250 state version 0");
	refuse_missing("/devices/device@1", "state-version", "/devices/device@1: no property state-version");
}

static void refuses_device_names(void)
{
	refuse_string("/devices/device@5", "ifname", "", "/devices/device@5: ifname \"\" is 0 bytes long (must be 1..15)");
	refuse_string("/devices/device@5", "ifname", "0123456789abcdef", "/devices/device@5: ifname \"0123456789abcdef\" is 16 bytes long");
	refuse_string("/devices/device@5", "ifname", "a/b", "/devices/device@5: ifname \"a/b\" (no '/'");
	refuse_string("/devices/device@5", "ifname", "a b", "/devices/device@5: ifname \"a b\"");
	refuse_string("/devices/device@5", "ifname", "tap%d", "/devices/device@5: ifname \"tap%d\"");
	refuse_string("/devices/device@5", "ifname", ".", "/devices/device@5: ifname \".\"");
	refuse_string("/devices/device@5", "ifname", "..", "/devices/device@5: ifname \"..\"");
	refuse_prop("/devices/device@5", "ifname", "tap\1", 4, "/devices/device@5: ifname \"tap?\" (4 bytes) is not one NUL");
	refuse_string("/devices/device@9", "name", "a-very-long-name", "/devices/device@9: name \"a-very-long-name\" is 16 bytes long");
	refuse_missing("/devices/device@9", "ifname", "/devices/device@9: no property ifname");
	refuse_string("/devices/device@7", "name", "net1", "/devices/device@7: name \"net1\" already used by device@5");
	refuse_string("/devices/device@7", "name", "rtc", "/devices/device@7: name \"rtc\" already used by device@1");
	refuse_string("/devices/device@10", "ifname", "vmtap2", "/devices/device@10: ifname \"vmtap2\" already used by device@6");
	refuse_string("/devices/device@5", "kind", "virtio-gpu", "/devices/device@5: kind \"virtio-gpu\" is not a device type of this build");
	refuse_string("/devices/device@5", "kind", "rtc", "/devices/device@5: kind rtc is not a device type of this build");
	refuse_string("/devices/device@1", "kind", "serial8250", "/devices/device@1: kind serial8250 where board pc has rtc");
	refuse_missing("/devices/device@5", "kind", "/devices/device@5: no property kind");
}

/* Edits of the /devices node structure. */
static void refuses_device_nodes(void)
{
	struct machine_desc d;
	full_desc(&d);
	void *fdt = editable(&d);
	CHECK_EQ(fdt_del_node(fdt, node_of(fdt, "/devices")), 0);
	expect_refusal(fdt, "machine description: /devices: no such node");
	free(fdt);

	fdt = editable(&d);
	CHECK_EQ(fdt_del_node(fdt, node_of(fdt, "/devices/device@7")), 0);
	expect_refusal(fdt, "/devices: device@7 missing (indices must run from 0 without gaps)");
	free(fdt);

	fdt = editable(&d);
	CHECK_EQ(fdt_set_name(fdt, node_of(fdt, "/devices/device@9"), "device@8"), 0);
	expect_refusal(fdt, "/devices: two nodes device@8");
	free(fdt);

	/* Without the board's devices. */
	fdt = editable(&d);
	for (int i = 11; i >= 3; i--) {
		char path[32];
		snprintf(path, sizeof(path), "/devices/device@%d", i);
		CHECK_EQ(fdt_del_node(fdt, node_of(fdt, path)), 0);
	}
	expect_refusal(fdt, "/devices: 3 devices, board pc has 4");
	free(fdt);

	const char *bad[] = { "device@48", "device@99", "device@01", "device@", "device@a", "device@-1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fdt = editable(&d);
		CHECK_EQ(fdt_set_name(fdt, node_of(fdt, "/devices/device@11"), bad[i]), 0);
		expect_refusal(fdt, "machine description: /devices: ");
		CHECK_CONTAINS(vmm_error(), bad[i]);
		free(fdt);
	}
	fdt = editable(&d);
	CHECK_EQ(fdt_set_name(fdt, node_of(fdt, "/devices/device@11"), "net@0"), 0);
	expect_refusal(fdt, "/devices: unexpected node \"net@0\" (only device@<index>)");
	free(fdt);

	/* Unknown properties and nodes elsewhere are ignored. */
	fdt = editable(&d);
	CHECK_EQ(fdt_setprop_u32(fdt, 0, "future-thing", 7), 0);
	CHECK(fdt_add_subnode(fdt, 0, "cpus") >= 0);
	CHECK_EQ(fdt_setprop_u32(fdt, node_of(fdt, "/devices/device@4"), "mtu", 9000), 0);
	CHECK_EQ(fdt_pack(fdt), 0);
	struct machine_desc back;
	CHECK_EQ(machine_from_fdt(fdt, fdt_totalsize(fdt), R, &back), 0);
	CHECK(machine_desc_equal(&d, &back));
	machine_desc_free(&back);
	free(fdt);
	machine_desc_free(&d);
}

static void refuses_blob(void)
{
	struct machine_desc d;
	full_desc(&d);
	void *blob;
	size_t len;
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), 0);
	machine_desc_free(&d);
	CHECK_EQ(machine_from_fdt(blob, 39, R, &d), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: 39 bytes, too short for an FDT header");
	CHECK_EQ(machine_from_fdt(blob, (1u << 20) + 1, R, &d), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: 1048577 bytes (at most 1048576)");
	CHECK_EQ(machine_from_fdt(blob, len - 1, R, &d), -1);
	CHECK_CONTAINS(vmm_error(), "exceeds the");

	/* Two inputs that libfdt 1.6.1 alone gets wrong: an old version
	 * (NULL dereference in fdt_check_full) and a property of length -12
	 * (fdt_next_tag does not advance: an endless loop). */
	uint8_t *copy = malloc(len);
	memcpy(copy, blob, len);
	fdt_set_version(copy, 11);
	fdt_set_last_comp_version(copy, 2);
	CHECK_EQ(machine_from_fdt(copy, len, R, &d), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: FDT version 11 (must be 17)");
	memcpy(copy, blob, len);
	/* Root BEGIN_NODE, its empty name padded to 4, then the first PROP. */
	fdt32_t *first_prop = (fdt32_t *)(copy + fdt_off_dt_struct(copy) + 8);
	CHECK_EQ(fdt32_to_cpu(first_prop[0]), FDT_PROP);
	first_prop[1] = cpu_to_fdt32(0xfffffff4);
	CHECK_EQ(machine_from_fdt(copy, len, R, &d), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: malformed FDT structure: the tag at offset 8 does not advance");
	free(copy);

	((uint8_t *)blob)[0] ^= 0xff;
	CHECK_EQ(machine_from_fdt(blob, len, R, &d), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: bad FDT header");
	free(blob);
}

static void builder_refuses(void)
{
	struct machine_desc d;
	void *blob = (void *)1;
	size_t len = 1;
	full_desc(&d);
	net(&d, 2)->queues = 9;
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: /devices/device@6: queues 9 (must be 1..8)");
	CHECK(blob == NULL && len == 0);
	machine_desc_free(&d);

	full_desc(&d);
	d.ndevices = MACHINE_MAX_DEVICES + 1;
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), -1);
	CHECK_CONTAINS(vmm_error(), "/devices: 49 devices (at most 48)");
	d.ndevices = NBOARD + NNETS;
	machine_desc_free(&d);

	full_desc(&d);
	memset(d.name, 'x', sizeof(d.name)); /* no NUL */
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), -1);
	CHECK_CONTAINS(vmm_error(), "/: name");
	machine_desc_free(&d);

	full_desc(&d);
	d.ncpus = 0;
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), -1);
	CHECK_CONTAINS(vmm_error(), "/: vcpus 0");
	machine_desc_free(&d);

	full_desc(&d);
	strcpy(net(&d, 1)->ifname, "vmtap0");
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), -1);
	CHECK_CONTAINS(vmm_error(), "/devices/device@5: ifname \"vmtap0\" already used by device@4");
	machine_desc_free(&d);

	full_desc(&d);
	d.devices[0].type = &virtio_net_pci_type;
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), -1);
	CHECK_CONTAINS(vmm_error(), "/devices/device@0: kind virtio-net where board pc has serial8250");
	d.devices[0].type = R->board_types[0];
	machine_desc_free(&d);
}

static void truncated_everywhere(void)
{
	struct machine_desc d;
	full_desc(&d);
	void *blob;
	size_t len;
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), 0);
	machine_desc_free(&d);
	unsigned accepted = 0;
	for (size_t l = 0; l < len; l++) {
		/* An exact-size copy, so that a read past l is a real overrun (ASan). */
		void *part = malloc(l ? l : 1);
		memcpy(part, blob, l);
		if (machine_from_fdt(part, l, R, &d) == 0) {
			accepted++;
			machine_desc_free(&d);
		}
		free(part);
	}
	CHECK_EQ(accepted, 0);
	free(blob);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Whatever a successful parse returns must be within the documented bounds. */
static void check_bounds(const struct machine_desc *d)
{
	CHECK_EQ(machine_desc_check(d, R), 0);
	CHECK(d->mem_size % 4096 == 0 && d->mem_size >= 32 * MiB && d->mem_size <= (1ull << 40));
	CHECK(d->ncpus >= 1 && d->ncpus <= X86_MAX_VCPUS);
	CHECK(d->ndevices >= NBOARD && d->ndevices <= MACHINE_MAX_DEVICES);
	CHECK(memchr(d->name, 0, sizeof(d->name)) && d->name[0]);
	for (unsigned i = 0; i < d->ndevices && i < MACHINE_MAX_DEVICES; i++) {
		const struct machine_device *m = &d->devices[i];
		CHECK(m->type != NULL);
		CHECK(memchr(m->name, 0, sizeof(m->name)) && m->name[0]);
		if (m->type != &virtio_net_pci_type)
			continue;
		const struct virtio_net_pci_config *n = m->config;
		CHECK(memchr(n->ifname, 0, sizeof(n->ifname)) && n->ifname[0]);
		CHECK(!strpbrk(n->ifname, "/ %"));
		CHECK(n->queues >= 1 && n->queues <= 8);
		CHECK(n->queue_size >= 64 && n->queue_size <= 1024 && !(n->queue_size & (n->queue_size - 1)));
		CHECK(!(n->mac[0] & 1));
	}
}

static void random_flips(void)
{
	struct machine_desc d;
	full_desc(&d);
	void *blob;
	size_t len;
	CHECK_EQ(machine_to_fdt(&d, R, &blob, &len), 0);
	uint8_t *copy = malloc(len);
	unsigned accepted = 0, changed = 0;
	for (int run = 0; run < 10000; run++) {
		memcpy(copy, blob, len);
		unsigned nflips = 1 + (unsigned)(rng() % 4);
		for (unsigned f = 0; f < nflips; f++)
			copy[rng() % len] ^= (uint8_t)(1u << (rng() % 8));
		struct machine_desc out;
		if (machine_from_fdt(copy, len, R, &out) == 0) {
			accepted++;
			check_bounds(&out);
			changed += !machine_desc_equal(&out, &d);
			machine_desc_free(&out);
		} else {
			CHECK(vmm_error()[0] != '\0');
		}
	}
	/* Flips in names and values do get through; structural ones do not. */
	printf("  random flips: %u of 10000 accepted, %u of them changed values\n", accepted, changed);
	CHECK(accepted < 10000);
	free(copy);
	free(blob);
	machine_desc_free(&d);
}

int main(void)
{
	RUN(round_trip);
	RUN(layout);
	RUN(refuses_root);
	RUN(refuses_cpuid);
	RUN(refuses_device_values);
	RUN(refuses_device_names);
	RUN(refuses_device_nodes);
	RUN(refuses_blob);
	RUN(builder_refuses);
	RUN(truncated_everywhere);
	RUN(random_flips);
	return CHECK_DONE();
}
