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

-- ---- line editing ------------------------------------------------------------

-- The history file: $VMM_HISTORY ("" for none), else ~/.vmm_history.
function M.history_path()
  local p = os.getenv("VMM_HISTORY")
  if p then return p ~= "" and p or nil end
  local home = os.getenv("HOME")
  return home and home ~= "" and (home .. "/.vmm_history") or nil
end

local KEYWORDS = { "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
                   "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while" }

-- The words that complete `word` (the text before the cursor back to a
-- space or an operator: "pri", "vmm.net.", "vm:st") in env (default _G):
-- global names and keywords, a table's fields (through __index tables),
-- and after ':' the methods of a table or userdata. Sorted; nothing when
-- the part before the last '.' or ':' is not there. Reading a field may
-- run an __index function: its errors complete nothing.
function M.completions(word, env)
  env = env or _G
  local path, sep, prefix = word:match("^(.-)([%.:]?)([%w_]*)$")
  if not path or (sep == "" and path ~= "") then return {} end
  local base = env
  if sep ~= "" then
    if not path:match("^[%a_][%w_]*$") and not path:match("^[%a_][%w_.]*[%w_]$") then return {} end
    for part in path:gmatch("[^.]+") do
      local ok, v = pcall(function() return base[part] end)
      if not ok or v == nil then return {} end
      base = v
    end
  end
  local names, seen = {}, {}
  local function add(k, v)
    if type(k) == "string" and k:match("^[%a_][%w_]*$") and k:sub(1, #prefix) == prefix and not seen[k]
       and (sep ~= ":" or type(v) == "function") then
      seen[k] = true
      names[#names + 1] = path .. sep .. k
    end
  end
  local function from(t, depth)
    if type(t) == "table" then
      for k, v in next, t do add(k, v) end
    end
    if depth > 8 then return end
    local mt = getmetatable(t)
    if type(mt) == "table" and type(rawget(mt, "__index")) == "table" then from(rawget(mt, "__index"), depth + 1) end
  end
  from(base, 0)
  if sep == "" then
    for _, k in ipairs(KEYWORDS) do add(k, true) end
  end
  table.sort(names)
  return names
end

local editing = false

-- Turns line editing on (stdin and stdout a terminal, TERM not "dumb"):
-- history in M.history_path(); Tab completes names in `complete` (a
-- table, default _G), or asks it (a function(word) -> words: vmm attach
-- asks the VMM), or not at all (false). -> whether on.
function M.start_editing(complete)
  if editing or os.getenv("TERM") == "dumb" then return editing end
  if complete == nil or type(complete) == "table" then
    local env = complete or _G
    complete = function(word) return M.completions(word, env) end
  elseif complete == false then
    complete = nil
  end
  editing = core.edit_open { history = M.history_path(), complete = complete } == true
  return editing
end

function M.stop_editing()
  if editing then core.edit_close() editing = false end
end

-- Shows prompt and returns the next line of input, false after Ctrl-C, or
-- nil at the end.
local read_line
function read_line(prompt)
  local line, err
  if editing then
    core.edit_prompt(prompt or "")
  elseif prompt then
    io.stdout:write(prompt)
    io.stdout:flush()
  end
  local ok, e = pcall(task.wait, function()
    local l, e
    if editing then l = core.edit_line() else l, e = core.stdin_read_line() end
    if l == false then return false end
    line, err = l, e
    return true
  end)
  if not ok then
    if editing then core.edit_cancel() end
    if e == "interrupted" then io.stdout:write("\n") return false end
    report(e)          -- a task failed meanwhile
    return read_line(prompt)
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
    -- a chunk that never blocks sees Ctrl-C too
    debug.sethook(function() if core.interrupted() then error("interrupted", 0) end end, "", 100000)
    r = table.pack(xpcall(f, error_text))
    debug.sethook()
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

function M.run()
  _G.vmm = vmm
  core.catch_sigint(true)  -- Ctrl-C interrupts the line, not the process
  if core.stdin_is_tty() then
    io.stdout:write(string.format("vmm %s (%s, libuv %s) -- try: vm = vmm.vm{ kernel = \"/boot/vmlinuz\" }\n"
      .. "Ctrl-D to quit.\n", vmm.versions.vmm, vmm.versions.lua, vmm.versions.libuv))
  end
  M.start_editing()
  local pending
  while true do
    local line = read_line(pending and ">> " or "> ")
    if line == false then
      pending = nil
      goto continue
    end
    if not line then
      M.stop_editing()
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
