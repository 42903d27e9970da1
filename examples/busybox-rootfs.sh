#!/bin/sh
# Build a minimal busybox root filesystem as a deterministic tar archive.
#
# Usage: examples/busybox-rootfs.sh OUT.tar
#
# Needs Debian's busybox-static (a static /bin/busybox) and GNU tar; installs nothing.
# The archive holds: bin sbin etc proc sys dev tmp (1777) root var usr/bin, /bin/busybox plus one
# symlink per applet (`busybox --list`) in /bin, /etc/passwd and /etc/group with root.
# /etc/hosts, /etc/hostname and /etc/resolv.conf are left absent (the runtime provides them).
# Every entry is owned 0:0 (numeric), entries are sorted by name and every mtime is
# $SOURCE_DATE_EPOCH (0 when unset), so the same busybox binary always gives the same bytes.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT.tar" >&2
    exit 2
fi
out=$1
busybox=${BUSYBOX:-/bin/busybox}
epoch=${SOURCE_DATE_EPOCH:-0}

if [ ! -x "$busybox" ]; then
    echo "$0: $busybox not found: install busybox-static (apt-get install -y busybox-static)" >&2
    exit 1
fi
if ! tar --version 2>/dev/null | grep -q 'GNU tar'; then
    echo "$0: GNU tar is required" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/busybox-rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
root=$work/rootfs
mkdir -p "$root"

umask 022
for d in bin sbin etc proc sys dev tmp root var usr usr/bin; do
    mkdir -p "$root/$d"
done
chmod 0755 "$root" "$root/bin" "$root/sbin" "$root/etc" "$root/proc" "$root/sys" "$root/dev" \
    "$root/var" "$root/usr" "$root/usr/bin"
chmod 0700 "$root/root"
chmod 1777 "$root/tmp"

cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
    case $applet in
        busybox|*/*|'') continue ;;
    esac
    ln -s busybox "$root/bin/$applet"
done

printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"

# Write to a temporary name next to OUT, then rename: a failed run leaves no partial archive.
tmp_out="$out.tmp.$$"
tar --create --file "$tmp_out" --directory "$root" \
    --sort=name --format=gnu \
    --owner=0 --group=0 --numeric-owner \
    --mtime="@$epoch" \
    .
mv -f "$tmp_out" "$out"
