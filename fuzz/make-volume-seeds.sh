#!/usr/bin/env bash
# Regenerate the committed seeds of the volume fuzz targets in fuzz/seeds-volume/: tiny
# partition tables and filesystems (each at most 64 KiB, the fuzzer's max_len) made by the
# reference tools (sfdisk, sgdisk, mkfs.ext2/ext4 -d, mkfs.vfat + mcopy).
#   usage: fuzz/make-volume-seeds.sh
set -euo pipefail
cd "$(dirname "$0")"
out=seeds-volume
rm -rf "$out" && mkdir -p "$out"
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src/dir/sub"
echo hello > "$tmp/src/hello.txt"
: > "$tmp/src/empty"
head -c 3000 /dev/urandom > "$tmp/src/dir/three-k.bin"
echo deep > "$tmp/src/dir/sub/deep"
ln -s dir/three-k.bin "$tmp/src/link"
export MTOOLS_SKIP_CHECK=1 E2FSPROGS_FAKE_TIME=1600000000

# ext2 with a block map, ext4 with extents (1 KiB blocks, 32 inodes, no journal).
truncate -s 64K "$out/ext2.img" "$out/ext4.img"
mkfs.ext2 -q -F -b 1024 -N 32 -d "$tmp/src" "$out/ext2.img" 64
mkfs.ext4 -q -F -b 1024 -N 32 -O ^has_journal,^resize_inode -d "$tmp/src" "$out/ext4.img" 64
# FAT12 with long names.
mkfs.vfat -C "$out/fat12.img" 64 >/dev/null
mcopy -s -i "$out/fat12.img" "$tmp/src/hello.txt" "$tmp/src/dir" ::/
mcopy -i "$out/fat12.img" "$tmp/src/hello.txt" "::/A long name é.txt"
# NTFS (mkntfs needs 2 MiB: the seed is its first 64 KiB, cut; with 512-byte clusters
# the $MFT starts at 16 KiB, so the boot sector and the system records are in it).
truncate -s 2M "$tmp/ntfs.img"
mkntfs -q -F -Q -c 512 "$tmp/ntfs.img" >/dev/null 2>&1
ntfscp -q "$tmp/ntfs.img" "$tmp/src/hello.txt" hello.txt
head -c 64K "$tmp/ntfs.img" > "$out/ntfs.img"
# An MBR with an extended partition and two logicals; a GPT with two named partitions.
truncate -s 64K "$out/mbr.img"
printf 'label: dos\nstart=4, size=20, type=83\nstart=30, size=90, type=5\nstart=34, size=20, type=c\nstart=60, size=20, type=83\n' \
    | sfdisk -q "$out/mbr.img"
truncate -s 64K "$out/gpt.img"
sgdisk -o -a 1 -n 1:34:+20 -c 1:one -t 1:8300 -n 2:60:+20 -c 2:"deux é" -t 2:ef00 "$out/gpt.img" >/dev/null
ls -l "$out"
