#!/usr/bin/env bash
# The storage-driver page, live: one image, two containers sharing it, a write into one of them
# through `lamina mount`, then what changed and what it costs on disk.
# Uses the default store (/var/lib/lamina as root) unless LAMINA_ROOT is set. Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v lamina >/dev/null || lamina() { python3 -m lamina "$@"; }
show() { printf '\n$ %s\n' "$*"; "$@"; }
run() { printf '\n$ %s\n' "$1"; eval "$1"; }   # shows the line as typed, with $root unexpanded

work=$(mktemp -d /var/tmp/lamina-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$here/busybox-rootfs.sh" "$work/busybox.tar"

for c in demo-1 demo-2 app-1 app-2; do lamina rm -f "$c" >/dev/null 2>&1 || true; done
lamina rmi app:demo >/dev/null 2>&1 || true
lamina rmi busybox:demo >/dev/null 2>&1 || true
show lamina import "$work/busybox.tar" busybox:demo
show lamina create --name demo-1 busybox:demo sh
show lamina create --name demo-2 busybox:demo sh

run 'root=$(lamina mount demo-1); echo "$root"'
run 'echo "hello from demo-1" > "$root/hello.txt"'
run 'echo "demo:x:1000:1000::/home/demo:/bin/sh" >> "$root/etc/passwd"'
run 'rm "$root/bin/vi"'
show lamina umount demo-1

show lamina diff demo-1
show lamina ps -a -s
show lamina system df
show lamina images
show lamina history busybox:demo

# The same model, built from a Dockerfile (examples/app): COPY and RUN each add one layer on the
# busybox base; two containers run from the image, each writing only to its own layer.
show lamina build -t app:demo "$here/app"
show lamina run --name app-1 app:demo
show lamina run --name app-2 app:demo
show lamina history app:demo
show lamina ps -a -s
show lamina diff app-1
