-- vm:add_disk{vhost_user = SOCKET} on a VM that is composed but never
-- started (no KVM needed), against a real qemu-storage-daemon: the device
-- connects at once and asks the backend for its features and capacity; the
-- image-only fields are refused by name, and so is a socket nobody serves.
-- Pending with the reason without a kernel in /boot or without the daemon.
local vmm = require "vmm"
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")
local qsd = dofile(support.root .. "/tests/lib/qsd.lua")

local has_kernel, KERNEL = pcall(vmm.default_kernel)
local has_qsd, no_qsd = qsd.available()
local DIR = os.tmpname()
os.remove(DIR)
assert(os.execute("mkdir -p " .. DIR))
local SOCK, IMAGE = DIR .. "/vub.sock", DIR .. "/disk.img"

describe("vm:add_disk with a vhost-user backend (qemu-storage-daemon)", function()
  local daemon, vm

  before_each(function()
    if not (has_kernel and has_qsd) then return end
    daemon = assert(qsd.start { image = IMAGE, mib = 8, socket = SOCK })
    vm = vmm.vm { name = "vubdisk", memory = "64M", vcpus = 1, kernel = KERNEL }
  end)
  after_each(function()
    if vm then vm:close() vm = nil end
    if daemon then daemon:stop() daemon = nil end
  end)
  teardown(function() os.execute("rm -rf " .. DIR) end)

  local kit = support.guarded(it, pending, { has_kernel, "needs a kernel for vmm.vm: " .. tostring(KERNEL) },
                              { has_qsd, tostring(no_qsd) })

  kit("connects, and vm:disks() shows the socket and the capacity the backend gave", function()
    vm:add_disk { vhost_user = SOCK }
    local d = vm:disks()[1]
    assert.are.equal("disk0", d.name)
    assert.are.equal(SOCK, d.vhost_user)
    assert.is_true(d.connected)
    assert.are.equal(8 * 1024 * 1024 / 512, d.capacity_sectors)
    assert.are.equal(0, d.queues_running) -- no guest driver yet
    assert.is_false(d.backend_failed)
    assert.are.equal(1, #daemon:connections())
  end)

  kit("takes several queues from a backend that serves them, and refuses more than it serves", function()
    local ok, err = pcall(vm.add_disk, vm, { vhost_user = SOCK, queues = 2 })
    assert.is_false(ok)
    assert.matches("queues 2: vhost-user backend " .. SOCK .. " serves at most 1", err, 1, true)
    daemon:stop()
    daemon = assert(qsd.start { image = IMAGE, socket = SOCK, queues = 4 })
    vm:add_disk { vhost_user = SOCK, queues = 4, name = "mq" }
    local devs = vm:devices()
    assert.are.equal("vhost-user-blk", devs[#devs].kind)
    assert.are.equal(4, devs[#devs].config.queues)
  end)

  kit("refuses the fields of an image file with vhost_user, naming them", function()
    local ok, err = pcall(vm.add_disk, vm, { vhost_user = SOCK, path = IMAGE, cache = "none" })
    assert.is_false(ok)
    assert.matches("vm:add_disk: path, cache: not with vhost_user", err, 1, true)
    ok, err = pcall(vm.add_disk, vm, { vhost_user = SOCK, readonly = true })
    assert.is_false(ok)
    assert.matches("vm:add_disk: readonly: not with vhost_user", err, 1, true)
    ok, err = pcall(vm.add_disk, vm, { vhost_user = "" })
    assert.is_false(ok)
    assert.matches("vm:add_disk: vhost_user: expected the path of the backend's UNIX socket", err, 1, true)
    ok, err = pcall(vm.add_disk, vm, { vhost_user = SOCK, queues = 17 })
    assert.is_false(ok)
    assert.matches("vm:add_disk: queues: expected", err, 1, true)
    assert.are.equal(0, #vm:disks())
  end)

  kit("refuses a socket nobody serves, naming it, and a backend that has died", function()
    local ok, err = pcall(vm.add_disk, vm, { vhost_user = DIR .. "/nobody.sock" })
    assert.is_false(ok)
    assert.matches(DIR .. "/nobody.sock", err, 1, true)
    daemon:stop()
    ok, err = pcall(vm.add_disk, vm, { vhost_user = SOCK })
    assert.is_false(ok)
    assert.matches(SOCK, err, 1, true)
    assert.are.equal(0, #vm:disks())
  end)
end)
