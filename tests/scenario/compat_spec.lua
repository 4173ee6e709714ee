-- Scenario: the VMM upgrade across builds. A running VM moves from the
-- BASELINE build (tests/compat/baseline, built by scripts/build-baseline
-- into build/baseline) to this build, and back to the baseline, its TAP
-- transferred both ways:
--   1. a baseline process boots the guest (tests/compat/source.lua from the
--      baseline's tree), starts the guest's counter and serves a socket;
--   2. this process (this build) takes the VM with vmm.receive: the older
--      stream, state versions and description load here;
--   3. this process serves the VM again; a baseline process running the
--      baseline's scripts/migrate.lua takes it back: this build writes the
--      state versions the older one loads (HELLO says which);
--   4. throughout: a fast ping from the host loses nothing, the counter
--      keeps its PID and its TCP stream 1, 2, 3... has no gap.
-- Needs /dev/kvm: run through scripts/testhost. A missing baseline build
-- fails here: skipping would hide the one test of the upgrade path.
local vmm = require "vmm"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local S = dofile(here .. "migrate_support.lua")

local BASE_SRC = "build/baseline/src"
local BASE_VMM = "build/baseline/build/vmm"
local IFNAME, SUBNET, PORT, MAC = "lvcompat", "10.0.10", 5010, "52:54:00:12:37:01"

describe("migration from the baseline build to this one and back (TAP transferred)", function()
  local guest_ip = SUBNET .. ".15"
  local first, second, listener, stream, ping, sock, sock2, vm
  local counter = {}

  lazy_setup(function()
    local f = io.open(BASE_VMM, "rb")
    if not f then
      error(BASE_VMM .. " is missing: scripts/build-baseline builds the baseline recorded in tests/compat/baseline", 0)
    end
    f:close()
    sock, sock2, stream = S.tmp_path("sock"), S.tmp_path("sock"), S.tmp_path("stream")
    listener = assert(vmm.background({ "busybox", "nc", "-l", "-p", tostring(PORT) },
      { stdout = stream, hold_stdin = true }))
    vmm.sleep(0.5) -- nc is listening
    first = assert(vmm.background { BASE_VMM, "script", BASE_SRC .. "/tests/compat/source.lua", sock, IFNAME,
                                     SUBNET, tostring(PORT), MAC })
    local pids, why = S.wait_output(first, "compat: counter (%d+ %d+)\n", S.BOOT_TIMEOUT)
    assert(pids, "the baseline did not boot the guest and start its counter: " .. tostring(why))
    counter.pid, counter.nc_pid = pids:match("^(%d+) (%d+)$")
    assert(S.wait_output(first, "compat: serving", 30))
    assert(vmm.wait_until(function() return (S.stream_count(stream) or 0) >= 3 end, 30),
      "the counter's stream did not reach the host: " .. S.read_file(stream))
    ping = S.start_ping_answered(guest_ip)
  end)

  lazy_teardown(function()
    if ping then S.stop_ping(ping) os.remove(ping.file) end
    S.kill(first)
    S.kill(second)
    S.kill(listener)
    if vm then vm:close() end
    if vmm.net.exists(IFNAME) then vmm.net.delete(IFNAME) end
    for _, p in ipairs { sock, sock2, stream } do os.remove(p) end
  end)

  -- The stream grows by 5 within 20 s and still has no gap.
  local function assert_stream_flows(where)
    local _, why = S.wait_stream(stream, assert(S.stream_count(stream)) + 5)
    assert(not why, where .. ": " .. tostring(why))
  end

  it("takes the VM from the baseline process: its stream, description and state versions load in this build", function()
    local report
    vm, report = S.receive(sock, true)
    assert(vm, report)
    assert.are.equal("running", vm:state())
    assert.is_true(report.transferred.net0)
    assert.are.equal(first:pid(), report.peer_pid)
    local out, status = first:wait(30)
    assert(out, status)
    assert.are.equal(0, status, out)
    assert.matches("compat: migrated to process " .. S.my_pid(), out, 1, true)
    assert.are.equal(IFNAME, vm:nets()[1].ifname)
    assert.are.equal("ok", (vm:sh("echo ok", 30)))
    assert(S.counter_alive(vm, counter))
    assert_stream_flows("in this build")
    io.stderr:write(string.format("compat_spec: freeze %.1f ms from the baseline\n", report.freeze_ms))
  end)

  it("hands the VM back to a baseline process (scripts/migrate.lua of the baseline), in the versions it loads", function()
    assert(vm, "the first migration failed")
    local source_report
    assert(vm:serve(sock2, { backend_transfer = true, on_migrated = function(r) source_report = r end }))
    second = assert(vmm.background { BASE_VMM, "script", BASE_SRC .. "/scripts/migrate.lua", sock2,
                                      "--console", "none" })
    assert(S.wait_migrated(vm, second, function() return source_report end))
    assert.is_true(source_report.transferred.net0)
    local took = assert(S.wait_output(second, "(migrate.lua: took over [^\n]*)\n", 30))
    assert.matches("net0: backend transferred", took, 1, true)
    assert_stream_flows("back in the baseline")
  end)

  it("lost no ping on the way there and back", function()
    assert(second, "the VM did not go back to the baseline")
    assert(S.wait_more_replies(ping, 20, 20))
    S.stop_ping(ping)
    local replied, max, n = S.ping_replies(ping.file)
    local missing = S.missing_runs(replied, max)
    io.stderr:write(string.format("compat_spec: %d of %d pings answered; unanswered icmp_seq: %s\n", n, max,
      S.format_runs(missing)))
    assert.are.same({}, missing)
  end)
end)
