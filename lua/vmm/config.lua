-- Checks and normalises the table given to vmm.vm{...}. check() returns the
-- normalised table, or nil and one message ("vmm.vm: <field>: ...") for the
-- first problem found; vmm.vm raises it at the caller's line.
local M = {}

local KiB, MiB, GiB, TiB = 1024, 1024 ^ 2, 1024 ^ 3, 1024 ^ 4
M.MIN_MEMORY = 32 * MiB
M.MAX_MEMORY = 1 * TiB
M.MAX_VCPUS = 64
M.DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=-1 acpi=off "
  .. "i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"

local FIELDS = { "name", "memory", "vcpus", "kernel", "initrd", "cmdline", "console" }
local DEFAULTS = { name = "vm", memory = "512M", vcpus = 1, console = "stdout" }

local UNITS = {
  [""] = 1, B = 1,
  K = KiB, KB = KiB, KIB = KiB,
  M = MiB, MB = MiB, MIB = MiB,
  G = GiB, GB = GiB, GIB = GiB,
  T = TiB, TB = TiB, TIB = TiB,
}

-- A value for messages: strings quoted, the rest as tostring.
local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function fail(field, fmt, ...)
  return nil, "vmm.vm: " .. field .. ": " .. string.format(fmt, ...)
end

-- Levenshtein distance, to suggest a field name for a typo.
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function unknown_field(key)
  local msg = "vmm.vm: unknown field " .. show(key)
  if type(key) == "string" then
    for _, f in ipairs(FIELDS) do
      if distance(key, f) <= 2 then return nil, msg .. string.format(" (did you mean %q?)", f) end
    end
  end
  return nil, msg .. " (known: " .. table.concat(FIELDS, ", ") .. ")"
end

-- "512M", "2G", "512MiB", "1.5G", 536870912 -> bytes.
function M.parse_size(v)
  if math.type(v) == "float" then v = math.tointeger(v) or v end
  if math.type(v) == "integer" then return v end
  if type(v) ~= "string" then return nil end
  local num, unit = v:match("^%s*(%d+%.?%d*)%s*(%a*)%s*$")
  local scale = unit and UNITS[unit:upper()]
  if not scale then return nil end
  return math.tointeger(tonumber(num) * scale)
end

local function check_name(v)
  -- 63: what a migration's machine description carries (core/machine.h)
  if type(v) ~= "string" or not v:match("^[%w_.-]+$") or #v > 63 then
    return fail("name", "expected 1 to 63 letters, digits, '_', '.' or '-', got %s", show(v))
  end
  return v
end

local function check_memory(v)
  local bytes = M.parse_size(v)
  if not bytes then
    return fail("memory", 'expected a size like "512M" or a number of bytes, got %s', show(v))
  end
  if bytes < M.MIN_MEMORY or bytes > M.MAX_MEMORY then
    return fail("memory", "%s is out of range (32 MiB to 1 TiB)", show(v))
  end
  if bytes % (4 * KiB) ~= 0 then
    return fail("memory", "%s is not a multiple of 4 KiB", show(v))
  end
  return bytes
end

local function check_vcpus(v)
  local n = math.type(v) == "float" and math.tointeger(v) or v
  if math.type(n) ~= "integer" or n < 1 or n > M.MAX_VCPUS then
    return fail("vcpus", "expected an integer from 1 to %d, got %s", M.MAX_VCPUS, show(v))
  end
  return n
end

-- A path to a file we can read (the contents are checked by the core).
local function check_file(field, v)
  if type(v) ~= "string" or v == "" then
    return fail(field, "expected a file path, got %s", show(v))
  end
  local f, err = io.open(v, "rb")
  if not f then return fail(field, "cannot open %s", err) end
  local ok, rerr = f:read(0)
  f:close()
  if not ok and rerr then return fail(field, "cannot read %s: %s", v, rerr) end
  return v
end

local function check_cmdline(v)
  if type(v) ~= "string" then return fail("cmdline", "expected a string, got %s", show(v)) end
  if v:find("\0", 1, true) then return fail("cmdline", "contains a NUL byte") end
  return v
end

local function check_console(v)
  if type(v) ~= "string" or v == "" then
    return fail("console", 'expected "stdout", "none" or a file path, got %s', show(v))
  end
  return v
end

local CHECKS = {
  name = check_name,
  memory = check_memory,
  vcpus = check_vcpus,
  kernel = function(v) return check_file("kernel", v) end,
  initrd = function(v) return check_file("initrd", v) end,
  cmdline = check_cmdline,
  console = check_console,
}

-- check(cfg) -> normalised copy {name, memory (bytes), vcpus, kernel,
-- initrd?, cmdline, console}, or nil and a message.
function M.check(cfg)
  if type(cfg) ~= "table" then
    return nil, "vmm.vm: expected a table of settings, got " .. type(cfg)
  end
  for k in pairs(cfg) do
    if not CHECKS[k] then return unknown_field(k) end
  end
  if cfg.kernel == nil then return fail("kernel", "required (the path of a bzImage)") end
  local out = {}
  for _, field in ipairs(FIELDS) do
    local v = cfg[field]
    if v == nil then v = DEFAULTS[field] end
    if field == "cmdline" and v == nil then v = M.DEFAULT_CMDLINE end
    if v ~= nil then
      local norm, err = CHECKS[field](v)
      if norm == nil then return nil, err end
      out[field] = norm
    end
  end
  return out
end

-- ---- vm:add_net{...} ------------------------------------------------------

-- The limits are the C device type's (core.device_types()), not copies.
local NET_LIMITS = require("vmm.core").device_types()["virtio-net"].fields
M.MAX_QUEUE_PAIRS = NET_LIMITS.queues.max
local QSIZE = NET_LIMITS.queue_size
local NET_FIELDS = { "ifname", "mac", "queues", "vhost", "queue_size", "name", "backend_transfer" }
local NET_DEFAULTS = { queues = 1, vhost = false, queue_size = 256, backend_transfer = true }

local function net_fail(field, fmt, ...)
  return nil, "vm:add_net: " .. field .. ": " .. string.format(fmt, ...)
end

-- A locally administered unicast MAC in QEMU's 52:54:00 range.
function M.random_mac()
  local b = {}
  for i = 1, 3 do b[i] = math.random(0, 255) end
  return string.format("52:54:00:%02x:%02x:%02x", b[1], b[2], b[3])
end

local NET_CHECKS = {
  ifname = function(v)
    if type(v) ~= "string" or not v:match("^[%w_.-]+$") or #v > NET_LIMITS.ifname.max then
      return net_fail("ifname", "expected an interface name of 1 to %d letters, digits, '_', '.' or '-', got %s",
                      NET_LIMITS.ifname.max, show(v))
    end
    return v
  end,
  mac = function(v)
    local hex = type(v) == "string" and { v:match("^(%x%x):(%x%x):(%x%x):(%x%x):(%x%x):(%x%x)$") }
    if not hex or #hex ~= 6 then
      return net_fail("mac", 'expected six hex bytes like "52:54:00:12:34:56", got %s', show(v))
    end
    if tonumber(hex[1], 16) & 1 == 1 then
      return net_fail("mac", "%s is a multicast address (the first byte must be even)", show(v))
    end
    if v == "00:00:00:00:00:00" then return net_fail("mac", "%s is not a usable address", show(v)) end
    return v:lower()
  end,
  queues = function(v)
    local n = math.type(v) == "float" and math.tointeger(v) or v
    if math.type(n) ~= "integer" or n < 1 or n > M.MAX_QUEUE_PAIRS then
      return net_fail("queues", "expected a number of queue pairs from 1 to %d, got %s", M.MAX_QUEUE_PAIRS, show(v))
    end
    return n
  end,
  vhost = function(v)
    if type(v) ~= "boolean" then return net_fail("vhost", "expected true or false, got %s", show(v)) end
    return v
  end,
  -- whether a migration may hand this device's TAP (and so its network
  -- configuration) to the new process; vm:migrate{backend_transfer} is the
  -- global switch
  backend_transfer = function(v)
    if type(v) ~= "boolean" then
      return net_fail("backend_transfer", "expected true or false, got %s", show(v))
    end
    return v
  end,
  queue_size = function(v)
    local n = math.type(v) == "float" and math.tointeger(v) or v
    if math.type(n) ~= "integer" or n < QSIZE.min or n > QSIZE.max or n & (n - 1) ~= 0 then
      return net_fail("queue_size", "expected a power of 2 from %d to %d, got %s", QSIZE.min, QSIZE.max, show(v))
    end
    return n
  end,
  name = function(v)
    if type(v) ~= "string" or not v:match("^[%w_.-]+$") or #v > 15 then
      return net_fail("name", "expected 1 to 15 letters, digits, '_', '.' or '-', got %s", show(v))
    end
    return v
  end,
}

-- check_net(settings, index) -> normalised {name, ifname, mac, queues,
-- vhost, queue_size}, or nil and a message naming the field.
function M.check_net(cfg, index)
  if type(cfg) ~= "table" then
    return nil, "vm:add_net: expected a table of settings, got " .. type(cfg)
  end
  for k in pairs(cfg) do
    if not NET_CHECKS[k] then
      return nil, "vm:add_net: unknown field " .. show(k) .. " (known: " .. table.concat(NET_FIELDS, ", ") .. ")"
    end
  end
  if cfg.ifname == nil then return net_fail("ifname", "required (the TAP device to use)") end
  local out = {}
  for _, field in ipairs(NET_FIELDS) do
    local v = cfg[field]
    if v == nil then v = NET_DEFAULTS[field] end
    if v ~= nil then
      local norm, err = NET_CHECKS[field](v)
      if norm == nil then return nil, err end
      out[field] = norm
    end
  end
  out.name = out.name or ("net" .. (index or 0))
  out.mac = out.mac or M.random_mac()
  return out
end

return M
