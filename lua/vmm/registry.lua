-- The per-user registry of VMMs that serve a control socket, for `vmm ls`
-- and `vmm attach NAME`. Each serving VM has one entry file in the runtime
-- directory, named after the process and a sequence number (never after
-- the VM: during a local migration the source and the target hold the same
-- VM name at once), holding key=value lines: name, pid, start (the
-- process's start time in clock ticks, so that a reused PID reads as
-- stale), socket. A VM served without a path gets its socket there too,
-- named after it. An entry whose process is gone, or whose socket refuses,
-- is stale: listed as such.
local core = require "vmm.core"

local M = {}

local SUFFIX = ".vm"

-- The runtime directory: $VMM_RUNTIME_DIR, else $XDG_RUNTIME_DIR/luavmm,
-- else /run/user/UID/luavmm where that exists, else /run/luavmm for root
-- and /tmp/luavmm-UID for others. -> path (created, 0700), or nil, err.
function M.dir()
  local dir = os.getenv("VMM_RUNTIME_DIR")
  if not dir or dir == "" then
    local uid = core.euid()
    local xdg = os.getenv("XDG_RUNTIME_DIR")
    local run_user = "/run/user/" .. uid
    if xdg and xdg ~= "" then dir = xdg .. "/luavmm"
    elseif core.list_dir(run_user) then dir = run_user .. "/luavmm"
    elseif uid == 0 then dir = "/run/luavmm"
    else dir = "/tmp/luavmm-" .. uid end
  end
  local ok, err = core.private_dir(dir)
  if not ok then return nil, "the VMM runtime directory " .. err end
  return dir
end

-- A process's start time (field 22 of /proc/PID/stat), or nil when it is
-- gone.
local function start_time(pid)
  local fields = require("vmm.process").stat_fields("/proc/" .. pid .. "/stat")
  return fields and fields[20]
end

-- The default control socket of VM `name` -> path, or nil, err.
function M.default_socket(name)
  local dir, err = M.dir()
  if not dir then return nil, err end
  return dir .. "/" .. name .. ".sock"
end

-- Another default, for when `name`'s is taken by a live VMM (the other end
-- of a local migration, say): named after the VM and this process.
function M.second_socket(name)
  local dir, err = M.dir()
  if not dir then return nil, err end
  return string.format("%s/%s.%d.sock", dir, name, core.pid())
end

local seq = 0

-- Registers VM `name` served at `socket` -> an entry with :remove() (also
-- run when the entry is collected or the Lua state closes), or nil, err.
function M.register(name, socket)
  local dir, err = M.dir()
  if not dir then return nil, err end
  if socket:sub(1, 1) ~= "/" then
    local pwd = os.getenv("PWD")
    if pwd then socket = pwd .. "/" .. socket end
  end
  seq = seq + 1
  local pid = core.pid()
  local path = string.format("%s/%d.%d%s", dir, pid, seq, SUFFIX)
  local tmp = path .. ".new"
  local f, ferr = io.open(tmp, "w")
  if not f then return nil, "vmm registry: " .. ferr end
  f:write(string.format("name=%s\npid=%d\nstart=%s\nsocket=%s\n", name, pid, start_time(pid) or "?", socket))
  local closed, cerr = f:close()
  if not closed then os.remove(tmp) return nil, "vmm registry: " .. tostring(cerr) end
  local ok, rerr = os.rename(tmp, path)
  if not ok then os.remove(tmp) return nil, "vmm registry: " .. rerr end
  local entry = { path = path }
  function entry.remove()
    if entry.path then os.remove(entry.path) entry.path = nil end
  end
  return setmetatable(entry, { __gc = entry.remove, __close = entry.remove })
end

-- Parses one entry file -> {name, pid, start, socket, file}, or nil when
-- it is not one (a key missing, a pid that is no PID).
local function read_entry(file)
  local f = io.open(file, "r")
  if not f then return nil end
  local e = { file = file }
  for line in f:lines() do
    local k, v = line:match("^(%a+)=(.*)$")
    if k then e[k] = v end
  end
  f:close()
  e.pid = math.tointeger(tonumber(e.pid))
  if not (e.name and e.pid and e.socket) or e.pid <= 0 or e.pid > 0x7fffffff then return nil end
  return e
end

-- The entries -> list of {name, pid, socket, file, stale = nil | why},
-- by PID then file name. Whether a live one answers is for the caller.
function M.entries()
  local dir, err = M.dir()
  if not dir then return nil, err end
  local names = core.list_dir(dir) or {}
  local list = {}
  for _, n in ipairs(names) do
    if n:sub(-#SUFFIX) == SUFFIX then
      local e = read_entry(dir .. "/" .. n)
      if e then
        if not core.pid_alive(e.pid) then
          e.stale = "process " .. e.pid .. " is gone"
        elseif e.start ~= "?" and start_time(e.pid) ~= e.start then
          e.stale = "process " .. e.pid .. " is gone (its PID was reused)"
        end
        list[#list + 1] = e
      end
    end
  end
  table.sort(list, function(a, b)
    if a.pid ~= b.pid then return a.pid < b.pid end
    return a.file < b.file
  end)
  return list
end

-- What a live VMM is asked (through an attach session): one line.
local QUERY = [[
local i = vm:info()
local d = {}
for _, x in ipairs(vm:devices()) do if not x.board then d[#d + 1] = x.name .. "=" .. x.kind end end
print(table.concat({ i.state, i.memory, i.vcpus, table.concat(d, ",") }, "\t"))
]]

-- vmm.ls{timeout = 2} -> list of {name, pid, socket, state, memory,
-- vcpus, devices = {{name, kind}, ...}, stale = why (state "stale"),
-- problem = why (state "not answering")}: every registered VMM, each live
-- one asked over its control socket.
function M.list(opts)
  opts = opts or {}
  local timeout = opts.timeout or 2
  local list, err = M.entries()
  if not list then return nil, err end
  for _, e in ipairs(list) do
    if not e.stale then
      local line, why = require("vmm.attach").query(e.socket, QUERY, timeout)
      local state, memory, vcpus, devices = (line or ""):match("^(%S+)\t(%d+)\t(%d+)\t([^\n]*)")
      if state then
        e.state, e.memory, e.vcpus = state, math.tointeger(tonumber(memory)), math.tointeger(tonumber(vcpus))
        e.devices = {}
        for name, kind in devices:gmatch("([^,=]+)=([^,]+)") do e.devices[#e.devices + 1] = { name = name, kind = kind } end
      elseif why and (why:find("Connection refused", 1, true) or why:find("No such file", 1, true)) then
        e.stale = "its control socket refuses (" .. why .. ")"
      else
        e.state, e.problem = "not answering", why or ("an answer that is not one: " .. string.format("%q", line))
      end
    end
    if e.stale then e.state = "stale" end
  end
  return list
end

local function mib(bytes)
  if not bytes then return "-" end
  return string.format("%d MiB", bytes // (1024 * 1024))
end

-- The table `vmm ls` prints, from M.list's list -> text.
function M.format(list)
  local rows = { { "NAME", "STATE", "PID", "MEMORY", "VCPUS", "DEVICES", "SOCKET" } }
  for _, e in ipairs(list) do
    local devices = {}
    for _, d in ipairs(e.devices or {}) do devices[#devices + 1] = d.name .. " (" .. d.kind .. ")" end
    local socket = e.socket
    if e.stale then socket = socket .. "  [stale: " .. e.stale .. "]"
    elseif e.problem then socket = socket .. "  [" .. e.problem .. "]" end
    rows[#rows + 1] = { e.name, e.state, tostring(e.pid), mib(e.memory), e.vcpus and tostring(e.vcpus) or "-",
                        #devices > 0 and table.concat(devices, ", ") or "-", socket }
  end
  local width = {}
  for _, r in ipairs(rows) do
    for i = 1, #r - 1 do width[i] = math.max(width[i] or 0, #r[i]) end
  end
  local lines = {}
  for _, r in ipairs(rows) do
    local cells = {}
    for i = 1, #r - 1 do cells[i] = r[i] .. string.rep(" ", width[i] - #r[i]) end
    cells[#r] = r[#r]
    lines[#lines + 1] = table.concat(cells, "  ")
  end
  return table.concat(lines, "\n") .. "\n"
end

-- The socket of the one live VMM serving VM `name` (for vmm attach NAME)
-- -> path, or nil and why (none; or several, a migration in progress,
-- and true).
function M.socket_of(name)
  local list, err = M.entries()
  if not list then return nil, err end
  local found = {}
  for _, e in ipairs(list) do
    if e.name == name and not e.stale then found[#found + 1] = e end
  end
  if #found == 1 then return found[1].socket end
  if #found == 0 then return nil, "no running VMM serves a VM named " .. name .. " (vmm ls lists them)" end
  local which = {}
  for _, e in ipairs(found) do which[#which + 1] = string.format("process %d at %s", e.pid, e.socket) end
  return nil, string.format("%d VMMs serve a VM named %s (%s): give the socket", #found, name,
                            table.concat(which, ", ")), true
end

return M
