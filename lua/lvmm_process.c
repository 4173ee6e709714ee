/* Host processes on the libuv loop (core.process_spawn): what specs and
 * benchmarks use to run `ping` or `nc` on the host while the VM's datapath
 * keeps running on the same loop. io.popen would block the loop, and with it
 * the userspace virtio-net datapath the command talks to.
 *
 * The commands are started by the host command launcher (core/launcher.h),
 * a process exec'd before any seccomp filter, so that they run unfiltered
 * and a locked VMM can still run the ones it allowed. Their output comes
 * through a pipe watched on the loop; their ends, through the launcher's
 * socket.
 *
 * The process state lives in a heap block owned jointly by the userdata,
 * the output pipe's handle and the launcher (until the command ended): it
 * is freed once all three let go, whichever comes last. */
#include "lvmm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "err.h"
#include "launcher.h"

#define PROCESS_MT "vmm.process"
#define PROCESS_MAX_OUTPUT (64u << 20)

struct process {
	struct process *next; /* in `running`, until the launcher reports its end */
	uint32_t id;
	pid_t pid;
	uv_pipe_t out;
	bool out_open;
	bool exited, out_eof, orphaned; /* orphaned: the userdata is gone */
	bool lost;			 /* the launcher ended before it */
	int hold_fd;			 /* write end of a stdin pipe kept open, or -1 */
	int exit_status;
	int term_signal;
	char *buf;
	size_t len, cap;
	bool truncated;
};

struct lprocess {
	struct process *p;
};

static struct process *running;
static uint32_t next_id = 1;
static uv_poll_t *launcher_watch;

static void maybe_free(struct process *p)
{
	if (p->orphaned && !p->out_open && p->exited) {
		free(p->buf);
		free(p);
	}
}

static void on_out_closed(uv_handle_t *h)
{
	struct process *p = h->data;
	p->out_open = false;
	maybe_free(p);
}

/* The launcher reports a command's end (or that it was lost with it). */
static void on_command_exit(uint32_t id, int status, int sig, int lost)
{
	for (struct process **pp = &running; *pp; pp = &(*pp)->next) {
		struct process *p = *pp;
		if (p->id != id)
			continue;
		*pp = p->next;
		p->exited = true;
		p->lost = lost;
		p->exit_status = status;
		p->term_signal = sig;
		if (p->hold_fd >= 0) {
			close(p->hold_fd);
			p->hold_fd = -1;
		}
		maybe_free(p);
		return;
	}
}

static void on_watch_closed(uv_handle_t *h) { free(h); }

static void on_launcher(uv_poll_t *w, int status, int events)
{
	(void)status;
	(void)events;
	if (launcher_dispatch() < 0) {
		fprintf(stderr, "vmm: %s\n", vmm_error());
		uv_close((uv_handle_t *)w, on_watch_closed);
		launcher_watch = NULL;
	}
}

/* The launcher running and watched: 0, or -1 with a core message. */
int lvmm_launcher_ready(void)
{
	if (launcher_start(on_command_exit) < 0)
		return -1;
	if (launcher_watch)
		return 0;
	uv_poll_t *w = malloc(sizeof(*w));
	if (!w)
		return vmm_fail("out of memory");
	int rc = uv_poll_init(lvmm_loop(), w, launcher_fd());
	if (rc < 0) {
		free(w);
		return vmm_fail("uv_poll_init: %s", uv_strerror(rc));
	}
	if ((rc = uv_poll_start(w, UV_READABLE, on_launcher)) < 0) {
		uv_close((uv_handle_t *)w, on_watch_closed);
		return vmm_fail("uv_poll_start: %s", uv_strerror(rc));
	}
	/* it watches for the commands' ends but, like libuv's own signal
	 * pipe, does not keep the loop alive: a command's output pipe does */
	uv_unref((uv_handle_t *)w);
	launcher_watch = w;
	return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct process *p = h->data;
	if (p->cap - p->len < suggested && p->cap < PROCESS_MAX_OUTPUT) {
		size_t cap = p->cap ? p->cap * 2 : 65536;
		char *nb = realloc(p->buf, cap);
		if (nb) {
			p->buf = nb;
			p->cap = cap;
		}
	}
	*buf = uv_buf_init(p->buf + p->len, (unsigned)(p->cap - p->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct process *p = s->data;
	(void)buf;
	if (n > 0) {
		p->len += (size_t)n;
		return;
	}
	if (n == UV_ENOBUFS) {
		p->truncated = true; /* output beyond the cap is dropped */
		uv_read_stop(s);
	}
	if (n < 0 && !p->out_eof) {
		p->out_eof = true;
		uv_close((uv_handle_t *)s, on_out_closed);
	}
}

/* The path in opts[field], or NULL; raises if it is not a string. */
static const char *redirect_path(lua_State *L, const char *field)
{
	int t = lua_getfield(L, 2, field);
	const char *path = NULL;
	if (t == LUA_TSTRING)
		path = lua_tostring(L, -1); /* stays alive in the options table */
	else if (t != LUA_TNIL)
		luaL_error(L, "process_spawn: field %s must be a file path", field);
	lua_pop(L, 1);
	return path;
}

/* core.process_spawn(argv, {stdin = path?, stdout = path?, hold_stdin?})
 * -> process, or nil, message if it cannot be started. Output (stdout and
 * stderr) is captured unless stdout names a file (then only stderr is).
 * hold_stdin: stdin is a pipe that stays open and empty until the process
 * exits (for programs such as nc that stop at end of input). */
static int l_process_spawn(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	if (lua_isnoneornil(L, 2)) {
		lua_settop(L, 1);
		lua_newtable(L);
	}
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_Integer argc = luaL_len(L, 1);
	if (argc < 1 || argc > LAUNCHER_MAX_ARGS)
		return luaL_error(L, "process_spawn: argv must have 1 to %d strings", LAUNCHER_MAX_ARGS);
	char *args[LAUNCHER_MAX_ARGS + 1];
	for (lua_Integer i = 1; i <= argc; i++) {
		if (lua_rawgeti(L, 1, i) != LUA_TSTRING)
			return luaL_error(L, "process_spawn: argv[%d] must be a string", (int)i);
		args[i - 1] = (char *)lua_tostring(L, -1);
		lua_pop(L, 1); /* the string stays alive in argv */
	}
	args[argc] = NULL;

	const char *in_path = redirect_path(L, "stdin"), *out_path = redirect_path(L, "stdout");
	lua_getfield(L, 2, "hold_stdin");
	bool hold = lua_toboolean(L, -1);
	lua_pop(L, 1);
	if (hold && in_path)
		return luaL_error(L, "process_spawn: stdin and hold_stdin exclude each other");

	struct lprocess *u = lua_newuserdatauv(L, sizeof(*u), 0);
	u->p = NULL;
	luaL_setmetatable(L, PROCESS_MT);
	if (lvmm_launcher_ready() < 0) {
		lua_pushnil(L);
		lua_pushfstring(L, "%s: %s", args[0], vmm_error());
		return 2;
	}
	struct process *p = calloc(1, sizeof(*p));
	if (!p)
		return luaL_error(L, "process_spawn: out of memory");
	p->hold_fd = -1;
	/* One pipe for stdout and stderr, as a terminal would show them. */
	uv_file fds[2], hold_fds[2] = { -1, -1 };
	int rc = uv_pipe(fds, 0, 0);
	if (rc == 0 && hold && (rc = uv_pipe(hold_fds, 0, 0)) < 0) {
		close(fds[0]);
		close(fds[1]);
	}
	if (rc == 0 && (rc = uv_pipe_init(lvmm_loop(), &p->out, 0)) == 0 && (rc = uv_pipe_open(&p->out, fds[0])) < 0)
		close(fds[0]);
	if (rc < 0) {
		free(p);
		return luaL_error(L, "process_spawn: pipe: %s", uv_strerror(rc));
	}
	p->out.data = p;
	p->out_open = true;
	p->hold_fd = hold_fds[1];
	p->id = next_id++;

	struct launcher_cmd cmd = { .argv = args, .stdin_path = in_path, .stdout_path = out_path,
				    .out_fd = fds[1], .in_fd = hold_fds[0] };
	rc = launcher_spawn(p->id, &cmd, &p->pid);
	close(fds[1]);
	if (hold_fds[0] >= 0)
		close(hold_fds[0]);
	if (rc < 0) {
		if (p->hold_fd >= 0)
			close(p->hold_fd);
		p->orphaned = p->exited = p->out_eof = true;
		uv_close((uv_handle_t *)&p->out, on_out_closed);
		lua_pushnil(L);
		lua_pushstring(L, vmm_error());
		return 2;
	}
	p->next = running;
	running = p;
	uv_read_start((uv_stream_t *)&p->out, on_alloc, on_read);
	u->p = p;
	return 1;
}

static struct process *check_process(lua_State *L)
{
	struct lprocess *u = luaL_checkudata(L, 1, PROCESS_MT);
	if (!u->p)
		luaL_error(L, "process: not started");
	return u->p;
}

/* p:done() -> true once the process exited and its output is all read. */
static int l_done(lua_State *L)
{
	struct process *p = check_process(L);
	lua_pushboolean(L, p->exited && p->out_eof);
	return 1;
}

/* p:status() -> exit code (or 128 + signal), or nil while running. */
static int l_status(lua_State *L)
{
	struct process *p = check_process(L);
	if (!p->exited)
		return 0;
	if (p->lost) {
		lua_pushnil(L);
		lua_pushliteral(L, "its end is unknown: the host command launcher ended first");
		return 2;
	}
	lua_pushinteger(L, p->term_signal ? 128 + p->term_signal : p->exit_status);
	return 1;
}

static int l_output(lua_State *L)
{
	struct process *p = check_process(L);
	lua_pushlstring(L, p->buf ? p->buf : "", p->len);
	lua_pushboolean(L, p->truncated);
	return 2;
}

static int l_pid(lua_State *L)
{
	struct process *p = check_process(L);
	lua_pushinteger(L, p->pid);
	return 1;
}

/* p:kill([signal = 15]) */
static int l_kill(lua_State *L)
{
	struct process *p = check_process(L);
	int sig = (int)luaL_optinteger(L, 2, SIGTERM);
	if (sig < 1 || sig >= NSIG)
		return luaL_error(L, "process:kill: %d is not a signal number", sig);
	if (!p->exited && launcher_kill(p->id, sig) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, vmm_error());
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int l_gc(lua_State *L)
{
	struct lprocess *u = luaL_checkudata(L, 1, PROCESS_MT);
	struct process *p = u->p;
	if (!p)
		return 0;
	u->p = NULL;
	if (!p->exited)
		(void)launcher_kill(p->id, SIGKILL); /* its end, when reported, lets go of p */
	p->orphaned = true;
	maybe_free(p);
	return 0;
}

static const luaL_Reg process_methods[] = {
	{ "done", l_done },
	{ "status", l_status },
	{ "output", l_output },
	{ "pid", l_pid },
	{ "kill", l_kill },
	{ NULL, NULL },
};

void lvmm_process_register(lua_State *L)
{
	if (luaL_newmetatable(L, PROCESS_MT)) {
		luaL_newlib(L, process_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, l_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	lua_pushcfunction(L, l_process_spawn);
	lua_setfield(L, -2, "process_spawn");
}
