-- vmm.net on the host's own network namespace: uniquely named links are
-- created and always removed. Needs CAP_NET_ADMIN (root); otherwise those
-- tests are pending with the reason.
local vmm = require "vmm"
local net = require "vmm.net"
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")

local ROOT = support.can_admin_net()
local SUFFIX = tostring(support.pid() % 100000)
local TAP, BR, TAP2 = "lvn" .. SUFFIX .. "t", "lvn" .. SUFFIX .. "b", "lvn" .. SUFFIX .. "u"

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

describe("vmm.net", function()
  it("is vmm.net", function()
    assert.equals(net, vmm.net)
  end)

  it("makes locally administered unicast MACs", function()
    for _ = 1, 20 do
      local mac = net.random_mac()
      assert.matches("^52:54:00:%x%x:%x%x:%x%x$", mac)
      assert.is_true(net.is_mac(mac))
    end
    assert.is_false(net.is_mac("01:00:5e:00:00:01"))
    assert.is_false(net.is_mac("52:54:00:12:34"))
  end)

  it("raises on misuse, naming the value", function()
    assert.has_error(function() net.link(42) end, "vmm.net.link: interface name must be a string, got number")
    local ok, err = pcall(net.link, "a-name-far-too-long")
    assert.is_false(ok)
    assert.matches('bad interface name "a-name-far-too-long"', err, 1, true)
    assert.has_error(function() net.set_up("lo", "yes") end)
    assert.has_error(function() net.set_mtu("lo", 1.5) end)
    assert.has_error(function() net.add_address("lo", nil) end)
  end)

  it("gives nil and a message for a missing interface", function()
    local l, err = net.link("lvnmissing0")
    assert.is_nil(l)
    assert.equals("lvnmissing0: no such interface", err)
    local s, err2 = net.stats("lvnmissing0")
    assert.is_nil(s)
    assert.matches("no such interface", err2, 1, true)
    assert.is_false(net.exists("lvnmissing0"))
    assert.is_true(net.exists("lo"))
  end)

  it("reads lo", function()
    local l = assert(net.link("lo"))
    assert.equals("lo", l.name)
    assert.equals(1, l.index)
    assert.is_nil(l.kind)
    assert.is_nil(l.master)
    assert.equals("integer", math.type(l.mtu))
  end)
end)

describe("vmm.net links (root)", function()
  local function cleanup()
    for _, name in ipairs({ TAP, TAP2, BR }) do
      if net.exists(name) then assert(net.delete(name)) end
    end
  end

  before_each(function()
    if not ROOT then return end
    cleanup()
    assert(net.tap_create(TAP))
  end)
  after_each(function()
    if ROOT then cleanup() end
  end)

  local root_it = support.guarded(it, pending,
                                   { ROOT, "needs root (CAP_NET_ADMIN) to create links in the host's namespace" })

  root_it("creates a TAP: a link of kind tun, down, with a MAC", function()
    local l = assert(net.link(TAP))
    assert.equals(TAP, l.name)
    assert.equals("tun", l.kind)
    assert.is_false(l.up)
    assert.matches("^%x%x:%x%x:%x%x:%x%x:%x%x:%x%x$", l.mac)
    assert.is_true(l.index > 1)
    local ok, err = net.tap_create(TAP)
    assert.is_nil(ok)
    assert.matches(TAP, err, 1, true)
  end)

  root_it("creates a multi-queue TAP", function()
    assert(net.tap_create(TAP2, { multi_queue = true }))
    assert.equals("tun", net.link(TAP2).kind)
  end)

  root_it("brings a link up and down", function()
    assert.is_true(net.set_up(TAP, true))
    local l = net.link(TAP)
    assert.is_true(l.up)
    assert.is_false(l.running) -- no one holds the TAP: no carrier
    assert.is_true(net.set_up(TAP, false))
    assert.is_false(net.link(TAP).up)
  end)

  root_it("sets the MAC (round trip, lower case)", function()
    assert.is_true(net.set_mac(TAP, "52:54:00:AB:cd:01"))
    assert.equals("52:54:00:ab:cd:01", net.link(TAP).mac)
    local mac = net.random_mac()
    assert.is_true(net.set_mac(TAP, mac))
    assert.equals(mac, net.link(TAP).mac)
  end)

  root_it("raises on an invalid MAC, naming it", function()
    for _, bad in ipairs({ "52:54:00:12:34", "52-54-00-12-34-56", "zz:54:00:12:34:56", "01:00:5e:00:00:01",
                           "52:54:00:12:34:567" }) do
      local ok, err = pcall(net.set_mac, TAP, bad)
      assert.is_false(ok)
      assert.matches('bad MAC address "' .. bad .. '"', err, 1, true)
    end
    assert.has_error(function() net.set_mac(TAP, nil) end)
  end)

  root_it("sets the MTU", function()
    assert.is_true(net.set_mtu(TAP, 1400))
    assert.equals(1400, net.link(TAP).mtu)
    local ok, err = net.set_mtu(TAP, 10)
    assert.is_nil(ok)
    assert.matches(TAP .. ": set MTU 10: ", err, 1, true)
  end)

  root_it("adds, lists and deletes IPv4 and IPv6 addresses", function()
    assert.same({}, net.addresses(TAP))
    assert.is_true(net.add_address(TAP, "192.0.2.1/24"))
    assert.is_true(net.add_address(TAP, "2001:db8:5::1/64"))
    local list = net.addresses(TAP)
    assert.is_true(contains(list, "192.0.2.1/24"))
    assert.is_true(contains(list, "2001:db8:5::1/64"))
    assert.is_true(net.del_address(TAP, "192.0.2.1/24"))
    assert.is_true(net.del_address(TAP, "2001:db8:5::1/64"))
    list = net.addresses(TAP)
    assert.is_false(contains(list, "192.0.2.1/24"))
    assert.is_false(contains(list, "2001:db8:5::1/64"))
    local ok, err = net.del_address(TAP, "192.0.2.1/24")
    assert.is_nil(ok)
    assert.matches(TAP .. ": delete address 192.0.2.1/24: ", err, 1, true)
  end)

  root_it("refuses a bad CIDR with nil and a message naming it", function()
    for _, bad in ipairs({ "10.0.0.1/33", "2001:db8::1/129", "10.0.0.1", "10.0.0.300/24", "10.0.0.1/x" }) do
      local ok, err = net.add_address(TAP, bad)
      assert.is_nil(ok)
      assert.matches(TAP .. ": bad address " .. bad, err, 1, true)
    end
  end)

  root_it("creates a bridge and makes the TAP its port, then not", function()
    assert.is_true(net.bridge_create(BR))
    assert.equals("bridge", net.link(BR).kind)
    local ok, err = net.bridge_create(BR)
    assert.is_nil(ok)
    assert.matches(BR .. ": create bridge: an interface of that name exists", err, 1, true)
    assert.is_true(net.set_master(TAP, BR))
    assert.equals(BR, net.link(TAP).master)
    assert.is_true(net.set_master(TAP, nil))
    assert.is_nil(net.link(TAP).master)
    ok, err = net.set_master(TAP, "lvnmissing0")
    assert.is_nil(ok)
    assert.matches("lvnmissing0: no such interface", err, 1, true)
  end)

  root_it("moves addresses from one link to another", function()
    assert(net.tap_create(TAP2))
    assert(net.add_address(TAP, "192.0.2.1/24"))
    assert(net.add_address(TAP, "192.0.2.2/24"))
    assert(net.add_address(TAP, "2001:db8:6::1/64"))
    local moved = assert(net.move_addresses(TAP, TAP2))
    assert.same({ "192.0.2.1/24", "192.0.2.2/24", "2001:db8:6::1/64" }, moved)
    assert.same({}, net.addresses(TAP))
    local list = net.addresses(TAP2)
    for _, a in ipairs(moved) do assert.is_true(contains(list, a), a) end
    local ok, err = net.move_addresses(TAP, "lvnmissing0")
    assert.is_nil(ok)
    assert.matches("no such interface", err, 1, true)
  end)

  root_it("reads the counters as integers", function()
    local s = assert(net.stats(TAP))
    for _, k in ipairs({ "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped",
                         "rx_errors", "tx_errors" }) do
      assert.equals("integer", math.type(s[k]), k)
      assert.is_true(s[k] >= 0, k)
    end
  end)

  root_it("deletes links", function()
    assert.is_true(net.bridge_create(BR))
    assert.is_true(net.delete(BR))
    assert.is_true(net.delete(TAP))
    local l, err = net.link(TAP)
    assert.is_nil(l)
    assert.matches(TAP .. ": no such interface", err, 1, true)
    local ok, err2 = net.delete(TAP)
    assert.is_nil(ok)
    assert.matches("no such interface", err2, 1, true)
  end)
end)
