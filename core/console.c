#include "console.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"

int console_init(struct console *c, int sink_fd, int notify_fd)
{
	memset(c, 0, sizeof(*c));
	c->buf = malloc(CONSOLE_CAPTURE_MAX);
	if (!c->buf)
		return vmm_fail("console: cannot allocate %u bytes", CONSOLE_CAPTURE_MAX);
	int err = pthread_mutex_init(&c->lock, NULL);
	if (err) {
		free(c->buf);
		errno = err;
		return vmm_fail_errno("console: pthread_mutex_init");
	}
	c->sink_fd = sink_fd;
	c->notify_fd = notify_fd;
	return 0;
}

void console_destroy(struct console *c)
{
	if (!c->buf)
		return;
	pthread_mutex_destroy(&c->lock);
	free(c->buf);
	c->buf = NULL;
}

static void notify(int fd)
{
	uint64_t one = 1;
	while (fd >= 0 && write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	/* EAGAIN: the counter is saturated, the reader is notified anyway. */
}

/* Oldest byte still held; positions below it were overwritten. */
static uint64_t tail(const struct console *c)
{
	return c->head > CONSOLE_CAPTURE_MAX ? c->head - CONSOLE_CAPTURE_MAX : 0;
}

void console_put(struct console *c, const uint8_t *data, size_t len)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < len; i++)
		c->buf[(c->head + i) % CONSOLE_CAPTURE_MAX] = (char)data[i];
	c->head += len;
	uint64_t t = tail(c);
	if (c->read_pos < t) {
		c->dropped += t - c->read_pos;
		c->read_pos = t;
	}
	if (c->echo_pos < t)
		c->echo_pos = t;
	pthread_mutex_unlock(&c->lock);
	notify(c->notify_fd);
}

/* Copies [from, from+n) out of the ring. */
static void copy_out(const struct console *c, uint64_t from, char *out, size_t n)
{
	size_t off = from % CONSOLE_CAPTURE_MAX;
	size_t first = n < CONSOLE_CAPTURE_MAX - off ? n : CONSOLE_CAPTURE_MAX - off;
	memcpy(out, c->buf + off, first);
	memcpy(out + first, c->buf, n - first);
}

static void (*guard_before)(void), (*guard_after)(void);

void console_set_sink_guard(void (*before)(void), void (*after)(void))
{
	guard_before = before;
	guard_after = after;
}

static int flush_sink(struct console *c, bool *guarded)
{
	char chunk[4096];
	for (;;) {
		pthread_mutex_lock(&c->lock);
		size_t n = c->head - c->echo_pos;
		if (n > sizeof(chunk))
			n = sizeof(chunk);
		uint64_t from = c->echo_pos;
		copy_out(c, from, chunk, n);
		pthread_mutex_unlock(&c->lock);
		if (n == 0 || c->sink_fd < 0)
			return 0;
		if (!*guarded && guard_before && c->sink_fd == STDOUT_FILENO) {
			guard_before();
			*guarded = true;
		}
		ssize_t w = write(c->sink_fd, chunk, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return 0; /* try again on the next poll */
		if (w < 0)
			return vmm_fail_errno("console: write to fd %d", c->sink_fd);
		pthread_mutex_lock(&c->lock);
		if (c->echo_pos == from) /* not overtaken meanwhile */
			c->echo_pos += (uint64_t)w;
		pthread_mutex_unlock(&c->lock);
	}
}

int console_flush(struct console *c)
{
	bool guarded = false;
	int rc = flush_sink(c, &guarded);
	if (guarded && guard_after)
		guard_after();
	return rc;
}

size_t console_unread(struct console *c)
{
	pthread_mutex_lock(&c->lock);
	size_t n = c->head - c->read_pos;
	pthread_mutex_unlock(&c->lock);
	return n;
}

size_t console_peek(struct console *c, char *out, size_t max)
{
	pthread_mutex_lock(&c->lock);
	size_t n = c->head - c->read_pos;
	if (n > max)
		n = max;
	copy_out(c, c->read_pos, out, n);
	pthread_mutex_unlock(&c->lock);
	return n;
}

void console_consume(struct console *c, size_t n)
{
	pthread_mutex_lock(&c->lock);
	if (n > c->head - c->read_pos)
		n = c->head - c->read_pos;
	c->read_pos += n;
	pthread_mutex_unlock(&c->lock);
}
