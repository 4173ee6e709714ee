-- `vmm repl` fed through a pipe (or a file): lua.c's behaviour, over the
-- event loop.
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")

local function repl(input)
  return support.vmm({ "repl" }, input)
end

-- The output without the prompts.
local function values(out)
  return (out:gsub(">?> ", ""))
end

describe("vmm repl", function()
  after_each(support.cleanup)

  it("prints the value of an expression", function()
    local code, out, err = repl("1 + 1\n")
    assert.equals(0, code)
    assert.equals("2\n", values(out))
    assert.equals("", err)
  end)

  it("treats a leading = as return", function()
    local _, out = repl("=1+1\n")
    assert.equals("2\n", values(out))
  end)

  it("prints every value, nil included", function()
    local _, out = repl("1, nil, 'x'\n")
    assert.equals("1\tnil\tx\n", values(out))
  end)

  it("prints nothing for a statement", function()
    local _, out = repl("x = 5\nx\n")
    assert.equals("5\n", values(out))
  end)

  it("continues an incomplete chunk with the >> prompt", function()
    local code, out = repl("function double(x)\n  return x * 2\nend\ndouble(21)\n")
    assert.equals(0, code)
    assert.equals("> >> >> > 42\n> ", out)
  end)

  it("prints an error in one line and goes on", function()
    local code, out, err = repl("error('oops')\nprint('still here')\n")
    assert.equals(0, code)
    assert.equals("vmm: stdin:1: oops\n", err)
    assert.equals("still here\n", values(out))
  end)

  it("reports a syntax error and goes on", function()
    local _, out, err = repl("1 +* 2\n=3\n")
    assert.matches("^vmm: stdin:1: [^\n]+\n$", err)
    assert.equals("3\n", values(out))
  end)

  it("exits 0 at the end of input without a banner when stdin is no tty", function()
    local code, out = repl("")
    assert.equals(0, code)
    assert.equals("> ", out)
  end)

  it("has the vmm module loaded and lets blocking calls run", function()
    local _, out = repl("vmm.sleep(0.01)\nvmm.version\n")
    assert.matches("^%d+%.%d+%.%d+\n$", values(out))
  end)

  it("keeps spawned tasks running while it waits for input", function()
    local cmd = string.format(
      "(printf 't = vmm.spawn(function() vmm.sleep(0.1) print(\"background\") end)\\n'; sleep 0.6; "
      .. "printf 'print(\"foreground\")\\n') | %s repl", support.quote(support.bin))
    local code, out = support.sh(cmd)
    assert.equals(0, code)
    assert.equals("background\nforeground\n", values(out))
  end)

  it("interrupts a blocking line on SIGINT and goes on", function()
    local dir = os.tmpname()
    os.remove(dir)
    local cmd = table.concat({
      "mkdir " .. dir, "mkfifo " .. dir .. "/in",
      support.quote(support.bin) .. " repl <" .. dir .. "/in & pid=$!",
      "exec 3>" .. dir .. "/in",
      "printf 'vmm.sleep(10) print(\"not reached\")\\n' >&3",
      "sleep 0.5", "kill -INT $pid", "sleep 0.2",
      "printf '=1+1\\n' >&3", "exec 3>&-", "wait $pid; rc=$?",
      "rm -r " .. dir, "exit $rc" }, "\n")
    local t0 = os.time()
    local code, out, err = support.sh(cmd)
    assert.equals(0, code)
    assert.equals("vmm: interrupted\n", err)
    assert.equals("2\n", values(out))
    assert.is_true(os.time() - t0 < 8)
  end)

  it("reads its input from a regular file too", function()
    local path = support.temp_file("=6*7\n")
    local code, out = support.sh(support.quote(support.bin) .. " repl <" .. path)
    assert.equals(0, code)
    assert.equals("42\n", values(out))
  end)
end)
