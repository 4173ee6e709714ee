#include "virtio_pci.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "err.h"
#include "loop.h"
#include "migstream.h"

#define MAX_VECTORS (VIRTIO_MAX_QUEUES + 1)

#define PCI_CLASS_NETWORK_ETHERNET 0x020000
#define PCI_CLASS_OTHER            0x00ff00
#define VIRTIO_ID_NET 1

/* MSI-X (PCI 3.0, 6.8.2): message control bits, table entry layout. */
#define MSIX_CONTROL_ENABLE    0x8000
#define MSIX_CONTROL_MASKALL   0x4000
#define MSIX_ENTRY_SIZE        16
#define MSIX_ENTRY_ADDR_LO     0
#define MSIX_ENTRY_ADDR_HI     4
#define MSIX_ENTRY_DATA        8
#define MSIX_ENTRY_CTRL        12
#define MSIX_ENTRY_CTRL_MASKED 1u

#define ISR_QUEUE  1u
#define ISR_CONFIG 2u

struct vp_vector {
	uint32_t addr_lo, addr_hi, data, ctrl; /* the table entry */
	bool pending;      /* PBA bit (without KVM; with KVM the eventfd counter holds it) */
	uint64_t delivered;/* without KVM: interrupts delivered */
	int fd;            /* with KVM: the irqfd's eventfd */
	unsigned gsi;
	bool routed;       /* gsi holds an MSI route */
	bool bound;        /* the irqfd is assigned (vector unmasked) */
};

struct vp_kick {
	struct virtio_pci *vp;
	unsigned q;
	int fd;            /* ioeventfd, -1 without KVM */
	struct loop_fd *watch;
};

struct virtio_pci {
	struct pci_device pci;
	struct virtio_device *vd;
	struct kvm *kvm;
	struct uv_loop_s *loop;
	struct loop_wake *wake;
	bool use_kvm;              /* realized with a VM: set before any vCPU runs */
	unsigned nvec;
	unsigned msix_cap;         /* config offset of the MSI-X capability */
	unsigned ioeventfd_len;
	struct vp_kick kicks[VIRTIO_MAX_QUEUES];

	/* Under vd->lock. */
	uint32_t device_feature_select, driver_feature_select;
	uint64_t driver_features;  /* what the driver wrote; taken at FEATURES_OK */
	uint16_t msix_config;
	uint16_t queue_select;
	uint8_t isr;
	bool reset_pending;        /* 0 written to status; the loop has not reset yet */
	uint8_t status_in_reset;   /* what status reads meanwhile */
	bool activate_pending;
	uint64_t notify_pending;   /* queues notified through MMIO, for the loop */
	bool msix_enabled, msix_masked;
	bool loaded;               /* virtio_pci_load applied; resume not yet done */
	bool held;                 /* interrupts held: every irqfd unbound */
	bool adopted;              /* eventfds handed in (virtio_pci_adopt_eventfds) */
	uint64_t notify_base;      /* where the ioeventfds are assigned, or PCI_BAR_UNMAPPED */
	struct vp_vector vec[MAX_VECTORS];
};

static void vp_warn(struct virtio_pci *vp, const char *what)
{
	fprintf(stderr, "vmm: %s: virtio-pci: %s: %s\n", vp->vd->name, what, vmm_error());
}

/* --- interrupts ------------------------------------------------------------ */

static bool vector_masked(const struct virtio_pci *vp, unsigned v)
{
	return !vp->msix_enabled || vp->msix_masked || (vp->vec[v].ctrl & MSIX_ENTRY_CTRL_MASKED);
}

static int eventfd_drain(int fd, uint64_t *count)
{
	*count = 0;
	ssize_t n;
	while ((n = read(fd, count, sizeof(*count))) < 0 && errno == EINTR)
		;
	return n == sizeof(*count) ? 0 : -1;
}

static void eventfd_signal(int fd)
{
	uint64_t one = 1;
	while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static bool eventfd_ready(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* vd->lock held. Brings vector v's delivery in line with its mask and its
 * table entry: with KVM, an unmasked vector has its route up to date and its
 * irqfd bound; without, an unmasked vector fires its pending bit. */
static void update_vector(struct virtio_pci *vp, unsigned v)
{
	struct vp_vector *x = &vp->vec[v];
	bool masked = vector_masked(vp, v) || vp->held;
	if (!vp->use_kvm) {
		if (!masked && x->pending) {
			x->pending = false;
			x->delivered++;
		}
		return;
	}
	if (x->fd < 0 || !x->routed)
		return;
	if (masked) {
		if (x->bound) {
			if (kvm_irqfd(vp->kvm, x->fd, x->gsi, false))
				vp_warn(vp, "masking an MSI-X vector");
			x->bound = false;
		}
		return;
	}
	uint64_t addr = ((uint64_t)x->addr_hi << 32) | x->addr_lo;
	if (kvm_msi_route_update(vp->kvm, x->gsi, addr, x->data))
		vp_warn(vp, "MSI-X route");
	if (!x->bound) {
		/* Re-arm what was signalled while masked: drain the counter, bind
		 * the irqfd, and interrupt once. Always once, not only when the
		 * counter was set: unbinding the irqfd at the mask consumes the
		 * counter in the kernel, so a signal racing with the mask leaves
		 * no trace, and a lost interrupt stalls a driver that waits for
		 * it (EVENT_IDX). A spurious one costs the driver a ring check. */
		uint64_t count = 0;
		eventfd_drain(x->fd, &count);
		if (kvm_irqfd(vp->kvm, x->fd, x->gsi, true)) {
			vp_warn(vp, "unmasking an MSI-X vector");
			return;
		}
		x->bound = true;
		eventfd_signal(x->fd);
	}
}

/* vd->lock held. */
static void signal_vector(struct virtio_pci *vp, unsigned v)
{
	if (v >= vp->nvec)
		return;
	struct vp_vector *x = &vp->vec[v];
	if (vp->use_kvm) {
		if (x->fd >= 0)
			eventfd_signal(x->fd); /* waits in the counter while masked */
		return;
	}
	if (vector_masked(vp, v))
		x->pending = true;
	else
		x->delivered++;
}

static bool vector_pending(struct virtio_pci *vp, unsigned v)
{
	if (v >= vp->nvec)
		return false;
	if (vp->use_kvm)
		return vector_masked(vp, v) && vp->vec[v].fd >= 0 && eventfd_ready(vp->vec[v].fd);
	return vp->vec[v].pending;
}

static void signal_queue(void *t, unsigned q)
{
	struct virtio_pci *vp = t;
	struct virtio_device *vd = vp->vd;
	if (q >= vd->nqueues)
		return;
	pthread_mutex_lock(&vd->lock);
	vp->isr |= ISR_QUEUE;
	signal_vector(vp, vd->vqs[q].msix_vector);
	pthread_mutex_unlock(&vd->lock);
}

static void signal_config(void *t)
{
	struct virtio_pci *vp = t;
	pthread_mutex_lock(&vp->vd->lock);
	vp->isr |= ISR_CONFIG;
	signal_vector(vp, vp->msix_config);
	pthread_mutex_unlock(&vp->vd->lock);
}

static int kick_fd(void *t, unsigned q)
{
	struct virtio_pci *vp = t;
	return q < vp->vd->nqueues ? vp->kicks[q].fd : -1;
}

static int call_fd(void *t, unsigned q)
{
	struct virtio_pci *vp = t;
	struct virtio_device *vd = vp->vd;
	if (q >= vd->nqueues || !vp->use_kvm)
		return -1;
	pthread_mutex_lock(&vd->lock);
	unsigned v = vd->vqs[q].msix_vector;
	int fd = v < vp->nvec ? vp->vec[v].fd : -1;
	pthread_mutex_unlock(&vd->lock);
	return fd;
}

static const struct virtio_transport_ops transport_ops = {
	.signal_queue = signal_queue,
	.signal_config = signal_config,
	.kick_fd = kick_fd,
	.call_fd = call_fd,
};

/* --- the main thread: reset, activation, notifications ------------------------ */

/* vd->lock held. The transport's registers back to power-on (the queues are
 * reset by virtio_reset or by the caller). MSI-X configuration lives in PCI
 * config space and the table: a device reset leaves it alone. */
static void reset_registers(struct virtio_pci *vp)
{
	vp->device_feature_select = vp->driver_feature_select = 0;
	vp->driver_features = 0;
	vp->msix_config = VIRTIO_PCI_NO_VECTOR;
	vp->queue_select = 0;
	vp->isr = 0;
	vp->activate_pending = false;
	vp->notify_pending = 0;
}

static void set_kick_watch(struct virtio_pci *vp, unsigned q, bool on)
{
	struct vp_kick *k = &vp->kicks[q];
	if (k->watch && loop_fd_set(k->watch, on ? LOOP_READABLE : 0))
		vp_warn(vp, "kick watcher");
}

/* Main thread, device active: every enabled queue kicked once. Queues the
 * device took are kicked through their eventfd, which it now polls: stop
 * watching those first, so the loop does not wake for them. */
static void kick_all_queues(struct virtio_pci *vp)
{
	struct virtio_device *vd = vp->vd;
	for (unsigned q = 0; q < vd->nqueues; q++)
		if (vd->kicks_taken[q])
			set_kick_watch(vp, q, false);
	virtio_kick_all(vd);
}

static void on_wake(void *opaque)
{
	struct virtio_pci *vp = opaque;
	struct virtio_device *vd = vp->vd;
	pthread_mutex_lock(&vd->lock);
	bool reset = vp->reset_pending, activate = vp->activate_pending;
	uint64_t notify = vp->notify_pending;
	vp->activate_pending = false;
	vp->notify_pending = 0;
	pthread_mutex_unlock(&vd->lock);

	if (reset) {
		virtio_reset(vd); /* device reset, queues, driver features, status 0 */
		pthread_mutex_lock(&vd->lock);
		reset_registers(vp);
		vp->reset_pending = false; /* status reads 0 from here */
		pthread_mutex_unlock(&vd->lock);
		for (unsigned q = 0; q < vd->nqueues; q++)
			set_kick_watch(vp, q, true); /* vhost gave its kicks back */
		return;
	}
	if (activate) {
		if (virtio_activate(vd))
			return; /* it logged, set NEEDS_RESET and told the driver */
		/* A kick the driver sent before DRIVER_OK was dropped: give every
		 * queue one now (a spurious kick is harmless). */
		kick_all_queues(vp);
		return;
	}
	if (!vd->active)
		return;
	for (unsigned q = 0; q < vd->nqueues && notify; q++) {
		if (!(notify & (1ull << q)))
			continue;
		notify &= ~(1ull << q);
		if (!vd->kicks_taken[q] && vd->ops->queue_notify)
			vd->ops->queue_notify(vd, q);
	}
}

static void on_kick(void *opaque, int events)
{
	struct vp_kick *k = opaque;
	struct virtio_device *vd = k->vp->vd;
	if (events < 0) {
		errno = -events;
		vmm_fail_errno("queue %u kick eventfd", k->q);
		vp_warn(k->vp, "polling");
		set_kick_watch(k->vp, k->q, false);
		return;
	}
	if (vd->kicks_taken[k->q]) {
		/* taken after activation (vhost on a pair the driver enabled
		 * later): the kernel polls it now, stop waking up for it */
		set_kick_watch(k->vp, k->q, false);
		return;
	}
	uint64_t count;
	eventfd_drain(k->fd, &count);
	if (vd->active && vd->ops->queue_notify)
		vd->ops->queue_notify(vd, k->q);
}

/* --- common configuration ------------------------------------------------------- */

struct field {
	uint8_t off, size;
};

static const struct field common_fields[] = {
	{ VIRTIO_PCI_COMMON_DFSELECT, 4 }, { VIRTIO_PCI_COMMON_DF, 4 },
	{ VIRTIO_PCI_COMMON_GFSELECT, 4 }, { VIRTIO_PCI_COMMON_GF, 4 },
	{ VIRTIO_PCI_COMMON_MSIX, 2 }, { VIRTIO_PCI_COMMON_NUMQ, 2 },
	{ VIRTIO_PCI_COMMON_STATUS, 1 }, { VIRTIO_PCI_COMMON_CFGGENERATION, 1 },
	{ VIRTIO_PCI_COMMON_Q_SELECT, 2 }, { VIRTIO_PCI_COMMON_Q_SIZE, 2 },
	{ VIRTIO_PCI_COMMON_Q_MSIX, 2 }, { VIRTIO_PCI_COMMON_Q_ENABLE, 2 },
	{ VIRTIO_PCI_COMMON_Q_NOFF, 2 }, { VIRTIO_PCI_COMMON_Q_DESCLO, 8 },
	{ VIRTIO_PCI_COMMON_Q_AVAILLO, 8 }, { VIRTIO_PCI_COMMON_Q_USEDLO, 8 },
	{ 0x38, 2 }, /* queue_notify_data: VIRTIO_F_NOTIFICATION_DATA is not offered */
	{ 0x3a, 2 }, /* queue_reset: VIRTIO_F_RING_RESET is not offered */
};

static const struct field *field_at(unsigned off)
{
	for (size_t i = 0; i < sizeof(common_fields) / sizeof(common_fields[0]); i++)
		if (off >= common_fields[i].off && off < common_fields[i].off + common_fields[i].size)
			return &common_fields[i];
	return NULL;
}

/* vd->lock held. The selected queue, or NULL (out of range, or a reset is
 * under way on the main thread). */
static struct virtqueue *selected_queue(struct virtio_pci *vp)
{
	if (vp->reset_pending || vp->queue_select >= vp->vd->nqueues)
		return NULL;
	return &vp->vd->vqs[vp->queue_select];
}

/* vd->lock held. */
static uint64_t common_get(struct virtio_pci *vp, unsigned off)
{
	struct virtio_device *vd = vp->vd;
	struct virtqueue *vq = selected_queue(vp);
	switch (off) {
	case VIRTIO_PCI_COMMON_DFSELECT: return vp->device_feature_select;
	case VIRTIO_PCI_COMMON_DF:
		return vp->device_feature_select < 2 ? (uint32_t)(vd->host_features >> (32 * vp->device_feature_select)) : 0;
	case VIRTIO_PCI_COMMON_GFSELECT: return vp->driver_feature_select;
	case VIRTIO_PCI_COMMON_GF:
		return vp->driver_feature_select < 2 ? (uint32_t)(vp->driver_features >> (32 * vp->driver_feature_select)) : 0;
	case VIRTIO_PCI_COMMON_MSIX: return vp->msix_config;
	case VIRTIO_PCI_COMMON_NUMQ: return vd->nqueues;
	case VIRTIO_PCI_COMMON_STATUS: return vp->reset_pending ? vp->status_in_reset : vd->status;
	case VIRTIO_PCI_COMMON_CFGGENERATION: return (uint8_t)vd->config_generation;
	case VIRTIO_PCI_COMMON_Q_SELECT: return vp->queue_select;
	case VIRTIO_PCI_COMMON_Q_SIZE: return vq ? vq->size : 0;
	case VIRTIO_PCI_COMMON_Q_MSIX: return vq ? vq->msix_vector : 0;
	case VIRTIO_PCI_COMMON_Q_ENABLE: return vq ? vq->enabled : 0;
	case VIRTIO_PCI_COMMON_Q_NOFF: return vq ? vp->queue_select : 0;
	case VIRTIO_PCI_COMMON_Q_DESCLO: return vq ? vq->desc_gpa : 0;
	case VIRTIO_PCI_COMMON_Q_AVAILLO: return vq ? vq->avail_gpa : 0;
	case VIRTIO_PCI_COMMON_Q_USEDLO: return vq ? vq->used_gpa : 0;
	default: return 0;
	}
}

static bool features_acceptable(const struct virtio_pci *vp)
{
	uint64_t f = vp->driver_features;
	return (f & ~vp->vd->host_features) == 0 && (f & VIRTIO_BIT(VIRTIO_F_VERSION_1));
}

/* vd->lock held. */
static void write_status(struct virtio_pci *vp, uint8_t val)
{
	struct virtio_device *vd = vp->vd;
	uint8_t old = vd->status;
	if (vp->reset_pending)
		return; /* the driver must wait for status 0 first */
	if (val == 0) {
		if (old == 0) {
			/* Nothing runs (status 0 means not activated, nothing
			 * pending on the loop): reset the registers right here. */
			for (unsigned q = 0; q < vd->nqueues; q++)
				vq_reset(&vd->vqs[q], (uint16_t)q, vd->queue_max_size);
			vd->driver_features = 0;
			reset_registers(vp);
			return;
		}
		vp->reset_pending = true;
		vp->status_in_reset = old;
		loop_wake_send(vp->wake);
		return;
	}
	uint8_t s = (uint8_t)((val & ~VIRTIO_STATUS_NEEDS_RESET) | (old & VIRTIO_STATUS_NEEDS_RESET));
	if ((s & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		if (features_acceptable(vp))
			vd->driver_features = vp->driver_features;
		else
			s &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK; /* the driver reads it back clear */
	}
	if ((s & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK)) {
		if (!(s & VIRTIO_STATUS_FEATURES_OK) || (s & VIRTIO_STATUS_FAILED)) {
			s |= VIRTIO_STATUS_NEEDS_RESET; /* DRIVER_OK without negotiated features */
		} else {
			vp->activate_pending = true;
			loop_wake_send(vp->wake);
		}
	}
	vd->status = s;
}

/* vd->lock held. Whether the driver may still set up queues. */
static bool queue_writable(struct virtio_pci *vp, struct virtqueue *vq)
{
	return vq && !vq->enabled && !(vp->vd->status & VIRTIO_STATUS_DRIVER_OK);
}

static void set_half(uint64_t *v, unsigned half, uint32_t val)
{
	if (half)
		*v = (*v & 0xffffffffull) | ((uint64_t)val << 32);
	else
		*v = (*v & ~0xffffffffull) | val;
}

/* vd->lock held. A write of `len` bytes of `val` at field f (half: which
 * 32-bit half of a 64-bit field, or -1 for the whole field). */
static void common_set(struct virtio_pci *vp, const struct field *f, int half, uint64_t val)
{
	struct virtio_device *vd = vp->vd;
	struct virtqueue *vq = selected_queue(vp);
	if (f->off == VIRTIO_PCI_COMMON_STATUS) {
		write_status(vp, (uint8_t)val);
		return;
	}
	if (vp->reset_pending)
		return; /* the driver must wait for status 0 */
	switch (f->off) {
	case VIRTIO_PCI_COMMON_DFSELECT: vp->device_feature_select = (uint32_t)val; break;
	case VIRTIO_PCI_COMMON_GFSELECT: vp->driver_feature_select = (uint32_t)val; break;
	case VIRTIO_PCI_COMMON_GF:
		if (vp->driver_feature_select < 2 && !(vd->status & VIRTIO_STATUS_FEATURES_OK))
			set_half(&vp->driver_features, vp->driver_feature_select, (uint32_t)val);
		break;
	case VIRTIO_PCI_COMMON_MSIX:
		vp->msix_config = val < vp->nvec ? (uint16_t)val : VIRTIO_PCI_NO_VECTOR;
		break;
	case VIRTIO_PCI_COMMON_Q_SELECT: vp->queue_select = (uint16_t)val; break;
	case VIRTIO_PCI_COMMON_Q_SIZE:
		if (queue_writable(vp, vq) && val && val <= vd->queue_max_size && !(val & (val - 1)))
			vq->size = (uint16_t)val;
		break;
	case VIRTIO_PCI_COMMON_Q_MSIX:
		if (vq)
			vq->msix_vector = val < vp->nvec ? (uint16_t)val : VIRTIO_PCI_NO_VECTOR;
		break;
	case VIRTIO_PCI_COMMON_Q_ENABLE:
		if (queue_writable(vp, vq) && val == 1)
			vq->enabled = true;
		break;
	case VIRTIO_PCI_COMMON_Q_DESCLO:
	case VIRTIO_PCI_COMMON_Q_AVAILLO:
	case VIRTIO_PCI_COMMON_Q_USEDLO: {
		if (!queue_writable(vp, vq))
			break;
		uint64_t *gpa = f->off == VIRTIO_PCI_COMMON_Q_DESCLO ? &vq->desc_gpa
			      : f->off == VIRTIO_PCI_COMMON_Q_AVAILLO ? &vq->avail_gpa : &vq->used_gpa;
		if (half < 0)
			*gpa = val;
		else
			set_half(gpa, (unsigned)half, (uint32_t)val);
		break;
	}
	default: /* read-only */
		break;
	}
}

static void common_read(struct virtio_pci *vp, unsigned off, uint8_t *data, unsigned len)
{
	for (unsigned i = 0; i < len; i++) {
		const struct field *f = field_at(off + i);
		data[i] = f ? (uint8_t)(common_get(vp, f->off) >> (8 * (off + i - f->off))) : 0;
	}
}

static void common_write(struct virtio_pci *vp, unsigned off, const uint8_t *data, unsigned len)
{
	const struct field *f = field_at(off);
	if (!f)
		return;
	uint64_t val = 0;
	memcpy(&val, data, len);
	if (off == f->off && len == f->size)
		common_set(vp, f, -1, val);
	else if (f->size == 8 && len == 4 && (off - f->off) % 4 == 0)
		common_set(vp, f, (int)((off - f->off) / 4), val);
	/* anything else (a partial field, several fields at once) is dropped */
}

/* --- MSI-X table and PBA -------------------------------------------------------------- */

/* vd->lock held. A dword of the table. */
static uint32_t table_read(struct virtio_pci *vp, unsigned off)
{
	unsigned v = off / MSIX_ENTRY_SIZE;
	if (v >= vp->nvec)
		return 0;
	const struct vp_vector *x = &vp->vec[v];
	switch (off % MSIX_ENTRY_SIZE) {
	case MSIX_ENTRY_ADDR_LO: return x->addr_lo;
	case MSIX_ENTRY_ADDR_HI: return x->addr_hi;
	case MSIX_ENTRY_DATA: return x->data;
	default: return x->ctrl;
	}
}

static void table_write(struct virtio_pci *vp, unsigned off, uint32_t val)
{
	unsigned v = off / MSIX_ENTRY_SIZE;
	if (v >= vp->nvec)
		return;
	struct vp_vector *x = &vp->vec[v];
	switch (off % MSIX_ENTRY_SIZE) {
	case MSIX_ENTRY_ADDR_LO: x->addr_lo = val & ~3u; break; /* dword aligned */
	case MSIX_ENTRY_ADDR_HI: x->addr_hi = val; break;
	case MSIX_ENTRY_DATA: x->data = val; break;
	default: x->ctrl = val & MSIX_ENTRY_CTRL_MASKED; break;
	}
	update_vector(vp, v);
}

static uint32_t pba_read(struct virtio_pci *vp, unsigned off)
{
	uint32_t bits = 0;
	for (unsigned i = 0; i < 32; i++)
		if (vector_pending(vp, off * 8 + i))
			bits |= 1u << i;
	return bits;
}

/* Table and PBA take aligned dwords and qwords; other accesses read 0 and
 * are dropped. */
static void msix_access(struct virtio_pci *vp, bool table, unsigned off, void *data, unsigned len, bool write)
{
	if ((len != 4 && len != 8) || off % len) {
		if (!write)
			memset(data, 0, len);
		return;
	}
	for (unsigned i = 0; i < len; i += 4) {
		uint32_t v;
		if (write) {
			memcpy(&v, (uint8_t *)data + i, 4);
			if (table)
				table_write(vp, off + i, v);
		} else {
			v = table ? table_read(vp, off + i) : pba_read(vp, off + i);
			memcpy((uint8_t *)data + i, &v, 4);
		}
	}
}

/* --- BAR 0 ---------------------------------------------------------------------------- */

static void bar_access(struct pci_device *d, unsigned bar, uint64_t offset, void *data, unsigned len, bool write)
{
	struct virtio_pci *vp = d->opaque;
	struct virtio_device *vd = vp->vd;
	uint8_t *buf = data;
	if (!write)
		memset(data, 0, len);
	if (bar != VIRTIO_PCI_BAR || offset >= VIRTIO_PCI_BAR_SIZE)
		return;
	unsigned region = (unsigned)offset & ~(VIRTIO_PCI_REGION_SIZE - 1);
	unsigned off = (unsigned)offset & (VIRTIO_PCI_REGION_SIZE - 1);
	if (off + len > VIRTIO_PCI_REGION_SIZE)
		return; /* straddles two regions */

	pthread_mutex_lock(&vd->lock);
	switch (region) {
	case VIRTIO_PCI_COMMON_OFFSET:
		if (write)
			common_write(vp, off, buf, len);
		else
			common_read(vp, off, buf, len);
		break;
	case VIRTIO_PCI_ISR_OFFSET:
		if (!write && off == 0) {
			buf[0] = vp->isr; /* read to clear */
			vp->isr = 0;
		}
		break;
	case VIRTIO_PCI_DEVICE_OFFSET:
		if (off + len > vd->config_size || (len != 1 && len != 2 && len != 4 && len != 8))
			break;
		if (write && vd->ops->config_write)
			vd->ops->config_write(vd, off, buf, len);
		else if (!write && vd->ops->config_read)
			vd->ops->config_read(vd, off, buf, len);
		break;
	case VIRTIO_PCI_NOTIFY_OFFSET: {
		/* Reached only when no ioeventfd caught the write. */
		unsigned q = off / VIRTIO_PCI_NOTIFY_MULTIPLIER;
		if (write && q < vd->nqueues && !vp->reset_pending) {
			vp->notify_pending |= 1ull << q;
			loop_wake_send(vp->wake);
		}
		break;
	}
	case VIRTIO_PCI_MSIX_TABLE_OFFSET:
		msix_access(vp, true, off, data, len, write);
		break;
	case VIRTIO_PCI_MSIX_PBA_OFFSET:
		if (!write)
			msix_access(vp, false, off, data, len, false);
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&vd->lock);
}

static void bar_read(struct pci_device *d, unsigned bar, uint64_t offset, void *data, unsigned len)
{
	bar_access(d, bar, offset, data, len, false);
}

static void bar_write(struct pci_device *d, unsigned bar, uint64_t offset, const void *data, unsigned len)
{
	bar_access(d, bar, offset, (void *)data, len, true);
}

/* vd->lock held. Moves the queues' ioeventfds to the notify region at BAR
 * address `base` (PCI_BAR_UNMAPPED: none). */
static void move_ioeventfds(struct virtio_pci *vp, uint64_t base)
{
	if (!vp->use_kvm || base == vp->notify_base)
		return;
	for (unsigned q = 0; q < vp->vd->nqueues; q++) {
		int fd = vp->kicks[q].fd;
		if (fd < 0)
			continue;
		uint64_t off = VIRTIO_PCI_NOTIFY_OFFSET + (uint64_t)q * VIRTIO_PCI_NOTIFY_MULTIPLIER;
		if (vp->notify_base != PCI_BAR_UNMAPPED &&
		    kvm_ioeventfd(vp->kvm, vp->notify_base + off, vp->ioeventfd_len, fd, false))
			vp_warn(vp, "notify ioeventfd");
		/* On failure the write still reaches bar_write: slower, not lost. */
		if (base != PCI_BAR_UNMAPPED && kvm_ioeventfd(vp->kvm, base + off, vp->ioeventfd_len, fd, true))
			vp_warn(vp, "notify ioeventfd");
	}
	vp->notify_base = base;
}

static void bar_moved(struct pci_device *d, unsigned bar, uint64_t old_addr, uint64_t new_addr)
{
	struct virtio_pci *vp = d->opaque;
	(void)old_addr;
	if (bar != VIRTIO_PCI_BAR)
		return;
	pthread_mutex_lock(&vp->vd->lock);
	move_ioeventfds(vp, new_addr);
	pthread_mutex_unlock(&vp->vd->lock);
}

static void config_written(struct pci_device *d, unsigned offset, unsigned len)
{
	struct virtio_pci *vp = d->opaque;
	unsigned control = vp->msix_cap + 2;
	if (offset + len <= control || offset >= control + 2)
		return;
	uint16_t ctrl;
	memcpy(&ctrl, d->config + control, sizeof(ctrl));
	pthread_mutex_lock(&vp->vd->lock);
	vp->msix_enabled = ctrl & MSIX_CONTROL_ENABLE;
	vp->msix_masked = ctrl & MSIX_CONTROL_MASKALL;
	for (unsigned v = 0; v < vp->nvec; v++)
		update_vector(vp, v);
	pthread_mutex_unlock(&vp->vd->lock);
}

static const struct pci_device_ops pci_ops = {
	.bar_read = bar_read,
	.bar_write = bar_write,
	.bar_moved = bar_moved,
	.config_written = config_written,
};

/* --- building the function ------------------------------------------------------------ */

struct virtio_pci_cap {
	uint8_t cap_vndr, cap_next, cap_len, cfg_type;
	uint8_t bar, id, padding[2];
	uint32_t offset, length;
} __attribute__((packed));

struct virtio_pci_notify_cap {
	struct virtio_pci_cap cap;
	uint32_t notify_off_multiplier;
} __attribute__((packed));

struct msix_cap {
	uint8_t id, next;
	uint16_t control;
	uint32_t table; /* offset | BIR */
	uint32_t pba;
} __attribute__((packed));

static int add_vendor_cap(struct pci_device *d, uint8_t type, uint32_t offset, uint32_t length)
{
	struct virtio_pci_cap c = {
		.cap_vndr = PCI_CAP_ID_VNDR, .cap_len = sizeof(c), .cfg_type = type,
		.bar = VIRTIO_PCI_BAR, .offset = offset, .length = length,
	};
	return pci_add_capability(d, &c, sizeof(c)) < 0 ? -1 : 0;
}

static int build_function(struct virtio_pci *vp)
{
	struct virtio_device *vd = vp->vd;
	struct pci_device *d = &vp->pci;
	pci_device_init(d, vd->name, &pci_ops, vp, VIRTIO_PCI_VENDOR, (uint16_t)(VIRTIO_PCI_DEVICE_BASE + vd->device_id),
			vd->device_id == VIRTIO_ID_NET ? PCI_CLASS_NETWORK_ETHERNET : PCI_CLASS_OTHER, 1);
	pci_device_set_subsystem(d, VIRTIO_PCI_VENDOR, vd->device_id);
	if (pci_device_add_bar(d, VIRTIO_PCI_BAR, VIRTIO_PCI_BAR_SIZE, false))
		return -1;

	struct msix_cap m = {
		.id = PCI_CAP_ID_MSIX,
		.control = (uint16_t)(vp->nvec - 1),
		.table = VIRTIO_PCI_MSIX_TABLE_OFFSET | VIRTIO_PCI_BAR,
		.pba = VIRTIO_PCI_MSIX_PBA_OFFSET | VIRTIO_PCI_BAR,
	};
	int off = pci_add_capability(d, &m, sizeof(m));
	if (off < 0)
		return -1;
	vp->msix_cap = (unsigned)off;
	const uint16_t control_wmask = MSIX_CONTROL_ENABLE | MSIX_CONTROL_MASKALL;
	pci_device_set_wmask(d, vp->msix_cap + 2, &control_wmask, sizeof(control_wmask));

	uint32_t notify_len = vd->nqueues * VIRTIO_PCI_NOTIFY_MULTIPLIER;
	struct virtio_pci_notify_cap n = {
		.cap = { .cap_vndr = PCI_CAP_ID_VNDR, .cap_len = sizeof(n), .cfg_type = VIRTIO_PCI_CAP_NOTIFY_CFG,
			 .bar = VIRTIO_PCI_BAR, .offset = VIRTIO_PCI_NOTIFY_OFFSET,
			 .length = notify_len ? notify_len : VIRTIO_PCI_NOTIFY_MULTIPLIER },
		.notify_off_multiplier = VIRTIO_PCI_NOTIFY_MULTIPLIER,
	};
	if (add_vendor_cap(d, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_COMMON_OFFSET, VIRTIO_PCI_COMMON_LEN) ||
	    pci_add_capability(d, &n, sizeof(n)) < 0 ||
	    add_vendor_cap(d, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_ISR_OFFSET, 1) ||
	    (vd->config_size && add_vendor_cap(d, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_DEVICE_OFFSET, vd->config_size)))
		return -1;
	return 0;
}

struct virtio_pci *virtio_pci_new(struct pci_bus *bus, struct virtio_device *vd, struct kvm *kvm,
				  struct uv_loop_s *loop)
{
	if (vd->nqueues > VIRTIO_MAX_QUEUES || vd->config_size > VIRTIO_PCI_REGION_SIZE) {
		vmm_fail("%s: virtio-pci: %u queues and %u config bytes (at most %d and %d)", vd->name, vd->nqueues,
			 vd->config_size, VIRTIO_MAX_QUEUES, VIRTIO_PCI_REGION_SIZE);
		return NULL;
	}
	struct virtio_pci *vp = calloc(1, sizeof(*vp));
	if (!vp) {
		vmm_fail("%s: virtio-pci: out of memory", vd->name);
		return NULL;
	}
	vp->vd = vd;
	vp->kvm = kvm;
	vp->loop = loop;
	vp->nvec = vd->nqueues + 1;
	vp->notify_base = PCI_BAR_UNMAPPED;
	vp->msix_config = VIRTIO_PCI_NO_VECTOR;
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
		vp->kicks[q] = (struct vp_kick){ .vp = vp, .q = q, .fd = -1 };
	for (unsigned v = 0; v < MAX_VECTORS; v++)
		vp->vec[v] = (struct vp_vector){ .ctrl = MSIX_ENTRY_CTRL_MASKED, .fd = -1 };
	if (build_function(vp)) {
		vmm_fail_context("%s: virtio-pci", vd->name);
		free(vp);
		return NULL;
	}
	vp->wake = loop_wake_new(loop, on_wake, vp);
	if (!vp->wake || pci_bus_add(bus, &vp->pci)) {
		vmm_fail_context("%s: virtio-pci", vd->name);
		loop_wake_close(vp->wake);
		free(vp);
		return NULL;
	}
	vd->transport = &transport_ops;
	vd->transport_opaque = vp;
	return vp;
}

int virtio_pci_realize(struct virtio_pci *vp)
{
	struct virtio_device *vd = vp->vd;
	if (!vp->kvm || vp->kvm->vm_fd < 0 || vp->use_kvm)
		return 0;
	vp->use_kvm = true;
	int any = kvm_check_extension(vp->kvm, KVM_CAP_IOEVENTFD_ANY_LENGTH);
	vp->ioeventfd_len = any > 0 ? 0 : 2; /* Linux notifies with a 16-bit write */
	for (unsigned q = 0; q < vd->nqueues; q++) {
		struct vp_kick *k = &vp->kicks[q];
		if (k->fd < 0)
			k->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (k->fd < 0) {
			vmm_fail_errno("eventfd for queue %u", q);
			goto fail;
		}
		k->watch = loop_fd_watch(vp->loop, k->fd, LOOP_READABLE, on_kick, k);
		if (!k->watch)
			goto fail;
	}
	for (unsigned v = 0; v < vp->nvec; v++) {
		struct vp_vector *x = &vp->vec[v];
		if (x->fd < 0)
			x->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (x->fd < 0) {
			vmm_fail_errno("eventfd for MSI-X vector %u", v);
			goto fail;
		}
		if (kvm_msi_route_add(vp->kvm, 0, 0, &x->gsi))
			goto fail;
		x->routed = true;
	}
	/* A restored config space may already enable MSI-X and the BAR. */
	uint64_t base = pci_bar_decoded(&vp->pci, VIRTIO_PCI_BAR);
	pthread_mutex_lock(&vd->lock);
	for (unsigned v = 0; v < vp->nvec; v++)
		update_vector(vp, v);
	move_ioeventfds(vp, base);
	pthread_mutex_unlock(&vd->lock);
	return 0;
fail:
	return vmm_fail_context("%s: virtio-pci", vd->name);
}

unsigned virtio_pci_eventfds(struct virtio_pci *vp, int *fds, unsigned max)
{
	unsigned n = 0, nq = vp->vd->nqueues;
	for (unsigned q = 0; q < nq; q++, n++)
		if (n < max)
			fds[n] = vp->kicks[q].fd;
	for (unsigned v = 0; v < vp->nvec; v++, n++)
		if (n < max)
			fds[n] = vp->vec[v].fd;
	return n;
}

/* Whether fd is an eventfd (anon_inode:[eventfd]). */
static bool is_eventfd(int fd)
{
	char link[64], target[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return !strcmp(target, "anon_inode:[eventfd]");
}

int virtio_pci_adopt_eventfds(struct virtio_pci *vp, const int *fds, unsigned n)
{
	struct virtio_device *vd = vp->vd;
	unsigned want = vd->nqueues + vp->nvec;
	if (vp->use_kvm || vp->adopted)
		return vmm_fail("%s: virtio-pci: eventfds handed in after realize", vd->name);
	if (n != want)
		return vmm_fail("%s: virtio-pci: %u eventfds handed in, expected %u (%u queues, %u vectors)", vd->name,
				n, want, vd->nqueues, vp->nvec);
	for (unsigned i = 0; i < n; i++)
		if (fds[i] < 0 || !is_eventfd(fds[i]))
			return vmm_fail("%s: virtio-pci: handed-in fd %u (%d) is not an eventfd", vd->name, i, fds[i]);
	for (unsigned q = 0; q < vd->nqueues; q++)
		vp->kicks[q].fd = fds[q];
	for (unsigned v = 0; v < vp->nvec; v++)
		vp->vec[v].fd = fds[vd->nqueues + v];
	vp->adopted = true;
	return 0;
}

void virtio_pci_hold_interrupts(struct virtio_pci *vp, bool hold)
{
	struct virtio_device *vd = vp->vd;
	pthread_mutex_lock(&vd->lock);
	vp->held = hold;
	for (unsigned v = 0; v < vp->nvec; v++)
		update_vector(vp, v);
	pthread_mutex_unlock(&vd->lock);
}

struct pci_device *virtio_pci_device(struct virtio_pci *vp)
{
	return &vp->pci;
}

uint64_t virtio_pci_interrupts(struct virtio_pci *vp, unsigned vector)
{
	if (vector >= vp->nvec)
		return 0;
	pthread_mutex_lock(&vp->vd->lock);
	uint64_t n = vp->vec[vector].delivered;
	pthread_mutex_unlock(&vp->vd->lock);
	return n;
}

void virtio_pci_free(struct virtio_pci *vp)
{
	if (!vp)
		return;
	struct virtio_device *vd = vp->vd;
	pci_bus_remove(vp->pci.bus, &vp->pci);
	bool kvm_alive = vp->use_kvm && vp->kvm->vm_fd >= 0;
	if (kvm_alive) {
		pthread_mutex_lock(&vd->lock);
		move_ioeventfds(vp, PCI_BAR_UNMAPPED);
		pthread_mutex_unlock(&vd->lock);
	}
	for (unsigned v = 0; v < vp->nvec; v++) {
		struct vp_vector *x = &vp->vec[v];
		if (kvm_alive && x->bound && kvm_irqfd(vp->kvm, x->fd, x->gsi, false))
			vp_warn(vp, "free");
		if (kvm_alive && x->routed && kvm_msi_route_remove(vp->kvm, x->gsi))
			vp_warn(vp, "free");
		if (x->fd >= 0)
			close(x->fd);
	}
	for (unsigned q = 0; q < vd->nqueues; q++) {
		loop_fd_close(vp->kicks[q].watch);
		if (vp->kicks[q].fd >= 0)
			close(vp->kicks[q].fd);
	}
	loop_wake_close(vp->wake);
	if (vd->transport_opaque == vp) {
		vd->transport = NULL;
		vd->transport_opaque = NULL;
	}
	free(vp);
}


/* --- local migration ---------------------------------------------------------------------- */

struct vp_saved_vector {
	uint32_t addr_lo, addr_hi, data, ctrl;
	bool pending;
};

/* A decoded, checked MIG_PCI_FUNCTION payload. */
struct vp_saved {
	struct pci_saved_config pci;
	uint32_t device_feature_select, driver_feature_select;
	uint64_t driver_features; /* the driver's feature register */
	uint16_t msix_config, queue_select;
	uint8_t isr;
	struct vp_saved_vector vec[MAX_VECTORS];
	struct virtio_saved virtio;
};

/* An MSI-X table entry as the state and the preview carry it. */
static void put_entry(struct mig_buf *b, const struct vp_vector *x)
{
	mig_put_u32(b, x->addr_lo);
	mig_put_u32(b, x->addr_hi);
	mig_put_u32(b, x->data);
	mig_put_u32(b, x->ctrl);
}

static void get_entry(struct mig_cursor *c, struct vp_saved_vector *x)
{
	x->addr_lo = mig_get_u32(c);
	x->addr_hi = mig_get_u32(c);
	x->data = mig_get_u32(c);
	x->ctrl = mig_get_u32(c);
}

/* vd->lock held. */
static void save_registers(struct virtio_pci *vp, struct mig_buf *b)
{
	mig_put_u32(b, vp->device_feature_select);
	mig_put_u32(b, vp->driver_feature_select);
	mig_put_u64(b, vp->driver_features);
	mig_put_u16(b, vp->msix_config);
	mig_put_u16(b, vp->queue_select);
	mig_put_u8(b, vp->isr);
	mig_put_u16(b, (uint16_t)vp->nvec);
	for (unsigned v = 0; v < vp->nvec; v++) {
		put_entry(b, &vp->vec[v]);
		mig_put_u8(b, vector_pending(vp, v)); /* polls the eventfd, consumes nothing */
	}
}

int virtio_pci_save(struct virtio_pci *vp, struct mig_buf *b)
{
	struct virtio_device *vd = vp->vd;
	pthread_mutex_lock(&vd->lock);
	bool resetting = vp->reset_pending, starting = vp->activate_pending;
	pthread_mutex_unlock(&vd->lock);
	if (resetting)
		return vmm_fail("%s: the driver is resetting the device; retry", vd->name);
	if (starting)
		return vmm_fail("%s: the driver is starting the device (DRIVER_OK not handled yet); retry", vd->name);
	pci_config_save(&vp->pci, b);
	pthread_mutex_lock(&vd->lock);
	save_registers(vp, b);
	virtio_save(vd, b);
	pthread_mutex_unlock(&vd->lock);
	return mig_buf_ok(b, vd->name);
}

/* An MSI-X entry's address alignment and reserved bits. */
static int check_vector(const struct virtio_pci *vp, unsigned v, const struct vp_saved_vector *x)
{
	if (x->addr_lo & 3)
		return vmm_fail("%s: MSI-X entry %u: address 0x%08x is not dword aligned", vp->vd->name, v, x->addr_lo);
	if (x->ctrl & ~MSIX_ENTRY_CTRL_MASKED)
		return vmm_fail("%s: MSI-X entry %u: vector control 0x%x has reserved bits set", vp->vd->name, v,
				x->ctrl);
	return 0;
}

static int decode_vector(struct virtio_pci *vp, unsigned v, struct mig_cursor *c, struct vp_saved_vector *x)
{
	get_entry(c, x);
	uint8_t pending = mig_get_u8(c);
	x->pending = pending == 1;
	if (c->short_read)
		return mig_cursor_finish(c);
	if (check_vector(vp, v, x))
		return -1;
	if (pending > 1)
		return vmm_fail("%s: MSI-X entry %u: pending bit %u is not 0 or 1", vp->vd->name, v, pending);
	return 0;
}

static bool vector_in_range(const struct virtio_pci *vp, uint16_t v)
{
	return v < vp->nvec || v == VIRTIO_PCI_NO_VECTOR;
}

static int decode_registers(struct virtio_pci *vp, struct mig_cursor *c, struct vp_saved *s)
{
	const char *name = vp->vd->name;
	s->device_feature_select = mig_get_u32(c);
	s->driver_feature_select = mig_get_u32(c);
	s->driver_features = mig_get_u64(c);
	s->msix_config = mig_get_u16(c);
	s->queue_select = mig_get_u16(c);
	s->isr = mig_get_u8(c);
	uint16_t nvec = mig_get_u16(c);
	if (c->short_read)
		return mig_cursor_finish(c);
	if (nvec != vp->nvec)
		return vmm_fail("%s: %u MSI-X vectors in the stream, %u here", name, nvec, vp->nvec);
	if (!vector_in_range(vp, s->msix_config))
		return vmm_fail("%s: msix_config vector %u is out of range (%u vectors)", name, s->msix_config,
				vp->nvec);
	if (s->isr & ~(ISR_QUEUE | ISR_CONFIG))
		return vmm_fail("%s: ISR 0x%x has undefined bits set", name, s->isr);
	for (unsigned v = 0; v < nvec; v++)
		if (decode_vector(vp, v, c, &s->vec[v]))
			return -1;
	return 0;
}

static int check_queue_vectors(struct virtio_pci *vp, const struct virtio_saved *s)
{
	for (unsigned q = 0; q < s->nqueues; q++)
		if (!vector_in_range(vp, s->vqs[q].msix_vector))
			return vmm_fail("%s: queue %u: MSI-X vector %u is out of range (%u vectors)", vp->vd->name, q,
					s->vqs[q].msix_vector, vp->nvec);
	return 0;
}

/* Everything checked, nothing applied. */
static int decode_payload(struct virtio_pci *vp, const void *payload, size_t len, struct vp_saved *s)
{
	struct virtio_device *vd = vp->vd;
	pthread_mutex_lock(&vd->lock);
	bool busy = vp->reset_pending || vp->activate_pending;
	pthread_mutex_unlock(&vd->lock);
	if (busy || vd->active)
		return vmm_fail("%s: the device is in use: state loads into a device never started", vd->name);
	char what[96];
	snprintf(what, sizeof(what), "%s: virtio-pci state", vd->name);
	struct mig_cursor c;
	mig_cursor_init(&c, payload, len, what);
	if (pci_config_decode(&vp->pci, &c, &s->pci) || decode_registers(vp, &c, s) ||
	    virtio_decode(vd, &c, &s->virtio) || check_queue_vectors(vp, &s->virtio))
		return -1;
	return mig_cursor_finish(&c);
}

/* vd->lock held, vector masked. Makes its pending bit what the stream
 * says: with KVM the eventfd counter is the bit (it fires on unmask). */
static void set_pending(struct virtio_pci *vp, unsigned v, bool pending)
{
	struct vp_vector *x = &vp->vec[v];
	if (!vp->use_kvm) {
		x->pending = pending;
		return;
	}
	if (x->fd < 0)
		return;
	uint64_t count;
	eventfd_drain(x->fd, &count);
	if (pending)
		eventfd_signal(x->fd);
}

static void apply_payload(struct virtio_pci *vp, const struct vp_saved *s)
{
	struct virtio_device *vd = vp->vd;
	virtio_apply(vd, &s->virtio);
	pthread_mutex_lock(&vd->lock);
	vp->device_feature_select = s->device_feature_select;
	vp->driver_feature_select = s->driver_feature_select;
	vp->driver_features = s->driver_features;
	vp->msix_config = s->msix_config;
	vp->queue_select = s->queue_select;
	vp->isr = s->isr;
	vp->reset_pending = vp->activate_pending = false;
	vp->notify_pending = 0;
	for (unsigned v = 0; v < vp->nvec; v++) {
		struct vp_vector *x = &vp->vec[v];
		x->addr_lo = s->vec[v].addr_lo;
		x->addr_hi = s->vec[v].addr_hi;
		x->data = s->vec[v].data;
		x->ctrl = s->vec[v].ctrl;
		x->pending = false;
	}
	pthread_mutex_unlock(&vd->lock);
	/* The whole config space, as guest writes: BAR decoding (ioeventfds
	 * follow), then config_written sees MSI-X enable and mask-all and
	 * brings every vector's route and irqfd in line with the table. */
	pci_config_apply(&vp->pci, &s->pci);
	pthread_mutex_lock(&vd->lock);
	for (unsigned v = 0; v < vp->nvec; v++)
		if (vector_masked(vp, v))
			set_pending(vp, v, s->vec[v].pending);
	/* An unmasked vector's pending bit is dropped: resume signals it. */
	vp->loaded = true;
	pthread_mutex_unlock(&vd->lock);
}

int virtio_pci_load(struct virtio_pci *vp, const void *payload, size_t len)
{
	struct vp_saved *s = calloc(1, sizeof(*s));
	if (!s)
		return vmm_fail("%s: virtio-pci state: out of memory", vp->vd->name);
	int rc = decode_payload(vp, payload, len, s);
	if (rc == 0)
		apply_payload(vp, s);
	free(s);
	return rc;
}

int virtio_pci_preview_save(struct virtio_pci *vp, struct mig_buf *b)
{
	struct virtio_device *vd = vp->vd;
	pci_config_save(&vp->pci, b);
	pthread_mutex_lock(&vd->lock);
	mig_put_u16(b, (uint16_t)vp->nvec);
	for (unsigned v = 0; v < vp->nvec; v++)
		put_entry(b, &vp->vec[v]);
	pthread_mutex_unlock(&vd->lock);
	return mig_buf_ok(b, vd->name);
}

int virtio_pci_preview_load(struct virtio_pci *vp, const void *payload, size_t len)
{
	struct virtio_device *vd = vp->vd;
	char what[96];
	snprintf(what, sizeof(what), "%s: virtio-pci preview", vd->name);
	struct mig_cursor c;
	mig_cursor_init(&c, payload, len, what);
	struct pci_saved_config pci;
	struct vp_saved_vector vec[MAX_VECTORS];
	if (pci_config_decode(&vp->pci, &c, &pci))
		return -1;
	uint16_t nvec = mig_get_u16(&c);
	if (c.short_read)
		return mig_cursor_finish(&c);
	if (nvec != vp->nvec)
		return vmm_fail("%s: %u MSI-X vectors in the preview, %u here", vd->name, nvec, vp->nvec);
	for (unsigned v = 0; v < nvec; v++) {
		get_entry(&c, &vec[v]);
		if (c.short_read)
			break;
		if (check_vector(vp, v, &vec[v]))
			return -1;
	}
	if (mig_cursor_finish(&c))
		return -1;
	pthread_mutex_lock(&vd->lock);
	bool busy = vp->reset_pending || vp->activate_pending || vd->active || vp->loaded;
	if (!busy)
		for (unsigned v = 0; v < nvec; v++) {
			struct vp_vector *x = &vp->vec[v];
			x->addr_lo = vec[v].addr_lo;
			x->addr_hi = vec[v].addr_hi;
			x->data = vec[v].data;
			x->ctrl = vec[v].ctrl;
		}
	pthread_mutex_unlock(&vd->lock);
	if (busy)
		return vmm_fail("%s: the device is in use: a preview loads into a device never started", vd->name);
	pci_config_apply(&vp->pci, &pci); /* BAR: ioeventfds; MSI-X control: routes, irqfds */
	return 0;
}

/* Every vector a queue or the configuration uses, once. */
static void signal_all_vectors(struct virtio_pci *vp)
{
	struct virtio_device *vd = vp->vd;
	bool used[MAX_VECTORS] = { false };
	pthread_mutex_lock(&vd->lock);
	if (vp->msix_config < vp->nvec)
		used[vp->msix_config] = true;
	for (unsigned q = 0; q < vd->nqueues; q++)
		if (vd->vqs[q].msix_vector < vp->nvec)
			used[vd->vqs[q].msix_vector] = true;
	for (unsigned v = 0; v < vp->nvec; v++)
		if (used[v])
			signal_vector(vp, v);
	pthread_mutex_unlock(&vd->lock);
}

int virtio_pci_resume_loaded(struct virtio_pci *vp)
{
	struct virtio_device *vd = vp->vd;
	pthread_mutex_lock(&vd->lock);
	bool loaded = vp->loaded;
	uint8_t status = vd->status;
	vp->loaded = false;
	pthread_mutex_unlock(&vd->lock);
	if (!loaded)
		return vmm_fail("%s: virtio-pci: no loaded state to resume", vd->name);
	int rc = 0;
	if (virtio_status_live(status)) {
		rc = virtio_activate(vd); /* on failure: NEEDS_RESET, driver told */
		if (rc == 0)
			kick_all_queues(vp);
	}
	signal_all_vectors(vp);
	return rc;
}

int virtio_pci_save_section(struct virtio_pci *vp, const char *name, const struct virtio_pci_part_ops *ops,
			    void *dev, struct mig_buf *b)
{
	struct mig_buf pci;
	mig_buf_init(&pci);
	int rc = virtio_pci_save(vp, &pci);
	if (rc == 0) {
		mig_put_u32(b, (uint32_t)pci.len);
		mig_put_bytes(b, pci.data, pci.len);
		rc = mig_buf_ok(&pci, name) || ops->save(dev, b) ? -1 : 0;
	}
	mig_buf_free(&pci);
	return rc;
}

int virtio_pci_load_section(struct virtio_pci *vp, const char *name, const struct virtio_pci_part_ops *ops,
			    void *dev, const void *p, size_t len)
{
	struct mig_cursor c;
	mig_cursor_init(&c, p, len, name);
	uint32_t pci_len = mig_get_u32(&c);
	const void *pci = mig_get_view(&c, pci_len);
	if (!pci)
		return vmm_fail("%s: truncated (PCI function of %u bytes in %zu)", name, pci_len, len);
	size_t rest = mig_cursor_left(&c);
	const uint8_t *part = (const uint8_t *)p + (len - rest);
	if (ops->check(dev, part, rest))
		return -1;
	if (virtio_pci_load(vp, pci, pci_len)) {
		if (ops->undo)
			ops->undo(dev);
		return -1;
	}
	return ops->apply(dev, part, rest);
}
