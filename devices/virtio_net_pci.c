/* virtio-net as a PCI function: the device type that puts a virtio_net
 * (virtio_net.c) behind the virtio-pci transport (virtio_pci.c) on the
 * board's PCI bus, with its TAP (or vhost-net) backend. */
#include "virtio_net_pci.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board_pc.h"
#include "err.h"
#include "migstream.h"
#include "virtio_net.h"
#include "virtio_pci.h"

struct net_dev {
	struct device dev;
	struct virtio_net *net;
	struct virtio_pci *pci;
};

/* What the kernel accepts as an interface name (dev_valid_name). */
static int check_ifname(const char *where, const struct dev_field *f, const void *value)
{
	const char *s = value;
	if (strpbrk(s, "/ %:") || !strcmp(s, ".") || !strcmp(s, ".."))
		return vmm_fail("%s: %s \"%s\" (no '/', ' ', ':' or '%%', not \".\" or \"..\")", where, f->name, s);
	return 0;
}

static int check_mac(const char *where, const struct dev_field *f, const void *value)
{
	const uint8_t *m = value;
	char s[18];
	dev_mac_format(m, s);
	if (m[0] & 1)
		return vmm_fail("%s: %s %s is a multicast address (the first byte must be even)", where, f->name, s);
	if (!(m[0] | m[1] | m[2] | m[3] | m[4] | m[5]))
		return vmm_fail("%s: %s %s is not a usable address", where, f->name, s);
	return 0;
}

#define F(field) offsetof(struct virtio_net_pci_config, field)
static const struct dev_field net_fields[] = {
	{ .name = "ifname", .kind = DEV_STRING, .offset = F(ifname), .size = IFNAME_SIZE, .min = 1,
	  .max = IFNAME_SIZE - 1, .backend = true, .check = check_ifname },
	{ .name = "mac", .kind = DEV_MAC, .offset = F(mac), .check = check_mac },
	{ .name = "queues", .kind = DEV_U32, .offset = F(queues), .min = 1, .max = VIRTIO_NET_MAX_PAIRS },
	{ .name = "queue_size", .kind = DEV_U16, .offset = F(queue_size), .min = 64, .max = 1024,
	  .power_of_2 = true },
	{ .name = "vhost", .kind = DEV_FLAG, .offset = F(vhost), .optional = true },
	{ 0 },
};
#undef F

static void net_defaults(void *config)
{
	struct virtio_net_pci_config *c = config;
	memset(c, 0, sizeof(*c));
	c->queues = 1;
	c->queue_size = 256;
}

static void net_free(struct device *d)
{
	struct net_dev *n = (struct net_dev *)d;
	virtio_pci_free(n->pci);
	virtio_net_free(n->net);
	free(n);
}

static struct device *net_create(const struct device_host *h, const char *name, void *config,
				 const struct dev_backend *in)
{
	struct virtio_net_pci_config *c = config;
	struct pci_bus *bus = board_pc_pci_bus(h);
	if (!bus)
		return NULL;
	if (!h->loop) {
		vmm_fail("%s: no event loop to run a network device on", name);
		return NULL;
	}
	if (in && in->nfds != c->queues) {
		vmm_fail("%s: backend: %u fds, the description has %u queue pairs", name, in->nfds, c->queues);
		return NULL;
	}
	struct net_dev *n = device_alloc(sizeof(*n), &virtio_net_pci_type, name);
	if (!n)
		return NULL;
	struct virtio_net_options o = {
		.name = n->dev.name,
		.ifname = in ? NULL : c->ifname,
		.tap_fds = in ? in->fds : NULL,
		.queue_pairs = c->queues,
		.queue_size = c->queue_size,
		.vhost = c->vhost,
		.incoming = in != NULL,
	};
	memcpy(o.mac, c->mac, sizeof(o.mac));
	n->net = virtio_net_new(&o, h->mem, h->loop);
	if (!n->net) {
		free(n);
		return NULL;
	}
	if (in && virtio_net_backend_check(n->net, in->state, in->len)) {
		vmm_fail_context("%s", name);
		goto fail;
	}
	n->pci = virtio_pci_new(bus, virtio_net_device(n->net), h->kvm, h->loop);
	if (!n->pci) {
		vmm_fail_context("%s", name);
		goto fail;
	}
	if (!in) /* the TAP it opened (an adopted one keeps the source's name) */
		snprintf(c->ifname, sizeof(c->ifname), "%s", virtio_net_ifname(n->net));
	return &n->dev;
fail:
	if (in) /* handed-in fds stay the caller's on failure */
		virtio_net_disown_tap(n->net);
	virtio_net_free(n->net);
	free(n);
	return NULL;
}

static int net_realize(struct device *d)
{
	struct net_dev *n = (struct net_dev *)d;
	return virtio_pci_realize(n->pci) || virtio_net_realize(n->net) ? -1 : 0;
}

static int net_quiesce(struct device *d)
{
	return virtio_net_quiesce(((struct net_dev *)d)->net);
}

static int net_unquiesce(struct device *d)
{
	return virtio_net_unquiesce(((struct net_dev *)d)->net);
}

static int net_part_save(void *dev, struct mig_buf *b) { return virtio_net_save(dev, b); }
static int net_part_check(void *dev, const void *p, size_t len) { return virtio_net_load_check(dev, p, len); }
static int net_part_apply(void *dev, const void *p, size_t len) { return virtio_net_load(dev, p, len); }

static const struct virtio_pci_part_ops net_part = {
	.save = net_part_save, .check = net_part_check, .apply = net_part_apply,
};

/* Version 1: the PCI function's part, then virtio-net's
 * (virtio_pci_save_section). */
static int net_save(struct device *d, uint16_t version, struct mig_buf *b)
{
	struct net_dev *n = (struct net_dev *)d;
	(void)version;
	return virtio_pci_save_section(n->pci, d->name, &net_part, n->net, b);
}

static int net_load(struct device *d, uint16_t version, const void *p, size_t len)
{
	struct net_dev *n = (struct net_dev *)d;
	(void)version;
	return virtio_pci_load_section(n->pci, d->name, &net_part, n->net, p, len);
}

static int net_resume_loaded(struct device *d)
{
	return virtio_pci_resume_loaded(((struct net_dev *)d)->pci);
}

/* The function's BARs and MSI-X table, set up before the freeze. */
static int net_preview_save(struct device *d, uint16_t version, struct mig_buf *b)
{
	(void)version;
	return virtio_pci_preview_save(((struct net_dev *)d)->pci, b);
}

static int net_preview_load(struct device *d, uint16_t version, const void *p, size_t len)
{
	(void)version;
	return virtio_pci_preview_load(((struct net_dev *)d)->pci, p, len);
}

static unsigned net_backend_fds(struct device *d, int *fds, unsigned max)
{
	return virtio_net_tap_fds(((struct net_dev *)d)->net, fds, max);
}

static int net_backend_save(struct device *d, struct mig_buf *b)
{
	return virtio_net_backend_save(((struct net_dev *)d)->net, b);
}

static void net_stats(struct device *d, void (*emit)(void *ctx, const char *name, uint64_t value), void *ctx)
{
	struct virtio_net_stats s;
	virtio_net_get_stats(((struct net_dev *)d)->net, &s);
	emit(ctx, "rx_packets", s.rx_packets);
	emit(ctx, "rx_bytes", s.rx_bytes);
	emit(ctx, "rx_dropped", s.rx_dropped);
	emit(ctx, "rx_direct", s.rx_direct);
	emit(ctx, "tx_packets", s.tx_packets);
	emit(ctx, "tx_bytes", s.tx_bytes);
	emit(ctx, "tx_errors", s.tx_errors);
	emit(ctx, "active_pairs", s.active_pairs);
}

static size_t net_describe_state(struct device *d, char *buf, size_t len)
{
	return virtio_net_describe(((struct net_dev *)d)->net, buf, len);
}

const struct device_type virtio_net_pci_type = {
	.kind = "virtio-net",
	.backend_label = "TAP",
	.config_size = sizeof(struct virtio_net_pci_config),
	.fields = net_fields,
	.config_defaults = net_defaults,
	.state_version = 1, .state_min_save = 1, .state_min_load = 1,
	.create = net_create,
	.free = net_free,
	.realize = net_realize,
	.quiesce = net_quiesce,
	.unquiesce = net_unquiesce,
	.save = net_save,
	.load = net_load,
	.resume_loaded = net_resume_loaded,
	.preview_save = net_preview_save,
	.preview_load = net_preview_load,
	.backend_fds = net_backend_fds,
	.backend_save = net_backend_save,
	.stats = net_stats,
	.describe_state = net_describe_state,
};
