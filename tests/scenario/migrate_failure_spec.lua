-- Scenario: local migrations that fail (issue #4). ONE guest (userspace
-- TAP datapath, backend transfer on) serves its control socket; targets
-- (scripts/migrate.lua in a child process) reach it through the
-- man-in-the-middle proxy build/migproxy (tests/tools/migproxy.c), which
-- kills, cuts, corrupts or stalls the stream (or a target that hangs
-- after the commit point). After each attempt the VM
-- must still run here, answer pings and its console; the guest's counter
-- and its TCP connection to the host keep going through all of it; and a
-- real migration afterwards (no proxy) still works, TAP transferred.
-- The `it`s share the one guest and run in order.
-- Needs /dev/kvm: run through scripts/testhost.
local vmm = require "vmm"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local S = dofile(here .. "migrate_support.lua")

local IFNAME, SUBNET, PORT = "lvmigf", "10.0.8", 5008
local SERVE_TIMEOUT = 10 -- s: a stalled target is given up after this
local MIG_VCPU = 8       -- enum mig_type in core/migstream.h

describe("failed local migrations (userspace TAP datapath, backend transfer)", function()
  local vm, host_ip, guest_ip, counter, server, sock, child
  local count_before, stream_before
  local leftovers = {} -- background commands and proxies to clean up

  -- The VM still runs here with its TAP, its console and its network.
  local function assert_source_intact()
    assert(vmm.wait_until(function() return vm:state() == "running" end, SERVE_TIMEOUT),
      "the source VM is " .. vm:state() .. " (" .. tostring(vm:stop_reason()) .. ")")
    assert.are.equal(IFNAME, vm:nets()[1].ifname)
    assert.are.equal("ok", (vm:sh("echo ok", 30)))
    assert(S.ping(guest_ip))
  end

  -- A target through a proxy started with `options`. Waits until the
  -- target exits -> its output, exit status, the proxy's log.
  local function attempt_through_proxy(options)
    local proxy = S.start_proxy(sock, options)
    leftovers[#leftovers + 1] = proxy
    local target = S.run_target(proxy.listen, true)
    leftovers[#leftovers + 1] = { cmd = target }
    local out, status = target:wait(120)
    assert(out, status)
    local log = S.read_file(proxy.log)
    S.stop_proxy(proxy)
    return out, status, log
  end

  -- scripts/migrate.lua failed cleanly: status 1 and one error line.
  local function assert_one_error(out, status, proxy_log)
    local context = "the target's output: " .. out .. "\nthe proxy's log: " .. proxy_log
    assert.are.equal(1, status, context)
    local errors = S.lines_starting(out, "migrate.lua: ")
    assert.are.equal(1, #errors, context)
    return errors[1]
  end

  lazy_setup(function()
    sock = S.tmp_path("sock")
    vm, host_ip, guest_ip = S.boot { name = "mig-failures", ifname = IFNAME, subnet = SUBNET,
                                     queues = 1, vhost = false, mac = "52:54:00:12:36:01" }
    counter = S.start_counter(vm, host_ip, PORT)
    count_before = S.read_count(vm)
    stream_before = assert(S.stream_count(counter.file))
    server = assert(vm:serve(sock, { backend_transfer = true, timeout = SERVE_TIMEOUT }))
  end)

  lazy_teardown(function()
    for _, l in ipairs(leftovers) do
      if l.listen then S.stop_proxy(l) else S.kill(l.cmd) end
    end
    S.kill(child)
    if counter then S.kill(counter.listener) os.remove(counter.file) end
    if server then server.close() end
    if vm then vm:close() end
    for _, name in ipairs { IFNAME, require("vmm.migrate").replacement_ifname(IFNAME) } do
      if vmm.net.exists(name) then vmm.net.delete(name) end
    end
    if sock then os.remove(sock) end
  end)

  it("rolls back and keeps running when the target is killed (SIGKILL) with the stream stalled after the vCPU state", function()
    local proxy = S.start_proxy(sock, { "--stall-after-type", tostring(MIG_VCPU) })
    leftovers[#leftovers + 1] = proxy
    local target = S.run_target(proxy.listen, true)
    leftovers[#leftovers + 1] = { cmd = target }
    -- This process is the source: it blocks in the migration while the
    -- stream is stalled, so a separate process kills the target.
    local killer = assert(vmm.background({ "sh", "-c",
      'i=0; until grep -qs "migproxy: stalled after" "$1"; do i=$((i+1)); [ $i -ge 1200 ] && exit 3; ' ..
      'sleep 0.05; done; kill -9 "$2"', "sh", proxy.log, tostring(target:pid()) }))
    leftovers[#leftovers + 1] = { cmd = killer }
    local out, status = target:wait(120)
    assert(out, status)
    local _, kstatus = killer:wait(30)
    assert.are.equal(0, kstatus, "the proxy never stalled: " .. S.read_file(proxy.log))
    assert.are.equal(128 + 9, status, "the target was not the one killed: " .. out)
    assert.matches("migproxy: stalled after", S.read_file(proxy.log), 1, true)
    S.stop_proxy(proxy)
    assert_source_intact()
  end)

  it("rolls back when the stream is cut in the middle of the vCPU state; the target reports one error", function()
    local out, status, log = attempt_through_proxy { "--truncate-in-type", tostring(MIG_VCPU) }
    assert_one_error(out, status, log)
    assert_source_intact()
  end)

  it("rolls back when a byte of the vCPU state is flipped; the target reports the checksum mismatch", function()
    local out, status, log = attempt_through_proxy { "--flip-in-type", tostring(MIG_VCPU) }
    local err = assert_one_error(out, status, log)
    assert.matches("checksum", err, 1, true)
    assert_source_intact()
  end)

  it("refuses a target's plan that names more devices than the VM has; the target reports the source's reason", function()
    -- The description has the board's four devices, then net0 (device 4).
    local out, status, log = attempt_through_proxy { "--plan-count", "6" } -- valid CRC: the source's own check
    local err = assert_one_error(out, status, log)
    assert.matches("plan: 6 devices, the description has 5", err, 1, true)
    assert_source_intact()
  end)

  it("refuses a target's plan that takes a backend the source did not offer (valid CRC); the target reports the source's reason", function()
    local function serve(transfer)
      server.close()
      server = assert(vm:serve(sock, { backend_transfer = transfer, timeout = SERVE_TIMEOUT }))
    end
    serve(false)
    local ok, out, status, log = pcall(attempt_through_proxy, { "--plan-take", "4" }) -- net0
    serve(true)
    assert(ok, out)
    local err = assert_one_error(out, status, log)
    assert.matches("plan: net0: takes a backend that was not offered (1)", err, 1, true)
    assert.matches("made the plan take the backend of device 4", log, 1, true)
    assert_source_intact()
  end)

  it("rolls back when the backend section carries a pipe instead of the TAP; the target reports one error", function()
    local out, status, log = attempt_through_proxy { "--wrong-fd" } -- the fds of BACKEND (type 5) sections
    assert_one_error(out, status, log)
    assert_source_intact()
  end)

  it("resumes only once the target is gone when it dies after COMMIT, before its vCPUs start", function()
    -- To the source, the target vanishes right after COMMIT went out: the
    -- source, still paused with its devices, kills it and then resumes.
    local out, status, log = attempt_through_proxy { "--kill-target-at-type", "commit" }
    assert.are.equal(128 + 9, status, "the target was not killed: " .. out .. "\nthe proxy's log: " .. log)
    assert.matches("killed target process %d+ when the source's commit section arrived", log)
    assert_source_intact()
  end)

  it("kills a target that stalls after COMMIT, its network switched over to a new TAP, and resumes with its own TAP up again", function()
    -- The target takes no backend: it opens lvmigf-b, moves the host's
    -- address and link there, then hangs before starting. The source waits
    -- SERVE_TIMEOUT, kills it, waits until it is gone, restores its TAP.
    local script = string.format([[
      local vmm = require "vmm"
      local vm, err = vmm.receive { from = %q, backend_transfer = false, console = "none",
        before_start = function() io.stderr:write("target: committed, hanging\n") vmm.sleep(3600) end }
      io.stderr:write("target: ", tostring(err), "\n")
      os.exit(1)]], sock)
    local target = assert(vmm.background { S.VMM, "-e", script })
    leftovers[#leftovers + 1] = { cmd = target }
    local out, status = target:wait(120)
    assert(out, status)
    assert.matches("target: committed, hanging", out, 1, true)
    assert.are.equal(128 + 9, status, "the source did not kill the target: " .. out)
    assert.is_false(vmm.net.exists(require("vmm.migrate").replacement_ifname(IFNAME)),
      "the target's TAP outlived it")
    assert_source_intact() -- pings: the host's address is back on the source's TAP
    local addrs = vmm.net.addresses(IFNAME)
    assert.is_true(table.concat(addrs, " "):find(host_ip .. "/24", 1, true) ~= nil,
      "the source's TAP has " .. table.concat(addrs, ", "))
  end)

  it("kept the guest's counter and its TCP connection going through every failed attempt", function()
    assert.are.equal("running", vm:state())
    local after = S.read_count(vm)
    assert.is_true(after > count_before, string.format("count %d now, %d before", after, count_before))
    local k, why = S.wait_stream(counter.file, after)
    assert(k, string.format("the guest counted to %d: %s", after, tostring(why)))
    assert.is_true(k > stream_before, string.format("the TCP stream has %d numbers, %d before", k, stream_before))
    assert(S.counter_alive(vm, counter))
  end)

  it("still migrates for real afterwards, its TAP transferred (the source's backends are intact)", function()
    assert.are.equal("running", vm:state())
    server.close()
    server = nil
    local sock2 = S.tmp_path("sock")
    local source_report
    assert(vm:serve(sock2, { backend_transfer = true, on_migrated = function(r) source_report = r end }))
    local stream_now = assert(S.stream_count(counter.file))
    child = S.run_target(sock2, true)
    assert(S.wait_migrated(vm, child, function() return source_report end))
    assert.is_true(source_report.transferred.net0)
    local took = assert(S.wait_output(child, "(migrate.lua: took over [^\n]*)\n", 30))
    assert.matches("net0: backend transferred", took, 1, true)
    -- The guest, now in the child, still answers and its TCP stream goes on.
    assert(S.ping(guest_ip))
    assert(S.wait_stream(counter.file, stream_now + 5))
    os.remove(sock2)
  end)
end)
