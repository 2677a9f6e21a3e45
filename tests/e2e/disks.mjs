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

/** An ext4 filesystem of `size` bytes in `file`, made from folder `src`. */
export function ext4Image(file, src, size, label = 'linuxdata') {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  run('mkfs.ext4', ['-q', '-F', '-L', label, '-d', src, file]);
  return file;
}

/** Write `file` into raw disk `raw` at sector `lba`. */
function place(raw, file, lba) {
  run('dd', [`if=${file}`, `of=${raw}`, 'bs=512', `seek=${lba}`, 'conv=notrunc', 'status=none']);
  fs.rmSync(file);
}

/**
 * A 16 MiB GPT disk in `dir`: partition 1 "linux data" (ext4, 6 MiB at LBA 2048),
 * partition 2 "fat stuff" (FAT, 4 MiB at LBA 14336) and partition 3 "swap" (Linux swap,
 * detection only, 2 MiB at LBA 22528). Returns {raw, vdi, diskGuid, src} (src: the folders
 * the filesystems were made from).
 */
export function gptDisk(dir, { vdiName = 'gpt.vdi' } = {}) {
  const raw = path.join(dir, 'gpt.raw');
  const src = { ext4: path.join(dir, 'src-ext4'), fat: path.join(dir, 'src-fat') };
  writeTree(src.ext4, EXT4_FILES);
  writeTree(src.fat, FAT_FILES);
  fs.writeFileSync(raw, '');
  fs.truncateSync(raw, 16 * MiB);
  // (sgdisk -q writes nothing: it is left out.)
  run('sgdisk', ['-n', '1:2048:+6M', '-t', '1:8300', '-c', '1:linux data', '-n', '2:0:+4M', '-t', '2:0700', '-c', '2:fat stuff',
    '-n', '3:0:+2M', '-t', '3:8200', '-c', '3:swap', raw]);
  const diskGuid = /Disk identifier \(GUID\): ([0-9A-F-]+)/.exec(run('sgdisk', ['-p', raw]))[1];

  place(raw, ext4Image(path.join(dir, 'p1.img'), src.ext4, 6 * MiB), 2048);
  const fat = path.join(dir, 'p2.img');
  fs.writeFileSync(fat, '');
  fs.truncateSync(fat, 4 * MiB);
  run('mkfs.vfat', ['-n', 'FATSTUFF', fat]);
  run('mcopy', ['-s', '-i', fat, path.join(src.fat, 'README.TXT'), path.join(src.fat, 'PICS'), '::/']);
  place(raw, fat, 14336);
  const swap = path.join(dir, 'p3.img');
  fs.writeFileSync(swap, '');
  fs.truncateSync(swap, 2 * MiB);
  run('mkswap', ['-q', swap]);
  place(raw, swap, 22528);

  const vdi = path.join(dir, vdiName);
  run(VDI, ['convert', '-O', 'vdi', raw, vdi]);
  return { raw, vdi, diskGuid, src };
}

/** A snapshot of `base` (a disk from gptDisk) whose ext4 partition holds `files` instead:
 * the filesystem is made again and written into the snapshot only. */
export function ext4Snapshot(dir, base, files) {
  const src = path.join(dir, 'src-snap');
  writeTree(src, files);
  const snap = path.join(dir, 'snap.vdi');
  run(VDI, ['create', '--parent', base, snap]);
  const img = ext4Image(path.join(dir, 'snap-p1.img'), src, 6 * MiB, 'snapdata');
  run(VDI, ['write', '--offset', String(2048 * 512), snap, img]);
  fs.rmSync(img);
  return { snap, src };
}

/** A 16 MiB MBR disk in `dir` with one NTFS partition (type 0x07, 12 MiB at LBA 2048,
 * label "ntfsdata") holding `files` ({name: contents}, top level) copied in with ntfscp. */
export function ntfsDisk(dir, files) {
  const part = path.join(dir, 'ntfs.img');
  fs.writeFileSync(part, '');
  fs.truncateSync(part, 12 * MiB);
  run('mkntfs', ['-q', '-F', '-Q', '-L', 'ntfsdata', part], { stdio: ['ignore', 'pipe', 'ignore'] });
  for (const [name, data] of Object.entries(files)) {
    const src = path.join(dir, `src-${name}`);
    fs.writeFileSync(src, data);
    run('ntfscp', ['-q', part, src, name], { stdio: ['ignore', 'pipe', 'ignore'] });
    fs.rmSync(src);
  }
  const raw = path.join(dir, 'mbr.raw');
  fs.writeFileSync(raw, '');
  fs.truncateSync(raw, 16 * MiB);
  run('sfdisk', ['-q', raw], { input: 'start=2048, size=24576, type=7\n' });
  place(raw, part, 2048);
  const vdi = path.join(dir, 'mbr.vdi');
  run(VDI, ['convert', '-O', 'vdi', raw, vdi]);
  return { raw, vdi };
}
