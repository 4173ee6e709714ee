-- Attach sessions: a Lua prompt evaluated INSIDE a running VMM, behind the
-- control socket that vm:serve opened (the same 0600 socket and peer-uid
-- check as migration). A client's first section says which it wants:
-- "attach" here, "hello" for a migration (core/migstream.h lists the
-- sections). Then the client sends chunks ("eval"), the VMM runs each as a
-- task with the served VM in scope as `vm` (and the module as `vmm`), sends what it prints
-- ("output") and how it ended ("result"); "interrupt" stops the running
-- chunk. Several sessions can run at once; each has its own globals. A
-- migration that completes ends them with an "error" section saying where
-- the VM went.
--
-- Client: `vmm attach SOCKET` (a prompt, as `vmm repl`) and
-- `vmm attach SOCKET -e CODE` (one chunk, its values printed, exit status 0
-- or 1).
local core = require "vmm.core"
local task = require "vmm.task"
local repl = require "vmm.repl"

local M = {}

local STDOUT, STDERR = "\1", "\2"
local COMPLETE_FLAG = 1 -- MIG_ATTACH_COMPLETE (core/migstream.h)
-- How long Tab waits for the VMM's completions.
local COMPLETE_WAIT_MS = 2000
-- How often (in VM instructions) a chunk that never blocks looks for an
-- interrupt.
local HOOK_COUNT = 100000

local function pack_text(stream, s) return stream .. s end

-- ---- the VMM's side ----------------------------------------------------------

-- The session's environment: the VMM's globals underneath, `vm`, and a
-- print and io whose standard output and error go to the client.
local function session_env(vm, send)
  local function writer(stream)
    return function(...)
      local parts = table.pack(...)
      for i = 1, parts.n do parts[i] = tostring(parts[i]) end
      send("output", pack_text(stream, table.concat(parts, "", 1, parts.n)))
    end
  end
  local out, err = writer(STDOUT), writer(STDERR)
  local function file(w)
    local f = {}
    function f:write(...) w(...) return self end
    function f:flush() return self end
    function f:setvbuf() return true end
    return f
  end
  local stdout, stderr = file(out), file(err)
  local fake_io = setmetatable({
    write = function(...) out(...) return stdout end,
    stdout = stdout, stderr = stderr,
  }, { __index = io })
  local env = setmetatable({ vm = vm, vmm = require "vmm", io = fake_io }, { __index = _G })
  env.print = function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    out(table.concat(parts, "\t", 1, parts.n), "\n")
  end
  env._G = env
  return env
end

-- Waits for the peer's next section: type, payload; false, why at EOF
-- (or once st.ended: the session was ended from outside); nil after
-- timeout seconds (none: no limit).
local function next_section(conn, st, timeout)
  local kind, payload
  task.wait(function()
    if st and st.ended then kind, payload = false, st.ended return true end
    kind, payload = conn:recv()
    return kind ~= nil
  end, timeout)
  return kind, payload
end

-- Runs one chunk of the session: its values printed, the result sent.
-- false when the session is over (the client went, or it was ended).
local function run_chunk(conn, st, env, text, send)
  local f, err = repl.compile(text, env)
  if not f then
    send("result", "\1" .. (err == "incomplete" and select(3, repl.compile(text, env)) or err))
    return true
  end
  local interrupted, gone = false, false
  local r
  local t = task.spawn(function()
    -- a chunk that never blocks still sees an interrupt
    debug.sethook(function()
      local kind = conn:peek()
      if kind == "interrupt" then
        conn:recv()
        interrupted = true
        error("interrupted", 0)
      elseif kind == false then -- the client went
        gone = true
        error("the client detached", 0)
      end
    end, "", HOOK_COUNT)
    r = table.pack(xpcall(f, task.error_text))
    debug.sethook()
  end)
  st.chunk = t
  while not t:done() do
    local kind
    task.wait(function()
      if t:done() or st.ended then return true end
      kind = conn:peek()
      return kind ~= nil
    end)
    if st.ended then return false end -- st.stop cancelled the chunk
    if not t:done() then
      if kind == "interrupt" then
        conn:recv()
        t:cancel()
        interrupted = true
      elseif kind == false then -- the client went: stop its chunk
        t:cancel()
        gone = true
      else
        -- anything else while a chunk runs is a client error
        local _, why = conn:recv()
        send("error", "a " .. tostring(kind) .. " section while a chunk runs" .. (why and (": " .. why) or ""))
        t:cancel()
        return false
      end
    end
  end
  st.chunk = nil
  if gone then return false end
  if interrupted then send("result", "\1interrupted") return true end
  if not r then send("result", "\1" .. tostring(t.err)) return true end
  if r[1] then
    if r.n > 1 then env.print(table.unpack(r, 2, r.n)) end
    send("result", "\0")
  else
    send("result", "\1" .. tostring(r[2]))
  end
  return true
end

-- session(conn, vm, sessions): serves one client; returns when it
-- detaches, or once sessions[conn]:stop(why) has ended it (the chunk it
-- runs cancelled, why sent to the client).
function M.session(conn, vm, sessions)
  local st = {}
  local function send(kind, payload)
    local ok, err = conn:send(kind, payload)
    if not ok then error("attach: " .. err, 0) end
  end
  function st.stop(why)
    if st.ended then return end
    st.ended = why
    if st.chunk and not st.chunk:done() then st.chunk:cancel() end
    pcall(conn.send, conn, "error", why)
  end
  local kind, payload = next_section(conn)
  if kind ~= "attach" then conn:close() return end
  local version, flags = 0, 0
  if #payload >= 8 then version, flags = string.unpack("<I4I4", payload) end
  if version ~= 1 then
    send("error", string.format("attach version %d, this vmm speaks 1", version))
    conn:close()
    return
  end
  sessions[conn] = st
  -- a client that completes through us is told we do (COMPLETE_FLAG)
  send("attached", vm:info().name .. ((flags & COMPLETE_FLAG) ~= 0 and "\0complete" or ""))
  local env = session_env(vm, send)
  while not st.ended do
    kind, payload = next_section(conn, st)
    if not kind then break end
    if kind == "complete" then
      send("completions", table.concat(repl.completions(payload, env), "\n"))
    elseif kind ~= "eval" then
      send("error", "expected a chunk (eval), got " .. kind)
      break
    else
      local ok, err = pcall(run_chunk, conn, st, env, payload, send)
      if not ok then io.stderr:write("vmm: ", err, "\n") break end
      if not err then break end
    end
  end
  sessions[conn] = nil
  conn:close()
end

-- ---- the client's side -------------------------------------------------------

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

-- The client's next section, as next_section, with a timeout's nil
-- turned into a reason: type, payload; or nil, why (EOF, the VMM's error
-- section, no answer in time).
local function answer(conn, timeout)
  local kind, payload = next_section(conn, nil, timeout)
  if kind == nil then return nil, string.format("no answer within %g s", timeout) end
  if kind == false or kind == "error" then return nil, payload end
  return kind, payload
end

-- Opens an attach session on conn (flags: COMPLETE_FLAG or 0) -> the VM's
-- name and whether the VMM completes names for us; or nil, why.
local function handshake(conn, flags, timeout)
  local ok, why = conn:send("attach", string.pack("<I4I4", 1, flags))
  if not ok then return nil, why end
  local kind, payload = answer(conn, timeout)
  if not kind then return nil, payload end
  if kind ~= "attached" then return nil, "expected attached, got " .. kind end
  local name, caps = payload:match("^([^%z]*)%z?(.*)$")
  return name, caps == "complete"
end

local function connect(path)
  local conn, err = core.mig_connect(path)
  if not conn then fail("attach: %s", err) end
  local name, completes_or_why = handshake(conn, COMPLETE_FLAG)
  if not name then fail("attach: %s: %s", path, completes_or_why) end
  return conn, name, completes_or_why
end

-- A completer for Tab that asks the VMM (the names are its): the words, or
-- none when it does not answer in time (a late answer is skipped later).
local function remote_completer(conn)
  return function(word)
    if not conn:send("complete", word) then return {} end
    local kind, payload = conn:recv(COMPLETE_WAIT_MS)
    if kind ~= "completions" then return {} end
    local words = {}
    for w in payload:gmatch("[^\n]+") do words[#words + 1] = w end
    return words
  end
end

-- Shows what the VMM sends until the chunk's result: true if it ran, false
-- if it failed; nil, text when the session ended.
local function await_result(conn, interruptible)
  while true do
    local kind, payload
    local ok, e = pcall(task.wait, function()
      kind, payload = conn:recv()
      return kind ~= nil
    end)
    if not ok then
      if e ~= "interrupted" or not interruptible then error(e, 0) end
      conn:send("interrupt")
    elseif kind == "output" then
      local stream, text = payload:sub(1, 1), payload:sub(2)
      local f = stream == STDERR and io.stderr or io.stdout
      f:write(text)
      f:flush()
    elseif kind == "result" then
      if payload:sub(1, 1) == "\0" then return true end
      io.stderr:write("vmm: ", repl.one_line(payload:sub(2)), "\n")
      return false
    elseif kind == "error" then
      return nil, payload
    elseif kind == false then
      return nil, payload
    end
  end
end

-- attach.query(path, code, timeout) -> what CODE printed to standard
-- output, or nil and why (it failed, the VMM refused or did not answer
-- within timeout seconds). For vmm ls: one chunk, nothing shown.
function M.query(path, code, timeout)
  local conn, err = core.mig_connect(path)
  if not conn then return nil, err end
  local out = {}
  local name, why = handshake(conn, 0, timeout)
  if name then
    local ok, serr = conn:send("eval", code)
    why = not ok and serr or nil
    while not why do
      local kind, payload = answer(conn, timeout)
      if not kind then why = payload
      elseif kind == "output" and payload:sub(1, 1) == STDOUT then out[#out + 1] = payload:sub(2)
      elseif kind == "result" then
        if payload:sub(1, 1) ~= "\0" then why = repl.one_line(payload:sub(2)) end
        break
      end
    end
  end
  conn:close()
  if why then return nil, why end
  return table.concat(out)
end

-- `vmm attach SOCKET -e CODE`: exit status 0 if the chunk ran, else 1.
function M.run_once(path, code)
  local conn = connect(path)
  local ok, err = conn:send("eval", code)
  if not ok then fail("attach: %s", err) end
  local r, why = await_result(conn, false)
  conn:close()
  if r == nil then fail("attach: %s", why) end
  return r and 0 or 1
end

-- `vmm attach SOCKET`: a prompt as vmm repl's, evaluated in the VMM.
-- Ctrl-C stops the running chunk, Ctrl-D detaches.
function M.run(path)
  local conn, name, completes = connect(path)
  core.catch_sigint(true)
  local tty = core.stdin_is_tty()
  if tty then
    io.stdout:write(string.format("attached to %s (%s); `vm` is the VM. Ctrl-D detaches, the VM runs on.\n",
      name, path))
  end
  local prompt, prompt2 = name .. "> ", name .. ">> "
  repl.start_editing(completes and remote_completer(conn) or false) -- the names are the VMM's
  local pending
  while true do
    local line = repl.read_line(pending and prompt2 or prompt)
    if line == false then
      pending = nil
    elseif not line then
      repl.stop_editing()
      if tty then io.stdout:write("\n") end
      conn:close()
      return 0
    else
      local chunk = pending and pending .. "\n" .. line or line
      local f, err = repl.compile(chunk)
      pending = nil
      if f or err ~= "incomplete" then
        local ok, why = conn:send("eval", chunk)
        if not ok then fail("attach: %s", why) end
        local r, ended = await_result(conn, true)
        if r == nil then
          repl.stop_editing()
          io.stderr:write("vmm: ", ended, "\n")
          conn:close()
          return 0
        end
      else
        pending = chunk
      end
    end
  end
end

return M
