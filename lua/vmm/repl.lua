-- `vmm repl`: lua.c's interactive loop over the vmm event loop. Input is read
-- through libuv, so VM consoles and spawned tasks keep going while the prompt
-- waits; each line runs as a task, so blocking calls work in it.
local core = require "vmm.core"
local task = require "vmm.task"
local vmm = require "vmm"

local M = {}

local function one_line(msg)
  msg = msg:gsub("\nstack traceback:.*", "")
  return (msg:gsub("[\r\n]+%s*", " "))
end
M.one_line = one_line

local error_text = task.error_text

local function report(e)
  io.stderr:write("vmm: ", one_line(error_text(e)), "\n")
end

-- The next line of input, false after Ctrl-C, or nil at the end.
local read_line
function read_line()
  local line, err
  local ok, e = pcall(task.wait, function()
    local l, e = core.stdin_read_line()
    if l == false then return false end
    line, err = l, e
    return true
  end)
  if not ok then
    if e == "interrupted" then io.stdout:write("\n") return false end
    report(e)          -- a task failed meanwhile
    return read_line()
  end
  if err then report(err) end
  return line
end

M.read_line = read_line

-- A function for chunk (its globals in env, if given), or nil,
-- "incomplete" and the syntax error, or nil and a syntax error.
local function compile(chunk, env)
  if chunk:sub(1, 1) == "=" then chunk = "return " .. chunk:sub(2) end
  -- (load's env argument, even nil, replaces _ENV: pass it only if given)
  local function try(text)
    if env then return load(text, "=stdin", "t", env) end
    return load(text, "=stdin", "t")
  end
  local f = try("return " .. chunk)
  if f then return f end
  local err
  f, err = try(chunk)
  if f then return f end
  if err:find("<eof>$") then return nil, "incomplete", err end
  return nil, err
end

M.compile = compile

local function print_results(r)
  if r.n == 0 then return end
  local ok, err = pcall(print, table.unpack(r, 1, r.n))
  if not ok then report(err) end
end

-- Runs f as a task and waits for it, reporting the errors of other tasks
-- that surface meanwhile.
local function eval(f)
  local r
  local t = task.spawn(function()
    r = table.pack(xpcall(f, error_text))
  end)
  while true do
    local ok, err = pcall(task.wait, function() return t:done() end)
    if ok then break end
    report(err)
    if err == "interrupted" then t:cancel() return end
  end
  if r[1] then print_results(table.pack(table.unpack(r, 2, r.n)))
  else report(r[2]) end
end

local function prompt(p)
  io.stdout:write(p)
  io.stdout:flush()
end

function M.run()
  _G.vmm = vmm
  core.catch_sigint(true)  -- Ctrl-C interrupts the line, not the process
  if core.stdin_is_tty() then
    io.stdout:write(string.format("vmm %s (%s, libuv %s) -- try: vm = vmm.vm{ kernel = \"/boot/vmlinuz\" }\n"
      .. "Ctrl-D to quit.\n", vmm.versions.vmm, vmm.versions.lua, vmm.versions.libuv))
  end
  local pending
  while true do
    prompt(pending and ">> " or "> ")
    local line = read_line()
    if line == false then
      pending = nil
      goto continue
    end
    if not line then
      if core.stdin_is_tty() then io.stdout:write("\n") end
      if pending then report(select(3, compile(pending))) end
      return 0
    end
    local chunk = pending and pending .. "\n" .. line or line
    local f, err = compile(chunk)
    pending = nil
    if f then eval(f)
    elseif err == "incomplete" then pending = chunk
    else report(err) end
    ::continue::
  end
end

return M
