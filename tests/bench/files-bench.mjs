#!/usr/bin/env node
// Benchmark of the Files view (a benchmark, not a test), in headless Chromium. Needs
// target/release/vdi and the wasm build (cargo build -p vdi-cli --release; cargo xtask
// build-wasm), mkfs.ext4, sgdisk (and mkfs.vfat + mcopy for the FAT32 variant).
//
// Disks are made at bench time in target/files-bench/ (deleted at the end), each a GPT disk
// with one partition at LBA 2048 whose filesystem is made in place (mkfs -E offset=...):
//   big-dir  256 MiB ext4 with /many holding 10 000 small files (and, with --fat, a FAT32
//            variant: mcopy -s of 10 000 files took over 10 minutes here);
//   huge     100 GiB ext4 (lazy_itable_init, lazy_journal_init: mkfs writes little, the
//            VDI stays small);
//   bigfile  ext4 holding one file of random data (--file-mib, 512 by default).
// Measured, all from the page's point of view (in-page performance.now()):
//   list     click on the folder's row -> its listing in the DOM (data-listed set), and
//            -> the next animation frame after that ("painted"). The first listing of a
//            freshly opened image is separate from repeats (repeats drop the folder's
//            group so the page lists it again through the worker).
//   open /   click on the Files tab of a freshly opened image -> "/" listed (partition
//            table + filesystem open + root listing).
//   read     Files view "Download" of the big file (save dialog stubbed with an OPFS
//            file, as the e2e tests do) vs the Export view's raw export of the same disk
//            (same stub), alternated; throughput in bytes per second of what is written.
//   memory   the worker's WebAssembly memory (the `stats` query) after each step.
//
// --profile: a CPU profile of the page (main thread) during one "open /" of the 100 GiB
// disk, its top functions by self time logged.
//
// usage: node tests/bench/files-bench.mjs [--reps N] [--file-mib N] [--fat] [--profile]

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { GiB, MiB, openImage, openWorkbench, ROOT, stopServer, stubSavePicker, VDI } from '../e2e/helpers.mjs';

const args = process.argv.slice(2);
let REPS = 5;
let FILE_MIB = 512;
let FAT = false;
let PROFILE = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--reps') REPS = Number(args[++i]);
  else if (args[i] === '--file-mib') FILE_MIB = Number(args[++i]);
  else if (args[i] === '--fat') FAT = true;
  else if (args[i] === '--profile') PROFILE = true;
  else {
    console.error('usage: node tests/bench/files-bench.mjs [--reps N] [--file-mib N] [--fat] [--profile]');
    process.exit(args[i] === '-h' || args[i] === '--help' ? 0 : 2);
  }
}
if (!(REPS >= 1) || !(FILE_MIB >= 1)) throw new Error('--reps and --file-mib need positive numbers');

const DIR = path.join(ROOT, 'target/files-bench');
const N_FILES = 10000;
const log = (...a) => console.error('files-bench:', ...a);
const sh = (cmd, argv) => execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const stat = (xs) => ({ min: Math.min(...xs), median: median(xs), n: xs.length });
const fmt = (s, unit = 'ms', d = 1) => `min ${s.min.toFixed(d)}${unit && ' '}${unit}, median ${s.median.toFixed(d)}${unit && ' '}${unit} (n=${s.n})`;

/** A GPT disk `name`.vdi of `size` bytes, one partition from LBA 2048 to the end holding a
 * filesystem made in place by `mkfs(raw, offset, bytes)`. Returns {vdi, written}: written
 * is what the raw file held (allocated bytes) before conversion. */
function gptDisk(name, size, mkfs) {
  const raw = path.join(DIR, `${name}.raw`);
  fs.writeFileSync(raw, '');
  fs.truncateSync(raw, size);
  sh('sgdisk', ['-n', '1:2048:0', '-t', '1:8300', raw]);
  const last = Number(/Last sector: (\d+)/.exec(sh('sgdisk', ['-i', '1', raw]))[1]);
  mkfs(raw, 2048 * 512, (last - 2048 + 1) * 512);
  const written = Number(sh('du', ['-B1', raw]).split('\t')[0]);
  const vdi = path.join(DIR, `${name}.vdi`);
  sh(VDI, ['convert', '-O', 'vdi', raw, vdi]);
  fs.rmSync(raw);
  return { vdi, written, vdiBytes: fs.statSync(vdi).size, size };
}

const ext4 = (src, extra = []) => (raw, offset, bytes) => sh('mkfs.ext4', ['-q', '-F', '-b', '4096',
  '-E', `offset=${offset}${extra.length ? ',' + extra.join(',') : ''}`, ...(src ? ['-d', src] : []), raw, String(Math.floor(bytes / 4096))]);

function makeDisks() {
  fs.rmSync(DIR, { recursive: true, force: true });
  fs.mkdirSync(DIR, { recursive: true });
  const src = path.join(DIR, 'src-many');
  fs.mkdirSync(path.join(src, 'many'), { recursive: true });
  for (let i = 0; i < N_FILES; i++) fs.writeFileSync(path.join(src, 'many', `file-${String(i).padStart(5, '0')}.txt`), `entry ${i}\n`);
  const disks = {};
  let t = Date.now();
  disks.dirExt4 = gptDisk('dir-ext4', 256 * MiB, ext4(src));
  log(`ext4 with ${N_FILES} files: ${Date.now() - t} ms`);
  if (FAT) {
    t = Date.now();
    disks.dirFat = gptDisk('dir-fat', 256 * MiB, (raw, offset, bytes) => {
      const img = path.join(DIR, 'fat.img');
      fs.writeFileSync(img, '');
      fs.truncateSync(img, bytes);
      sh('mkfs.vfat', ['-F', '32', img]);
      sh('mcopy', ['-s', '-i', img, path.join(src, 'many'), '::/']);
      sh('dd', [`if=${img}`, `of=${raw}`, 'bs=1M', `seek=${offset}`, 'oflag=seek_bytes', 'conv=notrunc,sparse', 'status=none']);
      fs.rmSync(img);
    });
    log(`FAT32 with ${N_FILES} files: ${Date.now() - t} ms`);
  }
  fs.rmSync(src, { recursive: true });
  t = Date.now();
  disks.huge = gptDisk('huge', 100 * GiB, ext4(null, ['lazy_itable_init=1', 'lazy_journal_init=1']));
  log(`100 GiB ext4: ${Date.now() - t} ms, mkfs wrote ${(disks.huge.written / MiB).toFixed(1)} MiB, VDI ${(disks.huge.vdiBytes / MiB).toFixed(1)} MiB`);
  const bsrc = path.join(DIR, 'src-big');
  fs.mkdirSync(bsrc);
  sh('sh', ['-c', `head -c ${FILE_MIB}M /dev/urandom > "$1"`, 'sh', path.join(bsrc, 'big.bin')]);
  t = Date.now();
  disks.bigfile = gptDisk('bigfile', (FILE_MIB + 96) * MiB, ext4(bsrc));
  fs.rmSync(bsrc, { recursive: true });
  log(`ext4 with a ${FILE_MIB} MiB file: ${Date.now() - t} ms`);
  return disks;
}

/** The worker's WebAssembly memory, in bytes (the `stats` query through the page's bridge). */
async function wasmMemory(page) {
  return page.evaluate(async () => {
    const { bridge } = await import(new URL('core/bridge.js', document.baseURI).href);
    return (await bridge.ops.stats()).memory;
  });
}

/** On a freshly opened image, the worker ops behind "open the Files view": the partition
 * table, then the first listing of "/" (which opens the filesystem), each timed in the page
 * around its bridge call (worker round trip included, no rendering). */
async function timeOps(page) {
  return page.evaluate(async () => {
    const { bridge } = await import(new URL('core/bridge.js', document.baseURI).href);
    let t0 = performance.now();
    await bridge.ops.partitions({ chain: null });
    const partitions = performance.now() - t0;
    t0 = performance.now();
    await bridge.ops.fsList({ chain: null, part: 1, path: '/' });
    const fsList = performance.now() - t0;
    t0 = performance.now();
    await bridge.ops.fsList({ chain: null, part: 1, path: '/' });
    return { partitions, fsList, fsListAgain: performance.now() - t0 };
  });
}

/** In the page: run `action` (a click), then resolve with {listed, painted} ms once the item
 * at `p` has data-listed (and one animation frame later). */
async function timeListing(page, p, action) {
  return page.evaluate(({ p, action }) => new Promise((resolve, reject) => {
    const t0 = performance.now();
    const timer = setTimeout(() => reject(new Error(`no listing of ${p} in 60 s`)), 60000);
    const done = () => {
      const li = document.querySelector(`#files-tree li[data-path="${p}"]`);
      if (!li?.dataset.listed) return false;
      const listed = performance.now() - t0;
      requestAnimationFrame(() => setTimeout(() => { clearTimeout(timer); resolve({ listed, painted: performance.now() - t0, n: Number(li.dataset.listed) }); }, 0));
      return true;
    };
    const mo = new MutationObserver(() => { if (done()) mo.disconnect(); });
    mo.observe(document.querySelector('#files-tree'), { subtree: true, childList: true, attributes: true, attributeFilter: ['data-listed'] });
    if (action === 'tab') document.querySelector('#tab-files').click();
    else document.querySelector(`#files-tree li[data-path="${p}"] > .item-row`).click();
  }), { p, action });
}

/** Make the page list folder `p` again on the next click (drop its group, close it). */
async function forget(page, p) {
  await page.evaluate((x) => {
    const li = document.querySelector(`#files-tree li[data-path="${x}"]`);
    li.querySelector(':scope > ul')?.remove();
    delete li.dataset.listed;
    li.setAttribute('aria-expanded', 'false');
  }, p);
}

/** Open `vdi` fresh and time the Files tab -> "/" listed. */
async function openRoot(page, vdi) {
  await page.click('#tab-overview').catch(() => {});
  await openImage(page, vdi);
  await page.evaluate(() => document.querySelector('#tab-overview')?.click());
  return timeListing(page, '/', 'tab');
}

async function benchDir(page, vdi, label, results) {
  const first = { listed: [], painted: [] };
  const again = { listed: [], painted: [] };
  let n = 0;
  let mem = 0;
  for (let r = 0; r < REPS; r++) {
    await openRoot(page, vdi);
    const f = await timeListing(page, '/many', 'click');
    first.listed.push(f.listed);
    first.painted.push(f.painted);
    n = f.n;
    for (let k = 0; k < 2; k++) {
      await forget(page, '/many');
      const a = await timeListing(page, '/many', 'click');
      again.listed.push(a.listed);
      again.painted.push(a.painted);
    }
    mem = Math.max(mem, await wasmMemory(page));
  }
  const shown = await page.$$eval('#files-tree li[data-path="/many"] > ul > li.item', (l) => l.length);
  results[label] = { entries: n, shownItems: shown, first: { listed: stat(first.listed), painted: stat(first.painted) },
    again: { listed: stat(again.listed), painted: stat(again.painted) }, wasmMemory: mem };
  log(`${label}: ${n} entries (${shown} items rendered); first listing ${fmt(results[label].first.painted)}; again ${fmt(results[label].again.painted)}; wasm memory ${(mem / MiB).toFixed(1)} MiB`);
}

/** Log the page's top functions by self time during one openRoot of `vdi`. */
async function profileOpen(page, vdi) {
  const cdp = await page.context().newCDPSession(page);
  await page.click('#tab-overview');
  await openImage(page, vdi);
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
  await cdp.send('Profiler.start');
  await page.evaluate(() => document.querySelector('#tab-overview')?.click());
  const x = await timeListing(page, '/', 'tab');
  const { profile } = await cdp.send('Profiler.stop');
  const self = new Map();
  const dt = profile.timeDeltas;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  profile.samples.forEach((id, i) => {
    const f = byId.get(id).callFrame;
    const k = `${f.functionName || '(anon)'} ${f.url.split('/').pop()}:${f.lineNumber + 1}`;
    self.set(k, (self.get(k) ?? 0) + (dt[i] ?? 0) / 1000);
  });
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 12);
  log(`profile of one open / (${x.painted.toFixed(0)} ms):`);
  for (const [k, ms] of top) log(`  ${ms.toFixed(1)} ms  ${k}`);
}

async function benchHuge(page, disk, results) {
  const open = { listed: [], painted: [] };
  let mem = 0;
  const ops = { partitions: [], fsList: [], fsListAgain: [] };
  for (let r = 0; r < REPS; r++) {
    await page.click('#tab-overview');
    await openImage(page, disk.vdi);
    const o = await timeOps(page);
    for (const k of Object.keys(ops)) ops[k].push(o[k]);
    const x = await openRoot(page, disk.vdi);
    open.listed.push(x.listed);
    open.painted.push(x.painted);
    mem = Math.max(mem, await wasmMemory(page));
  }
  if (PROFILE) await profileOpen(page, disk.vdi);
  results.huge = { virtual: disk.size, mkfsWrote: disk.written, vdiBytes: disk.vdiBytes,
    openRoot: { listed: stat(open.listed), painted: stat(open.painted) },
    workerOps: { partitions: stat(ops.partitions), fsListRoot: stat(ops.fsList), fsListRootAgain: stat(ops.fsListAgain) }, wasmMemory: mem };
  log(`100 GiB ext4: open + list / ${fmt(results.huge.openRoot.painted)} (partitions op ${fmt(results.huge.workerOps.partitions)}, fsList / ${fmt(results.huge.workerOps.fsListRoot)}); wasm memory ${(mem / MiB).toFixed(1)} MiB`);
}

async function clearOpfs(page) {
  await page.evaluate(async () => {
    const dir = await navigator.storage.getDirectory();
    for await (const [n] of dir.entries()) await dir.removeEntry(n).catch(() => {});
  });
}

/** Time a save (Files "Download" or Export "raw"): click -> result shown, in the page. */
async function timeSave(page, button, result) {
  await clearOpfs(page);
  await stubSavePicker(page, 'files-bench.out');
  await page.evaluate((r) => { document.querySelector(r).hidden = true; }, result);
  await page.evaluate((b) => { const t = document.querySelector(b).closest('[role=tabpanel]'); if (t?.hidden) document.getElementById(t.getAttribute('aria-labelledby')).click(); }, button);
  const ms = await page.evaluate(({ button, result }) => new Promise((resolve, reject) => {
    const t0 = performance.now();
    const poll = () => {
      const err = document.querySelector('#error');
      if (err && !err.hidden) return reject(new Error(err.textContent));
      if (!document.querySelector(result).hidden) return resolve(performance.now() - t0);
      setTimeout(poll, 5);
    };
    document.querySelector(button).click();
    poll();
  }), { button, result });
  const size = await page.evaluate(async () => (await (await (await navigator.storage.getDirectory()).getFileHandle('files-bench.out')).getFile()).size);
  return { ms, size };
}

async function benchRead(page, disk, results) {
  await openRoot(page, disk.vdi);
  await page.click('#files-tree li[data-path="/big.bin"] > .item-row');
  await page.waitForFunction(() => document.querySelector('#files-tree li[data-path="/big.bin"]')?.getAttribute('aria-selected') === 'true');
  const file = [];
  const exp = [];
  let fileSize = 0;
  let expSize = 0;
  let mem = 0;
  for (let r = 0; r < REPS; r++) {
    const order = r % 2 ? ['export', 'file'] : ['file', 'export'];
    for (const what of order) {
      if (what === 'file') {
        await page.evaluate(() => document.querySelector('#tab-files').click());
        const x = await timeSave(page, '#file-save', '#files-result');
        file.push(x.ms);
        fileSize = x.size;
      } else {
        const x = await timeSave(page, '#export-raw', '#export-result');
        exp.push(x.ms);
        expSize = x.size;
      }
      mem = Math.max(mem, await wasmMemory(page));
    }
    log(`read rep ${r + 1}: file ${file.at(-1).toFixed(0)} ms, raw export ${exp.at(-1).toFixed(0)} ms`);
  }
  await clearOpfs(page);
  if (fileSize !== FILE_MIB * MiB) throw new Error(`the file saved has ${fileSize} bytes, not ${FILE_MIB * MiB}`);
  const rate = (bytes, ms) => bytes / MiB / (ms / 1000);
  const fr = stat(file.map((ms) => rate(fileSize, ms)));
  const er = stat(exp.map((ms) => rate(expSize, ms)));
  const ratios = file.map((ms, i) => rate(fileSize, ms) / rate(expSize, exp[i]));
  results.read = { fileBytes: fileSize, exportBytes: expSize, fileMs: stat(file), exportMs: stat(exp),
    fileMiBps: fr, exportMiBps: er, ratio: stat(ratios), wasmMemory: mem };
  log(`read: file ${fmt(fr, 'MiB/s')} vs raw export ${fmt(er, 'MiB/s')}; ratio per rep ${fmt(results.read.ratio, '', 2)}; wasm memory ${(mem / MiB).toFixed(1)} MiB`);
}

async function main() {
  if (!fs.existsSync(VDI)) throw new Error(`${VDI} is missing: cargo build -p vdi-cli --release`);
  process.on('exit', () => fs.rmSync(DIR, { recursive: true, force: true }));
  const disks = makeDisks();
  const results = { reps: REPS, date: new Date().toISOString(), load: fs.readFileSync('/proc/loadavg', 'utf8').trim() };
  const wb = await openWorkbench();
  try {
    const { page } = wb;
    await benchDir(page, disks.dirExt4.vdi, 'ext4 /many', results);
    if (disks.dirFat) await benchDir(page, disks.dirFat.vdi, 'FAT32 /many', results);
    await benchHuge(page, disks.huge, results);
    await benchRead(page, disks.bigfile, results);
    results.loadAfter = fs.readFileSync('/proc/loadavg', 'utf8').trim();
    console.log(JSON.stringify(results, null, 2));
  } finally {
    await wb.close();
    stopServer();
  }
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
