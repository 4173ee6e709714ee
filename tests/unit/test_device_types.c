/* What every device type of the registry promises, tested through the
 * registry alone (no type named here but in its fixture): built from its
 * default configuration on a VM-less device_host, a device with state
 * saves it in every version it writes; a fresh device loads it and saves
 * the same bytes again; a truncated or extended payload, or a version out
 * of range, is refused with a message and leaves the device as it was.
 * A new type is covered once it is in the registry; its fixture (below)
 * gives it a configuration that needs no more than this process has: a
 * network device gets a TAP in a private network namespace (root), and is
 * skipped without one. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bus.h"
#include "check.h"
#include "device.h"
#include "err.h"
#include "kvm.h"
#include "memory.h"
#include "migstream.h"
#include "registry.h"

#define RAM_SIZE (1u << 20)
#define MAX_DEVS 16

/* A host with buses, guest RAM and a loop, and no KVM. */
struct rig {
	struct device_host host;
	struct bus pio, mmio;
	struct kvm kvm;
	struct guest_mem mem;
	uint8_t *ram;
	uv_loop_t loop;
	struct device *devs[MAX_DEVS];
	unsigned n;
};

static void irq_line(void *opaque, unsigned gsi, int level)
{
	(void)opaque, (void)gsi, (void)level;
}

static void console_output(void *opaque, const uint8_t *buf, size_t len)
{
	(void)opaque, (void)buf, (void)len;
}

static void guest_reset(void *opaque, const char *why)
{
	(void)opaque, (void)why;
}

static struct device *find(void *opaque, const char *kind)
{
	struct rig *r = opaque;
	for (unsigned i = 0; i < r->n; i++)
		if (!strcmp(r->devs[i]->type->kind, kind))
			return r->devs[i];
	return NULL;
}

static bool net_ns; /* a private network namespace: TAPs can be made */

/* The configuration a fixture gives type t: its defaults, and a backend
 * this process can open. false when this machine cannot give one. */
static bool fixture_config(const struct device_type *t, void *config, unsigned instance)
{
	memset(config, 0, t->config_size);
	if (t->config_defaults)
		t->config_defaults(config);
	for (const struct dev_field *f = t->fields; f && f->name; f++) {
		char *p = (char *)config + f->offset;
		if (f->kind == DEV_MAC && !(p[0] | p[1] | p[2] | p[3] | p[4] | p[5])) {
			const uint8_t mac[6] = { 0x52, 0x54, 0x00, 0xab, 0xcd, (uint8_t)instance };
			memcpy(p, mac, 6);
		}
		if (f->backend && f->kind == DEV_STRING) {
			if (!net_ns) /* the one kind of backend so far: a TAP */
				return false;
			snprintf(p, f->size, "dtt%s%u", t->kind, instance);
			p[f->size - 1] = '\0';
			if (strlen(p) > f->max) {
				p[f->max - 1] = (char)('0' + instance);
				p[f->max] = '\0';
			}
		}
	}
	return true;
}

static int rig_up(struct rig *r)
{
	memset(r, 0, sizeof(*r));
	r->ram = calloc(1, RAM_SIZE);
	if (!r->ram || guest_mem_wrap(&r->mem, r->ram, RAM_SIZE) || uv_loop_init(&r->loop))
		return -1;
	bus_init(&r->pio, "pio");
	bus_init(&r->mmio, "mmio");
	r->kvm.sys_fd = r->kvm.vm_fd = -1;
	r->host = (struct device_host){
		.vm_name = "rig", .kvm = &r->kvm, .mem = &r->mem, .pio = &r->pio, .mmio = &r->mmio,
		.loop = &r->loop, .opaque = r, .irq_line = irq_line, .console_output = console_output,
		.guest_reset = guest_reset, .find = find,
	};
	for (const struct device_type *const *t = device_registry.board_types; *t; t++) {
		struct device *d = (*t)->create(&r->host, (*t)->kind, NULL, NULL);
		if (!d)
			return -1;
		r->devs[r->n++] = d;
	}
	return 0;
}

static void rig_down(struct rig *r)
{
	while (r->n > 0) {
		struct device *d = r->devs[--r->n];
		void *config = d->config;
		d->type->free(d);
		free(config);
	}
	uv_run(&r->loop, UV_RUN_NOWAIT);
	uv_loop_close(&r->loop);
	bus_destroy(&r->pio);
	bus_destroy(&r->mmio);
	free(r->ram);
}

/* The device of type t on rig r: the board's, or a new one. */
static struct device *instance(struct rig *r, const struct device_type *t, unsigned n)
{
	for (unsigned i = 0; i < r->n; i++)
		if (r->devs[i]->type == t)
			return r->devs[i];
	void *config = calloc(1, t->config_size ? t->config_size : 1);
	if (!config || !fixture_config(t, config, n) || dev_fields_check(t->fields, config, t->kind)) {
		free(config);
		return NULL;
	}
	char name[16];
	snprintf(name, sizeof(name), "dev%u", n);
	struct device *d = t->create(&r->host, name, config, NULL);
	if (!d) {
		fprintf(stderr, "  %s: create: %s\n", t->kind, vmm_error());
		free(config);
		return NULL;
	}
	d->config = config;
	r->devs[r->n++] = d;
	return d;
}

static int save(struct device *d, uint16_t version, struct mig_buf *b)
{
	mig_buf_init(b);
	if (d->type->quiesce && d->type->quiesce(d))
		return -1;
	return d->type->save(d, version, b);
}

static bool same(const struct mig_buf *a, const struct mig_buf *b)
{
	return a->len == b->len && !memcmp(a->data, b->data, a->len);
}

static unsigned types_tested, types_skipped;

/* One type: every version it writes round-trips, bad payloads are refused. */
static void check_type(const struct device_type *t)
{
	struct rig src, dst;
	if (rig_up(&src) || rig_up(&dst)) {
		CHECK(!"rig_up");
		return;
	}
	struct device *a = instance(&src, t, 1), *b = instance(&dst, t, 2);
	if (!a || !b) {
		printf("  %s: skipped (no backend this process can open)\n", t->kind);
		types_skipped++;
		goto out;
	}
	types_tested++;
	CHECK(t->state_min_load >= 1 && t->state_min_load <= t->state_version);
	CHECK(t->state_min_save >= 1 && t->state_min_save <= t->state_version);
	CHECK(t->load != NULL && t->save != NULL);
	for (uint16_t v = t->state_min_save; v <= t->state_version; v++) {
		struct mig_buf first, again;
		CHECK_EQ(save(a, v, &first), 0);
		CHECK_EQ(t->load(b, v, first.data, first.len), 0);
		CHECK_EQ(save(b, v, &again), 0);
		CHECK(same(&first, &again));
		if (!same(&first, &again))
			fprintf(stderr, "  %s: version %u: %zu bytes saved, %zu after a load\n", t->kind, v, first.len,
				again.len);

		/* Refusals leave the device as it was. */
		struct mig_buf before, after;
		CHECK_EQ(save(b, v, &before), 0);
		if (first.len > 0) {
			CHECK_EQ(t->load(b, v, first.data, first.len - 1), -1);
			CHECK(vmm_error()[0] != '\0');
		}
		uint8_t *longer = malloc(first.len + 1);
		memcpy(longer, first.data, first.len);
		longer[first.len] = 0x5a;
		CHECK_EQ(t->load(b, v, longer, first.len + 1), -1);
		CHECK(vmm_error()[0] != '\0');
		free(longer);
		CHECK_EQ(save(b, v, &after), 0);
		CHECK(same(&before, &after));
		mig_buf_free(&before);
		mig_buf_free(&after);
		mig_buf_free(&first);
		mig_buf_free(&again);
	}
out:
	rig_down(&src);
	rig_down(&dst);
}

static void test_every_type_with_state_round_trips(void)
{
	const struct device_type *const *lists[] = { device_registry.board_types, device_registry.types };
	for (unsigned l = 0; l < 2; l++)
		for (const struct device_type *const *t = lists[l]; *t; t++)
			if ((*t)->state_version)
				check_type(*t);
	printf("  %u types round-tripped, %u skipped\n", types_tested, types_skipped);
	CHECK(types_tested >= 2); /* at least the board's serial port and clock */
}

/* Every type's table is well-formed: named fields, in-bounds offsets, a
 * backend field only on a type with backend ops, defaults that pass. */
static void test_every_type_is_well_formed(void)
{
	const struct device_type *const *lists[] = { device_registry.board_types, device_registry.types };
	for (unsigned l = 0; l < 2; l++)
		for (const struct device_type *const *t = lists[l]; *t; t++) {
			CHECK((*t)->kind && (*t)->kind[0] && strlen((*t)->kind) < 32);
			CHECK((*t)->create && (*t)->free);
			CHECK(device_registry_find(&device_registry, (*t)->kind) == *t);
			CHECK(device_registry_addable(&device_registry, *t) == (l == 1));
			for (const struct dev_field *f = (*t)->fields; f && f->name; f++) {
				CHECK(f->offset < (*t)->config_size);
				CHECK(f->kind != DEV_STRING || f->offset + f->size <= (*t)->config_size);
				if (f->backend)
					CHECK((*t)->backend_fds != NULL);
			}
			if ((*t)->backend_fds)
				CHECK(device_backend_field(*t) != NULL);
		}
}

int main(void)
{
	/* A private network namespace for the TAPs of network devices. */
	net_ns = unshare(CLONE_NEWNET) == 0;
	if (!net_ns)
		printf("note: no private network namespace (%s): network devices are skipped\n", strerror(errno));
	RUN(test_every_type_is_well_formed);
	RUN(test_every_type_with_state_round_trips);
	return CHECK_DONE();
}
