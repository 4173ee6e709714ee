/* The libuv glue the devices use, so that no device includes <uv.h> or knows
 * how handles are closed. Everything here runs on the main thread (the one
 * running the loop), except loop_wake_send(), which any thread may call.
 *
 * Handles are closed asynchronously (uv_close); the *_close functions stop
 * the callback at once and free the memory once libuv is done with it, so a
 * caller may free its own state right after closing. */
#ifndef VMM_LOOP_H
#define VMM_LOOP_H

#include <stdbool.h>

struct uv_loop_s;

enum {
	LOOP_READABLE = 1,
	LOOP_WRITABLE = 2,
};

/* Called with the events that are ready (LOOP_READABLE | LOOP_WRITABLE), or
 * with events < 0 (a negated errno) if polling the fd failed. */
typedef void loop_fd_cb(void *opaque, int events);

struct loop_fd;

/* Watches fd (not owned: never closed here) for `events`; 0 creates the
 * watcher stopped. NULL with a message on failure. */
struct loop_fd *loop_fd_watch(struct uv_loop_s *loop, int fd, int events, loop_fd_cb *cb, void *opaque);
/* Changes the watched events; 0 stops watching until the next call. */
int loop_fd_set(struct loop_fd *w, int events);
int loop_fd_events(const struct loop_fd *w);
void loop_fd_close(struct loop_fd *w); /* NULL is fine */

/* A thread-safe wake-up: loop_wake_send() from any thread makes the loop
 * call cb once (several sends before the loop runs coalesce into one call). */
struct loop_wake;
struct loop_wake *loop_wake_new(struct uv_loop_s *loop, void (*cb)(void *opaque), void *opaque);
void loop_wake_send(struct loop_wake *w);
void loop_wake_close(struct loop_wake *w); /* NULL is fine */

#endif
