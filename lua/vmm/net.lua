-- vmm.net: the host side of VM networking, through netlink (no `ip`, no
-- shell): persistent TAPs, links, addresses, bridges.
--
--   local net = require "vmm.net"          -- or require("vmm").net
--   assert(net.tap_create("tap0", { multi_queue = true }))
--   assert(net.bridge_create("br0"))
--   assert(net.set_master("tap0", "br0"))
--   assert(net.add_address("br0", "10.0.2.1/24"))
--   assert(net.set_up("br0", true)) ; assert(net.set_up("tap0", true))
--   print(net.link("tap0").kind)            --> tun
--
-- Misuse (a wrong type, a malformed interface name or MAC) raises at the
-- caller's line. What the kernel refuses, and a missing interface, return
-- nil and a message naming the interface ("tap9: no such interface").
-- Results are plain tables.
local core = require "vmm.core"

local M = {}

local IFNAMSIZ = 16 -- names are at most 15 bytes

local function check_name(fn, name, level)
  if type(name) ~= "string" then
    error(string.format("vmm.net.%s: interface name must be a string, got %s", fn, type(name)), level + 1)
  end
  if #name == 0 or #name >= IFNAMSIZ or name:find("[%s/:%z]") or name == "." or name == ".." then
    error(string.format("vmm.net.%s: bad interface name %q (1..%d characters, no blank, '/' or ':')",
      fn, name, IFNAMSIZ - 1), level + 1)
  end
  return name
end

local function check_string(fn, what, v, level)
  if type(v) ~= "string" then
    error(string.format("vmm.net.%s: %s must be a string, got %s", fn, what, type(v)), level + 1)
  end
  return v
end

-- "52:54:00:12:34:56" (any case) -> lower case, or raises naming the value.
local function check_mac(fn, mac, level)
  if type(mac) ~= "string" or not mac:match("^%x%x:%x%x:%x%x:%x%x:%x%x:%x%x$") then
    error(string.format("vmm.net.%s: bad MAC address %s (want six hex bytes like 52:54:00:12:34:56)",
      fn, type(mac) == "string" and string.format("%q", mac) or tostring(mac)), level + 1)
  end
  local first = tonumber(mac:sub(1, 2), 16)
  if first & 1 == 1 then
    error(string.format("vmm.net.%s: bad MAC address %q (multicast: the first byte is odd)", fn, mac), level + 1)
  end
  if mac == "00:00:00:00:00:00" then
    error(string.format("vmm.net.%s: bad MAC address %q (all zero)", fn, mac), level + 1)
  end
  return mac:lower()
end

-- net.is_mac(s) -> true if s is a unicast, non-zero "hh:hh:hh:hh:hh:hh".
function M.is_mac(s)
  return (pcall(check_mac, "is_mac", s, 1))
end

-- net.random_mac() -> "52:54:00:xx:xx:xx": locally administered, unicast
-- (the prefix QEMU and libvirt use for guests).
function M.random_mac()
  return string.format("52:54:00:%02x:%02x:%02x", math.random(0, 255), math.random(0, 255), math.random(0, 255))
end

-- net.tap_create(name, {multi_queue = false}) -> true | nil, err
-- A persistent TAP (it stays after this process exits); down, no address.
function M.tap_create(name, opts)
  check_name("tap_create", name, 2)
  if opts ~= nil and type(opts) ~= "table" then
    error("vmm.net.tap_create: options must be a table, got " .. type(opts), 2)
  end
  return core.net_tap_create(name, opts ~= nil and opts.multi_queue == true)
end

-- net.delete(name) -> true | nil, err: removes a link of any kind (TAP,
-- bridge, veth, ...).
function M.delete(name)
  check_name("delete", name, 2)
  local ok, err = core.net_link_delete(name)
  if ok then return true end
  -- a TAP whose driver refuses RTM_DELLINK: drop its persistence instead
  local l = core.net_link_get(name)
  if l and l.kind == "tun" then
    local ok2 = core.net_tap_delete(name)
    if ok2 then return true end
  end
  return nil, err
end

-- net.link(name) -> {name, index, up, running, mtu, mac, master?, kind?,
-- flags} | nil, err. kind is the driver's ("tun", "bridge", "veth"); absent
-- for links without one (lo, physical NICs). master is the bridge this link
-- is a port of.
function M.link(name)
  check_name("link", name, 2)
  local l, err = core.net_link_get(name)
  if not l then return nil, err end
  l.stats = nil
  return l
end

-- net.exists(name) -> boolean
function M.exists(name)
  check_name("exists", name, 2)
  return core.net_link_get(name) ~= nil
end

-- net.stats(name) -> {rx_packets, tx_packets, rx_bytes, tx_bytes,
-- rx_errors, tx_errors, rx_dropped, tx_dropped} | nil, err
function M.stats(name)
  check_name("stats", name, 2)
  local l, err = core.net_link_get(name)
  if not l then return nil, err end
  return l.stats
end

-- net.set_up(name, [up = true]) -> true | nil, err
function M.set_up(name, up)
  check_name("set_up", name, 2)
  if up == nil then up = true end
  if type(up) ~= "boolean" then error("vmm.net.set_up: up must be a boolean, got " .. type(up), 2) end
  return core.net_set_up(name, up)
end

-- net.set_mac(name, "52:54:00:12:34:56") -> true | nil, err
-- The kernel refuses a new MAC on some links while they are up.
function M.set_mac(name, mac)
  check_name("set_mac", name, 2)
  return core.net_set_mac(name, check_mac("set_mac", mac, 2))
end

-- net.set_mtu(name, mtu) -> true | nil, err
function M.set_mtu(name, mtu)
  check_name("set_mtu", name, 2)
  if math.type(mtu) ~= "integer" or mtu < 1 or mtu > 0xFFFFFFF then
    error("vmm.net.set_mtu: MTU must be a positive integer, got " .. tostring(mtu), 2)
  end
  return core.net_set_mtu(name, mtu)
end

-- net.add_address(name, "10.0.2.1/24" | "fd00::1/64") -> true | nil, err
-- A malformed address ("10.0.0.1/33", a missing prefix) is refused with a
-- message naming it, like the kernel's refusals.
function M.add_address(name, cidr)
  check_name("add_address", name, 2)
  return core.net_addr_add(name, check_string("add_address", "the address", cidr, 2))
end

-- net.del_address(name, "ADDR/PREFIX") -> true | nil, err
function M.del_address(name, cidr)
  check_name("del_address", name, 2)
  return core.net_addr_del(name, check_string("del_address", "the address", cidr, 2))
end

-- net.addresses(name) -> {"10.0.2.1/24", "fd00::1/64", ...} | nil, err
-- IPv4 first, then IPv6 (link-local fe80:: ones included).
function M.addresses(name)
  check_name("addresses", name, 2)
  return core.net_addr_list(name)
end

-- net.set_master(name, bridge) makes name a port of bridge;
-- net.set_master(name, nil) takes it out. -> true | nil, err
function M.set_master(name, master)
  check_name("set_master", name, 2)
  if master ~= nil then check_name("set_master", master, 2) end
  return core.net_set_master(name, master)
end

-- net.bridge_create(name) -> true | nil, err (down, no ports)
function M.bridge_create(name)
  check_name("bridge_create", name, 2)
  return core.net_bridge_create(name)
end

local function is_link_local(cidr)
  return cidr:lower():match("^fe[89ab]%x:") ~= nil
end

-- net.move_addresses(from, to) -> the list of moved addresses | nil, err
--
-- The migration switch-over when the target opens its own TAP: every
-- address of `from` (except IPv6 link-local fe80::/10, which each link makes
-- for itself) is added to `to` (kept if `to` already has it), then removed
-- from `from`, secondaries before primaries. If an add fails, the addresses
-- added so far are removed from `to` again and `from` is left untouched. If
-- a removal fails, the addresses are on both links and the error says which
-- removal failed. Links are neither brought up or down nor given a MAC here:
-- that is the caller's policy (set_up, set_mac).
function M.move_addresses(from, to)
  check_name("move_addresses", from, 2)
  check_name("move_addresses", to, 2)
  if from == to then return {} end
  local list, err = core.net_addr_list(from)
  if not list then return nil, err end
  local have, err2 = core.net_addr_list(to)
  if not have then return nil, err2 end
  local present = {}
  for _, a in ipairs(have) do present[a] = true end

  local moved, added = {}, {}
  for _, a in ipairs(list) do
    if not is_link_local(a) then
      moved[#moved + 1] = a
      if not present[a] then
        local ok, e = core.net_addr_add(to, a)
        if not ok then
          for i = #added, 1, -1 do core.net_addr_del(to, added[i]) end
          return nil, "move_addresses: " .. e
        end
        added[#added + 1] = a
      end
    end
  end
  for i = #moved, 1, -1 do
    local ok, e = core.net_addr_del(from, moved[i])
    -- deleting a primary IPv4 address can take its secondaries with it
    if not ok and core.net_addr_list(from) then
      local still = false
      for _, a in ipairs(core.net_addr_list(from)) do
        if a == moved[i] then still = true end
      end
      if still then return nil, "move_addresses: " .. e end
    end
  end
  return moved
end

return M
