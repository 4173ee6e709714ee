-- Scenario: a guest that boots its root filesystem from a virtio-blk disk
-- (the ext4 image of scripts/rootfs-image, luavmm.root=/dev/vda) and has a
-- second, empty disk: 64 MiB written there with O_DIRECT|O_DSYNC (so the
-- guest was told it is on the image) survive a restart of the VM, block
-- for block. Needs /dev/kvm: run through scripts/testhost.
local vmm = require "vmm"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local S = dofile(here .. "migrate_support.lua")
local ROOTFS = os.getenv("VMM_ROOTFS") or "build/images/rootfs.ext4"
local host_diskwrite = S.host_diskwrite

-- Another VM (composed, never started) trying to open the image: -> the
-- error, or nil when it could (the image is not locked).
local function open_elsewhere(path)
  local other = vmm.vm { name = "disk-probe", memory = "64M", vcpus = 1, kernel = S.kernel }
  local ok, err = pcall(other.add_disk, other, { path = path })
  other:close()
  return not ok and tostring(err) or nil
end

local function boot(name, root, data)
  local vm = vmm.vm {
    name = name, memory = "256M", vcpus = S.VCPUS,
    kernel = S.kernel, initrd = S.initrd, console = "none",
    cmdline = S.CMDLINE .. " luavmm.root=/dev/vda",
  }
  vm:add_disk { path = root, serial = "root0" }
  vm:add_disk { path = data }
  assert(vm:start())
  S.wait_boot(vm)
  return vm
end

describe("a guest with virtio-blk disks", function()
  local root, data, vm

  lazy_setup(function()
    root, data = S.tmp_path("root.ext4"), S.tmp_path("data.img")
    assert(os.execute(string.format("cp --sparse=always %s %s && truncate -s 80M %s", ROOTFS, root, data)))
    vm = boot("disk", root, data)
  end)
  lazy_teardown(function()
    if vm then vm:close() end
    os.remove(root)
    os.remove(data)
  end)

  it("runs from the ext4 root on /dev/vda and sees the serial and the second disk", function()
    assert.matches("^/dev/vda / ext4 rw", S.sh(vm, "grep ' / ' /proc/mounts"))
    assert.are.equal("root0", S.sh(vm, "cat /sys/block/vda/serial"))
    assert.are.equal(tostring(80 * 2048), S.sh(vm, "cat /sys/block/vdb/size"))
  end)

  it("writes 64 MiB to the second disk with O_DIRECT|O_DSYNC", function()
    assert.matches("wrote 64 MiB", S.sh(vm, "diskwrite write /dev/vdb 0 64 7 --direct", 600))
    local d = vm:disks()[2]
    assert.is_true(d.write_bytes >= 64 * 1024 * 1024)
    assert.are.equal(0, d.io_errors)
  end)

  it("reads the same 64 MiB back after the VM restarted, and a wrong seed does not pass", function()
    vm:close()
    vm = nil
    vm = boot("disk2", root, data)
    assert.matches("ok 64 MiB", S.sh(vm, "diskwrite verify /dev/vdb 0 64 7 --direct", 600))
    assert.is_true(vm:disks()[2].read_bytes >= 64 * 1024 * 1024)
    -- a wrong seed fails: the check can tell
    local out, status = vm:sh("diskwrite verify /dev/vdb 0 1 8 --direct", 60)
    assert.are_not.equal(0, status, out)
  end)
end)

-- Local migration to a new process and back with the disks busy: a writer
-- in the guest (diskwrite stream: each 4 KiB block durable before the
-- next, O_DIRECT|O_DSYNC) runs through both migrations; afterwards every
-- write it was told is done is on the image, in order. Once with the
-- images' fds (and locks) transferred, once reopened by path.
for _, transfer in ipairs { true, false } do
  describe("a guest writing to its disk through a migration and back (" ..
           (transfer and "images transferred" or "images reopened") .. ")", function()
    local root, data, vm, vm2, sock, child, source_report, acked

    lazy_setup(function()
      root, data, sock = S.tmp_path("root.ext4"), S.tmp_path("data.img"), S.tmp_path("sock")
      assert(os.execute(string.format("cp --sparse=always %s %s && truncate -s 16M %s", ROOTFS, root, data)))
      vm = boot(transfer and "disk-mig-x" or "disk-mig-r", root, data)
      S.sh(vm, "diskwrite stream /dev/vdb 0 8 9 --every 32 > /run/acked 2> /run/stream.err &")
      assert(vmm.wait_until(function() return S.sh(vm, "cat /run/acked"):match("acked") ~= nil end, 60),
             "the writer acknowledged nothing")
    end)
    lazy_teardown(function()
      S.kill(child)
      if vm2 then vm2:close() end
      if vm then vm:close() end
      for _, p in ipairs { root, data, sock } do os.remove(p) end
    end)

    it("rolls back when the target is killed mid-stream with the disk busy: the source keeps its image locked, and the writer goes on", function()
      local log = S.migrate_killed_after_freeze(vm, transfer)
      assert.matches("killed target process %d+ when the source's device section arrived", log)
      -- the source took its locks back (or never gave them away) before it resumed
      local err = open_elsewhere(data)
      assert(err, "another VM could open the image of the running source: it is not locked")
      assert.matches("in use", err, 1, true)
      S.wait_writer_progress(vm, "after the rollback")
      assert.are.equal(0, vm:disks()[2].io_errors)
    end)

    it("hands the VM to a new process with its disks, and the writer goes on there", function()
      assert(vm:serve(sock, { backend_transfer = transfer, on_migrated = function(r) source_report = r end }))
      -- an operator attached to the source: the migration ends the session
      -- with one line saying where the VM went
      local attached = assert(vmm.background({ S.VMM, "attach", sock, "-e", "vmm.sleep(600)" }))
      vmm.sleep(1)
      child = S.run_target(sock, transfer)
      assert(S.wait_migrated(vm, child, function() return source_report end))
      local said, status = attached:wait(30)
      assert.are.equal(1, status, said)
      assert.matches("migrated to process " .. source_report.peer_pid, said, 1, true)
      assert.are.equal(transfer, source_report.transferred.disk0)
      assert.are.equal(transfer, source_report.transferred.disk1)
      local took = assert(S.wait_output(child, "(migrate.lua: took over [^\n]*)\n", 30))
      assert.matches(transfer and "disk1: backend transferred" or ("disk1: reopened " .. data), took, 1, true)
    end)

    it("takes the VM back, and every acknowledged write is on the image", function()
      assert(source_report, "the first migration failed")
      local report
      vm2, report = S.take_back(child, sock, transfer)
      assert.are.equal(transfer, report.transferred.disk1)
      acked = S.stop_writer_and_check(vm2, "/dev/vdb", "0 8 9")
    end)

    it("leaves every acknowledged write in the image file once the VM has stopped", function()
      assert(acked, "the writer's last acknowledged write is not known")
      vm2:close()
      vm2 = nil
      local out, status = host_diskwrite("check", data, "0", "8", "9", "--acked", acked)
      assert.are.equal(0, status, out)
      assert.matches("^ok ", out)
      -- and the check can tell: a later acknowledgement than the image holds fails
      local gen = acked:match("^(%d+):")
      local _, late = host_diskwrite("check", data, "0", "8", "9", "--acked", (gen + 2) .. ":0")
      assert.are_not.equal(0, late)
    end)
  end)
end

-- cache = "none": the image is opened with O_DIRECT, which needs a
-- filesystem that has it. The test host's tmpfs (kernel 6.1) does not, so
-- the image goes on an ext4 loop-mounted here (needs root and the loop and
-- ext4 modules, which scripts/testhost loads). The guest writes with
-- O_DIRECT|O_DSYNC, and after the VM stopped the host reads the image back
-- with O_DIRECT too.
describe("a disk with cache = \"none\" (O_DIRECT on the host)", function()
  local fs, dir, mounted, vm, why_not

  lazy_setup(function()
    fs, why_not = dofile(here .. "../lib/fs.lua").odirect_dir(96)
    mounted = fs ~= nil
    if mounted then
      dir = fs.dir
      assert(os.execute("truncate -s 24M " .. dir .. "/data.img"))
    end
  end)
  lazy_teardown(function()
    if vm then vm:close() end
    if fs then fs.unmount() end
  end)

  it("is refused in one line on a filesystem without O_DIRECT", function()
    local tmpfs = S.tmp_path("tmpfs.img")
    assert(os.execute("truncate -s 4M " .. tmpfs))
    local err = nil
    local probe = vmm.vm { name = "disk-none-probe", memory = "64M", vcpus = 1, kernel = S.kernel }
    local ok, e = pcall(probe.add_disk, probe, { path = tmpfs, cache = "none" })
    probe:close()
    os.remove(tmpfs)
    if ok then
      pending("this machine's " .. tmpfs .. " takes O_DIRECT")
      return
    end
    err = tostring(e)
    assert.matches('cache = "none" needs O_DIRECT', err, 1, true)
    assert.is_nil(err:find("\n"))
  end)

  it("takes writes the guest made durable, and they are in the image, read back with O_DIRECT once the VM stopped", function()
    assert(mounted, why_not)
    local image = dir .. "/data.img"
    vm = vmm.vm {
      name = "disk-none", memory = "256M", vcpus = S.VCPUS,
      kernel = S.kernel, initrd = S.initrd, console = "none", cmdline = S.CMDLINE,
    }
    vm:add_disk { path = image, cache = "none" }
    assert.are.equal("none", vm:disks()[1].cache)
    assert(vm:start())
    S.wait_boot(vm)
    assert.matches("wrote 16 MiB", S.sh(vm, "diskwrite write /dev/vda 4 16 11 --direct", 300))
    assert.matches("ok 16 MiB", S.sh(vm, "diskwrite verify /dev/vda 4 16 11 --direct", 300))
    assert.are.equal(0, vm:disks()[1].io_errors)
    vm:close()
    vm = nil
    local out, status = host_diskwrite("verify", image, "4", "16", "11", "--direct")
    assert.are.equal(0, status, out)
    assert.matches("ok 16 MiB", out)
  end)
end)
