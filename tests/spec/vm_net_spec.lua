-- vm:add_net on a VM that is composed but never started (no KVM needed):
-- each device needs its own name and its own TAP. Needs CAP_NET_ADMIN
-- (root) to open TAPs, and a kernel in /boot; otherwise pending with the
-- reason.
local vmm = require "vmm"
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")

local ROOT = support.can_admin_net()
local SUFFIX = tostring(support.pid() % 100000)
local TAP, TAP2 = "lvv" .. SUFFIX .. "a", "lvv" .. SUFFIX .. "b"
local has_kernel, KERNEL = pcall(vmm.default_kernel) -- vmm.vm checks it is a bzImage

describe("vm:add_net on a composed VM", function()
  local vm

  local function cleanup()
    if vm then vm:close() vm = nil end
    for _, name in ipairs { TAP, TAP2 } do
      if vmm.net.exists(name) then vmm.net.delete(name) end
    end
  end

  before_each(function()
    if not (ROOT and has_kernel) then return end
    cleanup()
    vm = vmm.vm { name = "addnet", memory = "64M", vcpus = 1, kernel = KERNEL }
  end)
  after_each(cleanup)

  local root_it = support.guarded(it, pending, { ROOT, "needs root (CAP_NET_ADMIN) to open TAPs" },
                                   { has_kernel, "needs a kernel for vmm.vm: " .. tostring(KERNEL) })

  local function add_net_error(settings)
    local ok, err = pcall(vm.add_net, vm, settings)
    assert.is_false(ok, "vm:add_net accepted ifname " .. settings.ifname .. (settings.name and (" named " .. settings.name) or ""))
    return err
  end

  root_it("refuses a second device on the same TAP, naming the TAP and the device that has it", function()
    vm:add_net { ifname = TAP }
    local err = add_net_error { ifname = TAP }
    assert.matches("addnet: net1: TAP " .. TAP .. " is already the backend of net0", err, 1, true)
    assert.are.equal(1, #vm:nets())
  end)

  root_it("refuses a device name that is already taken", function()
    vm:add_net { ifname = TAP, name = "uplink" }
    local err = add_net_error { ifname = TAP2, name = "uplink" }
    assert.matches("addnet: the device name uplink is already taken", err, 1, true)
    assert.are.same({ "uplink" }, { vm:nets()[1].name })
  end)

  root_it("describes a device's datapath state for diagnostics (vm:net_state)", function()
    vm:add_net { ifname = TAP, queues = 2 }
    local s = vm:net_state(1)
    assert.matches("^net0: userspace datapath, not running, 0 of 2 pairs active\n", s)
    assert.matches("\npair 1 %(disabled%): rx_waiting 0, rx_pending 0 %(0 bytes%), tx_backlog 0\n  rx: not started\n  tx: not started\n$", s)
    assert.is_nil(vm:net_state(2))
  end)

  root_it("takes two devices with their own names and TAPs", function()
    vm:add_net { ifname = TAP }
    vm:add_net { ifname = TAP2 }
    local nets = vm:nets()
    assert.are.same({ "net0", TAP, "net1", TAP2 }, { nets[1].name, nets[1].ifname, nets[2].name, nets[2].ifname })
  end)
end)
