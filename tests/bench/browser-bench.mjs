#!/usr/bin/env node
// Browser benchmark of the workbench (a benchmark, not a test). Usually run through
// tests/bench/browser-bench.sh, which builds what it needs first.
//
// 1. Raw export of a 16 GiB dynamic image holding 4 GiB of data (the same image as
//    tests/bench/bench.sh: 4096 random 1 MiB blocks scattered in random slot order, 256
//    allocated zero blocks, 64 ZERO entries), exported from the page in headless Chromium:
//      - "save dialog": showSaveFilePicker returning a file whose writable stream gets
//        the export (the path a desktop Chrome user takes; headless Chromium cannot show
//        the dialog, so it returns an OPFS file handle — same createWritable code path);
//      - "OPFS + download": no save dialog, staged in OPFS through a sync access handle,
//        then handed to the download manager (time until the download starts);
//    next to `vdi convert -O raw` and `qemu-img convert -O raw` on the same image, in the
//    same run, page cache warm for all. Throughput is virtual disk bytes per second.
// 2. Time to first paint of the header and of the block map for an 8 GiB VirtualBox image
//    (target/fixtures/3hfs.vdi) and for the 16 GiB image.
//
// usage: node tests/bench/browser-bench.mjs [--reps N] [--keep]

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {
  chunkedDigest, fixture, GiB, MiB, openImage, openWorkbench, opfsDigest, removeSavePicker, reveal, ROOT, stopServer,
  stubSavePicker, VDI,
} from '../e2e/helpers.mjs';

const args = process.argv.slice(2);
let REPS = 7;
let KEEP = false;
let BROWSER_ONLY = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--reps') REPS = Number(args[++i]);
  else if (args[i] === '--keep') KEEP = true;
  else if (args[i] === '--browser-only') BROWSER_ONLY = true;
  else if (args[i] === '-h' || args[i] === '--help') {
    console.log('usage: node tests/bench/browser-bench.mjs [--reps N] [--keep] [--browser-only]\n  --keep          keep the generated 16 GiB image (4.3 GB) for the next run\n  --browser-only  skip the native tools (for quick iterations; no comparison)');
    process.exit(0);
  } else {
    console.error(`unknown argument ${args[i]}`);
    process.exit(2);
  }
}
if (!(REPS >= 1)) throw new Error('--reps needs a positive number');

const DIR = path.join(ROOT, 'target/bench');
const IMG = path.join(DIR, 'browser-bench.vdi');
const PARAMS = `${IMG}.params`;
const OUT = path.join(DIR, 'browser-bench.out.raw');
const SIZE = 16 * GiB;
const WANT_PARAMS = `size=${SIZE} data=4096 zero_data=256 zero_entries=64 seed=1 gen=${fs.statSync(path.join(ROOT, 'tests/bench/gen_image.py')).size}`;

function sh(cmd, argv) {
  return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
}

function log(...a) {
  console.error('browser-bench:', ...a);
}

function generate() {
  fs.mkdirSync(DIR, { recursive: true });
  if (fs.existsSync(IMG) && fs.existsSync(PARAMS) && fs.readFileSync(PARAMS, 'utf8') === WANT_PARAMS) {
    log(`reusing ${IMG}`);
    return;
  }
  log(`generating ${IMG}: 16 GiB dynamic, 4 GiB of random data in scattered 1 MiB blocks`);
  fs.rmSync(IMG, { force: true });
  sh(VDI, ['create', `${IMG}.tmp`, String(SIZE)]);
  sh('python3', [path.join(ROOT, 'tests/bench/gen_image.py'), `${IMG}.tmp`, '4096', '256', '64', '1']);
  sh('qemu-img', ['check', '-q', '-f', 'vdi', `${IMG}.tmp`]);
  fs.renameSync(`${IMG}.tmp`, IMG);
  fs.writeFileSync(PARAMS, WANT_PARAMS);
}

function timeNative(cmd, argv) {
  fs.rmSync(OUT, { force: true });
  const t0 = process.hrtime.bigint();
  execFileSync(cmd, argv, { stdio: ['ignore', 'ignore', 'inherit'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return ms;
}

const gbps = (bytes, ms) => bytes / 1e9 / (ms / 1000);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function browserExport(page, mode) {
  const name = 'browser-bench-export.raw';
  if (mode === 'dialog') await stubSavePicker(page, name);
  else if (mode === 'staged') await removeSavePicker(page);
  await page.evaluate(async () => {
    const dir = await navigator.storage.getDirectory();
    for await (const [n] of dir.entries()) await dir.removeEntry(n).catch(() => {});
  });
  const t0 = Date.now();
  const download = mode === 'staged' ? page.waitForEvent('download', { timeout: 600000 }) : null;
  // The export button is in the Export view (the null page has no automatic reveal).
  await reveal(page, '#export-raw');
  await page.click('#export-raw');
  await page.waitForFunction(() => !document.querySelector('#export-result').hidden || !document.querySelector('#error').hidden,
    null, { timeout: 600000 });
  const wall = Date.now() - t0;
  const err = await page.$eval('#error', (e) => (e.hidden ? null : e.textContent));
  if (err) throw new Error(`the page failed: ${err}`);
  const ms = Number(await page.$eval('#export-result', (e) => e.dataset.ms));
  const finishMs = Number(await page.$eval('#export-result', (e) => e.dataset.finishMs));
  const writes = Number(await page.$eval('#export-result', (e) => e.dataset.writes));
  let downloadMs = null;
  if (download) {
    // The browser's download manager copies the staged file to the downloads folder: a
    // download cannot be sparse, so all 16 GiB are written. Timed, then deleted.
    const d = await download;
    const file = await d.path();
    downloadMs = Date.now() - t0;
    fs.rmSync(file, { force: true });
  }
  return { wall, ms, finishMs, downloadMs, name, writes };
}

async function main() {
  if (!fs.existsSync(VDI)) throw new Error(`${VDI} is missing: cargo build -p vdi-cli --release`);
  generate();
  const cleanup = () => {
    fs.rmSync(OUT, { force: true });
    if (!KEEP) fs.rmSync(IMG, { force: true }), fs.rmSync(PARAMS, { force: true });
  };
  process.on('exit', cleanup);
  const results = { reps: REPS, image: { virtual: SIZE, file: fs.statSync(IMG).size } };

  log('warming the page cache');
  execFileSync('sh', ['-c', 'cat "$1" > /dev/null', 'sh', IMG]);

  const native = { vdi: [], qemu: [], qemuW: [], vdiNull: [], qemuNull: [] };
  const cmds = {
    vdi: [VDI, ['convert', '-O', 'raw', IMG, OUT]],
    qemu: ['qemu-img', ['convert', '-f', 'vdi', '-O', 'raw', IMG, OUT]],
    qemuW: ['qemu-img', ['convert', '-W', '-m', '16', '-f', 'vdi', '-O', 'raw', IMG, OUT]],
    vdiNull: [VDI, ['convert', '-O', 'raw', IMG, '/dev/null']],
    qemuNull: ['qemu-img', ['convert', '-n', '-f', 'vdi', IMG, '--target-image-opts', `driver=null-co,size=${SIZE}`]],
  };
  // The reference output for checking the browser's export.
  timeNative(VDI, ['convert', '-O', 'raw', IMG, OUT]);
  const want = await chunkedDigest(OUT);
  fs.rmSync(OUT, { force: true });

  const wb = await openWorkbench();
  const { page, context } = wb;
  try {
    // Headless profiles get a 10 GiB storage quota; the 16 GiB export needs more.
    const cdp = await context.newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: wb.origin, quotaSize: 64 * GiB });
    // Time to first paint of header and map (first, on a quiet page).
    const ttfp = {};
    for (const [label, file] of [['8 GiB VirtualBox image (3hfs.vdi)', fixture('3hfs.vdi')], ['16 GiB bench image', IMG]]) {
      const h = [];
      const m = [];
      for (let r = 0; r < 5; r++) {
        await openImage(page, file);
        h.push(Number(await page.evaluate(() => document.documentElement.dataset.headerMs)));
        m.push(Number(await page.evaluate(() => document.documentElement.dataset.mapMs)));
      }
      ttfp[label] = { header: median(h), map: median(m), mapMax: Math.max(...m) };
    }

    const browser = { dialog: [], staged: [], null: [] };
    const writes = [];
    const nullPage = await context.newPage();
    await nullPage.goto(`${wb.url}?sink=null`);
    await openImage(nullPage, IMG);
    await openImage(page, IMG);
    // Each repetition runs every tool once, native and browser alternating, the order
    // reversed every other repetition.
    const steps = [
      ...(BROWSER_ONLY ? [] : Object.keys(cmds).map((tool) => async () => {
        const ms = timeNative(...cmds[tool]);
        native[tool].push(ms);
        log(`${tool}: ${ms.toFixed(0)} ms`);
      })),
      async () => {
        const x = await browserExport(nullPage, 'null');
        browser.null.push(x.wall);
        log(`browser read only: ${x.wall} ms`);
      },
      ...['dialog', 'staged'].map((mode) => async (r) => {
        const x = await browserExport(page, mode);
        browser[mode].push(x.wall);
        if (x.downloadMs != null) (browser.downloaded ??= []).push(x.downloadMs);
        if (mode === 'dialog') writes.push(x.writes);
        log(`browser ${mode}: ${x.wall} ms (worker ${x.ms.toFixed(0)} ms, of which closing the target ${x.finishMs.toFixed(0)} ms; ${x.writes} writes)`);
        if (r === 0 && mode === 'dialog') {
          const got = await opfsDigest(page, x.name);
          if (got.digest !== want.digest || got.size !== want.size) throw new Error('the browser export differs from vdi convert');
          log('browser export verified against vdi convert');
        }
      }),
    ];
    for (let r = 0; r < REPS; r++) {
      for (const step of r % 2 ? [...steps].reverse() : steps) await step(r);
    }
    await page.evaluate(async () => {
      const dir = await navigator.storage.getDirectory();
      for await (const [n] of dir.entries()) await dir.removeEntry(n).catch(() => {});
    });
    const mem = Number(await page.$eval('#cur-memory', (e) => e.dataset.bytes));

    const best = (xs) => (xs.length ? Math.min(...xs) : NaN);
    const med = (xs) => (xs.length ? median(xs) : NaN);
    const rows = [
      ['vdi convert -O raw (native)', native.vdi],
      ['qemu-img convert -O raw (native)', native.qemu],
      ['qemu-img convert -W -m 16 (native)', native.qemuW],
      ['browser: save dialog (writable stream)', browser.dialog],
      ['browser: OPFS, until the download starts', browser.staged],
      ['browser: OPFS, until the download is saved', browser.downloaded ?? []],
      ['reading only: vdi convert to /dev/null', native.vdiNull],
      ['reading only: qemu-img convert to null-co', native.qemuNull],
      ['reading only: browser, output discarded', browser.null],
    ];
    const nativeBest = Math.max(...[native.vdi, native.qemu, native.qemuW].map((xs) => gbps(SIZE, best(xs))));
    console.log(`\nRaw export of a 16 GiB dynamic VDI with 4 GiB of data (${REPS} repetitions, tools alternated;`);
    console.log('min and median wall time; GB/s of virtual disk at the minimum):');
    for (const [name, xs] of rows) {
      console.log(`  ${name.padEnd(44)} ${(best(xs) / 1000).toFixed(2).padStart(7)} s ${(med(xs) / 1000).toFixed(2).padStart(7)} s  ${gbps(SIZE, best(xs)).toFixed(2).padStart(6)} GB/s`);
    }
    const ratio = gbps(SIZE, best(browser.dialog)) / nativeBest;
    const ratioStaged = gbps(SIZE, best(browser.staged)) / nativeBest;
    console.log(`  browser / fastest native (ratio of minima): save dialog ${(ratio * 100).toFixed(0)} %, OPFS ${(ratioStaged * 100).toFixed(0)} % (target: at least 50 %)`);
    console.log(`  writes to the writable stream per export: ${[...new Set(writes)].join(', ')}`);
    console.log(`  wasm memory after the exports: ${(mem / MiB).toFixed(1)} MiB`);
    console.log('\nTime to first paint (median of 5; target < 500 ms):');
    for (const [label, t] of Object.entries(ttfp)) {
      console.log(`  ${label.padEnd(36)} header ${t.header.toFixed(0)} ms, block map ${t.map.toFixed(0)} ms (max ${t.mapMax.toFixed(0)} ms)`);
    }
    Object.assign(results, { native, browser, ttfp, ratio, ratioStaged, writes, wasmMemory: mem });
    fs.writeFileSync(path.join(DIR, 'browser-bench.json'), JSON.stringify(results, null, 2));
    console.log(`\n(samples in ${path.relative(ROOT, path.join(DIR, 'browser-bench.json'))})`);
  } finally {
    await wb.close();
    stopServer();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
