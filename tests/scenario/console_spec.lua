-- Scenario: the serial console in both directions, from the terminal side.
-- Runs a vmm child process whose stdin is a pipe standing in for the user.
local vmm = require "vmm"
local S = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "migrate_support.lua")

local VMM = os.getenv("VMM_BIN") or "build/vmm"
local kernel = os.getenv("VMM_KERNEL") or vmm.default_kernel()
local initrd = os.getenv("VMM_INITRD") or "build/images/guest.cpio.gz"

-- Runs `script` in a vmm child with `input` on its stdin; returns its output.
local function run_with_stdin(script, input)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  local function write(name, text)
    local f = assert(io.open(dir .. "/" .. name, "w"))
    f:write(text)
    f:close()
  end
  write("script.lua", script)
  write("input", input)
  local p = assert(io.popen(string.format("%s script %s/script.lua %q %q %q < %s/input 2>&1",
    VMM, dir, kernel, initrd, S.CMDLINE, dir)))
  local out = p:read("a")
  local ok = p:close()
  os.execute("rm -rf " .. dir)
  return out, ok
end

local BOOT_AND_ATTACH = [[
local vmm = require "vmm"
local vm = vmm.vm { name = "attach", memory = "256M", kernel = arg[1], initrd = arg[2], cmdline = arg[3], console = "none" }
assert(vm:start())
assert(vm:wait_boot(240))
print("attach returned " .. vm:attach())
local n = vm:expect("typed%-(%d+)\r?\n", 60)
print("guest answered " .. tostring(n))
print("after detach: " .. tostring(vm:expect("never", 3)))
vm:stop()
]]

describe("the serial console", function()
  it("takes the terminal's input with vm:attach and detaches on Ctrl-]", function()
    local out, ok = run_with_stdin(BOOT_AND_ATTACH, "echo typed-$((6*7))\n\029echo never\n")
    assert.is_true(ok, out)
    assert.is_truthy(out:find("attach returned detached", 1, true), out)
    assert.is_truthy(out:find("guest answered 42", 1, true), out)
    -- what followed Ctrl-] never reached the guest
    assert.is_truthy(out:find("after detach: nil", 1, true), out)
  end)

  it("detaches when the terminal's input ends", function()
    local out, ok = run_with_stdin(BOOT_AND_ATTACH, "echo typed-$((5+2))\n")
    assert.is_true(ok, out)
    assert.is_truthy(out:find("attach returned detached", 1, true), out)
    assert.is_truthy(out:find("guest answered 7", 1, true), out)
  end)
end)
