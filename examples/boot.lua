-- Boot a small Linux guest, talk to it over its serial console, stop it.
--   vmm script examples/boot.lua [KERNEL [INITRD]]
-- The guest's console is echoed to stdout as it runs.
local vmm = require "vmm"

local kernel = arg[1] or os.getenv("VMM_KERNEL") or vmm.default_kernel()
local initrd = arg[2] or os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz"

local vm = vmm.vm {
  name = "example",
  memory = "256M",
  vcpus = 2,
  kernel = kernel,
  initrd = initrd,
  cmdline = vmm.DEFAULT_CMDLINE .. " quiet",
  console = "stdout",
}

local t0 = vmm.now()
assert(vm:start())
assert(vm:wait_boot(180))
print(string.format("\n[vmm] guest ready after %.2f s (boot marker at %.2f s)",
  vmm.now() - t0, vm:boot_time() or -1))

for _, cmd in ipairs { "uname -r", "nproc", "cat /proc/meminfo | head -1" } do
  local out, status = assert(vm:sh(cmd, 60))
  print(string.format("\n[vmm] %s -> %q (exit %d)", cmd, out, status))
end

vm:stop()
print("[vmm] " .. tostring(vm))
