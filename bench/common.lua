-- What the bench scripts share; bench/net.lua, bench/migrate.lua and
-- bench/disk.lua load it with dofile from their own folder.
local vmm = require "vmm"
local shell = require "vmm.shell"

local M = {}

-- The median of a list of numbers, nil for an empty list (xs is not sorted
-- in place).
function M.median(xs)
  if #xs == 0 then return nil end
  local s = {}
  for k, x in ipairs(xs) do s[k] = x end
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

-- The host's end of the TAP: address host_ip/24, link up.
function M.host_side_up(ifname, host_ip)
  assert(vmm.net.add_address(ifname, host_ip .. "/24"))
  assert(vmm.net.set_up(ifname, true))
end

-- Waits until the guest answers a ping (60 tries, 1 s each plus 0.5 s
-- apart); raises if it never does.
function M.wait_ping(guest_ip)
  for _ = 1, 60 do
    local _, status = vmm.command({ "ping", "-c", "1", "-W", "1", guest_ip }, { timeout = 10 })
    if status == 0 then return true end
    vmm.sleep(0.5)
  end
  error("the guest does not answer ping")
end

-- "a,b" -> {"a", "b"}; nil stays nil.
function M.split_list(s)
  if s == nil then return nil end
  local list = {}
  for w in tostring(s):gmatch("[^,%s]+") do list[#list + 1] = w end
  return list
end

-- Whether key is chosen by --only: no list chooses everything, otherwise
-- key must start with one of the list's words ("vmm" picks "vmm-tap").
function M.selected(only, key)
  if not only then return true end
  for _, w in ipairs(only) do
    if key:sub(1, #w) == w then return true end
  end
  return false
end

-- The last n characters of s (default 400) on one line, fit for a message
-- or a markdown table cell.
function M.tail(s, n)
  s = tostring(s or "")
  n = n or 400
  s = #s > n and ("..." .. s:sub(-n)) or s
  return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""):gsub("|", "/"))
end

-- ---- disk images ---------------------------------------------------------

-- A raw image of mib MiB, every block allocated (written with zeros, so
-- reading it measures the device, not holes).
function M.make_image(path, mib)
  local out, status = vmm.command({ "dd", "if=/dev/zero", "of=" .. path, "bs=1M", "count=" .. mib,
                                    "conv=fsync", "status=none" }, { timeout = 300 })
  if status ~= 0 then error("cannot write the image " .. path .. ": " .. M.tail(out or status)) end
end

-- A directory where files can be opened with O_DIRECT (tests/lib/fs.lua).
M.odirect_dir = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "../tests/lib/fs.lua").odirect_dir

-- The kernel command line for a QEMU guest of vcpus vCPUs booted like
-- vmm's with cmdline. vmm's guests (acpi=off) find their vCPUs in vmm's MP
-- table, but on QEMU's pc machine a guest with acpi=off finds only its
-- first vCPU (with -machine acpi=off too): with more than one, QEMU's guest
-- goes without acpi=off.
function M.qemu_cmdline(cmdline, vcpus)
  if vcpus <= 1 then return cmdline end
  return ((" " .. cmdline .. " "):gsub(" acpi=off ", " "):gsub("^ ", ""):gsub(" $", ""))
end

-- ---- a QEMU guest's shell ------------------------------------------------

-- QEMU with the guest's serial console (the argv must say -serial stdio) on
-- a FIFO and its output captured, so that the bench can run commands in
-- the guest as vm:sh does in vmm's:
--   local q = assert(common.qemu_shell(argv))
--   assert(q:wait_ready(240)); print(q:sh("uname -r", 30)); q:close()
-- q.cmd is the vmm.background command (q.cmd:output(), q.cmd:done(), ...).
local QemuShell = {}
QemuShell.__index = QemuShell

function M.qemu_shell(argv)
  local fifo = os.tmpname()
  os.remove(fifo)
  local _, status = vmm.command({ "mkfifo", "-m", "600", fifo })
  if status ~= 0 then return nil, "mkfifo " .. fifo .. " failed" end
  -- opened read-write, so that neither this open nor QEMU's (read-only, as
  -- its stdin) waits for the other end
  local input = io.open(fifo, "r+")
  if not input then os.remove(fifo); return nil, "cannot open the FIFO " .. fifo end
  local cmd, err = vmm.background(argv, { stdin = fifo })
  if not cmd then input:close(); os.remove(fifo); return nil, err end
  return setmetatable({ cmd = cmd, fifo = fifo, input = input, seen = 0 }, QemuShell)
end

-- Finds pattern in the output after what earlier calls consumed; on a
-- match consumes up to its end and returns its captures.
function QemuShell:expect(pattern, timeout)
  local found
  vmm.wait_until(function()
    local out = self.cmd:output()
    local r = table.pack(out:find(pattern, self.seen + 1))
    if r[1] then
      self.seen = r[2]
      found = r.n > 2 and table.pack(table.unpack(r, 3, r.n)) or table.pack(out:sub(r[1], r[2]))
      return true
    end
    return self.cmd:done()
  end, timeout)
  if found then return table.unpack(found, 1, found.n) end
  return nil, string.format("%s waiting for %q; last output: %s",
    self.cmd:done() and "QEMU exited" or ("timeout after " .. timeout .. " s (" .. self:cpu_use() .. ")"),
    pattern, M.tail(self.cmd:output():sub(self.seen + 1), 300))
end

-- "QEMU used N% of a CPU over 2 s": tells a guest that spins from one
-- that waits (or a QEMU that waits for nothing).
function QemuShell:cpu_use()
  local stat = "/proc/" .. self.cmd:pid() .. "/stat"
  local t0, a = vmm.now(), shell.cpu(stat)
  vmm.sleep(2)
  local b = shell.cpu(stat)
  if not a or not b then return "QEMU's CPU time unknown" end
  return string.format("QEMU used %.0f%% of a CPU over 2 s", (b - a) * 100 / (vmm.now() - t0))
end

function QemuShell:wait_ready(timeout)
  local ok, err = self:expect("LUAVMM%-GUEST%-READY", timeout)
  return ok and true, err
end

-- Runs cmd in the guest as vm:sh does (vmm.shell's marker protocol).
function QemuShell:sh(cmd, timeout)
  return shell.run(function(text) self.input:write(text) self.input:flush() end,
                   function(p, t) return self:expect(p, t) end, cmd, timeout)
end

-- Stops QEMU (SIGTERM, then SIGKILL) and removes the FIFO.
function QemuShell:close()
  if self.closed then return end
  self.closed = true
  if not self.cmd:done() then
    self.cmd:kill(15)
    if not self.cmd:wait(30) then self.cmd:kill(9); self.cmd:wait(10) end
  end
  self.input:close()
  os.remove(self.fifo)
end

return M
