-- vm:add_disk on a VM that is composed but never started (no KVM needed):
-- every field is checked and a bad one named; the image is opened and
-- locked at once, so a missing file, a directory, a read-only file asked
-- for writing and an image in use fail here, in one line naming the path.
-- Needs a kernel in /boot for vmm.vm; otherwise pending with the reason.
local vmm = require "vmm"
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")

local has_kernel, KERNEL = pcall(vmm.default_kernel)
local DIR = os.tmpname()
os.remove(DIR)
assert(os.execute("mkdir -p " .. DIR))
local IMAGE = DIR .. "/disk.img"

local function make_image(path, mib)
  assert(os.execute(string.format("truncate -s %dM %s", mib or 4, path)))
end

describe("vm:add_disk on a composed VM", function()
  local vm, vm2

  before_each(function()
    if not has_kernel then return end
    make_image(IMAGE)
    vm = vmm.vm { name = "adddisk", memory = "64M", vcpus = 1, kernel = KERNEL }
  end)
  after_each(function()
    if vm then vm:close() vm = nil end
    if vm2 then vm2:close() vm2 = nil end
  end)
  teardown(function() os.execute("rm -rf " .. DIR) end)

  local kit = support.guarded(it, pending, { has_kernel, "needs a kernel for vmm.vm: " .. tostring(KERNEL) })

  local function add_disk_error(settings)
    local ok, err = pcall(vm.add_disk, vm, settings)
    assert.is_false(ok, "vm:add_disk accepted " .. tostring(settings.path))
    return err
  end

  kit("adds a disk with its defaults, listed by vm:disks() with its absolute path", function()
    vm:add_disk { path = IMAGE }
    local disks = vm:disks()
    assert.are.equal(1, #disks)
    local d = disks[1]
    assert.are.equal("disk0", d.name)
    assert.are.equal(IMAGE, d.path)
    assert.is_false(d.readonly)
    assert.are.equal("writeback", d.cache)
    assert.are.equal(4 * 1024 * 1024 / 512, d.capacity_sectors)
    assert.are.equal(0, d.write_reqs)
  end)

  kit("names each bad field", function()
    local cases = {
      { {}, "vm:add_disk: path: required" },
      { { path = "" }, "vm:add_disk: path: expected the path" },
      { { path = IMAGE, readonly = "yes" }, "vm:add_disk: readonly: expected true or false" },
      { { path = IMAGE, queues = 0 }, "vm:add_disk: queues: expected a number of request queues from 1 to" },
      { { path = IMAGE, queues = 17 }, "vm:add_disk: queues: expected" },
      { { path = IMAGE, queue_size = 100 }, "vm:add_disk: queue_size: expected a power of 2 from 64 to 1024" },
      { { path = IMAGE, cache = "unsafe" }, 'vm:add_disk: cache: expected "writeback", "writethrough" or "none", got "unsafe"' },
      { { path = IMAGE, serial = string.rep("x", 21) }, "vm:add_disk: serial: expected 1 to 20 printable" },
      { { path = IMAGE, serial = "a\nb" }, "vm:add_disk: serial: expected" },
      { { path = IMAGE, name = "a b" }, "vm:add_disk: name: expected 1 to 15 letters" },
      { { path = IMAGE, backend_transfer = 1 }, "vm:add_disk: backend_transfer: expected true or false" },
      { { path = IMAGE, size = 1 }, 'vm:add_disk: unknown field "size" (known: path, readonly' },
    }
    for _, c in ipairs(cases) do
      local err = add_disk_error(c[1])
      assert.matches(c[2], err, 1, true)
    end
    assert.are.equal(0, #vm:disks())
  end)

  kit("refuses a missing image, naming its path", function()
    local err = add_disk_error { path = DIR .. "/nope.img" }
    assert.matches(DIR .. "/nope.img", err, 1, true)
    assert.matches("No such file or directory", err, 1, true)
  end)

  kit("refuses a directory", function()
    local err = add_disk_error { path = DIR }
    assert.matches(DIR, err, 1, true)
    assert.matches("directory", err, 1, true)
  end)

  kit("refuses an image another VM holds, and a second disk on the same image", function()
    vm:add_disk { path = IMAGE }
    vm2 = vmm.vm { name = "adddisk2", memory = "64M", vcpus = 1, kernel = KERNEL }
    local ok, err = pcall(vm2.add_disk, vm2, { path = IMAGE })
    assert.is_false(ok)
    assert.matches(IMAGE, err, 1, true)
    assert.matches("in use", err, 1, true)
    err = add_disk_error { path = IMAGE, name = "again" }
    assert.matches("already the backend of disk0", err, 1, true)
  end)

  kit("lets two VMs share an image read-only, and no writer beside them", function()
    vm:add_disk { path = IMAGE, readonly = true }
    vm2 = vmm.vm { name = "adddisk2", memory = "64M", vcpus = 1, kernel = KERNEL }
    vm2:add_disk { path = IMAGE, readonly = true }
    local vm3 = vmm.vm { name = "adddisk3", memory = "64M", vcpus = 1, kernel = KERNEL }
    local ok, err = pcall(vm3.add_disk, vm3, { path = IMAGE })
    vm3:close()
    assert.is_false(ok)
    assert.matches("in use", err, 1, true)
  end)

  kit("frees the image when the VM closes", function()
    vm:add_disk { path = IMAGE }
    vm:close()
    vm = vmm.vm { name = "adddisk", memory = "64M", vcpus = 1, kernel = KERNEL }
    vm:add_disk { path = IMAGE }
    assert.are.equal(1, #vm:disks())
  end)

  kit("refuses writing to an image on a read-only mount, and opens it read-only", function()
    if not support.can_mount() then
      pending("needs CAP_SYS_ADMIN for a read-only bind mount")
      return
    end
    local ro = DIR .. "/ro"
    assert(os.execute("mkdir -p " .. ro))
    if not os.execute(string.format("mount --bind %s %s && mount -o remount,bind,ro %s", DIR, ro, ro)) then
      pending("cannot make a read-only bind mount here")
      return
    end
    local ok, err = pcall(vm.add_disk, vm, { path = ro .. "/disk.img" })
    local ok2, err2 = pcall(vm.add_disk, vm, { path = ro .. "/disk.img", readonly = true, name = "ro" })
    vm:close()
    vm = nil
    os.execute("umount " .. ro)
    assert.is_false(ok)
    assert.matches("read-only", err, 1, true)
    assert.is_true(ok2, err2)
  end)

  kit("refuses cache = \"none\" where the filesystem has no O_DIRECT, in one line", function()
    local shm = "/dev/shm/vm_disk_spec." .. support.pid() .. ".img"
    make_image(shm)
    local ok, err = pcall(vm.add_disk, vm, { path = shm, cache = "none" })
    os.remove(shm)
    if ok then
      pending("this /dev/shm takes O_DIRECT")
      return
    end
    assert.matches('cache = "none" needs O_DIRECT', err, 1, true)
    assert.is_nil(err:find("\n"))
  end)
end)
