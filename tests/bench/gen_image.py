#!/usr/bin/env python3
"""Fill an empty dynamic VDI image with the benchmark's data (used by bench.sh).

The image must exist already, freshly created with no block allocated (bench.sh makes it
with `vdi create`, VirtualBox layout, and validates the result with `qemu-img check`). This
script picks blocks at random positions of the virtual disk, gives them physical slots in a
random order (as a guest writing here and there would), writes the data and then the block
map and blocks_allocated, following /work/shared/VDI-FORMAT.md:

- DATA blocks hold random bytes (os.urandom);
- ZERO_DATA blocks are allocated but hold only zeros (a guest that zeroed a region);
- ZERO_ENTRIES blocks are marked ZERO (0xFFFFFFFE) in the map, as VirtualBox's compact does;
- every other block stays FREE.

usage: gen_image.py IMAGE DATA_BLOCKS ZERO_DATA_BLOCKS ZERO_ENTRIES SEED
"""

import os
import random
import struct
import sys

BLOCK_FREE = 0xFFFFFFFF
BLOCK_ZERO = 0xFFFFFFFE


def main() -> None:
    path, n_data, n_zero_data, n_zero_entries, seed = sys.argv[1], *map(int, sys.argv[2:6])
    fd = os.open(path, os.O_RDWR)
    try:
        hdr = os.pread(fd, 0x200, 0)
        (sig,) = struct.unpack_from("<I", hdr, 0x40)
        if sig != 0xBEDA107F:
            sys.exit(f"{path}: not a VDI image")
        offset_bmap, offset_data = struct.unpack_from("<II", hdr, 0x154)
        block_size, block_extra, blocks_in_image, blocks_allocated = struct.unpack_from("<IIII", hdr, 0x178)
        if blocks_allocated != 0 or block_extra != 0:
            sys.exit(f"{path}: expected a fresh dynamic image (allocated {blocks_allocated}, extra {block_extra})")
        total = n_data + n_zero_data + n_zero_entries
        if total > blocks_in_image:
            sys.exit(f"{path}: {total} blocks asked for, the image has {blocks_in_image}")

        rng = random.Random(seed)
        positions = rng.sample(range(blocks_in_image), total)
        data_pos = positions[:n_data]
        zero_data_pos = positions[n_data:n_data + n_zero_data]
        zero_entry_pos = positions[n_data + n_zero_data:]
        allocated = [(p, True) for p in data_pos] + [(p, False) for p in zero_data_pos]
        rng.shuffle(allocated)  # slot k holds allocated[k]: a random write order

        bmap = [BLOCK_FREE] * blocks_in_image
        for p in zero_entry_pos:
            bmap[p] = BLOCK_ZERO
        zeros = bytes(block_size)
        for slot, (pos, random_data) in enumerate(allocated):
            buf = os.urandom(block_size) if random_data else zeros
            off = offset_data + slot * block_size
            if os.pwrite(fd, buf, off) != block_size:
                sys.exit(f"{path}: short write at {off}")
            bmap[pos] = slot
        # Data before metadata, as the peers write.
        os.pwrite(fd, struct.pack(f"<{blocks_in_image}I", *bmap), offset_bmap)
        os.pwrite(fd, struct.pack("<I", len(allocated)), 0x184)
        os.fsync(fd)
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
