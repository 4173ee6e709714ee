-- busted output handler: the usual terminal output, then one plain line
-- "N passed, N failed, N skipped" that CI tooling can read (errors count as
-- failures, pending tests as skipped).
return function(options)
  local busted = require 'busted'
  local handler = require 'busted.outputHandlers.utfTerminal'(options)
  local subscribe = handler.subscribe
  handler.subscribe = function(self, opts)
    subscribe(self, opts)
    busted.subscribe({ 'suite', 'end' }, function()
      io.write(string.format("%d passed, %d failed, %d skipped\n", handler.successesCount,
        handler.failuresCount + handler.errorsCount, handler.pendingsCount))
      io.flush()
      return nil, true
    end)
  end
  return handler
end
