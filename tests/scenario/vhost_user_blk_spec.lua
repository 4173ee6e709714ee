-- Scenario: a guest whose disk is served by qemu-storage-daemon over
-- vhost-user (started here, inside the test host). The guest writes and
-- reads it with O_DIRECT; a writer (diskwrite stream: each 4 KiB block
-- durable before the next) keeps going through
--   - two failed migrations (the target killed after the freeze): without
--     transfer the source reconnects to the daemon and restarts its rings;
--     with it the source keeps the connection it never gave away;
--   - a migration to a new process without transfer (the source stops its
--     rings and hangs up at the freeze; the target connects and starts the
--     rings where they stopped), and back WITH transfer: the live
--     connection, its eventfds and the negotiated state come over, the
--     target says nothing to the daemon, which keeps its one connection;
-- afterwards every acknowledged write is on the disk, and in the image file
-- once read from the host. The guest then resets the device on the process
-- that took the connection over (guest RAM is mapped at the source's
-- address there, so the daemon's addresses hold and it keeps its
-- connection), and last the daemon is killed: the disk fails, the VM runs
-- on.
-- Needs /dev/kvm and qemu-storage-daemon: run through scripts/testhost.
local vmm = require "vmm"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local S = dofile(here .. "migrate_support.lua")
local qsd = dofile(here .. "../lib/qsd.lua")

local MIB = 32

local daemon

-- The disk's state (rings, connection) and what the daemon said, for a
-- failure's message.
local function disk_state(v)
  local said = "\nqemu-storage-daemon said: " .. (daemon and tostring(daemon.proc:output()) or "-")
  for i, d in ipairs(v:devices()) do
    if d.kind == "vhost-user-blk" then return tostring(v:device_state(i)) .. said end
  end
  return "no vhost-user-blk device" .. said
end

describe("a guest on a vhost-user-blk disk (qemu-storage-daemon)", function()
  local image, socket, vm, vm2, sock, child, source_report, acked, first_connection

  lazy_setup(function()
    image, socket, sock = S.tmp_path("vub.img"), S.tmp_path("vub.sock"), S.tmp_path("sock")
    daemon = assert(qsd.start { image = image, mib = MIB, socket = socket })
    vm = vmm.vm {
      name = "vub", memory = "256M", vcpus = S.VCPUS,
      kernel = S.kernel, initrd = S.initrd, console = "none", cmdline = S.CMDLINE,
    }
    vm:add_disk { vhost_user = socket }
    assert(vm:start())
    S.wait_boot(vm)
  end)
  lazy_teardown(function()
    S.kill(child)
    if vm2 then vm2:close() end
    if vm then vm:close() end
    if daemon then daemon:stop() end
    for _, p in ipairs { image, socket, sock } do os.remove(p) end
  end)

  it("sees the capacity the daemon gives, and its queue served by the daemon", function()
    assert.are.equal(tostring(MIB * 2048), S.sh(vm, "cat /sys/block/vda/size"))
    local d = vm:disks()[1]
    assert.is_true(d.connected)
    assert.are.equal(1, d.queues_running)
    first_connection = daemon:connections()
    assert.are.equal(1, #first_connection)
  end)

  it("writes 16 MiB with O_DIRECT|O_DSYNC and reads them back", function()
    assert.matches("wrote 16 MiB", S.sh(vm, "diskwrite write /dev/vda 0 16 3 --direct", 300))
    assert.matches("ok 16 MiB", S.sh(vm, "diskwrite verify /dev/vda 0 16 3 --direct", 300))
    local out, status = vm:sh("diskwrite verify /dev/vda 0 1 4 --direct", 60)
    assert.are_not.equal(0, status, out) -- the check can tell
  end)

  -- A migration whose target is killed after the freeze, with the writer
  -- busy: the source resumes. Reconnecting (no transfer) or keeping the
  -- connection it never gave away (transfer).
  local function rollback(transfer)
    S.migrate_killed_after_freeze(vm, transfer)
    S.wait_writer_progress(vm, "after the rollback", function() return disk_state(vm) end)
    local d = vm:disks()[1]
    assert.is_true(d.connected)
    assert.are.equal(1, d.queues_running)
  end

  it("rolls back when the target is killed after the freeze: the source reconnects and the writer goes on", function()
    S.sh(vm, "diskwrite stream /dev/vda 16 8 9 --every 32 > /run/acked 2> /run/stream.err &")
    assert(vmm.wait_until(function() return S.sh(vm, "cat /run/acked"):match("acked") ~= nil end, 60),
           "the writer acknowledged nothing")
    rollback(false)
    local c = daemon:connections()
    assert.are.equal(1, #c)
    assert.are_not.equal(first_connection[1], c[1], "the source did not reconnect")
    first_connection = c
  end)

  it("rolls back the same way with the connection handed over: the source keeps it, the daemon notices nothing", function()
    rollback(true)
    assert.are.same(first_connection, daemon:connections())
  end)

  it("hands the VM to a new process, which connects to the daemon anew, and the writer goes on there", function()
    -- this side offers no transfer; the child would take one, and offers
    -- one on the way back
    assert(vm:serve(sock, { backend_transfer = false, on_migrated = function(r) source_report = r end }))
    child = S.run_target(sock, true)
    assert(S.wait_migrated(vm, child, function() return source_report end))
    assert.is_false(source_report.transferred.disk0)
    local took = assert(S.wait_output(child, "(migrate.lua: took over [^\n]*)\n", 30))
    assert.matches("disk0: reopened " .. socket, took, 1, true)
    -- the daemon serves the target now: one connection, not the first one
    assert(vmm.wait_until(function()
      local c = daemon:connections()
      return #c == 1 and c[1] ~= first_connection[1]
    end, 10), "the daemon's connections: " .. table.concat(daemon:connections(), " "))
    first_connection = daemon:connections()
  end)

  it("takes the VM back with the live connection handed over: the daemon keeps its one connection, every acknowledged write is on the disk", function()
    assert(source_report, "the first migration failed")
    local report
    vm2, report = S.take_back(child, sock, true)
    assert.is_true(report.transferred.disk0)
    -- the same socket, never reconnected, though the process that held it is gone
    assert.are.same(first_connection, daemon:connections())
    acked = S.stop_writer_and_check(vm2, "/dev/vda", "16 8 9")
  end)

  it("works after the guest resets the device on the process that took the connection over", function()
    assert(vm2, "the VM did not come back")
    -- unbinding the driver resets the device; binding it sets the rings up
    -- again. The daemon holds the source's ring and table addresses: this
    -- process mapped guest RAM at the same address, so they hold and the
    -- daemon keeps its connection; where that range was taken, the set-up
    -- starts a new session (one connection still, a new one)
    local same_addresses = not vm2:disks()[1].new_session_pending
    local fn = S.sh(vm2, "basename $(readlink -f /sys/block/vda/device/..)")
    S.sh(vm2, "echo " .. fn .. " > /sys/bus/pci/drivers/virtio-pci/unbind")
    assert.are.equal(0, vm2:disks()[1].queues_running)
    -- in the background: the probe reads the disk before the write returns
    S.sh(vm2, "(echo " .. fn .. " > /sys/bus/pci/drivers/virtio-pci/bind &)")
    assert(vmm.wait_until(function() return S.sh(vm2, "ls /dev"):match("vda") ~= nil end, 30),
           "no vda after the rebind: " .. disk_state(vm2))
    local out = vm2:sh("diskwrite verify /dev/vda 0 16 3 --direct", 120)
    assert.matches("ok 16 MiB", tostring(out), 1, true, disk_state(vm2))
    assert.matches("wrote 1 MiB", S.sh(vm2, "diskwrite write /dev/vda 24 1 5 --direct", 120))
    assert.are.equal(1, vm2:disks()[1].queues_running)
    local c = daemon:connections()
    assert.are.equal(1, #c)
    if same_addresses then
      assert.are.same(first_connection, c)
    else
      assert.are_not.equal(first_connection[1], c[1])
      print("vhost_user_blk_spec: guest RAM could not be mapped at the source's address: a new session")
    end
  end)

  it("leaves the data in the image file, as the host reads it", function()
    assert(acked, "the writer's last acknowledged write is not known")
    local out, status = S.host_diskwrite("verify", image, "0", "16", "3")
    assert.are.equal(0, status, out)
    out, status = S.host_diskwrite("check", image, "16", "8", "9", "--acked", acked)
    assert.are.equal(0, status, out)
    assert.matches("^ok ", out)
    out, status = S.host_diskwrite("verify", image, "24", "1", "5")
    assert.are.equal(0, status, out)
  end)

  it("keeps the VM running when the daemon is killed: the disk fails, the console answers", function()
    assert(vm2, "the VM did not come back")
    daemon:stop()
    assert(vmm.wait_until(function() return vm2:disks()[1].backend_failed end, 10),
           "the device did not notice: " .. disk_state(vm2))
    assert.is_false(vm2:disks()[1].connected)
    assert.are.equal("still here", S.sh(vm2, "echo still here"))
    assert.are.equal("running", vm2:state())
  end)
end)
