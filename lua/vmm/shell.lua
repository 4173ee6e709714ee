-- What driving a guest's shell over a serial line takes, whoever runs the
-- guest (vm:sh for this VMM's; bench/common.lua's QEMU shell for QEMU's):
-- the marker protocol around a command, and a thread's CPU time from /proc.
local core = require "vmm.core"

local M = {}

local count = 0

-- shell.run(send, expect, cmd, timeout) -> output, exit status; or nil and
-- expect's message. send(text) writes to the guest's console; expect(pattern,
-- timeout) finds pattern in the output not consumed yet and returns its
-- captures, or nil and a message. The command runs between two markers
-- that the tty's echo of the command line (quoted) cannot match; eval keeps
-- a trailing comment or an unbalanced `;` in cmd from eating them. The
-- output comes without the echo, the prompt and its last newline, "\r\n"
-- turned into "\n".
function M.run(send, expect, cmd, timeout)
  count = count + 1
  local id = string.format("%d%d", count, math.random(100000, 999999))
  local quoted = "'" .. cmd:gsub("'", "'\\''") .. "'"
  send(string.format("echo 'LVMM-S'%s; eval %s; echo 'LVMM-E'%s-$?\n", id, quoted, id))
  local deadline = core.now() + timeout
  local ok, err = expect("LVMM%-S" .. id .. "\r?\n", timeout)
  if not ok then return nil, err end
  local out, status = expect("(.-)LVMM%-E" .. id .. "%-(%d+)", math.max(deadline - core.now(), 0))
  if not out then return nil, status end
  return (out:gsub("\r\n", "\n"):gsub("\n$", "")), math.tointeger(tonumber(status))
end

-- shell.cpu(stat_path) -> CPU seconds (user + system), state letter, last
-- processor of the process or thread whose /proc stat file that is; nil
-- when it is gone. USER_HZ is 100 on Linux.
function M.cpu(stat_path)
  local fields = require("vmm.process").stat_fields(stat_path)
  if not fields then return nil end
  -- state is field 3, utime 14, stime 15, processor 39 (fields[1], [12],
  -- [13], [37])
  return ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) / 100, fields[1], fields[37]
end

return M
