-- tests/tools/boot_loop.lua [N [VCPUS]]: boots N guests in a row (default
-- 20, 2 vCPUs, 256M, one virtio-net on a TAP, the test suite's kernel and
-- initramfs), each until LUAVMM-GUEST-READY or 120 s, and prints one line
-- per boot ("7 ok 12.6 s", "9 FAIL 120.1 s: <why and the last console
-- output>") and a last line "N boots, K failed". For the rare failures of
-- the nested test host (a guest that hangs or triple-faults while
-- booting): run it there, e.g.
--   VMM_TESTHOST=always scripts/testhost -- build/vmm script tests/tools/boot_loop.lua 25
-- With /sys/kernel/tracing mounted and KVM's events enabled, a failure also
-- saves the trace to /tmp/boot_loop.trace.N. Exit status 1 if any failed.
local vmm = require "vmm"

local n = math.tointeger(tonumber(arg[1] or "20")) or error("N must be a whole number, got " .. arg[1])
local vcpus = math.tointeger(tonumber(arg[2] or "2")) or error("VCPUS must be a whole number, got " .. arg[2])
local kernel = os.getenv("VMM_KERNEL") or vmm.default_kernel()
local initrd = os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz"
local TRACE = "/sys/kernel/tracing/trace"

local function save_trace(i)
  local f = io.open(TRACE, "r")
  if not f then return end
  local text = f:read("a")
  f:close()
  local out = io.open("/tmp/boot_loop.trace." .. i, "w")
  if out then out:write(text) out:close() print("   trace saved to /tmp/boot_loop.trace." .. i) end
end

local failed = 0
for i = 1, n do
  local t = io.open(TRACE, "w")
  if t then t:close() end -- clears the trace buffer
  local t0 = vmm.now()
  local vm = vmm.vm { name = "loop" .. i, memory = "256M", vcpus = vcpus, kernel = kernel, initrd = initrd,
                      console = "none", cmdline = vmm.DEFAULT_CMDLINE }
  vm:add_net { ifname = "lvloop" .. i }
  local ok, err = vm:start()
  if ok then ok, err = vm:wait_boot(120) end
  if ok then
    print(string.format("%d ok %.1f s", i, vmm.now() - t0))
  else
    failed = failed + 1
    print(string.format("%d FAIL %.1f s: %s", i, vmm.now() - t0, tostring(err)))
    save_trace(i)
  end
  io.stdout:flush()
  vm:close()
end
print(string.format("%d boots, %d failed", n, failed))
os.exit(failed == 0 and 0 or 1)
