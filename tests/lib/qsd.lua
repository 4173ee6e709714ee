-- qemu-storage-daemon as a vhost-user-blk backend for the specs and the
-- scenarios (tests/unit/qsd.c is the C tests' twin):
--
--   local qsd = dofile(root .. "/tests/lib/qsd.lua")
--   local d = assert(qsd.start { image = "/tmp/d.img", mib = 16, socket = "/tmp/d.sock" })
--   vm:add_disk { vhost_user = d.socket } ... d:stop()
--
-- One daemon per export; it serves one front end at a time and listens
-- again when that one hangs up.
local vmm = require "vmm"

local M = {}
M.PROGRAM = "qemu-storage-daemon"

local Daemon = {}
Daemon.__index = Daemon

-- Whether the program is here -> true, or false and why not.
function M.available()
  local _, status = vmm.command({ "sh", "-c", "command -v " .. M.PROGRAM })
  if status == 0 then return true end
  return false, M.PROGRAM .. " is not installed (scripts/setup installs it: qemu-utils from bookworm-backports)"
end

-- qsd.start{image, mib?, socket, readonly?, queues?} -> daemon, or nil and why. The
-- image is made (sparse, mib MiB) unless it exists; returns once the
-- socket is there (at most 10 s).
function M.start(o)
  if o.mib then
    local _, status = vmm.command({ "sh", "-c", string.format("[ -e '%s' ] || truncate -s %dM '%s'", o.image,
                                                                 o.mib, o.image) })
    if status ~= 0 then return nil, "cannot make " .. o.image end
  end
  os.remove(o.socket)
  local proc, err = vmm.background({
    M.PROGRAM,
    "--blockdev", "driver=file,node-name=disk0,filename=" .. o.image,
    "--export", "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=" .. o.socket ..
      ",writable=" .. (o.readonly and "off" or "on") .. ",num-queues=" .. (o.queues or 1),
  })
  if not proc then return nil, err end
  local d = setmetatable({ proc = proc, socket = o.socket, image = o.image }, Daemon)
  local up = vmm.wait_until(function()
    if proc:done() then return true end
    -- a socket cannot be opened, but ENXIO ("No such device or address")
    -- says it is there
    local f, _, code = io.open(o.socket, "r")
    if f then f:close() return true end
    return code == 6
  end, 10)
  if not up or proc:done() then
    local out = proc:done() and proc:output() or "no socket after 10 s"
    proc:kill(9)
    return nil, M.PROGRAM .. " did not serve " .. o.socket .. ": " .. tostring(out)
  end
  vmm.sleep(0.1) -- from bind to listen
  return d
end

function Daemon:pid() return self.proc:pid() end
function Daemon:running() return not self.proc:done() end

-- The front ends the daemon holds -> list of socket inodes: its sockets
-- (/proc/PID/fd) that are connections accepted on the export's path
-- (/proc/net/unix shows them with that path; its stdio socketpairs have
-- none, its listening socket has the listening flag). How many front ends
-- it serves, and whether it is still the same connection.
function Daemon:connections()
  local accepted = {}
  local unix = io.open("/proc/net/unix", "r")
  if unix then
    for line in unix:lines() do
      -- Num RefCount Protocol Flags Type St Inode Path
      local flags, inode, path = line:match("^%x+: %x+ %x+ (%x+) %x+ %x+ (%d+) (.+)$")
      if inode and path == self.socket and flags ~= "00010000" then accepted[inode] = true end
    end
    unix:close()
  end
  local out = vmm.command({ "sh", "-c", "ls -l /proc/" .. self:pid() .. "/fd 2>/dev/null" })
  local list = {}
  for inode in tostring(out):gmatch("socket:%[(%d+)%]") do
    if accepted[inode] then list[#list + 1] = inode end
  end
  table.sort(list)
  return list
end

-- Stops it (SIGKILL: what the backend-death tests need too) and waits.
function Daemon:stop()
  if not self.proc:done() then
    self.proc:kill(9)
    self.proc:wait(10)
  end
  os.remove(self.socket)
end

return M
