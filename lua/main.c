/* The `vmm` executable: a Lua 5.4 state with the `vmm` module preloaded; the
 * command line is handled by the embedded Lua module `vmm.cli`. A failure
 * prints one line, "vmm: <message>", and exits with status 1 (set
 * VMM_TRACEBACK=1 to get the full message and a traceback). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "launcher.h"
#include "lvmm.h"

static int traceback_wanted(void)
{
	const char *v = getenv("VMM_TRACEBACK");
	return v && *v && strcmp(v, "0") != 0;
}

static int message_handler(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	if (!msg) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			return 1;
		msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	}
	if (traceback_wanted())
		luaL_traceback(L, L, msg, 1);
	return 1;
}

/* Runs vmm.cli.main(arg) where arg[0] is the program and arg[1..] its
 * arguments; returns its exit status. */
static int protected_main(lua_State *L)
{
	int argc = (int)lua_tointeger(L, 1);
	char **argv = lua_touserdata(L, 2);
	luaL_openlibs(L);
	lvmm_preload(L);
	lua_getglobal(L, "require");
	lua_pushliteral(L, "vmm.cli");
	lua_call(L, 1, 1);
	lua_getfield(L, -1, "main");
	lua_createtable(L, argc, 1);
	for (int i = 0; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i);
	}
	lua_call(L, 1, 1);
	return 1;
}

/* "vmm: <message>" on one line: the traceback dropped, newlines folded. */
static void report(const char *msg)
{
	if (!msg)
		msg = "(no error message)";
	if (traceback_wanted()) {
		fprintf(stderr, "vmm: %s\n", msg);
		return;
	}
	const char *tb = strstr(msg, "\nstack traceback:");
	size_t len = tb ? (size_t)(tb - msg) : strlen(msg);
	fputs("vmm: ", stderr);
	for (size_t i = 0; i < len; i++)
		fputc(msg[i] == '\n' || msg[i] == '\r' ? ' ' : msg[i], stderr);
	fputc('\n', stderr);
}

int main(int argc, char **argv)
{
	/* the host command launcher (core/launcher.h), exec'd by a VMM */
	if (argc == 3 && strcmp(argv[1], "__launcher") == 0)
		return launcher_main(atoi(argv[2]));
	lua_State *L = luaL_newstate();
	if (!L) {
		fputs("vmm: cannot create a Lua state: out of memory\n", stderr);
		return 1;
	}
	lua_pushcfunction(L, message_handler);
	lua_pushcfunction(L, protected_main);
	lua_pushinteger(L, argc);
	lua_pushlightuserdata(L, argv);
	int status = 1;
	if (lua_pcall(L, 2, 1, 1) != LUA_OK)
		report(lua_tostring(L, -1));
	else
		status = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
	lua_close(L);
	return status;
}
