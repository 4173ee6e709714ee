-- busted output handler: the usual terminal output, then one plain line
-- "N passed, N failed, N skipped" that CI tooling can read (errors count as
-- failures, pending tests as skipped).
--
-- With VMM_TEST_LINES set (tests/kvm-suite sets it) every finished test
-- also gets a line of its own, "  ok 12.3 s  describe it", instead of only a
-- dot: a spec file of slow guest boots then shows progress line by line,
-- which the test host's idle watchdog needs (it sees output that ends in a
-- newline), and each test's time is on record.
return function(options)
  local busted = require 'busted'
  local handler = require 'busted.outputHandlers.utfTerminal'(options)
  local lines = os.getenv('VMM_TEST_LINES')
  local subscribe = handler.subscribe
  handler.subscribe = function(self, opts)
    subscribe(self, opts)
    if lines and lines ~= '' and lines ~= '0' then
      busted.subscribe({ 'test', 'end' }, function(element, _, status)
        local word = ({ success = 'ok', pending = 'pending', failure = 'FAILED',
                        error = 'ERROR' })[status] or status
        io.write(string.format("\n  %s %.1f s  %s\n", word, element.duration or 0,
          handler.getFullName(element)))
        io.flush()
        return nil, true
      end)
    end
    busted.subscribe({ 'suite', 'end' }, function()
      io.write(string.format("%d passed, %d failed, %d skipped\n", handler.successesCount,
        handler.failuresCount + handler.errorsCount, handler.pendingsCount))
      io.flush()
      return nil, true
    end)
  end
  return handler
end
