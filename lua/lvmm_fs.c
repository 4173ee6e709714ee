/* Small filesystem helpers for the Lua side (no shelling out to ls). */
#include "lvmm.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

/* core.list_dir(path) -> {names...} (without "." and ".."), or nil, message. */
static int l_list_dir(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	DIR *d = opendir(path);
	if (!d) {
		lua_pushnil(L);
		lua_pushfstring(L, "%s: %s", path, strerror(errno));
		return 2;
	}
	lua_newtable(L);
	lua_Integer n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		lua_pushstring(L, e->d_name);
		lua_rawseti(L, -2, ++n);
	}
	closedir(d);
	return 1;
}

/* core.private_dir(path) -> true, or nil, message: path is a directory
 * only this user can enter (created 0700 if missing; one level). One that
 * is a symlink, another user's, or open to group or others is refused:
 * control sockets and the VM registry live there. */
static int l_private_dir(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return luaL_fileresult(L, 0, path);
	struct stat st;
	if (lstat(path, &st) < 0)
		return luaL_fileresult(L, 0, path);
	lua_pushnil(L);
	if (!S_ISDIR(st.st_mode))
		lua_pushfstring(L, "%s: not a directory (a symlink or a file is not trusted here)", path);
	else if (st.st_uid != geteuid())
		lua_pushfstring(L, "%s: owned by uid %d, not by this user (uid %d)", path, (int)st.st_uid,
				(int)geteuid());
	else if (st.st_mode & 077) {
		char mode[8];
		snprintf(mode, sizeof(mode), "%o", (unsigned)(st.st_mode & 07777));
		lua_pushfstring(L, "%s: mode %s lets other users in (expected 0700)", path, mode);
	}
	else {
		lua_pop(L, 1);
		lua_pushboolean(L, 1);
		return 1;
	}
	return 2;
}

/* core.pid() -> this process's PID; core.euid() -> its effective uid. */
static int l_pid(lua_State *L)
{
	lua_pushinteger(L, getpid());
	return 1;
}

static int l_euid(lua_State *L)
{
	lua_pushinteger(L, geteuid());
	return 1;
}

/* core.pid_alive(pid) -> whether a process with that PID exists (kill 0:
 * one of another user counts). */
static int l_pid_alive(lua_State *L)
{
	lua_Integer pid = luaL_checkinteger(L, 1);
	luaL_argcheck(L, pid > 0 && pid <= 0x7fffffff, 1, "not a PID");
	lua_pushboolean(L, kill((pid_t)pid, 0) == 0 || errno == EPERM);
	return 1;
}

void lvmm_fs_register(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "list_dir", l_list_dir }, { "private_dir", l_private_dir }, { "pid", l_pid },
		{ "euid", l_euid },	    { "pid_alive", l_pid_alive },     { NULL, NULL },
	};
	luaL_setfuncs(L, fns, 0);
}
