-- Give a guest disks: its root filesystem on a virtio-blk disk (the ext4
-- image scripts/rootfs-image builds; scripts/setup does), and a second,
-- empty one it writes to and reads back.
--   vmm script examples/disk.lua
local vmm = require "vmm"

local root = os.tmpname() -- a private copy: the example writes to its root
assert(os.execute("cp --sparse=always build/images/rootfs.ext4 " .. root))
local data = os.tmpname()
assert(os.execute("truncate -s 64M " .. data))

local vm = vmm.vm {
  name = "disk-example", memory = "256M", vcpus = 2,
  kernel = os.getenv("VMM_KERNEL") or vmm.default_kernel(),
  initrd = os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz",
  -- the guest image's init mounts luavmm.root and switches to it
  cmdline = vmm.DEFAULT_CMDLINE .. " quiet luavmm.root=/dev/vda",
  console = "stdout",
}
-- Opened and locked now: a missing or busy image fails at this line.
vm:add_disk { path = root, serial = "root0" }
vm:add_disk { path = data, cache = "writethrough" }

assert(vm:start())
assert(vm:wait_boot(180))
print("[vmm] root:", vm:sh("grep ' / ' /proc/mounts", 30))
print("[vmm]", vm:sh("diskwrite write /dev/vdb 0 16 42 --direct", 300))
print("[vmm]", vm:sh("diskwrite verify /dev/vdb 0 16 42 --direct", 300))
for _, d in ipairs(vm:disks()) do
  print(string.format("[vmm] %s on %s: %d reads (%d bytes), %d writes (%d bytes), %d flushes, %d errors",
    d.name, d.path, d.read_reqs, d.read_bytes, d.write_reqs, d.write_bytes, d.flush_reqs, d.io_errors))
end
vm:stop()
os.remove(root)
os.remove(data)
