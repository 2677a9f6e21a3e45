// Large images in the browser: an 8 GiB VirtualBox image opens without being read, a 4 TiB
// map is drawn aggregated, the engine's memory stays bounded, long exports cancel cleanly
// and a full browser storage gives a clear error.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  fixture, GiB, headerFields, MiB, openImage, openWorkbench, removeSavePicker, run, scratch, screenshot, stopServer,
  vdiCheckJson, vdiJson,
  mapSummary, hoverBlock,
} from './helpers.mjs';

const MEMORY_LIMIT = 64 * MiB;

async function diag(page) {
  await page.waitForFunction(() => document.querySelector('#cur-read').dataset.bytes !== undefined);
  return page.evaluate(() => ({
    read: Number(document.querySelector('#cur-read').dataset.bytes),
    memory: Number(document.querySelector('#cur-memory').dataset.bytes),
    headerMs: Number(document.documentElement.dataset.headerMs),
    mapMs: Number(document.documentElement.dataset.mapMs),
  }));
}

async function stagedFiles(page) {
  return page.evaluate(async () => {
    const out = [];
    for await (const [name] of (await navigator.storage.getDirectory()).entries()) if (name.startsWith('vdi-workbench-')) out.push(name);
    return out;
  });
}

describe('large images', () => {
  let wb;
  let page;
  let tmp;
  let vbox;

  before(async () => {
    tmp = scratch();
    vbox = fixture('3ext.vdi');
    wb = await openWorkbench();
    page = wb.page;
  });

  after(async () => {
    await wb?.close();
    tmp?.cleanup();
    stopServer();
  });

  test('an 8 GiB VirtualBox image: header and map without reading the file; memory stays small', async () => {
    const size = fs.statSync(vbox).size;
    assert.ok(size > 4 * GiB);
    // What opening alone reads is measured: the check the page runs as an image opens
    // (which reads the block map again) is turned off, as a user can.
    await page.uncheck('#auto-check');
    await openImage(page, vbox);
    const d = await diag(page);
    const info = vdiJson('info', '--json', vbox);
    assert.ok(info['virtual-size'] >= 8 * GiB);
    const f = await headerFields(page);
    assert.equal(f['virtual-size'].raw, String(info['virtual-size']));
    assert.equal(f.uuid.raw, info['format-specific'].data.uuid);
    // Header (512 bytes) and block map (4 bytes per block): nothing else was read.
    const mapBytes = info['format-specific'].data['blocks-in-image'] * 4;
    assert.ok(d.read <= 0x200 + mapBytes, `read ${d.read} bytes of a ${size}-byte file`);
    assert.ok(d.memory <= MEMORY_LIMIT, `wasm memory ${d.memory} bytes`);
    console.log(`# 8 GiB image: header after ${d.headerMs} ms, map after ${d.mapMs} ms, ${d.read} bytes read, wasm memory ${d.memory >> 20} MiB`);
    assert.ok(d.mapMs < 5000, `map shown after ${d.mapMs} ms`);

    const c = vdiCheckJson(vbox);
    const s = await mapSummary(page);
    assert.equal(Number(s.data), c['allocated-clusters']);
    assert.equal(Number(s.free), c['free-clusters']);
    assert.equal(Number(s.fragmented), c['fragmented-clusters']);

    // A block whose data lies past 4 GiB in the file.
    const bs = info['cluster-size'];
    const far = vdiJson('map', '--json', vbox).filter((e) => e.data && e.offset > 4 * GiB).pop();
    const block = far.start / bs;
    const { tip } = await hoverBlock(page, block);
    assert.equal(tip.block, String(block));
    assert.ok(tip.host.startsWith(`${far.offset} (`), `${tip.host} vs ${far.offset}`);
    await screenshot(page, 'large-8g-map', '#map-panel');

    await page.click('#check-run');
    await page.waitForSelector('#check-verdict:not([hidden])');
    const counts = await page.$$eval('#check-counts dd', (dds) => Object.fromEntries(dds.map((x) => [x.dataset.k, x.textContent])));
    assert.equal(Number(counts['allocated-clusters']), c['allocated-clusters']);
    assert.equal(await page.$$eval('#check-findings li.finding', (l) => l.length), c.findings.length);
    const d2 = await diag(page);
    assert.ok(d2.read <= 0x200 + 3 * mapBytes, `read ${d2.read} bytes after hover and check`);
    assert.ok(d2.memory <= MEMORY_LIMIT, `wasm memory ${d2.memory} bytes after check`);
  });

  test('a 4 TiB image with 4 million blocks: the map is aggregated and stays fast', async () => {
    const f = tmp.file('huge.vdi');
    run('qemu-img', ['create', '-q', '-f', 'vdi', f, '4T']);
    run('qemu-io', ['-f', 'vdi', '-c', 'write -P 1 0 1M', '-c', 'write -P 2 1T 1M', '-c', 'write -P 3 3T 2M', f]);
    await openImage(page, f);
    const d = await diag(page);
    const s = await mapSummary(page);
    const c = vdiCheckJson(f);
    assert.equal(Number(s.blocks), 4 * 1024 * 1024);
    assert.equal(Number(s.data), c['allocated-clusters']);
    assert.equal(Number(s.free), c['free-clusters']);
    assert.ok(d.memory <= MEMORY_LIMIT, `wasm memory ${d.memory}`);
    console.log(`# 4 TiB image (4 Mi blocks): map after ${d.mapMs} ms, wasm memory ${d.memory >> 20} MiB`);
    assert.ok(d.mapMs < 10000, `map shown after ${d.mapMs} ms`);
    const block = (1024 * 1024 * MiB) / MiB; // the block at 1 TiB
    const { geo, tip } = await hoverBlock(page, block);
    assert.ok(geo.per > 1, 'several blocks per cell');
    const first = Math.floor(block / geo.per) * geo.per;
    assert.equal(tip.block, `${first} – ${first + geo.per - 1}`);
    assert.match(tip.state, /^1 data, 0 zero, \d+ free$/);
    await screenshot(page, 'large-4t-map', '#map-panel');
    fs.rmSync(f);
  });

  test('a long check can be cancelled; the image stays open', async () => {
    // 64 TiB: a 256 MiB block map of 64 Mi entries.
    const f = tmp.file('map64t.vdi');
    run('qemu-img', ['create', '-q', '-f', 'vdi', f, '64T']);
    await openImage(page, f);
    const before = await mapSummary(page);
    await page.click('#check-run');
    await page.waitForSelector('#check-cancel:not([hidden])');
    await page.click('#check-cancel');
    await page.waitForFunction(() => /Check cancelled/.test(document.querySelector('#status').textContent), null, { timeout: 60000 });
    assert.equal(await page.$eval('#check-verdict', (e) => e.hidden), true, 'no verdict for a cancelled check');
    assert.equal(await page.$eval('#error', (e) => e.hidden), true);
    // The restarted worker has the same image open again.
    assert.equal(await page.$eval('#cur-name', (e) => e.textContent), 'map64t.vdi');
    const { tip } = await hoverBlock(page, 5);
    assert.equal(tip.state.split(',')[0].endsWith('0 data') || tip.state === 'free', true, JSON.stringify(tip));
    assert.deepEqual(await mapSummary(page), before);
    // And a check run to the end still works.
    await page.click('#check-run');
    await page.waitForSelector('#check-verdict:not([hidden])', { timeout: 120000 });
    const r = await page.$eval('#check-verdict', (e) => e.textContent);
    assert.match(r, /No errors/);
    fs.rmSync(f);
  });

  test('a long export can be cancelled and leaves nothing behind', async () => {
    await openImage(page, vbox);
    await removeSavePicker(page);
    let downloaded = false;
    page.on('download', () => { downloaded = true; });
    await page.click('#export-raw');
    await page.waitForFunction(() => {
      const p = document.querySelector('#export-progress');
      return !document.querySelector('#export-progress-row').hidden && p.value > 0.02;
    }, null, { timeout: 60000 });
    await page.click('#export-cancel');
    await page.waitForFunction(() => /cancelled/.test(document.querySelector('#status').textContent), null, { timeout: 30000 });
    assert.equal(downloaded, false);
    assert.deepEqual(await stagedFiles(page), []);
    assert.equal(await page.$eval('#error', (e) => e.hidden), true);
  });

  test('a full browser storage gives a clear error', async () => {
    const cdp = await wb.context.newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: wb.origin, quotaSize: 64 * MiB });
    try {
      await openImage(page, vbox);
      await removeSavePicker(page);
      await page.click('#export-raw');
      await page.waitForSelector('#error:not([hidden])', { timeout: 60000 });
      const e = await page.$eval('#error', (x) => ({ kind: x.dataset.kind, text: x.querySelector('#error-message').textContent }));
      assert.equal(e.kind, 'no-space');
      assert.match(e.text, /not enough browser storage/);
      assert.deepEqual(await stagedFiles(page), []);
      await screenshot(page, 'error-no-space', '#open');
    } finally {
      await cdp.send('Storage.overrideQuotaForOrigin', { origin: wb.origin });
    }
    assert.deepEqual(wb.foreignRequests(), []);
  });
});
