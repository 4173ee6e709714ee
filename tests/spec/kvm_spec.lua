-- vmm.kvm() and `vmm check-kvm`: one answer to "can this /dev/kvm run a
-- standard Linux guest?", and vm:start() that follows it at once instead of
-- spinning a vCPU until a boot timeout. The decision itself is unit-tested on
-- facts handed in (tests/unit/test_kvm_probe.c); these specs check what a
-- user sees on this machine.
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")
local vmm = require "vmm"

local KERNEL = support.host_kernel()
local function exists(path) return os.rename(path, path) ~= nil end
local PVM = exists("/sys/module/kvm_pvm")
local KVM = vmm.kvm()

describe("vmm.kvm()", function()
  after_each(support.cleanup)

  it("answers with usable, a backend and a reason", function()
    assert.is_boolean(KVM.usable)
    assert.is_string(KVM.backend)
    assert.is_truthy(({ kvm_intel = 1, kvm_amd = 1, kvm_pvm = 1, unknown = 1, none = 1 })[KVM.backend])
    assert.is_string(KVM.reason)
    assert.is_truthy(#KVM.reason > 0)
    if KVM.usable then
      assert.is_nil(KVM.advice)
    else
      assert.is_string(KVM.advice)
    end
  end)

  it("agrees with `vmm check-kvm`: exit 0 or 1, and one line with the reason", function()
    local code, out = support.vmm { "check-kvm" }
    assert.equals(KVM.usable and 0 or 1, code)
    assert.equals(1, select(2, out:gsub("\n", "")))
    assert.matches(KVM.reason, out, 1, true)
  end)

  it("says there is no /dev/kvm when it is missing", function()
    if exists("/dev/kvm") then return pending("this machine has a /dev/kvm") end
    assert.is_false(KVM.usable)
    assert.equals("none", KVM.backend)
    assert.matches("/dev/kvm does not exist", KVM.reason, 1, true)
  end)

  describe("on kvm-pvm", function()
    if not PVM then
      it("(pending)", function() pending("this machine has no kvm-pvm (/sys/module/kvm_pvm)") end)
      return
    end

    it("names kvm-pvm and what to do", function()
      assert.is_false(KVM.usable)
      assert.equals("kvm_pvm", KVM.backend)
      assert.matches("kvm-pvm", KVM.reason, 1, true)
      assert.matches("test host", KVM.advice, 1, true)
      assert.matches("VMM_KVM_FORCE=1", KVM.advice, 1, true)
      local code, out = support.vmm { "check-kvm" }
      assert.equals(1, code)
      assert.matches("kvm-pvm", out, 1, true)
    end)

    it("accepts it with VMM_KVM_FORCE=1", function()
      local code, out = support.sh("VMM_KVM_FORCE=1 " .. support.quote(support.bin) .. " check-kvm")
      assert.equals(0, code)
      assert.matches("kvm_pvm", out, 1, true)
      assert.matches("VMM_KVM_FORCE=1", out, 1, true)
    end)

    it("makes vm:start() return nil within 2 s, naming kvm-pvm and the test host", function()
      if not KERNEL then return pending("no kernel in /boot") end
      local vm <close> = vmm.vm { kernel = KERNEL, memory = "64M", console = "none" }
      local t0 = vmm.now()
      local ok, err = vm:start()
      local took = vmm.now() - t0
      assert.is_nil(ok)
      assert.matches("kvm-pvm", err, 1, true)
      assert.matches("test host", err, 1, true)
      assert.is_truthy(took < 2, string.format("vm:start() took %.2f s", took))
      assert.equals("stopped", vm:state())
    end)
  end)

  describe("where KVM cannot run the guest", function()
    if KVM.usable then
      it("(pending)", function() pending("this machine's KVM is usable: " .. KVM.reason) end)
      return
    end

    it("makes vm:start() return nil with the reason and the advice", function()
      if not KERNEL then return pending("no kernel in /boot") end
      local vm <close> = vmm.vm { kernel = KERNEL, memory = "64M", console = "none" }
      local ok, err = vm:start()
      assert.is_nil(ok)
      assert.matches(KVM.reason, err, 1, true)
      assert.matches(KVM.advice, err, 1, true)
    end)
  end)
end)
