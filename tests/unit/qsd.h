/* qemu-storage-daemon as a vhost-user-blk backend for tests: one process
 * per export, its raw image and socket in a directory the caller names,
 * killed at exit if the test has not stopped it. No CHECKs here. */
#ifndef VMM_TEST_QSD_H
#define VMM_TEST_QSD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct qsd {
	pid_t pid;      /* 0 when not running */
	char image[256];
	char socket[108];
};

/* Whether qemu-storage-daemon can be run here (on PATH). */
bool qsd_available(void);

/* Makes image (a sparse file of size bytes, kept if it exists with that
 * size) and starts a daemon exporting it writable on socket; returns once
 * the socket accepts connections (at most 10 s). -1 with a message. */
int qsd_start(struct qsd *q, const char *image, uint64_t size, const char *socket);

/* SIGKILLs the daemon and reaps it; the image stays. */
void qsd_kill(struct qsd *q);

#endif
