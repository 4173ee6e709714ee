-- Host commands run beside the VM without blocking the event loop (the VM's
-- userspace datapath and console run on the same loop):
--
--   local out, status = vmm.command({ "ping", "-c", "3", "10.0.2.15" }, { timeout = 20 })
--   local srv = vmm.background({ "busybox", "nc", "-l", "-p", "5000" }, { stdout = "/tmp/rx" })
--   ... ; local out, status = srv:wait(30)
--
-- argv is run directly (no shell). Options: stdin = path, stdout = path
-- (stdout and stderr are captured otherwise), hold_stdin = true (stdin is
-- an empty pipe held open until the command exits: for nc -l, which stops
-- at end of input), timeout = seconds.
local core = require "vmm.core"
local task = require "vmm.task"

local M = {}

-- process.stat_fields(path) -> the fields of a /proc stat file (a
-- process's or a thread's) after its comm, which is in parentheses and may
-- hold spaces: [1] is the state (field 3 of proc(5)), [n] field n + 2; nil
-- when it is gone.
function M.stat_fields(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local line = f:read("l") or ""
  f:close()
  local rest = line:match("%) (.*)$")
  if not rest then return nil end
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return fields
end

local Command = {}
Command.__index = Command

local function check_argv(name, argv)
  if type(argv) ~= "table" or type(argv[1]) ~= "string" then
    error(name .. ": expected a list of strings (the program first), got " .. type(argv), 3)
  end
  for i, a in ipairs(argv) do
    if type(a) ~= "string" then
      error(string.format("%s: argv[%d] must be a string, got %s", name, i, type(a)), 3)
    end
  end
end

local function spawn(name, argv, opts)
  check_argv(name, argv)
  opts = opts or {}
  if type(opts) ~= "table" then error(name .. ": options must be a table", 3) end
  local proc, err = core.process_spawn(argv, { stdin = opts.stdin, stdout = opts.stdout, hold_stdin = opts.hold_stdin })
  if not proc then return nil, err end
  return setmetatable({ proc = proc, argv = argv }, Command)
end

-- cmd:wait([timeout]) -> output, status; or nil, "timeout ..." (the command
-- keeps running; kill it with cmd:kill()).
function Command:wait(timeout)
  if not task.wait(function() return self.proc:done() end, timeout) then
    return nil, string.format("timeout after %g s waiting for %s", timeout, self.argv[1])
  end
  return (self.proc:output()), self.proc:status()
end

-- cmd:output() -> what it printed so far
function Command:output() return (self.proc:output()) end
function Command:kill(signal) return self.proc:kill(signal) end
function Command:pid() return self.proc:pid() end
function Command:done() return self.proc:done() end

-- vmm.background(argv, opts) -> command, or nil, err if it cannot start.
function M.background(argv, opts)
  return spawn("vmm.background", argv, opts)
end

-- vmm.command(argv, opts) -> output, exit status (128 + signal if killed);
-- nil, err if it cannot start or outlives opts.timeout (default 60 s; it is
-- killed then).
function M.command(argv, opts)
  local cmd, err = spawn("vmm.command", argv, opts)
  if not cmd then return nil, err end
  local timeout = opts and opts.timeout or 60
  local out, status = cmd:wait(timeout)
  if not out then
    cmd:kill(9)
    return nil, status
  end
  return out, status
end

return M
