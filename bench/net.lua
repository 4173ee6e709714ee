-- bench/net.lua — the measuring side of bench/net (run it through bench/net).
--
-- Four contenders boot the same guest (build/images/guest.cpio.gz, the
-- newest /boot/vmlinuz-*, 2 vCPUs, 256 MiB, one queue pair) with
-- luavmm.bench=1, which starts two servers in the guest: port 5001 discards
-- what it receives, port 5002 sends zeros until the peer closes. The host
-- side is a TAP with 10.0.9.1/24, the guest 10.0.9.15/24.
--
--   guest -> host  `busybox nc GUEST 5002 | head -c BYTES | wc -c` on the
--                  host: BYTES / the command's wall time
--   host -> guest  `head -c BYTES /dev/zero | busybox nc GUEST 5001`:
--                  BYTES / wall time; nc ends once the last bytes are in its
--                  socket buffer (a few MiB), so this slightly favours
--                  nobody in particular but is not a receive timestamp
--
-- Every contender runs the same commands; the figure is the median over
-- the completed transfers, with the interquartile range beside it. A
-- transfer that does not finish within --timeout seconds is a stall: it is
-- counted and reported (with the device's counters for vmm), and the
-- transfer is run again, up to --reruns times in a row; the stall counts per
-- contender and direction are printed with the figures. vmm runs in this very process (its userspace datapath shares the
-- event loop with the measuring commands, as it would with any script).
local vmm = require "vmm"
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/common.lua")

local opts = { runs = 3, mib = 64, only = nil, timeout = 300, reruns = 3 }
local i = 1
while arg[i] do
  local a, v = arg[i], arg[i + 1]
  if a == "--runs" then opts.runs = math.tointeger(tonumber(v)); i = i + 2
  elseif a == "--mib" then opts.mib = math.tointeger(tonumber(v)); i = i + 2
  elseif a == "--only" then opts.only = v; i = i + 2
  elseif a == "--timeout" then opts.timeout = tonumber(v); i = i + 2
  elseif a == "--reruns" then opts.reruns = math.tointeger(tonumber(v)); i = i + 2
  else error("bench/net: unknown argument " .. a) end
end
assert(opts.runs and opts.runs > 0 and opts.mib and opts.mib > 0, "bench/net: --runs and --mib take positive numbers")

local IFNAME, HOST_IP, GUEST_IP = "lvbench0", "10.0.9.1", "10.0.9.15"
local MAC = "52:54:00:00:09:15"
local BYTES = opts.mib * 1024 * 1024
local kernel = vmm.default_kernel()
local initrd = "build/images/guest.cpio.gz"
local cmdline = vmm.DEFAULT_CMDLINE .. " quiet luavmm.bench=1 luavmm.ip=" .. GUEST_IP .. "/24"

local current_vm -- the vmm VM being measured, for its counters on failure

local function log(...) io.stderr:write("bench/net: ", string.format(...), "\n") end

local function start_vmm(vhost)
  local vm = vmm.vm { name = "bench", memory = "256M", vcpus = 2, kernel = kernel,
                      initrd = initrd, cmdline = cmdline, console = "none" }
  vm:add_net { ifname = IFNAME, mac = MAC, vhost = vhost }
  common.host_side_up(IFNAME, HOST_IP)
  assert(vm:start())
  assert(vm:wait_boot(240))
  current_vm = vm
  return function() current_vm = nil; vm:close(); vmm.net.delete(IFNAME) end
end

local function start_qemu(vhost)
  local q = assert(vmm.background {
    "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "2",
    "-nographic", "-nodefaults", "-no-reboot", "-serial", "stdio",
    "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
    "-netdev", "tap,id=n0,ifname=" .. IFNAME .. ",script=no,downscript=no,vhost=" .. (vhost and "on" or "off"),
    "-device", "virtio-net-pci,netdev=n0,mac=" .. MAC,
  })
  assert(vmm.wait_until(function() return vmm.net.link(IFNAME) or q:done() end, 60))
  if q:done() then error("QEMU exited: " .. q:output()) end
  common.host_side_up(IFNAME, HOST_IP)
  assert(vmm.wait_until(function() return q:output():find("LUAVMM-GUEST-READY", 1, true) or q:done() end, 240))
  if q:done() then error("QEMU exited: " .. q:output()) end
  return function()
    q:kill(15)
    q:wait(30)
    vmm.wait_until(function() return not vmm.net.link(IFNAME) end, 10)
  end
end


local function counters()
  if not current_vm then return "" end
  -- VMM_BENCH_DEBUG=1: also the guest's state (console tail, interrupts,
  -- TCP counters) whenever counters are printed, to study a stall
  if os.getenv("VMM_BENCH_DEBUG") then
    local con = current_vm:console_peek()
    io.stderr:write("state ", current_vm:state(), " console tail: ", con:sub(-3000), "\n")
    for i = 1, #current_vm:nets() do io.stderr:write(current_vm:net_state(i)) end
    io.stderr:write(tostring(current_vm:sh("cat /proc/interrupts | grep -i -e virtio -e CPU; cat /proc/net/softnet_stat; cat /proc/net/snmp | grep -A1 Tcp:; dmesg | grep -A45 -e 'rcu: INFO' -e 'soft lockup' | tail -90", 20)), "\n")
  end
  local parts = {}
  for _, n in ipairs(current_vm:nets()) do
    parts[#parts + 1] = string.format("%s: rx %d pkts (%d dropped), tx %d pkts (%d errors)",
      n.name, n.rx_packets, n.rx_dropped, n.tx_packets, n.tx_errors)
  end
  return " [" .. table.concat(parts, "; ") .. "]"
end

-- -> seconds, output; or nil and why (a timeout: a stall)
local function timed(argv, hold_stdin)
  local t0 = vmm.now()
  local out, status = vmm.command(argv, { timeout = opts.timeout, hold_stdin = hold_stdin })
  local t = vmm.now() - t0
  if not out then return nil, tostring(status) end
  if status ~= 0 then return nil, "exit " .. status .. ": " .. common.tail(out) end
  return t, out
end

-- -> bytes/s, or nil and why
local function guest_to_host()
  -- nc stops at the end of its input: hold it open
  local t, out = timed({ "sh", "-c", "busybox nc " .. GUEST_IP .. " 5002 | head -c " .. BYTES .. " | wc -c" }, true)
  if not t then return nil, out end
  if tonumber(out) ~= BYTES then return nil, "received " .. out:gsub("%s", "") .. " bytes, wanted " .. BYTES end
  return BYTES / t
end

local function host_to_guest()
  local t, err = timed({ "sh", "-c", "head -c " .. BYTES .. " /dev/zero | busybox nc " .. GUEST_IP .. " 5001" })
  if not t then return nil, err end
  return BYTES / t
end

-- What a vmm guest's stall leaves to look at: a VM that stopped (its
-- reason: a guest crash is not a network stall), where its vCPUs are (a
-- spinning or halted guest, or one that waits in KVM_RUN) and the
-- datapath's ring state.
local function stall_state()
  if not current_vm then return "" end
  if current_vm:state() == "stopped" then
    return "\n  the VM stopped: " .. tostring(current_vm:stop_reason())
  end
  local ok, act = pcall(current_vm.activity, current_vm, 1)
  local nets = {}
  for i = 1, #current_vm:nets() do nets[#nets + 1] = tostring(current_vm:net_state(i)) end
  return "\n  " .. tostring(ok and act or ("activity: " .. tostring(act))) .. "\n  " ..
    table.concat(nets, "\n  "):gsub("\n", "\n  ")
end

-- One transfer that completes, rerunning stalled ones (counted in
-- stalls[dir]); nil after opts.reruns stalls in a row (the guest is then
-- rebooted by the caller).
local function transfer(label, dir, fn, stalls)
  for attempt = 0, opts.reruns do
    local rate, why = fn()
    if rate then return rate end
    stalls[dir] = stalls[dir] + 1
    log("%s: %s STALLED (%s), attempt %d of %d%s%s", label, dir, why, attempt + 1, opts.reruns + 1, counters(),
        attempt == 0 and stall_state() or "")
    vmm.sleep(1)
  end
  log("%s: %s: %d stalls in a row: rebooting the guest", label, dir, opts.reruns + 1)
  return nil
end

-- quartile q (0..1) of xs, by linear interpolation
local function quantile(xs, q)
  local s = {}
  for k, x in ipairs(xs) do s[k] = x end
  table.sort(s)
  if #s == 0 then return nil end
  local pos = 1 + (#s - 1) * q
  local lo = math.floor(pos)
  local hi = math.min(lo + 1, #s)
  return s[lo] + (s[hi] - s[lo]) * (pos - lo)
end

local contenders = {
  { key = "vmm-tap", label = "vmm  TAP, userspace datapath", start = function() return start_vmm(false) end },
  { key = "vmm-vhost", label = "vmm  vhost-net", start = function() return start_vmm(true) end },
  { key = "qemu-tap", label = "QEMU tap, vhost=off", start = function() return start_qemu(false) end },
  { key = "qemu-vhost", label = "QEMU tap, vhost=on", start = function() return start_qemu(true) end },
}

local results = {}
for _, c in ipairs(contenders) do
  if common.selected(common.split_list(opts.only), c.key) then
    log("%s: booting", c.label)
    local stop = c.start()
    local ok, err = pcall(function()
      common.wait_ping(GUEST_IP)
      local g2h, h2g, stalls = {}, {}, { g2h = 0, h2g = 0, reboots = 0 }
      results[c.key] = { g2h = g2h, h2g = h2g, stalls = stalls, label = c.label }
      guest_to_host() -- warm-up, not counted
      log("%s: warmed up%s", c.label, counters())
      local r = 0
      while r < opts.runs do
        local a = transfer(c.label, "g2h", guest_to_host, stalls)
        local b = a and transfer(c.label, "h2g", host_to_guest, stalls)
        if a and b then
          r = r + 1
          g2h[r], h2g[r] = a, b
          log("%s: run %d: guest->host %.1f MiB/s, host->guest %.1f MiB/s", c.label, r, a / 2^20, b / 2^20)
        else
          stalls.reboots = stalls.reboots + 1
          if stalls.reboots > 3 then error("more than 3 reboots") end
          stop()
          stop = c.start()
          common.wait_ping(GUEST_IP)
        end
      end
    end)
    stop()
    if not ok then log("%s: failed: %s", c.label, tostring(err)) end
  end
end

local function fig(xs)
  if #xs == 0 then return "n/a" end
  return string.format("%.1f [%.1f-%.1f]", common.median(xs) / 2^20, quantile(xs, 0.25) / 2^20, quantile(xs, 0.75) / 2^20)
end
print(string.format("virtio-net throughput, %d MiB per transfer, %d runs per contender and direction, timeout %g s:",
  opts.mib, opts.runs, opts.timeout))
print("median [interquartile range] in MiB/s over the completed transfers; stalls: transfers that timed out (rerun)")
print(string.format("  %-30s %22s %22s %6s %8s %10s %8s", "contender", "guest->host", "host->guest", "done", "stalls",
  "(g2h/h2g)", "reboots"))
for _, c in ipairs(contenders) do
  local r = results[c.key]
  if r then
    print(string.format("  %-30s %22s %22s %6d %8d %10s %8d", r.label, fig(r.g2h), fig(r.h2g), #r.g2h + #r.h2g,
      r.stalls.g2h + r.stalls.h2g, r.stalls.g2h .. "/" .. r.stalls.h2g, r.stalls.reboots))
  end
end
for _, pair in ipairs { { "vmm-tap", "qemu-tap" }, { "vmm-vhost", "qemu-vhost" } } do
  local a, b = results[pair[1]], results[pair[2]]
  if a and b and #a.g2h > 0 and #b.g2h > 0 and #a.h2g > 0 and #b.h2g > 0 then
    print(string.format("  ratio of medians %-24s %10.2f %10.2f", pair[1] .. "/" .. pair[2],
      common.median(a.g2h) / common.median(b.g2h), common.median(a.h2g) / common.median(b.h2g)))
  end
end
