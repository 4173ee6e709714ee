-- The public `vmm` module.
--
--   local vmm = require "vmm"
--   local vm <close> = vmm.vm { name = "web", memory = "512M", vcpus = 2,
--                               kernel = "/boot/vmlinuz", initrd = "guest.img" }
--   assert(vm:start())
--   assert(vm:wait_boot(60))
--   print(vm:sh("uname -r"))
--
-- Composition errors raise at the caller's line; failures of the host or of
-- KVM return nil and a message; blocking calls (vmm.sleep, vm:expect, ...)
-- yield inside vmm.spawn tasks and drive the event loop elsewhere.
local core = require "vmm.core"
local config = require "vmm.config"
local task = require "vmm.task"
require "vmm.vm" -- adds the Lua methods to the "vmm.vm" metatable

local M = {}

M.version = core.version
M.versions = { vmm = core.version, lua = core.lua_release, libuv = core.uv_version }
M.DEFAULT_CMDLINE = config.DEFAULT_CMDLINE

-- vmm.kvm() -> { usable, backend, reason, advice }: can this machine's
-- /dev/kvm run a standard x86-64 Linux guest? backend is "kvm_intel",
-- "kvm_amd", "kvm_pvm" (runs only PVM guest kernels), "unknown" or "none";
-- reason says why not (or what it is), advice what to do. vm:start() asks the
-- same question and fails with reason and advice. VMM_KVM_FORCE=1 accepts a
-- refused backend whose device works (a PVM guest kernel on kvm-pvm).
M.kvm = core.kvm
-- vmm.seccomp([mode]) -> "on" | "off" | "log": the seccomp filters of the
-- vCPU and disk I/O threads started from now on (default VMM_SECCOMP, else on)
M.seccomp = core.seccomp

-- vmm.lock{commands = {program, ...}} -> true, or nil and what failed:
-- locks this VMM process for good (core/sandbox.h). Its main thread gets a
-- seccomp filter that lets the VMs, their datapaths, the control socket,
-- migration and the REPL run on but opens and changes no file (EACCES) and
-- starts no program (EPERM); host commands (vmm.command) run only if they
-- are in `commands` (names found in PATH, or paths). A VM's `locked` field
-- and `vmm --sandbox` lock when the VM starts. vmm.locked() says whether it
-- happened.
function M.lock(opts)
  if opts == nil then opts = true end
  local lock, err = config.check_lock("vmm.lock", opts)
  if lock == false then err = "vmm.lock: expected true or {commands = {program, ...}}, got false" end
  if not lock then error(err, 2) end
  return core.lock(lock.commands)
end
M.locked = core.locked

-- vmm.vm{name?, memory?, vcpus?, kernel, initrd?, cmdline?, console?} -> vm
-- in state "created" (nothing touches KVM before vm:start()).
function M.vm(settings)
  local cfg, err = config.check(settings)
  if not cfg then error(err, 2) end
  local ok, vm = pcall(core.vm_new, cfg)
  if not ok then error("vmm.vm: " .. tostring(vm), 2) end
  if cfg.locked ~= nil then require("vmm.vm").lock_after_start(vm, cfg.locked) end
  return vm
end

-- "6.1.0-10" after "6.1.0-9": compares runs of digits as numbers.
local function version_less(a, b)
  local ia, ib = 1, 1
  while ia <= #a and ib <= #b do
    local ra, rb = a:match("^%d+", ia) or a:match("^%D+", ia), b:match("^%d+", ib) or b:match("^%D+", ib)
    if ra ~= rb then
      local na, nb = tonumber(ra), tonumber(rb)
      if na and nb then return na < nb end
      return ra < rb
    end
    ia, ib = ia + #ra, ib + #rb
  end
  return #a - ia < #b - ib
end

-- vmm.default_kernel([dir = "/boot"]) -> the path of the host's newest
-- kernel (dir/vmlinuz-<newest version>, else dir/vmlinuz); raises if none.
function M.default_kernel(dir)
  dir = dir or "/boot"
  local best
  for _, name in ipairs(core.list_dir(dir) or {}) do
    local v = name:match("^vmlinuz%-(.+)$")
    local f = v and io.open(dir .. "/" .. name, "rb")
    if f then
      f:close()
      if not best or version_less(best, v) then best = v end
    end
  end
  if best then return dir .. "/vmlinuz-" .. best end
  local f = io.open(dir .. "/vmlinuz", "rb")
  if f then f:close() return dir .. "/vmlinuz" end
  error("vmm.default_kernel: no readable " .. dir .. "/vmlinuz-* (install linux-image-amd64 or give a kernel path)", 2)
end

M.sleep = task.sleep          -- vmm.sleep(seconds)
M.spawn = task.spawn          -- vmm.spawn(fn, ...) -> task
M.run = task.run              -- vmm.run([timeout]) -> true | nil, err
M.wait_until = task.wait_until -- vmm.wait_until(pred, [timeout]) -> value | nil, err
M.now = core.now              -- vmm.now() -> monotonic seconds
M.net = require "vmm.net"
local migrate = require "vmm.migrate"
M.receive = migrate.receive  -- vmm.receive{from | listen, ...} -> vm, report
-- vmm.ls{timeout = 2} -> the VMMs of this user that serve a control
-- socket: {{name, pid, socket, state, memory, vcpus, devices, stale}, ...}
M.ls = function(opts) return require("vmm.registry").list(opts) end
local process = require "vmm.process"
M.command = process.command  -- vmm.command(argv, opts) -> output, status
M.background = process.background -- vmm.background(argv, opts) -> command

return M
