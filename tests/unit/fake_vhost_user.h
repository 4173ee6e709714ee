/* A vhost-user backend in a thread, for tests: it offers what a test asks
 * (features, protocol features, INFLIGHT_SHMFD, which qemu-storage-daemon
 * does not), answers every request the front end sends, counts them by
 * request, and processes no ring. One connection at a time on a UNIX
 * socket at a path, re-listening when it closes, as qemu-storage-daemon
 * does. No CHECKs here. */
#ifndef VMM_TEST_FAKE_VHOST_USER_H
#define VMM_TEST_FAKE_VHOST_USER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vhost_user.h"

#define FAKE_VU_MAX_REQUEST 64

struct fake_vu {
	/* set before fake_vu_start */
	uint64_t features;          /* GET_FEATURES */
	uint64_t protocol_features; /* GET_PROTOCOL_FEATURES */
	uint32_t queue_num;         /* GET_QUEUE_NUM */
	uint8_t config[VHOST_USER_MAX_CONFIG]; /* GET_CONFIG */
	uint64_t inflight_overstate; /* added to the region's size in GET_INFLIGHT_FD's reply (a lie) */

	/* the server's; read with fake_vu_lock held, or after fake_vu_stop */
	char path[108];
	int listen_fd, conn_fd;
	pthread_t thread;
	pthread_mutex_t lock;
	unsigned counts[FAKE_VU_MAX_REQUEST]; /* requests received, by number */
	unsigned connections;                /* accepted so far */
	uint16_t vring_base[VHOST_USER_MAX_QUEUES]; /* SET_VRING_BASE; GET_VRING_BASE answers it */
	int inflight_fd;            /* made at the first GET_INFLIGHT_FD: a memfd */
	struct vhost_user_inflight inflight;
	ino_t inflight_ino;         /* its inode */
	ino_t set_inflight_ino;     /* the last SET_INFLIGHT_FD's fd's inode; 0 none */
	bool call_set[VHOST_USER_MAX_QUEUES]; /* SET_VRING_CALL since the ring last stopped */
	char error[128];            /* a front end's bad message: what was wrong */
	bool stopping;
};

/* The default offer: VERSION_1 and PROTOCOL_FEATURES; MQ, REPLY_ACK,
 * CONFIG and INFLIGHT_SHMFD; 4 queues; a 1 MiB disk's configuration. */
void fake_vu_defaults(struct fake_vu *f);
/* Listens at path and serves in a thread. -1 with a message. */
int fake_vu_start(struct fake_vu *f, const char *path);
/* Closes everything and joins the thread. */
void fake_vu_stop(struct fake_vu *f);
/* How many of request the backend has received. */
unsigned fake_vu_count(struct fake_vu *f, uint32_t request);
/* Marks descriptor head `desc` of queue q in flight (or not) in the
 * inflight region, as a backend does when it pops (completes) a chain;
 * used_idx is the region's used index to record. -1 if there is no region. */
int fake_vu_mark_inflight(struct fake_vu *f, unsigned q, uint16_t desc, bool inflight, uint16_t used_idx);
/* Hangs up on the current connection (a backend that dies). */
void fake_vu_hang_up(struct fake_vu *f);

#endif
