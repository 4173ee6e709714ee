-- The migration API without KVM: the control socket (permissions, stale
-- sockets, peer credentials), argument checking, and what the source and
-- the target say when the other side is not a VMM. Moving real VMs is in
-- tests/scenario/migrate_spec.lua (KVM test host).
local support = dofile((debug.getinfo(1, "S").source:match("^@(.*)/") or ".") .. "/support.lua")
local vmm = require "vmm"
local core = require "vmm.core"
local KERNEL = support.host_kernel()
local migrate = require "vmm.migrate"

local function tmp_sock(tag)
  return string.format("/tmp/lvmm-spec-%s-%d.sock", tag, math.random(1, 1e9))
end

local function mode_of(path)
  local out = assert(vmm.command({ "stat", "-c", "%a %F", path }))
  return out:gsub("%s+$", "")
end

local function is_root()
  local out = vmm.command({ "id", "-u" })
  return out and out:match("^0") ~= nil
end

describe("the control socket (core.mig_listen)", function()
  it("is a socket of mode 0600 that accepts nothing until someone connects", function()
    local path = tmp_sock("mode")
    local l = assert(core.mig_listen(path))
    assert.are.equal("600 socket", mode_of(path))
    assert.is_nil(l:accept())
    l:close()
    assert.is_nil(io.open(path, "r"))
  end)

  it("refuses a path another listener holds, and replaces a stale socket file", function()
    local path = tmp_sock("busy")
    local l = assert(core.mig_listen(path))
    local l2, err = core.mig_listen(path)
    assert.is_nil(l2)
    assert.matches("a running VMM listens on it", err, 1, true)
    -- a socket file nobody listens on (a crashed VMM's) is taken over
    local stale = assert(core.mig_listen(path .. "2"))
    assert(vmm.command({ "cp", "-a", path .. "2", path .. "3" }))
    stale:close()
    local l3 = assert(core.mig_listen(path .. "3"))
    l3:close()
    l:close()
  end)

  it("refuses a path that is not a socket", function()
    local path = os.tmpname()
    local l, err = core.mig_listen(path)
    assert.is_nil(l)
    assert.matches("exists and is not a socket", err, 1, true)
    os.remove(path)
  end)

  it("accepts a connection from the same user and tells who connected", function()
    local path = tmp_sock("same")
    local l = assert(core.mig_listen(path))
    local c = assert(core.mig_connect(path))
    local conn, pid = l:accept()
    assert.is_truthy(conn)
    assert.is_number(pid)
    conn:close(); c:close(); l:close()
  end)

  it("refuses a process of another uid even when the socket's mode would let it in", function()
    if not is_root() then pending("needs root to run a process as another uid") return end
    local path = tmp_sock("uid")
    local l = assert(core.mig_listen(path))
    assert(vmm.command({ "chmod", "0666", path }))
    local child = assert(vmm.background({ "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
      "build/vmm", "-e", string.format("assert(require('vmm.core').mig_connect(%q)); require('vmm').sleep(5)", path) }))
    local conn, why
    vmm.wait_until(function()
      conn, why = l:accept()
      return conn or why
    end, 10)
    child:kill(9)
    l:close()
    assert.is_nil(conn, child:output())
    assert.matches("refused process %d+ of uid 65534", why or child:output())
  end)
end)

describe("vmm.receive", function()
  it("needs exactly one of from and listen, and names unknown fields", function()
    assert.has_error(function() vmm.receive {} end,
      "vmm.receive: give exactly one of from (a control socket) or listen (a path to wait on)")
    assert.has_error(function() vmm.receive { from = "/a", listen = "/b" } end)
    assert.has_error(function() vmm.receive { from = "/a", frm = 1 } end, "vmm.receive: unknown field frm")
    assert.has_error(function() vmm.receive { from = "/a", timeout = -1 } end)
    assert.has_error(function() vmm.receive { from = "/a", backend_transfer = "yes" } end,
      "vmm.receive: field backend_transfer: expected a boolean, got string")
  end)

  it("says so when nothing listens on the control socket", function()
    local vm, err = vmm.receive { from = tmp_sock("none") }
    assert.is_nil(vm)
    assert.matches("^vmm.receive: connect to .*: No such file or directory", err)
  end)

  it("gives up with a message when the source never answers", function()
    local path = tmp_sock("mute")
    local l = assert(core.mig_listen(path))
    local vm, err = vmm.receive { from = path, timeout = 0.3 }
    l:close()
    assert.is_nil(vm)
    assert.matches("vmm.receive: source: no data for 300 ms", err, 1, true)
  end)

  it("reports a source that hangs up instead of describing the VM", function()
    local path = tmp_sock("junk")
    local l = assert(core.mig_listen(path))
    -- a peer that connects, then closes without a word
    local junk = assert(vmm.background({ "build/vmm", "-e", string.format([[
      local c = assert(require("vmm.core").mig_connect(%q))
      require("vmm").sleep(0.5)
    ]], path) }))
    local conn
    assert(vmm.wait_until(function() conn = l:accept() return conn end, 10))
    -- we are the target here; the peer plays a source that never sends a section
    local desc, err = conn:offer(true, 1)
    assert.is_nil(desc)
    -- closed, or reset when our HELLO was left unread
    assert.is_truthy(err:find("source closed the connection", 1, true) or err:find("source: connection reset", 1, true), err)
    conn:close(); l:close(); junk:kill(9)
  end)
end)

describe("scripts/migrate.lua", function()
  it("prints its usage and exits 2 without a control socket", function()
    local out, status = vmm.command({ "build/vmm", "script", "scripts/migrate.lua" })
    assert.are.equal(2, status)
    assert.matches("migrate.lua: missing the control socket path", out, 1, true)
    assert.matches("usage: vmm script scripts/migrate.lua SOCKET", out, 1, true)
  end)

  it("exits 1 with one error line when no VMM serves the socket", function()
    local path = tmp_sock("nobody")
    local out, status = vmm.command({ "build/vmm", "script", "scripts/migrate.lua", path })
    assert.are.equal(1, status)
    assert.are.equal(1, select(2, out:gsub("\n", "\n")), out)
    assert.matches("^migrate.lua: vmm.receive: connect to " .. path:gsub("%p", "%%%0") .. ": No such file", out)
  end)
end)

describe("vm:migrate", function()
  local vm
  before_each(function()
    if KERNEL then vm = vmm.vm { name = "mig-args", memory = "64M", kernel = KERNEL } end
  end)
  after_each(function() if vm then vm:close() end end)
  local it = KERNEL and it or pending

  it("checks its fields", function()
    assert.has_error(function() vm:migrate() end, "vm:migrate: expected a table of settings, got nil")
    assert.has_error(function() vm:migrate { to = "/x", bogus = 1 } end, "vm:migrate: unknown field bogus")
    assert.has_error(function() vm:migrate { to = 42 } end,
      "vm:migrate: field to: expected a socket path or a control connection, got number")
    assert.has_error(function() vm:migrate { to = "/x", nets = true } end,
      "vm:migrate: field nets: expected a table, got boolean")
  end)

  it("refuses a VM that is not running, before talking to the target", function()
    local path = tmp_sock("created")
    local l = assert(core.mig_listen(path))
    local report, err = vm:migrate { to = path }
    l:close()
    assert.is_nil(report)
    assert.matches("cannot migrate: the VM is created", err, 1, true)
  end)

  it("alternates replacement TAP names so repeated migrations do not collide", function()
    assert.are.equal("tap0-b", migrate.replacement_ifname("tap0"))
    assert.are.equal("tap0", migrate.replacement_ifname("tap0-b"))
    assert.are.equal("averylongname-b", migrate.replacement_ifname("averylongnamexy"))
  end)
end)

describe("the source's log lines", function()
  local named = require("vmm.migrate").named

  it("name the VM once, whether or not the message already does", function()
    assert.equals("mig-failures: migration failed, the VM runs on here: x",
      named("mig-failures", "mig-failures: migration failed, the VM runs on here: x"))
    assert.equals("web1: vm:migrate: connect: refused", named("web1", "vm:migrate: connect: refused"))
    assert.equals("web1: web10: other", named("web1", "web10: other"))
  end)
end)
