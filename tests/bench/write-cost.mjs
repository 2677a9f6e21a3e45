#!/usr/bin/env node
// What one write to a browser file costs (a benchmark, not a test): the figures behind the
// page's export design (docs/benchmarks.md, "Browser"). In headless Chromium, on the
// workbench's origin, 1 GiB is written into an OPFS file through a writable stream — the
// same `FileSystemWritableFileStream` the save dialog gives — in writes of 1, 4, 16 and
// 32 MiB at scattered positions, once from an ArrayBuffer and once as Blob slices of a File;
// and the same File is read with `slice().arrayBuffer()` in the same piece sizes (the
// export's reads). Each configuration runs --reps times, alternated; min and median.
//
// usage: node tests/bench/write-cost.mjs [--reps N]   (after `cargo xtask build-wasm`)

import { MiB, GiB, openWorkbench, stopServer } from '../e2e/helpers.mjs';

const args = process.argv.slice(2);
const REPS = args[0] === '--reps' ? Number(args[1]) : 3;
if (!(REPS >= 1)) throw new Error('--reps needs a positive number');

const TOTAL = GiB;
const PIECES = [1, 4, 16, 32].map((m) => m * MiB);
const MODES = ['stream from memory', 'stream from a File (Blob)', 'read a File'];

const wb = await openWorkbench();
const { page, context } = wb;
try {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: wb.origin, quotaSize: 64 * GiB });
  // The source: a 1 GiB OPFS file of non-zero bytes.
  await page.evaluate(async (total) => {
    const dir = await navigator.storage.getDirectory();
    const fh = await dir.getFileHandle('write-cost.src', { create: true });
    const w = await fh.createWritable();
    const buf = new Uint8Array(32 << 20).fill(7);
    for (let p = 0; p < total; p += buf.length) await w.write(buf);
    await w.close();
  }, TOTAL);
  const samples = {};
  for (let r = 0; r < REPS; r++) {
    const order = [];
    for (const mode of MODES) for (const piece of PIECES) order.push([mode, piece]);
    for (const [mode, piece] of r % 2 ? order.reverse() : order) {
      const ms = await page.evaluate(async ({ mode, piece, total }) => {
        const dir = await navigator.storage.getDirectory();
        const src = await (await dir.getFileHandle('write-cost.src')).getFile();
        const n = total / piece;
        const t0 = performance.now();
        if (mode === 'read a File') {
          const q = [];
          for (let i = 0; i < n; i++) {
            q.push(src.slice(i * piece, (i + 1) * piece).arrayBuffer());
            if (q.length >= 3) await q.shift();
          }
          await Promise.all(q);
          return performance.now() - t0;
        }
        const fh = await dir.getFileHandle('write-cost.out', { create: true });
        const w = await fh.createWritable({ keepExistingData: false });
        const span = 4 * total; // positions scattered over 4 GiB, as an export's are
        await w.truncate(span);
        const buf = new Uint8Array(piece).fill(9);
        const q = [];
        for (let i = 0; i < n; i++) {
          const position = ((i * 2654435761) % (span / piece)) * piece;
          const data = mode === 'stream from memory' ? buf : src.slice(i * piece, (i + 1) * piece);
          q.push(w.write({ type: 'write', position, data }));
          if (q.length > 8) await q.shift();
        }
        await Promise.all(q);
        const ms = performance.now() - t0;
        await w.close();
        await dir.removeEntry('write-cost.out');
        return ms;
      }, { mode, piece, total: TOTAL });
      (samples[`${mode}\t${piece}`] ??= []).push(ms);
      console.error(`write-cost: ${mode}, ${piece / MiB} MiB pieces: ${ms.toFixed(0)} ms`);
    }
  }
  await page.evaluate(async () => (await navigator.storage.getDirectory()).removeEntry('write-cost.src'));
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`\n1 GiB in pieces, headless Chromium, ${REPS} repetitions alternated (min / median):`);
  console.log(`  ${'what'.padEnd(28)} ${'piece'.padStart(6)} ${'calls'.padStart(6)} ${'min'.padStart(8)} ${'median'.padStart(8)} ${'per call'.padStart(9)} ${'GB/s'.padStart(6)}`);
  for (const mode of MODES) {
    for (const piece of PIECES) {
      const xs = samples[`${mode}\t${piece}`];
      const n = TOTAL / piece;
      const mn = Math.min(...xs);
      console.log(`  ${mode.padEnd(28)} ${`${piece / MiB}M`.padStart(6)} ${String(n).padStart(6)} ${`${mn.toFixed(0)}ms`.padStart(8)} ${`${med(xs).toFixed(0)}ms`.padStart(8)} ${`${(mn / n).toFixed(2)}ms`.padStart(9)} ${(TOTAL / 1e9 / (mn / 1000)).toFixed(2).padStart(6)}`);
    }
  }
} finally {
  await wb.close();
  stopServer();
}
