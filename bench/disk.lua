-- bench/disk.lua — the throughput side of bench/disk (run it through
-- bench/disk, which also runs the migration freeze under write load).
--
-- For each cache mode (--cache, default writeback and none) one raw image
-- of --mib MiB, every block written, is made here, and two contenders use
-- that same file in turn, each booting the same guest
-- (build/images/guest.cpio.gz, the newest /boot/vmlinuz-* or VMM_KERNEL,
-- --vcpus, default 1, 256 MiB) with the image as its only disk, /dev/vda:
--
--   vmm   vm:add_disk{path = IMG, cache = MODE, queues = Q, queue_size = 256}
--   QEMU  -drive file=IMG,format=raw,if=none,id=d0,aio=io_uring,cache=MODE
--         -device virtio-blk-pci,drive=d0,num-queues=Q,queue-size=256
--
-- (Q = --queues, default one per vCPU; with more than one vCPU QEMU's
-- guest boots without acpi=off, see common.qemu_cmdline.) cache = "none"
-- opens the image with O_DIRECT on both sides, which the test host's /tmp
-- (tmpfs, kernel 6.1) refuses: that image lives on an ext4 loop-mounted
-- under /tmp.
--
-- In the guest, `diskwrite bench /dev/vda MODE MIB SECONDS --bs BS --jobs N`
-- (tests/guest/diskwrite.c) does the I/O with O_DIRECT, so every request
-- goes to the device, and prints bytes, requests and seconds:
--
--   seq-read, seq-write     1 MiB requests, one at a time, in order
--   rand-read, rand-write   4 KiB requests at random 4 KiB-aligned offsets,
--                           --jobs threads (default 4) each with one in flight
--
-- Each contender boots once, warms up (one 1 s random read), then does
-- --runs rounds of the four; each figure is the median over the rounds.
local vmm = require "vmm"
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/common.lua")

local opts = { runs = 3, mib = 256, seconds = 4, jobs = 4, queues = nil, vcpus = 1, cache = { "writeback", "none" },
               only = nil, timeout = 300 }
local i = 1
while arg[i] do
  local a, v = arg[i], arg[i + 1]
  local n = math.tointeger(tonumber(v))
  if a == "--runs" then opts.runs = n
  elseif a == "--mib" then opts.mib = n
  elseif a == "--seconds" then opts.seconds = n
  elseif a == "--jobs" then opts.jobs = n
  elseif a == "--queues" then opts.queues = n
  elseif a == "--vcpus" then opts.vcpus = n
  elseif a == "--cache" then opts.cache = common.split_list(v)
  elseif a == "--only" then opts.only = common.split_list(v)
  elseif a == "--timeout" then opts.timeout = tonumber(v)
  else error("bench/disk: unknown argument " .. a) end
  i = i + 2
end
opts.queues = opts.queues or opts.vcpus -- one per vCPU
for _, k in ipairs { "runs", "mib", "seconds", "jobs", "queues", "vcpus", "timeout" } do
  assert(opts[k] and opts[k] > 0, "bench/disk: --" .. k .. " takes a positive number")
end
for _, c in ipairs(opts.cache) do
  assert(c == "writeback" or c == "none" or c == "writethrough",
         "bench/disk: --cache takes writeback, none and/or writethrough, not " .. c)
end

local kernel = os.getenv("VMM_KERNEL") or vmm.default_kernel()
local initrd = os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz"
local cmdline = vmm.DEFAULT_CMDLINE .. " quiet"
local DEV = "/dev/vda"
local unique = string.format("%d-%d", os.time() % 100000, math.random(1, 1e6))

local function log(...) io.stderr:write("bench/disk: ", string.format(...), "\n") end

local TESTS = {
  { key = "seq-read", bs = 1 << 20, jobs = 1, iops = false },
  { key = "seq-write", bs = 1 << 20, jobs = 1, iops = false },
  { key = "rand-read", bs = 4096, jobs = opts.jobs, iops = true },
  { key = "rand-write", bs = 4096, jobs = opts.jobs, iops = true },
}

-- ---- the contenders --------------------------------------------------------
-- start(image, cache) -> a guest {sh = function(cmd, timeout), close =
-- function(), stats = function() -> a line or nil}, booted.

local function start_vmm(image, cache)
  local vm = vmm.vm { name = "bench-disk", memory = "256M", vcpus = opts.vcpus, kernel = kernel,
                      initrd = initrd, cmdline = cmdline, console = "none" }
  local ok, err = pcall(function()
    vm:add_disk { path = image, cache = cache, queues = opts.queues, queue_size = 256 }
    assert(vm:start())
    assert(vm:wait_boot(opts.timeout))
  end)
  if not ok then vm:close(); error(err, 0) end
  return {
    sh = function(cmd, timeout) return vm:sh(cmd, timeout) end,
    close = function() vm:close() end,
    stats = function()
      local d = vm:disks()[1]
      return string.format("%d reads (%d MiB), %d writes (%d MiB), %d flushes, %d errors", d.read_reqs,
        d.read_bytes >> 20, d.write_reqs, d.write_bytes >> 20, d.flush_reqs, d.io_errors)
    end,
  }
end

local function qemu_argv(image, cache)
  return {
    "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", tostring(opts.vcpus),
    "-nographic", "-nodefaults", "-no-reboot", "-serial", "stdio",
    "-kernel", kernel, "-initrd", initrd, "-append", common.qemu_cmdline(cmdline, opts.vcpus),
    "-drive", string.format("file=%s,format=raw,if=none,id=d0,aio=io_uring,cache=%s", image, cache),
    "-device", string.format("virtio-blk-pci,drive=d0,num-queues=%d,queue-size=256", opts.queues),
  }
end

local function start_qemu(image, cache)
  local q = assert(common.qemu_shell(qemu_argv(image, cache)))
  local ok, err = q:wait_ready(opts.timeout)
  if not ok then q:close(); error("the QEMU guest did not boot: " .. err, 0) end
  return { sh = function(cmd, timeout) return q:sh(cmd, timeout) end, close = function() q:close() end }
end

local contenders = {}
for _, cache in ipairs(opts.cache) do
  contenders[#contenders + 1] = { key = "vmm-" .. cache, label = "vmm", cache = cache, start = start_vmm }
  contenders[#contenders + 1] = { key = "qemu-" .. cache, label = "QEMU", cache = cache, start = start_qemu }
end

-- ---- measuring -------------------------------------------------------------

-- Runs cmd in the guest; raises unless it exits 0.
local function guest_sh(g, cmd, timeout)
  local out, status = g.sh(cmd, timeout)
  if status ~= 0 then
    error(string.format("guest: %s: %s", cmd, common.tail(out or status, 300)), 0)
  end
  return out
end

-- One diskwrite bench run -> MiB/s or IOPS.
local function measure(g, t, seconds)
  local cmd = string.format("diskwrite bench %s %s %d %d --bs %d --jobs %d", DEV, t.key, opts.mib,
                            seconds, t.bs, t.jobs)
  local out = guest_sh(g, cmd, seconds + 120)
  local bytes, ops, secs = out:match("bytes=(%d+) ops=(%d+) seconds=([%d.]+)")
  if not bytes then error("guest: " .. cmd .. ": no figures in " .. common.tail(out, 300), 0) end
  bytes, ops, secs = tonumber(bytes), tonumber(ops), tonumber(secs)
  return t.iops and ops / secs or bytes / secs / 2^20
end

-- The images, one per cache mode, made the first time a contender needs
-- one: -> path, or nil and why there is none (asked again: the same answer).
local images, cleanups = {}, {}
local function make_image_for(cache)
  local dir = "/tmp"
  if cache == "none" then
    local fs, why = common.odirect_dir(opts.mib + 64)
    if not fs then error(why, 0) end
    cleanups[#cleanups + 1] = fs.unmount
    dir = fs.dir
  end
  local path = string.format("%s/lvbench-disk-%s-%s.img", dir, cache, unique)
  cleanups[#cleanups + 1] = function() os.remove(path) end
  common.make_image(path, opts.mib)
  return path
end
local function image_for(cache)
  if not images[cache] then
    local ok, res = pcall(make_image_for, cache)
    images[cache] = ok and { path = res } or { why = tostring(res) }
  end
  return images[cache].path, images[cache].why
end

local results = {} -- results[key] = {samples = {test = {...}}, failure = why, label, cache}
for _, c in ipairs(contenders) do
  if common.selected(opts.only, c.key) then
    local r = { samples = {}, label = c.label, cache = c.cache }
    for _, t in ipairs(TESTS) do r.samples[t.key] = {} end
    results[c.key] = r
    local ok, err = pcall(function()
      local image, why = image_for(c.cache)
      if not image then error(why or "no image", 0) end
      log("%s, cache=%s: booting (image %s)", c.label, c.cache, image)
      local g = c.start(image, c.cache)
      local ok2, err2 = pcall(function()
        -- what the guest's driver got: its request queues, cache mode, the
        -- largest request and segment (a 1 MiB read may be split), features
        local q = "/sys/block/vda/queue/"
        log("  guest: %s", guest_sh(g, "echo $(nproc) CPUs, vda: $(ls /sys/block/vda/mq | wc -l) queue\\(s\\), " ..
          "$(cat " .. q .. "write_cache), max $(cat " .. q .. "max_sectors_kb) KiB in $(cat " .. q ..
          "max_segments) segments of $(cat " .. q .. "max_segment_size) bytes, features " ..
          "$(cat /sys/block/vda/device/features)", 30))
        measure(g, TESTS[3], 1) -- warm-up: a 1 s random read
        for run = 1, opts.runs do
          local parts = {}
          for _, t in ipairs(TESTS) do
            local v = measure(g, t, opts.seconds)
            table.insert(r.samples[t.key], v)
            parts[#parts + 1] = string.format("%s %.1f %s", t.key, v, t.iops and "IOPS" or "MiB/s")
          end
          log("  run %d: %s", run, table.concat(parts, ", "))
        end
        if g.stats then log("  vmm's disk0: %s", g.stats()) end
      end)
      g.close()
      if not ok2 then error(err2, 0) end
    end)
    if not ok then
      r.failure = tostring(err):gsub("%s+", " ")
      log("  %s, cache=%s: failed: %s", c.label, c.cache, r.failure)
    end
  end
end
for k = #cleanups, 1, -1 do pcall(cleanups[k]) end

-- ---- the table ---------------------------------------------------------------

local function median(r, t) return r and common.median(r.samples[t.key]) end

print(string.format("\nvirtio-blk on a raw image, O_DIRECT in the guest on %s (%d MiB range), %d s per figure, " ..
                    "median of %d run(s); %d vCPU(s), %d queue(s), %d job(s) for random I/O", DEV, opts.mib,
                    opts.seconds, opts.runs, opts.vcpus, opts.queues, opts.jobs))
print("\n| cache | contender | seq read MiB/s (1 MiB) | seq write MiB/s (1 MiB) | rand read IOPS (4 KiB) | rand write IOPS (4 KiB) |")
print("|---|---|---|---|---|---|")
-- One row of the table: the contender's medians, and why it failed if it did.
local function row(cache, r)
  local cells = {}
  for _, t in ipairs(TESTS) do
    local m = median(r, t)
    cells[#cells + 1] = m and string.format(t.iops and "%.0f" or "%.1f", m) or "-"
  end
  local note = ""
  if r.failure then
    note = (#r.samples[TESTS[1].key] > 0 and " (then failed: " or " n/a (") .. common.tail(r.failure, 200) .. ")"
  end
  print(string.format("| %s | %s%s | %s |", cache, r.label, note, table.concat(cells, " | ")))
end

for _, cache in ipairs(opts.cache) do
  local a, b = results["vmm-" .. cache], results["qemu-" .. cache]
  if a then row(cache, a) end
  if b then row(cache, b) end
  if a and b then
    local cells = {}
    for _, t in ipairs(TESTS) do
      local x, y = median(a, t), median(b, t)
      cells[#cells + 1] = (x and y and y > 0) and string.format("%.2f", x / y) or "-"
    end
    print(string.format("| %s | ratio vmm/QEMU | %s |", cache, table.concat(cells, " | ")))
  end
end
