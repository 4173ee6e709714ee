-- `vmm attach`: a prompt inside a running VMM, behind the control socket
-- vm:serve opened. This spec's own process is the VMM attached to (its VM is
-- made and never started: no KVM needed); the clients are `vmm attach`
-- processes run beside it, which the spec waits for while the event loop
-- serves them.
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")
local vmm = require "vmm"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. support.quote(dir)))
local sock = dir .. "/web1.sock"

local function attach(args, opts)
  local argv = { support.bin, "attach", sock }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return assert(vmm.background(argv, opts))
end

-- Runs a client to its end: exit status, stdout and stderr together.
local function run(args, opts)
  local c = attach(args, opts)
  local out, status = c:wait(20)
  assert(out, status)
  return status, out
end

describe("vmm attach", function()
  local vm, server
  setup(function()
    vm = vmm.vm{ kernel = vmm.default_kernel and vmm.default_kernel() or "/boot/vmlinuz", name = "web1" }
    server = assert(vm:serve(sock))
  end)
  teardown(function()
    server.close()
    vm:close()
    os.execute("rm -rf " .. support.quote(dir))
    support.cleanup()
  end)

  it("-e runs a chunk inside the VMM with its VM as vm, prints what it returns and exits 0", function()
    _G.attach_spec_marker = "from the VMM"
    local status, out = run({ "-e", "return vm:info().name, vm:state(), attach_spec_marker" })
    assert.equals(0, status)
    assert.equals("web1\tcreated\tfrom the VMM\n", out)
  end)

  it("-e sends back what the chunk prints and writes, and exits 1 with the error when it fails", function()
    local status, out = run({ "-e", "print('a', 1) io.write('b\\n') io.stdout:write('c\\n') error('boom')" })
    assert.equals(1, status)
    assert.equals("a\t1\nb\nc\nvmm: stdin:1: boom\n", out)
  end)

  it("runs a prompt from a pipe as vmm repl does, with globals of its own", function()
    local input = support.temp_file("y = 41\ny + 1\nfunction f()\n  return 7\nend\nf()\n")
    local status, out = run({}, { stdin = input })
    assert.equals(0, status)
    assert.equals("web1> web1> 42\nweb1> web1>> web1>> web1> 7\nweb1> ", out)
    assert.is_nil(rawget(_G, "y")) -- the session's global, not the VMM's
  end)

  it("serves several clients at once", function()
    _G.attach_box = {}
    -- the first waits for what the second does: both must be served together
    local a = attach({ "-e", "return vmm.wait_until(function() return attach_box.go end, 15)" })
    local b = attach({ "-e", "attach_box.go = 'from b' return 'b done'" })
    local out_b, status_b = b:wait(20)
    local out_a, status_a = a:wait(20)
    assert.equals(0, status_b, out_b)
    assert.equals("b done\n", out_b)
    assert.equals(0, status_a, out_a)
    assert.equals("from b\n", out_a)
  end)

  it("Ctrl-C stops the running chunk, not the VMM, and the prompt goes on", function()
    -- the chunk holds this process; the shell presses Ctrl-C after a second
    local script = string.format([[
      ( echo 'while true do end'; sleep 3; echo "return 'after', vm:info().name" ) | %s attach %s &
      p=$!; sleep 1; kill -INT $p; wait $p]], support.quote(support.bin), support.quote(sock))
    local c = assert(vmm.background({ "sh", "-c", script }))
    local out, status = c:wait(30)
    assert.equals(0, status, out)
    assert.matches("vmm: interrupted\n", out, 1, true)
    assert.matches("after\tweb1\n", out, 1, true)
  end)

  it("ends its sessions when told (as a completed migration does): the client hears why, the chunk is cancelled", function()
    local task = require "vmm.task"
    local before = task.count()
    local c = attach({ "-e", "vmm.sleep(600)" })
    assert(vmm.wait_until(function() return next(server.sessions) ~= nil end, 10), "no session")
    vmm.sleep(0.5) -- the chunk is sleeping now
    for _, session in pairs(server.sessions) do session.stop("web1 migrated to process 4242") end
    local out, status = c:wait(20)
    assert.equals(1, status, out)
    assert.equals("vmm: attach: web1 migrated to process 4242\n", out)
    assert(vmm.wait_until(function() return task.count() <= before end, 5), "the chunk's task is still there")
  end)

  it("refuses a client that does not begin with an attach or a migration", function()
    local conn = assert(require("vmm.core").mig_connect(sock))
    assert(conn:send("eval", "return 1"))
    local kind, why
    vmm.wait_until(function()
      kind, why = conn:recv()
      return kind ~= nil
    end, 10)
    assert.equals("error", kind)
    assert.equals("a client began with a section of type eval, not attach or hello", why)
    conn:close()
  end)

  it("names a socket nobody serves", function()
    local c = assert(vmm.background({ support.bin, "attach", dir .. "/nobody.sock", "-e", "1" }))
    local out, status = c:wait(20)
    assert.equals(1, status)
    assert.matches("nobody.sock", out, 1, true)
  end)

  it("refuses a process of another uid even where the socket lets it connect", function()
    local probe = os.execute("setpriv --reuid=65534 --regid=65534 --clear-groups " .. support.quote(support.bin)
      .. " --version >/dev/null 2>&1")
    if not probe then
      pending("uid 65534 cannot run " .. support.bin .. " here (setpriv, or the path's permissions)")
      return
    end
    assert(os.execute("chmod 0666 " .. support.quote(sock)))
    local c = assert(vmm.background({ "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
      support.bin, "attach", sock, "-e", "return 1" }))
    local out, status = c:wait(20)
    os.execute("chmod 0600 " .. support.quote(sock))
    assert.equals(1, status)
    assert.matches("attach: ", out, 1, true)
    assert.not_matches("^1\n", out)
  end)
end)
