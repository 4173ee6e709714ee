/* The VM's console: what the guest writes to its serial port. vCPU threads
 * append (console_put); the main thread echoes it to the sink fd
 * (console_flush) and scripts read it (console_peek / console_consume), so a
 * slow terminal never stalls a vCPU. The buffer is bounded: when scripts do
 * not consume, the oldest text is dropped and counted. */
#ifndef VMM_CONSOLE_H
#define VMM_CONSOLE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define CONSOLE_CAPTURE_MAX (4u << 20)

struct console {
	pthread_mutex_t lock;
	char *buf;           /* ring of CONSOLE_CAPTURE_MAX bytes */
	uint64_t head;       /* total bytes ever written */
	uint64_t read_pos;   /* scripts consumed up to here */
	uint64_t echo_pos;   /* sink written up to here */
	uint64_t dropped;    /* bytes lost to scripts because the ring was full */
	int sink_fd;         /* -1: capture only */
	int notify_fd;       /* eventfd signalled on new output, -1 if none */
};

int console_init(struct console *c, int sink_fd, int notify_fd);
void console_destroy(struct console *c);

/* vCPU side: append guest output and signal notify_fd. Never blocks on I/O. */
void console_put(struct console *c, const uint8_t *buf, size_t len);

/* Main thread: write pending output to the sink fd. Returns -1 on write error. */
int console_flush(struct console *c);
/* A terminal prompt that shares stdout (a line editor) is told before the
 * first and after the last write of a flush to stdout, so that it can clear
 * its line and redraw it. NULLs: none. Called on the flushing thread. */
void console_set_sink_guard(void (*before)(void), void (*after)(void));

/* Copies the unconsumed text (at most max bytes, oldest first) into out and
 * returns its length. */
size_t console_peek(struct console *c, char *out, size_t max);
size_t console_unread(struct console *c);
void console_consume(struct console *c, size_t n);

#endif
