-- Shared by the specs: where the repository and the vmm executable are, and
-- running the executable with some input.
--   local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")
local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."
M.root = here .. "/../.."

-- VMM_BIN, else build/vmm of this repository.
M.bin = os.getenv("VMM_BIN") or (M.root .. "/build/vmm")

function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function M.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

function M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- A temporary file holding text (removed by M.cleanup).
local temps = {}
function M.temp_file(text)
  local path = os.tmpname()
  temps[#temps + 1] = path
  return M.write_file(path, text or "")
end

function M.cleanup()
  for _, p in ipairs(temps) do os.remove(p) end
  temps = {}
end

-- Runs a shell command line; returns exit status, stdout, stderr.
function M.sh(cmdline, input)
  local inp, out, err = M.temp_file(input or ""), M.temp_file(), M.temp_file()
  local ok, how, code = os.execute(string.format("(%s) <%s >%s 2>%s", cmdline, inp, out, err))
  if how == "signal" then code = 128 + code end
  return ok and 0 or code, M.read_file(out), M.read_file(err)
end

-- Runs the vmm executable with arguments (each quoted).
function M.vmm(args, input)
  local words = { M.quote(M.bin) }
  for _, a in ipairs(args) do words[#words + 1] = M.quote(a) end
  return M.sh(table.concat(words, " "), input)
end

-- The path of a Linux kernel of the host, or nil.
function M.host_kernel()
  local ok, path = pcall(require("vmm").default_kernel)
  return ok and path or nil
end

-- Whether this machine's /dev/kvm can run the guests (the VMM's own check,
-- vmm.kvm(): kvm-pvm, say, opens fine but cannot).
function M.kvm_usable()
  return require("vmm").kvm().usable
end

-- Whether capability number `cap` is in this process's effective set.
local function has_cap(cap)
  local f = io.open("/proc/self/status", "r")
  if not f then return false end
  local s = f:read("a")
  f:close()
  local caps = tonumber(s:match("\nCapEff:%s+(%x+)") or "0", 16) or 0
  return caps & (1 << cap) ~= 0
end

-- CAP_NET_ADMIN in the effective set (root, unless a container dropped it).
function M.can_admin_net() return has_cap(12) end

-- CAP_SYS_ADMIN (mounts: a read-only bind mount).
function M.can_mount() return has_cap(21) end

-- An `it` that runs only where the machine allows: support.guarded(it,
-- pending, {ok, why}, ...) -> a function(name, fn) that declares it(name,
-- fn), or, when some `ok` is false, a pending test "name (why)" with the
-- first such why. Pass the describe block's own it and pending (busted
-- gives a running test another pending).
function M.guarded(it, pending, ...)
  local needs = { ... }
  return function(name, fn)
    for _, n in ipairs(needs) do
      if not n[1] then return pending(name .. " (" .. n[2] .. ")") end
    end
    return it(name, fn)
  end
end

-- This process's pid (for names no other run uses).
function M.pid()
  local f = io.open("/proc/self/stat", "r")
  local n = f and f:read("n")
  if f then f:close() end
  return n or math.random(1, 99999)
end

return M
