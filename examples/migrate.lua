-- Boot a guest with a network, move it to a new VMM process with its TAP
-- (scripts/migrate.lua, the upgrade case), then take it back into this
-- process, and show that the guest and its network carried on.
--   vmm script examples/migrate.lua [vhost] [no-transfer]
local vmm = require "vmm"

local opts = {}
for _, a in ipairs(arg) do opts[a] = true end
local transfer = not opts["no-transfer"]
local sock = "/tmp/luavmm-example-" .. math.random(1e6) .. ".sock"
local say = function(fmt, ...) print(string.format("[vmm] " .. fmt, ...)) end

local vm = vmm.vm {
  name = "migrate-example", memory = "256M", vcpus = 2,
  kernel = os.getenv("VMM_KERNEL") or vmm.default_kernel(),
  initrd = os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz",
  cmdline = vmm.DEFAULT_CMDLINE .. " quiet luavmm.ip=10.0.9.15/24",
  console = "none",
}
vm:add_net { ifname = "vmmig0", mac = "52:54:00:12:34:59", vhost = opts.vhost == true }
assert(vmm.net.add_address("vmmig0", "10.0.9.1/24"))
assert(vmm.net.set_up("vmmig0", true))
assert(vm:start())
assert(vm:wait_boot(180))
-- A process in the guest that counts, to show it is never restarted.
vm:sh("(i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done) & sleep 0.3")
say("guest up (%s); counter at %s", vm:sh("uname -r"), vm:sh("cat /tmp/count"))

-- 1. This process serves the VM; a new process takes it (the VMM upgrade).
assert(vm:serve(sock, { backend_transfer = transfer }))
local argv = { "/proc/self/exe", "script", "scripts/migrate.lua", sock, "--console", "none" }
if not transfer then argv[#argv + 1] = "--no-transfer" end
local child = assert(vmm.background(argv)) -- the same vmm binary, a new process
assert(vm:wait("stopped", 120))
say("this process gave the VM up: %s", vm:stop_reason())
vm:close()

-- 2. Take it back from the new process, through the socket it now serves.
local back, report
for _ = 1, 50 do
  back, report = vmm.receive { from = sock, backend_transfer = transfer, console = "none" }
  if back then break end
  vmm.sleep(0.1)
end
assert(back, report)
child:wait(30)
for line in (child:output() or ""):gmatch("[^\n]+") do say("child: %s", line) end
say("back in this process: freeze %.1f ms, net0 %s", report.freeze_ms,
    report.transferred.net0 and "TAP transferred" or ("new TAP " .. tostring(report.new_taps.net0)))
say("counter now at %s (same process: never restarted)", back:sh("cat /tmp/count"))
local out, status = vmm.command({ "ping", "-c", "3", "10.0.9.15" }, { timeout = 30 })
say("host -> guest ping after two migrations (exit %d): %s", status, out:match("%d+ received") or out)
back:stop()
