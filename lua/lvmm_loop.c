/* The libuv glue: the process's one loop, a bounded step of it for the Lua
 * scheduler (vmm.task), a monotonic clock, and a line reader on stdin that
 * never blocks the loop. No Lua runs inside a loop callback: callbacks only
 * record what happened (vm_poll, bytes read) and Lua looks after the step. */
#include "lvmm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <lauxlib.h>

#define STEP_MAX_MS (24u * 3600u * 1000u)
#define STDIN_CHUNK 65536

static bool in_step; /* uv_run is running: the loop must not be re-entered */
static bool step_timer_ready;
static uv_timer_t step_timer; /* static: lives as long as the process */

uv_loop_t *lvmm_loop(void)
{
	return uv_default_loop(); /* NULL if it cannot be initialised */
}

static uv_loop_t *check_loop(lua_State *L)
{
	uv_loop_t *loop = lvmm_loop();
	if (!loop)
		luaL_error(L, "libuv: cannot initialise the event loop");
	return loop;
}

/* ---- step, now ---- */

static void on_step_timer(uv_timer_t *t)
{
	(void)t; /* only there to bound uv_run */
}

static uint64_t seconds_to_ms(lua_Number s)
{
	if (!(s > 0)) /* also NaN */
		return 0;
	if (s >= STEP_MAX_MS / 1000.0)
		return STEP_MAX_MS;
	lua_Number ms = s * 1000.0;
	uint64_t whole = (uint64_t)ms;
	return whole < ms ? whole + 1 : whole;
}

/* core.step([timeout_s]): runs the loop once, waiting at most timeout_s
 * (default 0: only what is ready) for something to happen. */
static int l_step(lua_State *L)
{
	lua_Number timeout = luaL_optnumber(L, 1, 0);
	if (in_step)
		return luaL_error(L, "vmm: the event loop is already running "
				     "(a blocking call from inside a loop callback)");
	uv_loop_t *loop = check_loop(L);
	int err = 0;
	if (!step_timer_ready) {
		err = uv_timer_init(loop, &step_timer);
		if (err)
			return luaL_error(L, "uv_timer_init: %s", uv_strerror(err));
		step_timer_ready = true;
	}
	uv_update_time(loop);
	err = uv_timer_start(&step_timer, on_step_timer, seconds_to_ms(timeout), 0);
	if (err)
		return luaL_error(L, "uv_timer_start: %s", uv_strerror(err));
	in_step = true;
	uv_run(loop, UV_RUN_ONCE);
	in_step = false;
	uv_timer_stop(&step_timer);
	return 0;
}

/* core.now(): monotonic seconds. */
static int l_now(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
	return 1;
}

/* core.cpu_time() -> user, system: this process's CPU seconds so far
 * (getrusage), threads included. */
static int l_cpu_time(lua_State *L)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return luaL_error(L, "getrusage: %s", strerror(errno));
	lua_pushnumber(L, (lua_Number)ru.ru_utime.tv_sec + (lua_Number)ru.ru_utime.tv_usec / 1e6);
	lua_pushnumber(L, (lua_Number)ru.ru_stime.tv_sec + (lua_Number)ru.ru_stime.tv_usec / 1e6);
	return 2;
}

/* ---- stdin ---- */

/* Lines arrive through a uv stream (tty, pipe, socket) or, for a regular
 * file or /dev/null, from plain read()s, which never block for long. */
static struct {
	bool started;
	bool eof;
	bool sync;          /* read() directly: not a stream libuv can watch */
	bool paused;        /* reading stopped (core.stdin_pause) until the next read */
	uv_stream_t *stream; /* malloc'd, never freed: stdin lasts */
	char *buf;
	size_t len, cap;
	char err[128];      /* read error, reported once at EOF */
} in;

static int in_append(const char *data, size_t n)
{
	if (in.len + n > in.cap) {
		size_t cap = in.cap ? in.cap : 4096;
		while (cap < in.len + n)
			cap *= 2;
		char *b = realloc(in.buf, cap);
		if (!b)
			return -1;
		in.buf = b;
		in.cap = cap;
	}
	memcpy(in.buf + in.len, data, n);
	in.len += n;
	return 0;
}

static void in_fail(const char *what)
{
	snprintf(in.err, sizeof(in.err), "stdin: %s", what);
	in.eof = true;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	static char chunk[STDIN_CHUNK];
	(void)h;
	(void)suggested;
	*b = uv_buf_init(chunk, sizeof(chunk));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	if (n > 0 && in_append(b->base, (size_t)n) < 0)
		in_fail("out of memory");
	else if (n == UV_EOF)
		in.eof = true;
	else if (n < 0)
		in_fail(uv_strerror((int)n));
	if (in.eof)
		uv_read_stop(s);
}

static int open_stream(uv_loop_t *loop, uv_handle_type kind)
{
	int err;
	if (kind == UV_TTY) {
		in.stream = malloc(sizeof(uv_tty_t));
		if (!in.stream)
			return UV_ENOMEM;
		return uv_tty_init(loop, (uv_tty_t *)in.stream, STDIN_FILENO, 1);
	}
	if (kind == UV_NAMED_PIPE) {
		in.stream = malloc(sizeof(uv_pipe_t));
		if (!in.stream)
			return UV_ENOMEM;
		err = uv_pipe_init(loop, (uv_pipe_t *)in.stream, 0);
		return err ? err : uv_pipe_open((uv_pipe_t *)in.stream, STDIN_FILENO);
	}
	in.stream = malloc(sizeof(uv_tcp_t));
	if (!in.stream)
		return UV_ENOMEM;
	err = uv_tcp_init(loop, (uv_tcp_t *)in.stream);
	return err ? err : uv_tcp_open((uv_tcp_t *)in.stream, STDIN_FILENO);
}

/* A terminal left in raw mode by an error or exit is put back. */
static void restore_tty(void)
{
	uv_tty_reset_mode();
}

static void in_start(lua_State *L)
{
	in.started = true;
	uv_handle_type kind = uv_guess_handle(STDIN_FILENO);
	if (kind != UV_TTY && kind != UV_NAMED_PIPE && kind != UV_TCP) {
		in.sync = true; /* a file, /dev/null, or closed */
		return;
	}
	if (kind == UV_TTY)
		atexit(restore_tty);
	int err = open_stream(check_loop(L), kind);
	if (!err)
		err = uv_read_start(in.stream, on_alloc, on_read);
	if (err)
		in_fail(uv_strerror(err));
}

/* Starts reading again after core.stdin_pause. */
static void in_resume(void)
{
	if (!in.paused)
		return;
	in.paused = false;
	int err = uv_read_start(in.stream, on_alloc, on_read);
	if (err)
		in_fail(uv_strerror(err));
}

/* core.stdin_pause(): stops reading stdin until the next core.stdin_read_*,
 * so that keys typed meanwhile stay with the terminal (the line editor reads
 * them itself, after vm:attach). */
static int l_stdin_pause(lua_State *L)
{
	(void)L;
	if (in.started && !in.sync && in.stream && !in.eof && !in.paused) {
		uv_read_stop(in.stream);
		in.paused = true;
	}
	return 0;
}

/* One read() of a stdin libuv cannot watch; false if it would block. */
static bool in_read_once(void)
{
	char chunk[STDIN_CHUNK];
	ssize_t n;
	do
		n = read(STDIN_FILENO, chunk, sizeof(chunk));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return false;
	if (n < 0)
		in_fail(strerror(errno));
	else if (n == 0)
		in.eof = true;
	else if (in_append(chunk, (size_t)n) < 0)
		in_fail("out of memory");
	return true;
}

static void in_read_sync(void)
{
	while (!in.eof && !memchr(in.buf ? in.buf : "", '\n', in.len))
		if (!in_read_once())
			return;
}

/* End of input: nil, plus the read error if there was one. */
static int push_end_of_input(lua_State *L)
{
	lua_pushnil(L);
	if (!in.err[0])
		return 1;
	lua_pushstring(L, in.err);
	return 2;
}

/* Pushes and removes the first n bytes of the buffer, without a trailing
 * "\n" or "\r\n". */
static void push_line(lua_State *L, size_t n, size_t skip)
{
	size_t len = n;
	if (len > 0 && in.buf[len - 1] == '\r')
		len--;
	lua_pushlstring(L, in.buf, len);
	memmove(in.buf, in.buf + n + skip, in.len - n - skip);
	in.len -= n + skip;
}

/* core.stdin_read_line() -> the next line; false if none is complete yet (it
 * arrives while core.step runs); nil (and an error message if reading
 * failed) at the end of input. */
static int l_stdin_read_line(lua_State *L)
{
	if (!in.started)
		in_start(L);
	in_resume();
	if (in.sync)
		in_read_sync();
	char *nl = in.len ? memchr(in.buf, '\n', in.len) : NULL;
	if (nl) {
		push_line(L, (size_t)(nl - in.buf), 1);
		return 1;
	}
	if (!in.eof) {
		lua_pushboolean(L, 0);
		return 1;
	}
	if (in.len) {
		push_line(L, in.len, 0);
		return 1;
	}
	return push_end_of_input(L);
}

/* core.stdin_read_raw() -> every byte read so far (maybe ""); nil (and an
 * error message if reading failed) at the end of input. For vm:attach. */
static int l_stdin_read_raw(lua_State *L)
{
	if (!in.started)
		in_start(L);
	in_resume();
	if (in.sync && !in.eof)
		in_read_once();
	if (in.len || !in.eof) {
		lua_pushlstring(L, in.buf ? in.buf : "", in.len);
		in.len = 0;
		return 1;
	}
	return push_end_of_input(L);
}

/* core.stdin_raw(on): puts a terminal on stdin into raw mode (every key
 * reaches the guest, Ctrl-C included) or back. No-op when stdin is no tty.
 * Returns true, or nil and a message. */
static int l_stdin_raw(lua_State *L)
{
	int on = lua_toboolean(L, 1);
	if (!in.started)
		in_start(L);
	if (in.sync || !in.stream || in.stream->type != UV_TTY) {
		lua_pushboolean(L, 1);
		return 1;
	}
	int err = uv_tty_set_mode((uv_tty_t *)in.stream, on ? UV_TTY_MODE_RAW : UV_TTY_MODE_NORMAL);
	if (err) {
		lua_pushnil(L);
		lua_pushfstring(L, "stdin: cannot set the terminal mode: %s", uv_strerror(err));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int l_stdin_is_tty(lua_State *L)
{
	lua_pushboolean(L, uv_guess_handle(STDIN_FILENO) == UV_TTY);
	return 1;
}

/* ---- SIGINT, for the REPL ---- */

/* A handler of our own rather than a uv_signal: the flag is there at once,
 * so a chunk that never returns to the loop sees Ctrl-C from a debug hook
 * (core.interrupted). The pipe wakes a loop that waits. */
static volatile sig_atomic_t sigint_flag; /* a Ctrl-C not yet taken by Lua */
static int sigint_pipe[2] = { -1, -1 };
static uv_poll_t sigint_poll;

static void on_sigint(int signum)
{
	(void)signum;
	int saved = errno;
	sigint_flag = 1;
	if (write(sigint_pipe[1], "", 1) < 0) { /* full: a wake-up is pending anyway */
	}
	errno = saved;
}

static void on_sigint_wake(uv_poll_t *h, int status, int events)
{
	(void)h;
	(void)status;
	(void)events;
	char buf[64];
	while (read(sigint_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/* core.catch_sigint(on): while on, SIGINT is noted instead of killing the
 * process (see core.interrupted). Returns true, or nil and a message. */
static int l_catch_sigint(lua_State *L)
{
	int on = lua_toboolean(L, 1);
	if (sigint_pipe[0] < 0) {
		if (pipe2(sigint_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
			lua_pushnil(L);
			lua_pushfstring(L, "SIGINT: pipe2: %s", strerror(errno));
			return 2;
		}
		int err = uv_poll_init(check_loop(L), &sigint_poll, sigint_pipe[0]);
		if (!err)
			err = uv_poll_start(&sigint_poll, UV_READABLE, on_sigint_wake);
		if (err) {
			lua_pushnil(L);
			lua_pushfstring(L, "SIGINT: %s", uv_strerror(err));
			return 2;
		}
		uv_unref((uv_handle_t *)&sigint_poll);
	}
	struct sigaction sa = { .sa_flags = SA_RESTART };
	sa.sa_handler = on ? on_sigint : SIG_DFL;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGINT, &sa, NULL) < 0) {
		lua_pushnil(L);
		lua_pushfstring(L, "SIGINT: sigaction: %s", strerror(errno));
		return 2;
	}
	sigint_flag = 0;
	lua_pushboolean(L, 1);
	return 1;
}

/* core.interrupted() -> true once per Ctrl-C caught since the last call. */
static int l_interrupted(lua_State *L)
{
	lua_pushboolean(L, sigint_flag != 0);
	sigint_flag = 0;
	return 1;
}

static const luaL_Reg loop_functions[] = {
	{ "step", l_step },
	{ "now", l_now },
	{ "cpu_time", l_cpu_time },
	{ "stdin_read_line", l_stdin_read_line },
	{ "stdin_pause", l_stdin_pause },
	{ "stdin_is_tty", l_stdin_is_tty },
	{ "stdin_read_raw", l_stdin_read_raw },
	{ "stdin_raw", l_stdin_raw },
	{ "catch_sigint", l_catch_sigint },
	{ "interrupted", l_interrupted },
	{ NULL, NULL },
};

void lvmm_loop_register(lua_State *L)
{
	luaL_setfuncs(L, loop_functions, 0);
}
