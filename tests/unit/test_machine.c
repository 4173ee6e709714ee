/* The machine description FDT: a round trip, every refusal of the parser
 * (each bad value written into a valid blob with libfdt's read-write API),
 * every truncation, and random byte flips that must never crash nor let an
 * out-of-bounds value through. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libfdt.h>

#include "check.h"
#include "err.h"
#include "machine.h"
#include "x86_boot.h"

#define MiB (1ull << 20)

static void full_desc(struct machine_desc *d)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", "web-frontend");
	d->mem_size = 512 * MiB;
	d->ncpus = 4;
	d->nnets = MACHINE_MAX_NETS;
	for (unsigned i = 0; i < d->nnets; i++) {
		struct machine_net *n = &d->nets[i];
		snprintf(n->name, sizeof(n->name), "net%u", i);
		snprintf(n->ifname, sizeof(n->ifname), "vmtap%u", i);
		uint8_t mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, (uint8_t)(0x50 + i) };
		memcpy(n->mac, mac, 6);
		n->queue_pairs = 1 + i;
		n->queue_size = (uint16_t)(64u << (i % 5));
		n->vhost = i & 1;
		n->transfer = (i & 2) != 0;
		n->transfer_allowed = (i & 6) != 0;
	}
}

/* A valid blob of desc d, reopened with room for edits. */
static void *editable(const struct machine_desc *d)
{
	void *blob;
	size_t len;
	if (machine_to_fdt(d, &blob, &len)) {
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
	int rc = machine_from_fdt(fdt, fdt_totalsize(fdt), &d);
	CHECK_EQ(rc, -1);
	CHECK_CONTAINS(vmm_error(), msg);
	if (rc == -1)
		CHECK_EQ(d.nnets, 0); /* zeroed on failure */
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
	CHECK_EQ(machine_to_fdt(&d, &blob, &len), 0);
	CHECK(len > 0 && len < 4096);
	CHECK_EQ(machine_from_fdt(blob, len, &back), 0);
	CHECK(!memcmp(&d, &back, sizeof(d)));

	/* Unaligned input and trailing bytes are fine. */
	uint8_t *odd = malloc(len + 9);
	memcpy(odd + 1, blob, len);
	memset(odd + 1 + len, 0xee, 8);
	memset(&back, 0x55, sizeof(back));
	CHECK_EQ(machine_from_fdt(odd + 1, len + 8, &back), 0);
	CHECK(!memcmp(&d, &back, sizeof(d)));
	free(odd);
	free(blob);

	/* No nets at all, the smallest and largest machine. */
	memset(&d, 0, sizeof(d));
	strcpy(d.name, "x");
	d.mem_size = 32 * MiB;
	d.ncpus = 1;
	CHECK_EQ(machine_to_fdt(&d, &blob, &len), 0);
	CHECK_EQ(machine_from_fdt(blob, len, &back), 0);
	CHECK(!memcmp(&d, &back, sizeof(d)));
	free(blob);
	memset(d.name, 'n', 63);
	d.mem_size = 1ull << 40;
	d.ncpus = X86_MAX_VCPUS;
	CHECK_EQ(machine_to_fdt(&d, &blob, &len), 0);
	CHECK_EQ(machine_from_fdt(blob, len, &back), 0);
	CHECK(!memcmp(&d, &back, sizeof(d)));
	free(blob);
}

static void layout(void)
{
	struct machine_desc d;
	full_desc(&d);
	void *fdt;
	size_t len;
	CHECK_EQ(machine_to_fdt(&d, &fdt, &len), 0);
	CHECK_EQ(fdt_node_check_compatible(fdt, 0, "luavmm,machine-v1"), 0);
	int n = fdt_path_offset(fdt, "/nets/net@3");
	CHECK(n >= 0);
	int plen;
	const fdt32_t *qp = fdt_getprop(fdt, n, "queue-pairs", &plen);
	CHECK(qp && plen == 4 && fdt32_to_cpu(*qp) == 4);
	CHECK(fdt_getprop(fdt, n, "vhost", &plen) && plen == 0);
	CHECK(fdt_getprop(fdt, n, "backend-transfer", &plen) && plen == 0);
	CHECK(fdt_getprop(fdt, n, "backend-transfer-allowed", &plen) && plen == 0);
	CHECK(!fdt_getprop(fdt, fdt_path_offset(fdt, "/nets/net@0"), "backend-transfer-allowed", &plen));
	CHECK(!fdt_getprop(fdt, fdt_path_offset(fdt, "/nets/net@0"), "vhost", &plen));
	const fdt32_t *mem = fdt_getprop(fdt, 0, "memory-size", &plen);
	CHECK(mem && plen == 8 && fdt32_to_cpu(mem[0]) == 0 && fdt32_to_cpu(mem[1]) == 512 * MiB);
	free(fdt);
}

static void refuses_root(void)
{
	refuse_string("/", "compatible", "luavmm,machine-v2", "/: compatible \"luavmm,machine-v2\"");
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
}

static void refuses_net_values(void)
{
	refuse_u32("/nets/net@1", "queue-pairs", 9, "machine description: /nets/net@1: queue-pairs 9 (must be 1..8)");
	refuse_u32("/nets/net@0", "queue-pairs", 0, "/nets/net@0: queue-pairs 0 (must be 1..8)");
	refuse_u32("/nets/net@2", "queue-size", 32, "/nets/net@2: queue-size 32 (must be a power of 2 from 64 to 1024)");
	refuse_u32("/nets/net@2", "queue-size", 2048, "/nets/net@2: queue-size 2048");
	refuse_u32("/nets/net@2", "queue-size", 96, "/nets/net@2: queue-size 96");
	refuse_u32("/nets/net@2", "queue-size", 65536 + 256, "/nets/net@2: queue-size 65792");
	refuse_missing("/nets/net@7", "queue-size", "/nets/net@7: no property queue-size");
	refuse_prop("/nets/net@3", "mac", "\1\2\3\4\5", 5, "/nets/net@3: mac is 5 bytes (must be 6)");
	refuse_prop("/nets/net@3", "mac", "\1\2\3\4\5\6\7", 7, "/nets/net@3: mac is 7 bytes (must be 6)");
	refuse_missing("/nets/net@3", "mac", "/nets/net@3: no property mac");
	refuse_u32("/nets/net@4", "vhost", 1, "/nets/net@4: vhost has 4 bytes (must be an empty boolean");
	refuse_u32("/nets/net@4", "backend-transfer", 1, "/nets/net@4: backend-transfer has 4 bytes");
}

static void refuses_net_names(void)
{
	refuse_string("/nets/net@1", "ifname", "", "/nets/net@1: ifname \"\" is 0 bytes long (must be 1..15)");
	refuse_string("/nets/net@1", "ifname", "0123456789abcdef", "/nets/net@1: ifname \"0123456789abcdef\" is 16 bytes long");
	refuse_string("/nets/net@1", "ifname", "a/b", "/nets/net@1: ifname \"a/b\" (no '/'");
	refuse_string("/nets/net@1", "ifname", "a b", "/nets/net@1: ifname \"a b\"");
	refuse_string("/nets/net@1", "ifname", "tap%d", "/nets/net@1: ifname \"tap%d\"");
	refuse_string("/nets/net@1", "ifname", ".", "/nets/net@1: ifname \".\"");
	refuse_string("/nets/net@1", "ifname", "..", "/nets/net@1: ifname \"..\"");
	refuse_prop("/nets/net@1", "ifname", "tap\1", 4, "/nets/net@1: ifname \"tap?\" (4 bytes) is not one NUL");
	refuse_string("/nets/net@5", "name", "a-very-long-name", "/nets/net@5: name \"a-very-long-name\" is 16 bytes long");
	refuse_missing("/nets/net@5", "ifname", "/nets/net@5: no property ifname");
	refuse_string("/nets/net@3", "name", "net1", "/nets/net@3: name \"net1\" already used by /nets/net@1");
	refuse_string("/nets/net@6", "ifname", "vmtap2", "/nets/net@6: ifname \"vmtap2\" already used by /nets/net@2");
}

/* Edits of the /nets node structure. */
static void refuses_net_nodes(void)
{
	struct machine_desc d;
	full_desc(&d);
	void *fdt = editable(&d);
	CHECK_EQ(fdt_del_node(fdt, node_of(fdt, "/nets")), 0);
	expect_refusal(fdt, "machine description: /nets: no such node");
	free(fdt);

	fdt = editable(&d);
	CHECK_EQ(fdt_del_node(fdt, node_of(fdt, "/nets/net@3")), 0);
	expect_refusal(fdt, "/nets: net@3 missing (indices must run from 0 without gaps)");
	free(fdt);

	fdt = editable(&d);
	CHECK_EQ(fdt_set_name(fdt, node_of(fdt, "/nets/net@5"), "net@4"), 0);
	expect_refusal(fdt, "/nets: two nodes net@4");
	free(fdt);

	const char *bad[] = { "net@8", "net@9", "net@01", "net@", "net@a", "net@-1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fdt = editable(&d);
		CHECK_EQ(fdt_set_name(fdt, node_of(fdt, "/nets/net@7"), bad[i]), 0);
		expect_refusal(fdt, "machine description: /nets: ");
		CHECK_CONTAINS(vmm_error(), bad[i]);
		free(fdt);
	}
	fdt = editable(&d);
	CHECK_EQ(fdt_set_name(fdt, node_of(fdt, "/nets/net@7"), "serial@0"), 0);
	expect_refusal(fdt, "/nets: unexpected node \"serial@0\" (only net@<index>)");
	free(fdt);

	/* Unknown properties and nodes elsewhere are ignored. */
	fdt = editable(&d);
	CHECK_EQ(fdt_setprop_u32(fdt, 0, "future-thing", 7), 0);
	CHECK(fdt_add_subnode(fdt, 0, "rtc") >= 0);
	CHECK_EQ(fdt_setprop_u32(fdt, node_of(fdt, "/nets/net@0"), "mtu", 9000), 0);
	CHECK_EQ(fdt_pack(fdt), 0);
	struct machine_desc back;
	CHECK_EQ(machine_from_fdt(fdt, fdt_totalsize(fdt), &back), 0);
	CHECK(!memcmp(&d, &back, sizeof(d)));
	free(fdt);
}

static void refuses_blob(void)
{
	struct machine_desc d;
	full_desc(&d);
	void *blob;
	size_t len;
	CHECK_EQ(machine_to_fdt(&d, &blob, &len), 0);
	CHECK_EQ(machine_from_fdt(blob, 39, &d), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: 39 bytes, too short for an FDT header");
	CHECK_EQ(machine_from_fdt(blob, (1u << 20) + 1, &d), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: 1048577 bytes (at most 1048576)");
	CHECK_EQ(machine_from_fdt(blob, len - 1, &d), -1);
	CHECK_CONTAINS(vmm_error(), "exceeds the");

	/* Two inputs that libfdt 1.6.1 alone gets wrong: an old version
	 * (NULL dereference in fdt_check_full) and a property of length -12
	 * (fdt_next_tag does not advance: an endless loop). */
	uint8_t *copy = malloc(len);
	memcpy(copy, blob, len);
	fdt_set_version(copy, 11);
	fdt_set_last_comp_version(copy, 2);
	CHECK_EQ(machine_from_fdt(copy, len, &d), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: FDT version 11 (must be 17)");
	memcpy(copy, blob, len);
	/* Root BEGIN_NODE, its empty name padded to 4, then the first PROP. */
	fdt32_t *first_prop = (fdt32_t *)(copy + fdt_off_dt_struct(copy) + 8);
	CHECK_EQ(fdt32_to_cpu(first_prop[0]), FDT_PROP);
	first_prop[1] = cpu_to_fdt32(0xfffffff4);
	CHECK_EQ(machine_from_fdt(copy, len, &d), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: malformed FDT structure: the tag at offset 8 does not advance");
	free(copy);

	((uint8_t *)blob)[0] ^= 0xff;
	CHECK_EQ(machine_from_fdt(blob, len, &d), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: bad FDT header");
	free(blob);
}

static void builder_refuses(void)
{
	struct machine_desc d;
	void *blob = (void *)1;
	size_t len = 1;
	full_desc(&d);
	d.nets[2].queue_pairs = 9;
	CHECK_EQ(machine_to_fdt(&d, &blob, &len), -1);
	CHECK_CONTAINS(vmm_error(), "machine description: /nets/net@2: queue-pairs 9 (must be 1..8)");
	CHECK(blob == NULL && len == 0);

	full_desc(&d);
	d.nnets = 9;
	CHECK_EQ(machine_to_fdt(&d, &blob, &len), -1);
	CHECK_CONTAINS(vmm_error(), "/nets: 9 nets (at most 8)");

	full_desc(&d);
	memset(d.name, 'x', sizeof(d.name)); /* no NUL */
	CHECK_EQ(machine_to_fdt(&d, &blob, &len), -1);
	CHECK_CONTAINS(vmm_error(), "/: name");

	full_desc(&d);
	d.ncpus = 0;
	CHECK_EQ(machine_to_fdt(&d, &blob, &len), -1);
	CHECK_CONTAINS(vmm_error(), "/: vcpus 0");

	full_desc(&d);
	strcpy(d.nets[1].ifname, "vmtap0");
	CHECK_EQ(machine_to_fdt(&d, &blob, &len), -1);
	CHECK_CONTAINS(vmm_error(), "/nets/net@1: ifname \"vmtap0\" already used by /nets/net@0");
}

static void truncated_everywhere(void)
{
	struct machine_desc d;
	full_desc(&d);
	void *blob;
	size_t len;
	CHECK_EQ(machine_to_fdt(&d, &blob, &len), 0);
	unsigned accepted = 0;
	for (size_t l = 0; l < len; l++) {
		/* An exact-size copy, so that a read past l is a real overrun (ASan). */
		void *part = malloc(l ? l : 1);
		memcpy(part, blob, l);
		if (machine_from_fdt(part, l, &d) == 0)
			accepted++;
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
	CHECK_EQ(machine_desc_check(d), 0);
	CHECK(d->mem_size % 4096 == 0 && d->mem_size >= 32 * MiB && d->mem_size <= (1ull << 40));
	CHECK(d->ncpus >= 1 && d->ncpus <= X86_MAX_VCPUS);
	CHECK(d->nnets <= MACHINE_MAX_NETS);
	CHECK(memchr(d->name, 0, sizeof(d->name)) && d->name[0]);
	for (unsigned i = 0; i < d->nnets && i < MACHINE_MAX_NETS; i++) {
		const struct machine_net *n = &d->nets[i];
		CHECK(memchr(n->name, 0, sizeof(n->name)) && n->name[0]);
		CHECK(memchr(n->ifname, 0, sizeof(n->ifname)) && n->ifname[0]);
		CHECK(!strpbrk(n->ifname, "/ %"));
		CHECK(n->queue_pairs >= 1 && n->queue_pairs <= 8);
		CHECK(n->queue_size >= 64 && n->queue_size <= 1024 && !(n->queue_size & (n->queue_size - 1)));
	}
}

static void random_flips(void)
{
	struct machine_desc d;
	full_desc(&d);
	void *blob;
	size_t len;
	CHECK_EQ(machine_to_fdt(&d, &blob, &len), 0);
	uint8_t *copy = malloc(len);
	unsigned accepted = 0, changed = 0;
	for (int run = 0; run < 10000; run++) {
		memcpy(copy, blob, len);
		unsigned nflips = 1 + (unsigned)(rng() % 4);
		for (unsigned f = 0; f < nflips; f++)
			copy[rng() % len] ^= (uint8_t)(1u << (rng() % 8));
		struct machine_desc out;
		if (machine_from_fdt(copy, len, &out) == 0) {
			accepted++;
			check_bounds(&out);
			changed += memcmp(&out, &d, sizeof(d)) != 0;
		} else {
			CHECK(vmm_error()[0] != '\0');
		}
	}
	/* Flips in names and values do get through; structural ones do not. */
	printf("  random flips: %u of 10000 accepted, %u of them changed values\n", accepted, changed);
	CHECK(accepted < 10000);
	free(copy);
	free(blob);
}

int main(void)
{
	RUN(round_trip);
	RUN(layout);
	RUN(refuses_root);
	RUN(refuses_net_values);
	RUN(refuses_net_names);
	RUN(refuses_net_nodes);
	RUN(refuses_blob);
	RUN(builder_refuses);
	RUN(truncated_everywhere);
	RUN(random_flips);
	return CHECK_DONE();
}
