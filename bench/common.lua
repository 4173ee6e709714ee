-- What the bench scripts share; bench/net.lua and bench/migrate.lua load it
-- with dofile from their own folder.
local vmm = require "vmm"

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

return M
