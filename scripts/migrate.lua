-- scripts/migrate.lua — take over a running VM (the VMM upgrade case).
--
--   vmm script scripts/migrate.lua SOCKET [--no-transfer] [--console FILE|none|stdout]
--                                         [--timeout SECONDS]
--
-- Connects to SOCKET, the control socket of the VMM process running the VM
-- (vm:serve), and moves the VM into this process. Each network device's
-- backend (its TAP queues) comes over when the source allows it; otherwise
-- a new TAP is opened here and the host side of the network (addresses,
-- MAC, link state) is switched over to it. Prints what happened and the
-- freeze time, then serves SOCKET itself, so the next upgrade can take the
-- VM from this process, and runs until the VM stops.
-- Exit status: 0 once the VM stopped or moved on, 1 if the migration
-- failed (the VM then still runs in the source process).
local vmm = require "vmm"

local function usage(msg)
  io.stderr:write("migrate.lua: ", msg, "\n",
    "usage: vmm script scripts/migrate.lua SOCKET [--no-transfer] [--console FILE|none|stdout] [--timeout S]\n")
  os.exit(2)
end

local args = { ... }
local socket, transfer, console, timeout = nil, true, "stdout", 30
local i = 1
while i <= #args do
  local a = args[i]
  if a == "--no-transfer" then transfer = false
  elseif a == "--console" then i = i + 1 console = args[i] or usage("--console needs a value")
  elseif a == "--timeout" then i = i + 1 timeout = tonumber(args[i]) or usage("--timeout needs seconds")
  elseif a:sub(1, 2) == "--" then usage("unknown option " .. a)
  elseif socket then usage("unexpected argument " .. a)
  else socket = a end
  i = i + 1
end
if not socket then usage("missing the control socket path") end

local t0 = vmm.now()
local vm, report = vmm.receive { from = socket, backend_transfer = transfer, console = console, timeout = timeout }
if not vm then
  io.stderr:write("migrate.lua: ", report, "\n")
  os.exit(1)
end

local names = {}
for name in pairs(report.transferred) do names[#names + 1] = name end
table.sort(names)
local parts = {}
for _, name in ipairs(names) do
  local tap, other = report.new_taps[name], report.new_backends[name]
  parts[#parts + 1] = report.transferred[name] and (name .. ": backend transferred")
    or tap and (name .. ": new TAP " .. tap) or (name .. ": reopened " .. tostring(other))
end
-- Where the freeze went, in ms from the source's pause: the state
-- arrived, was loaded, the source committed, the vCPUs run here.
local function at(t) return string.format("%.1f", (t - report.freeze) * 1000) end
io.stderr:write(string.format("migrate.lua: took over %s from process %d: freeze %.1f ms (state in %s, loaded %s, "
  .. "committed %s, running %s), total %.1f ms%s%s\n",
  report.name, report.peer_pid, report.freeze_ms, at(report.sent), at(report.loaded), at(report.commit),
  at(report.resumed), (vmm.now() - t0) * 1000, #parts > 0 and "; " or "", table.concat(parts, ", ")))
for _, p in ipairs(report.switch_problems) do io.stderr:write("migrate.lua: network switch-over: ", p, "\n") end

-- Serve the same socket for the next upgrade. The source removes its
-- socket file as it lets go; retry briefly until it has.
local server, err
for _ = 1, 50 do
  server, err = vm:serve(socket, { backend_transfer = transfer, timeout = timeout })
  if server or not err:find("listens on it", 1, true) then break end
  vmm.sleep(0.1)
end
if not server then io.stderr:write("migrate.lua: ", err, "\n") end
io.stderr:write("migrate.lua: serving ", socket, "\n")

vm:wait("stopped", math.huge)
io.stderr:write("migrate.lua: ", vm:stop_reason(), "\n")
os.exit(0)
