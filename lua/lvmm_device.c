/* The generic device binding: a device's configuration as a plain Lua table
 * read and written through its type's field table (device.h), so no
 * device type is named here.
 *
 *   core.device_types() -> { ["virtio-net"] = { state = true, fields =
 *       { queues = { kind = "u32", min = 1, max = 8, optional = false,
 *                    backend = false }, ... } }, ... }
 *   vm:_add_device(kind, name, config, backend_transfer) -> true | nil, err
 *   vm:devices() -> { {kind, name, config = {...}, backend_transfer,
 *                      board (made by every VM, not added),
 *                      backend = "ifname" (its backend field) | nil}, ... }
 *   vm:device_stats(i) -> { rx_packets = ..., ... } | nil (1-based)
 *   vm:device_state(i) -> text | nil */
#include <string.h>

#include <lauxlib.h>

#include "device.h"
#include "lvmm.h"
#include "registry.h"
#include "vm.h"

static const char *const kind_names[] = {
	[DEV_STRING] = "string", [DEV_U32] = "u32", [DEV_U16] = "u16", [DEV_FLAG] = "flag", [DEV_MAC] = "mac",
};

void lvmm_push_config(lua_State *L, const struct device_type *t, const void *config)
{
	lua_newtable(L);
	for (const struct dev_field *f = t->fields; f && f->name; f++) {
		const char *p = (const char *)config + f->offset;
		switch (f->kind) {
		case DEV_STRING:
			lua_pushstring(L, p);
			break;
		case DEV_U32:
		case DEV_U16:
			lua_pushinteger(L, dev_field_number(f, config));
			break;
		case DEV_FLAG:
			lua_pushboolean(L, *(const bool *)p);
			break;
		case DEV_MAC: {
			char s[18];
			dev_mac_format((const uint8_t *)p, s);
			lua_pushstring(L, s);
			break;
		}
		}
		lua_setfield(L, -2, f->name);
	}
}

static const struct dev_field *find_field(const struct device_type *t, const char *name)
{
	for (const struct dev_field *f = t->fields; f && f->name; f++)
		if (!strcmp(f->name, name))
			return f;
	return NULL;
}

/* The table at idx into config (defaults first); raises naming the field.
 * The type's own checks (ranges, ...) come with vm_add_device. */
void lvmm_read_config(lua_State *L, int idx, const struct device_type *t, void *config, const char *where)
{
	idx = lua_absindex(L, idx);
	luaL_checktype(L, idx, LUA_TTABLE);
	memset(config, 0, t->config_size);
	if (t->config_defaults)
		t->config_defaults(config);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		const struct dev_field *f = key ? find_field(t, key) : NULL;
		if (!f)
			luaL_error(L, "%s: unknown field %s for a %s", where, key ? key : luaL_typename(L, -2), t->kind);
		char *p = (char *)config + f->offset;
		switch (f->kind) {
		case DEV_STRING: {
			size_t len;
			const char *s = lua_tolstring(L, -1, &len);
			if (!s || lua_type(L, -1) != LUA_TSTRING || len >= f->size || strlen(s) != len)
				luaL_error(L, "%s: field %s: expected a string of at most %d bytes", where, f->name,
					   (int)f->size - 1);
			memcpy(p, s, len + 1);
			break;
		}
		case DEV_U32:
		case DEV_U16: {
			int ok;
			lua_Integer v = lua_tointegerx(L, -1, &ok);
			lua_Integer max = f->kind == DEV_U16 ? 0xffff : 0xffffffff;
			if (!ok || v < 0 || v > max)
				luaL_error(L, "%s: field %s: expected an integer from %I to %I", where, f->name,
					   (lua_Integer)f->min, (lua_Integer)f->max);
			if (f->kind == DEV_U16) {
				uint16_t w = (uint16_t)v;
				memcpy(p, &w, sizeof(w));
			} else {
				uint32_t w = (uint32_t)v;
				memcpy(p, &w, sizeof(w));
			}
			break;
		}
		case DEV_FLAG:
			if (!lua_isboolean(L, -1))
				luaL_error(L, "%s: field %s: expected true or false", where, f->name);
			*(bool *)p = lua_toboolean(L, -1);
			break;
		case DEV_MAC: {
			const char *s = lua_tostring(L, -1);
			if (!s || dev_mac_parse(s, (uint8_t *)p))
				luaL_error(L, "%s: field %s: expected six hex bytes like \"52:54:00:12:34:56\"", where,
					   f->name);
			break;
		}
		}
		lua_pop(L, 1);
	}
}

static void push_type(lua_State *L, const struct device_type *t)
{
	lua_createtable(L, 0, 2);
	lua_pushboolean(L, t->state_version != 0);
	lua_setfield(L, -2, "state");
	lua_newtable(L);
	for (const struct dev_field *f = t->fields; f && f->name; f++) {
		lua_createtable(L, 0, 6);
		lua_pushstring(L, kind_names[f->kind]);
		lua_setfield(L, -2, "kind");
		if (f->kind == DEV_U32 || f->kind == DEV_U16 || f->kind == DEV_STRING) {
			lua_pushinteger(L, f->min);
			lua_setfield(L, -2, "min");
			lua_pushinteger(L, f->kind == DEV_STRING ? (lua_Integer)f->size - 1 : f->max);
			lua_setfield(L, -2, "max");
		}
		lua_pushboolean(L, f->optional);
		lua_setfield(L, -2, "optional");
		lua_pushboolean(L, f->backend);
		lua_setfield(L, -2, "backend");
		lua_pushboolean(L, f->power_of_2);
		lua_setfield(L, -2, "power_of_2");
		lua_setfield(L, -2, f->name);
	}
	lua_setfield(L, -2, "fields");
}

static int l_device_types(lua_State *L)
{
	lua_newtable(L);
	for (const struct device_type *const *t = device_registry.types; *t; t++) {
		push_type(L, *t);
		lua_setfield(L, -2, (*t)->kind);
	}
	return 1;
}

/* vm:_add_device(kind, name, config, backend_transfer) */
static int l_add_device(lua_State *L)
{
	struct vm *vm = lvmm_check_vm(L, 1);
	const char *kind = luaL_checkstring(L, 2);
	const char *name = luaL_checkstring(L, 3);
	const struct device_type *t = device_registry_find(&device_registry, kind);
	if (!t || !device_registry_addable(&device_registry, t))
		return luaL_error(L, "vm:add_device: unknown device kind %s", kind);
	char where[64];
	snprintf(where, sizeof(where), "vm:add_device: %s", name);
	void *config = lua_newuserdatauv(L, t->config_size ? t->config_size : 1, 0); /* freed by the GC */
	lvmm_read_config(L, 4, t, config, where);
	return lvmm_result(L, vm_add_device(vm, t, name, config, lua_toboolean(L, 5), NULL));
}

static int l_devices(lua_State *L)
{
	struct vm *vm = lvmm_check_vm(L, 1);
	unsigned n = vm_device_count(vm);
	lua_createtable(L, (int)n, 0);
	for (unsigned i = 0; i < n; i++) {
		struct device *d = vm_device(vm, i);
		lua_createtable(L, 0, 4);
		lua_pushstring(L, d->type->kind);
		lua_setfield(L, -2, "kind");
		lua_pushstring(L, d->name);
		lua_setfield(L, -2, "name");
		lvmm_push_config(L, d->type, d->config);
		lua_setfield(L, -2, "config");
		lua_pushboolean(L, d->backend_transfer);
		lua_setfield(L, -2, "backend_transfer");
		lua_pushboolean(L, !device_registry_addable(&device_registry, d->type));
		lua_setfield(L, -2, "board"); /* made by every VM, not added */
		const struct dev_field *bf = device_backend_field(d->type);
		if (bf) {
			lua_pushstring(L, bf->name);
			lua_setfield(L, -2, "backend");
		}
		lua_rawseti(L, -2, i + 1);
	}
	return 1;
}

static struct device *arg_device(lua_State *L)
{
	struct vm *vm = lvmm_check_vm(L, 1);
	lua_Integer i = luaL_checkinteger(L, 2);
	return i >= 1 && i <= (lua_Integer)vm_device_count(vm) ? vm_device(vm, (unsigned)(i - 1)) : NULL;
}

static void emit_stat(void *ctx, const char *name, uint64_t value)
{
	lua_State *L = ctx;
	lua_pushinteger(L, (lua_Integer)value);
	lua_setfield(L, -2, name);
}

static int l_device_stats(lua_State *L)
{
	struct device *d = arg_device(L);
	if (!d)
		return 0;
	lua_newtable(L);
	if (d->type->stats)
		d->type->stats(d, emit_stat, L);
	return 1;
}

static int l_device_state(lua_State *L)
{
	struct device *d = arg_device(L);
	if (!d)
		return 0;
	char buf[4096];
	size_t len = d->type->describe_state ? d->type->describe_state(d, buf, sizeof(buf)) : 0;
	lua_pushlstring(L, buf, len);
	return 1;
}

const luaL_Reg lvmm_device_methods[] = {
	{ "_add_device", l_add_device },
	{ "devices", l_devices },
	{ "device_stats", l_device_stats },
	{ "device_state", l_device_state },
	{ NULL, NULL },
};

void lvmm_device_register(lua_State *L)
{
	lua_pushcfunction(L, l_device_types);
	lua_setfield(L, -2, "device_types");
}
