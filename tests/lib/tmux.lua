-- A program on a terminal, for the specs of what only a terminal shows
-- (line editing, history, completion): it runs in a detached tmux session
-- of its own (its own server socket), keys go in with send-keys, and the
-- screen comes back with capture-pane.
--
--   local tmux = dofile(root .. "/tests/lib/tmux.lua")
--   local t = assert(tmux.start { "build/vmm", "repl" }, { VMM_HISTORY = path })
--   t:type("1 + 1") t:keys("Enter") assert(t:wait_for("\n2\n")) t:close()
local vmm = require "vmm"

local M = {}

local Term = {}
Term.__index = Term

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Whether tmux is here -> true, or false and why not.
function M.available()
  local _, status = vmm.command({ "sh", "-c", "command -v tmux" })
  if status == 0 then return true end
  return false, "tmux is not installed (scripts/setup installs it)"
end

local count = 0

-- tmux.start(argv, env) -> a terminal (80x24) running argv with the
-- variables in env added, or nil and why. The program's exit leaves the
-- pane open ("[exited N]" shown), so its last screen can be read.
function M.start(argv, env)
  count = count + 1
  local t = setmetatable({ socket = string.format("%s.tmux%d", os.tmpname(), count) }, Term)
  os.remove(t.socket)
  local words = {}
  for k, v in pairs(env or {}) do words[#words + 1] = k .. "=" .. quote(v) end
  for _, a in ipairs(argv) do words[#words + 1] = quote(a) end
  local cmd = "env " .. table.concat(words, " ") .. "; echo \"[exited $?]\"; sleep 600"
  local out, status = t:tmux("new-session", "-d", "-x", "80", "-y", "24", "sh", "-c", cmd)
  if status ~= 0 then return nil, "tmux new-session: " .. tostring(out) end
  return t
end

function Term:tmux(...)
  return vmm.command({ "tmux", "-S", self.socket, ... }, { timeout = 10 })
end

-- Types text literally (no key names).
function Term:type(text)
  assert(self:tmux("send-keys", "-l", text))
end

-- Presses keys by tmux name: "Enter", "Tab", "Up", "C-c", "C-d", ...
function Term:keys(...)
  assert(self:tmux("send-keys", ...))
end

-- The screen as text, trailing blank lines dropped.
function Term:screen()
  local out = assert(self:tmux("capture-pane", "-p"))
  return (out:gsub("\n+$", "")) .. "\n"
end

-- Waits until the screen matches pattern (plain text unless opts.pattern)
-- -> the screen, or nil and what it shows after timeout seconds.
function Term:wait_for(text, timeout, pattern)
  local screen
  if vmm.wait_until(function()
    screen = self:screen()
    return screen:find(text, 1, not pattern) ~= nil
  end, timeout or 10) then
    return screen
  end
  return nil, string.format("waited for %q; the screen:\n%s", text, screen)
end

-- Waits until the screen's last line is `line` (a fresh prompt: trailing
-- spaces do not show) -> the screen, or nil and what it shows.
function Term:wait_last_line(line, timeout)
  local screen
  if vmm.wait_until(function()
    screen = self:screen()
    return screen:match("([^\n]*)\n$") == line
  end, timeout or 10) then
    return screen
  end
  return nil, string.format("waited for a last line %q; the screen:\n%s", line, screen)
end

function Term:close()
  self:tmux("kill-server")
  os.remove(self.socket)
end

return M
