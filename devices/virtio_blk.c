/* virtio-blk: the request parser and the datapath (see virtio_blk.h). */
#include "virtio_blk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "migstream.h"
#include "virtqueue.h"

#define HDR_LEN 16      /* le32 type, le32 reserved, le64 sector */
#define SEG_DESC_LEN 16 /* discard / write-zeroes: le64 sector, le32 num_sectors, le32 flags */
#define WZ_F_UNMAP 1u

struct blk_vq;

/* One request in flight. iov holds the chain as popped; data is the part
 * that carries the payload (the header and the status byte cut off). */
struct blk_slot {
	struct blk_req io;
	struct blk_vq *q;
	struct blk_slot *next_free;
	uint16_t head;
	uint32_t type;
	uint64_t sector;
	uint8_t *status;   /* the request's status byte, in guest RAM */
	uint32_t used_len; /* bytes written into the device-writable part */
	bool flush_after;  /* writethrough: a flush follows the write */
	void *bounce;      /* O_DIRECT with unaligned buffers */
	struct iovec bounce_iov;
	struct iovec *data;
	unsigned ndata;
	unsigned cap;
	struct iovec iov[];
};

struct blk_vq {
	struct virtio_blk *b;
	unsigned index;
	struct blk_slot *slots[VIRTIO_BLK_QUEUE_DEPTH];
	unsigned nslots;
	struct blk_slot *free;
	unsigned inflight;
	bool starved; /* stopped popping for want of a free slot */
};

struct virtio_blk {
	struct virtio_device vd;
	char name[32];
	struct blk_file *file;
	struct uv_loop_s *loop;
	bool readonly, direct;
	unsigned nqueues;
	uint16_t queue_size;
	unsigned seg_max, blk_size;
	uint64_t capacity; /* sectors */
	uint8_t config[VIRTIO_BLK_CONFIG_SIZE];
	_Atomic uint8_t writeback; /* the config byte (vCPU threads write it) */
	bool writeback_at_reset;   /* the configured cache mode */
	char serial[VIRTIO_BLK_ID_BYTES];

	bool running;   /* active and not broken */
	bool quiesced;  /* migration: kicks ignored, nothing in flight */
	bool resetting; /* completions must not touch the rings */
	bool unlocked;  /* quiesce dropped the image's locks */
	bool lock_deferred; /* target: locks not taken yet */
	bool logged_error;
	struct virtio_blk_stats st;
	struct blk_vq q[VIRTIO_BLK_MAX_QUEUES];
};

/* ---- little helpers ---- */

static void put_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put_le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get_le32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get_le64(const uint8_t *p) { return get_le32(p) | (uint64_t)get_le32(p + 4) << 32; }

/* Copies the first len bytes of iov[0..n) to dst; returns the count copied. */
static size_t iov_read(const struct iovec *iov, unsigned n, void *dst, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		size_t k = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;
		memcpy((uint8_t *)dst + done, iov[i].iov_base, k);
		done += k;
	}
	return done;
}

static size_t iov_write(const struct iovec *iov, unsigned n, const void *src, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		size_t k = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;
		memcpy(iov[i].iov_base, (const uint8_t *)src + done, k);
		done += k;
	}
	return done;
}

/* Drops the first `skip` bytes of iov[0..*n) in place (entries emptied are
 * removed); returns the new start. */
static struct iovec *iov_skip(struct iovec *iov, unsigned *n, size_t skip)
{
	while (*n && skip) {
		if (iov->iov_len > skip) {
			iov->iov_base = (uint8_t *)iov->iov_base + skip;
			iov->iov_len -= skip;
			break;
		}
		skip -= iov->iov_len;
		iov++;
		(*n)--;
	}
	while (*n && iov->iov_len == 0) {
		iov++;
		(*n)--;
	}
	return iov;
}

static const char *type_name(uint32_t type)
{
	switch (type) {
	case VIRTIO_BLK_T_IN: return "read";
	case VIRTIO_BLK_T_OUT: return "write";
	case VIRTIO_BLK_T_FLUSH: return "flush";
	case VIRTIO_BLK_T_DISCARD: return "discard";
	case VIRTIO_BLK_T_WRITE_ZEROES: return "write-zeroes";
	default: return "request";
	}
}

/* ---- the datapath ---- */

static void queue_run(struct blk_vq *q);

static void device_broken(struct virtio_blk *b, const char *why)
{
	b->running = false;
	virtio_needs_reset(&b->vd, why);
}

static void slot_release(struct blk_slot *s)
{
	struct blk_vq *q = s->q;
	free(s->bounce);
	s->bounce = NULL;
	s->next_free = q->free;
	q->free = s;
	q->inflight--;
	q->b->st.inflight--;
}

/* The request is over: its status byte, its used entry, maybe an
 * interrupt, and the slot is free for the next chain. */
static void complete(struct blk_slot *s, uint8_t status)
{
	struct blk_vq *q = s->q;
	struct virtio_blk *b = q->b;
	if (status == VIRTIO_BLK_S_IOERR)
		b->st.io_errors++;
	else if (status == VIRTIO_BLK_S_UNSUPP)
		b->st.unsupported++;
	uint16_t head = s->head;
	uint32_t used_len = s->used_len;
	bool deliver = b->running && !b->resetting;
	if (deliver)
		*s->status = status;
	slot_release(s);
	if (!deliver)
		return; /* a reset or a broken driver: nobody to tell */
	struct virtqueue *vq = &b->vd.vqs[q->index];
	vq_push(vq, head, used_len);
	if (vq_should_signal(vq))
		virtio_signal_queue(&b->vd, q->index);
	if (q->starved && !b->quiesced) {
		q->starved = false;
		queue_run(q);
	}
}

static void log_io_error(struct virtio_blk *b, const struct blk_slot *s, int64_t res)
{
	if (b->logged_error)
		return; /* the first one says it; the stats count them all */
	b->logged_error = true;
	fprintf(stderr, "vmm: %s: %s at sector %llu failed: %s; the guest gets an I/O error (counted in io_errors)\n",
		b->name, type_name(s->type), (unsigned long long)s->sector, strerror((int)-res));
}

/* Hands r to the image: -1 when it was queued (it completes later), else
 * the status to complete with now. */
static int submit(struct virtio_blk *b, struct blk_req *r)
{
	if (blk_file_submit(b->file, r) == 0)
		return -1;
	fprintf(stderr, "vmm: %s: %s\n", b->name, vmm_error());
	return VIRTIO_BLK_S_IOERR;
}

static void io_done(struct blk_req *r, int64_t res)
{
	struct blk_slot *s = (struct blk_slot *)((uint8_t *)r - offsetof(struct blk_slot, io));
	struct virtio_blk *b = s->q->b;
	if (res < 0) {
		log_io_error(b, s, res);
		complete(s, VIRTIO_BLK_S_IOERR);
		return;
	}
	if (s->type == VIRTIO_BLK_T_IN && s->bounce && b->running && !b->resetting)
		iov_write(s->data, s->ndata, s->bounce, s->bounce_iov.iov_len);
	if (s->flush_after && r->op == BLK_OP_WRITE) {
		/* writethrough: done once it is on stable storage */
		r->op = BLK_OP_FLUSH;
		r->offset = r->len = 0;
		r->iov = NULL;
		r->niov = 0;
		if (submit(b, r) >= 0)
			complete(s, VIRTIO_BLK_S_IOERR);
		return;
	}
	complete(s, VIRTIO_BLK_S_OK);
}

static bool aligned_for_direct(const struct virtio_blk *b, const struct iovec *iov, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if ((uintptr_t)iov[i].iov_base % b->blk_size || iov[i].iov_len % b->blk_size)
			return false;
	return true;
}

/* A read or a write of data[0..ndata) at sector: range, size and segment
 * checks, then the image. Returns the status to complete with now, or -1
 * if it was submitted. */
static int start_rw(struct virtio_blk *b, struct blk_slot *s, uint64_t len)
{
	bool write = s->type == VIRTIO_BLK_T_OUT;
	if (write && b->readonly)
		return VIRTIO_BLK_S_IOERR;
	if (len % VIRTIO_BLK_SECTOR || s->sector > b->capacity || len / VIRTIO_BLK_SECTOR > b->capacity - s->sector)
		return VIRTIO_BLK_S_IOERR;
	if (s->ndata > b->seg_max)
		return VIRTIO_BLK_S_IOERR;
	for (unsigned i = 0; i < s->ndata; i++)
		if (s->data[i].iov_len > VIRTIO_BLK_SIZE_MAX)
			return VIRTIO_BLK_S_IOERR;
	if (len == 0)
		return VIRTIO_BLK_S_OK;
	if (b->direct && (s->sector * VIRTIO_BLK_SECTOR % b->blk_size || len % b->blk_size))
		return VIRTIO_BLK_S_IOERR;
	struct blk_req *r = &s->io;
	r->op = write ? BLK_OP_WRITE : BLK_OP_READ;
	r->offset = s->sector * VIRTIO_BLK_SECTOR;
	r->len = len;
	r->iov = s->data;
	r->niov = s->ndata;
	if (b->direct && !aligned_for_direct(b, s->data, s->ndata)) {
		if (len > VIRTIO_BLK_BOUNCE_MAX)
			return VIRTIO_BLK_S_IOERR;
		s->bounce = aligned_alloc(4096, (len + 4095) & ~(uint64_t)4095);
		if (!s->bounce)
			return VIRTIO_BLK_S_IOERR;
		s->bounce_iov = (struct iovec){ s->bounce, len };
		if (write)
			iov_read(s->data, s->ndata, s->bounce, len);
		r->iov = &s->bounce_iov;
		r->niov = 1;
	}
	s->flush_after = write && !atomic_load(&b->writeback);
	if (write) {
		b->st.write_reqs++;
		b->st.write_bytes += len;
	} else {
		b->st.read_reqs++;
		b->st.read_bytes += len;
	}
	return submit(b, r);
}

/* Discard and write-zeroes: exactly one 16-byte segment (max_*_seg is 1). */
static int start_range(struct virtio_blk *b, struct blk_slot *s)
{
	bool discard = s->type == VIRTIO_BLK_T_DISCARD;
	unsigned feature = discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES;
	if (!virtio_has_feature(&b->vd, feature))
		return VIRTIO_BLK_S_UNSUPP;
	if (b->readonly)
		return VIRTIO_BLK_S_IOERR;
	uint8_t seg[SEG_DESC_LEN];
	uint64_t total = 0;
	for (unsigned i = 0; i < s->ndata; i++)
		total += s->data[i].iov_len;
	if (total != SEG_DESC_LEN || iov_read(s->data, s->ndata, seg, sizeof(seg)) != sizeof(seg))
		return VIRTIO_BLK_S_IOERR; /* none, several, or a partial one */
	uint64_t sector = get_le64(seg);
	uint32_t n = get_le32(seg + 8), flags = get_le32(seg + 12);
	s->sector = sector;
	if (flags & ~(discard ? 0u : WZ_F_UNMAP))
		return VIRTIO_BLK_S_UNSUPP; /* reserved bits, or unmap on a discard */
	if (n > VIRTIO_BLK_MAX_DISCARD_SECTORS || sector > b->capacity || n > b->capacity - sector)
		return VIRTIO_BLK_S_IOERR;
	if (b->direct && (sector * VIRTIO_BLK_SECTOR % b->blk_size || (uint64_t)n * VIRTIO_BLK_SECTOR % b->blk_size))
		return VIRTIO_BLK_S_IOERR;
	if (n == 0)
		return VIRTIO_BLK_S_OK;
	struct blk_req *r = &s->io;
	r->op = discard ? BLK_OP_DISCARD : BLK_OP_WRITE_ZEROES;
	r->offset = sector * VIRTIO_BLK_SECTOR;
	r->len = (uint64_t)n * VIRTIO_BLK_SECTOR;
	r->iov = NULL;
	r->niov = 0;
	r->unmap = flags & WZ_F_UNMAP;
	if (discard)
		b->st.discard_reqs++;
	else
		b->st.write_zeroes_reqs++;
	return submit(b, r);
}

/* Parses the chain in s and starts it. Returns false if the driver broke
 * the request layout (the device then needs a reset). */
static bool request_start(struct blk_vq *q, struct blk_slot *s, const struct vq_chain *c)
{
	struct virtio_blk *b = q->b;
	s->head = c->head;
	s->bounce = NULL;
	s->flush_after = false;
	if (c->out_len < HDR_LEN || c->in_len < 1) {
		char why[128];
		snprintf(why, sizeof(why), "queue %u: request %u without %s", q->index, c->head,
			 c->out_len < HDR_LEN ? "its 16-byte header" : "a status byte");
		device_broken(b, why);
		return false;
	}
	uint8_t hdr[HDR_LEN];
	iov_read(s->iov, c->nout, hdr, sizeof(hdr));
	s->type = get_le32(hdr);
	s->sector = get_le64(hdr + 8);

	/* The status byte is the last device-writable byte. */
	struct iovec *in = s->iov + c->nout;
	unsigned nin = c->nin;
	while (nin && in[nin - 1].iov_len == 0)
		nin--;
	struct iovec *last = &in[nin - 1];
	s->status = (uint8_t *)last->iov_base + last->iov_len - 1;
	last->iov_len--;
	uint64_t in_data = c->in_len - 1;

	unsigned nout = c->nout;
	struct iovec *out = iov_skip(s->iov, &nout, HDR_LEN);
	uint64_t out_data = c->out_len - HDR_LEN;

	int status;
	s->used_len = 1;
	switch (s->type) {
	case VIRTIO_BLK_T_IN:
		s->ndata = nin;
		s->data = iov_skip(in, &s->ndata, 0);
		s->used_len = (uint32_t)(in_data + 1);
		status = start_rw(b, s, in_data);
		if (status > 0)
			s->used_len = 1; /* nothing was read */
		break;
	case VIRTIO_BLK_T_OUT:
		s->data = out;
		s->ndata = nout;
		status = start_rw(b, s, out_data);
		break;
	case VIRTIO_BLK_T_FLUSH:
		if (!virtio_has_feature(&b->vd, VIRTIO_BLK_F_FLUSH)) {
			status = VIRTIO_BLK_S_UNSUPP;
			break;
		}
		s->io.op = BLK_OP_FLUSH;
		s->io.offset = s->io.len = 0;
		s->io.iov = NULL;
		s->io.niov = 0;
		b->st.flush_reqs++;
		status = submit(b, &s->io);
		break;
	case VIRTIO_BLK_T_GET_ID: {
		unsigned n = nin;
		struct iovec *id = iov_skip(in, &n, 0);
		size_t k = in_data < VIRTIO_BLK_ID_BYTES ? in_data : VIRTIO_BLK_ID_BYTES;
		s->used_len = (uint32_t)(iov_write(id, n, b->serial, k) + 1);
		status = VIRTIO_BLK_S_OK;
		break;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		s->data = out;
		s->ndata = nout;
		status = start_range(b, s);
		break;
	default:
		status = VIRTIO_BLK_S_UNSUPP;
		break;
	}
	if (status >= 0)
		complete(s, (uint8_t)status);
	return true;
}

/* Pops and starts every chain it has a slot for. */
static void queue_run(struct blk_vq *q)
{
	struct virtio_blk *b = q->b;
	struct virtqueue *vq = &b->vd.vqs[q->index];
	if (!b->running || b->quiesced || b->resetting || !vq->started)
		return;
	vq_set_notification(vq, false);
	for (;;) {
		while (q->free) {
			struct blk_slot *s = q->free;
			struct vq_chain c = { .iov = s->iov, .cap = s->cap };
			int rc = vq_pop(vq, &c);
			if (rc < 0) {
				device_broken(b, vmm_error());
				return;
			}
			if (rc == 0)
				break;
			q->free = s->next_free;
			q->inflight++;
			b->st.inflight++;
			if (!request_start(q, s, &c) || !b->running)
				return;
		}
		if (!q->free) {
			q->starved = true; /* a completion runs the queue again */
			return;
		}
		if (!vq_set_notification(vq, true))
			return;
		vq_set_notification(vq, false);
	}
}

/* ---- virtio device ops ---- */

static void blk_config_read(struct virtio_device *vd, uint32_t offset, void *data, unsigned len)
{
	struct virtio_blk *b = vd->opaque;
	b->config[VIRTIO_BLK_CFG_WRITEBACK] = atomic_load(&b->writeback);
	memcpy(data, b->config + offset, len);
}

static void blk_config_write(struct virtio_device *vd, uint32_t offset, const void *data, unsigned len)
{
	struct virtio_blk *b = vd->opaque;
	/* only the cache mode is writable, and only with CONFIG_WCE */
	if (offset <= VIRTIO_BLK_CFG_WRITEBACK && offset + len > VIRTIO_BLK_CFG_WRITEBACK &&
	    virtio_has_feature(vd, VIRTIO_BLK_F_CONFIG_WCE))
		atomic_store(&b->writeback, ((const uint8_t *)data)[VIRTIO_BLK_CFG_WRITEBACK - offset] ? 1 : 0);
}

static int blk_activate(struct virtio_device *vd)
{
	struct virtio_blk *b = vd->opaque;
	if (!virtio_has_feature(vd, VIRTIO_F_VERSION_1))
		return vmm_fail("the driver did not accept VIRTIO_F_VERSION_1");
	if (!vd->mem)
		return vmm_fail("no guest memory");
	b->running = true;
	b->quiesced = false;
	for (unsigned i = 0; i < b->nqueues; i++)
		queue_run(&b->q[i]);
	return 0;
}

static void blk_reset(struct virtio_device *vd)
{
	struct virtio_blk *b = vd->opaque;
	b->running = false;
	b->resetting = true;
	blk_file_drain(b->file); /* what is in flight finishes, unseen */
	b->resetting = false;
	for (unsigned i = 0; i < b->nqueues; i++)
		b->q[i].starved = false;
	/* a new driver starts from the configured cache mode */
	atomic_store(&b->writeback, b->writeback_at_reset);
}

static void blk_queue_notify(struct virtio_device *vd, unsigned q)
{
	struct virtio_blk *b = vd->opaque;
	if (q < b->nqueues)
		queue_run(&b->q[q]);
}

static const struct virtio_device_ops blk_ops = {
	.config_read = blk_config_read,
	.config_write = blk_config_write,
	.activate = blk_activate,
	.reset = blk_reset,
	.queue_notify = blk_queue_notify,
};

/* ---- construction ---- */

static void fill_config(struct virtio_blk *b, bool writeback)
{
	uint8_t *c = b->config;
	memset(c, 0, sizeof(b->config));
	put_le64(c + VIRTIO_BLK_CFG_CAPACITY, b->capacity);
	put_le32(c + VIRTIO_BLK_CFG_SIZE_MAX, VIRTIO_BLK_SIZE_MAX);
	put_le32(c + VIRTIO_BLK_CFG_SEG_MAX, b->seg_max);
	put_le32(c + VIRTIO_BLK_CFG_BLK_SIZE, b->blk_size);
	c[VIRTIO_BLK_CFG_PHYS_BLOCK_EXP] = 0;
	put_le16(c + VIRTIO_BLK_CFG_MIN_IO_SIZE, 1);
	put_le32(c + VIRTIO_BLK_CFG_OPT_IO_SIZE, 0);
	put_le16(c + VIRTIO_BLK_CFG_NUM_QUEUES, (uint16_t)b->nqueues);
	put_le32(c + VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS, VIRTIO_BLK_MAX_DISCARD_SECTORS);
	put_le32(c + VIRTIO_BLK_CFG_MAX_DISCARD_SEG, 1);
	put_le32(c + VIRTIO_BLK_CFG_DISCARD_ALIGN, b->blk_size / VIRTIO_BLK_SECTOR);
	put_le32(c + VIRTIO_BLK_CFG_MAX_WZ_SECTORS, VIRTIO_BLK_MAX_DISCARD_SECTORS);
	put_le32(c + VIRTIO_BLK_CFG_MAX_WZ_SEG, 1);
	c[VIRTIO_BLK_CFG_WZ_MAY_UNMAP] = 1;
	b->writeback_at_reset = writeback;
	atomic_store(&b->writeback, writeback ? 1 : 0);
}

static uint64_t offered_features(const struct virtio_blk *b)
{
	uint64_t f = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX) |
		     VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC) | VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX) |
		     VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) | VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) |
		     VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) | VIRTIO_BIT(VIRTIO_BLK_F_TOPOLOGY) |
		     VIRTIO_BIT(VIRTIO_BLK_F_CONFIG_WCE);
	if (b->nqueues > 1)
		f |= VIRTIO_BIT(VIRTIO_BLK_F_MQ);
	if (b->readonly)
		f |= VIRTIO_BIT(VIRTIO_BLK_F_RO);
	if (!b->readonly && blk_file_can_discard(b->file))
		f |= VIRTIO_BIT(VIRTIO_BLK_F_DISCARD);
	if (!b->readonly && blk_file_can_write_zeroes(b->file))
		f |= VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES);
	return f;
}

struct virtio_blk *virtio_blk_new(const struct virtio_blk_options *o, const struct guest_mem *mem,
				  struct uv_loop_s *loop)
{
	const char *name = o->name ? o->name : "disk";
	uint16_t qsize = o->queue_size ? o->queue_size : 256;
	if (o->queues < 1 || o->queues > VIRTIO_BLK_MAX_QUEUES) {
		vmm_fail("%s: %u queues (1 to %d)", name, o->queues, VIRTIO_BLK_MAX_QUEUES);
		return NULL;
	}
	if (qsize < 4 || qsize > VQ_MAX_SIZE || (qsize & (qsize - 1))) {
		vmm_fail("%s: queue size %u is not a power of 2 from 4 to %d", name, qsize, VQ_MAX_SIZE);
		return NULL;
	}
	if (o->serial && strlen(o->serial) > VIRTIO_BLK_ID_BYTES) {
		vmm_fail("%s: serial \"%s\" is longer than %d bytes", name, o->serial, VIRTIO_BLK_ID_BYTES);
		return NULL;
	}
	if (!loop) {
		vmm_fail("%s: no event loop to run a disk on", name);
		return NULL;
	}
	struct virtio_blk *b = calloc(1, sizeof(*b));
	if (!b) {
		vmm_fail("%s: out of memory", name);
		return NULL;
	}
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->loop = loop;
	b->readonly = o->readonly;
	b->direct = o->cache == BLK_CACHE_NONE;
	b->nqueues = o->queues;
	b->queue_size = qsize;
	b->seg_max = qsize - 2 < VIRTIO_BLK_SEG_MAX_LIMIT ? qsize - 2u : VIRTIO_BLK_SEG_MAX_LIMIT;
	b->lock_deferred = o->defer_lock && o->fd < 0;
	if (o->serial)
		memcpy(b->serial, o->serial, strlen(o->serial));

	struct blk_file_options fo = {
		.path = o->path,
		.fd = o->fd,
		.readonly = o->readonly,
		.lock = !b->lock_deferred,
		/* writethrough is the device's job (a flush after each write),
		 * so that the driver can switch the cache mode */
		.cache = b->direct ? BLK_CACHE_NONE : BLK_CACHE_WRITEBACK,
		.engine = o->engine,
		.queue_depth = o->queues * VIRTIO_BLK_QUEUE_DEPTH,
	};
	b->file = blk_file_open(&fo, loop);
	if (!b->file) {
		vmm_fail_context("%s", name);
		free(b);
		return NULL;
	}
	b->blk_size = blk_file_block_size(b->file);
	b->capacity = blk_file_size(b->file) / VIRTIO_BLK_SECTOR;
	fill_config(b, o->cache != BLK_CACHE_WRITETHROUGH);

	virtio_init(&b->vd, b->name, VIRTIO_ID_BLOCK, &blk_ops, b, b->nqueues, qsize, VIRTIO_BLK_CONFIG_SIZE);
	b->vd.host_features = offered_features(b);
	b->vd.mem = mem;
	b->vd.loop = loop;

	unsigned depth = qsize < VIRTIO_BLK_QUEUE_DEPTH ? qsize : VIRTIO_BLK_QUEUE_DEPTH;
	unsigned cap = b->seg_max + 2;
	for (unsigned i = 0; i < b->nqueues; i++) {
		struct blk_vq *q = &b->q[i];
		q->b = b;
		q->index = i;
		for (unsigned k = 0; k < depth; k++) {
			struct blk_slot *s = calloc(1, sizeof(*s) + cap * sizeof(struct iovec));
			if (!s) {
				vmm_fail("%s: out of memory", name);
				if (o->fd >= 0) /* a handed-in fd stays the caller's */
					blk_file_disown_fd(b->file);
				virtio_blk_free(b);
				return NULL;
			}
			s->q = q;
			s->cap = cap;
			s->io.done = io_done;
			s->next_free = q->free;
			q->free = s;
			q->slots[q->nslots++] = s;
		}
	}
	return b;
}

void virtio_blk_disown_fd(struct virtio_blk *b)
{
	if (b && b->file)
		blk_file_disown_fd(b->file);
}

void virtio_blk_free(struct virtio_blk *b)
{
	if (!b)
		return;
	b->running = false;
	b->resetting = true;
	if (b->file)
		blk_file_close(b->file); /* completes what is in flight first */
	for (unsigned i = 0; i < b->nqueues; i++)
		for (unsigned k = 0; k < b->q[i].nslots; k++) {
			free(b->q[i].slots[k]->bounce);
			free(b->q[i].slots[k]);
		}
	virtio_destroy(&b->vd);
	free(b);
}

struct virtio_device *virtio_blk_device(struct virtio_blk *b)
{
	return &b->vd;
}

uint64_t virtio_blk_capacity(const struct virtio_blk *b)
{
	return b->capacity;
}

int virtio_blk_fd(const struct virtio_blk *b)
{
	return blk_file_fd(b->file);
}

const char *virtio_blk_engine_name(const struct virtio_blk *b)
{
	return blk_file_engine(b->file) == BLK_ENGINE_URING ? "io_uring" : "threads";
}

void virtio_blk_get_stats(const struct virtio_blk *b, struct virtio_blk_stats *s)
{
	*s = b->st;
}

size_t virtio_blk_describe(const struct virtio_blk *b, char *buf, size_t len)
{
	size_t off = 0;
	if (len == 0)
		return 0;
	buf[0] = 0;
	for (unsigned i = 0; i < b->nqueues && off + 1 < len; i++) {
		const struct blk_vq *q = &b->q[i];
		char ring[256];
		vq_describe(&b->vd.vqs[i], ring, sizeof(ring));
		int n = snprintf(buf + off, len - off, "queue %u: %u in flight%s; %s\n", i, q->inflight,
				 q->starved ? " (waiting for a free slot)" : "", ring);
		if (n < 0)
			break;
		off += (size_t)n < len - off ? (size_t)n : len - off - 1;
	}
	return off;
}

/* ---- migration ---- */

int virtio_blk_quiesce(struct virtio_blk *b, bool keep_lock)
{
	if (b->quiesced)
		return 0;
	b->quiesced = true;
	blk_file_drain(b->file); /* every write reaches the image, every used entry the ring */
	if (!keep_lock && !b->lock_deferred) {
		if (blk_file_unlock(b->file)) {
			b->quiesced = false;
			for (unsigned i = 0; i < b->nqueues; i++)
				queue_run(&b->q[i]);
			return vmm_fail_context("%s", b->name);
		}
		b->unlocked = true;
	}
	return 0;
}

static uint64_t ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int virtio_blk_unquiesce(struct virtio_blk *b, int relock_ms)
{
	if (!b->quiesced)
		return 0;
	int rc = 0;
	if (b->unlocked) {
		/* a target that opened the image may not have let go yet */
		uint64_t end = ms_now() + (uint64_t)(relock_ms > 0 ? relock_ms : 0);
		while ((rc = blk_file_lock(b->file)) && ms_now() < end)
			nanosleep(&(struct timespec){ 0, 20 * 1000000 }, NULL);
		if (rc)
			rc = vmm_fail("%s: %s; the disk runs on without its lock", b->name, vmm_error());
		else
			b->unlocked = false;
	}
	b->quiesced = false;
	/* kicks ignored while quiesced: look at every queue once */
	for (unsigned i = 0; i < b->nqueues; i++)
		queue_run(&b->q[i]);
	return rc;
}

#define NSTATS 9

static void stats_array(const struct virtio_blk_stats *s, uint64_t v[NSTATS])
{
	const uint64_t a[NSTATS] = { s->read_reqs, s->read_bytes, s->write_reqs, s->write_bytes, s->flush_reqs,
				     s->discard_reqs, s->write_zeroes_reqs, s->io_errors, s->unsupported };
	memcpy(v, a, sizeof(a));
}

int virtio_blk_save(struct virtio_blk *b, struct mig_buf *out)
{
	if (!b->quiesced)
		return vmm_fail("%s: saved before virtio_blk_quiesce", b->name);
	if (b->st.inflight)
		return vmm_fail("%s: %u requests still in flight", b->name, b->st.inflight);
	mig_put_u32(out, b->nqueues);
	mig_put_u64(out, b->capacity);
	mig_put_u8(out, b->readonly);
	mig_put_u8(out, atomic_load(&b->writeback));
	uint64_t v[NSTATS];
	stats_array(&b->st, v);
	for (int i = 0; i < NSTATS; i++)
		mig_put_u64(out, v[i]);
	return mig_buf_ok(out, b->name);
}

struct blk_loaded {
	uint8_t writeback;
	uint64_t stats[NSTATS];
};

static int load_decode(struct virtio_blk *b, const void *p, size_t len, struct blk_loaded *l)
{
	struct mig_cursor c;
	mig_cursor_init(&c, p, len, b->name);
	uint32_t queues = mig_get_u32(&c);
	uint64_t capacity = mig_get_u64(&c);
	uint8_t readonly = mig_get_u8(&c);
	l->writeback = mig_get_u8(&c);
	for (int i = 0; i < NSTATS; i++)
		l->stats[i] = mig_get_u64(&c);
	if (mig_cursor_finish(&c))
		return -1;
	if (queues != b->nqueues)
		return vmm_fail("%s: %u queues in the stream, %u here", b->name, queues, b->nqueues);
	if (capacity != b->capacity)
		return vmm_fail("%s: the source's disk has %llu sectors, this image %llu", b->name,
				(unsigned long long)capacity, (unsigned long long)b->capacity);
	if (readonly > 1 || (bool)readonly != b->readonly)
		return vmm_fail("%s: readonly %u in the stream, %s here", b->name, readonly,
				b->readonly ? "read-only" : "writable");
	if (l->writeback > 1)
		return vmm_fail("%s: writeback %u (0 or 1)", b->name, l->writeback);
	return 0;
}

int virtio_blk_load_check(struct virtio_blk *b, const void *p, size_t len)
{
	struct blk_loaded l;
	return load_decode(b, p, len, &l);
}

int virtio_blk_load(struct virtio_blk *b, const void *p, size_t len)
{
	struct blk_loaded l;
	if (b->vd.active)
		return vmm_fail("%s: loaded while active", b->name);
	if (load_decode(b, p, len, &l))
		return -1;
	atomic_store(&b->writeback, l.writeback);
	struct virtio_blk_stats *s = &b->st;
	uint64_t *v = l.stats;
	s->read_reqs = v[0], s->read_bytes = v[1], s->write_reqs = v[2], s->write_bytes = v[3];
	s->flush_reqs = v[4], s->discard_reqs = v[5], s->write_zeroes_reqs = v[6];
	s->io_errors = v[7], s->unsupported = v[8];
	return 0;
}

int virtio_blk_take_lock(struct virtio_blk *b)
{
	if (!b->lock_deferred)
		return 0;
	if (blk_file_lock(b->file))
		return vmm_fail_context("%s", b->name);
	b->lock_deferred = false;
	return 0;
}

void virtio_blk_drop_deferred_lock(struct virtio_blk *b)
{
	if (!b->lock_deferred && b->file && blk_file_unlock(b->file) == 0)
		b->lock_deferred = true;
}

#define BK_WRITABLE 1u
#define BK_DIRECT   2u

static int file_identity(struct virtio_blk *b, struct stat *st, uint8_t *flags)
{
	int fd = blk_file_fd(b->file);
	if (fstat(fd, st))
		return vmm_fail_errno("%s: fstat of the image", b->name);
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return vmm_fail_errno("%s: F_GETFL of the image", b->name);
	*flags = ((fl & O_ACCMODE) != O_RDONLY ? BK_WRITABLE : 0) | (fl & O_DIRECT ? BK_DIRECT : 0);
	return 0;
}

int virtio_blk_backend_save(struct virtio_blk *b, struct mig_buf *out)
{
	struct stat st;
	uint8_t flags = 0;
	if (file_identity(b, &st, &flags))
		return -1;
	mig_put_u64(out, blk_file_size(b->file));
	mig_put_u64(out, (uint64_t)st.st_dev);
	mig_put_u64(out, (uint64_t)st.st_ino);
	mig_put_u8(out, flags);
	return mig_buf_ok(out, b->name);
}

int virtio_blk_backend_check(struct virtio_blk *b, const void *p, size_t len)
{
	struct mig_cursor c;
	mig_cursor_init(&c, p, len, b->name);
	uint64_t size = mig_get_u64(&c), dev = mig_get_u64(&c), ino = mig_get_u64(&c);
	uint8_t flags = mig_get_u8(&c);
	if (mig_cursor_finish(&c))
		return -1;
	struct stat st;
	uint8_t mine = 0;
	if (file_identity(b, &st, &mine))
		return -1;
	if ((uint64_t)st.st_dev != dev || (uint64_t)st.st_ino != ino)
		return vmm_fail("%s: the image fd received is not the file the source described (device %llu inode "
				"%llu, the fd's %llu/%llu)",
				b->name, (unsigned long long)dev, (unsigned long long)ino,
				(unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
	if (size != blk_file_size(b->file))
		return vmm_fail("%s: the source described an image of %llu bytes, the fd's has %llu", b->name,
				(unsigned long long)size, (unsigned long long)blk_file_size(b->file));
	if (flags != mine)
		return vmm_fail("%s: the source described the image open %s%s, the fd is %s%s", b->name,
				flags & BK_WRITABLE ? "writable" : "read-only", flags & BK_DIRECT ? " with O_DIRECT" : "",
				mine & BK_WRITABLE ? "writable" : "read-only", mine & BK_DIRECT ? " with O_DIRECT" : "");
	return 0;
}
