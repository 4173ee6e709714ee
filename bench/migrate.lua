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
local vmm = require "vmm"
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/common.lua")

local opts = { runs = 1, mem = { 256, 2048 }, only = nil, timeout = 300, vcpus = 2, disk = false,
               disk_cache = "writeback" }
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
local DISK_MIB = 64                      -- --disk: the image's size
-- --disk: the guest's writer, 4 KiB blocks over the first 16 MiB, acks in /run/acked
local WRITER = "diskwrite stream /dev/vda 0 16 7 --every 64 > /run/acked 2> /run/writer.err &"
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

-- Starts the guest's writer through sh (a vm:sh-like function) and waits
-- for its first acknowledgement -> its last "acked GEN BLOCK" line.
local function start_writer(sh)
  local out, status = sh(WRITER)
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
    local vm = vmm.vm { name = "bench-mig", memory = mib .. "M", vcpus = opts.vcpus, kernel = kernel,
                        initrd = initrd, cmdline = cmdline, console = "none" }
    at_exit(function() vm:close() end)
    vm:add_net { ifname = IFNAME, mac = MAC, vhost = c.vhost }
    if DISK then vm:add_disk { path = DISK.image, cache = opts.disk_cache, queues = opts.vcpus,
                                     queue_size = 256 } end
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
    local writer_before = DISK and start_writer(function(cmd) return vm:sh(cmd, 60) end)
    if DISK then dbg("  the guest's writer runs: %s", writer_before) end

    -- 1. A new process takes the VM (scripts/migrate.lua).
    assert(vm:serve(sock, { backend_transfer = c.transfer, timeout = opts.timeout }))
    local ping = ping_start()
    at_exit(function() ping:stop() end)
    local argv = { "/proc/self/exe", "script", "scripts/migrate.lua", sock, "--console", "none",
                   "--timeout", tostring(opts.timeout) }
    if not c.transfer then argv[#argv + 1] = "--no-transfer" end
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
    assert(vm:wait("stopped", 30))
    dbg("  the child took the VM")
    local st = ping:finish()
    s.gap_new, s.lost_new = st.gap_ms, st.lost
    log("  -> new process: %s", tail(child:output():match("took over[^\n]*"), 200))
    vm:close()

    -- 2. This process takes it back through the socket the child serves.
    assert(vmm.wait_until(function() return child:output():find("serving", 1, true) or child:done() end, 60))
    ping = ping_start()
    dbg("  child serves, ping running, taking the VM back")
    local back, report
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
    st = ping:finish()
    s.gap_back, s.lost_back = st.gap_ms, st.lost
    log("  -> back here: freeze %.1f ms, net0 %s%s", report.freeze_ms,
        report.transferred.net0 and "TAP transferred" or ("new TAP " .. tostring(report.new_taps.net0)),
        #report.switch_problems > 0 and ("; switch-over: " .. table.concat(report.switch_problems, "; ")) or "")
    if (report.transferred.net0 == true) ~= c.transfer then
      log("  warning: the backend was %s transferred", report.transferred.net0 and "" or "not")
    end
    if DISK then
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
    print("RESULT downtime=%s total=%s stop_resume=%s" % (
        info.get("downtime", -1), info.get("total-time", -1),
        "%.1f" % ((resume - stop) * 1000) if stop is not None and resume is not None else -1), flush=True)

try:
    main(*sys.argv[1:5])
except Exception as e:
    print("ERROR %s" % e, flush=True)
    sys.exit(1)
]]

local function qemu_argv(mib, vhost, ifname, qmp, ram, incoming)
  -- --disk: QEMU's guest has as many vCPUs as vmm's (common.qemu_cmdline);
  -- without --disk, the command line of the figures in bench/README.md,
  -- where QEMU's guest found one of its two
  local append = DISK and common.qemu_cmdline(cmdline, opts.vcpus) or cmdline
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

    local src, src_shell = start_qemu(at_exit, qemu_argv(mib, c.vhost, IFNAME, qmp_src, ram, false), IFNAME, "the source")
    common.host_side_up(IFNAME, HOST_IP)
    vmm.wait_until(function() return src:output():find("LUAVMM-GUEST-READY", 1, true) or src:done() end, opts.timeout)
    if not src:output():find("LUAVMM-GUEST-READY", 1, true) then
      error("the source QEMU's guest did not boot: " .. tail(src:output()))
    end
    common.wait_ping(GUEST_IP)
    local writer_before = DISK and start_writer(function(cmd) return src_shell:sh(cmd, 60) end)
    local dst, dst_shell = start_qemu(at_exit, qemu_argv(mib, c.vhost, NEW_IFNAME, qmp_dst, ram, true), NEW_IFNAME, "the target")

    -- read before the migration, as vmm.receive does for its own switch-over
    local link, addresses = vmm.net.link(IFNAME), vmm.net.addresses(IFNAME)
    local ping = ping_start()
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
    s.gap_new, s.lost_new = st.gap_ms, st.lost
    log("  -> target QEMU: %s", result)
    if DISK then
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
end

local FIELDS = { "freeze_new", "freeze_back", "gap_new", "gap_back", "lost_new", "lost_back", "downtime" }
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
        local freeze_new = cell(r, "freeze_new")
        if not c.vmm then
          freeze_new = string.format("%s (downtime %s)", freeze_new, cell(r, "downtime", 0))
        end
        local gap_new = fmt(r.samples.gap_new) or "no reply"
        local gap_back = c.vmm and (fmt(r.samples.gap_back) or "no reply") or "-"
        local fails = #r.failures > 0 and string.format(" (%d of %d runs failed: %s)", #r.failures, r.runs,
                                                         tail(r.failures[1], 150)) or ""
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
    local qr = r and results[c.vhost and "qemu-vhost" or "qemu-tap"]
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
if #ratios > 0 then
  print("\nfreeze, vmm / QEMU (QEMU's STOP -> RESUME, same network backend and guest RAM)\n")
  print("| contender | network | guest RAM | -> new | -> back |")
  print("|---|---|---|---|---|")
  print(table.concat(ratios, "\n"))
end
disk_cleanup()
if watchdog then watchdog:kill(9) end
