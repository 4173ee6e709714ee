-- Scenario: a guest that boots its root filesystem from a virtio-blk disk
-- (the ext4 image of scripts/rootfs-image, luavmm.root=/dev/vda) and has a
-- second, empty disk: 64 MiB written there with O_DIRECT|O_DSYNC (so the
-- guest was told it is on the image) survive a restart of the VM, block
-- for block. Needs /dev/kvm: run through scripts/testhost.
local vmm = require "vmm"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local S = dofile(here .. "migrate_support.lua")
local ROOTFS = os.getenv("VMM_ROOTFS") or "build/images/rootfs.ext4"

local function boot(name, root, data)
  local vm = vmm.vm {
    name = name, memory = "256M", vcpus = 2,
    kernel = S.kernel, initrd = S.initrd, console = "none",
    cmdline = vmm.DEFAULT_CMDLINE .. " luavmm.root=/dev/vda",
  }
  vm:add_disk { path = root, serial = "root0" }
  vm:add_disk { path = data }
  assert(vm:start())
  assert(vm:wait_boot(S.BOOT_TIMEOUT))
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
