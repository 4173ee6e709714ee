-- The Lua methods of a VM (added to the "vmm.vm" metatable next to the C
-- ones): waiting on the console and on the VM's state. They block the way
-- vmm.sleep does: they yield inside a task and drive the loop elsewhere.
local core = require "vmm.core"
local config = require "vmm.config"
local task = require "vmm.task"
local migrate = require "vmm.migrate"
local shell = require "vmm.shell"

local M = {}
local methods = core.vm_methods

M.READY_LINE = "LUAVMM-GUEST-READY"

-- ---- locking after start (vmm.lock) ----

-- What `vmm --sandbox` asks of every VM without a `locked` field: false or
-- {commands = {...}}.
M.lock_on_start = false
local lock_of = setmetatable({}, { __mode = "k" })

-- VM vm locks the process once it started (lock: false or {commands}).
function M.lock_after_start(vm, lock) lock_of[vm] = lock end

-- After vm started: locks the process if `lock` (else vm's own setting,
-- else vmm --sandbox) asks to. true, or nil and what failed (the VM is
-- stopped then: it was not meant to run unlocked).
function M.locked_start(vm, lock)
  if lock == nil then lock = lock_of[vm] end
  if lock == nil then lock = M.lock_on_start end
  if not lock or core.locked() then return true end
  local ok, err = core.lock(lock.commands)
  if not ok then
    vm:stop()
    return nil, err
  end
  return true
end

local c_start = methods.start
-- vm:start() -> true, or nil and what failed (locking included).
function methods:start()
  local ok, err = c_start(self)
  if not ok then return nil, err end
  return M.locked_start(self)
end
local DEFAULT_TIMEOUT = 30
local BOOT_TIMEOUT = 60
local TAIL = 200
local STATES = { created = true, running = true, paused = true, stopped = true, closed = true }

-- The last bytes of s, on one line, control characters escaped.
local function tail(s)
  if #s > TAIL then s = "..." .. s:sub(-TAIL) end
  return '"' .. s:gsub("[%c\"\\]", function(c)
    local named = { ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t", ['"'] = '\\"', ["\\"] = "\\\\" }
    return named[c] or string.format("\\%d", c:byte())
  end) .. '"'
end

local function check_timeout(name, t, default)
  if t == nil then return default end
  if type(t) ~= "number" or t ~= t or t < 0 then
    error(string.format("vm:%s: expected a timeout in seconds (a number >= 0), got %s", name, tostring(t)), 3)
  end
  return t
end

local function stopped_message(vm)
  if vm:state() == "closed" then return "VM closed" end
  return "VM stopped (" .. (vm:stop_reason() or "no reason given") .. ")"
end

-- Finds pattern in the unread output; on a match consumes up to its end and
-- returns {captures or the matched text}.
local function match_output(vm, pattern)
  local out = vm:console_peek()
  local r = table.pack(out:find(pattern))
  if not r[1] then return nil end
  vm:console_consume(math.max(r[2], 0))
  if r.n > 2 then return table.pack(table.unpack(r, 3, r.n)) end
  return table.pack(out:sub(r[1], r[2]))
end

-- vm:expect(pattern, [timeout_s = 30]) -> the matched text (or the
-- pattern's captures); or nil and "timeout after N s waiting for <pattern>;
-- last output: <tail>" (or "VM stopped (...) ..." as soon as it stops).
function methods:expect(pattern, timeout)
  if type(pattern) ~= "string" then
    error("vm:expect: expected a Lua pattern (string), got " .. type(pattern), 2)
  end
  local ok, err = pcall(string.find, "", pattern)
  if not ok then error("vm:expect: bad pattern " .. string.format("%q", pattern) .. ": " .. err, 2) end
  timeout = check_timeout("expect", timeout, DEFAULT_TIMEOUT)
  local found, stopped
  task.wait(function()
    local s = self:state()   -- before reading: output that precedes a stop is seen
    if s == "closed" then stopped = true return true end
    found = match_output(self, pattern)
    if found then return true end
    stopped = s == "stopped"
    return stopped
  end, timeout)
  if found then return table.unpack(found, 1, found.n) end
  local why = stopped and stopped_message(self) or string.format("timeout after %g s", timeout)
  return nil, string.format("%s waiting for %q; last output: %s", why, pattern,
                            tail(self:state() == "closed" and "" or self:console_peek()))
end

-- vm:wait(state, [timeout_s = 30]) -> true once the VM is in state, or nil
-- and a message (at once if it stopped while waiting for another state).
function methods:wait(state, timeout)
  if not STATES[state] then
    error("vm:wait: expected a state (created, running, paused, stopped), got " .. tostring(state), 2)
  end
  timeout = check_timeout("wait", timeout, DEFAULT_TIMEOUT)
  local s
  task.wait(function()
    s = self:state()
    return s == state or s == "stopped" or s == "closed"
  end, timeout)
  if s == state then return true end
  if s == "stopped" or s == "closed" then
    return nil, stopped_message(self) .. " while waiting for state " .. state
  end
  return nil, string.format("timeout after %g s waiting for state %s (still %s)", timeout, state, s)
end

-- vm:wait_boot([timeout_s = 60]) -> true once the guest printed
-- LUAVMM-GUEST-READY, or nil and a message.
function methods:wait_boot(timeout)
  timeout = check_timeout("wait_boot", timeout, BOOT_TIMEOUT)
  local ok, err = self:expect((M.READY_LINE:gsub("%-", "%%-")), timeout)
  if not ok then return nil, (err:gsub('waiting for "[^"]*"', "waiting for " .. M.READY_LINE, 1)) end
  return true
end

-- vm:sh(cmd, [timeout_s = 30]) -> output, exit status: runs cmd in the
-- guest's shell on the serial console; the output comes without the echo,
-- the prompt and its last newline, with "\r\n" turned into "\n" (so
-- vm:sh("nproc") gives "2", 0). nil and a message on timeout.
function methods:sh(cmd, timeout)
  if type(cmd) ~= "string" then
    error("vm:sh: expected a command (string), got " .. type(cmd), 2)
  end
  timeout = check_timeout("sh", timeout, DEFAULT_TIMEOUT)
  return shell.run(function(text) self:send(text) end, function(p, t) return self:expect(p, t) end, cmd, timeout)
end

-- The CPU time (s), state and processor of this process's thread tid.
local function thread_cpu(tid)
  return shell.cpu("/proc/self/task/" .. tid .. "/stat")
end

-- Where the vCPUs of a running VM are, for activity(): "; where: vcpu0
-- rip 0x... rflags 0x... (IF=1) cr3 0x... runnable" ("" unless running).
-- Pauses the VM for the reading.
function methods:_where()
  if self:state() ~= "running" then return "" end
  local ok, err = self:pause()
  if not ok then return "; where: cannot pause (" .. tostring(err) .. ")" end
  local regs, why = self:vcpu_where()
  local resumed, rerr = self:resume()
  if not resumed then return "; where: cannot resume the VM: " .. tostring(rerr) end
  if not regs then return "; where: " .. tostring(why) end
  local parts = {}
  for i, r in ipairs(regs) do
    parts[#parts + 1] = string.format("vcpu%d rip 0x%x rsp 0x%x rflags 0x%x (IF=%d) cr3 0x%x %s", i - 1, r.rip,
      r.rsp, r.rflags, (r.rflags >> 9) & 1, r.cr3, r.mp_state)
  end
  return "; where: " .. table.concat(parts, "; ")
end

-- vm:activity([seconds = 2]) -> one line on what each vCPU did over that
-- time, for telling a guest that stopped answering: waiting (halted, no
-- exits: an interrupt that never came) from spinning inside KVM_RUN (CPU
-- time but no exits) or busy with port and MMIO exits. Waits `seconds`.
function methods:activity(seconds)
  seconds = check_timeout("activity", seconds, 2)
  local function sample()
    local st = self:vcpu_stats()
    for _, v in ipairs(st) do
      if v.tid ~= 0 then v.cpu, v.state, v.on = thread_cpu(v.tid) end
    end
    return st
  end
  local a = sample()
  task.sleep(seconds)
  local b = sample()
  local parts = {}
  for i, v in ipairs(b) do
    local w = a[i]
    local text
    if v.tid == 0 then
      text = "not started"
    elseif not v.cpu or not w.cpu then
      text = "its thread is gone"
    else
      local exits, cpu = v.runs - w.runs, v.cpu - w.cpu
      local what
      -- an idle guest still costs its thread some CPU for its timer ticks
      -- (14% seen under nested KVM), so "waits" allows up to half
      if exits == 0 and cpu < 0.5 * seconds then what = "waits in KVM_RUN (halted?)"
      elseif exits < 10 * seconds and cpu >= 0.5 * seconds then what = "spins inside KVM_RUN"
      else what = "runs" end
      text = string.format("%s: %d exits (%d I/O, %d MMIO), %.2f s CPU, thread state %s on CPU %s",
        what, exits, v.io_exits - w.io_exits, v.mmio_exits - w.mmio_exits, cpu, v.state, tostring(v.on))
    end
    parts[#parts + 1] = string.format("vcpu%d %s", i - 1, text)
  end
  return string.format("over %g s: %s%s", seconds, table.concat(parts, "; "), self:_where())
end

-- vm:add_net{ifname, mac?, queues? = 1, vhost? = false, queue_size? = 256,
-- name? = "net<N>", backend_transfer? = true}: a virtio-net device on the PCI bus, before vm:start().
-- The TAP `ifname` is opened now (created if absent); with vhost = true,
-- /dev/vhost-net too. Raises naming the field or the failing backend.
function methods:add_net(settings)
  local cfg, err = config.check_net(settings, #self:nets())
  if not cfg then error(err, 2) end
  local ok, why = self:_add_device("virtio-net", cfg.name, {
    ifname = cfg.ifname, mac = cfg.mac, queues = cfg.queues, queue_size = cfg.queue_size, vhost = cfg.vhost,
  }, cfg.backend_transfer)
  if not ok then error("vm:add_net: " .. why, 2) end
  return self
end

-- vm:add_disk{path, readonly? = false, name? = "disk<N>", queues? = 1,
-- queue_size? = 256, cache? = "writeback", serial?, backend_transfer? = true}:
-- a virtio-blk disk on the PCI bus, before vm:start(). The image (a raw
-- file or a block device) is opened and locked now; cache = "none" uses
-- O_DIRECT, "writethrough" makes every write durable before it completes.
-- Raises naming the field, or what is wrong with the image (missing, a
-- directory, read-only, in use by another process).
--
-- vm:add_disk{vhost_user = SOCKET, name?, queues? = 1, queue_size? = 128,
-- backend_transfer? = true}: a virtio-blk disk whose requests a vhost-user
-- backend (qemu-storage-daemon, say) serves; connected now, the capacity
-- and features asked of it. path, readonly, cache and serial are refused
-- with it: the backend has the image.
function methods:add_disk(settings)
  local cfg, err = config.check_disk(settings, #self:disks())
  if not cfg then error(err, 2) end
  local ok, why
  if cfg.vhost_user then
    ok, why = self:_add_device("vhost-user-blk", cfg.name, {
      socket = cfg.vhost_user, queues = cfg.queues, queue_size = cfg.queue_size,
    }, cfg.backend_transfer)
  else
    ok, why = self:_add_device("virtio-blk", cfg.name, {
      path = cfg.path, readonly = cfg.readonly, queues = cfg.queues, queue_size = cfg.queue_size,
      cache = cfg.cache, serial = cfg.serial,
    }, cfg.backend_transfer)
  end
  if not ok then error("vm:add_disk: " .. why, 2) end
  return self
end

-- vm:disks() -> list of {name, path, readonly, cache, read_reqs, read_bytes,
-- write_reqs, write_bytes, flush_reqs, discard_reqs, write_zeroes_reqs,
-- io_errors, unsupported, inflight, capacity_sectors} for image disks, and
-- {name, vhost_user, connected, queues_running, capacity_sectors,
-- backend_failed, new_session_pending (a connection handed over by a
-- migration whose source's addresses do not hold here: the next set-up
-- starts a new session)} for vhost-user ones
function methods:disks()
  local list = {}
  for i, d in ipairs(self:devices()) do
    if d.kind == "virtio-blk" then
      local s = self:device_stats(i)
      s.name, s.path, s.readonly, s.cache = d.name, d.config.path, d.config.readonly, d.config.cache
      list[#list + 1] = s
    elseif d.kind == "vhost-user-blk" then
      local s = self:device_stats(i)
      s.name, s.vhost_user = d.name, d.config.socket
      s.connected, s.backend_failed = s.connected == 1, s.backend_failed == 1
      s.new_session_pending = s.new_session_pending == 1
      list[#list + 1] = s
    end
  end
  return list
end

-- The network devices: the VM's devices of kind "virtio-net", with their
-- index in vm:devices().
local function net_indices(vm)
  local list = {}
  for i, d in ipairs(vm:devices()) do
    if d.kind == "virtio-net" then list[#list + 1] = { index = i, device = d } end
  end
  return list
end

-- vm:net_state(i) -> the i-th network device's datapath state as text: per
-- queue pair, whether rx waits for guest buffers or holds a packet, whether
-- tx waits for the TAP, and both rings' indices and notification fields
-- (for a stalled device); nil past the last device.
function methods:net_state(i)
  local n = net_indices(self)[i]
  return n and self:device_state(n.index)
end

-- vm:nets() -> list of {name, ifname, rx_packets, rx_bytes, rx_dropped,
-- tx_packets, tx_bytes, tx_errors, active_pairs}
function methods:nets()
  local list = {}
  for _, n in ipairs(net_indices(self)) do
    local s = self:device_stats(n.index)
    s.name, s.ifname = n.device.name, n.device.config.ifname
    list[#list + 1] = s
  end
  return list
end

M.DETACH_KEY = "\29" -- Ctrl-]

-- vm:attach() -> "detached" or "stopped": connects the terminal to the
-- guest's serial console (raw mode when stdin is a terminal, so Ctrl-C goes
-- to the guest) until Ctrl-] is typed, stdin ends, or the VM stops. Guest
-- output is shown as it comes (it already is when console = "stdout") and
-- consumed, so a later vm:expect sees only what follows.
function methods:attach()
  if self:state() ~= "running" and self:state() ~= "paused" then
    error("vm:attach: the VM is " .. self:state(), 2)
  end
  local echo = self:info().console ~= "stdout"
  assert(core.stdin_raw(true))
  local result
  local ok, err = pcall(task.wait, function()
    local out = self:console_peek()
    if #out > 0 then
      if echo then io.stdout:write(out); io.stdout:flush() end
      self:console_consume(#out)
    end
    if self:state() == "stopped" then result = "stopped" return true end
    local input = core.stdin_read_raw()
    if input == nil then result = "detached" return true end
    local cut = input:find(M.DETACH_KEY, 1, true)
    if cut then input = input:sub(1, cut - 1) end
    if #input > 0 then self:send(input) end
    if cut then result = "detached" return true end
    return false
  end)
  core.stdin_raw(false)
  core.stdin_pause() -- what is typed next is the prompt's (its line editor reads the terminal itself)
  if not ok then error(err, 0) end
  return result
end

return M
