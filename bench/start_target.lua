-- What bench/start launches as vmm: a VM composed (not started) and its
-- control socket served, as a VMM that is about to take a VM over would.
-- Prints its own CPU time (getrusage) at the moment the socket listens,
-- then idles until the runner kills it.
--   vmm script bench/start_target.lua SOCKET KERNEL INITRD
local vmm = require "vmm"
local core = require "vmm.core"
local sock, kernel, initrd = arg[1], arg[2], arg[3]
local vm = vmm.vm { name = "start", memory = "256M", vcpus = 1, kernel = kernel, initrd = initrd, console = "none" }
assert(vm:serve(sock))
local user, sys = core.cpu_time()
io.write(string.format("listening cpu_ms=%.3f user_ms=%.3f sys_ms=%.3f\n", (user + sys) * 1e3, user * 1e3, sys * 1e3))
io.stdout:flush()
vmm.sleep(120)
