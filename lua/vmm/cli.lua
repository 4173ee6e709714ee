-- The `vmm` command line. main(arg) gets arg[0] = the program and arg[1..]
-- its arguments, returns the exit status, and raises on failure (main.c
-- prints "vmm: <message>" and exits with 1).
local M = {}

M.USAGE = [==[
usage: vmm <command> [arguments]

  vmm script FILE [ARGS...]   run a Lua script; ARGS are in the global arg
                              (arg[0] = FILE) and in the chunk's `...`
  vmm repl                    interactive Lua with the vmm module loaded
  vmm attach SOCKET           a Lua prompt inside the running VMM that serves
                              SOCKET (vm:serve): its VM is `vm`; Ctrl-C stops
                              the running chunk, Ctrl-D detaches
  vmm attach SOCKET -e CODE   run CODE there, print what it returns, exit 0
                              (it ran) or 1 (it failed)
  vmm attach NAME ...         the same, for the VM of that name in vmm ls
  vmm ls                      the VMs this user's VMMs serve (vm:serve): name,
                              state, pid, memory, vCPUs, devices, socket;
                              entries of VMMs that are gone say "stale"
  vmm --sandbox[=PROG,...] COMMAND ...
                              lock the process once a VM started (vmm.lock):
                              no files opened or changed, no programs started
                              but the host commands PROG,... (vmm.command)
  vmm check-kvm               can /dev/kvm run a standard Linux guest? exit 0
                              (usable) or 1, with one line saying why
  vmm --help                  this text
  vmm --version               versions of vmm, Lua and libuv

Like lua(1): `vmm FILE [ARGS...]` when FILE ends in .lua or contains a '/',
and `vmm -e CODE [FILE [ARGS...]]`.

In scripts: local vmm = require "vmm"
  local vm = vmm.vm { kernel = "/boot/vmlinuz", memory = "512M", vcpus = 2 }
Set VMM_TRACEBACK=1 to see tracebacks of errors.
]==]

local function fail(fmt, ...)
  error(string.format(fmt, ...), 0)
end

-- Sets the global arg like lua.c: arg[0] = script, arg[1..] its arguments,
-- arg[-1..] what came before it.
local function set_arg(argv, script_at)
  local arg = {}
  for i = 0, #argv do arg[i - script_at] = argv[i] end
  _G.arg = arg
  return table.unpack(argv, script_at + 1, #argv)
end

-- Runs the script at argv[i] with the arguments after it.
local function run_script(argv, i)
  local file = argv[i]
  if not file then fail("script: missing the script file (try 'vmm --help')") end
  local chunk, err = loadfile(file)
  if not chunk then fail("%s", err) end
  chunk(set_arg(argv, i))
  -- Let the tasks the script spawned finish, as an event loop would.
  local task = package.loaded["vmm.task"]
  if task then task.run() end
  return 0
end

-- lua.c's -e: `vmm -e CODE [-e CODE...] [FILE [ARGS...]]`.
local function run_e(argv, i)
  local script_at = i
  while argv[script_at] == "-e" do script_at = script_at + 2 end
  set_arg(argv, argv[script_at] and script_at or 0)
  while argv[i] == "-e" do
    local code = argv[i + 1]
    if not code then fail("-e needs a Lua chunk (try 'vmm --help')") end
    local chunk, err = load(code, "=(command line)")
    if not chunk then fail("%s", err) end
    chunk()
    i = i + 2
  end
  if argv[i] then return run_script(argv, i) end
  local task = package.loaded["vmm.task"]
  if task then task.run() end
  return 0
end

local function version()
  local vmm = require "vmm"
  io.write(string.format("vmm %s (%s, libuv %s)\n", vmm.versions.vmm, vmm.versions.lua, vmm.versions.libuv))
  return 0
end

-- One line and exit 0 when /dev/kvm can run the guests, else the reason and
-- exit 1 (scripts/testhost, scripts/test and bench/* ask this).
local function check_kvm(argv)
  if argv[2] then fail("check-kvm: unexpected argument %q (try 'vmm --help')", argv[2]) end
  local k = require("vmm").kvm()
  if k.usable then
    io.write("/dev/kvm is usable: ", k.reason, "\n")
    return 0
  end
  io.write(k.reason, "\n")
  return 1
end

-- Whether the working directory has an entry called name.
local function in_cwd(name)
  for _, n in ipairs(require("vmm.core").list_dir(".") or {}) do
    if n == name then return true end
  end
  return false
end

local function attach(argv)
  local path = argv[2]
  if not path then fail("attach: missing the control socket (try 'vmm --help')") end
  if not path:find("/", 1, true) then
    -- the name of a VM a VMM of this user serves, else a socket here
    local sock, err, several = require("vmm.registry").socket_of(path)
    if sock then path = sock
    elseif several then fail("attach: %s", err)
    elseif not in_cwd(path) then
      fail("attach: %s is no socket here, and %s", path, err)
    end
  end
  local a = require "vmm.attach"
  if argv[3] == nil then return a.run(path) end
  if argv[3] ~= "-e" then fail("attach: unexpected argument %q (try 'vmm --help')", argv[3]) end
  if not argv[4] then fail("attach: -e needs a Lua chunk (try 'vmm --help')") end
  if argv[5] then fail("attach: unexpected argument %q after -e CODE (try 'vmm --help')", argv[5]) end
  return a.run_once(path, argv[4])
end

local function ls(argv)
  if argv[2] then fail("ls: unexpected argument %q (try 'vmm --help')", argv[2]) end
  local r = require "vmm.registry"
  local list, err = r.list()
  if not list then fail("ls: %s", err) end
  io.write(r.format(list))
  return 0
end

local COMMANDS = {
  attach = attach,
  ls = ls,
  ["check-kvm"] = check_kvm,
  script = function(argv) return run_script(argv, 2) end,
  repl = function(argv)
    if argv[2] then fail("repl: unexpected argument %q (try 'vmm --help')", argv[2]) end
    return require("vmm.repl").run()
  end,
  help = function() io.write(M.USAGE) return 0 end,
  version = version,
}
COMMANDS["--help"], COMMANDS["-h"] = COMMANDS.help, COMMANDS.help
COMMANDS["--version"], COMMANDS["-v"] = version, version

-- `--sandbox[=PROG,...]` before the command: every VM locks the process
-- when it starts (lua/vmm/vm.lua), allowing those host commands.
local function sandbox(argv)
  local list = argv[1]:match("^%-%-sandbox=(.*)$")
  local commands = {}
  for prog in (list or ""):gmatch("[^,]+") do commands[#commands + 1] = prog end
  if list and #commands == 0 then fail("--sandbox=: expected program names after '=', got %q", list) end
  require("vmm.vm").lock_on_start = { commands = commands }
  table.remove(argv, 1)
  return M.main(argv)
end

function M.main(argv)
  local cmd = argv[1]
  if not cmd then fail("missing command (try 'vmm --help')") end
  if cmd == "--sandbox" or cmd:find("^%-%-sandbox=") then return sandbox(argv) end
  if COMMANDS[cmd] then return COMMANDS[cmd](argv) end
  if cmd == "-e" then return run_e(argv, 1) end
  if cmd:find("/", 1, true) or cmd:find("%.lua$") then return run_script(argv, 1) end
  fail("unknown command %q (try 'vmm --help')", cmd)
end

return M
