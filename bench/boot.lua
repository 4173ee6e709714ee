-- bench/boot.lua — the vmm side of bench/boot (one boot per process).
--
--   vmm script bench/boot.lua VCPUS MEM_MIB KERNEL INITRD CMDLINE REPORT STOP
--
-- Boots a guest named "bench" (so its RAM is the memfd "vmm-ram:bench") with
-- its console on stdout, waits for the guest's ready line, and writes one
-- line to the file REPORT:
--
--   start_mono=S marker=M
--
--   S  vmm.now() (CLOCK_MONOTONIC, seconds) just before vm:start(); the
--      runner compares it with its own CLOCK_MONOTONIC reading taken just
--      before it exec'd this process;
--   M  vm:boot_time(): seconds from vm:start() to the guest's boot marker
--      (its write to port 0x3f0, timestamped by the VMM on CLOCK_MONOTONIC).
--
-- It prints nothing itself: stdout carries only the guest's console, which
-- the runner reads (a print() here could land inside a console line, since
-- the echo of the console to stdout may lag what vm:wait_boot has seen).
-- The VM then stays up (the runner samples /proc/PID/smaps) until the file
-- STOP exists, and is stopped.
local vmm = require "vmm"

local vcpus, mem_mib, kernel, initrd, cmdline, report, stopfile = ...
vcpus, mem_mib = math.tointeger(tonumber(vcpus)), math.tointeger(tonumber(mem_mib))
assert(vcpus and mem_mib and kernel and initrd and cmdline and report and stopfile,
  "usage: vmm script bench/boot.lua VCPUS MEM_MIB KERNEL INITRD CMDLINE REPORT STOP")

local BOOT_TIMEOUT = 240 -- seconds; nested boots take ~10-20 s
local STOP_TIMEOUT = 120 -- seconds to wait for the runner's STOP file

local vm = vmm.vm {
  name = "bench",
  memory = mem_mib * 1024 * 1024,
  vcpus = vcpus,
  kernel = kernel,
  initrd = initrd,
  cmdline = cmdline,
  console = "stdout",
}

-- vm:boot_time() counts from the CLOCK_MONOTONIC reading at the beginning of
-- vm:start(); `started` is taken just before the call (microseconds earlier).
local started = vmm.now()
assert(vm:start())
assert(vm:wait_boot(BOOT_TIMEOUT))
local marker = vm:boot_time()
assert(marker, "vm:boot_time() is nil although the ready line was seen")

local f = assert(io.open(report, "w"))
f:write(string.format("start_mono=%.9f marker=%.9f\n", started, marker))
assert(f:close())

-- Wait for the runner to sample the memory figures (it may have done so
-- already), polling its stop file with vmm.sleep: with vmm.wait_until the
-- predicate would only be looked at once a second, an idle guest raising no
-- loop events.
local function exists(path)
  local fh = io.open(path, "r")
  if fh then fh:close() end
  return fh ~= nil
end
local deadline = vmm.now() + STOP_TIMEOUT
while not exists(stopfile) and vmm.now() < deadline do vmm.sleep(0.05) end
if not exists(stopfile) then
  io.stderr:write("bench/boot.lua: no stop file after ", STOP_TIMEOUT, " s\n")
end
assert(vm:stop())
