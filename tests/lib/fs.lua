-- Filesystems for the disk scenarios and bench/disk.
local vmm = require "vmm"

local M = {}

-- fs.odirect_dir(mib) -> {dir = path, unmount = function() (removes it
-- all)}, or nil and why not: a directory where files can be opened with
-- O_DIRECT, for cache = "none". An ext4 of mib MiB made here on a loop
-- device over an image file under /tmp (in the test host /tmp is a tmpfs,
-- which on kernel 6.1 refuses O_DIRECT). Needs root, loop and ext4.
function M.odirect_dir(mib)
  local base = os.tmpname()
  os.remove(base)
  local dir, fsimg = base .. ".ext4dir", base .. ".ext4"
  local out, status = vmm.command({ "sh", "-c",
    'set -e; mkdir -p "$1"; truncate -s "$3"M "$2"; mkfs.ext4 -q -F "$2"; mount -o loop "$2" "$1"',
    "sh", dir, fsimg, tostring(mib) }, { timeout = 120 })
  local function unmount()
    vmm.command({ "umount", dir }, { timeout = 60 })
    os.remove(dir)
    os.remove(fsimg)
  end
  if status ~= 0 then
    unmount()
    local text = tostring(out or status)
    return nil, "cannot loop-mount an ext4 under /tmp: " .. text:sub(-300)
  end
  return { dir = dir, unmount = unmount }
end

return M
