// Partitioned test disks, built at test time with the reference tools (no loop mounts):
// sgdisk writes the GPT, mkfs.ext4 -d and mkfs.vfat + mcopy build each filesystem as a
// file, dd puts it at its partition's start, and `vdi convert` makes the VDI.

import fs from 'node:fs';
import path from 'node:path';

import { MiB, run, VDI } from './helpers.mjs';

/** A deterministic pseudo-random buffer of `len` bytes. */
export function noise(len, seed) {
  const b = Buffer.alloc(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** Write the tree `files` ({relative path: Buffer | string}) under `dir`. */
export function writeTree(dir, files) {
  for (const [rel, data] of Object.entries(files)) {
    const p = path.join(dir, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, data);
  }
}

/** The files of the ext4 partition. */
export const EXT4_FILES = {
  'hello.txt': 'Hello from an ext4 partition inside a VDI.\n',
  'docs/readme.md': '# Inside the disk\n\nPartitions, filesystems and files.\n',
  'docs/notes/deep.txt': 'a file two folders down\n'.repeat(40),
  'data/random.bin': noise(300 * 1024, 7),
  'data/small.bin': noise(5000, 9),
};

/** The files of the FAT partition. */
export const FAT_FILES = {
  'README.TXT': 'FAT partition\r\n',
  'PICS/ONE.BIN': noise(70 * 1024, 3),
};

/**
 * A 16 MiB GPT disk in `dir`: partition 1 "linux data" (ext4, 6 MiB at LBA 2048) and
 * partition 2 "fat stuff" (FAT, 4 MiB at LBA 14336). Returns {raw, vdi, diskGuid, src}
 * (src: the folders the filesystems were made from).
 */
export function gptDisk(dir, { vdiName = 'gpt.vdi' } = {}) {
  const raw = path.join(dir, 'gpt.raw');
  const src = { ext4: path.join(dir, 'src-ext4'), fat: path.join(dir, 'src-fat') };
  writeTree(src.ext4, EXT4_FILES);
  writeTree(src.fat, FAT_FILES);
  fs.writeFileSync(raw, '');
  fs.truncateSync(raw, 16 * MiB);
  run('sgdisk', ['-n', '1:2048:+6M', '-t', '1:8300', '-c', '1:linux data', '-n', '2:0:+4M', '-t', '2:0700', '-c', '2:fat stuff', raw]);
  const diskGuid = /Disk identifier \(GUID\): ([0-9A-F-]+)/.exec(run('sgdisk', ['-p', raw]))[1];

  const ext4 = path.join(dir, 'p1.img');
  fs.writeFileSync(ext4, '');
  fs.truncateSync(ext4, 6 * MiB);
  run('mkfs.ext4', ['-q', '-F', '-L', 'linuxdata', '-d', src.ext4, ext4]);
  const fat = path.join(dir, 'p2.img');
  fs.writeFileSync(fat, '');
  fs.truncateSync(fat, 4 * MiB);
  run('mkfs.vfat', ['-n', 'FATSTUFF', fat]);
  run('mcopy', ['-s', '-i', fat, path.join(src.fat, 'README.TXT'), path.join(src.fat, 'PICS'), '::/']);
  run('dd', [`if=${ext4}`, `of=${raw}`, 'bs=512', 'seek=2048', 'conv=notrunc', 'status=none']);
  run('dd', [`if=${fat}`, `of=${raw}`, 'bs=512', 'seek=14336', 'conv=notrunc', 'status=none']);
  fs.rmSync(ext4);
  fs.rmSync(fat);

  const vdi = path.join(dir, vdiName);
  run(VDI, ['convert', '-O', 'vdi', raw, vdi]);
  return { raw, vdi, diskGuid, src };
}
