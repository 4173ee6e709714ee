-- Give a guest a network: a TAP on the host with 10.0.2.1/24, the guest
-- with 10.0.2.15/24 on virtio-net, then ping both ways.
--   vmm script examples/net.lua [vhost]      (vhost: the kernel datapath)
local vmm = require "vmm"

local vhost = arg[1] == "vhost"
local vm = vmm.vm {
  name = "net-example", memory = "256M", vcpus = 2,
  kernel = os.getenv("VMM_KERNEL") or vmm.default_kernel(),
  initrd = os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz",
  -- the guest image configures eth0 from luavmm.ip=ADDR/PREFIX[,GATEWAY]
  cmdline = vmm.DEFAULT_CMDLINE .. " quiet luavmm.ip=10.0.2.15/24",
  console = "stdout",
}
-- Opens (creating if needed) the TAP now, and /dev/vhost-net with vhost.
vm:add_net { ifname = "vmtap0", mac = "52:54:00:12:34:56", queues = 2, vhost = vhost }
-- The host side of the link, through netlink (vmm.net).
assert(vmm.net.add_address("vmtap0", "10.0.2.1/24"))
assert(vmm.net.set_up("vmtap0", true))

assert(vm:start())
assert(vm:wait_boot(180))
local out, status = vmm.command({ "ping", "-c", "3", "10.0.2.15" }, { timeout = 30 })
print(string.format("\n[vmm] host -> guest ping (exit %s):\n%s", tostring(status), out))
print("[vmm] guest -> host ping:", vm:sh("ping -c 3 10.0.2.1 | tail -2", 60))
for _, n in ipairs(vm:nets()) do
  print(string.format("[vmm] %s on %s: %d packets to the guest, %d from it, %d queue pair(s) active",
    n.name, n.ifname, n.rx_packets, n.tx_packets, n.active_pairs))
end
vm:stop()
