#!/usr/bin/env bash
# Regenerate the committed seed images in fuzz/seeds/ (small VDI files) with qemu-img/qemu-io
# and our own `vdi` command. `cargo xtask fuzz` copies them into each file target's corpus.
#   usage: fuzz/make-seeds.sh [path/to/vdi]   (default: target/release/vdi)
set -euo pipefail
cd "$(dirname "$0")"
VDI=${1:-../target/release/vdi}
out=seeds
rm -rf "$out" && mkdir -p "$out"
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT

# qemu-img: dynamic (empty, 1 MiB blocks: bmap at 0x200, data at 0x400), an odd size, one
# block of data written by qemu-io, static (fixed) with data.
qemu-img create -q -f vdi "$out/qemu-dynamic-empty.vdi" 4M
qemu-img create -q -f vdi "$out/qemu-odd-size.vdi" 3000001
qemu-img create -q -f vdi "$out/qemu-dynamic-data.vdi" 3M
qemu-io -c 'write -P 0xa5 1M 4k' -c 'write -P 0x5a 2M 512' "$out/qemu-dynamic-data.vdi" >/dev/null
qemu-img create -q -f vdi -o static=on "$out/qemu-static.vdi" 1M
qemu-io -c 'write -P 0x33 4096 512' "$out/qemu-static.vdi" >/dev/null

# Our engine: small blocks keep the seeds small; both layouts; fixed; diff.
head -c 12288 /dev/urandom > "$tmp/data"
$VDI create --layout qemu --block-size 512 "$out/engine-qemu-512.vdi" 8K >/dev/null
head -c 2600 "$tmp/data" > "$tmp/d2600"
$VDI write --offset 1024 "$out/engine-qemu-512.vdi" "$tmp/d2600" >/dev/null
head -c 3000 "$tmp/data" > "$tmp/d3000"
$VDI create --layout qemu --block-size 4K "$out/engine-qemu-4k.vdi" 40K >/dev/null
$VDI write --offset 5000 "$out/engine-qemu-4k.vdi" "$tmp/d3000" >/dev/null
$VDI write --offset 20480 "$out/engine-qemu-4k.vdi" "$tmp/d3000" >/dev/null
$VDI create --layout qemu --block-size 1K --fixed "$out/engine-fixed-1k.vdi" 6K >/dev/null
$VDI write --offset 2000 "$out/engine-fixed-1k.vdi" "$tmp/d3000" >/dev/null
$VDI create --layout qemu --block-size 2K --uuid 00000000-0000-0000-0000-0000000000aa "$out/engine-base.vdi" 16K >/dev/null
$VDI write --offset 0 "$out/engine-base.vdi" "$tmp/d3000" >/dev/null
$VDI create --layout qemu --parent "$out/engine-base.vdi" "$out/engine-diff.vdi" >/dev/null
$VDI write --offset 7000 "$out/engine-diff.vdi" "$tmp/d3000" >/dev/null
ls -l "$out"
