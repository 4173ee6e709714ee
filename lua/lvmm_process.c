/* Host processes on the libuv loop (core.process_spawn): what specs and
 * benchmarks use to run `ping` or `nc` on the host while the VM's datapath
 * keeps running on the same loop. io.popen would block the loop, and with it
 * the userspace virtio-net datapath the command talks to.
 *
 * The process state lives in a heap block owned jointly by the userdata and
 * by libuv: it is freed once the userdata is collected and every handle is
 * closed, whichever comes last. */
#include "lvmm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#define PROCESS_MT "vmm.process"
#define PROCESS_MAX_ARGS 256
#define PROCESS_MAX_OUTPUT (64u << 20)

struct process {
	uv_process_t proc;
	uv_pipe_t out;
	unsigned open_handles;
	bool exited, out_eof, orphaned; /* orphaned: the userdata is gone */
	int hold_fd;     /* write end of a stdin pipe kept open, or -1 */
	int64_t exit_status;
	int term_signal;
	char *buf;
	size_t len, cap;
	bool truncated;
};

struct lprocess {
	struct process *p;
};

static void maybe_free(struct process *p)
{
	if (p->orphaned && p->open_handles == 0) {
		free(p->buf);
		free(p);
	}
}

static void on_handle_closed(uv_handle_t *h)
{
	struct process *p = h->data;
	p->open_handles--;
	maybe_free(p);
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
	struct process *p = proc->data;
	p->exited = true;
	if (p->hold_fd >= 0) {
		close(p->hold_fd);
		p->hold_fd = -1;
	}
	p->exit_status = status;
	p->term_signal = sig;
	uv_close((uv_handle_t *)proc, on_handle_closed);
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
		uv_close((uv_handle_t *)s, on_handle_closed);
	}
}

static int open_redirect(lua_State *L, const char *field, int flags)
{
	int t = lua_getfield(L, 2, field);
	int fd = -1;
	if (t == LUA_TSTRING) {
		const char *path = lua_tostring(L, -1);
		fd = open(path, flags | O_CLOEXEC, 0644);
		if (fd < 0)
			luaL_error(L, "process_spawn: %s %s: %s", field, path, strerror(errno));
	} else if (t != LUA_TNIL) {
		luaL_error(L, "process_spawn: field %s must be a file path", field);
	}
	lua_pop(L, 1);
	return fd;
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
	if (argc < 1 || argc > PROCESS_MAX_ARGS)
		return luaL_error(L, "process_spawn: argv must have 1 to %d strings", PROCESS_MAX_ARGS);
	char *args[PROCESS_MAX_ARGS + 1];
	for (lua_Integer i = 1; i <= argc; i++) {
		if (lua_rawgeti(L, 1, i) != LUA_TSTRING)
			return luaL_error(L, "process_spawn: argv[%d] must be a string", (int)i);
		args[i - 1] = (char *)lua_tostring(L, -1);
		lua_pop(L, 1); /* the string stays alive in argv */
	}
	args[argc] = NULL;

	int in_fd = open_redirect(L, "stdin", O_RDONLY);
	lua_getfield(L, 2, "hold_stdin");
	bool hold = lua_toboolean(L, -1);
	lua_pop(L, 1);
	if (hold && in_fd >= 0) {
		close(in_fd);
		return luaL_error(L, "process_spawn: stdin and hold_stdin exclude each other");
	}
	int out_fd = open_redirect(L, "stdout", O_WRONLY | O_CREAT | O_TRUNC);

	struct lprocess *u = lua_newuserdatauv(L, sizeof(*u), 0);
	u->p = NULL;
	luaL_setmetatable(L, PROCESS_MT);
	struct process *p = calloc(1, sizeof(*p));
	if (!p) {
		if (in_fd >= 0)
			close(in_fd);
		if (out_fd >= 0)
			close(out_fd);
		return luaL_error(L, "process_spawn: out of memory");
	}
	uv_loop_t *loop = lvmm_loop();
	/* One pipe for stdout and stderr, as a terminal would show them. */
	uv_file fds[2];
	int rc = uv_pipe(fds, 0, 0);
	if (rc == 0 && (rc = uv_pipe_init(loop, &p->out, 0)) == 0 && (rc = uv_pipe_open(&p->out, fds[0])) < 0)
		close(fds[0]);
	if (rc < 0) {
		free(p);
		if (in_fd >= 0)
			close(in_fd);
		if (out_fd >= 0)
			close(out_fd);
		return luaL_error(L, "process_spawn: pipe: %s", uv_strerror(rc));
	}
	p->out.data = p;
	p->proc.data = p;
	p->open_handles = 1;
	p->hold_fd = -1;
	uv_file hold_fds[2];
	if (hold && uv_pipe(hold_fds, 0, 0) == 0) {
		in_fd = hold_fds[0];
		p->hold_fd = hold_fds[1];
	}

	uv_stdio_container_t stdio[3] = {
		{ .flags = in_fd >= 0 ? UV_INHERIT_FD : UV_IGNORE, .data.fd = in_fd },
		{ .flags = UV_INHERIT_FD, .data.fd = out_fd >= 0 ? out_fd : fds[1] },
		{ .flags = UV_INHERIT_FD, .data.fd = fds[1] },
	};
	uv_process_options_t opts = {
		.file = args[0],
		.args = args,
		.exit_cb = on_exit_cb,
		.stdio_count = 3,
		.stdio = stdio,
	};
	rc = uv_spawn(loop, &p->proc, &opts);
	close(fds[1]);
	if (in_fd >= 0)
		close(in_fd);
	if (out_fd >= 0)
		close(out_fd);
	if (rc < 0) {
		if (p->hold_fd >= 0)
			close(p->hold_fd);
		p->orphaned = true;
		p->out_eof = true;
		uv_close((uv_handle_t *)&p->out, on_handle_closed);
		/* uv_spawn failed: the process handle still needs closing */
		p->open_handles++;
		uv_close((uv_handle_t *)&p->proc, on_handle_closed);
		lua_pushnil(L);
		lua_pushfstring(L, "%s: %s", args[0], uv_strerror(rc));
		return 2;
	}
	p->open_handles++;
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
	lua_pushinteger(L, p->proc.pid);
	return 1;
}

/* p:kill([signal = 15]) */
static int l_kill(lua_State *L)
{
	struct process *p = check_process(L);
	int sig = (int)luaL_optinteger(L, 2, SIGTERM);
	if (!p->exited) {
		int rc = uv_process_kill(&p->proc, sig);
		if (rc < 0 && rc != UV_ESRCH) {
			lua_pushnil(L);
			lua_pushstring(L, uv_strerror(rc));
			return 2;
		}
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
		uv_process_kill(&p->proc, SIGKILL); /* its exit callback closes the handle */
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
