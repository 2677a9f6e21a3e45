// Snapshot chains in the page, end to end in headless Chromium: a base and two snapshots
// made by `vdi` are dropped in shuffled order; the page must link them by UUID, draw them
// base first with a combined map, name the missing parent when the base is left out, and
// export the flattened raw disk (equal to what qemu-img reads from a plain image given the
// same writes, and to a model of those writes) and a flattened VDI that qemu-img accepts.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  MiB, openWorkbench, removeSavePicker, run, scratch, screenshot, sha256File, stopServer, stubSavePicker,
  opfsDigest, chunkedDigest, VDI, vdiJson, waitOpened,
} from './helpers.mjs';

const SIZE = 64 * MiB;

/** The writes of each layer: [offset, bytes] (zeros written over a parent's data become
 * ZERO entries in a snapshot; partial writes fill the rest of a new block from below). */
function plan() {
  const r = (n) => randomBytes(n);
  const z = (n) => Buffer.alloc(n);
  return {
    base: [[0, r(3 * MiB)], [10 * MiB + 777, r(5000)], [20 * MiB, r(2 * MiB)]],
    snap1: [[1 * MiB + 100, r(5000)], [2 * MiB, z(MiB)], [30 * MiB, r(MiB)], [21 * MiB + 4096, r(3000)]],
    snap2: [[512, r(4096)], [40 * MiB, r(2 * MiB)], [20 * MiB, z(MiB)], [30 * MiB + 1000, r(7000)]],
  };
}

function vdiWrite(tmp, image, writes, tag) {
  writes.forEach(([off, data], i) => {
    const f = tmp.file(`${tag}-${i}.bin`);
    fs.writeFileSync(f, data);
    run(VDI, ['write', '--offset', String(off), image, f]);
    fs.rmSync(f);
  });
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

async function waitChain(page, timeout = 60000) {
  await page.waitForFunction(() => document.documentElement.dataset.chainMs, null, { timeout });
}

async function resetChainFlag(page) {
  await page.evaluate(() => { delete document.documentElement.dataset.chainMs; delete document.documentElement.dataset.mapMs; });
}

async function pageError(page) {
  return page.$eval('#error', (e) => (e.hidden ? null : e.textContent));
}

async function chainView(page) {
  return page.evaluate(() => ({
    names: [...document.querySelectorAll('#chain-layers .layer-name')].map((e) => e.textContent),
    roles: [...document.querySelectorAll('#chain-layers .layer-role')].map((e) => e.textContent),
    uuids: [...document.querySelectorAll('#chain-layers dd[data-k=uuid]')].map((e) => e.textContent),
    parents: [...document.querySelectorAll('#chain-layers dd[data-k=parent-uuid]')].map((e) => e.textContent),
    supplied: [...document.querySelectorAll('#chain-layers p.layer-counts')].map((e) => Number(e.dataset.supplied)),
    own: [...document.querySelectorAll('#chain-layers p.layer-counts')].map((e) => ({ data: Number(e.dataset.data), zero: Number(e.dataset.zero) })),
    legend: [...document.querySelectorAll('#chain-legend .key')].map((e) => e.textContent),
    layersShown: Number(document.querySelector('#chain-combined').dataset.layersShown),
    open: document.querySelector('#chain-panel').classList.contains('open'),
  }));
}

/** The combined canvas: how many cells have each layer's colour. */
async function combinedColours(page, colours) {
  return page.evaluate((cols) => {
    const c = document.querySelector('#chain-combined');
    const ctx = c.getContext('2d');
    const n = Number(c.dataset.cells);
    const perRow = Number(c.dataset.cols);
    const cell = c.width / perRow;
    const counts = cols.map(() => 0);
    for (let i = 0; i < n; i++) {
      const x = Math.floor((i % perRow) * cell + cell / 3);
      const y = Math.floor(Math.floor(i / perRow) * cell + cell / 3);
      const [r, g, b] = ctx.getImageData(x, y, 1, 1).data;
      cols.forEach((col, k) => { if (col[0] === r && col[1] === g && col[2] === b) counts[k] += 1; });
    }
    return counts;
  }, colours);
}

describe('snapshot chains', () => {
  let wb;
  let page;
  let tmp;
  const img = {};
  let model;
  let refRaw;

  before(async () => {
    tmp = scratch('vdi-e2e-chain-');
    const p = plan();
    img.base = tmp.file('base.vdi');
    img.snap1 = tmp.file('snap1.vdi');
    img.snap2 = tmp.file('snap2.vdi');
    run(VDI, ['create', img.base, String(SIZE)]);
    vdiWrite(tmp, img.base, p.base, 'b');
    run(VDI, ['create', '--parent', img.base, img.snap1]);
    vdiWrite(tmp, img.snap1, p.snap1, 's1');
    run(VDI, ['create', '--parent', img.snap1, img.snap2]);
    vdiWrite(tmp, img.snap2, p.snap2, 's2');
    // The same writes into one plain image, read back by qemu-img.
    const ref = tmp.file('ref.vdi');
    run(VDI, ['create', ref, String(SIZE)]);
    vdiWrite(tmp, ref, [...p.base, ...p.snap1, ...p.snap2], 'r');
    refRaw = tmp.file('ref.raw');
    run('qemu-img', ['convert', '-f', 'vdi', '-O', 'raw', ref, refRaw]);
    // And a model: the writes applied to a plain buffer.
    model = Buffer.alloc(SIZE);
    for (const [off, data] of [...p.base, ...p.snap1, ...p.snap2]) data.copy(model, off);
    wb = await openWorkbench();
    page = wb.page;
  });

  after(async () => {
    await wb?.close();
    tmp?.cleanup();
    stopServer();
  });

  test('the reference raw disk and the model agree (the oracle itself)', async () => {
    assert.equal(await sha256File(refRaw), sha256(model));
  });

  test('three images picked in shuffled order are drawn base first, with a combined map', async () => {
    await resetChainFlag(page);
    await page.setInputFiles('#file-input', [img.snap1, img.base, img.snap2]);
    await waitChain(page);
    assert.equal(await pageError(page), null);
    await waitOpened(page); // the top layer in the single-image panels
    const v = await chainView(page);
    assert.ok(v.open);
    assert.deepEqual(v.names, ['base.vdi', 'snap1.vdi', 'snap2.vdi']);
    assert.deepEqual(v.roles, ['base', 'snapshot 1', 'top']);
    const info = (f) => vdiJson('info', '--json', f)['format-specific'].data;
    const [b, s1, s2] = [info(img.base), info(img.snap1), info(img.snap2)];
    assert.deepEqual(v.uuids, [b.uuid, s1.uuid, s2.uuid]);
    assert.deepEqual(v.parents, ['none (base image)', b.uuid, s1.uuid]);
    // Blocks each layer supplies to the disk, from `vdi map --json` of the top (depth 0 = top).
    const want = [0, 0, 0];
    for (const e of vdiJson('map', '--json', img.snap2)) {
      if (e.data && !e.zero) want[2 - e.depth] += e.length / MiB;
    }
    assert.deepEqual(v.supplied, want);
    assert.deepEqual(v.supplied, [1, 2, 4], 'base: block 10; snap1: 1, 21; snap2: 0, 30, 40, 41');
    // Each layer's own map: data and ZERO entries as written.
    assert.deepEqual(v.own, [{ data: 6, zero: 0 }, { data: 3, zero: 1 }, { data: 4, zero: 1 }]);
    assert.equal(v.layersShown, 3);
    assert.match(v.legend[0], /^base\.vdi: 1 block/);
    assert.match(v.legend[2], /^snap2\.vdi: 4 blocks/);
    // The canvas really shows each layer's colour in the cells it supplies.
    const colours = await page.evaluate(async () => (await import('./core/cells.js')).LAYER_COLORS.slice(0, 3));
    assert.deepEqual(await combinedColours(page, colours), [1, 2, 4]);
    // The header panel shows the top, and says it is the top of the chain.
    assert.equal(await page.$eval('#cur-name', (e) => e.textContent), 'snap2.vdi');
    assert.equal(await page.$eval('#diff-notice', (e) => e.dataset.kind), 'top');
    const shot = await screenshot(page, 'chain', '#chain-panel');
    assert.ok(fs.existsSync(shot));
  });

  test('a drop of the three files (synthetic DataTransfer, shuffled) opens the same chain', async () => {
    await page.evaluate(() => { document.querySelector('#chain-layers').replaceChildren(); });
    await page.evaluate(() => {
      const i = document.createElement('input');
      i.type = 'file'; i.multiple = true; i.id = 'e2e-drop-source'; i.hidden = true;
      document.body.append(i);
    });
    await page.setInputFiles('#e2e-drop-source', [img.snap2, img.base, img.snap1]);
    await resetChainFlag(page);
    await page.evaluate(() => {
      const dt = new DataTransfer();
      for (const f of document.querySelector('#e2e-drop-source').files) dt.items.add(f);
      document.querySelector('#drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
      document.querySelector('#e2e-drop-source').remove();
    });
    await waitChain(page);
    assert.equal(await pageError(page), null);
    await waitOpened(page);
    assert.deepEqual((await chainView(page)).names, ['base.vdi', 'snap1.vdi', 'snap2.vdi']);
  });

  test('a VM folder picked with the folder button: only its .vdi files, subfolders included', async () => {
    const vm = tmp.file('vm');
    fs.mkdirSync(`${vm}/Snapshots`, { recursive: true });
    fs.copyFileSync(img.base, `${vm}/base.vdi`);
    fs.copyFileSync(img.snap1, `${vm}/Snapshots/snap1.vdi`);
    fs.copyFileSync(img.snap2, `${vm}/Snapshots/snap2.vdi`);
    fs.writeFileSync(`${vm}/notes.txt`, 'not an image');
    fs.writeFileSync(`${vm}/Logs.log`, 'not an image either');
    await resetChainFlag(page);
    await page.setInputFiles('#folder-input', vm);
    await waitChain(page);
    assert.equal(await pageError(page), null);
    await waitOpened(page);
    assert.deepEqual((await chainView(page)).names, ['base.vdi', 'snap1.vdi', 'snap2.vdi']);
    fs.rmSync(vm, { recursive: true });
  });

  test('the two snapshots without the base: the message names the UUID needed and the file', async () => {
    await resetChainFlag(page);
    await page.setInputFiles('#file-input', [img.snap2, img.snap1]);
    await waitChain(page);
    const err = await pageError(page);
    const baseUuid = vdiJson('info', '--json', img.base)['format-specific'].data.uuid;
    assert.ok(err, 'an error is shown');
    assert.ok(err.includes(baseUuid), `the message names the base's UUID: ${err}`);
    assert.match(err, /snap1\.vdi/);
    assert.match(err, /missing/);
    assert.equal(await page.$eval('#error', (e) => e.dataset.kind), 'missing-parent');
    assert.equal((await chainView(page)).open, false, 'no half chain is drawn');
  });

  test('unrelated images: the message lists the separate chains', async () => {
    const other = tmp.file('other.vdi');
    run(VDI, ['create', other, String(SIZE)]);
    await resetChainFlag(page);
    await page.setInputFiles('#file-input', [img.snap1, other, img.base]);
    await waitChain(page);
    const err = await pageError(page);
    assert.match(err, /do not form one chain but 2/);
    assert.match(err, /“base\.vdi” → “snap1\.vdi”/);
    assert.match(err, /“other\.vdi”/);
    fs.rmSync(other);
  });

  test('one snapshot alone says it is a snapshot and which parent it needs; the header still shows', async () => {
    await page.evaluate(() => { delete document.documentElement.dataset.mapMs; });
    await page.setInputFiles('#file-input', img.snap1);
    await waitOpened(page);
    const baseUuid = vdiJson('info', '--json', img.base)['format-specific'].data.uuid;
    const n = await page.$eval('#diff-notice', (e) => ({ hidden: e.hidden, text: e.textContent, kind: e.dataset.kind }));
    assert.equal(n.hidden, false);
    assert.equal(n.kind, 'needs-parent');
    assert.ok(n.text.includes(baseUuid), n.text);
    assert.match(n.text, /snapshot/);
    assert.match(n.text, /Drop the parent/);
    assert.equal(await page.$eval('#header-table tr[data-field=image-type] .raw', (e) => e.textContent), 'diff');
    await screenshot(page, 'chain-single-diff', '#open');
    // A plain image clears the notice.
    await page.evaluate(() => { delete document.documentElement.dataset.mapMs; });
    await page.setInputFiles('#file-input', img.base);
    await waitOpened(page);
    assert.equal(await page.$eval('#diff-notice', (e) => e.hidden), true);
  });

  test('flattened raw export equals qemu-img of the same writes (download, and save dialog)', async () => {
    await resetChainFlag(page);
    await page.setInputFiles('#file-input', [img.base, img.snap2, img.snap1]);
    await waitChain(page);
    await waitOpened(page);
    await removeSavePicker(page);
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#chain-export-raw')]);
    assert.equal(dl.suggestedFilename(), 'snap2-flat.raw');
    const got = tmp.file('page.raw');
    await dl.saveAs(got);
    await page.waitForFunction(() => !document.querySelector('#chain-export-result').hidden);
    assert.equal(fs.statSync(got).size, SIZE);
    const hash = await sha256File(got);
    assert.equal(hash, await sha256File(refRaw), 'the page\'s flattened raw disk equals qemu-img\'s raw of the same writes');
    // The CLI's flattened export agrees too.
    const cli = tmp.file('cli.raw');
    run(VDI, ['convert', '-O', 'raw', img.snap2, cli]);
    assert.equal(await sha256File(cli), hash);
    // Through a save dialog (a writable stream into the file it returns).
    await stubSavePicker(page, 'e2e-chain.raw');
    await page.click('#chain-export-raw');
    await page.waitForFunction(() => /Saved/.test(document.querySelector('#chain-export-result').textContent) || !document.querySelector('#error').hidden);
    assert.equal(await pageError(page), null);
    assert.deepEqual(await opfsDigest(page, 'e2e-chain.raw'), await chunkedDigest(refRaw));
    await page.evaluate(async () => (await navigator.storage.getDirectory()).removeEntry('e2e-chain.raw'));
    for (const f of [got, cli]) fs.rmSync(f);
  });

  test('flattened VDI: qemu-img check is clean and it compares equal to the raw disk', async () => {
    await removeSavePicker(page);
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#chain-export-vdi')]);
    assert.equal(dl.suggestedFilename(), 'snap2-flat.vdi');
    const got = tmp.file('page-flat.vdi');
    await dl.saveAs(got);
    await page.waitForFunction(() => !document.querySelector('#chain-export-result').hidden);
    run('qemu-img', ['check', '-f', 'vdi', got]);
    run('qemu-img', ['compare', '-f', 'vdi', '-F', 'raw', got, refRaw]);
    const q = JSON.parse(run('qemu-img', ['info', '--output=json', '-f', 'vdi', got]));
    assert.equal(q['virtual-size'], SIZE);
    const info = vdiJson('info', '--json', got)['format-specific'].data;
    assert.equal(info['image-type'], 'dynamic');
    assert.equal(info['block-size'], MiB);
    // Only blocks with non-zero data are stored: 7 supplied blocks (ZERO and FREE ones are not).
    assert.equal(info['blocks-allocated'], 7);
    // Through a save dialog as well.
    await stubSavePicker(page, 'e2e-chain.vdi');
    await page.click('#chain-export-vdi');
    await page.waitForFunction(() => /Saved/.test(document.querySelector('#chain-export-result').textContent) || !document.querySelector('#error').hidden);
    assert.equal(await pageError(page), null);
    const saved = await opfsDigest(page, 'e2e-chain.vdi');
    assert.equal(saved.size, fs.statSync(got).size);
    await page.evaluate(async () => (await navigator.storage.getDirectory()).removeEntry('e2e-chain.vdi'));
    fs.rmSync(got);
  });

  test('cancelled flattened exports stop and leave nothing staged', async () => {
    // The cancel is sent in the same tick as the job, so it is seen before the job ends.
    for (const op of ['chainExportVdi', 'chainExportRaw']) {
      const r = await page.evaluate(async (o) => {
        const { bridge } = await import('./core/bridge.js');
        const ctl = new AbortController();
        const job = bridge.call(o, { target: { kind: 'opfs' }, name: 'e2e-cancel-flat.bin' }, { signal: ctl.signal });
        ctl.abort();
        try { await job; return 'finished'; } catch (e) { return e.kind; }
      }, op);
      assert.equal(r, 'cancelled', op);
    }
    const staged = await page.evaluate(async () => {
      const out = [];
      for await (const [name] of (await navigator.storage.getDirectory()).entries()) out.push(name);
      return out.filter((n) => n.includes('e2e-cancel-flat'));
    });
    assert.deepEqual(staged, [], 'no partial file is left in browser storage');
    // The chain is still open and exports after a cancel.
    await removeSavePicker(page);
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#chain-export-raw')]);
    const got = tmp.file('again.raw');
    await dl.saveAs(got);
    assert.equal(await sha256File(got), await sha256File(refRaw));
    fs.rmSync(got);
  });

  test('after the worker restarts (a cancelled check) the chain is reopened for an export', async () => {
    await page.evaluate(async () => (await import('./core/bridge.js')).bridge.restart());
    await removeSavePicker(page);
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#chain-export-raw')]);
    const got = tmp.file('restarted.raw');
    await dl.saveAs(got);
    assert.equal(await sha256File(got), await sha256File(refRaw));
    fs.rmSync(got);
  });

  test('on a phone-width screen nothing overflows sideways', async () => {
    await page.setViewportSize({ width: 360, height: 780 });
    await page.waitForTimeout(400); // the maps are redrawn after a resize
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `no sideways scrolling (overflow ${overflow}px)`);
    const wide = await page.evaluate(() => [...document.querySelectorAll('#chain-panel *')]
      .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1).map((e) => e.id || e.className));
    assert.deepEqual(wide, []);
    await screenshot(page, 'phone-chain', '#chain-panel');
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  test('no request left the origin and nothing was logged as an error', async () => {
    assert.deepEqual(wb.foreignRequests(), []);
    assert.deepEqual(wb.consoleErrors, []);
  });
});
