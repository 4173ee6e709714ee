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
