-- Line editing in the prompts (lua/lvmm_edit.c: libedit): history, its
-- file, Tab completion of globals, fields and methods, Ctrl-C and Ctrl-D,
-- on a terminal (tmux). Without a terminal the prompts read plain lines:
-- repl_spec.lua and attach_spec.lua drive them through pipes.
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")
local tmux = dofile(support.root .. "/tests/lib/tmux.lua")
local repl = require "vmm.repl"
local vmm = require "vmm"

describe("completions for Tab (repl.completions)", function()
  local env = setmetatable({
    vm = vmm.vm { kernel = vmm.default_kernel and vmm.default_kernel() or "/boot/vmlinuz", name = "edit1" },
    cfg = { net = { ifname = "tap0", mac = "x" }, name = "n", [1] = "not a name" },
    broken = setmetatable({}, { __index = function() error("boom") end }),
    vmm = vmm,
  }, { __index = _G })

  it("completes global names and keywords, through the environment's __index", function()
    assert.same({ "print" }, repl.completions("prin", env))
    assert.same({ "rawequal", "rawget", "rawlen", "rawset" }, repl.completions("raw", env))
    assert.same({ "repeat", "require", "return" }, repl.completions("re", env))
  end)

  it("completes a table's fields after '.', keeping the path", function()
    assert.same({ "cfg.name", "cfg.net" }, repl.completions("cfg.n", env))
    assert.same({ "cfg.net.ifname" }, repl.completions("cfg.net.i", env))
    assert.same({ "vmm.sleep" }, repl.completions("vmm.sl", env))
    assert.same({ "vmm.net.addresses" }, repl.completions("vmm.net.addr", env))
  end)

  it("completes methods after ':', of userdata too (the VM)", function()
    local got = repl.completions("vm:st", env)
    assert.same({ "vm:start", "vm:state", "vm:stop", "vm:stop_reason" }, got)
    -- only functions: cfg.name is a string
    assert.same({}, repl.completions("cfg:n", env))
  end)

  it("completes nothing for a missing path, a field that raises, or text that is not a name", function()
    assert.same({}, repl.completions("nosuch.x", env))
    assert.same({}, repl.completions("broken.x", env))
    assert.same({}, repl.completions("1.5", env))
    assert.same({}, repl.completions("a..b", env))
  end)
end)

local available, why = tmux.available()

describe("vmm repl on a terminal", function()
  local t, history
  local guarded = support.guarded(it, pending, { available, why })

  before_each(function()
    history = os.tmpname()
    os.remove(history)
  end)
  after_each(function()
    if t then t:close() t = nil end
    os.remove(history)
  end)

  local function start(argv)
    t = assert(tmux.start(argv or { support.bin, "repl" }, { VMM_HISTORY = history, TERM = "xterm" }))
    assert(t:wait_for("quit.\n>"))
  end

  guarded("recalls earlier lines with Up and saves them to the history file (0600), read again next time",
          function()
    start()
    t:type("x = 41") t:keys("Enter")
    assert(t:wait_last_line(">"))
    t:type("x + 1") t:keys("Enter")
    assert(t:wait_for("\n42\n"))
    assert(t:wait_last_line(">"))
    t:keys("Up", "Up", "Enter") -- x = 41 again
    assert(t:wait_last_line(">"))
    t:type("x * 2") t:keys("Enter")
    assert(t:wait_for("\n82\n"))
    t:keys("C-d")
    assert(t:wait_for("[exited 0]"))
    local f = assert(io.open(history))
    local text = f:read("a")
    f:close()
    assert.matches("x\\040+\\0401", text, 1, true)
    local status, mode = support.sh("stat -c %a " .. support.quote(history))
    assert.equals(0, status)
    assert.equals("600\n", mode)
    t:close()
    -- a new prompt has the lines of the last
    start()
    t:keys("Up")
    assert(t:wait_for("> x * 2"))
  end)

  guarded("completes names, fields and a VM's methods with Tab", function()
    start()
    t:type("v = vmm.vm{ kernel = vmm.default_kernel and vmm.default_kernel() or '/boot/vmlinuz', name = 'tabvm' }") t:keys("Enter")
    assert(t:wait_last_line(">")) -- typed earlier, keys would be echoed before the prompt
    t:type("vmm.sl") t:keys("Tab")
    assert(t:wait_for("> vmm.sleep"))
    t:keys("C-u")
    t:type("v:sta") t:keys("Tab", "Tab")
    -- two candidates: both listed, the line keeps the common part
    assert(t:wait_for("start", 10))
    assert(t:wait_for("state", 10))
    t:type("te()") t:keys("Enter")
    assert(t:wait_for("\ncreated\n"))
  end)

  guarded("drops the line being typed on Ctrl-C and goes on", function()
    start()
    t:type("this is not Lua")
    t:keys("C-c")
    assert(t:wait_last_line(">"))
    t:type("1 + 2") t:keys("Enter")
    local screen = assert(t:wait_for("\n3\n"))
    assert.not_matches("syntax error", screen, 1, true)
  end)

  for _, c in ipairs { { "waits", "vmm.sleep(60)" }, { "never blocks (a busy loop)", "while true do end" } } do
    guarded("stops a chunk that " .. c[1] .. " on Ctrl-C, and the prompt goes on", function()
      start()
      t:type(c[2]) t:keys("Enter")
      vmm.sleep(0.5)
      t:keys("C-c")
      assert(t:wait_for("vmm: interrupted"))
      assert(t:wait_last_line(">"))
      t:type("'after'") t:keys("Enter")
      assert(t:wait_for("\nafter\n"))
    end)
  end

  guarded("keeps history with VMM_HISTORY=\"\" off the disk", function()
    t = assert(tmux.start({ support.bin, "repl" }, { VMM_HISTORY = "", TERM = "xterm", HOME = history }))
    assert(t:wait_for("quit.\n>"))
    t:type("1") t:keys("Enter")
    assert(t:wait_for("\n1\n"))
    t:keys("C-d")
    assert(t:wait_for("[exited 0]"))
    assert.is_nil(io.open(history .. "/.vmm_history"))
  end)

  guarded("edits, recalls and completes lines in vmm attach too, with the VMM's names", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -m 0700 " .. support.quote(dir)))
    local vm = vmm.vm { kernel = vmm.default_kernel and vmm.default_kernel() or "/boot/vmlinuz", name = "editvm" }
    local server = assert(vm:serve(dir .. "/edit.sock"))
    t = assert(tmux.start({ support.bin, "attach", dir .. "/edit.sock" }, { VMM_HISTORY = history, TERM = "xterm" }))
    local ok, err = pcall(function()
      assert(t:wait_for("\neditvm>"))
      -- Tab completes the VMM's names (this client has no vm)
      t:type("vm:inf") t:keys("Tab")
      assert(t:wait_for("editvm> vm:info"))
      t:type("().name .. '!'") t:keys("Enter")
      assert(t:wait_for("\neditvm!\n"))
      assert(t:wait_last_line("editvm>"))
      t:keys("Up", "Enter")
      assert(t:wait_for("editvm!\neditvm> vm:info().name .. '!'\neditvm!\n"))
      t:keys("C-d")
      assert(t:wait_for("[exited 0]"))
    end)
    server.close()
    vm:close()
    os.execute("rm -rf " .. support.quote(dir))
    assert(ok, err)
  end)
end)
