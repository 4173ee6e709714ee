#include "loop.h"

#include <stdlib.h>
#include <uv.h>

#include "err.h"

struct loop_fd {
	uv_poll_t poll;
	loop_fd_cb *cb;
	void *opaque;
	int fd;
	int events;
};

struct loop_wake {
	uv_async_t async;
	void (*cb)(void *opaque);
	void *opaque;
};

static void free_handle(uv_handle_t *h)
{
	free(h->data);
}

static int uv_events(int events)
{
	return (events & LOOP_READABLE ? UV_READABLE : 0) | (events & LOOP_WRITABLE ? UV_WRITABLE : 0);
}

static void on_poll(uv_poll_t *p, int status, int uvev)
{
	struct loop_fd *w = p->data;
	if (status < 0) {
		w->cb(w->opaque, status);
		return;
	}
	w->cb(w->opaque, (uvev & UV_READABLE ? LOOP_READABLE : 0) | (uvev & UV_WRITABLE ? LOOP_WRITABLE : 0));
}

struct loop_fd *loop_fd_watch(struct uv_loop_s *loop, int fd, int events, loop_fd_cb *cb, void *opaque)
{
	struct loop_fd *w = calloc(1, sizeof(*w));
	if (!w) {
		vmm_fail("fd %d: out of memory for a watcher", fd);
		return NULL;
	}
	int rc = uv_poll_init(loop, &w->poll, fd);
	if (rc < 0) {
		vmm_fail("fd %d: uv_poll_init: %s", fd, uv_strerror(rc));
		free(w);
		return NULL;
	}
	w->poll.data = w;
	w->cb = cb;
	w->opaque = opaque;
	w->fd = fd;
	if (loop_fd_set(w, events)) {
		loop_fd_close(w);
		return NULL;
	}
	return w;
}

int loop_fd_set(struct loop_fd *w, int events)
{
	if (events == w->events)
		return 0;
	int rc = events ? uv_poll_start(&w->poll, uv_events(events), on_poll) : uv_poll_stop(&w->poll);
	if (rc < 0)
		return vmm_fail("fd %d: uv_poll: %s", w->fd, uv_strerror(rc));
	w->events = events;
	return 0;
}

int loop_fd_events(const struct loop_fd *w)
{
	return w->events;
}

void loop_fd_close(struct loop_fd *w)
{
	if (!w)
		return;
	uv_close((uv_handle_t *)&w->poll, free_handle);
}

static void on_async(uv_async_t *a)
{
	struct loop_wake *w = a->data;
	w->cb(w->opaque);
}

struct loop_wake *loop_wake_new(struct uv_loop_s *loop, void (*cb)(void *opaque), void *opaque)
{
	struct loop_wake *w = calloc(1, sizeof(*w));
	if (!w) {
		vmm_fail("out of memory for a loop wake-up");
		return NULL;
	}
	int rc = uv_async_init(loop, &w->async, on_async);
	if (rc < 0) {
		vmm_fail("uv_async_init: %s", uv_strerror(rc));
		free(w);
		return NULL;
	}
	w->async.data = w;
	w->cb = cb;
	w->opaque = opaque;
	return w;
}

void loop_wake_send(struct loop_wake *w)
{
	uv_async_send(&w->async);
}

void loop_wake_close(struct loop_wake *w)
{
	if (!w)
		return;
	uv_close((uv_handle_t *)&w->async, free_handle);
}
