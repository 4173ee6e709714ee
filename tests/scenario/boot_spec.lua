-- Scenario: boot the guest image under KVM and drive it through the serial
-- console. Needs /dev/kvm: run through scripts/testhost (scripts/test does).
local vmm = require "vmm"
local S = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "migrate_support.lua")

local kernel = os.getenv("VMM_KERNEL") or vmm.default_kernel()
local initrd = os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz"
local BOOT_TIMEOUT = tonumber(os.getenv("VMM_BOOT_TIMEOUT") or "240")

local function guest(vcpus, name)
  local vm = vmm.vm {
    name = name, memory = "256M", vcpus = vcpus,
    kernel = kernel, initrd = initrd, console = "none", cmdline = S.CMDLINE,
  }
  assert(vm:start())
  local ok, err = vm:wait_boot(BOOT_TIMEOUT)
  assert(ok, ok or (err .. "\n" .. S.activity(vm)))
  return vm
end

describe("a Linux guest under KVM", function()
  -- the lock (vmm.lock) of a VMM whose VM runs: in a child VMM, since it
  -- cannot be undone; tests/scenario/locked_guest.lua says what it checks
  it("runs in a VMM locked after the start (vmm --sandbox=ping): net, disk and console on, files and programs off", function()
    local ifname, image = "lvlock0", os.tmpname()
    local f = assert(io.open(image, "wb"))
    f:write(string.rep("\0", 1024 * 1024))
    f:close()
    local script = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "locked_guest.lua"
    local out, status = vmm.command({ S.VMM, "--sandbox=ping", "script", script, kernel, initrd,
                                      S.CMDLINE, ifname, image }, { timeout = BOOT_TIMEOUT + 120 })
    vmm.net.delete(ifname)
    os.remove(image)
    assert(out, status)
    assert.are.equal(0, status, out)
    assert.are.equal(table.concat({
      "before\tfalse",
      "after\ttrue",
      "sh\tthe guest runs",
      "disk\tlocked-disk",
      "ping\t0\t",
      "open\tnil\t/etc/hostname: Permission denied\t13",
      "cat\tnil\tcat: not among the host commands allowed after the VMM was locked",
      "serve\tnil\tvm:serve: this VMM is locked (vmm.lock) and creates no files, not even its registry entry: "
        .. "serve before it locks (before vm:start of a VM with `locked`)",
    }, "\n") .. "\n", out)
  end)

  for _, n in ipairs { 1, 2 } do
    it("boots with " .. n .. " vCPU(s) and nproc prints " .. n, function()
      local vm <close> = guest(n, "nproc" .. n)
      local out, status = vm:sh("nproc", 60)
      assert.are.equal(tostring(n), out)
      assert.are.equal(0, status)
      -- every vCPU really came up, not just counted
      assert.are.equal(tostring(n), (vm:sh("grep -c ^processor /proc/cpuinfo", 60)))
    end)
  end

  -- the uncompressed kernel: scripts/testhost extracts it from the bzImage
  local vmlinux = "build/images/vmlinux-" .. (kernel:match("vmlinuz%-(.+)$") or "?")
  local has_vmlinux = io.open(vmlinux, "rb")
  if has_vmlinux then has_vmlinux:close() end
  ;(has_vmlinux and it or pending)("boots the same kernel uncompressed (an ELF vmlinux: its segments loaded, startup_64 entered)"
    .. (has_vmlinux and "" or " [no " .. vmlinux .. ": scripts/testhost makes it]"), function()
    local vm <close> = vmm.vm {
      name = "vmlinux", memory = "256M", vcpus = 2,
      kernel = vmlinux, initrd = initrd, console = "none", cmdline = S.CMDLINE,
    }
    assert(vm:start())
    local ok, err = vm:wait_boot(BOOT_TIMEOUT)
    assert(ok, ok or (err .. "\n" .. S.activity(vm)))
    assert.are.equal("2", (vm:sh("nproc", 60)))
    assert.matches("^%d+%.%d+", (vm:sh("uname -r", 60)))
  end)

  it("records the guest's boot marker after the start", function()
    local vm <close> = guest(1, "marker")
    local t = vm:boot_time()
    assert.is_number(t)
    assert.is_true(t > 0)
  end)

  it("runs commands with their output and exit status over the console", function()
    local vm <close> = guest(1, "shell")
    assert.are.equal("hello from the guest", (vm:sh("echo hello from the guest", 30)))
    local _, status = vm:sh("false", 30)
    assert.are.equal(1, status)
    local kernel_release = vm:sh("uname -r", 30)
    assert.is_truthy(kernel_release:match("^%d+%.%d+"))
  end)

  -- vm:activity, which the scenario helpers add to a timeout's message:
  -- an idle guest's vCPU waits in KVM_RUN, a busy loop spins there.
  it("tells a vCPU that waits from one that spins (vm:activity)", function()
    local vm <close> = guest(1, "activity")
    vmm.sleep(1) -- let the shell settle
    assert.matches("^over 2 s: vcpu0 waits in KVM_RUN", vm:activity(2))
    vm:send("while :; do :; done\n")
    vmm.sleep(1)
    local line = vm:activity(2)
    assert.matches("^over 2 s: vcpu0 spins inside KVM_RUN", line)
    assert.matches("; where: vcpu0 rip 0x%x+ rsp 0x%x+ rflags 0x%x+ %(IF=[01]%) cr3 0x%x+ %a+", line)
    assert.are.equal("running", vm:state())
    -- where it is: the shell's loop, in user space with interrupts on. One
    -- reading may catch the vCPU in the kernel (a timer interrupt: CI
    -- 2026-12-03 read rip 0xffffffff811065d0, IF=0), so up to 20 readings
    -- must find it there once.
    local seen = {}
    local in_user = false
    for _ = 1, 20 do
      assert(vm:pause())
      local regs = assert(vm:vcpu_where())
      assert(vm:resume())
      local r = regs[1]
      seen[#seen + 1] = string.format("0x%x/IF=%d", r.rip, (r.rflags >> 9) & 1)
      if r.rip > 0 and r.rip < 0x800000000000 and (r.rflags >> 9) & 1 == 1 then in_user = true break end
      vmm.sleep(0.05)
    end
    assert(in_user, "never in user space: " .. table.concat(seen, " "))
    local regs, err = vm:vcpu_where()
    assert.is_nil(regs)
    assert.matches("only while paused; the VM is running", err, 1, true)
    local st = vm:vcpu_stats()[1]
    assert.is_true(st.tid > 0 and st.runs > 0 and st.io_exits > 0)
  end)

  -- The guest image's init keeps kernel messages off the console (they
  -- would land between vm:sh's markers: one serial line cannot tell them
  -- apart); they stay in dmesg.
  it("keeps kernel messages out of vm:sh's output, and in dmesg", function()
    local vm <close> = guest(1, "kmsg")
    local out = vm:sh("echo '<3>luavmm-kmsg-test: an error the kernel logs' > /dev/kmsg; echo after", 30)
    assert.are.equal("after", out)
    assert.are.equal("1", (vm:sh("dmesg | grep -c luavmm-kmsg-test", 30)))
  end)

  it("freezes the guest while paused and continues after resume", function()
    local vm <close> = guest(2, "pause")
    local before = tonumber((vm:sh("cat /proc/uptime | cut -d' ' -f1 | cut -d. -f1", 30)))
    assert(vm:pause())
    assert.are.equal("paused", vm:state())
    vm:send("echo during-pause\n")
    assert.is_nil((vm:expect("during%-pause\r?\n", 3)))
    assert(vm:resume())
    assert.are.equal("running", vm:state())
    assert.is_truthy(vm:expect("during%-pause\r?\n", 60))
    local after = tonumber((vm:sh("cat /proc/uptime | cut -d' ' -f1 | cut -d. -f1", 30)))
    assert.is_true(after >= before)
  end)

  -- vmm attach from another process to this running VM: read it, pause and
  -- resume it from there, and leave it running when the client goes
  it("is read, paused and resumed through vmm attach from another process, and runs on after it detaches",
     function()
    local vm <close> = guest(1, "attached")
    local sock = S.tmp_path("sock")
    local server = assert(vm:serve(sock))
    local function attach(code)
      local out, status = vmm.command({ S.VMM, "attach", sock, "-e", code }, { timeout = 60 })
      assert(out, status)
      assert.are.equal(0, status, out)
      return out
    end
    assert.are.equal("attached\trunning\t0\n", attach("return vm:info().name, vm:state(), #vm:nets()"))
    assert.are.equal("paused\n", attach("assert(vm:pause()) return vm:state()"))
    assert.are.equal("paused", vm:state())
    assert.are.equal("running\n", attach("assert(vm:resume()) return vm:state()"))
    assert.are.equal("ok", (vm:sh("echo ok", 30)))
    server.close()
    os.remove(sock)
  end)

  it("stops with a reason when the guest resets itself", function()
    local vm <close> = guest(1, "reboot")
    vm:send("reboot -f\n")
    assert.is_truthy(vm:wait("stopped", 120))
    assert.is_truthy(vm:stop_reason():match("guest"))
  end)

  it("stops on request, and a stopped VM refuses to start again", function()
    local vm <close> = guest(1, "stop")
    vm:stop()
    assert.are.equal("stopped", vm:state())
    local ok, err = vm:start()
    assert.is_nil(ok)
    assert.is_truthy(err:match("stopped"))
  end)
end)
