-- A small coroutine scheduler on top of the libuv loop (core.step).
--
-- Blocking calls are built on task.wait(pred, timeout). Inside a task they
-- yield to the scheduler; anywhere else (the main chunk, the REPL, a foreign
-- coroutine, a metamethod) they drive the loop themselves, resuming the
-- other tasks between steps. So a script reads top to bottom while spawned
-- tasks and the VMs' consoles keep going.
--
-- A task that fails raises its error, with the task's traceback, in whoever
-- is driving the scheduler at the time.
local core = require "vmm.core"

local M = {}

local MAX_STEP = 1.0     -- seconds; the loop wakes earlier on any event
local WAIT = {}          -- marks our yields, as opposed to a bare coroutine.yield()

local tasks = {}         -- unfinished tasks, in spawn order
local by_co = setmetatable({}, { __mode = "k" }) -- coroutine -> task
local round = 0          -- bumped at every scheduler pass between loop steps
local spawned = 0

local Task = {}
Task.__index = Task
Task.__name = "vmm.task"

function Task:__tostring()
  return string.format("vmm.task: %s (%s)", self.name, self:status())
end

-- "waiting", "running", "done" or "failed".
function Task:status()
  if self.finished then return self.ok and "done" or "failed" end
  return coroutine.status(self.co) == "suspended" and "waiting" or "running"
end

function Task:done()
  return self.finished == true
end

-- The text of an error value, whatever its type.
function M.error_text(e)
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  return string.format("(error object is a %s value)", type(e))
end

local error_text = M.error_text

local function with_traceback(e)
  return debug.traceback(error_text(e), 2)
end

-- vmm.spawn(fn, ...) -> task: runs fn(...) as a task, starting at the next
-- scheduler pass (the next blocking call or vmm.run()).
function M.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("vmm.spawn: expected a function, got " .. type(fn), 2)
  end
  spawned = spawned + 1
  local args = table.pack(...)
  local t = setmetatable({ name = "task " .. spawned }, Task)
  t.co = coroutine.create(function()
    return xpcall(fn, with_traceback, table.unpack(args, 1, args.n))
  end)
  by_co[t.co] = t
  tasks[#tasks + 1] = t
  return t
end

local function remove(t)
  for i, x in ipairs(tasks) do
    if x == t then table.remove(tasks, i) return end
  end
end

-- Records the end of a task's coroutine; raises a task's error.
local function finish(t, resumed, ...)
  if coroutine.status(t.co) ~= "dead" then return end
  t.finished = true
  remove(t)
  if not resumed then         -- cannot happen: the body is an xpcall
    t.ok, t.err = false, error_text((...))
  else
    t.ok = (...)
    if t.ok then t.results = table.pack(select(2, ...))
    else t.err = select(2, ...) end
  end
  if not t.ok then error(t.err, 0) end
end

-- Resumes t with the outcome of its wait; records what it waits for next.
local function resume(t, ...)
  local res = table.pack(coroutine.resume(t.co, ...))
  if coroutine.status(t.co) == "dead" then
    return finish(t, table.unpack(res, 1, res.n))
  end
  if res[2] == WAIT then
    t.wait = { pred = res[3], deadline = res[4] }
  else                        -- a bare coroutine.yield(): ready next round
    t.wait = { round = round }
  end
end

-- Why t can be resumed now: "start", "yield", "ready" (its predicate holds,
-- with value v), "timeout", "error" (its predicate raised v); nil if not.
local function readiness(t, now)
  if t.finished or coroutine.status(t.co) ~= "suspended" then return nil end
  local w = t.wait
  if not w then return "start" end
  if w.round then return w.round < round and "yield" or nil end
  local ok, v = pcall(w.pred)
  if not ok then return "error", v end
  if v then return "ready", v end
  if w.deadline and now >= w.deadline then return "timeout" end
  return nil
end

-- Resumes every task that can go on, until none can.
local function run_ready()
  round = round + 1
  repeat
    local progressed = false
    local now = core.now()
    for _, t in ipairs({ table.unpack(tasks) }) do
      local why, v = readiness(t, now)
      if why then
        progressed = true
        t.wait = nil
        if why == "ready" then resume(t, true, v)
        elseif why == "timeout" then resume(t, false)
        elseif why == "error" then resume(t, nil, v)
        else resume(t) end
      end
    end
  until not progressed
end

-- How long the loop may sleep: until the first task deadline or a task
-- that only yielded, at most limit.
local function step_timeout(limit)
  local now = core.now()
  local t = limit
  for _, x in ipairs(tasks) do
    local w = x.wait
    if w and w.round then return 0 end
    if w and w.deadline and (not t or w.deadline - now < t) then t = w.deadline - now end
  end
  if not t or t > MAX_STEP then t = MAX_STEP end
  return t > 0 and t or 0
end

local function current_task()
  local co = coroutine.running()
  return by_co[co]
end

local function check_timeout(timeout, level)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout < 0) then
    error("expected a timeout in seconds (a number >= 0), got " .. tostring(timeout), level + 1)
  end
end

-- Drives the loop from outside a task until pred() is true or timeout.
-- Raises "interrupted" on Ctrl-C while core.catch_sigint is on (the REPL).
local function drive(pred, deadline)
  while true do
    run_ready()
    local v = pred()
    if v then return v end
    local now = core.now()
    if deadline and now >= deadline then return nil end
    core.step(step_timeout(deadline and deadline - now))
    if core.interrupted() then error("interrupted", 0) end
  end
end

-- task.wait(pred, timeout) -> pred()'s true value, or nil on timeout.
-- timeout in seconds, nil for none. pred is called after every loop event.
function M.wait(pred, timeout)
  check_timeout(timeout, 2)
  local deadline = timeout and core.now() + timeout
  local t = current_task()
  if t and coroutine.isyieldable() then
    local v = pred()
    if v then return v end
    local ok, val = coroutine.yield(WAIT, pred, deadline)
    if ok == nil and val ~= nil then error(val, 0) end
    return ok and val or nil
  end
  return drive(pred, deadline)
end

-- vmm.run([timeout]) -> true once every other task has finished, or nil and
-- "timeout after N s" if some are still running. The caller and the tasks
-- driving it (running, not suspended) do not count.
function M.run(timeout)
  check_timeout(timeout, 2)
  local me = current_task()
  local function idle()
    for _, t in ipairs(tasks) do
      if t ~= me and coroutine.status(t.co) == "suspended" then return false end
    end
    return true
  end
  if M.wait(idle, timeout) then return true end
  return nil, string.format("timeout after %g s with %d task(s) still running", timeout, #tasks)
end

-- vmm.sleep(seconds)
function M.sleep(s)
  if type(s) ~= "number" or s ~= s or s < 0 then
    error("vmm.sleep: expected a number of seconds >= 0, got " .. tostring(s), 2)
  end
  local deadline = core.now() + s
  M.wait(function() return core.now() >= deadline end, s)
end

-- vmm.wait_until(pred, [timeout]) -> pred's true value, or nil and
-- "timeout after N s".
function M.wait_until(pred, timeout)
  if type(pred) ~= "function" then
    error("vmm.wait_until: expected a function, got " .. type(pred), 2)
  end
  check_timeout(timeout, 2)
  local v = M.wait(pred, timeout)
  if v then return v end
  return nil, string.format("timeout after %g s", timeout)
end

-- task:join([timeout]) -> true, results... | nil, error | nil, "timeout after N s"
function Task:join(timeout)
  check_timeout(timeout, 2)
  if not M.wait(function() return self.finished end, timeout) then
    return nil, string.format("timeout after %g s", timeout)
  end
  if not self.ok then return nil, self.err end
  return true, table.unpack(self.results, 1, self.results.n)
end

-- task:cancel(): forgets the task; its pending <close> variables are
-- closed. A running task cannot be cancelled.
function Task:cancel()
  if self.finished then return end
  if coroutine.status(self.co) ~= "suspended" then
    error("vmm.task: cannot cancel a running task", 2)
  end
  self.finished, self.ok, self.err = true, false, "cancelled"
  remove(self)
  coroutine.close(self.co)
end

-- The number of unfinished tasks.
function M.count()
  return #tasks
end

return M
