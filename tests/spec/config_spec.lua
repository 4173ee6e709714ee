-- vmm.vm{...}: every bad setting gives one clear error naming the field; a
-- good one gives a VM in state "created" without touching KVM.
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")
local vmm = require "vmm"
local config = require "vmm.config"

local KERNEL = support.host_kernel()
local it_with_kernel = KERNEL and it or pending

-- The message of the error vmm.vm raises for settings.
local function vm_error(settings)
  local ok, err = pcall(vmm.vm, settings)
  assert.is_false(ok, "vmm.vm accepted the settings")
  return err
end

-- Settings that pass the Lua checks (the kernel is only opened there).
local function settings(extra)
  local s = { kernel = support.temp_file("not a kernel") }
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

describe("vmm.vm settings", function()
  after_each(support.cleanup)

  it("refuses an unknown field, naming it and suggesting the right one", function()
    local err = vm_error(settings { memroy = "512M" })
    assert.matches('vmm.vm: unknown field "memroy"', err, 1, true)
    assert.matches('did you mean "memory"', err, 1, true)
  end)

  it("refuses settings that are not a table", function()
    assert.matches("vmm.vm: expected a table of settings, got string", vm_error("web"), 1, true)
  end)

  it("raises at the caller's line", function()
    local line = debug.getinfo(1, "l").currentline + 1
    local ok, err = pcall(function() vmm.vm { memroy = 1 } end)
    assert.is_false(ok)
    assert.matches("config_spec.lua:" .. line .. ": vmm.vm: unknown field", err, 1, true)
  end)

  describe("locked", function()
    it("takes true, false or {commands = {...}}, normalised", function()
      assert.same({ commands = {} }, config.check(settings { locked = true }).locked)
      assert.is_false(config.check(settings { locked = false }).locked)
      assert.same({ commands = { "ping", "/usr/bin/md5sum" } },
        config.check(settings { locked = { commands = { "ping", "/usr/bin/md5sum" } } }).locked)
      assert.is_nil(config.check(settings {}).locked)
    end)

    it("refuses anything else, naming the field", function()
      assert.matches('vmm.vm: locked: expected true, false or {commands = {program, ...}}, got "yes"',
        vm_error(settings { locked = "yes" }), 1, true)
      assert.matches('vmm.vm: locked: unknown field "command" (known: commands)',
        vm_error(settings { locked = { command = {} } }), 1, true)
      assert.matches("vmm.vm: locked.commands[2]: expected a program name or path, got \"\"",
        vm_error(settings { locked = { commands = { "ping", "" } } }), 1, true)
      assert.matches('vmm.vm: locked.commands: expected a list, got the key "x"',
        vm_error(settings { locked = { commands = { x = "ping" } } }), 1, true)
    end)
  end)

  describe("memory", function()
    it("refuses text that is not a size", function()
      assert.matches('vmm.vm: memory: expected a size like "512M" or a number of bytes, got "abc"',
        vm_error(settings { memory = "abc" }), 1, true)
    end)

    it("converts sizes with binary units to bytes", function()
      local MiB = 1024 * 1024
      local cases = { ["512M"] = 512 * MiB, ["2G"] = 2048 * MiB, ["512MiB"] = 512 * MiB,
        ["64 MB"] = 64 * MiB, ["1.5G"] = 1536 * MiB, ["1048576K"] = 1024 * MiB,
        [256 * MiB] = 256 * MiB }
      for input, bytes in pairs(cases) do
        local cfg, err = config.check(settings { memory = input })
        assert.is_nil(err)
        assert.equals(bytes, cfg.memory)
        assert.equals("integer", math.type(cfg.memory))
      end
    end)

    it("refuses less than 32 MiB", function()
      assert.matches("memory: \"16M\" is out of range", vm_error(settings { memory = "16M" }), 1, true)
    end)

    it("refuses a size that is not a multiple of 4 KiB", function()
      assert.matches("memory: 33559552 is not a multiple of 4 KiB",
        vm_error(settings { memory = 32 * 1024 * 1024 + 4096 + 1024 }), 1, true)
    end)

    it("refuses a table", function()
      assert.matches("memory: expected a size", vm_error(settings { memory = {} }), 1, true)
    end)
  end)

  describe("vcpus", function()
    for _, bad in ipairs({ { 0, "0" }, { 65, "65" }, { 1.5, "1.5" }, { "2", '"2"' }, { -1, "-1" } }) do
      it("refuses " .. bad[2], function()
        assert.matches("vmm.vm: vcpus: expected an integer from 1 to 64, got " .. bad[2],
          vm_error(settings { vcpus = bad[1] }), 1, true)
      end)
    end

    it("defaults to 1 and accepts 64", function()
      assert.equals(1, config.check(settings()).vcpus)
      assert.equals(64, config.check(settings { vcpus = 64 }).vcpus)
    end)
  end)

  describe("kernel", function()
    it("is required", function()
      assert.matches("vmm.vm: kernel: required", vm_error({ memory = "64M" }), 1, true)
    end)

    it("must be a file that exists, naming the path", function()
      local err = vm_error({ kernel = "/nonexistent/vmlinuz" })
      assert.matches("vmm.vm: kernel: cannot open /nonexistent/vmlinuz: No such file or directory", err, 1, true)
    end)

    it("refuses a directory", function()
      assert.matches("vmm.vm: kernel: cannot read /tmp", vm_error({ kernel = "/tmp" }), 1, true)
    end)

    it("must be a bzImage, which the core checks, naming the kernel", function()
      local path = support.temp_file("#!/bin/sh\necho this is no kernel\n")
      local err = vm_error({ kernel = path })
      assert.matches("vmm.vm: kernel " .. path .. ": not a bzImage", err, 1, true)
    end)

    it("refuses /etc/passwd as not a bzImage", function()
      assert.matches("kernel /etc/passwd: not a bzImage", vm_error({ kernel = "/etc/passwd" }), 1, true)
    end)
  end)

  it("refuses an initrd that does not exist, naming it", function()
    assert.matches("vmm.vm: initrd: cannot open /nonexistent/initrd.img",
      vm_error(settings { initrd = "/nonexistent/initrd.img" }), 1, true)
  end)

  describe("name", function()
    it("refuses characters outside [A-Za-z0-9_.-]", function()
      assert.matches('vmm.vm: name: expected 1 to 63 letters, digits', vm_error(settings { name = "my vm!" }), 1, true)
    end)

    it("refuses more than 64 characters and the empty name", function()
      assert.matches("vmm.vm: name:", vm_error(settings { name = ("x"):rep(65) }), 1, true)
      assert.matches("vmm.vm: name:", vm_error(settings { name = "" }), 1, true)
    end)

    it('defaults to "vm"', function()
      assert.equals("vm", config.check(settings()).name)
    end)
  end)

  describe("cmdline", function()
    it("defaults to vmm.DEFAULT_CMDLINE, which puts the console on ttyS0", function()
      assert.equals(vmm.DEFAULT_CMDLINE, config.check(settings()).cmdline)
      assert.matches("console=ttyS0", vmm.DEFAULT_CMDLINE, 1, true)
    end)

    it("refuses a number", function()
      assert.matches("vmm.vm: cmdline: expected a string, got 42", vm_error(settings { cmdline = 42 }), 1, true)
    end)
  end)

  describe("console", function()
    it('defaults to "stdout"', function()
      assert.equals("stdout", config.check(settings()).console)
    end)

    it("refuses a number and the empty string", function()
      assert.matches('vmm.vm: console: expected "stdout", "none" or a file path, got 42',
        vm_error(settings { console = 42 }), 1, true)
      assert.matches("vmm.vm: console:", vm_error(settings { console = "" }), 1, true)
    end)

    it("names the console file and the reason when it cannot be opened", function()
      assert.matches("vmm.vm: console /nonexistent/dir/console.log: No such file or directory",
        vm_error(settings { console = "/nonexistent/dir/console.log" }), 1, true)
    end)
  end)
end)

describe("a VM made from the host's kernel", function()
  after_each(support.cleanup)

  it_with_kernel('is in state "created" and describes itself', function()
    local vm = vmm.vm { name = "web", kernel = KERNEL, memory = "512M", vcpus = 2, console = "none" }
    assert.equals("created", vm:state())
    assert.equals("vmm.vm: web (created, 2 vCPUs, 512 MiB)", tostring(vm))
    assert.same({ name = "web", memory = 512 * 1024 * 1024, vcpus = 2, state = "created", console = "none" }, vm:info())
    assert.is_nil(vm:boot_time())
    assert.is_nil(vm:stop_reason())
    assert.equals("", vm:console_peek())
    vm:close()
  end)

  it_with_kernel("counts nothing for its vCPUs before it starts (vm:vcpu_stats, vm:activity)", function()
    local vm = vmm.vm { kernel = KERNEL, memory = "64M", vcpus = 2, console = "none" }
    local none = { tid = 0, runs = 0, io_exits = 0, mmio_exits = 0 }
    assert.same({ none, none }, vm:vcpu_stats())
    assert.equals("over 0.1 s: vcpu0 not started; vcpu1 not started", vm:activity(0.1))
    assert.has_error(function() vm:activity(-1) end)
    vm:close()
  end)

  it_with_kernel("creates the console file", function()
    local path = os.tmpname()
    os.remove(path)
    local vm = vmm.vm { kernel = KERNEL, memory = "64M", console = path }
    vm:close()
    assert.is_truthy(io.open(path, "rb"))
    os.remove(path)
  end)

  it_with_kernel('is "closed" after close(), and its other methods then raise', function()
    local vm = vmm.vm { kernel = KERNEL, memory = "64M", console = "none" }
    vm:close()
    vm:close() -- twice is fine
    assert.equals("closed", vm:state())
    assert.equals("vmm.vm: closed", tostring(vm))
    assert.has_error(function() vm:start() end, "vmm.vm: the VM is closed")
    assert.has_error(function() vm:info() end, "vmm.vm: the VM is closed")
  end)

  it_with_kernel("is closed when a <close> variable goes out of scope", function()
    local outer
    do
      local vm <close> = vmm.vm { kernel = KERNEL, memory = "64M", console = "none" }
      outer = vm
    end
    assert.equals("closed", outer:state())
  end)

  it_with_kernel("raises when send() gets something else than a string", function()
    local vm <close> = vmm.vm { kernel = KERNEL, memory = "64M", console = "none" }
    assert.has_error(function() vm:send(42) end)
    assert.has_error(function() vm:send() end)
  end)

  it_with_kernel("times out in expect() when no output comes, showing the pattern", function()
    local vm <close> = vmm.vm { kernel = KERNEL, memory = "64M", console = "none" }
    local t0 = vmm.now()
    local ok, err = vm:expect("login:", 0.05)
    assert.is_nil(ok)
    assert.equals('timeout after 0.05 s waiting for "login:"; last output: ""', err)
    assert.is_true(vmm.now() - t0 >= 0.05)
  end)

  it_with_kernel("raises in expect() on a malformed pattern", function()
    local vm <close> = vmm.vm { kernel = KERNEL, memory = "64M", console = "none" }
    assert.has_error(function() vm:expect("(", 0) end)
  end)

  it_with_kernel("refuses an unknown state in wait()", function()
    local vm <close> = vmm.vm { kernel = KERNEL, memory = "64M", console = "none" }
    assert.has_error(function() vm:wait("sleeping") end)
    assert.is_true(vm:wait("created", 0))
  end)
end)

describe("vmm.default_kernel", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. support.quote(dir)))
  end)
  after_each(function() os.execute("rm -rf " .. support.quote(dir)) end)

  it("picks the newest vmlinuz-VERSION, comparing numbers as numbers", function()
    for _, v in ipairs { "6.1.0-9-amd64", "6.1.0-10-amd64", "5.19.0-1-amd64" } do
      support.write_file(dir .. "/vmlinuz-" .. v, "")
    end
    support.write_file(dir .. "/config-6.2.0-1-amd64", "")
    assert.equals(dir .. "/vmlinuz-6.1.0-10-amd64", vmm.default_kernel(dir))
  end)

  it("falls back to vmlinuz, and raises when there is no kernel", function()
    assert.has_error(function() vmm.default_kernel(dir) end)
    support.write_file(dir .. "/vmlinuz", "")
    assert.equals(dir .. "/vmlinuz", vmm.default_kernel(dir))
  end)
end)
