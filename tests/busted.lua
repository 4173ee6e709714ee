-- Runs the busted specs inside the vmm executable, from the repository root:
--   build/vmm tests/busted.lua [busted options]
-- (.busted at the root holds the configuration.)
require 'busted.runner'({ standalone = false })
