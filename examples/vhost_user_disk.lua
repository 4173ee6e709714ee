-- A guest whose disk another process serves over vhost-user: a
-- qemu-storage-daemon started here exports a raw image, the VM's disk
-- connects to its socket, the guest writes and reads it back.
--   vmm script examples/vhost_user_disk.lua     (scripts/testhost runs it where KVM is not usable)
local vmm = require "vmm"

local image, socket = os.tmpname(), os.tmpname() .. ".sock"
assert(os.execute("truncate -s 64M " .. image))
local daemon = assert(vmm.background {
  "qemu-storage-daemon",
  "--blockdev", "driver=file,node-name=d0,filename=" .. image,
  "--export", "type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=" .. socket .. ",writable=on",
})
-- the socket appears once the daemon listens (opening it gives ENXIO then)
assert(vmm.wait_until(function() return select(3, io.open(socket)) == 6 end, 10), "no " .. socket)

local vm = vmm.vm {
  name = "vub-example", memory = "256M", vcpus = 1,
  kernel = os.getenv("VMM_KERNEL") or vmm.default_kernel(),
  initrd = os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz",
  cmdline = vmm.DEFAULT_CMDLINE .. " quiet",
  console = "stdout",
}
vm:add_disk { vhost_user = socket } -- connects now; the capacity comes from the daemon
assert(vm:start())
assert(vm:wait_boot(180))
print("[vmm] vda:", vm:sh("cat /sys/block/vda/size", 30), "sectors")
print("[vmm]", vm:sh("diskwrite write /dev/vda 0 16 42 --direct", 300))
print("[vmm]", vm:sh("diskwrite verify /dev/vda 0 16 42 --direct", 300))
local d = vm:disks()[1]
print(string.format("[vmm] %s on %s: connected %s, %d queue(s) running", d.name, d.vhost_user, d.connected,
  d.queues_running))
vm:close() -- first: the disk would report the daemon's end as a failure
daemon:kill(9)
daemon:wait(10)
os.remove(image)
os.remove(socket)
