// Test images made by qemu-img / qemu-io (and patched where a case needs a broken or odd
// header). Each builder returns the path of a new file in `dir`.

import fs from 'node:fs';
import { MiB, run } from './helpers.mjs';

function qemuIo(file, ...cmds) {
  run('qemu-io', ['-f', 'vdi', ...cmds.flatMap((c) => ['-c', c]), file]);
}

/** Patch little-endian u32 values: [[offset, value], ...]. */
export function patchU32(file, pairs) {
  const fd = fs.openSync(file, 'r+');
  for (const [off, v] of pairs) {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    fs.writeSync(fd, b, 0, 4, off);
  }
  fs.closeSync(fd);
}

export function patchBytes(file, offset, bytes) {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, bytes, 0, bytes.length, offset);
  fs.closeSync(fd);
}

export function readU32(file, offset) {
  const fd = fs.openSync(file, 'r');
  const b = Buffer.alloc(4);
  fs.readSync(fd, b, 0, 4, offset);
  fs.closeSync(fd);
  return b.readUInt32LE();
}

/** 64 MiB dynamic image, blocks written out of order (so slots differ from block numbers),
 * a partial block, and a block written with zeros (qemu leaves it allocated). */
export function dynamicImage(dir) {
  const f = `${dir}/dynamic.vdi`;
  run('qemu-img', ['create', '-q', '-f', 'vdi', f, '64M']);
  qemuIo(f, 'write -P 0x11 40M 1M', 'write -P 0x22 0 1M', 'write -P 0x33 5M 2M',
    'write -P 0x44 63M 4k', 'write -P 0x55 20M 512', 'write -P 0x66 41M 1M');
  return f;
}

/** 16 MiB static (fixed) image with some data. */
export function staticImage(dir) {
  const f = `${dir}/static.vdi`;
  run('qemu-img', ['create', '-q', '-f', 'vdi', '-o', 'static=on', f, '16M']);
  qemuIo(f, 'write -P 0x77 3M 1M', 'write -P 0x78 15M 64k');
  return f;
}

/** A disk whose size is not a whole number of blocks (10 MB + 1 sector, as qemu-img makes). */
export function oddSizeImage(dir) {
  const f = `${dir}/odd.vdi`;
  run('qemu-img', ['create', '-q', '-f', 'vdi', f, '10000384']);
  qemuIo(f, 'write -P 0x99 9M 512', 'write -P 0x9a 9999872 512');
  return f;
}

/** A header whose disk_size is not a multiple of 512 (read as rounded up: the page notes it). */
export function unalignedSizeImage(dir) {
  const f = `${dir}/unaligned.vdi`;
  run('qemu-img', ['create', '-q', '-f', 'vdi', f, '8M']);
  qemuIo(f, 'write -P 0x42 7M 1M');
  // disk_size (u64 at 0x170) = 8 MiB - 100.
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(8 * MiB - 100));
  patchBytes(f, 0x170, b);
  return f;
}

/** The dynamic image with a broken block map: a duplicate entry and one past the end. */
export function corruptedImage(dir) {
  const f = `${dir}/corrupt.vdi`;
  fs.copyFileSync(dynamicImage(dir), f);
  const bmap = readU32(f, 0x154);
  const slotOf0 = readU32(f, bmap);
  patchU32(f, [[bmap + 30 * 4, slotOf0], [bmap + 31 * 4, 5000]]);
  return f;
}

/** An image whose comment is HTML that would run script if it were ever parsed. */
export const XSS = '<img src=x onerror=alert(1)>';
export function xssImage(dir) {
  const f = `${dir}/xss.vdi`;
  run('qemu-img', ['create', '-q', '-f', 'vdi', f, '4M']);
  const comment = Buffer.alloc(256);
  comment.write(XSS, 'utf8');
  patchBytes(f, 0x54, comment);
  return f;
}

/** A legacy v0.2 image (read-only support; qemu-img does not open these), built by hand:
 * 4 blocks of 1 MiB, blocks 1 and 3 allocated. */
export function v0Image(dir) {
  const f = `${dir}/v0.vdi`;
  const blocks = 4;
  const bmap = 0x1a4;
  const data = bmap + 4 * blocks;
  const b = Buffer.alloc(data + 2 * MiB);
  b.write('<<< innotek VirtualBox Disk Image >>>\n', 0, 'latin1');
  b.writeUInt32LE(0xbeda107f, 0x40);
  b.writeUInt32LE(0x00000002, 0x44); // version 0.2
  b.writeUInt32LE(1, 0x48); // image_type normal
  b.write('a v0.2 image', 0x50);
  b.writeUInt32LE(512, 0x15c); // legacy geometry sector size
  b.writeBigUInt64LE(BigInt(blocks * MiB), 0x160); // disk_size
  b.writeUInt32LE(MiB, 0x168); // block_size
  b.writeUInt32LE(blocks, 0x16c); // blocks_in_image
  b.writeUInt32LE(2, 0x170); // blocks_allocated
  Buffer.from('0123456789abcdef0123456789abcdef', 'hex').copy(b, 0x174); // uuid_create
  for (let i = 0; i < blocks; i++) b.writeUInt32LE(i === 1 ? 0 : i === 3 ? 1 : 0xffffffff, bmap + 4 * i);
  b.fill(0x5a, data, data + MiB);
  b.fill(0xa5, data + MiB, data + 2 * MiB);
  fs.writeFileSync(f, b);
  return f;
}
