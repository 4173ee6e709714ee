-- bench/migrate.lua — the measuring side of bench/migrate (run it through
-- bench/migrate).
--
-- Every contender boots the same guest (build/images/guest.cpio.gz, the
-- newest /boot/vmlinuz-* or VMM_KERNEL, --vcpus (2), --mem MiB, one virtio-net
-- device with MAC 52:54:00:00:09:16, guest 10.0.9.15/24) behind the host
-- TAP lvmig0 (10.0.9.1/24) and moves it once or twice to another process
-- on this host while `ping -D -i 0.005 GUEST` runs on the host.
--
--   vmm   The VM runs in this process and serves a control socket
--         (vm:serve); a child `vmm script scripts/migrate.lua SOCK` takes
--         it (the VMM upgrade) and prints "freeze N ms"; then this process
--         takes it back with vmm.receive{from = SOCK} (report.freeze_ms):
--         two freeze samples per boot. Four cases: the TAP (userspace
--         datapath) or vhost-net backend, each with the backend (TAP fds)
--         transferred or with a new TAP (lvmig0-b, then lvmig0 again) and
--         the host network switched over by the target (old link down,
--         addresses and MAC moved, new link up).
--   QEMU  qemu-system-x86_64 -accel kvm with its guest RAM in a shared file
--         (memory-backend-file, share=on, in /dev/shm), a target QEMU on the
--         same file with a new TAP lvmig0-b (-incoming defer), capability
--         x-ignore-shared on both sides (RAM is not copied), `migrate` over
--         a UNIX socket, all through QMP (an inline python3 client). When
--         the source reports "completed" this script switches the host
--         network over to the new TAP the same way (vmm.net, netlink).
--         Its freeze: the source's STOP event to the target's RESUME event
--         (QMP timestamps, the same clock), and QEMU's own "downtime" from
--         query-migrate (source side: stop to the end of the stream).
--
-- Ping gap: a fresh `ping -D -n -i 0.005` per migration, started 20
-- replies before it and stopped 100 replies after it ended; the gap is the
-- longest interval between consecutive replies' -D timestamps, "lost" the
-- icmp_seq numbers missing between the first and the last reply.
--
-- --disk: every contender also gets a data disk, the same raw image file
-- (DISK_MIB MiB, cache --disk-cache, default writeback; "none" puts it on an
-- ext4 loop-mounted under /tmp, for O_DIRECT), /dev/vda in the guest, and
-- before the first migration the guest starts a writer on it (`diskwrite
-- stream`: 4 KiB blocks in order, each O_DIRECT|O_DSYNC, so a write and a
-- flush always in flight): the freeze is measured under write load. vmm's
-- image goes over with the TAP ("transferred") or is reopened by path by
-- the target ("new TAP" rows); QEMU's target opens the same file with the
-- same -drive (QEMU hands its image lock over itself). The writer's
-- progress through the migrations is logged.
--
-- --vhost-user-disk: instead, every contender's data disk (/dev/vda) is a
-- qemu-storage-daemon export (tests/lib/qsd.lua, a fresh daemon per run)
-- of one raw image (DISK_MIB MiB), and the guest's writer (the same stream,
-- with an acknowledgement and its CLOCK_MONOTONIC ms after every block:
-- diskwrite --every 1 --timestamps) runs from before the first migration
-- on. Three contenders: vmm with the live vhost-user connection handed to
-- the new process ("transferred", the disk's backend_transfer = true) or
-- with the target connecting anew ("reconnect", the disk's backend_transfer
-- = false), both with the TAP transferred, so that only the disk differs;
-- and QEMU with -device vhost-user-blk-pci on the shared-file guest RAM
-- above (vhost-user needs guest RAM in a file the daemon can map). QEMU's
-- target connects to its chardev when it starts, before the migration,
-- while the source still holds the daemon's one connection: it gets a
-- second daemon on the same image (see qemu_once). Besides the freeze:
-- the I/O stall, the longest gap between consecutive acknowledgements
-- (guest clock) ending in the window of a migration (host times mapped to
-- the guest's clock: see guest_clock), and the writer's median interval.
local vmm = require "vmm"
local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."
local common = dofile(here .. "/common.lua")
local qsd = dofile(here .. "/../tests/lib/qsd.lua")

local opts = { runs = 1, mem = { 256, 2048 }, only = nil, timeout = 300, vcpus = 2, disk = false,
               disk_cache = "writeback", vhost_user_disk = false }
local i = 1
while arg[i] do
  local a, v = arg[i], arg[i + 1]
  if a == "--runs" then opts.runs = math.tointeger(tonumber(v)); i = i + 2
  elseif a == "--mem" then
    opts.mem = {}
    for m in tostring(v):gmatch("[^,]+") do opts.mem[#opts.mem + 1] = math.tointeger(tonumber(m)) or false end
    i = i + 2
  elseif a == "--only" then opts.only = common.split_list(v); i = i + 2
  elseif a == "--vcpus" then opts.vcpus = math.tointeger(tonumber(v)); i = i + 2
  elseif a == "--disk" then opts.disk = true; i = i + 1
  elseif a == "--disk-cache" then opts.disk_cache = v; i = i + 2
  elseif a == "--vhost-user-disk" then opts.vhost_user_disk = true; i = i + 1
  elseif a == "--timeout" then opts.timeout = tonumber(v); i = i + 2
  else error("bench/migrate: unknown argument " .. a) end
end
assert(opts.runs and opts.runs > 0, "bench/migrate: --runs takes a positive number")
assert(opts.timeout and opts.timeout > 0, "bench/migrate: --timeout takes seconds")
assert(opts.vcpus and opts.vcpus > 0, "bench/migrate: --vcpus takes a positive number")
assert(#opts.mem > 0, "bench/migrate: --mem takes a list of MiB like 256,2048")
for _, m in ipairs(opts.mem) do assert(m and m >= 64, "bench/migrate: --mem takes a list of MiB (>= 64) like 256,2048") end
assert(opts.disk_cache == "writeback" or opts.disk_cache == "none" or opts.disk_cache == "writethrough",
       "bench/migrate: --disk-cache takes writeback, writethrough or none")
assert(not (opts.disk and opts.vhost_user_disk), "bench/migrate: --disk and --vhost-user-disk exclude each other")

local IFNAME = "lvmig0"
-- the target's TAP when the backend does not come over (vmm's own rule)
local migrate = require "vmm.migrate"
local NEW_IFNAME = migrate.replacement_ifname(IFNAME)
local HOST_IP, GUEST_IP = "10.0.9.1", "10.0.9.15"
local MAC = "52:54:00:00:09:16"
local kernel = os.getenv("VMM_KERNEL") or vmm.default_kernel()
local initrd = os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz"
local cmdline = vmm.DEFAULT_CMDLINE .. " quiet luavmm.ip=" .. GUEST_IP .. "/24"
local PING_BEFORE, PING_AFTER = 20, 100 -- replies before a migration, after it
local DISK_MIB = 64                      -- --disk, --vhost-user-disk: the image's size
-- --disk: the guest's writer, 4 KiB blocks over the first 16 MiB, acks in /run/acked
local WRITER = "diskwrite stream /dev/vda 0 16 7 --every 64 > /run/acked 2> /run/writer.err &"
-- --vhost-user-disk: the same with a timestamped ack after every block
-- ("acked GEN BLOCK MS", the guest's CLOCK_MONOTONIC), for the I/O stall
local VU_WRITER = "diskwrite stream /dev/vda 0 16 7 --every 1 --timestamps > /run/acked 2> /run/writer.err &"
-- --vhost-user-disk: seconds of writer and ping alone at each end of a
-- migration's window (so that an error of up to half a second in mapping
-- host times to the guest's clock moves no stall out of its window), and
-- the length of the window without a migration (the writer's own gaps)
local VU_SETTLE, VU_IDLE = 1, 3
local RESUME_WAIT = 60                   -- seconds for replies to come back
local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end
local PYTHON = exists("/usr/bin/python3") and "/usr/bin/python3" or "python3"
local SHM = exists("/dev/shm/.") and "/dev/shm" or "/tmp" -- the shared guest RAM file for QEMU
local unique = string.format("%d-%d", os.time() % 100000, math.random(1, 1e6))

local function log(...) io.stderr:write("bench/migrate: ", string.format(...), "\n") end
local DEBUG = os.getenv("VMM_BENCH_DEBUG") ~= nil
-- The steps of a vmm freeze, as scripts/migrate.lua prints them (ms since
-- the source paused): the state has arrived at the target, it has loaded
-- the state, has the source's commit, runs the vCPUs.
local PHASES = { "state in", "loaded", "committed", "running" }
local function dbg(...) if DEBUG then log(...) end end

local tail = common.tail

local function read_file(path, from)
  local f = io.open(path, "rb")
  if not f then return "" end
  if from then f:seek("set", from) end
  local s = f:read("a") or ""
  f:close()
  return s
end

-- The host's free memory and this process's size and open fds, logged
-- before every run (a leak across runs shows there).
local function resources()
  local avail = read_file("/proc/meminfo"):match("MemAvailable:%s*(%d+)")
  local status = read_file("/proc/self/status")
  local fds = require("vmm.core").list_dir("/proc/self/fd") or {}
  return string.format("host MemAvailable %d MiB; this process: VmRSS %d MiB, VmSize %d MiB, %d fds",
    (tonumber(avail) or 0) // 1024, (tonumber(status:match("VmRSS:%s*(%d+)")) or 0) // 1024,
    (tonumber(status:match("VmSize:%s*(%d+)")) or 0) // 1024, #fds)
end

-- ---- host network ----------------------------------------------------------

local function delete_links()
  for _, name in ipairs { IFNAME, NEW_IFNAME } do
    if vmm.net.exists(name) then vmm.net.delete(name) end
  end
end

-- ---- ping ------------------------------------------------------------------

-- Gap, lost and reply count from `ping -D -n` output. icmp_seq is 16 bits:
-- unwrapped when it goes back by more than half the range.
local function ping_stats(text)
  local seen, n, first, last = {}, 0, nil, nil
  local prev_t, prev_seq, base, gap = nil, nil, 0, 0
  for line in text:gmatch("[^\n]+") do
    local ts, seq = line:match("^%[(%d+%.%d+)%].- bytes from .-icmp_seq=(%d+)")
    if ts and not line:find("DUP!", 1, true) then
      ts, seq = tonumber(ts), tonumber(seq)
      if prev_seq then
        while seq + base < prev_seq - 32768 do base = base + 65536 end
      end
      seq = seq + base
      prev_seq = seq
      if prev_t and ts - prev_t > gap then gap = ts - prev_t end
      prev_t = ts
      if not seen[seq] then
        seen[seq] = true
        n = n + 1
        if not first or seq < first then first = seq end
        if not last or seq > last then last = seq end
      end
    end
  end
  return { replies = n, gap_ms = gap * 1000, lost = first and (last - first + 1 - n) or 0 }
end

local Ping = {}
Ping.__index = Ping

-- Starts a fast ping into a file and waits for PING_BEFORE replies.
local function ping_start()
  local path = os.tmpname()
  local cmd = assert(vmm.background({ "stdbuf", "-oL", "ping", "-D", "-n", "-i", "0.005", GUEST_IP },
                                    { stdout = path }))
  local p = setmetatable({ cmd = cmd, path = path, offset = 0, count = 0 }, Ping)
  if not p:wait_replies(PING_BEFORE, 30) then
    p:stop()
    error("ping: fewer than " .. PING_BEFORE .. " replies in 30 s: " .. tail(read_file(path)))
  end
  return p
end

-- The replies so far (reads only what was added since the last call).
function Ping:replies()
  local new = read_file(self.path, self.offset)
  local complete = new:match("^.*\n") or ""
  self.offset = self.offset + #complete
  for _ in complete:gmatch(" bytes from ") do self.count = self.count + 1 end
  return self.count
end

function Ping:wait_replies(n, timeout)
  local deadline = vmm.now() + timeout
  while true do
    if self:replies() >= n then return true end
    if self.cmd:done() or vmm.now() >= deadline then return false end
    vmm.sleep(0.05)
  end
end

function Ping:stop()
  if self.stopped then return end
  self.stopped = true
  self.cmd:kill(2)
  if not self.cmd:wait(5) then self.cmd:kill(9); self.cmd:wait(5) end
end

-- Once the migration is over: waits for PING_AFTER more replies (at most
-- RESUME_WAIT s), stops ping and returns its figures; gap_ms is nil when
-- the replies did not come back.
function Ping:finish()
  local resumed = self:wait_replies(self:replies() + PING_AFTER, RESUME_WAIT)
  self:stop()
  local st = ping_stats(read_file(self.path))
  os.remove(self.path)
  -- its stderr: sends that failed (no route while the links switch, ...)
  local errors = self.cmd:output() or ""
  local _, n = errors:gsub("\n", "")
  if n > 0 then log("  ping: %d error line(s), e.g. %s", n, errors:match("[^\n]+")) end
  if not resumed then
    log("ping: the guest stopped answering (%d replies in all)", st.replies)
    st.gap_ms = nil
  end
  return st
end

-- ---- disk (--disk) ---------------------------------------------------------

local DISK -- {image = path} with --disk; made before the first run
local VU   -- {image = path} with --vhost-user-disk; made before the first run

-- Starts the guest's writer through sh (a vm:sh-like function) and waits
-- for its first acknowledgement -> its last "acked GEN BLOCK" line.
local function start_writer(sh)
  local out, status = sh(VU and VU_WRITER or WRITER)
  if status ~= 0 then error("cannot start the guest's writer: " .. tail(out or status), 0) end
  local last
  vmm.wait_until(function()
    last = (sh("tail -n 1 /run/acked") or ""):match("acked %d+ %d+")
    return last
  end, 60)
  if not last then error("the guest's writer acknowledged nothing: " .. tail(sh("cat /run/writer.err")), 0) end
  return last
end

-- After the migrations: how far the writer got since `before`.
local function writer_progress(sh, before)
  local now = (sh("tail -n 1 /run/acked") or ""):match("acked %d+ %d+")
  if not now or now == before then
    return "no progress since " .. before .. " (" .. tail(sh("cat /run/writer.err"), 200) .. ")"
  end
  return before .. " -> " .. now
end

-- ---- the I/O stall (--vhost-user-disk) -------------------------------------
--
-- The writer stamps each acknowledgement with the guest's CLOCK_MONOTONIC.
-- That clock may stand still through part of a freeze (the VMM restores
-- the guest's kvmclock as it was at the freeze), so a gap on it can be
-- shorter than the wall-clock time the guest waited. The bench puts the
-- stamps on this host's CLOCK_MONOTONIC instead, to the millisecond:
--   - the writer's first stderr line gives the guest's CLOCK_MONOTONIC and
--     CLOCK_REALTIME at one instant (their difference is fixed: nothing
--     sets the guest's time);
--   - ICMP timestamp requests (icmp_clock) give the guest's CLOCK_REALTIME
--     against this host's CLOCK_MONOTONIC, before and after each migration;
--     what the difference changed by is the time the guest's clock lost in
--     that migration;
--   - the gap that spans the resume (the target's vCPUs start: the
--     source's freeze time plus the freeze, both on this clock; QEMU's
--     RESUME event) is longer by that much, the others are as stamped.

-- ICMP timestamp requests (type 13) to the guest, whose kernel answers
-- with its time of day in ms (RFC 792), from a raw socket (root); the best
-- of 7 probes by round trip, each taken as answered halfway. Prints
-- "ICMPTS offset=MS rtt=MS", offset the guest's CLOCK_REALTIME minus this
-- host's CLOCK_MONOTONIC, or "ICMPTS none". argv: the guest's address.
local ICMP_TIMESTAMP = [[
import socket, struct, sys, time

def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff

sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.settimeout(1)
best = None
for seq in range(1, 8):
    body = struct.pack("!III", 0, 0, 0)
    pkt = struct.pack("!BBHHH", 13, 0, checksum(struct.pack("!BBHHH", 13, 0, 0, 0x4c56, seq) + body), 0x4c56, seq) + body
    t0, m0 = time.time(), time.monotonic()
    sock.sendto(pkt, (sys.argv[1], 0))
    reply = None
    while reply is None:
        try:
            data = sock.recv(1024)
        except socket.timeout:
            break
        t1, m1 = time.time(), time.monotonic()
        ihl = (data[0] & 15) * 4
        kind, _, _, ident, sq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if kind == 14 and ident == 0x4c56 and sq == seq:
            reply = struct.unpack("!III", data[ihl + 8:ihl + 20])[1]  # the guest's receive time
    if reply is not None and not reply & 0x80000000:
        rt = (t0 + t1) / 2 * 1000
        day = (reply - rt % 86400000 + 43200000) % 86400000 - 43200000  # guest minus host, within a day
        off = rt + day - (m0 + m1) / 2 * 1000
        if best is None or m1 - m0 < best[1]:
            best = (off, m1 - m0)
    time.sleep(0.02)
print("ICMPTS offset=%.1f rtt=%.2f" % (best[0], best[1] * 1000) if best else "ICMPTS none", flush=True)
]]

-- -> {offset = ms (the guest's CLOCK_REALTIME minus vmm.now()'s clock), rtt = ms}
local function icmp_clock()
  local out = vmm.command({ PYTHON, "-c", ICMP_TIMESTAMP, GUEST_IP }, { timeout = 30 }) or ""
  local offset, rtt = tostring(out):match("ICMPTS offset=([%d.%-]+) rtt=([%d.]+)")
  if not offset then error("the guest answered no ICMP timestamp request: " .. tail(out, 200), 0) end
  return { offset = tonumber(offset), rtt = tonumber(rtt) }
end

-- The guest's CLOCK_REALTIME minus its CLOCK_MONOTONIC, ms (the writer's
-- "clocks" line), through sh
local function guest_clocks(sh)
  local out = sh("cat /run/writer.err") or ""
  local mono, real = tostring(out):match("clocks: monotonic ([%d.]+) ms, realtime ([%d.]+) ms")
  if not mono then error("the writer gave no clocks line: " .. tail(out, 200), 0) end
  return tonumber(real) - tonumber(mono)
end

-- A host time (vmm.now()) on the guest's CLOCK_MONOTONIC, in ms, with
-- icmp (icmp_clock) and rt_mono (guest_clocks)
local function on_guest(h, icmp, rt_mono) return h * 1000 + icmp.offset - rt_mono end

-- The writer's acknowledgements in one window -> {acks, median, max,
-- guest_max, span, at}: the gaps between consecutive "acked GEN BLOCK MS"
-- lines of /run/acked that end in (lo, hi] (guest ms); the one spanning
-- the guest instant resume (ms, or nil) made longer by lost (ms); their
-- median (the writer's pace), the longest (the stall), the longest as
-- stamped, the spanning one as stamped and when the longest ended (guest
-- ms). Computed in the guest (busybox awk and sort): one line comes back.
local function ack_gaps(sh, lo, hi, resume, lost)
  local out, err = sh(string.format("awk -v lo=%.3f -v hi=%.3f -v r=%.3f -v lost=%.3f 'NF >= 4 { t = $4 + 0; " ..
    "if (n++ && t > lo && t <= hi) { g = t - p; if (r > 0 && p < r && t >= r) { print \"span\", g; g += lost }; " ..
    "print g, t, t - p }; p = t }' /run/acked | sort -n | " ..
    "awk '$1 == \"span\" { span = $2; next } { g[++n] = $1; at = $2; if ($3 > raw) raw = $3 } END { " ..
    "printf \"gaps %%d %%.3f %%.3f %%.3f %%.3f %%.3f\\n\", n, n ? g[int((n + 1) / 2)] : 0, n ? g[n] : 0, raw, " ..
    "span, n ? at : 0 }'", lo, hi, resume or 0, lost or 0))
  local n, median, max, raw, span, at = tostring(out):match("gaps (%d+) ([%d.]+) ([%d.]+) ([%d.]+) ([%d.]+) ([%d.]+)")
  if not n then error("cannot read the writer's acknowledgements: " .. tail(out) .. " " .. tail(err), 0) end
  if tonumber(n) == 0 then
    error(string.format("the writer acknowledged nothing between %.1f and %.1f s (guest clock): %s", lo / 1000,
                        hi / 1000, tail(sh("tail -n 2 /run/acked; cat /run/writer.err"), 200)), 0)
  end
  return { acks = tonumber(n), median = tonumber(median), max = tonumber(max), guest_max = tonumber(raw),
           span = tonumber(span), at = tonumber(at) }
end

-- --vhost-user-disk: the writer and a ping as during a migration, without
-- one, for VU_IDLE s -> the window {name = "idle", from, to}
local function idle_window()
  local ping = ping_start()
  vmm.sleep(VU_SETTLE)
  local from = vmm.now()
  vmm.sleep(VU_IDLE)
  local w = { name = "idle", from = from, to = vmm.now() }
  ping:finish()
  return w
end

local function settle() if VU then vmm.sleep(VU_SETTLE) end end

-- After the migrations, through sh on the VM's last process. windows:
-- {{name, from, to (host times), before, after (icmp_clock readings
-- around it), resume (host time the target's vCPUs started)}, ...}. Puts
-- into s per window stall_<name> (the longest gap, on this host's clock),
-- guest_stall_<name> (the longest as the guest's clock stamped it),
-- ack_<name> (the median gap) and clock_lost_<name> (ms the guest's clock
-- lost in that migration) -> a line for the log.
local function measure_stalls(sh, rt_mono, windows, s)
  local parts = {}
  for _, w in ipairs(windows) do
    local lost = w.resume and (w.before.offset - w.after.offset) or 0
    local g = ack_gaps(sh, on_guest(w.from, w.before, rt_mono), on_guest(w.to, w.after, rt_mono),
                       w.resume and on_guest(w.resume, w.after, rt_mono), lost)
    s["stall_" .. w.name], s["guest_stall_" .. w.name], s["ack_" .. w.name] = g.max, g.guest_max, g.median
    if w.resume then s["clock_lost_" .. w.name] = lost end
    parts[#parts + 1] = string.format("%s: longest %.1f ms (%.1f on the guest's clock), ending at +%.2f s of %.1f s%s; " ..
      "median %.2f ms over %d acks", w.name, g.max, g.guest_max, (g.at - on_guest(w.from, w.before, rt_mono)) / 1000,
      w.to - w.from, w.resume and string.format(" (resume at +%.2f s, spanned by a gap of %.1f ms stamped, " ..
      "the guest's clock lost %.1f ms +-%.1f)", w.resume - w.from, g.span, lost, (w.before.rtt + w.after.rtt) / 2 + 1) or "",
      g.median, g.acks)
  end
  return table.concat(parts, "; ")
end

-- ---- vmm -------------------------------------------------------------------

-- Runs fn(at_exit) and then, whatever happened, the functions it gave
-- at_exit, last first. Returns fn's result or raises its error.
local function with_cleanup(fn)
  local undo = {}
  local ok, res = pcall(fn, function(f) undo[#undo + 1] = f end)
  for k = #undo, 1, -1 do
    local ok2, err = pcall(undo[k])
    if not ok2 then log("cleanup: %s", tostring(err)) end
  end
  delete_links()
  if not ok then error(res, 0) end
  return res
end

local function vmm_once(c, mib)
  return with_cleanup(function(at_exit)
    local s = {}
    local sock = string.format("/tmp/lvbench-mig-%s.sock", unique)
    local daemon -- --vhost-user-disk: the disk's qemu-storage-daemon, stopped after the VMs are closed
    if VU then
      local why
      daemon, why = qsd.start { image = VU.image, socket = string.format("/tmp/lvbench-vu-%s.sock", unique) }
      if not daemon then error(why, 0) end
      at_exit(function() daemon:stop() end)
    end
    local vm = vmm.vm { name = "bench-mig", memory = mib .. "M", vcpus = opts.vcpus, kernel = kernel,
                        initrd = initrd, cmdline = cmdline, console = "none" }
    at_exit(function() vm:close() end)
    vm:add_net { ifname = IFNAME, mac = MAC, vhost = c.vhost }
    if DISK then vm:add_disk { path = DISK.image, cache = opts.disk_cache, queues = opts.vcpus,
                                     queue_size = 256 } end
    if VU then vm:add_disk { vhost_user = daemon.socket, queues = 1, backend_transfer = c.disk_transfer } end
    common.host_side_up(IFNAME, HOST_IP)
    assert(vm:start())
    assert(vm:wait_boot(opts.timeout))
    local pinged, why = pcall(common.wait_ping, GUEST_IP)
    if not pinged then -- what each side saw, to tell a guest that sends nothing from one that receives nothing
      local n = vm:nets()[1]
      error(string.format("%s (net0: rx %d pkts, %d dropped, tx %d pkts; the guest: %s)", why, n.rx_packets,
        n.rx_dropped, n.tx_packets, tail(vm:sh("ifconfig eth0 | grep -e 'inet ' -e packets", 20), 300)), 0)
    end
    dbg("  booted, ping answered")
    local writer_before = (DISK or VU) and start_writer(function(cmd) return vm:sh(cmd, 60) end)
    if writer_before then dbg("  the guest's writer runs: %s", writer_before) end
    local rt_mono = VU and guest_clocks(function(cmd) return vm:sh(cmd, 60) end)
    local connections0 = daemon and table.concat(daemon:connections(), ",")
    -- --vhost-user-disk: the windows of the I/O stall (measure_stalls)
    local idle, new, back_w
    if VU then
      idle = idle_window()
      idle.before = icmp_clock()
      idle.after = idle.before
      new = { name = "new", before = idle.before }
    end
    local src_report

    -- 1. A new process takes the VM (scripts/migrate.lua).
    assert(vm:serve(sock, { backend_transfer = c.transfer, timeout = opts.timeout,
                            on_migrated = function(r) src_report = r end }))
    local ping = ping_start()
    at_exit(function() ping:stop() end)
    local argv = { "/proc/self/exe", "script", "scripts/migrate.lua", sock, "--console", "none",
                   "--timeout", tostring(opts.timeout) }
    if not c.transfer then argv[#argv + 1] = "--no-transfer" end
    if new then new.from = vmm.now() end
    settle()
    local child = assert(vmm.background(argv))
    at_exit(function() if not child:done() then child:kill(9); child:wait(10) end end)
    dbg("  serving %s, ping running, child %d started", sock, child:pid())
    local freeze = vmm.wait_until(function()
      return child:output():match("freeze ([%d.]+) ms") or (child:done() and "exit")
    end, opts.timeout)
    if not freeze or freeze == "exit" then
      local _, status = child:wait(5)
      error(string.format("the new process did not take the VM (exit status %s): %s", tostring(status),
                          tail(child:output())))
    end
    s.freeze_new = tonumber(freeze)
    local line = child:output():match("took over[^\n]*") or ""
    for _, ph in ipairs(PHASES) do s[ph .. "_new"] = tonumber(line:match(ph .. " ([%d.]+)")) end
    assert(vm:wait("stopped", 30))
    dbg("  the child took the VM")
    local st = ping:finish()
    settle()
    if new then -- the target's vCPUs started at the source's freeze plus the freeze
      new.to = vmm.now()
      new.resume = src_report and src_report.freeze + s.freeze_new / 1000
      new.after = icmp_clock()
      back_w = { name = "back", before = new.after }
    end
    s.gap_new, s.lost_new = st.gap_ms, st.lost
    log("  -> new process: %s", tail(child:output():match("took over[^\n]*"), 200))
    vm:close()

    -- 2. This process takes it back through the socket the child serves.
    assert(vmm.wait_until(function() return child:output():find("serving", 1, true) or child:done() end, 60))
    ping = ping_start()
    dbg("  child serves, ping running, taking the VM back")
    local back, report
    if back_w then back_w.from = vmm.now() end
    settle()
    for _ = 1, 20 do
      back, report = vmm.receive { from = sock, backend_transfer = c.transfer, console = "none",
                                   timeout = opts.timeout }
      if back then break end
      log("  vmm.receive: %s (retrying)", report)
      vmm.sleep(0.2)
    end
    if not back then error("taking the VM back failed: " .. tostring(report)) end
    at_exit(function() back:close() end)
    s.freeze_back = report.freeze_ms
    for ph, t in pairs({ ["state in"] = report.sent, loaded = report.loaded, committed = report.commit,
                         running = report.resumed }) do
      s[ph .. "_back"] = (t - report.freeze) * 1000
    end
    st = ping:finish()
    settle()
    s.gap_back, s.lost_back = st.gap_ms, st.lost
    if back_w then
      back_w.to, back_w.resume = vmm.now(), report.freeze + report.freeze_ms / 1000
      back_w.after = icmp_clock()
      log("  the writer's acks: %s", measure_stalls(function(cmd) return back:sh(cmd, 60) end, rt_mono,
                                                      { idle, new, back_w }, s))
      -- the same connection throughout, or one per migration
      local connections = table.concat(daemon:connections(), ",")
      log("  disk0 %s; the daemon's connection %s (%s -> %s)",
          report.transferred.disk0 and "transferred" or "reconnected",
          connections == connections0 and "kept" or "renewed", connections0, connections)
      if (report.transferred.disk0 == true) ~= c.disk_transfer then
        log("  warning: the vhost-user connection was %s transferred", report.transferred.disk0 and "" or "not")
      end
    end
    log("  -> back here: freeze %.1f ms, net0 %s%s", report.freeze_ms,
        report.transferred.net0 and "TAP transferred" or ("new TAP " .. tostring(report.new_taps.net0)),
        #report.switch_problems > 0 and ("; switch-over: " .. table.concat(report.switch_problems, "; ")) or "")
    if (report.transferred.net0 == true) ~= c.transfer then
      log("  warning: the backend was %s transferred", report.transferred.net0 and "" or "not")
    end
    if DISK or VU then
      log("  disk0 %s; the writer: %s", report.transferred.disk0 and "transferred"
          or ("reopened " .. tostring(report.new_backends.disk0)),
          writer_progress(function(cmd) return back:sh(cmd, 60) end, writer_before))
    end
    dbg("  back here; waiting for the child to exit")
    child:wait(30)
    return s
  end)
end

-- ---- QEMU ------------------------------------------------------------------

-- A QMP client for both QEMUs: sets x-ignore-shared, starts the incoming
-- side and the migration, polls query-migrate, prints "COMPLETED" as soon
-- as the source says so, then waits for the target to run and prints
-- "RESULT downtime=MS total=MS stop_resume=MS" (STOP on the source to
-- RESUME on the target, from the events' timestamps), or "ERROR reason".
-- argv: source QMP socket, target QMP socket, migration URI, timeout s.
local QMP_CLIENT = [[
import json, socket, sys, time

class Qmp:
    def __init__(self, path):
        for attempt in range(50):  # QEMU may not listen yet
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if attempt == 49:
                    raise
                time.sleep(0.1)
        self.rd = self.sock.makefile("r")
        self.events = []
        json.loads(self.rd.readline())  # the greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall((json.dumps(msg) + "\n").encode())
        while True:
            line = self.rd.readline()
            if not line:
                raise RuntimeError("QMP connection closed during " + name)
            reply = json.loads(line)
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(name + ": " + reply["error"].get("desc", "error"))
            else:
                return reply.get("return")

    def event_time(self, name):
        for e in self.events:
            if e["event"] == name:
                t = e["timestamp"]
                return t["seconds"] + t["microseconds"] / 1e6
        return None

def main(src_path, dst_path, uri, timeout):
    deadline = time.time() + float(timeout)
    src = Qmp(src_path)
    dst = Qmp(dst_path)
    caps = [{"capability": "x-ignore-shared", "state": True}]
    try:
        dst.cmd("migrate-set-capabilities", capabilities=caps)
        dst.cmd("migrate-incoming", uri=uri)
    except RuntimeError as e:
        raise RuntimeError("target: " + str(e))
    try:
        src.cmd("migrate-set-capabilities", capabilities=caps)
        src.cmd("migrate", uri=uri)
    except RuntimeError as e:
        raise RuntimeError("source: " + str(e))
    while True:
        info = src.cmd("query-migrate")
        status = info.get("status")
        if status == "completed":
            break
        if status in ("failed", "cancelled"):
            raise RuntimeError("source: migration %s: %s" % (status, info.get("error-desc", "no reason given")))
        if time.time() > deadline:
            raise RuntimeError("source: migration still %s after %s s" % (status, timeout))
        time.sleep(0.002)
    print("COMPLETED", flush=True)
    try:
        while dst.cmd("query-status")["status"] != "running":
            if time.time() > deadline:
                raise RuntimeError("not running %s s after the migration started" % timeout)
            time.sleep(0.002)
        dst.cmd("query-status")  # a RESUME event sent just before comes first
    except RuntimeError as e:
        raise RuntimeError("target: " + str(e))
    stop, resume = src.event_time("STOP"), dst.event_time("RESUME")
    # RESUME's (wall clock) timestamp on CLOCK_MONOTONIC, the bench's clock
    resume_mono = resume - time.time() + time.monotonic() if resume is not None else -1
    print("RESULT downtime=%s total=%s stop_resume=%s resume_mono=%.6f" % (
        info.get("downtime", -1), info.get("total-time", -1),
        "%.1f" % ((resume - stop) * 1000) if stop is not None and resume is not None else -1, resume_mono), flush=True)

try:
    main(*sys.argv[1:5])
except Exception as e:
    print("ERROR %s" % e, flush=True)
    sys.exit(1)
]]

-- vu_socket: --vhost-user-disk, the qemu-storage-daemon export this QEMU uses
local function qemu_argv(mib, vhost, ifname, qmp, ram, incoming, vu_socket)
  -- --disk, --vhost-user-disk: QEMU's guest has as many vCPUs as vmm's
  -- (common.qemu_cmdline); without them, the command line of the figures
  -- in bench/README.md, where QEMU's guest found one of its two
  local append = (DISK or VU) and common.qemu_cmdline(cmdline, opts.vcpus) or cmdline
  local argv = {
    "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", tostring(mib), "-smp", tostring(opts.vcpus),
    "-nographic", "-nodefaults", "-no-reboot", "-serial", "stdio",
    "-object", string.format("memory-backend-file,id=mem,size=%dM,mem-path=%s,share=on", mib, ram),
    "-machine", "memory-backend=mem",
    "-kernel", kernel, "-initrd", initrd, "-append", append,
    "-netdev", "tap,id=n0,ifname=" .. ifname .. ",script=no,downscript=no,vhost=" .. (vhost and "on" or "off"),
    "-device", "virtio-net-pci,netdev=n0,mac=" .. MAC,
    "-qmp", "unix:" .. qmp .. ",server=on,wait=off",
  }
  if DISK then -- both QEMUs on the same image, as in bench/disk.lua
    for _, w in ipairs { "-drive", string.format("file=%s,format=raw,if=none,id=d0,aio=io_uring,cache=%s",
                                                DISK.image, opts.disk_cache),
                         "-device", string.format("virtio-blk-pci,drive=d0,num-queues=%d,queue-size=256", opts.vcpus) } do
      argv[#argv + 1] = w
    end
  end
  if VU then -- guest RAM is already a shared file (above), which the daemon maps
    for _, w in ipairs { "-chardev", "socket,id=vu0,path=" .. vu_socket,
                         "-device", "vhost-user-blk-pci,chardev=vu0,num-queues=1" } do
      argv[#argv + 1] = w
    end
  end
  if incoming then argv[#argv + 1] = "-incoming"; argv[#argv + 1] = "defer" end
  return argv
end

-- -> the QEMU's shell (common.qemu_shell: its serial console), once its
-- TAP exists
local function start_qemu(at_exit, argv, ifname, what)
  local shell = assert(common.qemu_shell(argv))
  at_exit(function() shell:close() end)
  local q = shell.cmd
  vmm.wait_until(function() return vmm.net.exists(ifname) or q:done() end, 60)
  if q:done() or not vmm.net.exists(ifname) then
    error(what .. " QEMU did not start: " .. tail(q:output()))
  end
  return q, shell
end

local function qemu_once(c, mib)
  return with_cleanup(function(at_exit)
    local s = {}
    local ram = string.format("%s/lvbench-mig-%s.ram", SHM, unique)
    local qmp_src, qmp_dst = "/tmp/lvbench-mig-src.qmp", "/tmp/lvbench-mig-dst.qmp"
    local uri = "unix:/tmp/lvbench-mig-qemu.sock"
    for _, f in ipairs { ram, qmp_src, qmp_dst } do os.remove(f) end
    at_exit(function() os.remove(ram) end)
    -- --vhost-user-disk: one daemon per QEMU, both on the same image file.
    -- The target QEMU connects to its chardev as it starts (device
    -- realize), before the migration, while the source still holds its
    -- daemon's one connection (a daemon serves one front end at a time):
    -- so the target gets a second daemon, the second export of the image.
    -- Two daemons writing one raw file would corrupt it; here only one
    -- writes at a time: the source's daemon completes what it took when
    -- the source stops the rings at the freeze (vhost-user GET_VRING_BASE),
    -- and the target's starts only after the migration. Their exports take
    -- no exclusive lock on the image (they share every permission), and
    -- both go through the host page cache, so the second sees what the
    -- first wrote.
    local vu_sockets = {}
    if VU then
      for k, side in ipairs { "src", "dst" } do
        local d, why = qsd.start { image = VU.image, socket = string.format("/tmp/lvbench-vu-%s-%s.sock", side, unique) }
        if not d then error(why, 0) end
        at_exit(function() d:stop() end) -- after the QEMUs (registered later, closed first)
        vu_sockets[k] = d.socket
      end
    end

    local src, src_shell = start_qemu(at_exit, qemu_argv(mib, c.vhost, IFNAME, qmp_src, ram, false, vu_sockets[1]),
                                      IFNAME, "the source")
    common.host_side_up(IFNAME, HOST_IP)
    vmm.wait_until(function() return src:output():find("LUAVMM-GUEST-READY", 1, true) or src:done() end, opts.timeout)
    if not src:output():find("LUAVMM-GUEST-READY", 1, true) then
      error("the source QEMU's guest did not boot: " .. tail(src:output()))
    end
    common.wait_ping(GUEST_IP)
    local writer_before = (DISK or VU) and start_writer(function(cmd) return src_shell:sh(cmd, 60) end)
    local rt_mono = VU and guest_clocks(function(cmd) return src_shell:sh(cmd, 60) end)
    local idle, new -- --vhost-user-disk: the windows of the I/O stall (measure_stalls)
    local ping
    if VU then
      idle = idle_window()
      idle.before = icmp_clock()
      idle.after = idle.before
      -- the window starts before the target QEMU does, as vmm's before its
      -- target process starts
      ping = ping_start()
      new = { name = "new", before = idle.before, from = vmm.now() }
      settle()
    end
    local dst, dst_shell = start_qemu(at_exit, qemu_argv(mib, c.vhost, NEW_IFNAME, qmp_dst, ram, true, vu_sockets[2]),
                                      NEW_IFNAME, "the target")

    -- read before the migration, as vmm.receive does for its own switch-over
    local link, addresses = vmm.net.link(IFNAME), vmm.net.addresses(IFNAME)
    ping = ping or ping_start()
    at_exit(function() ping:stop() end)
    local helper = assert(vmm.background({ PYTHON, "-c", QMP_CLIENT, qmp_src, qmp_dst, uri, tostring(opts.timeout) }))
    at_exit(function() if not helper:done() then helper:kill(9); helper:wait(10) end end)
    vmm.wait_until(function() return helper:output():find("COMPLETED", 1, true) or helper:done() end, opts.timeout + 30)
    if helper:output():find("COMPLETED", 1, true) then
      local problems = migrate.switch_network { old = IFNAME, new = NEW_IFNAME, addresses = addresses,
                                                mac = link and link.mac }
      if #problems > 0 then log("  switch-over: %s", table.concat(problems, "; ")) end
    end
    helper:wait(opts.timeout + 30)
    local out = helper:output()
    local result = out:match("RESULT ([^\n]*)")
    if not result then
      local why = out:match("ERROR ([^\n]*)") or ("the QMP client said: " .. tail(out, 200))
      local dst_said = tail(dst:output(), 300)
      error(why .. (dst_said ~= "" and (" [target QEMU: " .. dst_said .. "]") or ""))
    end
    for k, v in result:gmatch("([%w_]+)=([%d.%-]+)") do
      v = tonumber(v)
      if v and v >= 0 then s[k] = v end
    end
    s.freeze_new = s.stop_resume
    local st = ping:finish()
    settle()
    s.gap_new, s.lost_new = st.gap_ms, st.lost
    log("  -> target QEMU: %s", result)
    if new then -- RESUME on the target, its QMP timestamp on this clock
      new.to, new.resume, new.after = vmm.now(), s.resume_mono, icmp_clock()
      log("  the writer's acks: %s", measure_stalls(function(cmd) return dst_shell:sh(cmd, 60) end, rt_mono,
                                                      { idle, new }, s))
    end
    if DISK or VU then
      log("  the writer: %s", writer_progress(function(cmd) return dst_shell:sh(cmd, 60) end, writer_before))
    end
    return s
  end)
end

-- ---- the runs --------------------------------------------------------------

local cases = {
  { key = "vmm-tap-transfer", vmm = true, vhost = false, transfer = true },
  { key = "vmm-tap-newtap", vmm = true, vhost = false, transfer = false },
  { key = "vmm-vhost-transfer", vmm = true, vhost = true, transfer = true },
  { key = "vmm-vhost-newtap", vmm = true, vhost = true, transfer = false },
  { key = "qemu-tap", vmm = false, vhost = false, transfer = false },
  { key = "qemu-vhost", vmm = false, vhost = true, transfer = false },
}
for _, c in ipairs(cases) do
  c.label = c.vmm and ("vmm " .. (c.vhost and "vhost-net" or "TAP (userspace)"))
    or ("QEMU tap, vhost=" .. (c.vhost and "on" or "off"))
  c.network = c.transfer and "TAP transferred" or "new TAP, switched over"
  if opts.disk then
    c.network = c.transfer and "TAP and image transferred" or "new TAP, image reopened"
  end
  c.qemu = c.vhost and "qemu-vhost" or "qemu-tap" -- the QEMU row vmm's is compared with
end
-- --vhost-user-disk: its own three contenders, the TAP backend (userspace)
-- for all, transferred for vmm's two; only the disk's connection differs
if opts.vhost_user_disk then
  cases = {
    { key = "vmm-vu-transfer", vmm = true, vhost = false, transfer = true, disk_transfer = true,
      label = "vmm vhost-user transferred", network = "TAP transferred",
      disk = "live connection handed over" },
    { key = "vmm-vu-reconnect", vmm = true, vhost = false, transfer = true, disk_transfer = false,
      label = "vmm vhost-user reconnect", network = "TAP transferred",
      disk = "source hangs up, target connects" },
    { key = "qemu-vu", vmm = false, vhost = false, transfer = false,
      label = "QEMU vhost-user-blk-pci", network = "new TAP, switched over",
      disk = "target on a second daemon" },
  }
  for _, c in ipairs(cases) do c.qemu = "qemu-vu" end
end

local FIELDS = { "freeze_new", "freeze_back", "gap_new", "gap_back", "lost_new", "lost_back", "downtime",
                 "stall_new", "stall_back", "ack_new", "ack_back", "stall_idle", "ack_idle",
                 "guest_stall_new", "guest_stall_back", "clock_lost_new", "clock_lost_back" }
for _, ph in ipairs(PHASES) do FIELDS[#FIELDS + 1] = ph .. "_new"; FIELDS[#FIELDS + 1] = ph .. "_back" end
local results = {} -- results[key][mib] = {samples = {field = {...}}, failures = {...}, runs}

local have_qemu = select(2, vmm.command({ "sh", "-c", "command -v qemu-system-x86_64" })) == 0

-- VMM_BENCH_DEBUG=1: steps are logged, and every minute the processes
-- and the kernel stacks of vmm and ping are written to this process's
-- stderr by a separate process (a hang in a syscall shows there).
local watchdog
if DEBUG then
  local pid = read_file("/proc/self/stat"):match("^(%d+)")
  watchdog = vmm.background({ "sh", "-c", "while sleep 60; do { echo '== watchdog'; " ..
    "ps -eo pid,ppid,stat,wchan:32,etime,args | grep -v ' \\[' | cut -c1-200; " ..
    "for p in $(pgrep -f 'vmm|ping'); do echo \"-- $p syscall $(cat /proc/$p/syscall)\"; " ..
    "cat /proc/$p/stack; done; } >/proc/" .. pid .. "/fd/2 2>&1; done" })
end

delete_links()
local disk_cleanup = function() end
if opts.disk then
  local fs = { dir = "/tmp", unmount = function() end }
  if opts.disk_cache == "none" then
    local why
    fs, why = common.odirect_dir(DISK_MIB + 32)
    if not fs then error("bench/migrate: --disk-cache none: " .. why) end
  end
  DISK = { image = string.format("%s/lvbench-mig-%s.img", fs.dir, unique) }
  disk_cleanup = function() os.remove(DISK.image); fs.unmount() end
  common.make_image(DISK.image, DISK_MIB)
end
if opts.vhost_user_disk then
  local ok, why = qsd.available()
  if not ok then error("bench/migrate: --vhost-user-disk: " .. why) end
  VU = { image = string.format("/tmp/lvbench-vu-%s.img", unique) }
  disk_cleanup = function() os.remove(VU.image) end
  common.make_image(VU.image, DISK_MIB)
end
for _, mib in ipairs(opts.mem) do
  for _, c in ipairs(cases) do
    if common.selected(opts.only, c.key) then
      local r = { samples = {}, failures = {}, runs = 0 }
      for _, f in ipairs(FIELDS) do r.samples[f] = {} end
      results[c.key] = results[c.key] or {}
      results[c.key][mib] = r
      for run = 1, opts.runs do
        log("%s, %s, %d MiB: run %d of %d (%s)", c.label, c.network, mib, run, opts.runs, resources())
        local ok, s
        if not c.vmm and not have_qemu then
          ok, s = false, "qemu-system-x86_64 not installed"
        else
          ok, s = pcall(c.vmm and vmm_once or qemu_once, c, mib)
        end
        r.runs = r.runs + 1
        if ok then
          for _, f in ipairs(FIELDS) do
            if s[f] then table.insert(r.samples[f], s[f]) end
          end
          local function n(x) return x and string.format("%.1f", x) or "-" end
          log("  freeze %s / %s ms, ping gap %s / %s ms, lost %s / %s (-> new / -> back)", n(s.freeze_new),
              n(s.freeze_back), n(s.gap_new), n(s.gap_back), tostring(s.lost_new or "-"), tostring(s.lost_back or "-"))
        else
          local why = tostring(s):gsub("%s+", " ")
          r.failures[#r.failures + 1] = why
          log("  failed: %s", why)
        end
      end
    end
  end
end

-- ---- the table ---------------------------------------------------------------

local function fmt(xs, digits)
  local m = common.median(xs)
  if not m then return nil end
  return string.format("%." .. (digits or 1) .. "f", m)
end

local function cell(r, f, digits)
  return fmt(r.samples[f], digits) or "-"
end

-- A row's "freeze -> new": QEMU's with its downtime beside it
local function freeze_new_cell(r, c)
  local f = cell(r, "freeze_new")
  if c.vmm then return f end
  return string.format("%s (downtime %s)", f, cell(r, "downtime", 0))
end

-- " (k of n runs failed: why)" when some of a row's runs failed
local function failures_note(r)
  if #r.failures == 0 then return "" end
  return string.format(" (%d of %d runs failed: %s)", #r.failures, r.runs, tail(r.failures[1], 150))
end

-- The ratio table under title: its header cells and rows (nothing without rows)
local function print_ratios(title, header, rows)
  if #rows == 0 then return end
  print("\n" .. title .. "\n")
  print("| " .. table.concat(header, " | ") .. " |")
  print(string.rep("|---", #header) .. "|")
  print(table.concat(rows, "\n"))
end

-- --vhost-user-disk: freeze, I/O stall, the writer's pace, ping; then
-- vmm's freeze and stall over QEMU's
local function vu_tables()
  print(string.format("\nlocal migration, a guest writing to a disk on a vhost-user backend (qemu-storage-daemon), " ..
    "median of %d run(s) per row; in ms", opts.runs))
  print("(\"-> new\": into a new process; \"-> back\": back into the first one; QEMU: one migration per run. " ..
    "I/O stall: the longest gap between the guest writer's acknowledgements, on the host's clock; " ..
    "on the guest's clock: as the writer stamped them; guest clock lost: what the guest's clock lost in the " ..
    "migration; without migration: the longest and the median gap over " ..
    VU_IDLE .. " s of writer and ping alone)\n")
  print("| contender | disk | network | guest RAM | freeze -> new | freeze -> back | I/O stall -> new / -> back " ..
        "| on the guest's clock -> new / -> back | guest clock lost -> new / -> back " ..
        "| without migration: longest / median ack gap | ping gap -> new / -> back | lost replies -> new / -> back |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  local function pair(r, f, digits, vmm_only)
    return string.format("%s / %s", cell(r, f .. "_new", digits), vmm_only and cell(r, f .. "_back", digits) or "-")
  end
  for _, mib in ipairs(opts.mem) do
    for _, c in ipairs(cases) do
      local r = results[c.key] and results[c.key][mib]
      if r then
        local mem = mib .. " MiB"
        if #r.failures == r.runs then
          print(string.format("| %s | %s | %s | %s | n/a (%s) | | | | | | | |", c.label, c.disk, c.network, mem,
                              tail(r.failures[1], 300)))
        else
          local freeze_new = freeze_new_cell(r, c)
          local fails = failures_note(r)
          print(string.format("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s%s |", c.label, c.disk,
            c.network, mem, freeze_new, c.vmm and cell(r, "freeze_back") or "-", pair(r, "stall", 1, c.vmm),
            pair(r, "guest_stall", 1, c.vmm), pair(r, "clock_lost", 1, c.vmm),
            cell(r, "stall_idle") .. " / " .. cell(r, "ack_idle", 2), pair(r, "gap", 1, c.vmm),
            pair(r, "lost", 0, c.vmm), fails))
        end
      end
    end
  end
  local ratios = {}
  for _, mib in ipairs(opts.mem) do
    for _, c in ipairs(cases) do
      local r = c.vmm and results[c.key] and results[c.key][mib]
      local q = r and results[c.qemu] and results[c.qemu][mib]
      if q then
        local function ratio(f, qf)
          local m, qm = common.median(r.samples[f]), common.median(q.samples[qf])
          return m and qm and qm > 0 and string.format("%.2f", m / qm) or "-"
        end
        ratios[#ratios + 1] = string.format("| %s | %d MiB | %s | %s | %s | %s |", c.label, mib,
          ratio("freeze_new", "freeze_new"), ratio("freeze_back", "freeze_new"),
          ratio("stall_new", "stall_new"), ratio("stall_back", "stall_new"))
      end
    end
  end
  print_ratios("vmm / QEMU (QEMU's STOP -> RESUME and its one migration's stall; below 1: vmm's is shorter)",
    { "contender", "guest RAM", "freeze -> new", "freeze -> back", "I/O stall -> new", "I/O stall -> back" }, ratios)
end

if opts.vhost_user_disk then
  vu_tables()
else
  print(string.format("\nlocal migration%s, median of %d run(s) per row; freeze and ping gap in ms",
    opts.disk and (", a guest writing to its disk (cache=" .. opts.disk_cache .. ")") or "", opts.runs))
  print("(\"-> new\": into a new process; \"-> back\": back into the first one; QEMU: one migration per run)\n")
  print("| contender | network | guest RAM | freeze -> new | freeze -> back | ping gap -> new / -> back | lost replies -> new / -> back |")
  print("|---|---|---|---|---|---|---|")
  for _, mib in ipairs(opts.mem) do
    for _, c in ipairs(cases) do
      local r = results[c.key] and results[c.key][mib]
      if r then
        local mem = mib .. " MiB"
        if #r.failures == r.runs then
          print(string.format("| %s | %s | %s | n/a (%s) | | | |", c.label, c.network, mem, tail(r.failures[1], 300)))
        else
          local freeze_new = freeze_new_cell(r, c)
          local gap_new = fmt(r.samples.gap_new) or "no reply"
          local gap_back = c.vmm and (fmt(r.samples.gap_back) or "no reply") or "-"
          local fails = failures_note(r)
          print(string.format("| %s | %s | %s | %s | %s | %s / %s | %s / %s%s |", c.label, c.network, mem,
            freeze_new, c.vmm and cell(r, "freeze_back") or "-", gap_new, gap_back,
            cell(r, "lost_new", 0), c.vmm and cell(r, "lost_back", 0) or "-", fails))
        end
      end
    end
  end

  -- vmm's freezes over QEMU's, for the same network backend and guest RAM
  local ratios = {}
  for _, mib in ipairs(opts.mem) do
    for _, c in ipairs(cases) do
      local r = c.vmm and results[c.key] and results[c.key][mib]
      local qr = r and results[c.qemu]
      local q = qr and qr[mib] and common.median(qr[mib].samples.freeze_new)
      if q and q > 0 then
        local function ratio(f)
          local m = common.median(r.samples[f])
          return m and string.format("%.2f", m / q) or "-"
        end
        ratios[#ratios + 1] = string.format("| %s | %s | %d MiB | %s | %s |", c.label, c.network, mib,
                                            ratio("freeze_new"), ratio("freeze_back"))
      end
    end
  end
  print_ratios("freeze, vmm / QEMU (QEMU's STOP -> RESUME, same network backend and guest RAM)",
    { "contender", "network", "guest RAM", "-> new", "-> back" }, ratios)

  -- where vmm's freeze goes: each step's median time since the source paused
  local steps = {}
  for _, mib in ipairs(opts.mem) do
    for _, c in ipairs(cases) do
      local r = c.vmm and results[c.key] and results[c.key][mib]
      if r then
        for _, dir in ipairs({ "new", "back" }) do
          local cells = {}
          for i, ph in ipairs(PHASES) do cells[i] = cell(r, ph .. "_" .. dir) end
          steps[#steps + 1] = string.format("| %s | %s | %d MiB | -> %s | %s |", c.label, c.network, mib, dir,
                                            table.concat(cells, " | "))
        end
      end
    end
  end
  print_ratios("vmm's freeze step by step, ms since the source paused the vCPUs (medians): the target has the "
    .. "state (saved by the source, sent in one write), has loaded it, has the commit, runs the vCPUs",
    { "contender", "network", "guest RAM", "direction", "state in", "loaded", "committed", "running" }, steps)
end
disk_cleanup()
if watchdog then watchdog:kill(9) end
