-- The vmm executable: commands, script arguments, exit status, and one-line
-- errors on stderr.
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")
local vmm = support.vmm

local function script(text)
  local path = os.tmpname() .. ".lua"
  support.write_file(path, text)
  return path
end

describe("vmm executable", function()
  local made = {}
  local function lua_file(text)
    local p = script(text)
    made[#made + 1] = p
    return p
  end
  after_each(function()
    for _, p in ipairs(made) do os.remove(p) os.remove((p:gsub("%.lua$", ""))) end
    made = {}
    support.cleanup()
  end)

  it("prints its version with the Lua and libuv versions for --version", function()
    local code, out, err = vmm { "--version" }
    assert.equals(0, code)
    assert.matches("^vmm %d+%.%d+%.%d+ %(Lua 5%.4%.%d+, libuv %d+%.%d+%.%d+%)\n$", out)
    assert.equals("", err)
  end)

  it("prints usage naming the commands for --help", function()
    local code, out = vmm { "--help" }
    assert.equals(0, code)
    assert.matches("usage: vmm", out, 1, true)
    assert.matches("vmm script FILE", out, 1, true)
    assert.matches("vmm repl", out, 1, true)
  end)

  it("gives a script its arguments in arg and in ...", function()
    local path = lua_file('print(arg[0] == ..., arg[1], arg[2], #arg, select("#", ...), ...)')
    local code, out = vmm { "script", path, "one", "two words" }
    assert.equals(0, code)
    assert.equals("false\tone\ttwo words\t2\t2\tone\ttwo words\n", out)
  end)

  it("sets arg[0] to the script's path", function()
    local path = lua_file("print(arg[0], arg[-1])")
    local _, out = vmm { "script", path }
    assert.equals(path .. "\tscript\n", out)
  end)

  it("runs FILE.lua and -e CODE like lua(1)", function()
    local path = lua_file("print('from file', ...)")
    local code, out = vmm { path, "x" }
    assert.equals(0, code)
    assert.equals("from file\tx\n", out)
    code, out = vmm { "-e", "print(6 * 7)" }
    assert.equals(0, code)
    assert.equals("42\n", out)
  end)

  it("lets a script require the vmm module", function()
    local path = lua_file('local vmm = require "vmm" print(type(vmm.vm), vmm.version)')
    local code, out = vmm { "script", path }
    assert.equals(0, code)
    assert.matches("^function\t%d+%.%d+%.%d+\n$", out)
  end)

  it("runs the tasks a script spawned to completion before exiting", function()
    local path = lua_file([[
      local vmm = require "vmm"
      vmm.spawn(function() vmm.sleep(0.05) print("task done") end)
      print("script done")]])
    local code, out = vmm { "script", path }
    assert.equals(0, code)
    assert.equals("script done\ntask done\n", out)
  end)

  it("exits non-zero with one line on stderr when the script fails", function()
    local path = lua_file('print("before")\nerror("boom")\n')
    local code, out, err = vmm { "script", path }
    assert.not_equals(0, code)
    assert.equals("before\n", out)
    assert.equals("vmm: " .. path .. ":2: boom\n", err)
  end)

  it("reports a failing task in one line too", function()
    local path = lua_file([[
      local vmm = require "vmm"
      vmm.spawn(function() error("task broke") end)]])
    local code, _, err = vmm { "script", path }
    assert.not_equals(0, code)
    assert.equals("vmm: " .. path .. ":2: task broke\n", err)
  end)

  it("reports a bad vmm.vm setting at the script's line", function()
    local path = lua_file('local vmm = require "vmm"\n\nvmm.vm { memroy = "512M" }\n')
    local code, _, err = vmm { "script", path }
    assert.equals(1, code)
    assert.matches("^vmm: " .. path:gsub("%p", "%%%0") .. ':3: vmm.vm: unknown field "memroy"[^\n]*\n$', err)
  end)

  it("locks every VM's process at its start with --sandbox, allowing the host commands named", function()
    local code, out = vmm { "--sandbox=ping,md5sum", "-e",
      "print(table.concat(require('vmm.vm').lock_on_start.commands, ' '), require('vmm').locked())" }
    assert.equals(0, code)
    assert.equals("ping md5sum\tfalse\n", out)
    code, out = vmm { "--sandbox", "-e", "print(#require('vmm.vm').lock_on_start.commands)" }
    assert.equals(0, code)
    assert.equals("0\n", out)
    local err
    code, _, err = vmm { "--sandbox=,", "-e", "print(1)" }
    assert.equals(1, code)
    assert.equals("vmm: --sandbox=: expected program names after '=', got \",\"\n", err)
  end)

  it("keeps the exit status given to os.exit", function()
    local code = vmm { "script", lua_file("os.exit(3)") }
    assert.equals(3, code)
  end)

  it("exits non-zero with one line when the script file is missing", function()
    local code, _, err = vmm { "script", "/nonexistent/x.lua" }
    assert.not_equals(0, code)
    assert.equals("vmm: cannot open /nonexistent/x.lua: No such file or directory\n", err)
  end)

  it("reports a syntax error in one line", function()
    local path = lua_file("local = 1\n")
    local code, _, err = vmm { "script", path }
    assert.not_equals(0, code)
    assert.matches("^vmm: " .. path:gsub("%p", "%%%0") .. ":1: [^\n]*\n$", err)
  end)

  it("refuses an unknown command with a hint to --help", function()
    local code, out, err = vmm { "frobnicate" }
    assert.not_equals(0, code)
    assert.equals("", out)
    assert.equals("vmm: unknown command \"frobnicate\" (try 'vmm --help')\n", err)
  end)

  it("refuses to run without a command", function()
    local code, _, err = vmm {}
    assert.not_equals(0, code)
    assert.equals("vmm: missing command (try 'vmm --help')\n", err)
  end)
end)
