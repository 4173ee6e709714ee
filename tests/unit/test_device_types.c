/* What every device type of the registry promises, tested through the
 * registry alone (no type named here but in its fixture): built from its
 * default configuration on a VM-less device_host, a device with state
 * saves it in every version it writes; a fresh device loads it and saves
 * the same bytes again; a truncated or extended payload, or a version out
 * of range, is refused with a message and leaves the device as it was.
 * A new type is covered once it is in the registry; its fixture (below)
 * (device_rig.c) gives it a configuration that needs no more than this process has: a
 * network device gets a TAP in a private network namespace (root), and is
 * skipped without one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "device.h"
#include "device_rig.h"
#include "err.h"
#include "migstream.h"
#include "registry.h"

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
	struct device *a = rig_instance(&src, t, 1), *b = rig_instance(&dst, t, 2);
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
	if (!rig_private_netns())
		printf("note: no private network namespace (%s): network devices are skipped\n", strerror(errno));
	RUN(test_every_type_is_well_formed);
	RUN(test_every_type_with_state_round_trips);
	return CHECK_DONE();
}
