/* core.mig_*: the local-migration mechanism for lua/vmm/migrate.lua.
 *
 *   core.mig_listen(path) -> listener     a control socket (mode 0600)
 *   listener:accept() -> conn | nil[, why] never blocks; peer uid checked
 *   core.mig_connect(path) -> conn | nil, err
 *   conn:send_begin(vm, opts) -> true | nil, err         (source, VM running)
 *   conn:readable() -> bool                              (wakes the loop when it becomes so)
 *   conn:send_finish() -> report | nil, err, after_commit (source: freeze, state, commit)
 *   conn:offer(accept_backends) -> desc | nil, err       (target)
 *   conn:receive(plan, console) -> vm, report | nil, err (target: up to COMMIT)
 *   conn:start(vm) -> true | nil, err                    (target: STARTING, then run)
 *
 * Policy (which backends go over, which TAP replaces one that does not,
 * the network switch-over) is the caller's. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>

#include "err.h"
#include "lvmm.h"
#include "migstream.h"
#include "registry.h"
#include "vm.h"
#include "vm_migrate.h"

#define LISTENER_MT "vmm.mig_listener"
#define CONN_MT "vmm.mig_conn"

struct listener {
	int fd;
	uv_poll_t *poll; /* wakes the loop when a connection waits */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

struct conn {
	int fd;
	struct migrate_target *target; /* after offer() */
	struct migrate_source *source; /* between send_begin() and send_finish() */
	uv_poll_t *poll;               /* wakes the loop when fd becomes readable */
};

static int fail_result(lua_State *L)
{
	lua_pushnil(L);
	lua_pushstring(L, vmm_error());
	return 2;
}

static int socket_address(const char *path, struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (!*path || strlen(path) >= sizeof(a->sun_path))
		return vmm_fail("socket path \"%s\": must be 1..%zu bytes", path, sizeof(a->sun_path) - 1);
	memcpy(a->sun_path, path, strlen(path));
	return 0;
}

static int connect_to(const char *path)
{
	struct sockaddr_un a;
	if (socket_address(path, &a))
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vmm_fail_errno("socket");
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		vmm_fail_errno("connect to %s", path);
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- conn ---- */

static struct conn *push_conn(lua_State *L, int fd)
{
	struct conn *c = lua_newuserdatauv(L, sizeof(*c), 1); /* uservalue: the VM being sent */
	*c = (struct conn){ .fd = fd, .target = NULL, .source = NULL, .poll = NULL };
	luaL_setmetatable(L, CONN_MT);
	return c;
}

static struct conn *check_conn(lua_State *L)
{
	struct conn *c = luaL_checkudata(L, 1, CONN_MT);
	if (c->fd < 0)
		luaL_error(L, "migration connection: closed");
	return c;
}

/* ---- waking the loop ----
 * Blocking calls in Lua (task.wait) sleep in the loop; a socket that the
 * loop does not watch would not wake them. wake_on_readable(&poll, fd)
 * arms a one-shot watch (created on first use) that only wakes the loop:
 * the Lua side then looks at the socket itself (accept(), readable()). */

static void stop_on_ready(uv_poll_t *p, int status, int events)
{
	(void)status;
	(void)events;
	uv_poll_stop(p);
}

static void poll_closed(uv_handle_t *h)
{
	free(h);
}

static void wake_on_readable(uv_poll_t **poll, int fd)
{
	if (!*poll) {
		*poll = malloc(sizeof(**poll));
		if (*poll && uv_poll_init(lvmm_loop(), *poll, fd)) {
			free(*poll);
			*poll = NULL;
		}
	}
	if (*poll)
		uv_poll_start(*poll, UV_READABLE, stop_on_ready);
}

static void unwatch(uv_poll_t **poll)
{
	if (*poll) {
		uv_close((uv_handle_t *)*poll, poll_closed);
		*poll = NULL;
	}
}

static int l_conn_close(lua_State *L)
{
	struct conn *c = luaL_checkudata(L, 1, CONN_MT);
	migrate_source_cancel(c->source, "the migration connection was closed");
	c->source = NULL;
	unwatch(&c->poll);
	migrate_target_free(c->target);
	c->target = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	return 0;
}

static int timeout_ms(lua_State *L, int idx, const char *key)
{
	lua_getfield(L, idx, key);
	lua_Number t = lua_isnil(L, -1) ? 0 : luaL_checknumber(L, -1);
	lua_pop(L, 1);
	if (!(t >= 0) || t > 86400)
		luaL_error(L, "migration: field %s: a timeout in seconds (0..86400), got %f", key, (double)t);
	return (int)(t * 1000);
}

static void set_seconds(lua_State *L, const char *key, uint64_t ns)
{
	lua_pushnumber(L, (lua_Number)ns / 1e9);
	lua_setfield(L, -2, key);
}

/* {peer_pid, freeze, sent, loaded, commit (seconds, core.now()'s clock),
 *  transferred = {bool per device, by index}} */
static void push_report(lua_State *L, const struct migrate_report *r)
{
	lua_createtable(L, 0, 5);
	lua_pushinteger(L, r->peer_pid);
	lua_setfield(L, -2, "peer_pid");
	set_seconds(L, "freeze", r->freeze_ns);
	set_seconds(L, "sent", r->sent_ns);
	set_seconds(L, "loaded", r->loaded_ns);
	set_seconds(L, "commit", r->commit_ns);
	lua_createtable(L, (int)r->ndevices, 0);
	for (unsigned i = 0; i < r->ndevices; i++) {
		lua_pushboolean(L, r->transferred[i]);
		lua_rawseti(L, -2, i + 1);
	}
	lua_setfield(L, -2, "transferred");
}

/* conn:send_begin(vm, {backend_transfer, devices = {bool...}, timeout}):
 * devices[i] true or false decides for device i; nil leaves it to the
 * device's own opt-in. */
static int l_send_begin(lua_State *L)
{
	struct conn *c = check_conn(L);
	struct vm *vm = lvmm_check_vm(L, 2);
	luaL_checktype(L, 3, LUA_TTABLE);
	if (c->source || c->target)
		return luaL_error(L, "migration connection: already in use");
	struct migrate_options o = { .timeout_ms = timeout_ms(L, 3, "timeout") };
	lua_getfield(L, 3, "backend_transfer");
	o.backend_transfer = lua_toboolean(L, -1);
	lua_getfield(L, 3, "devices");
	for (unsigned i = 0; i < MACHINE_MAX_DEVICES && lua_istable(L, -1); i++) {
		lua_rawgeti(L, -1, i + 1);
		o.device[i] = lua_isnil(L, -1) ? 0 : lua_toboolean(L, -1) ? 1 : -1;
		lua_pop(L, 1);
	}
	lua_pop(L, 2);
	c->source = migrate_source_begin(vm, c->fd, &o);
	if (!c->source)
		return fail_result(L);
	lua_pushvalue(L, 2); /* keeps the VM userdata alive until finish */
	lua_setiuservalue(L, 1, 1);
	return lvmm_result(L, 0);
}

/* conn:send_finish() -> report | nil, err */
static int l_send_finish(lua_State *L)
{
	struct conn *c = check_conn(L);
	if (!c->source)
		return luaL_error(L, "migration connection: call send_begin() first");
	struct migrate_source *s = c->source;
	c->source = NULL;
	lua_getiuservalue(L, 1, 1);
	struct vm *vm = lvmm_to_vm(L, -1);
	lua_pop(L, 1);
	lua_pushnil(L);
	lua_setiuservalue(L, 1, 1);
	if (!vm) {
		migrate_source_cancel(s, "the VM was closed during its migration");
		return fail_result(L);
	}
	struct migrate_report r;
	if (migrate_source_finish(s, &r)) {
		fail_result(L);
		lua_pushboolean(L, r.after_commit);
		return 3;
	}
	push_report(L, &r);
	return 1;
}

/* conn:send_cancel(why) -> nil, message: gives up between begin and finish */
static int l_send_cancel(lua_State *L)
{
	struct conn *c = check_conn(L);
	const char *why = luaL_checkstring(L, 2);
	migrate_source_cancel(c->source, why);
	c->source = NULL;
	lua_pushnil(L);
	lua_setiuservalue(L, 1, 1);
	return fail_result(L);
}

/* conn:readable() -> whether a read would not block; if not, the loop wakes
 * when it would. */
static int l_readable(lua_State *L)
{
	struct conn *c = check_conn(L);
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	bool ready = poll(&p, 1, 0) == 1;
	if (!ready)
		wake_on_readable(&c->poll, c->fd);
	lua_pushboolean(L, ready);
	return 1;
}

static void set_string(lua_State *L, const char *key, const char *v)
{
	lua_pushstring(L, v);
	lua_setfield(L, -2, key);
}

/* {kind, name, config = {...}, backend = "ifname" (the backend field's
 *  name) | nil, transfer_offered, backend_transfer} */
static void push_device(lua_State *L, const struct machine_device *m)
{
	lua_createtable(L, 0, 6);
	set_string(L, "kind", m->type->kind);
	set_string(L, "name", m->name);
	lvmm_push_config(L, m->type, m->config);
	lua_setfield(L, -2, "config");
	const struct dev_field *bf = device_backend_field(m->type);
	if (bf)
		set_string(L, "backend", bf->name);
	lua_pushboolean(L, m->transfer);
	lua_setfield(L, -2, "transfer_offered");
	lua_pushboolean(L, m->transfer_allowed);
	lua_setfield(L, -2, "backend_transfer");
}

/* conn:offer(accept_backends, timeout_s) -> {name, memory, vcpus, devices} */
static int l_offer(lua_State *L)
{
	struct conn *c = check_conn(L);
	bool accept = lua_toboolean(L, 2);
	lua_Number t = luaL_optnumber(L, 3, 0);
	if (c->target)
		return luaL_error(L, "migration connection: offer() was already called");
	c->target = migrate_target_new(c->fd, (int)(t * 1000));
	const struct machine_desc *d;
	if (!c->target || migrate_offer(c->target, accept, &device_registry, &d))
		return fail_result(L);
	lua_createtable(L, 0, 4);
	set_string(L, "name", d->name);
	lua_pushinteger(L, (lua_Integer)d->mem_size);
	lua_setfield(L, -2, "memory");
	lua_pushinteger(L, d->ncpus);
	lua_setfield(L, -2, "vcpus");
	lua_createtable(L, (int)d->ndevices, 0);
	for (unsigned i = 0; i < d->ndevices; i++) {
		push_device(L, &d->devices[i]);
		lua_rawseti(L, -2, i + 1);
	}
	lua_setfield(L, -2, "devices");
	return 1;
}

/* plan: one entry per device of the description, by index:
 * {transfer = true}, or {backend = "tap1"} naming the backend to open
 * here; devices without a backend take {} (or nil). */
static void read_plan(lua_State *L, int idx, struct migrate_plan *p)
{
	memset(p, 0, sizeof(*p));
	for (unsigned i = 0; i < MACHINE_MAX_DEVICES; i++) {
		int t = lua_rawgeti(L, idx, i + 1);
		if (t == LUA_TNIL) {
			lua_pop(L, 1);
			continue;
		}
		if (t != LUA_TTABLE)
			luaL_error(L, "migration plan: device %d: expected a table", (int)i + 1);
		lua_getfield(L, -1, "transfer");
		p->take_backend[i] = lua_toboolean(L, -1);
		lua_getfield(L, -2, "backend");
		const char *b = lua_tostring(L, -1);
		if (b && strlen(b) >= sizeof(p->backend[i]))
			luaL_error(L, "migration plan: device %d: field backend: at most %d bytes", (int)i + 1,
				   (int)sizeof(p->backend[i]) - 1);
		if (b)
			snprintf(p->backend[i], sizeof(p->backend[i]), "%s", b);
		lua_pop(L, 3);
	}
}

/* conn:receive(plan, console) -> vm, report */
static int l_receive(lua_State *L)
{
	struct conn *c = check_conn(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	const char *console = luaL_optstring(L, 3, NULL);
	if (!c->target)
		return luaL_error(L, "migration connection: call offer() first");
	struct migrate_plan p;
	read_plan(L, 2, &p);
	int console_fd;
	struct lvm *u = lvmm_push_vm(L, console, &console_fd);
	struct vm_config local = { .console_fd = console_fd, .loop = lvmm_loop(), .devices = &device_registry };
	struct migrate_report r;
	struct vm *vm = migrate_receive(c->target, &p, &local, &r);
	if (!vm || lvmm_adopt_vm(u, vm))
		return fail_result(L);
	push_report(L, &r);
	return 2;
}

/* conn:start(vm) -> true | nil, err: the VM that receive() gave starts
 * (the source is told first, and lets go of it). */
static int l_start(lua_State *L)
{
	struct conn *c = check_conn(L);
	struct vm *vm = lvmm_check_vm(L, 2);
	if (!c->target)
		return luaL_error(L, "migration connection: call offer() and receive() first");
	return lvmm_result(L, migrate_start(c->target, vm));
}

static int l_conn_fd(lua_State *L)
{
	lua_pushinteger(L, check_conn(L)->fd);
	return 1;
}

static int l_connect(lua_State *L)
{
	int fd = connect_to(luaL_checkstring(L, 1));
	if (fd < 0)
		return fail_result(L);
	push_conn(L, fd);
	return 1;
}

/* ---- listener ---- */

static int l_listener_close(lua_State *L)
{
	struct listener *l = luaL_checkudata(L, 1, LISTENER_MT);
	unwatch(&l->poll);
	if (l->fd >= 0) {
		/* Unlink first: a successor that finds the path free may bind a
		 * new socket there at once, which must not be removed by us. */
		unlink(l->path);
		close(l->fd);
	}
	l->fd = -1;
	return 0;
}

/* A socket file at path that nobody listens on is left over: remove it. */
static int clear_stale(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : vmm_fail_errno("control socket %s", path);
	if (!S_ISSOCK(st.st_mode))
		return vmm_fail("control socket %s: exists and is not a socket", path);
	int fd = connect_to(path);
	if (fd >= 0) {
		close(fd);
		return vmm_fail("control socket %s: a running VMM listens on it", path);
	}
	if (unlink(path) < 0 && errno != ENOENT)
		return vmm_fail_errno("control socket %s: remove the stale socket", path);
	return 0;
}

static int listen_on(const char *path)
{
	struct sockaddr_un a;
	if (socket_address(path, &a) || clear_stale(path))
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return vmm_fail_errno("socket");
	mode_t old = umask(0177); /* the socket file is born 0600 */
	int rc = bind(fd, (struct sockaddr *)&a, sizeof(a));
	umask(old);
	if (rc < 0 || listen(fd, 4) < 0) {
		vmm_fail_errno("control socket %s", path);
		close(fd);
		return -1;
	}
	return fd;
}

static int l_listen(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	struct listener *l = lua_newuserdatauv(L, sizeof(*l), 0);
	*l = (struct listener){ .fd = -1, .poll = NULL };
	luaL_setmetatable(L, LISTENER_MT);
	snprintf(l->path, sizeof(l->path), "%s", path);
	l->fd = listen_on(path);
	if (l->fd < 0)
		return fail_result(L);
	wake_on_readable(&l->poll, l->fd);
	return 1;
}

/* listener:accept() -> conn, or nil when nobody waits, or nil and why a
 * connection was refused (another user). */
static int l_accept(lua_State *L)
{
	struct listener *l = luaL_checkudata(L, 1, LISTENER_MT);
	if (l->fd < 0)
		return luaL_error(L, "control socket: closed");
	wake_on_readable(&l->poll, l->fd);
	int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
			return 0;
		vmm_fail_errno("control socket %s: accept", l->path);
		return fail_result(L);
	}
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		vmm_fail_errno("control socket %s: SO_PEERCRED", l->path);
		close(fd);
		return fail_result(L);
	}
	if (cred.uid != geteuid() && cred.uid != 0) {
		if (geteuid() == 0)
			vmm_fail("control socket %s: refused process %d of uid %u (only root)", l->path, (int)cred.pid,
				 (unsigned)cred.uid);
		else
			vmm_fail("control socket %s: refused process %d of uid %u (only uid %u or root)", l->path,
				 (int)cred.pid, (unsigned)cred.uid, (unsigned)geteuid());
		close(fd);
		return fail_result(L);
	}
	push_conn(L, fd);
	lua_pushinteger(L, cred.pid);
	return 2;
}

static int l_listener_path(lua_State *L)
{
	lua_pushstring(L, ((struct listener *)luaL_checkudata(L, 1, LISTENER_MT))->path);
	return 1;
}

/* ---- attach sessions (lua/vmm/attach.lua) ----
 * The sections of an attach session go through the same framing as a
 * migration's (checked headers, CRC, bounds); these are its only types. */

static uint32_t attach_type(lua_State *L, int idx)
{
	static const char *const names[] = { "attach",	  "attached", "eval",	     "output", "result",
					      "interrupt", "complete", "completions", "error",  NULL };
	static const uint32_t types[] = { MIG_ATTACH,	 MIG_ATTACHED, MIG_EVAL,	MIG_OUTPUT, MIG_RESULT,
					  MIG_INTERRUPT, MIG_COMPLETE, MIG_COMPLETIONS, MIG_ERROR };
	return types[luaL_checkoption(L, idx, NULL, names)];
}

static bool is_attach_type(uint32_t t)
{
	return (t >= MIG_ATTACH && t <= MIG_COMPLETIONS) || t == MIG_ERROR;
}

/* conn:send(type, payload) -> true | nil, err */
static int l_send(lua_State *L)
{
	struct conn *c = check_conn(L);
	uint32_t type = attach_type(L, 2);
	size_t len;
	const char *p = luaL_optlstring(L, 3, "", &len);
	struct mig_conn m = { .fd = c->fd, .timeout_ms = 5000, .peer = "peer" };
	if (mig_send(&m, type, 0, p, len, NULL, 0))
		return fail_result(L);
	lua_pushboolean(L, 1);
	return 1;
}

/* conn:peek() -> the type of the next section once its header is here;
 * nil if it is not yet (the loop wakes when more comes); false, err at
 * EOF or on a header that is not a section's. */
static int l_peek(lua_State *L)
{
	struct conn *c = check_conn(L);
	uint8_t raw[MIG_HEADER_SIZE];
	ssize_t n = recv(c->fd, raw, sizeof(raw), MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		wake_on_readable(&c->poll, c->fd);
		return 0;
	}
	lua_pushboolean(L, 0);
	if (n < 0) {
		lua_pushfstring(L, "reading the connection: %s", strerror(errno));
		return 2;
	}
	if (n == 0) {
		lua_pushliteral(L, "the peer closed the connection");
		return 2;
	}
	if ((size_t)n < sizeof(raw)) {
		lua_pop(L, 1);
		wake_on_readable(&c->poll, c->fd);
		return 0;
	}
	struct mig_header h;
	if (mig_header_decode(raw, &h)) {
		lua_pushstring(L, vmm_error());
		return 2;
	}
	lua_pop(L, 1);
	lua_pushstring(L, mig_type_name(h.type));
	return 1;
}

/* conn:recv([wait_ms]) -> type, payload; nil when nothing has come (the
 * loop wakes when something does), after waiting up to wait_ms without the
 * loop (for a reply needed at once: Tab's completions); false, err at EOF,
 * on a bad section or one that is not an attach session's. A section that
 * has begun is waited for (5 s). */
static int l_recv(lua_State *L)
{
	struct conn *c = check_conn(L);
	lua_Integer wait_ms = luaL_optinteger(L, 2, 0);
	luaL_argcheck(L, wait_ms >= 0 && wait_ms <= 60000, 2, "expected 0..60000 ms");
	struct pollfd pf = { .fd = c->fd, .events = POLLIN };
	int ready;
	do
		ready = poll(&pf, 1, (int)wait_ms);
	while (ready < 0 && errno == EINTR);
	if (ready != 1) {
		wake_on_readable(&c->poll, c->fd);
		return 0;
	}
	struct mig_conn m = { .fd = c->fd, .timeout_ms = 5000, .peer = "peer" };
	struct mig_section sec;
	if (mig_recv(&m, &sec)) {
		lua_pushboolean(L, 0);
		lua_pushstring(L, vmm_error());
		return 2;
	}
	if (!is_attach_type(sec.type) || sec.nfds) {
		vmm_fail("unexpected %s section%s in an attach session", mig_type_name(sec.type),
			 sec.nfds ? " with fds" : "");
		mig_section_free(&sec);
		lua_pushboolean(L, 0);
		lua_pushstring(L, vmm_error());
		return 2;
	}
	lua_pushstring(L, mig_type_name(sec.type));
	lua_pushlstring(L, sec.payload ? (const char *)sec.payload : "", sec.len);
	mig_section_free(&sec);
	return 2;
}

static const luaL_Reg conn_methods[] = {
	{ "send_begin", l_send_begin }, { "send_finish", l_send_finish }, { "send_cancel", l_send_cancel }, { "readable", l_readable },
	{ "offer", l_offer }, { "receive", l_receive }, { "start", l_start },
	{ "close", l_conn_close }, { "fd", l_conn_fd },
	{ "send", l_send }, { "peek", l_peek }, { "recv", l_recv }, { NULL, NULL },
};

static const luaL_Reg listener_methods[] = {
	{ "accept", l_accept }, { "close", l_listener_close }, { "path", l_listener_path }, { NULL, NULL },
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
	luaL_newmetatable(L, name);
	lua_newtable(L);
	luaL_setfuncs(L, methods, 0);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, gc);
	lua_setfield(L, -2, "__close");
	lua_pop(L, 1);
}

void lvmm_migrate_register(lua_State *L)
{
	new_class(L, CONN_MT, conn_methods, l_conn_close);
	new_class(L, LISTENER_MT, listener_methods, l_listener_close);
	lua_pushcfunction(L, l_listen);
	lua_setfield(L, -2, "mig_listen");
	lua_pushcfunction(L, l_connect);
	lua_setfield(L, -2, "mig_connect");
}
