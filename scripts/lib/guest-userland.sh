# scripts/lib/guest-userland.sh — the userland that the guest's initramfs
# (scripts/guest-image) and its disk root filesystem (scripts/rootfs-image)
# share: busybox-static with its applet links, the /init (scripts/lib/guest-init)
# and /bin/diskwrite (tests/guest/diskwrite.c, compiled static here).
# Sourced by those scripts (bash), which define $prog, $repo and die().
# shellcheck shell=bash disable=SC2154 # $repo: set by the sourcing script

guest_init_src=$repo/scripts/lib/guest-init
diskwrite_src=$repo/tests/guest/diskwrite.c

# guest_busybox: print the path of the static busybox, or die.
guest_busybox() {
  local bb
  bb=$(command -v busybox || true)
  [ -n "$bb" ] || die "busybox not found (install busybox-static)"
  bb=$(readlink -f "$bb")
  # A dynamically linked busybox would need its libraries in the image.
  if command -v ldd >/dev/null && ldd "$bb" >/dev/null 2>&1; then
    die "$bb is dynamically linked; install busybox-static"
  fi
  echo "$bb"
}

# guest_userland_inputs: the files the userland is made from, one a line
# (besides busybox), for the scripts' up-to-date checks.
guest_userland_inputs() {
  printf '%s\n' "$repo/scripts/lib/guest-userland.sh" "$guest_init_src" "$diskwrite_src"
}

# guest_stage_userland DIR BUSYBOX: lay the shared userland out in DIR.
guest_stage_userland() {
  local dir=$1 bb=$2 applet
  command -v gcc >/dev/null || die "gcc not found (install gcc and libc6-dev): it builds /bin/diskwrite"
  mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,mnt,lib/modules}
  # Busybox plus one symlink per applet, at the paths busybox wants.
  cp "$bb" "$dir/bin/busybox"
  "$bb" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    case $applet in */*) mkdir -p "$dir/${applet%/*}" ;; esac
    ln -sf /bin/busybox "$dir/$applet"
  done
  # A console node in case devtmpfs cannot be mounted (the kernel opens
  # /dev/console for init before /init runs).
  mknod -m 600 "$dir/dev/console" c 5 1 2>/dev/null || true
  echo "root:x:0:0:root:/root:/bin/sh" > "$dir/etc/passwd"
  echo "root:x:0:" > "$dir/etc/group"
  cp "$guest_init_src" "$dir/init"
  chmod 755 "$dir/init"
  gcc -std=c11 -static -pthread -O2 -Wall -Wextra -Werror -s -o "$dir/bin/diskwrite" "$diskwrite_src" \
    || die "cannot build $diskwrite_src (static: needs libc6-dev)"
}
