-- vm:add_net{...} settings: each bad value gives one error naming the field
-- and the value; good ones are normalised with defaults.
local config = require "vmm.config"

local function net_error(settings)
  local cfg, err = config.check_net(settings, 0)
  assert.is_nil(cfg, "check_net accepted the settings")
  return err
end

describe("vm:add_net settings", function()
  it("fills defaults: one queue pair, no vhost, 256 entries, a locally administered MAC", function()
    local cfg = assert(config.check_net({ ifname = "tap0" }, 2))
    assert.are.same({ 1, false, 256, "net2" }, { cfg.queues, cfg.vhost, cfg.queue_size, cfg.name })
    assert.matches("^52:54:00:%x%x:%x%x:%x%x$", cfg.mac)
  end)

  it("keeps given values and lower-cases the MAC", function()
    local cfg = assert(config.check_net({ ifname = "tap1", mac = "52:54:00:AB:CD:EF", queues = 4,
      vhost = true, queue_size = 1024, name = "uplink" }, 0))
    assert.are.same({ "tap1", "52:54:00:ab:cd:ef", 4, true, 1024, "uplink" },
      { cfg.ifname, cfg.mac, cfg.queues, cfg.vhost, cfg.queue_size, cfg.name })
  end)

  it("requires ifname", function()
    assert.matches("vm:add_net: ifname: required", net_error({}), 1, true)
  end)

  it("refuses interface names that Linux would refuse", function()
    assert.matches('ifname: expected an interface name of 1 to 15 letters, digits, \'_\', \'.\' or \'-\', got "a-name-far-too-long"',
      net_error({ ifname = "a-name-far-too-long" }), 1, true)
    assert.matches('got "tap 0"', net_error({ ifname = "tap 0" }), 1, true)
    assert.matches("got 7", net_error({ ifname = 7 }), 1, true)
  end)

  it("refuses malformed, multicast and all-zero MACs, naming them", function()
    assert.matches('mac: expected six hex bytes like "52:54:00:12:34:56", got "52:54:00:12:34"',
      net_error({ ifname = "t", mac = "52:54:00:12:34" }), 1, true)
    assert.matches('got "zz:54:00:12:34:56"', net_error({ ifname = "t", mac = "zz:54:00:12:34:56" }), 1, true)
    assert.matches('mac: "01:00:5e:00:00:01" is a multicast address',
      net_error({ ifname = "t", mac = "01:00:5e:00:00:01" }), 1, true)
    assert.matches('mac: "00:00:00:00:00:00" is not a usable address',
      net_error({ ifname = "t", mac = "00:00:00:00:00:00" }), 1, true)
  end)

  it("refuses queue counts outside 1..8", function()
    assert.matches("queues: expected a number of queue pairs from 1 to 8, got 0", net_error({ ifname = "t", queues = 0 }), 1, true)
    assert.matches("got 9", net_error({ ifname = "t", queues = 9 }), 1, true)
    assert.matches("got 1.5", net_error({ ifname = "t", queues = 1.5 }), 1, true)
  end)

  it("refuses a vhost that is not a boolean and queue sizes that are not powers of 2", function()
    assert.matches('vhost: expected true or false, got "yes"', net_error({ ifname = "t", vhost = "yes" }), 1, true)
    assert.matches("queue_size: expected a power of 2 from 64 to 1024, got 300", net_error({ ifname = "t", queue_size = 300 }), 1, true)
    assert.matches("got 2048", net_error({ ifname = "t", queue_size = 2048 }), 1, true)
  end)

  it("refuses device names longer than a migration's description carries (15)", function()
    assert.matches("name: expected 1 to 15 letters", net_error({ ifname = "t", name = "sixteen-chars-xx" }), 1, true)
  end)

  it("refuses a backend_transfer that is not a boolean", function()
    assert.matches('backend_transfer: expected true or false, got "no"',
      net_error({ ifname = "t", backend_transfer = "no" }), 1, true)
  end)

  it("refuses unknown fields, listing the known ones", function()
    assert.matches('vm:add_net: unknown field "vhots" (known: ifname, mac, queues, vhost, queue_size, name, backend_transfer)',
      net_error({ ifname = "t", vhots = true }), 1, true)
  end)
end)
