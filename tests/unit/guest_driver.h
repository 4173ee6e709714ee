/* A guest's virtio driver for tests without KVM: a buffer stands for guest
 * RAM (as a memfd would be shared), and the driver fills and reads split
 * rings in it the way a guest does. No CHECKs here (check.h's counters are
 * per file): the tests check what these return. */
#ifndef VMM_TEST_GUEST_DRIVER_H
#define VMM_TEST_GUEST_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio.h"

#define MiB (1024u * 1024u)
#define GUEST_SIZE (4 * MiB)
#define GUEST_MAX_QUEUES 8

/* The driver's side of one queue: where its rings are, how far it got. */
struct gq {
	uint64_t desc, avail, used;
	uint16_t next_desc, avail_idx, used_seen;
};

/* One buffer of a chain. */
struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write; /* the device writes it */
};

extern uint8_t guest[GUEST_SIZE];
extern struct gq gqs[GUEST_MAX_QUEUES];
extern uint16_t qsize; /* what the driver picks for every queue: 256 unless a test changes it */

/* Descriptor i of queue q's table. */
struct vq_desc *gdesc(unsigned q, uint16_t i);

/* Queue q's available ring: flags, idx, ring[qsize]. */
uint16_t *gavail(unsigned q);

/* Makes the chain at head available to the device. */
void publish(unsigned q, uint16_t head);

/* Chains n buffers in queue q's next free descriptors, publishes it; returns the head. */
uint16_t add_chain(unsigned q, const struct seg *s, unsigned n);

/* The device's used index on queue q. */
uint16_t used_idx(unsigned q);

/* Takes the next used entry of queue q; false if there is none. */
bool get_used(unsigned q, uint16_t *id, uint32_t *len);

/* Driver initialisation (virtio 1.x 3.1.1) up to DRIVER_OK; returns virtio_activate's. */
int guest_driver_start(struct virtio_device *vd, uint64_t features, unsigned nqueues);

#endif
