// A worker that dies or whose engine traps: the page notices, starts a fresh worker, reopens
// the image that was open, and says so in plain words. No test-only operation exists in the
// worker protocol; the faults are caused from inside the real worker through Playwright:
//   - an uncaught error: `worker.evaluate` schedules a throw in the worker's event loop;
//   - a wasm trap: the engine running out of memory. `worker.evaluate` imports the worker's
//     own wasm-bindgen module (the same instance: one module map per worker), grows its
//     WebAssembly.Memory to the largest size the browser allows, and the page then opens
//     the sample image, which the engine builds in memory: its allocation fails, and Rust
//     aborts, which in wasm is the `unreachable` instruction (a WebAssembly.RuntimeError,
//     exactly what any Rust panic is in this build). The instance is poisoned after that.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { headerFields, openImage, openWorkbench, run, scratch, screenshot, stopServer } from './helpers.mjs';

/** The error box as {kind, message}, or null. */
function errorBox(page) {
  return page.evaluate(() => {
    const box = document.querySelector('#error');
    return box.hidden ? null : { kind: box.dataset.kind, message: document.querySelector('#error-message').textContent };
  });
}

async function waitRestarts(page, n) {
  await page.waitForFunction((k) => Number(document.documentElement.dataset.workerRestarts ?? 0) >= k
    && /was reopened|could not be reopened/.test(document.querySelector('#error-message').textContent), n, { timeout: 60000 });
}

/** The live worker answers (a stats request). */
async function workerStats(page) {
  return page.evaluate(() => Promise.race([
    import('./core/bridge.js').then((m) => m.bridge.ops.stats()),
    new Promise((_, reject) => setTimeout(() => reject(new Error('the worker did not answer within 10 s')), 10000)),
  ]));
}

/** The page's current worker (the last one started). */
function liveWorker(page) {
  const ws = page.workers().filter((w) => w.url().endsWith('/worker.js'));
  assert.ok(ws.length >= 1, 'a worker is running');
  return ws[ws.length - 1];
}

describe('worker crash recovery', () => {
  let wb;
  let page;
  let tmp;
  let image;

  before(async () => {
    tmp = scratch();
    image = tmp.file('recovery.vdi');
    run('qemu-img', ['create', '-q', '-f', 'vdi', image, '8M']);
    run('qemu-io', ['-f', 'vdi', '-c', 'write -P 0x5a 1M 1M', image]);
    wb = await openWorkbench();
    page = wb.page;
  });

  after(async () => {
    await wb?.close();
    tmp?.cleanup();
    stopServer();
  });

  test('an uncaught error in the worker: a fresh worker, the image reopened, the user told', async () => {
    await openImage(page, image);
    const before = liveWorker(page);
    await before.evaluate(() => { setTimeout(() => { throw new Error('thrown inside the worker by the test'); }, 0); });
    await waitRestarts(page, 1);
    const e = await errorBox(page);
    assert.equal(e.kind, 'engine-crashed');
    assert.match(e.message, /^the engine stopped unexpectedly \(an uncaught error in the worker: .*thrown inside the worker by the test\) and was restarted; recovery\.vdi was reopened\./);
    await page.waitForFunction(() => /restarted/.test(document.querySelector('#status').textContent));
    // The old worker is gone; a new one serves the same image.
    await page.waitForFunction(() => true);
    assert.notEqual(liveWorker(page), before);
    const s = await workerStats(page);
    assert.ok(s.read && s.read.bytes > 0, 'the new worker has the image open (it has read from it)');
    assert.equal(await page.$eval('#cur-name', (el) => el.textContent), 'recovery.vdi');
    // And it works: Check runs on the reopened image.
    await page.click('#check-run');
    await page.waitForFunction(() => !document.querySelector('#check-verdict').hidden);
    assert.match(await page.$eval('#check-verdict', (el) => el.textContent), /No errors/);
  });

  test('a wasm trap (out of memory: Rust aborts with `unreachable`): the same recovery', async () => {
    await openImage(page, image);
    const w = liveWorker(page);
    const grown = await w.evaluate(async () => {
      const m = await import(new URL('pkg/vdi_wasm.js', self.location.href).href);
      const exports = await m.default(); // already initialised: the worker's own instance
      const mem = exports.memory;
      const from = mem.buffer.byteLength;
      for (let n = 65536; n >= 1; n = Math.floor(n / 2)) {
        for (;;) { try { mem.grow(n); } catch { break; } }
      }
      return { from, to: mem.buffer.byteLength };
    });
    assert.ok(grown.to > grown.from, `the memory grew from ${grown.from} to ${grown.to}`);
    await page.click('#sample');
    await waitRestarts(page, 2);
    const e = await errorBox(page);
    assert.equal(e.kind, 'engine-crashed');
    assert.match(e.message, /^the engine stopped unexpectedly \(RuntimeError: .+\) and was restarted; recovery\.vdi was reopened\./);
    await screenshot(page, 'recovery-after-trap', '#open');
    // The image open before the failed operation is open again, in a fresh engine.
    assert.notEqual(liveWorker(page), w);
    const s = await workerStats(page);
    assert.ok(s.memory < grown.to, `the new engine's memory (${s.memory}) is not the exhausted one`);
    const f = await headerFields(page);
    assert.equal(f['disk-size'].raw, String(8 * 1024 * 1024));
    // The fresh engine can do what failed: the sample opens now.
    await page.click('#sample');
    await page.waitForFunction(() => document.querySelector('#cur-name').textContent === 'sample.vdi' && document.documentElement.dataset.mapMs);
    assert.equal(await errorBox(page), null);
    assert.equal(wb.foreignRequests().length, 0);
  });
});
