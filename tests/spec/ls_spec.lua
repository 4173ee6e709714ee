-- `vmm ls` and the per-user registry behind it (lua/vmm/registry.lua): VMMs
-- that serve a control socket register in the runtime directory
-- (VMM_RUNTIME_DIR here, a fresh one per test); `vmm ls` lists them and
-- asks each live one over its socket; `vmm attach NAME` finds the socket.
-- The VMMs are `vmm` processes beside this one, each with a VM that is made
-- and never started (no KVM needed).
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")
local vmm = require "vmm"

-- The VMM a test runs: a VM named arg[1] (with a disk on arg[2] unless
-- "-"), served at arg[3] (or without a path when "-"); it says where, then
-- lives for arg[4] seconds and exits normally.
local CHILD = [[
local vmm = require "vmm"
local name, disk, path, life = arg[1], arg[2], arg[3], tonumber(arg[4])
local vm = vmm.vm { kernel = vmm.default_kernel and vmm.default_kernel() or "/boot/vmlinuz", name = name,
                    memory = "96M", vcpus = 2 }
if disk ~= "-" then vm:add_disk { path = disk } end
local server = assert(vm:serve(path ~= "-" and path or nil))
print("serving " .. server.path())
io.stdout:flush()
-- arg[5] "busy": its loop never runs (a chunk that never yields)
if arg[5] == "busy" then local t0 = os.clock() while os.clock() - t0 < life do end end
vmm.sleep(life)
-- then it stops serving (arg[5] "close") or exits at once, its Lua state
-- closed
if arg[5] == "close" then server.close() else os.exit(0, true) end
]]

describe("vmm ls", function()
  local dir, child_script, image, children

  local function env_argv(...)
    local argv = { "env", "VMM_RUNTIME_DIR=" .. dir, support.bin, ... }
    return argv
  end

  -- Starts a VMM (CHILD) and waits until it serves -> command, socket path.
  local function start(name, opts)
    opts = opts or {}
    local c = assert(vmm.background(env_argv("script", child_script, name, opts.disk or "-", opts.path or "-",
                                             tostring(opts.life or 60), opts.ending or "exit")))
    children[#children + 1] = c
    local path
    assert(vmm.wait_until(function()
      path = c:output():match("serving (%S+)\n")
      return path or c:done()
    end, 20))
    assert(path, "the VMM did not serve: " .. c:output())
    return c, path
  end

  -- Runs `vmm ARGS...` with this test's runtime directory -> status, output.
  local function run(...)
    local out, status = vmm.command(env_argv(...), { timeout = 30 })
    assert(out, status)
    return status, out
  end

  -- The row of `vmm ls` output for pid -> its cells split on 2+ spaces.
  local function row(out, pid)
    for line in out:gmatch("[^\n]+") do
      local cells = {}
      for cell in (line .. "  "):gmatch("(.-)%s%s+") do cells[#cells + 1] = cell end
      if cells[3] == tostring(pid) then return cells, line end
    end
    return nil
  end

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    children = {}
    child_script = support.temp_file(CHILD)
    image = support.temp_file(string.rep("\0", 1024 * 1024))
  end)
  after_each(function()
    for _, c in ipairs(children) do
      if not c:done() then c:kill(9) c:wait(10) end
    end
    os.execute("rm -rf " .. support.quote(dir))
    support.cleanup()
  end)

  it("prints only its header when no VMM serves", function()
    local status, out = run("ls")
    assert.equals(0, status, out)
    assert.equals("NAME  STATE  PID  MEMORY  VCPUS  DEVICES  SOCKET\n", out)
  end)

  it("lists a served VM with its state, pid, memory, vCPUs, devices and the default socket named after it", function()
    local c, path = start("lsweb", { disk = image })
    assert.equals(dir .. "/lsweb.sock", path)
    local status, out = run("ls")
    assert.equals(0, status, out)
    local cells, line = row(out, c:pid())
    assert(cells, out)
    assert.same({ "lsweb", "created", tostring(c:pid()), "96 MiB", "2", "disk0 (virtio-blk)", path }, cells, line)
  end)

  it("keeps two VMMs serving one VM name apart (as a migration's source and target): two sockets, two rows",
     function()
    local a, path_a = start("lsdup")
    local b, path_b = start("lsdup")
    assert.equals(dir .. "/lsdup.sock", path_a)
    assert.equals(string.format("%s/lsdup.%d.sock", dir, b:pid()), path_b)
    local _, out = run("ls")
    assert.equals(path_a, row(out, a:pid())[7])
    assert.equals(path_b, row(out, b:pid())[7])
    -- vmm attach NAME cannot pick one of them
    local status, msg = run("attach", "lsdup", "-e", "return 1")
    assert.equals(1, status)
    assert.matches("2 VMMs serve a VM named lsdup (process " .. a:pid() .. " at " .. path_a, msg, 1, true)
  end)

  it("lets vmm attach find a VM by its name", function()
    local c = start("lsfind")
    local status, out = run("attach", "lsfind", "-e", "return vm:info().name, vmm.ls ~= nil")
    assert.equals(0, status, out)
    assert.equals("lsfind\ttrue\n", out)
    assert(c)
    status, out = run("attach", "lsnone", "-e", "return 1")
    assert.equals(1, status)
    assert.equals("vmm: attach: lsnone is no socket here, and no running VMM serves a VM named lsnone " ..
                  "(vmm ls lists them)\n", out)
  end)

  for _, ending in ipairs { "close", "exit" } do
    local how = ending == "close" and "stops serving (server.close()) and ends" or "exits while it serves"
    it("drops the entry and the socket of a VMM that " .. how, function()
      local c = start("lsbye", { life = 1, ending = ending })
      local out, status = c:wait(20)
      assert.equals(0, status, out)
      local _, listing = run("ls")
      assert.is_nil(row(listing, c:pid()), listing)
      assert.same({}, require("vmm.core").list_dir(dir))
    end)
  end

  it("reports a VMM that does not answer on its socket as not answering (its loop is busy)", function()
    local c, path = start("lsbusy", { ending = "busy", life = 30 })
    local status, out = run("ls")
    assert.equals(0, status, out)
    local cells, line = row(out, c:pid())
    assert(cells, out)
    assert.equals("not answering", cells[2], line)
    assert.matches(path .. "  [no answer within 2 s]", line, 1, true)
  end)

  it("reports the entry of a VMM that was killed as stale, naming the process", function()
    local c, path = start("lsdead")
    c:kill(9)
    c:wait(10)
    local status, out = run("ls")
    assert.equals(0, status, out)
    local cells, line = row(out, c:pid())
    assert(cells, out)
    assert.equals("stale", cells[2], line)
    assert.matches(path .. "  [stale: process " .. c:pid() .. " is gone]", line, 1, true)
  end)

  it("skips entry files it cannot read as entries (no name, pid or socket; a pid that is no PID)", function()
    assert(os.execute("mkdir -m 0700 " .. support.quote(dir)))
    support.write_file(dir .. "/1.1.vm", "garbage\n\0\255=\n")
    support.write_file(dir .. "/2.1.vm", "name=x\npid=abc\nsocket=/tmp/x.sock\n")
    support.write_file(dir .. "/3.1.vm", "name=y\npid=-5\nsocket=/tmp/y.sock\n")
    support.write_file(dir .. "/4.1.vm", "name=z\npid=99999999999\nsocket=/tmp/z.sock\n")
    local status, out = run("ls")
    assert.equals(0, status, out)
    assert.equals("NAME  STATE  PID  MEMORY  VCPUS  DEVICES  SOCKET\n", out)
  end)

  it("refuses a runtime directory other users can enter, naming it and its mode", function()
    assert(os.execute("mkdir -m 0755 " .. support.quote(dir)))
    local status, out = run("ls")
    assert.equals(1, status)
    assert.equals("vmm: ls: the VMM runtime directory " .. dir .. ": mode 755 lets other users in (expected 0700)\n",
                  out)
  end)
end)
