/* The C half of vmm.net: host links, addresses, bridges and persistent TAPs
 * (core/netlink.c, devices/tap.c), as functions of vmm.core named net_*.
 * Thin: wrong argument types raise; OS failures return nil, message. The
 * public API, with its checks and policy, is lua/vmm/net.lua. */
#include "lvmm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "err.h"
#include "netlink.h"
#include "tap.h"

static void set_int(lua_State *L, const char *key, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, key);
}

/* "aa:bb:cc:dd:ee:ff" (lower case) of len bytes. */
static void push_mac(lua_State *L, const uint8_t *mac, unsigned len)
{
	char text[3 * 32];
	size_t n = 0;
	for (unsigned i = 0; i < len && n + 3 < sizeof(text); i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, i ? ":%02x" : "%02x", mac[i]);
	lua_pushlstring(L, text, n);
}

/* net_link_get(name) -> {name, index, flags, up, running, mtu, mac?,
 * master?, kind?, stats = {rx_packets, ...}} | nil, err */
static int l_link_get(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	struct netlink_link k;
	if (netlink_link_get(name, &k) < 0)
		return lvmm_result(L, -1);
	lua_createtable(L, 0, 10);
	lua_pushstring(L, k.name);
	lua_setfield(L, -2, "name");
	set_int(L, "index", k.index);
	set_int(L, "flags", (lua_Integer)k.flags);
	lua_pushboolean(L, k.up);
	lua_setfield(L, -2, "up");
	lua_pushboolean(L, k.running);
	lua_setfield(L, -2, "running");
	set_int(L, "mtu", (lua_Integer)k.mtu);
	if (k.mac_len) {
		push_mac(L, k.mac, k.mac_len);
		lua_setfield(L, -2, "mac");
	}
	if (k.master[0]) {
		lua_pushstring(L, k.master);
		lua_setfield(L, -2, "master");
	}
	if (k.kind[0]) {
		lua_pushstring(L, k.kind);
		lua_setfield(L, -2, "kind");
	}
	lua_createtable(L, 0, 8);
	set_int(L, "rx_packets", (lua_Integer)k.stats.rx_packets);
	set_int(L, "tx_packets", (lua_Integer)k.stats.tx_packets);
	set_int(L, "rx_bytes", (lua_Integer)k.stats.rx_bytes);
	set_int(L, "tx_bytes", (lua_Integer)k.stats.tx_bytes);
	set_int(L, "rx_errors", (lua_Integer)k.stats.rx_errors);
	set_int(L, "tx_errors", (lua_Integer)k.stats.tx_errors);
	set_int(L, "rx_dropped", (lua_Integer)k.stats.rx_dropped);
	set_int(L, "tx_dropped", (lua_Integer)k.stats.tx_dropped);
	lua_setfield(L, -2, "stats");
	return 1;
}

static int l_set_up(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TBOOLEAN);
	return lvmm_result(L, netlink_link_set_up(name, lua_toboolean(L, 2)));
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Exactly "hh:hh:hh:hh:hh:hh". */
static int parse_mac(const char *text, uint8_t mac[6])
{
	if (strlen(text) != 17)
		return -1;
	for (int i = 0; i < 6; i++) {
		int hi = hexval(text[3 * i]), lo = hexval(text[3 * i + 1]);
		if (hi < 0 || lo < 0 || (i < 5 && text[3 * i + 2] != ':'))
			return -1;
		mac[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* net_set_mac(name, "aa:bb:cc:dd:ee:ff"): the text is checked by vmm.net;
 * anything else here is misuse. */
static int l_set_mac(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const char *text = luaL_checkstring(L, 2);
	uint8_t mac[6];
	if (parse_mac(text, mac) < 0)
		return luaL_argerror(L, 2, lua_pushfstring(L, "bad MAC address '%s'", text));
	return lvmm_result(L, netlink_link_set_mac(name, mac, 6));
}

static int l_set_mtu(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	lua_Integer mtu = luaL_checkinteger(L, 2);
	luaL_argcheck(L, mtu > 0 && mtu <= 0xFFFFFFF, 2, "MTU out of range");
	return lvmm_result(L, netlink_link_set_mtu(name, (unsigned)mtu));
}

static int l_addr_add(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	return lvmm_result(L, netlink_addr_add(name, luaL_checkstring(L, 2)));
}

static int l_addr_del(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	return lvmm_result(L, netlink_addr_del(name, luaL_checkstring(L, 2)));
}

/* net_addr_list(name) -> {"10.0.2.1/24", "fd00::1/64", ...} | nil, err */
static int l_addr_list(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	struct netlink_addr *list;
	size_t n;
	if (netlink_addr_list(name, &list, &n) < 0)
		return lvmm_result(L, -1);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushstring(L, list[i].text);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	free(list);
	return 1;
}

/* net_set_master(name, bridge | nil) */
static int l_set_master(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const char *master = luaL_optstring(L, 2, NULL);
	return lvmm_result(L, netlink_link_set_master(name, master));
}

static int l_bridge_create(lua_State *L)
{
	return lvmm_result(L, netlink_bridge_create(luaL_checkstring(L, 1)));
}

static int l_link_delete(lua_State *L)
{
	return lvmm_result(L, netlink_link_delete(luaL_checkstring(L, 1)));
}

/* net_tap_create(name, multi_queue) */
static int l_tap_create(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TBOOLEAN);
	return lvmm_result(L, tap_create_persistent(name, lua_toboolean(L, 2)));
}

static int l_tap_delete(lua_State *L)
{
	return lvmm_result(L, tap_delete_persistent(luaL_checkstring(L, 1)));
}

static const luaL_Reg net_funcs[] = {
	{ "net_link_get", l_link_get },
	{ "net_set_up", l_set_up },
	{ "net_set_mac", l_set_mac },
	{ "net_set_mtu", l_set_mtu },
	{ "net_addr_add", l_addr_add },
	{ "net_addr_del", l_addr_del },
	{ "net_addr_list", l_addr_list },
	{ "net_set_master", l_set_master },
	{ "net_bridge_create", l_bridge_create },
	{ "net_link_delete", l_link_delete },
	{ "net_tap_create", l_tap_create },
	{ "net_tap_delete", l_tap_delete },
	{ NULL, NULL },
};

void lvmm_net_register(lua_State *L)
{
	luaL_setfuncs(L, net_funcs, 0);
}
