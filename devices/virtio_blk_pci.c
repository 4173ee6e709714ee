/* virtio-blk as a PCI function: the device type that puts a virtio_blk
 * (virtio_blk.c) behind the virtio-pci transport (virtio_pci.c) on the
 * board's PCI bus, with its image as the backend. */
#include "virtio_blk_pci.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board_pc.h"
#include "err.h"
#include "migstream.h"
#include "virtio_pci.h"

/* How long a source that rolls back waits for the target to let go of the
 * image's locks (it frees its VM when told, or dies). */
#define RELOCK_MS 5000

struct blk_dev {
	struct device dev;
	struct virtio_blk *blk;
	struct virtio_pci *pci;
};

int virtio_blk_cache_parse(const char *s, enum blk_cache *out)
{
	if (!*s || !strcmp(s, "writeback"))
		*out = BLK_CACHE_WRITEBACK;
	else if (!strcmp(s, "writethrough"))
		*out = BLK_CACHE_WRITETHROUGH;
	else if (!strcmp(s, "none"))
		*out = BLK_CACHE_NONE;
	else
		return -1;
	return 0;
}

static int check_cache(const char *where, const struct dev_field *f, const void *value)
{
	enum blk_cache c;
	if (virtio_blk_cache_parse(value, &c))
		return vmm_fail("%s: %s \"%s\" (\"writeback\", \"writethrough\" or \"none\")", where, f->name,
				(const char *)value);
	return 0;
}

static int check_serial(const char *where, const struct dev_field *f, const void *value)
{
	for (const unsigned char *p = value; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return vmm_fail("%s: %s has a byte 0x%02x (printable ASCII only)", where, f->name, *p);
	return 0;
}

#define F(field) offsetof(struct virtio_blk_pci_config, field)
static const struct dev_field blk_fields[] = {
	{ .name = "path", .kind = DEV_STRING, .offset = F(path), .size = BLK_PATH_SIZE, .min = 1,
	  .max = BLK_PATH_SIZE - 1, .backend = true },
	{ .name = "readonly", .kind = DEV_FLAG, .offset = F(readonly), .optional = true },
	{ .name = "cache", .kind = DEV_STRING, .offset = F(cache), .size = BLK_CACHE_SIZE, .min = 1,
	  .max = BLK_CACHE_SIZE - 1, .optional = true, .check = check_cache },
	{ .name = "serial", .kind = DEV_STRING, .offset = F(serial), .size = VIRTIO_BLK_ID_BYTES + 1, .min = 1,
	  .max = VIRTIO_BLK_ID_BYTES, .optional = true, .check = check_serial },
	{ .name = "queues", .kind = DEV_U32, .offset = F(queues), .min = 1, .max = VIRTIO_BLK_MAX_QUEUES },
	{ .name = "queue_size", .kind = DEV_U16, .offset = F(queue_size), .min = 64, .max = 1024,
	  .power_of_2 = true },
	{ 0 },
};
#undef F

static void blk_defaults(void *config)
{
	struct virtio_blk_pci_config *c = config;
	memset(c, 0, sizeof(*c));
	snprintf(c->cache, sizeof(c->cache), "writeback");
	c->queues = 1;
	c->queue_size = 256;
}

static void blk_free(struct device *d)
{
	struct blk_dev *n = (struct blk_dev *)d;
	virtio_pci_free(n->pci);
	virtio_blk_free(n->blk);
	free(n);
}

static struct device *blk_create(const struct device_host *h, const char *name, void *config,
				 const struct dev_backend *in)
{
	struct virtio_blk_pci_config *c = config;
	struct pci_bus *bus = board_pc_pci_bus(h);
	if (!bus)
		return NULL;
	if (in && in->nfds != 1) {
		vmm_fail("%s: backend: %u fds, a disk has one (its image)", name, in->nfds);
		return NULL;
	}
	enum blk_cache cache;
	if (virtio_blk_cache_parse(c->cache, &cache)) {
		vmm_fail("%s: cache \"%s\"", name, c->cache);
		return NULL;
	}
	struct blk_dev *n = device_alloc(sizeof(*n), &virtio_blk_pci_type, name);
	if (!n)
		return NULL;
	struct virtio_blk_options o = {
		.name = n->dev.name,
		.path = c->path,
		.fd = in ? in->fds[0] : -1,
		.readonly = c->readonly,
		.cache = cache,
		.engine = BLK_ENGINE_AUTO,
		.serial = c->serial[0] ? c->serial : NULL,
		.queues = c->queues,
		.queue_size = c->queue_size,
		.defer_lock = h->incoming && !in,
	};
	n->blk = virtio_blk_new(&o, h->mem, h->loop);
	if (!n->blk) {
		free(n);
		return NULL;
	}
	if (in && virtio_blk_backend_check(n->blk, in->state, in->len))
		goto fail;
	n->pci = virtio_pci_new(bus, virtio_blk_device(n->blk), h->kvm, h->loop);
	if (!n->pci) {
		vmm_fail_context("%s", name);
		goto fail;
	}
	if (!in) { /* the description names the image wherever the target runs */
		char abs[PATH_MAX];
		if (realpath(c->path, abs) && strlen(abs) < sizeof(c->path))
			snprintf(c->path, sizeof(c->path), "%s", abs);
	}
	return &n->dev;
fail:
	if (in) /* a handed-in fd stays the caller's on failure */
		virtio_blk_disown_fd(n->blk);
	virtio_pci_free(n->pci);
	virtio_blk_free(n->blk);
	free(n);
	return NULL;
}

static int blk_realize(struct device *d)
{
	return virtio_pci_realize(((struct blk_dev *)d)->pci);
}

static int blk_quiesce(struct device *d)
{
	/* an image that stays here lets go of its locks for the target */
	return virtio_blk_quiesce(((struct blk_dev *)d)->blk, d->backend_leaving);
}

static int blk_unquiesce(struct device *d)
{
	return virtio_blk_unquiesce(((struct blk_dev *)d)->blk, RELOCK_MS);
}

static int blk_part_save(void *dev, struct mig_buf *b) { return virtio_blk_save(dev, b); }

/* An image this process opened itself is locked once its part checks out,
 * the source having let go at its freeze; let go again if the function
 * refuses its part. */
static int blk_part_check(void *dev, const void *p, size_t len)
{
	return virtio_blk_load_check(dev, p, len) || virtio_blk_take_lock(dev) ? -1 : 0;
}

static void blk_part_undo(void *dev) { virtio_blk_drop_deferred_lock(dev); }
static int blk_part_apply(void *dev, const void *p, size_t len) { return virtio_blk_load(dev, p, len); }

static const struct virtio_pci_part_ops blk_part = {
	.save = blk_part_save, .check = blk_part_check, .undo = blk_part_undo, .apply = blk_part_apply,
};

/* Version 1: the PCI function's part, then virtio-blk's
 * (virtio_pci_save_section). */
static int blk_save(struct device *d, uint16_t version, struct mig_buf *b)
{
	struct blk_dev *n = (struct blk_dev *)d;
	(void)version;
	return virtio_pci_save_section(n->pci, d->name, &blk_part, n->blk, b);
}

static int blk_load(struct device *d, uint16_t version, const void *p, size_t len)
{
	struct blk_dev *n = (struct blk_dev *)d;
	(void)version;
	return virtio_pci_load_section(n->pci, d->name, &blk_part, n->blk, p, len);
}

static int blk_resume_loaded(struct device *d)
{
	return virtio_pci_resume_loaded(((struct blk_dev *)d)->pci);
}

/* The function's BARs and MSI-X table, set up before the freeze. */
static int blk_preview_save(struct device *d, uint16_t version, struct mig_buf *b)
{
	(void)version;
	return virtio_pci_preview_save(((struct blk_dev *)d)->pci, b);
}

static int blk_preview_load(struct device *d, uint16_t version, const void *p, size_t len)
{
	(void)version;
	return virtio_pci_preview_load(((struct blk_dev *)d)->pci, p, len);
}

static unsigned blk_backend_fds(struct device *d, int *fds, unsigned max)
{
	if (max >= 1)
		fds[0] = virtio_blk_fd(((struct blk_dev *)d)->blk);
	return 1;
}

static int blk_backend_save(struct device *d, struct mig_buf *b)
{
	return virtio_blk_backend_save(((struct blk_dev *)d)->blk, b);
}

static void blk_stats(struct device *d, void (*emit)(void *ctx, const char *name, uint64_t value), void *ctx)
{
	struct virtio_blk_stats s;
	virtio_blk_get_stats(((struct blk_dev *)d)->blk, &s);
	emit(ctx, "read_reqs", s.read_reqs);
	emit(ctx, "read_bytes", s.read_bytes);
	emit(ctx, "write_reqs", s.write_reqs);
	emit(ctx, "write_bytes", s.write_bytes);
	emit(ctx, "flush_reqs", s.flush_reqs);
	emit(ctx, "discard_reqs", s.discard_reqs);
	emit(ctx, "write_zeroes_reqs", s.write_zeroes_reqs);
	emit(ctx, "io_errors", s.io_errors);
	emit(ctx, "unsupported", s.unsupported);
	emit(ctx, "inflight", s.inflight);
	emit(ctx, "capacity_sectors", virtio_blk_capacity(((struct blk_dev *)d)->blk));
}

static size_t blk_describe_state(struct device *d, char *buf, size_t len)
{
	return virtio_blk_describe(((struct blk_dev *)d)->blk, buf, len);
}

const struct device_type virtio_blk_pci_type = {
	.kind = "virtio-blk",
	.backend_label = "image",
	.config_size = sizeof(struct virtio_blk_pci_config),
	.fields = blk_fields,
	.config_defaults = blk_defaults,
	.state_version = 1, .state_min_save = 1, .state_min_load = 1,
	.create = blk_create,
	.free = blk_free,
	.realize = blk_realize,
	.quiesce = blk_quiesce,
	.unquiesce = blk_unquiesce,
	.save = blk_save,
	.load = blk_load,
	.resume_loaded = blk_resume_loaded,
	.preview_save = blk_preview_save,
	.preview_load = blk_preview_load,
	.backend_fds = blk_backend_fds,
	.backend_save = blk_backend_save,
	.stats = blk_stats,
	.describe_state = blk_describe_state,
};
