-- Scenario: local migration (issue #4) of a running guest to a new VMM
-- process and back, for the four cases {userspace TAP datapath, vhost-net}
-- x {TAP transferred, new TAP opened by the target}.
--
-- Per case, ONE guest boot (lazy_setup), then, in order:
--   1. this process serves a control socket (vm:serve); a child process
--      runs scripts/migrate.lua and takes the VM ("migrated to process N");
--   2. the child re-serves the same socket; this process takes the VM back
--      with vmm.receive{from = ...}; the child then exits 0;
--   3. checks: console, network both ways, the guest's counter (same PID,
--      still counting, its TCP connection to the host carried 1..K with no
--      gap), the migration report, and the fast ping that ran throughout.
-- The `it`s depend on the ones before them (they share the one guest).
-- Needs /dev/kvm and /dev/vhost-net: run through scripts/testhost.
local vmm = require "vmm"
local migrate = require "vmm.migrate"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local S = dofile(here .. "migrate_support.lua")

local CASES = {
  { label = "userspace TAP datapath, TAP transferred", name = "mig-tap-xfer",
    vhost = false, transfer = true, queues = 1, ifname = "lvmig0", subnet = "10.0.4", port = 5004 },
  { label = "userspace TAP datapath, new TAP (no transfer)", name = "mig-tap-new",
    vhost = false, transfer = false, queues = 2, ifname = "lvmig1", subnet = "10.0.5", port = 5005 },
  { label = "vhost-net, TAP transferred", name = "mig-vhost-xfer",
    vhost = true, transfer = true, queues = 2, vcpus = S.smp_migration_vcpus(2), smp = 2, ifname = "lvmig2",
    subnet = "10.0.6", port = 5006 },
  -- Here the device opts out (vm:add_net{backend_transfer = false}) while
  -- the global switch and the child allow transfers: the per-device policy.
  { label = "vhost-net, new TAP (the device opts out of transfer)", name = "mig-vhost-new",
    vhost = true, transfer = false, device_opt_out = true, queues = 1, ifname = "lvmig3", subnet = "10.0.7",
    port = 5007 },
}

local function has(list, item)
  for _, v in ipairs(list or {}) do if v == item then return true end end
  return false
end

for index, c in ipairs(CASES) do
  local replacement = migrate.replacement_ifname(c.ifname) -- the TAP the child opens without transfer
  local mac = string.format("52:54:00:12:35:%02x", index)
  -- what the serving source, the child and this side allow: transfers, also
  -- when the device itself opts out (that opt-out must win)
  local allow_transfer = c.transfer or c.device_opt_out == true

  describe("local migration to a new process and back (" .. c.label .. ")", function()
    local vm, vm2, host_ip, guest_ip, counter, ping, sock, child
    local original_mac, count_before, stream_before, boundary
    local source_report, out_freeze_ms, back_report

    local function need_back()
      assert(vm2 and back_report, "the VM did not come back into this process (see the failures above)")
    end

    lazy_setup(function()
      sock = S.tmp_path("sock")
      vm, host_ip, guest_ip = S.boot { name = c.name, ifname = c.ifname, subnet = c.subnet,
                                       queues = c.queues, vcpus = c.vcpus, vhost = c.vhost, mac = mac,
                                       backend_transfer = not c.device_opt_out }
      original_mac = assert(vmm.net.link(c.ifname)).mac
      counter = S.start_counter(vm, host_ip, c.port)
      ping = S.start_ping_answered(guest_ip)
    end)

    lazy_teardown(function()
      if ping then S.stop_ping(ping) os.remove(ping.file) end
      S.kill(child)
      if counter then S.kill(counter.listener) os.remove(counter.file) end
      if vm2 then vm2:close() end
      if vm then vm:close() end
      for _, name in ipairs { c.ifname, replacement } do
        if vmm.net.exists(name) then vmm.net.delete(name) end
      end
      if sock then os.remove(sock) end
    end)

    it("hands the running VM to a new VMM process through vm:serve; the source stops 'migrated to process N'", function()
      count_before = S.read_count(vm)
      stream_before = assert(S.stream_count(counter.file))
      assert(vm:serve(sock, { backend_transfer = allow_transfer,
                              on_migrated = function(r) source_report = r end }))
      child = S.run_target(sock, allow_transfer)
      assert(S.wait_migrated(vm, child, function() return source_report end))
      assert.are.equal(child:pid(), source_report.peer_pid)
      assert.are.equal(c.transfer, source_report.transferred.net0)

      local took = assert(S.wait_output(child, "(migrate.lua: took over [^\n]*)\n", 30))
      assert.matches("took over " .. c.name .. " from process " .. S.my_pid() .. ":", took, 1, true)
      assert.matches(c.transfer and "net0: backend transferred" or ("net0: new TAP " .. replacement), took, 1, true)
      out_freeze_ms = S.target_freeze_ms(took)
      assert(out_freeze_ms, "no freeze time in the target's line: " .. took)
      assert.are.same({}, S.lines_starting(child:output(), "migrate.lua: network switch-over:"))
    end)

    it("keeps the guest reachable (pings, its TCP stream) while it runs in the other process", function()
      assert(source_report, "the first migration failed")
      assert(S.wait_more_replies(ping, 20, 20))
      local _, why = S.wait_stream(counter.file, stream_before + 5)
      assert(not why, string.format("in the other process (%d numbers before the migration): %s", stream_before,
        tostring(why)))
    end)

    it("takes the VM back with vmm.receive from the socket the other process re-serves; that process exits 0", function()
      assert(source_report, "the first migration failed")
      assert(S.wait_output(child, "migrate.lua: serving", 30))
      boundary = select(2, S.ping_replies(ping.file)) -- pings up to here belong to the first migration
      -- with the device's opt-out, this side accepts backends: the new TAP
      -- then proves the opt-out travelled with the VM to the other process
      local got, report = S.receive(sock, allow_transfer)
      assert(got, report)
      vm2, back_report = got, report
      assert.are.equal("running", vm2:state())
      assert.are.equal(child:pid(), back_report.peer_pid)
      assert.are.equal(c.name, back_report.name)
      io.stderr:write(string.format("migrate_spec: %s: freeze %.1f ms to the other process, %.1f ms back\n",
        c.name, out_freeze_ms, back_report.freeze_ms))

      local out, status = child:wait(30)
      assert(out, status)
      assert.are.equal(0, status, out)
      assert.matches("migrate.lua: migrated to process " .. S.my_pid(), out, 1, true)
    end)

    it("keeps the guest's console working", function()
      need_back()
      local out, err = vm2:sh("echo ok", 30)
      assert.are.equal("ok", out, string.format("%s (the VM is %s%s)", tostring(err), vm2:state(),
        vm2:stop_reason() and (": " .. vm2:stop_reason()) or ""))
    end)

    if c.smp then
      it("brings every vCPU back: " .. c.smp .. " CPUs online, and each runs a command pinned to it", function()
        if S.SMP_MIGRATION_SKIPPED then pending(S.SMP_MIGRATION_SKIPPED) return end
        need_back()
        assert.are.equal(tostring(c.vcpus), (S.sh(vm2, "nproc")))
        for cpu = 0, c.vcpus - 1 do
          -- a CPU left stopped by the migration would never run it
          assert.are.equal("cpu" .. cpu, (S.sh(vm2, "taskset -c " .. cpu .. " echo cpu" .. cpu)))
        end
      end)
    end

    it("keeps the guest's network working both ways", function()
      need_back()
      assert(S.ping(guest_ip))
      local out, status = vm2:sh("ping -c 3 -W 5 " .. host_ip, 60)
      assert.are.equal(0, status, out)
      assert.matches("3 packets received", out, 1, true)
    end)

    it("keeps the guest's counter (same PID) counting and its TCP connection carrying 1..K with no gap", function()
      need_back()
      assert(S.counter_alive(vm2, counter))
      local after = S.read_count(vm2)
      assert.is_true(after > count_before, string.format("count %d after, %d before", after, count_before))
      vmm.sleep(0.5)
      local later = S.read_count(vm2)
      assert.is_true(later > after, string.format("the counter stopped at %d", after))
      local k, why = S.wait_stream(counter.file, later)
      assert(k, string.format("the guest counted to %d: %s", later, tostring(why)))
      assert.is_true(k > stream_before, string.format("the TCP stream has %d numbers, %d before the migrations", k,
        stream_before))
    end)

    if c.transfer then
      it("reports the TAP transferred and keeps it and the host address", function()
        need_back()
        assert.is_true(back_report.transferred.net0)
        assert.is_nil(back_report.new_taps.net0)
        assert.are.same({}, back_report.switch_problems)
        assert.are.equal(c.ifname, vm2:nets()[1].ifname)
        assert.is_true(has(vmm.net.addresses(c.ifname), host_ip .. "/24"))
        assert.is_false(vmm.net.exists(replacement))
      end)
    else
      it("opens a new TAP each way and moves the host address and MAC to it", function()
        need_back()
        assert.is_false(back_report.transferred.net0)
        assert.are.equal(c.ifname, back_report.new_taps.net0) -- the other process used `replacement`
        assert.are.same({}, back_report.switch_problems)
        assert.are.equal(c.ifname, vm2:nets()[1].ifname)
        local addrs = vmm.net.addresses(c.ifname)
        assert.is_true(has(addrs, host_ip .. "/24"), "addresses of " .. c.ifname .. ": " ..
          table.concat(addrs or {}, ", "))
        local link = assert(vmm.net.link(c.ifname))
        assert.is_true(link.up)
        assert.are.equal(original_mac, link.mac)
        if vmm.net.exists(replacement) then
          assert.is_false(has(vmm.net.addresses(replacement), host_ip .. "/24"))
        end
      end)
    end

    local ping_test = c.transfer and "keeps every ping answered when the TAP is transferred"
      or "loses pings only within each migration's freeze (+0.5 s) when a new TAP is opened"
    it(ping_test, function()
      need_back()
      vmm.sleep(1) -- the last replies arrive
      S.stop_ping(ping)
      local replied, max, n = S.ping_replies(ping.file)
      assert.is_true(max > boundary, "no ping was answered after the VM came back")
      local runs = S.missing_runs(replied, max)
      io.stderr:write(string.format("migrate_spec: %s: %d of %d pings answered; unanswered icmp_seq: %s\n",
        c.name, n, max, S.format_runs(runs)))
      if c.transfer then
        assert.are.equal(0, #runs, "unanswered icmp_seq: " .. S.format_runs(runs))
        return
      end
      local per_migration = { {}, {} }
      for _, r in ipairs(runs) do
        table.insert(r[2] <= boundary and per_migration[1] or per_migration[2], r)
      end
      local freezes = { out_freeze_ms, back_report.freeze_ms }
      for i = 1, 2 do
        local group = per_migration[i]
        assert.is_true(#group <= 1, string.format("migration %d: %d runs of unanswered pings: %s",
          i, #group, S.format_runs(group)))
        for _, r in ipairs(group) do
          local lost_s = (r[2] - r[1] + 1) * S.PING_INTERVAL
          assert.is_true(lost_s <= freezes[i] / 1000 + 0.5, string.format(
            "migration %d: %d pings unanswered in a row (%.2f s) for a freeze of %.1f ms",
            i, r[2] - r[1] + 1, lost_s, freezes[i]))
        end
      end
    end)
  end)
end
