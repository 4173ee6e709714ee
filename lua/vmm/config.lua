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

local FIELDS = { "name", "memory", "vcpus", "kernel", "initrd", "cmdline", "console", "locked" }
local DEFAULTS = { name = "vm", memory = "512M", vcpus = 1, console = "stdout", cmdline = M.DEFAULT_CMDLINE }

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

-- locked = true | false | {commands = {program, ...}}: lock the VMM once
-- this VM started (vmm.lock); -> false or {commands = {...}}.
function M.check_lock(fn, v)
  if v == true then return { commands = {} } end
  if v == false then return false end
  if type(v) ~= "table" then
    return nil, fn .. ": expected true, false or {commands = {program, ...}}, got " .. show(v)
  end
  for k in pairs(v) do
    if k ~= "commands" then return nil, fn .. ": unknown field " .. show(k) .. " (known: commands)" end
  end
  local cmds = v.commands or {}
  if type(cmds) ~= "table" then
    return nil, fn .. ".commands: expected a list of program names or paths, got " .. show(cmds)
  end
  local out = {}
  for i = 1, #cmds do
    if type(cmds[i]) ~= "string" or cmds[i] == "" then
      return nil, string.format("%s.commands[%d]: expected a program name or path, got %s", fn, i, show(cmds[i]))
    end
    out[i] = cmds[i]
  end
  for k in pairs(cmds) do
    if math.type(k) ~= "integer" or k < 1 or k > #cmds then
      return nil, fn .. ".commands: expected a list, got the key " .. show(k)
    end
  end
  return { commands = out }
end

local CHECKS = {
  name = check_name,
  memory = check_memory,
  vcpus = check_vcpus,
  kernel = function(v) return check_file("kernel", v) end,
  initrd = function(v) return check_file("initrd", v) end,
  cmdline = check_cmdline,
  console = check_console,
  locked = function(v) return M.check_lock("vmm.vm: locked", v) end,
}

-- Checks settings against checks (field -> checker) in the order of
-- fields, defaults filled in: the normalised table, or nil and a message.
-- required = {field, what it is}; unknown(key) -> nil, message (default:
-- the known fields listed).
local function check_settings(fn, settings, fields, checks, defaults, required, unknown)
  if type(settings) ~= "table" then
    return nil, fn .. ": expected a table of settings, got " .. type(settings)
  end
  for k in pairs(settings) do
    if not checks[k] then
      if unknown then return unknown(k) end
      return nil, fn .. ": unknown field " .. show(k) .. " (known: " .. table.concat(fields, ", ") .. ")"
    end
  end
  if settings[required[1]] == nil then
    return nil, fn .. ": " .. required[1] .. ": required (" .. required[2] .. ")"
  end
  local out = {}
  for _, field in ipairs(fields) do
    local v = settings[field]
    if v == nil then v = defaults[field] end
    if v ~= nil then
      local norm, err = checks[field](v)
      if norm == nil then return nil, err end
      out[field] = norm
    end
  end
  return out
end

-- check(cfg) -> normalised copy {name, memory (bytes), vcpus, kernel,
-- initrd?, cmdline, console}, or nil and a message.
function M.check(cfg)
  return check_settings("vmm.vm", cfg, FIELDS, CHECKS, DEFAULTS, { "kernel", "the path of a bzImage" },
                        unknown_field)
end

-- ---- device settings: what vm:add_net and vm:add_disk share -------------

-- Field checkers for the settings of device method `fn` ("vm:add_net"):
-- each returns the normalised value, or nil and "fn: field: ...".
local function field_checks(fn)
  local c = {}
  function c.fail(field, fmt, ...)
    return nil, fn .. ": " .. field .. ": " .. string.format(fmt, ...)
  end
  function c.boolean(field)
    return function(v)
      if type(v) ~= "boolean" then return c.fail(field, "expected true or false, got %s", show(v)) end
      return v
    end
  end
  function c.integer(field, min, max, what)
    return function(v)
      local n = math.type(v) == "float" and math.tointeger(v) or v
      if math.type(n) ~= "integer" or n < min or n > max then
        return c.fail(field, "expected %s from %d to %d, got %s", what, min, max, show(v))
      end
      return n
    end
  end
  function c.power_of_2(field, min, max)
    local int = c.integer(field, min, max, "a power of 2")
    return function(v)
      local n, err = int(v)
      if n and n & (n - 1) ~= 0 then return c.fail(field, "expected a power of 2 from %d to %d, got %s", min, max, show(v)) end
      return n, err
    end
  end
  function c.name(v)
    if type(v) ~= "string" or not v:match("^[%w_.-]+$") or #v > 15 then
      return c.fail("name", "expected 1 to 15 letters, digits, '_', '.' or '-', got %s", show(v))
    end
    return v
  end
  return c
end

-- ---- vm:add_net{...} ------------------------------------------------------

-- The limits are the C device type's (core.device_types()), not copies.
local TYPES = require("vmm.core").device_types()
local NET_LIMITS = TYPES["virtio-net"].fields
M.MAX_QUEUE_PAIRS = NET_LIMITS.queues.max
local QSIZE = NET_LIMITS.queue_size
local NET_FIELDS = { "ifname", "mac", "queues", "vhost", "queue_size", "name", "backend_transfer" }
local NET_DEFAULTS = { queues = 1, vhost = false, queue_size = 256, backend_transfer = true }
local net = field_checks("vm:add_net")

-- A locally administered unicast MAC in QEMU's 52:54:00 range.
function M.random_mac()
  local b = {}
  for i = 1, 3 do b[i] = math.random(0, 255) end
  return string.format("52:54:00:%02x:%02x:%02x", b[1], b[2], b[3])
end

local NET_CHECKS = {
  ifname = function(v)
    if type(v) ~= "string" or not v:match("^[%w_.-]+$") or #v > NET_LIMITS.ifname.max then
      return net.fail("ifname", "expected an interface name of 1 to %d letters, digits, '_', '.' or '-', got %s",
                      NET_LIMITS.ifname.max, show(v))
    end
    return v
  end,
  mac = function(v)
    local hex = type(v) == "string" and { v:match("^(%x%x):(%x%x):(%x%x):(%x%x):(%x%x):(%x%x)$") }
    if not hex or #hex ~= 6 then
      return net.fail("mac", 'expected six hex bytes like "52:54:00:12:34:56", got %s', show(v))
    end
    if tonumber(hex[1], 16) & 1 == 1 then
      return net.fail("mac", "%s is a multicast address (the first byte must be even)", show(v))
    end
    if v == "00:00:00:00:00:00" then return net.fail("mac", "%s is not a usable address", show(v)) end
    return v:lower()
  end,
  queues = net.integer("queues", 1, M.MAX_QUEUE_PAIRS, "a number of queue pairs"),
  vhost = net.boolean("vhost"),
  -- whether a migration may hand this device's TAP (and so its network
  -- configuration) to the new process; vm:migrate{backend_transfer} is the
  -- global switch
  backend_transfer = net.boolean("backend_transfer"),
  queue_size = net.power_of_2("queue_size", QSIZE.min, QSIZE.max),
  name = net.name,
}

-- check_net(settings, index) -> normalised {name, ifname, mac, queues,
-- vhost, queue_size}, or nil and a message naming the field.
function M.check_net(cfg, index)
  local out, err = check_settings("vm:add_net", cfg, NET_FIELDS, NET_CHECKS, NET_DEFAULTS,
                                  { "ifname", "the TAP device to use" })
  if not out then return nil, err end
  out.name = out.name or ("net" .. (index or 0))
  out.mac = out.mac or M.random_mac()
  return out
end

-- ---- vm:add_disk{...} -----------------------------------------------------

local DISK_LIMITS = TYPES["virtio-blk"].fields
M.MAX_DISK_QUEUES = DISK_LIMITS.queues.max
M.DISK_CACHE_MODES = { writeback = true, writethrough = true, none = true }
local DISK_FIELDS = { "path", "readonly", "name", "queues", "queue_size", "cache", "serial", "backend_transfer",
                      "vhost_user" }
local DISK_DEFAULTS = { readonly = false, queues = 1, queue_size = 256, cache = "writeback", backend_transfer = true }
local disk = field_checks("vm:add_disk")

local DISK_CHECKS = {
  path = function(v)
    if type(v) ~= "string" or v == "" or #v > DISK_LIMITS.path.max then
      return disk.fail("path", "expected the path of an image file or block device (1 to %d bytes), got %s",
                       DISK_LIMITS.path.max, show(v))
    end
    return v
  end,
  readonly = disk.boolean("readonly"),
  name = disk.name,
  queues = disk.integer("queues", 1, M.MAX_DISK_QUEUES, "a number of request queues"),
  queue_size = disk.power_of_2("queue_size", DISK_LIMITS.queue_size.min, DISK_LIMITS.queue_size.max),
  cache = function(v)
    if not M.DISK_CACHE_MODES[v] then
      return disk.fail("cache", 'expected "writeback", "writethrough" or "none", got %s', show(v))
    end
    return v
  end,
  serial = function(v)
    if type(v) ~= "string" or #v > DISK_LIMITS.serial.max or not v:match("^[\32-\126]+$") then
      return disk.fail("serial", "expected 1 to %d printable ASCII characters, got %s", DISK_LIMITS.serial.max,
                       show(v))
    end
    return v
  end,
  -- whether a migration may hand the open image (and its locks) to the new
  -- process, rather than have it open the path again
  backend_transfer = disk.boolean("backend_transfer"),
}

-- A disk on a vhost-user backend (vhost_user = its socket): the backend
-- has the image, so the image's own fields do not apply.
local VUB_LIMITS = TYPES["vhost-user-blk"].fields
local VUB_FIELDS = { "vhost_user", "name", "queues", "queue_size", "backend_transfer" }
local VUB_DEFAULTS = { queues = 1, queue_size = 128, backend_transfer = true }
local IMAGE_ONLY = { "path", "readonly", "cache", "serial" }
local VUB_CHECKS = {
  vhost_user = function(v)
    if type(v) ~= "string" or v == "" or #v > VUB_LIMITS.socket.max then
      return disk.fail("vhost_user", "expected the path of the backend's UNIX socket (1 to %d bytes), got %s",
                       VUB_LIMITS.socket.max, show(v))
    end
    return v
  end,
  name = DISK_CHECKS.name,
  queues = disk.integer("queues", 1, VUB_LIMITS.queues.max, "a number of request queues"),
  queue_size = disk.power_of_2("queue_size", VUB_LIMITS.queue_size.min, VUB_LIMITS.queue_size.max),
  -- whether a migration may hand the live connection (and its eventfds) to
  -- the new process, rather than have it connect anew
  backend_transfer = DISK_CHECKS.backend_transfer,
}

-- check_disk(settings, index) -> normalised {path, readonly, name, queues,
-- queue_size, cache, serial?, backend_transfer} for an image, or {vhost_user,
-- name, queues, queue_size, backend_transfer} for a vhost-user backend; or
-- nil and a message naming the field.
function M.check_disk(cfg, index)
  local out, err
  if type(cfg) == "table" and cfg.vhost_user ~= nil then
    local wrong = {}
    for _, f in ipairs(IMAGE_ONLY) do
      if cfg[f] ~= nil then wrong[#wrong + 1] = f end
    end
    if #wrong > 0 then
      return nil, "vm:add_disk: " .. table.concat(wrong, ", ") .. ": not with vhost_user (the backend " ..
        "opens the image; these are for an image file this process opens)"
    end
    out, err = check_settings("vm:add_disk", cfg, VUB_FIELDS, VUB_CHECKS, VUB_DEFAULTS,
                              { "vhost_user", "the backend's socket" })
  else
    out, err = check_settings("vm:add_disk", cfg, DISK_FIELDS, DISK_CHECKS, DISK_DEFAULTS,
                              { "path", "the image file or block device" })
  end
  if not out then return nil, err end
  out.name = out.name or ("disk" .. (index or 0))
  return out
end

return M
