-- seccomp from Lua (core/sandbox.c): the filters of vCPU and disk I/O
-- threads, tried through a test hook (core._sandbox_try runs one system
-- call in a new thread under a role's filter) in a child vmm, since a
-- refused call ends the process; and the switch (vmm.seccomp,
-- VMM_SECCOMP). Every scenario runs with the filters on.
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")
local vmm = require "vmm"

-- Runs `code` in a child vmm (core = require "vmm.core") with the
-- environment words in env -> exit status, output.
local function child(code, env)
  local argv = { "env" }
  for _, w in ipairs(env or {}) do argv[#argv + 1] = w end
  for _, w in ipairs { support.bin, "-e", "local core = require 'vmm.core' " .. code } do argv[#argv + 1] = w end
  local out, status = vmm.command(argv, { timeout = 30 })
  assert(out, status)
  return status, out
end

describe("seccomp filters (vmm.seccomp)", function()
  it("end the VMM at a system call a vCPU thread may not make, naming the call", function()
    local status, out = child("print(core._sandbox_try('vcpu', 'mkdir'))")
    assert.are.equal(128 + 31, status, out)
    assert.matches("vmm: seccomp: thread sandbox-try made a system call its filter refuses: mkdir (83)", out, 1,
                   true)
    status, out = child("print(core._sandbox_try('io', 'socket'))")
    assert.are.equal(128 + 31, status, out)
    assert.matches("refuses: socket (41)", out, 1, true)
  end)

  it("let through what the threads use, and refuse opening files with EACCES (13)", function()
    local status, out = child("print(core._sandbox_try('vcpu', 'clock_gettime'), core._sandbox_try('io', 'open'))")
    assert.are.equal(0, status, out)
    assert.are.equal("0\t13\n", out)
  end)

  it("are off with VMM_SECCOMP=off or vmm.seccomp('off'), and a bad mode is refused naming it", function()
    local status, out = child("print(require('vmm').seccomp(), core._sandbox_try('vcpu', 'mkdir'))",
                              { "VMM_SECCOMP=off" })
    assert.are.equal(0, status, out)
    assert.are.equal("off\t0\n", out)
    status, out = child("print(require('vmm').seccomp('off'), core._sandbox_try('io', 'socket'))")
    assert.are.equal(0, status, out)
    assert.are.equal("off\t0\n", out)
    assert.has_error(function() vmm.seccomp("maybe") end,
                     'vmm.seccomp: seccomp mode "maybe": expected on, off or log')
    assert.are.equal("on", vmm.seccomp())
  end)
end)

describe("a locked VMM (vmm.lock)", function()
  it("opens and changes no file (EACCES), starts no program (EPERM), runs only the host commands it allowed", function()
    local status, out = child([[
      local vmm = require 'vmm'
      print(vmm.locked(), vmm.lock { commands = { 'echo' } }, vmm.locked())
      print(io.open('/etc/hostname'))
      print(os.remove('/tmp/luavmm-never-there'))
      print(os.execute('true'))
      print(vmm.command { 'echo', 'allowed' })
      print(vmm.command { 'cat', '/etc/hostname' })
      print(core._sandbox_try('main', 'socket'), core._sandbox_try('main', 'fork'))]])
    assert.are.equal(0, status, out)
    assert.are.equal(table.concat({
      "false\ttrue\ttrue",
      "nil\t/etc/hostname: Permission denied\t13",
      "nil\t/tmp/luavmm-never-there: Permission denied\t13",
      "nil\tOperation not permitted\t1",
      "allowed\n\t0",
      "nil\tcat: not among the host commands allowed after the VMM was locked",
      "0\t1",
    }, "\n") .. "\n", out)
  end)

  it("ends the VMM at a system call the locked main thread may not make, naming the call", function()
    local status, out = child("require('vmm').lock() print(core._sandbox_try('main', 'socket_inet')) print('on')")
    assert.are.equal(128 + 31, status, out)
    assert.matches("refuses: socket (41); the VMM stops", out, 1, true)
    assert.is_nil(out:find("on\n", 1, true))
  end)

  it("is locked for good: a second lock fails, and the allowed commands cannot change", function()
    local status, out = child([[
      local vmm = require 'vmm'
      print(vmm.lock { commands = { 'echo' } })
      print(vmm.lock { commands = { 'echo', 'cat' } })
      print(vmm.command { 'cat', '/dev/null' })]])
    assert.are.equal(0, status, out)
    assert.are.equal("true\nnil\tvmm.lock: the VMM is locked already\n"
      .. "nil\tcat: not among the host commands allowed after the VMM was locked\n", out)
  end)

  it("with the filters off keeps only the allowlist (VMM_SECCOMP=off, for debugging)", function()
    local status, out = child([[
      local vmm = require 'vmm'
      print(vmm.lock { commands = { 'echo' } }, io.open('/dev/null') ~= nil)
      print(vmm.command { 'cat', '/dev/null' })]], { "VMM_SECCOMP=off" })
    assert.are.equal(0, status, out)
    assert.are.equal("true\ttrue\nnil\tcat: not among the host commands allowed after the VMM was locked\n", out)
  end)

  it("raises on bad settings, naming the field", function()
    assert.has_error(function() vmm.lock { commands = { 3 } } end,
                     "vmm.lock.commands[1]: expected a program name or path, got 3")
    assert.has_error(function() vmm.lock { programs = {} } end, 'vmm.lock: unknown field "programs" (known: commands)')
    assert.has_error(function() vmm.lock(false) end,
                     "vmm.lock: expected true or {commands = {program, ...}}, got false")
    assert.has_error(function() vmm.lock { commands = "ping" } end,
                     'vmm.lock.commands: expected a list of program names or paths, got "ping"')
    assert.is_false(vmm.locked())
  end)

  it("refuses to name an allowed program that is not there", function()
    local status, out = child("print(require('vmm').lock { commands = { 'no-such-program-here' } })")
    assert.are.equal(0, status, out)
    assert.are.equal("nil\tvmm.lock: allowed host command no-such-program-here: No such file or directory\n", out)
  end)
end)
