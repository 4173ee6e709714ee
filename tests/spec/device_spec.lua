-- The generic device binding: every VM has the board's devices, each type's
-- fields and limits come from C, and a config table is read through the
-- type's fields, naming a bad one. No KVM and no TAP needed (a kernel in
-- /boot is, for vmm.vm).
local vmm = require "vmm"
local core = require "vmm.core"
local config = require "vmm.config"

local has_kernel, KERNEL = pcall(vmm.default_kernel)
local kernel_it = has_kernel and it or pending

describe("devices", function()
  kernel_it("every VM has the PC board's devices, named by their kind", function()
    local vm <close> = vmm.vm { name = "devs", memory = "64M", kernel = KERNEL, console = "none" }
    local kinds = {}
    for i, d in ipairs(vm:devices()) do
      kinds[i] = d.kind
      assert.equals(d.kind, d.name)
      assert.is_nil(d.backend)
    end
    assert.same({ "serial8250", "rtc", "i8042", "pci-host" }, kinds)
    assert.same({}, vm:nets())
  end)

  it("gives each type's fields and limits, which vm:add_net's checks use", function()
    local net = core.device_types()["virtio-net"]
    assert.is_true(net.state)
    assert.equals(1, net.fields.queues.min)
    assert.equals(config.MAX_QUEUE_PAIRS, net.fields.queues.max)
    assert.equals(64, net.fields.queue_size.min)
    assert.equals(1024, net.fields.queue_size.max)
    assert.is_true(net.fields.queue_size.power_of_2)
    assert.is_true(net.fields.ifname.backend)
    assert.equals("mac", net.fields.mac.kind)
    assert.is_nil(core.device_types().rtc) -- the board's, not one to add
  end)

  kernel_it("refuses an unknown kind, a board kind, and a bad field, naming it", function()
    local vm <close> = vmm.vm { name = "devs", memory = "64M", kernel = KERNEL, console = "none" }
    assert.has_error(function() vm:_add_device("virtio-gpu", "gpu0", {}) end,
      "vm:add_device: unknown device kind virtio-gpu")
    assert.has_error(function() vm:_add_device("rtc", "rtc2", {}) end, "vm:add_device: unknown device kind rtc")
    assert.has_error(function() vm:_add_device("virtio-net", "net0", { queue = 2 }) end,
      "vm:add_device: net0: unknown field queue for a virtio-net")
    assert.has_error(function() vm:_add_device("virtio-net", "net0", { queues = "two" }) end,
      "vm:add_device: net0: field queues: expected an integer from 1 to 8")
    assert.has_error(function() vm:_add_device("virtio-net", "net0", { mac = "52:54" }) end,
      'vm:add_device: net0: field mac: expected six hex bytes like "52:54:00:12:34:56"')
    -- The type's own checks come from C, with the VM's name.
    local ok, err = vm:_add_device("virtio-net", "net0", { ifname = "x", mac = "01:00:00:00:00:01" })
    assert.is_nil(ok)
    assert.matches("devs: net0: mac 01:00:00:00:00:01 is a multicast address", err, 1, true)
    ok, err = vm:_add_device("virtio-net", "net0", { ifname = "x", mac = "52:54:00:00:00:01", queues = 9 })
    assert.is_nil(ok)
    assert.matches("devs: net0: queues 9 (must be 1..8)", err, 1, true)
    assert.equals(4, #vm:devices()) -- nothing half-added
  end)
end)
