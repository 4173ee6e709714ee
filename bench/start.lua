-- bench/start: CPU time and wall time from exec to a listening control
-- socket, vmm (a VM composed and served: bench/start_target.lua) next to
-- QEMU (the same kernel and initramfs, -S, its QMP socket), on this machine
-- (no test host: nothing here runs a guest). Prints figures; asserts
-- nothing.
--   build/vmm bench/start.lua [--runs N]
--
-- Both are measured the same way from outside: the runner connects to the
-- socket every 0.5 ms until it accepts, then sums the CPU time of the
-- process's threads (/proc/PID/task/*/schedstat, ns on CPU, which counts
-- from the fork), and again 50 ms later: vmm sits idle in its event loop
-- by then, QEMU (stopped by -S) still works on its start after its QMP
-- socket listens. vmm also
-- reports its own getrusage at the moment it listens.
local vmm = require "vmm"
local core = require "vmm.core"
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local runs = 20
local i = 1
while arg[i] do
  if arg[i] == "--runs" then runs = assert(math.tointeger(tonumber(arg[i + 1])), "--runs N") i = i + 2
  elseif arg[i] == "-h" or arg[i] == "--help" then
    print("usage: build/vmm bench/start.lua [--runs N]") os.exit(0)
  else error("bench/start: unknown argument " .. arg[i]) end
end

local kernel = os.getenv("VMM_KERNEL") or vmm.default_kernel()
local initrd = os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz"
local vmm_bin = os.getenv("VMM_BIN") or "build/vmm"
local accel = vmm.kvm().usable and "kvm" or "tcg"

-- ns on CPU of every thread of pid, or nil when it is gone
local function cpu_ns(pid)
  local total, any = 0, false
  for _, tid in ipairs(core.list_dir("/proc/" .. pid .. "/task") or {}) do
    local f = io.open("/proc/" .. pid .. "/task/" .. tid .. "/schedstat")
    if f then
      total = total + (tonumber(f:read("n")) or 0)
      any = true
      f:close()
    end
  end
  return any and total or nil
end

local function ready(sock)
  local conn = core.mig_connect(sock)
  if conn then conn:close() return true end
  return false
end

-- Launches argv, waits for sock -> {cpu_ms, wall_ms, output}
local function measure(argv, sock)
  os.remove(sock)
  local t0 = core.now()
  local cmd = assert(vmm.background(argv))
  local deadline = t0 + 20
  while not ready(sock) do
    if cmd:done() or core.now() > deadline then
      cmd:kill(9)
      error(argv[1] .. " did not listen on " .. sock .. ": " .. common.tail(cmd:output()))
    end
    vmm.sleep(0.0005)
  end
  local wall = (core.now() - t0) * 1e3
  local ns = cpu_ns(cmd:pid())
  vmm.sleep(0.05) -- vmm's own line arrives; QEMU goes on working a while
  local later = cpu_ns(cmd:pid())
  local out = cmd:output()
  cmd:kill(9)
  cmd:wait(10)
  os.remove(sock)
  return { cpu_ms = ns and ns / 1e6, later_ms = later and later / 1e6, wall_ms = wall, output = out }
end

local sock = string.format("/tmp/luavmm-bench-start-%d.sock", core.pid())
local contenders = {
  { name = "vmm", argv = { vmm_bin, "script", "bench/start_target.lua", sock, kernel, initrd } },
  { name = "QEMU", argv = { "qemu-system-x86_64", "-S", "-machine", "pc", "-accel", accel, "-m", "256", "-smp", "1",
                            "-nodefaults", "-nographic", "-serial", "none", "-monitor", "none",
                            "-qmp", "unix:" .. sock .. ",server=on,wait=off", "-kernel", kernel, "-initrd", initrd } },
}
io.stderr:write(string.format("bench/start: %d runs each; QEMU with -accel %s; kernel %s\n", runs, accel, kernel))
for _, c in ipairs(contenders) do measure(c.argv, sock) end -- warm-up: page cache
local res = {}
for r = 1, runs do
  local order = r % 2 == 1 and { 1, 2 } or { 2, 1 }
  for _, k in ipairs(order) do
    local c = contenders[k]
    local m = measure(c.argv, sock)
    res[c.name] = res[c.name] or { cpu = {}, later = {}, wall = {}, self = {} }
    table.insert(res[c.name].cpu, m.cpu_ms)
    table.insert(res[c.name].later, m.later_ms)
    table.insert(res[c.name].wall, m.wall_ms)
    local self_ms = m.output:match("listening cpu_ms=([%d.]+)")
    if self_ms then table.insert(res[c.name].self, tonumber(self_ms)) end
  end
end

local function stats(xs)
  if #xs == 0 then return "n/a" end
  local lo, hi = math.huge, -math.huge
  for _, x in ipairs(xs) do lo, hi = math.min(lo, x), math.max(hi, x) end
  return string.format("%.2f (%.2f-%.2f)", common.median(xs), lo, hi)
end
print(string.format("\n## exec -> control socket listening, %d runs each: median (min-max), ms\n", runs))
print("| contender | CPU time at ready (schedstat) | 50 ms later | wall time | own getrusage at listen |")
print("|---|---|---|---|---|")
for _, c in ipairs(contenders) do
  local r = res[c.name]
  print(string.format("| %s | %s | %s | %s | %s |", c.name, stats(r.cpu), stats(r.later), stats(r.wall), stats(r.self)))
end
local v, q = common.median(res.vmm.cpu), common.median(res.QEMU.cpu)
print(string.format("\nCPU time ratio vmm/QEMU: %.3f (vmm %.2f ms, QEMU %.2f ms; goal: vmm <= 4 ms)", v / q, v, q))
