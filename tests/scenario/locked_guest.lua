-- Run by boot_spec as `vmm --sandbox=ping script locked_guest.lua KERNEL
-- INITRD CMDLINE IFNAME IMAGE`: a guest with a TAP (userspace datapath) and a
-- disk, in a VMM that locks once the VM started. Prints one line per check,
-- "what<TAB>result", for the spec to compare.
local vmm = require "vmm"
local kernel, initrd, cmdline, ifname, image = table.unpack(arg, 1, 5)

local vm = vmm.vm {
  name = "locked", memory = "256M", vcpus = 1, kernel = kernel, initrd = initrd, console = "none",
  cmdline = cmdline .. " luavmm.ip=10.0.7.15/24",
}
vm:add_net { ifname = ifname, mac = "52:54:00:12:34:57" }
vm:add_disk { path = image }
assert(vmm.net.add_address(ifname, "10.0.7.1/24"))
assert(vmm.net.set_up(ifname, true))
print("before", vmm.locked())
assert(vm:start())
print("after", vmm.locked())
assert(vm:wait_boot(tonumber(os.getenv("VMM_BOOT_TIMEOUT") or "240")))
print("sh", (vm:sh("echo the guest runs", 60)))
-- the disk's I/O threads and the main thread's datapath work under the lock
print("disk", (vm:sh("echo locked-disk > /tmp/d; dd if=/tmp/d of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null;"
  .. " echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 11", 60)))
local out, status = vmm.command({ "ping", "-c", "2", "-W", "10", "10.0.7.15" }, { timeout = 60 })
print("ping", status, status == 0 and "" or out)
print("open", io.open("/etc/hostname"))
print("cat", vmm.command({ "cat", "/etc/hostname" }))
print("serve", vm:serve())
vm:stop()
