-- Local migration: the policy around core.mig_* (lvmm_migrate.c). A running
-- VM moves to another VMM process on this host over a UNIX socket; its RAM
-- goes as a memfd and, where both sides allow it, each network device's
-- TAP goes too (no new TAP, no network change, a shorter freeze).
--
-- Source, either pushing to a target that listens:
--   local report = assert(vm:migrate{ to = "/run/vm2.sock", backend_transfer = true })
-- or serving a control socket that a new process takes the VM from:
--   vm:serve("/run/web.sock")
-- Target:
--   local vm, report = assert(vmm.receive{ from = "/run/web.sock" })
--   print(report.freeze_ms, report.transferred.net0)
--
-- A failed migration leaves the VM running where it was, backends intact.
local core = require "vmm.core"
local task = require "vmm.task"
local net = require "vmm.net"

local M = {}
local methods = core.vm_methods

M.DEFAULT_TIMEOUT = 30

local function check_table(fn, t, fields)
  if type(t) ~= "table" then error(fn .. ": expected a table of settings, got " .. type(t), 3) end
  for k in pairs(t) do
    if not fields[k] then error(string.format("%s: unknown field %s", fn, tostring(k)), 3) end
  end
end

local function check_field(fn, t, key, kind, default)
  local v = t[key]
  if v == nil then return default end
  if type(v) ~= kind then
    error(string.format("%s: field %s: expected a %s, got %s", fn, key, kind, type(v)), 3)
  end
  return v
end

local function check_timeout(fn, t)
  local v = check_field(fn, t, "timeout", "number", M.DEFAULT_TIMEOUT)
  if v ~= v or v <= 0 or v > 86400 then
    error(string.format("%s: field timeout: expected seconds in (0, 86400], got %s", fn, tostring(v)), 3)
  end
  return v
end

-- The TAP a target opens when a backend does not come over: "tap0" gives
-- "tap0-b" and "tap0-b" gives "tap0", so repeated migrations alternate.
function M.replacement_ifname(ifname)
  return ifname:match("^(.+)%-b$") or (ifname:sub(1, 13) .. "-b")
end

-- "NAME: why", unless why already says NAME first (the core's messages do:
-- "web1: migration failed, ..."), so that a log line names the VM once.
function M.named(name, why)
  why = tostring(why)
  if why:sub(1, #name + 2) == name .. ": " then return why end
  return name .. ": " .. why
end

-- ---- source ---------------------------------------------------------------

local MIGRATE_FIELDS = { to = true, backend_transfer = true, nets = true, devices = true, timeout = true }

-- vm:migrate{to, backend_transfer = true, devices = {net0 = false}, timeout = 30}
-- -> report | nil, err. `to` is the socket path of a target waiting in
-- vmm.receive{listen = ...}, or a connection from vm:serve's socket.
-- devices (or its older name nets) overrides, by device name, the
-- per-device opt-in of vm:add_net{backend_transfer}.
-- report: {peer_pid, transferred = {net0 = true, ...}, freeze (core.now()
-- clock), commit}. Afterwards this VM is stopped ("migrated to process N").
function methods:migrate(opts)
  check_table("vm:migrate", opts, MIGRATE_FIELDS)
  local transfer = check_field("vm:migrate", opts, "backend_transfer", "boolean", true)
  local overrides = check_field("vm:migrate", opts, "devices", "table", nil)
    or check_field("vm:migrate", opts, "nets", "table", {})
  local timeout = check_timeout("vm:migrate", opts)
  local conn, err = opts.to, nil
  if type(conn) == "string" then
    conn, err = core.mig_connect(conn)
    if not conn then return nil, "vm:migrate: " .. err end
  elseif getmetatable(conn) == nil or not conn.send_begin then
    error("vm:migrate: field to: expected a socket path or a control connection, got " .. type(conn), 2)
  end
  local names, allowed, has_backend, links = {}, {}, {}, {}
  for i, d in ipairs(self:devices()) do
    names[i], has_backend[i] = d.name, d.backend ~= nil
    if overrides[d.name] ~= nil then allowed[i] = overrides[d.name] ~= false end
    if d.kind == "virtio-net" then links[#links + 1] = M.link_snapshot(d.config.ifname) end
  end
  -- The target builds its VM while this VM, its datapath and console run
  -- on: only then does the freeze start (send_finish).
  local report, after_commit
  report, err = conn:send_begin(self, { backend_transfer = transfer, devices = allowed, timeout = timeout })
  if report then
    if task.wait(function() return conn:readable() end, timeout) then
      report, err, after_commit = conn:send_finish()
    else
      report, err = conn:send_cancel(string.format("the target did not get ready within %g s", timeout))
    end
  end
  if type(opts.to) == "string" then conn:close() end
  if not report then
    -- A target that failed after the commit point may have begun the
    -- network switch-over (old TAP down, its addresses moved): undo it.
    if after_commit and self:state() ~= "stopped" then
      for _, l in ipairs(links) do
        for _, p in ipairs(M.link_restore(l)) do err = err .. "; restoring " .. l.ifname .. ": " .. p end
      end
    end
    return nil, err
  end
  report.transferred = M.by_name(names, report.transferred, has_backend)
  return report
end

-- The host side of a TAP, read before a migration: {ifname, up, mac,
-- addresses} (no link: nothing but the name and no addresses).
function M.link_snapshot(ifname)
  local link = net.link(ifname)
  return { ifname = ifname, up = link and link.up, mac = link and link.mac,
           addresses = link and net.addresses(ifname) or {} }
end

-- Puts a TAP's host side back as link_snapshot saw it (addresses re-added,
-- link up again) -> list of problems.
function M.link_restore(l)
  local problems = {}
  if not net.exists(l.ifname) then return { "the TAP is gone" } end
  local have = {}
  for _, a in ipairs(net.addresses(l.ifname)) do have[a] = true end
  for _, a in ipairs(l.addresses) do
    if not have[a] and not a:match("^fe80:") then
      local ok, e = net.add_address(l.ifname, a)
      if not ok then problems[#problems + 1] = e end
    end
  end
  if l.up then
    local ok, e = net.set_up(l.ifname, true)
    if not ok then problems[#problems + 1] = e end
  end
  return problems
end

-- {true, false, ...} by device index -> {net0 = true, ...} for the devices
-- whose backend could travel (the others, the board's, are left out).
function M.by_name(names, list, keep)
  local t = {}
  for i, name in ipairs(names) do
    if keep == nil or keep[i] then t[name] = list[i] end
  end
  return t
end

-- vm:serve([path], {backend_transfer = true, timeout = 30, on_migrated}) ->
-- server | nil, err: a control socket (mode 0600, only this uid or root
-- may connect) through which a new process takes the VM (vmm.receive{from
-- = path}, scripts/migrate.lua) or an operator attaches (vmm attach).
-- Without a path the socket is NAME.sock in the runtime directory (or
-- NAME.PID.sock there while another VMM holds that one, as the other end
-- of a migration does). The VMM is registered for vmm ls while it serves.
-- Runs as a task; a failed attempt is logged and the next one is served;
-- after a migration the socket goes and on_migrated(report) is called.
-- server:close() stops serving; server.path() is the socket.
function methods:serve(path, opts)
  if type(path) == "table" and opts == nil then path, opts = nil, path end
  opts = opts or {}
  check_table("vm:serve", opts, { backend_transfer = true, timeout = true, on_migrated = true })
  if path ~= nil and type(path) ~= "string" then
    error("vm:serve: expected a socket path, got " .. type(path), 2)
  end
  local transfer = check_field("vm:serve", opts, "backend_transfer", "boolean", true)
  local timeout = check_timeout("vm:serve", opts)
  if core.locked() then
    return nil, "vm:serve: this VMM is locked (vmm.lock) and creates no files, not even its registry entry: "
      .. "serve before it locks (before vm:start of a VM with `locked`)"
  end
  local registry = require "vmm.registry"
  local name = self:info().name
  local listener, err
  if path then
    listener, err = core.mig_listen(path)
  else
    path, err = registry.default_socket(name)
    if path then
      listener, err = core.mig_listen(path)
      if not listener and err:find("a running VMM listens on it", 1, true) then
        path = registry.second_socket(name)
        listener, err = core.mig_listen(path)
      end
    end
  end
  if not listener then return nil, "vm:serve: " .. err end
  local entry, rerr = registry.register(name, path)
  if not entry then listener:close() return nil, "vm:serve: " .. rerr end
  local vm, closed = self, false
  local server = { sessions = {}, entry = entry }
  function server.path() return path end
  function server.close() closed = true; listener:close(); entry.remove() end
  -- Ends the attach sessions, telling each client why.
  local function end_sessions(why)
    for _, session in pairs(server.sessions) do session.stop(why) end
  end
  -- The first section says what a client wants: a migration ("hello") or
  -- an attach session ("attach", lua/vmm/attach.lua).
  local function first_section(conn)
    local kind, why
    local deadline = core.now() + timeout
    task.wait(function()
      kind, why = conn:peek()
      return kind ~= nil or core.now() >= deadline
    end, timeout)
    if kind == nil then return nil, "no request within " .. timeout .. " s" end
    if kind == false then return nil, why end
    return kind
  end
  server.task = task.spawn(function()
    while not closed do
      local conn, extra
      task.wait(function()
        if closed or vm:state() == "stopped" or vm:state() == "closed" then return true end
        conn, extra = listener:accept()
        return conn ~= nil or extra ~= nil
      end)
      if conn then
        local c = conn
        task.spawn(function()
          local kind, why = first_section(c)
          if kind == "attach" then
            local ok, err = pcall(require("vmm.attach").session, c, vm, server.sessions)
            if not ok then io.stderr:write("vmm: ", vm:info().name, ": attach: ", tostring(err), "\n") end
            server.sessions[c] = nil
            return
          elseif kind ~= "hello" then
            why = why or ("a client began with a section of type " .. kind .. ", not attach or hello")
            io.stderr:write("vmm: ", vm:info().name, ": control socket: ", why, "\n")
            if kind then pcall(c.send, c, "error", why) end
          elseif not closed then
            local report
            report, why = vm:migrate{ to = c, backend_transfer = transfer, timeout = timeout }
            if report then
              c:close()
              server.close()
              end_sessions(string.format("%s migrated to process %d", vm:info().name, report.peer_pid))
              if opts.on_migrated then opts.on_migrated(report) end
              return
            end
            io.stderr:write("vmm: ", M.named(vm:info().name, why), "\n")
          end
          c:close()
        end)
      elseif extra then
        io.stderr:write("vmm: ", extra, "\n")
      else
        break
      end
    end
    server.close()
  end)
  return server
end

-- ---- target ---------------------------------------------------------------

local RECEIVE_FIELDS = { from = true, listen = true, backend_transfer = true, device = true,
                         console = true, timeout = true, switch_network = true, before_start = true,
                         locked = true }

local function accept_one(path, timeout)
  local listener, err = core.mig_listen(path)
  if not listener then return nil, err end
  local conn, extra
  local ok = task.wait(function()
    conn, extra = listener:accept()
    return conn ~= nil
  end, timeout)
  listener:close()
  if not ok then
    return nil, string.format("no source connected to %s within %g s%s", path, timeout,
                              extra and (" (" .. extra .. ")") or "")
  end
  return conn
end

-- The backend a target opens by default for a device whose backend does
-- not come over: a network device needs a new TAP (the source's is still
-- in use until the commit: replacement_ifname); a disk opens its image
-- again by path (the source lets go of its locks at the freeze).
local REPLACEMENT = { ["virtio-net"] = M.replacement_ifname }

-- What happens to device `d` of the description (one with a backend):
-- the policy hook, else take the backend when offered, else a new backend
-- (REPLACEMENT).
-- The hook sees the device as a table: {kind, name, the fields of its
-- configuration (ifname, mac, queues, ...), transfer_offered,
-- backend_transfer}; it returns {transfer = false, <backend field> = name}.
local function decide(d, hook)
  local view = { kind = d.kind, name = d.name, transfer_offered = d.transfer_offered,
                 backend_transfer = d.backend_transfer }
  for k, v in pairs(d.config) do view[k] = v end
  local choice = hook and hook(view) or {}
  if type(choice) ~= "table" then
    error("vmm.receive: device hook: expected a table {transfer = bool, " .. d.backend .. " = name}, got "
          .. type(choice), 0)
  end
  if d.transfer_offered and choice.transfer ~= false then return { transfer = true } end
  local same = function(b) return b end
  return { backend = choice[d.backend] or (REPLACEMENT[d.kind] or same)(d.config[d.backend]) }
end

-- migrate.switch_network{old, new, addresses, mac} -> list of problems
-- (empty if none): the network switch-over for a device whose TAP did not
-- come over. The old TAP's addresses and MAC, read before the freeze (the
-- old link may be going away meanwhile), go to the new one; old link
-- down, new link up. bench/migrate uses it for QEMU's target too.
function M.switch_network(s)
  local problems = {}
  local function try(ok, err) if not ok and err then problems[#problems + 1] = err end end
  if net.exists(s.old) then net.set_up(s.old, false) end
  for _, a in ipairs(s.addresses or {}) do
    if not a:match("^fe80:") then
      if net.exists(s.old) then net.del_address(s.old, a) end
      try(net.add_address(s.new, a))
    end
  end
  if s.mac then try(net.set_mac(s.new, s.mac)) end
  try(net.set_up(s.new, true))
  return problems
end

-- vmm.receive{from = path | listen = path, backend_transfer = true,
-- device = function(d) -> {transfer = bool, ifname | path = new backend}, console,
-- timeout = 30, switch_network = true, before_start = function(vm)} ->
-- vm, report | nil, err.
-- `from`: the control socket of the VM's process (vm:serve); `listen`:
-- wait there for a vm:migrate{to = ...}. device(d) is called for each
-- device with a backend and sees {kind, name, ifname, mac, queues, vhost,
-- queue_size (its configuration), transfer_offered, backend_transfer (the
-- device's own opt-in, which it keeps here)}; it may decline the backend
-- or name the new one (ifname). before_start(vm) runs after the source
-- committed and the network was switched over, before the guest runs here
-- (the source, paused, can still resume it): an error there stops the
-- migration, and the source then kills this process and resumes the VM.
-- The VM comes back running.
-- report: {peer_pid, freeze_ms, freeze, sent, loaded, commit, resumed
-- (core.now() times: the source paused, the state arrived, was loaded,
-- the source committed, the vCPUs run here), transferred = {net0 = true, disk0 = true},
-- new_taps = {net1 = "tap1-b"}, new_backends = {net1 = "tap1-b", disk1 =
-- "/images/disk1.img"} (every backend opened here), switch_problems = {...}}.
function M.receive(opts)
  check_table("vmm.receive", opts, RECEIVE_FIELDS)
  local from = check_field("vmm.receive", opts, "from", "string")
  local listen = check_field("vmm.receive", opts, "listen", "string")
  if (from == nil) == (listen == nil) then
    error("vmm.receive: give exactly one of from (a control socket) or listen (a path to wait on)", 2)
  end
  local accept = check_field("vmm.receive", opts, "backend_transfer", "boolean", true)
  local hook = check_field("vmm.receive", opts, "device", "function")
  local before_start = check_field("vmm.receive", opts, "before_start", "function")
  local lock
  if opts.locked ~= nil then
    local e
    lock, e = require("vmm.config").check_lock("vmm.receive: locked", opts.locked)
    if lock == nil then error(e, 2) end
  end
  local console = check_field("vmm.receive", opts, "console", "string")
  local switch = check_field("vmm.receive", opts, "switch_network", "boolean", true)
  local timeout = check_timeout("vmm.receive", opts)

  local conn, err
  if from then conn, err = core.mig_connect(from) else conn, err = accept_one(listen, timeout) end
  if not conn then return nil, "vmm.receive: " .. err end
  local desc
  desc, err = conn:offer(accept, timeout)
  if not desc then conn:close() return nil, "vmm.receive: " .. err end

  local plan, switches, new_taps, new_backends, names, has_backend = {}, {}, {}, {}, {}, {}
  for i, d in ipairs(desc.devices) do
    names[i], has_backend[i], plan[i] = d.name, d.backend ~= nil, {}
    if d.backend then
      local ok, choice = pcall(decide, d, hook)
      if not ok then conn:close() error(choice, 2) end
      plan[i] = choice
      if choice.backend then
        new_backends[d.name] = choice.backend
        if d.kind == "virtio-net" then -- the network switch-over is this policy's
          new_taps[d.name] = choice.backend
          local old = M.link_snapshot(d.config.ifname)
          switches[#switches + 1] = { old = old.ifname, new = choice.backend, addresses = old.addresses,
                                      mac = old.mac }
        end
      end
    end
  end
  local vm, report = conn:receive(plan, console)
  if not vm then conn:close() return nil, "vmm.receive: " .. report end
  -- Committed: the source waits, paused, for this side to start the VM.
  local problems = {}
  if switch then
    for _, s in ipairs(switches) do
      for _, p in ipairs(M.switch_network(s)) do problems[#problems + 1] = p end
    end
  end
  if before_start then
    local ok, e = pcall(before_start, vm)
    if not ok then
      conn:close()
      vm:close()
      return nil, "vmm.receive: before_start: " .. tostring(e)
    end
  end
  local ok
  ok, err = conn:start(vm)
  conn:close()
  local resumed = core.now()
  if not ok then vm:close() return nil, "vmm.receive: " .. err end
  ok, err = require("vmm.vm").locked_start(vm, lock)
  if not ok then vm:close() return nil, "vmm.receive: " .. err end
  report.transferred = M.by_name(names, report.transferred, has_backend)
  report.new_taps = new_taps
  report.new_backends = new_backends
  report.switch_problems = problems
  report.resumed = resumed
  report.freeze_ms = (resumed - report.freeze) * 1000
  report.name = desc.name
  return vm, report
end

return M
