/* A virtio 1.x device, independent of its transport.
 *
 * The transport (virtio_pci.c, or a test that plays the driver) owns the
 * driver-facing registers: it fills driver_features, each queue's size and
 * addresses, and the status byte, then calls virtio_activate() once the
 * driver set DRIVER_OK and virtio_reset() when it wrote 0. The device
 * (virtio_net.c) supplies the ops below and runs its datapath on the main
 * thread (the libuv loop); it tells the transport about used buffers with
 * virtio_signal_queue() and about a broken driver with virtio_needs_reset().
 *
 * Threads: the transport calls config_read/config_write on vCPU threads with
 * `lock` held; activate, reset and queue_notify run on the main thread. */
#ifndef VMM_VIRTIO_H
#define VMM_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "memory.h"
#include "virtqueue.h"

#define VIRTIO_MAX_QUEUES 64

/* Device status bits (2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER      2
#define VIRTIO_STATUS_DRIVER_OK   4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED      128

/* Transport-independent feature bits (6). */
#define VIRTIO_F_RING_INDIRECT_DESC 28
#define VIRTIO_F_RING_EVENT_IDX     29
#define VIRTIO_F_VERSION_1          32
#define VIRTIO_F_ACCESS_PLATFORM    33

#define VIRTIO_BIT(b) (1ull << (b))

struct virtio_device;

struct virtio_device_ops {
	/* Device configuration space; offset + len <= config_size (checked by
	 * the transport). */
	void (*config_read)(struct virtio_device *vd, uint32_t offset, void *data, unsigned len);
	void (*config_write)(struct virtio_device *vd, uint32_t offset, const void *data, unsigned len);
	/* DRIVER_OK: the queues are started; start the datapath. -1 with a
	 * message marks the device as needing reset. */
	int (*activate)(struct virtio_device *vd);
	/* Stop the datapath; the queues are reset after this returns. */
	void (*reset)(struct virtio_device *vd);
	/* The driver notified queue q (queues whose kicks the device did not
	 * take with virtio_take_kicks). */
	void (*queue_notify)(struct virtio_device *vd, unsigned q);
};

/* What the device asks of its transport. kick_fd/call_fd return -1 where
 * the transport has no such eventfd (tests, or no MSI-X vector). */
struct virtio_transport_ops {
	void (*signal_queue)(void *t, unsigned q);
	void (*signal_config)(void *t);
	int (*kick_fd)(void *t, unsigned q); /* ioeventfd of q's notify address */
	int (*call_fd)(void *t, unsigned q); /* irqfd eventfd of q's vector */
};

struct virtio_device {
	const char *name;        /* "net0", for messages */
	uint16_t device_id;      /* 1 = network */
	const struct virtio_device_ops *ops;
	void *opaque;            /* the device's own state */

	uint64_t host_features;  /* offered */
	uint64_t driver_features;/* accepted by the driver */
	uint8_t status;
	uint32_t config_generation;
	uint32_t config_size;
	unsigned nqueues;
	uint16_t queue_max_size;
	struct virtqueue vqs[VIRTIO_MAX_QUEUES];
	bool kicks_taken[VIRTIO_MAX_QUEUES]; /* the device polls the kick fd itself */
	bool active;             /* activate() succeeded, reset() not yet called */

	const struct guest_mem *mem;
	struct uv_loop_s *loop;
	pthread_mutex_t lock;    /* config space, status */

	const struct virtio_transport_ops *transport;
	void *transport_opaque;
};

void virtio_init(struct virtio_device *vd, const char *name, uint16_t device_id,
		 const struct virtio_device_ops *ops, void *opaque, unsigned nqueues,
		 uint16_t queue_max_size, uint32_t config_size);
void virtio_destroy(struct virtio_device *vd);

bool virtio_has_feature(const struct virtio_device *vd, unsigned bit);

/* Main thread. Starts every enabled queue, then ops->activate. On failure
 * the device is marked as needing reset and -1 returned. */
int virtio_activate(struct virtio_device *vd);
/* Main thread. ops->reset, then every queue and all negotiated state back
 * to power-on; status becomes 0. */
void virtio_reset(struct virtio_device *vd);

/* Used buffers were added to q: interrupt the driver if it wants one. */
void virtio_signal_queue(struct virtio_device *vd, unsigned q);
/* The driver broke the protocol: stop trusting it until it resets the
 * device. Logs `why` once to stderr, sets NEEDS_RESET, interrupts. */
void virtio_needs_reset(struct virtio_device *vd, const char *why);
bool virtio_is_broken(struct virtio_device *vd);
void virtio_config_changed(struct virtio_device *vd);

/* For backends that take over the datapath (vhost): the eventfds of q.
 * virtio_take_kicks(q) tells the transport not to poll q's kick fd. */
int virtio_kick_fd(struct virtio_device *vd, unsigned q);
int virtio_call_fd(struct virtio_device *vd, unsigned q);
void virtio_take_kicks(struct virtio_device *vd, unsigned q, bool taken);

/* Whether a device with this status byte should be running: DRIVER_OK
 * set, NEEDS_RESET and FAILED clear. */
bool virtio_status_live(uint8_t status);

/* Main thread, device active: kicks every enabled queue once, as if the
 * driver had notified it. A queue whose kicks the device took (vhost) gets
 * a write on its kick eventfd; the others get ops->queue_notify. For kicks
 * that may have been lost (after activation, after migration). */
void virtio_kick_all(struct virtio_device *vd);

/* --- local migration ---------------------------------------------------------
 * What is saved: the negotiation (offered and accepted features, status,
 * config generation) and, per queue, the driver's registers (size, enable,
 * MSI-X vector, ring addresses) and the device's indices (last_avail,
 * used_idx, the EVENT_IDX signalling state). No host pointers: a loaded
 * queue is stopped; virtio_activate() maps it again and goes on from the
 * restored indices. Device-specific state (config space, backend) is the
 * device's own section. */

struct mig_buf;
struct mig_cursor;

struct virtio_saved_queue {
	uint16_t size;
	bool enabled;
	uint16_t msix_vector; /* the transport's: it checks the range */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t last_avail, used_idx, signalled_used;
	bool signalled_used_valid, event_idx;
};

struct virtio_saved {
	uint64_t host_features, driver_features;
	uint8_t status;
	uint32_t config_generation;
	unsigned nqueues;
	struct virtio_saved_queue vqs[VIRTIO_MAX_QUEUES];
};

/* Main thread, vCPUs stopped, no reset or activation under way (the
 * transport checks that). Appends the state; changes nothing. */
void virtio_save(const struct virtio_device *vd, struct mig_buf *b);

/* Reads what virtio_save wrote into *out and checks it against vd: same
 * device ID and queue count; host features a subset of what vd offers;
 * driver features a subset of those; each queue size a power of 2 up to
 * queue_max_size; flags 0 or 1; no more than `size` chains in flight
 * (last_avail - used_idx); for a live status, each enabled queue's rings
 * aligned and inside vd->mem (checked, never read). vd must not be active.
 * Changes nothing; -1 with a message naming the field ("net0: queue 1:
 * size 100 is not a power of 2 ..."), or the cursor's "truncated" one. */
int virtio_decode(const struct virtio_device *vd, struct mig_cursor *c, struct virtio_saved *out);

/* Applies a decoded state: vd takes the stream's host features (a subset
 * of its own), driver features, status, config generation and queues (all
 * stopped). Nothing is started and guest memory is not touched. */
void virtio_apply(struct virtio_device *vd, const struct virtio_saved *s);

/* virtio_decode then virtio_apply: nothing applied on failure. */
int virtio_load(struct virtio_device *vd, struct mig_cursor *c);

#endif
