-- tests/tools/migrate_loop.lua [ROUNDS [VCPUS [stay]]]: boots one guest (default
-- 2 vCPUs, 256M, a virtio-blk disk on a 16 MiB image, the test suite's
-- kernel and initramfs) and moves it ROUNDS times (default 10) to a new
-- process (scripts/migrate.lua) and back into this one. On every vCPU the
-- guest runs a ticker pinned to it (a counter every 100 ms), and the last
-- vCPU also runs the disk writer (diskwrite stream with fdatasync: virtio
-- interrupts on that vCPU throughout). After each round trip it checks that
-- the VM runs, that every ticker advanced and that the writer acknowledged
-- more, and prints one line per round ("3 ok: freeze 41.2 / 38.9 ms,
-- ticks +12 +11, acks +40") or why it failed, then "N rounds, K failed".
-- For the rare failures of 2-vCPU guests after a migration in the nested
-- test host (a guest triple fault, a vCPU whose timer stops): run it there,
--   VMM_TESTHOST=always scripts/testhost -- build/vmm script tests/tools/migrate_loop.lua 20
-- With /sys/kernel/tracing mounted (scripts/testhost does), a failure also
-- prints the shutdown exits KVM traced. With "stay" the VM is not moved:
-- each round waits as long as a round trip takes and checks the same (the
-- control: does the guest fail as often without migrations?). Exit status
-- 1 if any round failed.
local vmm = require "vmm"

local rounds = math.tointeger(tonumber(arg[1] or "10")) or error("ROUNDS must be a whole number, got " .. arg[1])
local vcpus = math.tointeger(tonumber(arg[2] or "2")) or error("VCPUS must be a whole number, got " .. arg[2])
local kernel = os.getenv("VMM_KERNEL") or vmm.default_kernel()
local initrd = os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz"
local stay = arg[3] == "stay"
if arg[3] and not stay then error("the third argument can only be stay, got " .. arg[3]) end
local TRACE = "/sys/kernel/tracing/trace"
local unique = tostring(os.time())
local image = "/tmp/migrate_loop." .. unique .. ".img"
local sock = "/tmp/migrate_loop." .. unique .. ".sock"

local function shutdowns()
  local f = io.open(TRACE, "r")
  if not f then return "" end
  local lines = {}
  for l in f:lines() do
    if l:find("reason shutdown", 1, true) or l:find("exit_reason=127", 1, true) then lines[#lines + 1] = l end
  end
  f:close()
  return table.concat(lines, "\n")
end

local img = assert(io.open(image, "wb"))
img:seek("set", 16 * 1024 * 1024 - 1)
img:write("\0")
img:close()

local vm = vmm.vm { name = "migloop", memory = "256M", vcpus = vcpus, kernel = kernel, initrd = initrd,
                    cmdline = vmm.DEFAULT_CMDLINE .. " quiet nokaslr" }
vm:add_disk { path = image }
assert(vm:start())
assert(vm:wait_boot(180))

local function sh(v, cmd)
  local out, status = v:sh(cmd, 30)
  if status ~= 0 then error(string.format("%q: %s (status %s)", cmd, tostring(out), tostring(status)), 0) end
  return out
end
for c = 0, vcpus - 1 do
  -- renamed into place: a reader never sees the file empty
  sh(vm, string.format("taskset -c %d sh -c 'i=0; while :; do i=$((i+1)); echo $i > /run/t.%d; mv /run/t.%d /run/tick.%d; " ..
    "sleep 0.1; done' > /dev/null 2>&1 &", c, c, c, c))
end
sh(vm, string.format("taskset -c %d diskwrite stream /dev/vda 0 8 7 --fsync --every 1 > /run/acked 2> /run/writer.err &",
  vcpus - 1))
vmm.sleep(1)

-- -> {tick.0, tick.1, ..., acks} as numbers
local function progress(v)
  local out = sh(v, "cat /run/tick.*; wc -l < /run/acked")
  local t = {}
  for n in out:gmatch("%d+") do t[#t + 1] = tonumber(n) end
  if #t ~= vcpus + 1 then error("cannot read the tickers and the writer: " .. out, 0) end
  return t
end

local failed = 0
local before = progress(vm)
for r = 1, rounds do
  local t = io.open(TRACE, "w")
  if t then t:close() end -- clears the trace buffer
  local ok, why = pcall(function()
    if stay then
      vmm.sleep(4)
      local now = progress(vm)
      for k = 1, vcpus + 1 do
        if now[k] <= before[k] then error(string.format("counter %d did not advance (%d -> %d)", k, before[k], now[k]), 0) end
      end
      before = now
      return "stayed"
    end
    local out_report
    assert(vm:serve(sock, { backend_transfer = true, timeout = 60, on_migrated = function(rep) out_report = rep end }))
    local child = assert(vmm.background { "/proc/self/exe", "script", "scripts/migrate.lua", sock, "--console", "none",
                                          "--timeout", "60" })
    vmm.wait_until(function() return vm:state() ~= "running" or child:done() end, 90)
    if vm:state() == "running" then error("the migration to a new process failed: " .. child:output(), 0) end
    vmm.wait_until(function() return out_report end, 10)
    vm:close()
    local back, report
    for _ = 1, 50 do
      back, report = vmm.receive { from = sock, backend_transfer = true, timeout = 60 }
      if back then break end
      vmm.sleep(0.2)
    end
    if not back then error("taking the VM back failed: " .. tostring(report), 0) end
    vm = back
    child:wait(30)
    vmm.sleep(1.5)
    if vm:state() ~= "running" then error("the VM is " .. vm:state() .. " after the round trip", 0) end
    local now = progress(vm)
    local deltas = {}
    for k = 1, vcpus + 1 do
      if now[k] <= before[k] then
        error(string.format("%s did not advance (%d -> %d)", k <= vcpus and ("vCPU " .. (k - 1) .. "'s ticker")
          or "the disk writer", before[k], now[k]), 0)
      end
      deltas[#deltas + 1] = "+" .. (now[k] - before[k])
    end
    before = now
    return string.format("freeze %.1f / %.1f ms, ticks %s, acks %s", out_report and out_report.freeze_ms or -1,
      report.freeze_ms, table.concat(deltas, " ", 1, vcpus), deltas[vcpus + 1])
  end)
  if ok then
    print(string.format("%d ok: %s", r, why))
  else
    failed = failed + 1
    print(string.format("%d FAIL: %s", r, tostring(why)))
    local s = shutdowns()
    if s ~= "" then print("   KVM's shutdown exits:\n" .. s) end
    break -- the VM is gone or stuck: the rounds after would say nothing new
  end
end
print(string.format("%d rounds, %d failed", rounds, failed))
vm:close()
os.remove(image)
os.remove(sock)
os.exit(failed == 0 and 0 or 1)
