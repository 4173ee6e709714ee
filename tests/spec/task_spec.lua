-- The scheduler: blocking calls yield inside tasks and drive the event loop
-- elsewhere, so concurrent tasks make progress.
local vmm = require "vmm"

describe("vmm.sleep", function()
  it("waits about the given time", function()
    local t0 = vmm.now()
    vmm.sleep(0.1)
    local dt = vmm.now() - t0
    assert.is_true(dt >= 0.1, "slept " .. dt)
    assert.is_true(dt < 0.5, "slept " .. dt)
  end)

  it("raises on a negative or missing duration", function()
    assert.has_error(function() vmm.sleep(-1) end)
    assert.has_error(function() vmm.sleep() end)
  end)

  it("drives the loop inside a coroutine that is not a task", function()
    local f = coroutine.wrap(function() vmm.sleep(0.01) return "woke" end)
    assert.equals("woke", f())
  end)
end)

describe("vmm.spawn and vmm.run", function()
  it("run tasks concurrently until all are done", function()
    local log = {}
    vmm.spawn(function() vmm.sleep(0.1) log[#log + 1] = "slow" end)
    vmm.spawn(function() vmm.sleep(0.02) log[#log + 1] = "fast" end)
    local t0 = vmm.now()
    assert.is_true(vmm.run(5))
    assert.same({ "fast", "slow" }, log)
    assert.is_true(vmm.now() - t0 < 0.2, "tasks ran one after the other")
  end)

  it("keep tasks going while the main chunk sleeps", function()
    local ticks = 0
    vmm.spawn(function() for _ = 1, 5 do vmm.sleep(0.01) ticks = ticks + 1 end end)
    vmm.sleep(0.2)
    assert.equals(5, ticks)
  end)

  it("pass arguments and hand back results through join()", function()
    local t = vmm.spawn(function(a, b) vmm.sleep(0.01) return a + b, "sum" end, 40, 2)
    assert.same({ true, 42, "sum" }, { t:join(1) })
    assert.is_true(t:done())
    assert.equals("done", t:status())
  end)

  it("give nil and a message from join() on timeout", function()
    local t = vmm.spawn(function() vmm.sleep(0.5) end)
    local ok, err = t:join(0.01)
    assert.is_nil(ok)
    assert.equals("timeout after 0.01 s", err)
    assert.is_true(vmm.run(2))
  end)

  it("give nil and a message from run() on timeout", function()
    vmm.spawn(function() vmm.sleep(0.3) end)
    local ok, err = vmm.run(0.01)
    assert.is_nil(ok)
    assert.matches("timeout after 0.01 s", err, 1, true)
    assert.is_true(vmm.run(2))
  end)

  it("propagate a task's error, with its traceback, to whoever runs the scheduler", function()
    vmm.spawn(function() vmm.sleep(0.01) error("kaboom") end)
    local ok, err = pcall(vmm.run, 2)
    assert.is_false(ok)
    assert.matches("task_spec.lua:%d+: kaboom", err)
    assert.matches("stack traceback:", err, 1, true)
  end)

  it("do not hang on a bare coroutine.yield() in a task", function()
    local n = 0
    vmm.spawn(function() for _ = 1, 3 do coroutine.yield() n = n + 1 end end)
    assert.is_true(vmm.run(1))
    assert.equals(3, n)
  end)

  it("let run() inside a task wait for the other tasks only", function()
    local order = {}
    vmm.spawn(function() vmm.sleep(0.05) order[#order + 1] = "child" end)
    local t = vmm.spawn(function() assert(vmm.run(2)) order[#order + 1] = "parent" end)
    assert.is_true(t:join(2))
    assert.same({ "child", "parent" }, order)
  end)

  it("forget a cancelled task, closing its <close> variables", function()
    local closed = false
    local t = vmm.spawn(function()
      local guard <close> = setmetatable({}, { __close = function() closed = true end })
      vmm.sleep(10)
    end)
    vmm.sleep(0.01)
    t:cancel()
    assert.is_true(closed)
    assert.equals("failed", t:status())
    local t0 = vmm.now()
    assert.is_true(vmm.run(1))
    assert.is_true(vmm.now() - t0 < 0.5)
  end)

  it("refuses something that is not a function", function()
    assert.has_error(function() vmm.spawn(42) end, "vmm.spawn: expected a function, got number")
  end)
end)

describe("vmm.wait_until", function()
  it("returns the predicate's value once a task makes it true", function()
    local flag
    vmm.spawn(function() vmm.sleep(0.02) flag = "set" end)
    assert.equals("set", vmm.wait_until(function() return flag end, 2))
  end)

  it("returns nil and a timeout message when the predicate stays false", function()
    local t0 = vmm.now()
    local ok, err = vmm.wait_until(function() return false end, 0.05)
    assert.is_nil(ok)
    assert.equals("timeout after 0.05 s", err)
    assert.is_true(vmm.now() - t0 >= 0.05)
  end)

  it("yields inside a task", function()
    local flag = false
    local waiter = vmm.spawn(function() return vmm.wait_until(function() return flag end, 2) end)
    vmm.spawn(function() vmm.sleep(0.02) flag = true end)
    assert.same({ true, true }, { waiter:join(2) })
  end)

  it("raises the predicate's error in the caller", function()
    assert.has_error(function() vmm.wait_until(function() error("bad predicate", 0) end, 1) end, "bad predicate")
  end)

  it("raises when the predicate is not a function", function()
    assert.has_error(function() vmm.wait_until("soon", 1) end)
  end)
end)
