-- tests/compat/source.lua SOCKET IFNAME SUBNET PORT MAC: the first source
-- of the cross-version migration (tests/scenario/compat_spec.lua). Run by
-- the BASELINE's vmm, from the baseline's own tree (build/baseline/src), so
-- it may use only what that build has. Boots the guest (2 vCPUs, one
-- virtio-net on TAP IFNAME with the userspace datapath, the host at
-- SUBNET.1, the guest at SUBNET.15), starts in the guest a counter that
-- writes 1, 2, 3... ten times a second to a TCP connection to SUBNET.1:PORT
-- (the spec listens there), serves SOCKET with backend transfer, and exits
-- 0 once the VM went to another process. Its output, one line each:
--   compat: counter PID NC_PID      compat: serving SOCKET
--   compat: <the VM's stop reason>
local vmm = require "vmm"

local here = arg[0]:match("^(.*/)") or "./"
local S = dofile(here .. "../scenario/migrate_support.lua")

local sock, ifname, subnet, port, mac = arg[1], arg[2], arg[3], arg[4], arg[5]
assert(sock and ifname and subnet and port and mac, "usage: source.lua SOCKET IFNAME SUBNET PORT MAC")

local function say(s)
  io.stdout:write("compat: ", s, "\n")
  io.stdout:flush()
end

local vm, host_ip = S.boot { name = "compat", ifname = ifname, subnet = subnet, queues = 1, vhost = false,
                             mac = mac, backend_transfer = true }
S.sh(vm, "rm -f /tmp/count /tmp/counter.pid /tmp/nc.pid; " ..
  "sh -c 'echo $$ > /tmp/counter.pid; i=0; " ..
  "while :; do i=$((i+1)); echo $i > /tmp/count; echo $i; sleep 0.1; done' " ..
  "| nc " .. host_ip .. " " .. port .. " & echo $! > /tmp/nc.pid")
vmm.sleep(0.3)
say("counter " .. S.sh(vm, "cat /tmp/counter.pid") .. " " .. S.sh(vm, "cat /tmp/nc.pid"))
assert(vm:serve(sock, { backend_transfer = true }))
say("serving " .. sock)
vm:wait("stopped", math.huge)
say(tostring(vm:stop_reason()))
os.exit(0)
