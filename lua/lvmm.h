/* The Lua binding of the VMM: declarations shared by lvmm.c (module, VM
 * userdata), lvmm_loop.c (libuv glue) and main.c (the executable). */
#ifndef LVMM_H
#define LVMM_H

#include <lua.h>
#include <uv.h>

/* The `vmm` module: registers the embedded Lua modules into package.preload
 * and runs the "vmm" one. Safe to call more than once per state. */
int luaopen_vmm(lua_State *L);

/* Puts every embedded module (and `vmm` itself) into package.preload. */
void lvmm_preload(lua_State *L);

/* Pushes true (rc >= 0), or nil and the core's message (vmm_error());
 * returns the number of values pushed. */
int lvmm_result(lua_State *L, int rc);

/* The process's one loop (uv_default_loop). */
uv_loop_t *lvmm_loop(void);

/* Adds the loop functions (step, now, stdin_*) to the table on the top. */
void lvmm_loop_register(lua_State *L);

/* Adds the host network functions (vmm.net: TAP, links, addresses, bridges
 * through netlink) to the table on the top. */
void lvmm_net_register(lua_State *L);

/* Adds core.process_spawn (host commands on the loop) to the table on the top. */
void lvmm_process_register(lua_State *L);
/* The host command launcher started and watched on the loop (before a
 * lock): 0, or -1 with a core message. */
int lvmm_launcher_ready(void);

/* Adds core.list_dir, private_dir, pid, euid, pid_alive to the table on the top. */
void lvmm_fs_register(lua_State *L);

/* Adds the line editor (core.edit_*: libedit) to the table on the top. */
void lvmm_edit_register(lua_State *L);

/* For the migration binding (lvmm_migrate.c). */
struct vm;
struct lvm;
/* The VM of the "vmm.vm" userdata at idx; raises if closed. */
struct vm *lvmm_check_vm(lua_State *L, int idx);
/* The same, or NULL if idx is not a VM or it is closed. */
struct vm *lvmm_to_vm(lua_State *L, int idx);
/* Pushes an empty "vmm.vm" userdata whose console is `console` ("stdout"
 * when NULL, "none" or a file; opened now, raising on failure); sets
 * *console_fd for the vm_config. Then lvmm_adopt_vm gives it its VM and
 * watches the VM's events (-1 with a core message if that fails). */
struct lvm *lvmm_push_vm(lua_State *L, const char *console, int *console_fd);
int lvmm_adopt_vm(struct lvm *u, struct vm *vm);

/* The generic device binding (lvmm_device.c): vm methods, and
 * core.device_types on the table on the top. A config as a Lua table,
 * through the type's fields: pushed, or read from idx (raising with
 * "<where>: field ..."). */
#include <lauxlib.h>
struct device_type;
extern const luaL_Reg lvmm_device_methods[];
void lvmm_device_register(lua_State *L);
void lvmm_push_config(lua_State *L, const struct device_type *t, const void *config);
void lvmm_read_config(lua_State *L, int idx, const struct device_type *t, void *config, const char *where);

/* Adds the migration functions (core.mig_*) to the table on the top. */
void lvmm_migrate_register(lua_State *L);

#endif
