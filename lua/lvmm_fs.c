/* Small filesystem helpers for the Lua side (no shelling out to ls). */
#include "lvmm.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>

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

void lvmm_fs_register(lua_State *L)
{
	lua_pushcfunction(L, l_list_dir);
	lua_setfield(L, -2, "list_dir");
}
