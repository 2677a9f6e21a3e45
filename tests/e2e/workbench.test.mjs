// The workbench end to end, in headless Chromium: open images made by qemu-img and
// VirtualBox, compare what the page shows with `vdi` and `qemu-img`, export, create, check.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  chunkedDigest, fixture, headerFields, MiB, openImage, openWorkbench, opfsDigest, qemuInfo, removeSavePicker, run,
  scratch, screenshot, sha256File, stopServer, stubSavePicker, vdiCheckJson, vdiJson, waitOpened,
  mapSummary, hoverBlock, VDI, writePattern,
} from './helpers.mjs';
import {
  corruptedImage, dynamicImage, oddSizeImage, staticImage, unalignedSizeImage, v0Image, XSS, xssImage,
} from './images.mjs';

/** What the page shows in a header row's value cell for a `vdi info --json` value. */
function shown(v) {
  if (v === null) return 'none';
  if (typeof v === 'object') return `cylinders ${v.cylinders}, heads ${v.heads}, sectors ${v.sectors}, sector size ${v['sector-size']}`;
  if (typeof v === 'string') {
    return v.replace(/[\\\u0000-\u001f\u007f]/g, (c) => ({ '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' })[c]
      ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  }
  return String(v);
}

async function readDiag(page) {
  return page.evaluate(() => ({
    read: Number(document.querySelector('#cur-read').dataset.bytes),
    memory: Number(document.querySelector('#cur-memory').dataset.bytes),
  }));
}

async function waitResult(page, sel, timeout = 120000) {
  await page.waitForFunction((s) => !document.querySelector(s).hidden || !document.querySelector('#error').hidden, sel, { timeout });
  const err = await page.$eval('#error', (e) => (e.hidden ? null : e.textContent));
  if (err) throw new Error(`the page shows an error: ${err}`);
  return page.$eval(sel, (e) => e.textContent);
}

async function removeOpfs(page, name) {
  await page.evaluate(async (n) => (await navigator.storage.getDirectory()).removeEntry(n).catch(() => {}), name);
}

describe('workbench', () => {
  let wb;
  let page;
  let tmp;
  const img = {};

  before(async () => {
    tmp = scratch();
    img.dynamic = dynamicImage(tmp.dir);
    img.static = staticImage(tmp.dir);
    img.odd = oddSizeImage(tmp.dir);
    img.unaligned = unalignedSizeImage(tmp.dir);
    img.corrupt = corruptedImage(tmp.dir);
    img.xss = xssImage(tmp.dir);
    img.v0 = v0Image(tmp.dir);
    img.vbox = fixture('3hfs.vdi');
    wb = await openWorkbench();
    page = wb.page;
  });

  after(async () => {
    await wb?.close();
    tmp?.cleanup();
    stopServer();
  });

  test('the development server: cross-origin isolated, no service worker (the page says both)', async () => {
    const m = await page.evaluate(async () => ({
      isolated: document.documentElement.dataset.isolated,
      offline: document.documentElement.dataset.offline,
      build: document.documentElement.dataset.build,
      text: document.querySelector('.app-mode').textContent,
      registrations: (await navigator.serviceWorker.getRegistrations()).length,
      coi: globalThis.crossOriginIsolated,
    }));
    assert.deepEqual([m.isolated, m.offline, m.build, m.registrations, m.coi], ['yes', 'dev', 'dev', 0, true]);
    assert.match(m.text, /Development server: no offline copy.*Cross-origin isolated/);
  });

  test('the sample image fills every panel', async () => {
    await page.click('#sample');
    await waitOpened(page);
    const f = await headerFields(page);
    assert.equal(f['disk-size'].raw, String(128 * MiB));
    assert.match(f.comment.raw, /Sample image/);
    const s = await mapSummary(page);
    assert.deepEqual([s.blocks, s.data, s.zero, s.free], ['128', '23', '7', '98']);
    const d = await readDiag(page);
    assert.ok(d.memory <= 64 * MiB, `the 25 MiB sample keeps wasm memory at ${d.memory} bytes`);
    await page.click('#check-run');
    assert.match(await waitResult(page, '#check-verdict'), /No errors/);
    for (const p of ['open', 'header-panel', 'map-panel', 'check-panel', 'export-panel', 'create-panel']) {
      await screenshot(page, `sample-${p}`, `#${p}`);
    }
    await page.check('input[name=map-view][value=position]');
    await screenshot(page, 'sample-map-by-position', '#map-panel');
    await page.check('input[name=map-view][value=state]');
    assert.equal(wb.consoleErrors.length, 0, wb.consoleErrors.join('\n'));
  });

  for (const name of ['dynamic', 'static', 'odd', 'unaligned', 'vbox', 'v0']) {
    test(`${name}: every header field equals vdi info --json and qemu-img info`, async () => {
      await openImage(page, img[name]);
      const fields = await headerFields(page);
      const info = vdiJson('info', '--json', img[name]);
      const data = info['format-specific'].data;
      assert.ok(Object.keys(data).length >= 20);
      for (const [k, v] of Object.entries(data)) {
        assert.ok(fields[k], `the page shows ${k}`);
        assert.equal(fields[k].raw, shown(v), `field ${k}`);
      }
      assert.equal(fields['virtual-size'].raw, String(info['virtual-size']));
      assert.equal(fields['cluster-size'].raw, String(info['cluster-size']));
      assert.equal(fields['file-length'].raw, String(fs.statSync(img[name]).size));
      const notes = await page.$$eval('#notes li', (li) => li.map((l) => l.textContent));
      for (const n of info.notes) assert.ok(notes.includes(n), `note ${n} in ${notes}`);
      if (name === 'v0') {
        // qemu-img does not open v0.2 images; the page says what is special about it.
        assert.equal(fields.version.raw, '0.2');
        assert.match(fields.version.note, /legacy v0\.2/);
        assert.ok(notes.some((n) => /v0\.2/.test(n)), notes.join('\n'));
      } else {
        const q = qemuInfo(img[name]);
        assert.equal(Number(fields['virtual-size'].raw), q['virtual-size']);
        if (q['cluster-size']) assert.equal(Number(fields['cluster-size'].raw), q['cluster-size']);
      }
      if (name === 'unaligned') {
        assert.ok(fields['disk-size'].note, 'an odd disk size is pointed out');
        assert.match(fields['disk-size'].note, /not a multiple of 512/);
      }
      if (name === 'static') assert.equal(fields['image-type'].raw, 'fixed');
      if (name === 'vbox') assert.equal(fields['header-size'].raw, '400');
      await screenshot(page, `header-${name}`, '#header-panel');
    });
  }

  test('block map: counts equal the engine, hovering a block shows its offsets', async () => {
    for (const name of ['dynamic', 'static', 'vbox']) {
      await openImage(page, img[name]);
      const s = await mapSummary(page);
      const c = vdiCheckJson(img[name]);
      assert.equal(Number(s.blocks), c['total-clusters'], `${name} blocks`);
      assert.equal(Number(s.data), c['allocated-clusters'], `${name} data`);
      assert.equal(Number(s.zero), c['zero-clusters'], `${name} zero`);
      assert.equal(Number(s.free), c['free-clusters'], `${name} free`);
      assert.equal(Number(s.fragmented), c['fragmented-clusters'], `${name} fragmented`);
      const bs = vdiJson('info', '--json', img[name])['cluster-size'];
      const extents = vdiJson('map', '--json', img[name]);
      const data = extents.filter((e) => e.data);
      // A data block that is not the first of its extent (its own host offset is computed).
      const e = data.find((x) => x.length > bs) ?? data[data.length - 1];
      const block = e.start / bs + (e.length > bs ? 1 : 0);
      const tip = (await hoverBlock(page, block)).tip;
      assert.equal(tip.block, String(block));
      assert.equal(tip.state, 'data');
      const host = e.offset + (block * bs - e.start);
      assert.ok(tip.host.startsWith(`${host} (0x${host.toString(16)})`), `${name} block ${block}: ${tip.host} vs ${host}`);
      assert.ok(tip.virtual.startsWith(`${block * bs} (`), tip.virtual);
      const hole = extents.find((x) => !x.data);
      if (hole) {
        const t = (await hoverBlock(page, hole.start / bs)).tip;
        assert.equal(t.state, hole.state);
        assert.match(t.host, /none/);
      }
      await screenshot(page, `map-${name}`, '#map-panel');
    }
  });

  test('export raw (download fallback and save dialog) equals qemu-img convert', async () => {
    for (const name of ['dynamic', 'odd', 'static']) {
      const want = tmp.file(`${name}.qemu.raw`);
      run('qemu-img', ['convert', '-f', 'vdi', '-O', 'raw', img[name], want]);
      const wantHash = await sha256File(want);
      await openImage(page, img[name]);

      // No save dialog: staged in OPFS, then downloaded.
      await removeSavePicker(page);
      const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#export-raw')]);
      const got = tmp.file(`${name}.page.raw`);
      await dl.saveAs(got);
      assert.equal(dl.suggestedFilename(), `${name}.raw`);
      assert.equal(await sha256File(got), wantHash, `${name}: downloaded raw export`);
      await waitResult(page, '#export-result');

      // A save dialog: streamed into the writable file it returns.
      const opfsName = `e2e-${name}.raw`;
      await stubSavePicker(page, opfsName);
      await page.click('#export-raw');
      assert.match(await waitResult(page, '#export-result'), /Saved/);
      assert.deepEqual(await opfsDigest(page, opfsName), await chunkedDigest(want), `${name}: raw export via the save dialog`);
      await removeOpfs(page, opfsName);
      fs.rmSync(got);
      fs.rmSync(want);
    }
    await screenshot(page, 'export-panel', '#export-panel');
  });

  test('a save-dialog export writes pieces adjacent on the disk as one write', async () => {
    // 40 MiB written front to back (its blocks lie in the file in disk order), then three
    // lone blocks written back to front: host order gives them in decreasing disk order.
    const file = tmp.file('merge.vdi');
    run(VDI, ['create', file, '128M']);
    const data = tmp.file('merge.data');
    writePattern(data, 0, 40 * MiB, 3);
    run(VDI, ['write', '--offset', '0', file, data]);
    for (const block of [90, 70, 50]) {
      fs.rmSync(data);
      writePattern(data, 0, MiB, block);
      run(VDI, ['write', '--offset', String(block * MiB), file, data]);
    }
    const want = tmp.file('merge.qemu.raw');
    run('qemu-img', ['convert', '-f', 'vdi', '-O', 'raw', file, want]);
    await openImage(page, file);
    await stubSavePicker(page, 'e2e-merge.raw');
    await page.click('#export-raw');
    assert.match(await waitResult(page, '#export-result'), /Saved/);
    assert.deepEqual(await opfsDigest(page, 'e2e-merge.raw'), await chunkedDigest(want), 'merged export');
    // 32 MiB + 8 MiB (the largest merged write is 32 MiB), then one write per lone block.
    assert.equal(await page.$eval('#export-result', (e) => e.dataset.writes), '5');
    await removeOpfs(page, 'e2e-merge.raw');
    for (const f of [file, data, want]) fs.rmSync(f);
  });

  test('the sample (in memory) exports the same disk as qemu-img reads from its saved image', async () => {
    await page.click('#sample');
    await waitOpened(page);
    await removeSavePicker(page);
    const [dlImage] = await Promise.all([page.waitForEvent('download'), page.click('#export-image')]);
    const image = tmp.file('sample.vdi');
    await dlImage.saveAs(image);
    await waitResult(page, '#export-result');
    run('qemu-img', ['check', '-f', 'vdi', image]);
    const [dlRaw] = await Promise.all([page.waitForEvent('download'), page.click('#export-raw')]);
    const raw = tmp.file('sample.raw');
    await dlRaw.saveAs(raw);
    const want = tmp.file('sample.qemu.raw');
    run('qemu-img', ['convert', '-f', 'vdi', '-O', 'raw', image, want]);
    assert.equal(await sha256File(raw), await sha256File(want));
    for (const f of [image, raw, want]) fs.rmSync(f);
  });

  test('the image file itself can be saved back', async () => {
    await openImage(page, img.dynamic);
    await removeSavePicker(page);
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#export-image')]);
    const got = tmp.file('copy.vdi');
    await dl.saveAs(got);
    assert.equal(await sha256File(got), await sha256File(img.dynamic));
    await stubSavePicker(page, 'e2e-copy.vdi');
    await page.click('#export-image');
    await waitResult(page, '#export-result');
    assert.deepEqual(await opfsDigest(page, 'e2e-copy.vdi'), await chunkedDigest(img.dynamic));
    await removeOpfs(page, 'e2e-copy.vdi');
  });

  test('create from the page: qemu-img check passes and qemu-img info agrees', async () => {
    const cases = [
      { size: '20M', bytes: 20 * MiB, kind: 'fixed', layout: 'qemu', comment: 'fixed from the page' },
      { size: '3G', bytes: 3 * 1024 * MiB, kind: 'dynamic', layout: 'vbox', comment: XSS },
    ];
    for (const c of cases) {
      await removeSavePicker(page);
      await page.fill('#create-size', c.size);
      await page.check(`input[name=kind][value=${c.kind}]`);
      await page.selectOption('#create-layout', c.layout);
      await page.fill('#create-comment', c.comment);
      const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#create-run')]);
      const file = tmp.file(`created-${c.kind}.vdi`);
      await dl.saveAs(file);
      await waitResult(page, '#create-result');
      run('qemu-img', ['check', '-f', 'vdi', file]); // throws unless exit 0
      const q = qemuInfo(file);
      assert.equal(q['virtual-size'], c.bytes);
      assert.equal(q.format, 'vdi');
      const info = vdiJson('info', '--json', file);
      const d = info['format-specific'].data;
      assert.equal(d.comment, c.comment);
      assert.equal(d['image-type'], c.kind);
      assert.equal(d['header-size'], c.layout === 'qemu' ? 0x180 : 0x190);
      // The page now shows the new image: the same header as the saved file.
      const fields = await headerFields(page);
      for (const [k, v] of Object.entries(d)) assert.equal(fields[k].raw, shown(v), `created ${c.kind}: ${k}`);
      assert.equal(await page.$$eval('#header-table img, #header-table script', (e) => e.length), 0);
      const chk = vdiCheckJson(file);
      assert.equal(chk.corruptions + chk.leaks, 0);
    }
    // Through a save dialog: the image is built in memory and written to the chosen file.
    await stubSavePicker(page, 'e2e-created.vdi');
    await page.fill('#create-size', '64M');
    await page.check('input[name=kind][value=fixed]');
    await page.selectOption('#create-layout', 'vbox');
    await page.fill('#create-comment', 'via the save dialog');
    await page.click('#create-run');
    assert.match(await waitResult(page, '#create-result'), /saved/);
    const b64 = await page.evaluate(async () => {
      const f = await (await (await navigator.storage.getDirectory()).getFileHandle('e2e-created.vdi')).getFile();
      const b = new Uint8Array(await f.arrayBuffer());
      let s = '';
      for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, i + 8192));
      return btoa(s);
    });
    const file = tmp.file('created-dialog.vdi');
    fs.writeFileSync(file, Buffer.from(b64, 'base64'));
    run('qemu-img', ['check', '-f', 'vdi', file]);
    assert.equal(qemuInfo(file)['virtual-size'], 64 * MiB);
    assert.equal(vdiJson('info', '--json', file)['format-specific'].data.comment, 'via the save dialog');
    await removeOpfs(page, 'e2e-created.vdi');
    // The new image (in memory) is the open one: its raw export is its own disk.
    await removeSavePicker(page);
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#export-raw')]);
    const raw = tmp.file('created-dialog.raw');
    await dl.saveAs(raw);
    const want = tmp.file('created-dialog.qemu.raw');
    run('qemu-img', ['convert', '-f', 'vdi', '-O', 'raw', file, want]);
    assert.equal(await sha256File(raw), await sha256File(want));
    const [dl2] = await Promise.all([page.waitForEvent('download'), page.click('#export-image')]);
    const copy = tmp.file('created-dialog-copy.vdi');
    await dl2.saveAs(copy);
    assert.equal(await sha256File(copy), await sha256File(file), 'saving the image again gives the same file');
    for (const f of [raw, want, copy]) fs.rmSync(f);
    await screenshot(page, 'create-panel', '#create-panel');
  });

  test('create refuses bad options with a clear message', async () => {
    await page.fill('#create-size', '12 apples');
    assert.match(await page.$eval('#create-summary', (e) => e.textContent), /not a size/);
    await page.fill('#create-size', '1G');
    await page.fill('#create-comment', 'é'.repeat(200));
    assert.match(await page.$eval('#create-summary', (e) => e.textContent), /400 bytes/);
    await page.fill('#create-comment', '');
  });

  test('check lists every finding of a corrupted image', async () => {
    await openImage(page, img.corrupt);
    await page.click('#check-run');
    await waitResult(page, '#check-verdict');
    const want = vdiCheckJson(img.corrupt);
    assert.ok(want.findings.length >= 2);
    const got = await page.$$eval('#check-findings li.finding', (li) => li.map((l) => ({
      severity: l.dataset.severity, kind: l.dataset.kind,
      location: l.querySelector('.loc').textContent, message: l.querySelector('.msg').textContent,
    })));
    assert.deepEqual(got, want.findings);
    const verdict = await page.$eval('#check-verdict', (e) => ({ c: e.dataset.corruptions, l: e.dataset.leaks }));
    assert.deepEqual(verdict, { c: String(want.corruptions), l: String(want.leaks) });
    await screenshot(page, 'check-corrupted', '#check-panel');
  });

  test('HTML in a comment is shown as text: no element, no script', async () => {
    await page.evaluate(() => {
      window.__added = [];
      new MutationObserver((ms) => {
        for (const m of ms) for (const n of m.addedNodes) if (n.nodeType === 1 && /^(IMG|SCRIPT|IFRAME)$/.test(n.tagName)) window.__added.push(n.tagName);
      }).observe(document, { childList: true, subtree: true });
    });
    await openImage(page, img.xss);
    const f = await headerFields(page);
    assert.equal(f.comment.raw, XSS);
    const cell = await page.$eval('[data-field=comment] .raw', (td) => ({ children: td.children.length, text: td.textContent }));
    assert.deepEqual(cell, { children: 0, text: XSS });
    await page.waitForTimeout(300);
    assert.deepEqual(await page.evaluate(() => window.__added), []);
    assert.equal(await page.$$eval('img', (i) => i.length), 0);
    assert.deepEqual(wb.dialogs, []);
    await screenshot(page, 'header-xss', '#header-panel');
  });

  test('bad input gives a clear error and keeps the open image', async () => {
    await openImage(page, img.dynamic);
    const junk = tmp.file('junk.bin');
    fs.writeFileSync(junk, Buffer.alloc(4096, 0x42));
    await page.setInputFiles('#file-input', junk);
    await page.waitForSelector('#error:not([hidden])');
    const e = await page.$eval('#error', (x) => ({ kind: x.dataset.kind, text: x.querySelector('#error-message').textContent }));
    assert.deepEqual(e, { kind: 'bad-signature', text: 'not a VDI image: signature at offset 0x40 is 0x42424242, expected 0xbeda107f' });
    // The previous image is still open and still answers.
    assert.equal(await page.$eval('#cur-name', (x) => x.textContent), 'dynamic.vdi');
    assert.equal((await hoverBlock(page, 0)).tip.state, 'data');
    const short = tmp.file('short.vdi');
    fs.writeFileSync(short, fs.readFileSync(img.dynamic).subarray(0, 0x100));
    await page.setInputFiles('#file-input', short);
    await page.waitForFunction(() => document.querySelector('#error').dataset.kind === 'truncated');
    const empty = tmp.file('empty.vdi');
    fs.writeFileSync(empty, '');
    await page.setInputFiles('#file-input', empty);
    await page.waitForFunction(() => /0 bytes|file has 0/.test(document.querySelector('#error-message').textContent));
    await screenshot(page, 'error', '#open');
  });

  test('a real drop on the drop zone opens the image', async () => {
    const bytes = fs.readFileSync(img.xss).toString('base64');
    const dt = await page.evaluateHandle((b64) => {
      const bin = atob(b64);
      const u = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
      const d = new DataTransfer();
      d.items.add(new File([u], 'dropped.vdi'));
      return d;
    }, bytes);
    await page.evaluate(() => { delete document.documentElement.dataset.mapMs; });
    await page.dispatchEvent('#drop', 'dragover', { dataTransfer: dt });
    await page.dispatchEvent('#drop', 'drop', { dataTransfer: dt });
    await waitOpened(page);
    assert.equal(await page.$eval('#cur-name', (x) => x.textContent), 'dropped.vdi');
  });

  test('controls are reachable from the keyboard; the map answers arrow keys', async () => {
    await openImage(page, img.dynamic);
    await page.evaluate(() => { document.activeElement?.blur(); window.scrollTo(0, 0); });
    const seen = [];
    const focused = () => page.evaluate(() => {
      const a = document.activeElement;
      const style = a ? getComputedStyle(a) : null;
      return {
        id: a?.id || a?.getAttribute('name') || a?.tagName,
        role: a?.getAttribute('role'),
        view: a?.dataset?.view,
        outlined: !!style && style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0,
      };
    });
    const tab = async (n) => {
      for (let i = 0; i < n; i++) {
        await page.keyboard.press('Tab');
        const f = await focused();
        seen.push(f.id);
        if (f.role === 'tab') return f;
      }
      return null;
    };
    // The side panel (open controls) comes first, then the views' tablist: one tab stop.
    const first = await tab(40);
    assert.ok(first, `Tab reaches the views' tabs (seen: ${seen.join(' ')})`);
    assert.ok(first.outlined, 'the focused tab shows its focus');
    // Each view: arrow keys move along the tabs, Enter shows one, Tab goes into it.
    for (const view of ['map', 'check', 'export', 'create']) {
      await page.focus('[role=tab][aria-selected=true]');
      for (let i = 0; i < 12 && (await focused()).view !== view; i++) await page.keyboard.press('ArrowRight');
      assert.equal((await focused()).view, view, `the arrow keys reach the ${view} tab`);
      await page.keyboard.press('Enter');
      await page.waitForFunction((v) => document.documentElement.dataset.view === v && location.hash === `#${v}`, view);
      for (let i = 0; i < 25; i++) {
        await page.keyboard.press('Tab');
        const f = await focused();
        seen.push(f.id);
        if (f.id === 'BODY') break;
      }
    }
    for (const id of ['file-input', 'sample', 'map-canvas', 'check-run', 'export-raw', 'export-image', 'create-size', 'create-comment', 'create-run']) {
      assert.ok(seen.includes(id), `${id} is reachable with Tab (seen: ${seen.join(' ')})`);
    }
    // Back and forward move between the views the hash named.
    await page.goBack();
    await page.waitForFunction(() => document.documentElement.dataset.view === 'export');
    await page.goForward();
    await page.waitForFunction(() => document.documentElement.dataset.view === 'create');
    await page.focus('#map-canvas');
    await page.keyboard.press('Home');
    await page.keyboard.press('ArrowRight');
    await page.waitForFunction(() => document.querySelector('#map-tip').dataset.cell === '1' && !document.querySelector('#map-tip').hidden);
    const block = await page.$eval('#map-tip [data-k=block]', (e) => e.textContent);
    assert.equal(block, '1');
    await page.keyboard.press('Escape');
  });

  test('the overview: the verdict of the check run on open, the facts, the actions; views follow the URL hash', async () => {
    await page.goto(`${wb.url}#overview`);
    await page.waitForFunction(() => document.querySelector('#storage-text') !== null);
    await openImage(page, img.corrupt);
    await page.waitForFunction(() => document.querySelector('#ov-verdict').dataset.status === 'done');
    const want = vdiCheckJson(img.corrupt);
    const ov = await page.evaluate(() => ({
      verdict: document.querySelector('#ov-verdict').className,
      text: document.querySelector('#ov-verdict-text').textContent,
      facts: Object.fromEntries([...document.querySelectorAll('#ov-facts dd')].map((d) => [d.dataset.k, d.textContent])),
      actions: [...document.querySelectorAll('#ov-actions button')].map((b) => b.dataset.action),
      view: document.documentElement.dataset.view,
    }));
    assert.equal(ov.view, 'overview');
    assert.equal(ov.verdict, 'verdict bad');
    assert.equal(ov.text, `${want.corruptions} corruptions and ${want.leaks} leak${want.leaks === 1 ? '' : 's'} found.`);
    assert.equal(ov.facts.name, 'corrupt.vdi');
    assert.match(ov.facts.type, /^Dynamic/);
    assert.match(ov.facts['virtual-size'], /^64 MiB \(67108864 bytes\)$/);
    assert.match(ov.facts.allocation, /^7 blocks of 64 allocated/);
    assert.equal(ov.facts.depth, '1 (a single image)');
    for (const a of ['check', 'repair', 'export-raw', 'save-image', 'edit-copy', 'header', 'map']) assert.ok(ov.actions.includes(a), `${a} in ${ov.actions}`);
    // An action button shows its view (and a new history entry names it).
    await page.click('#ov-actions button[data-action=header]');
    await page.waitForFunction(() => location.hash === '#header' && !document.querySelector('#header-panel').hidden);
    assert.equal(await page.isHidden('#overview-panel'), true);
    await page.goBack();
    await page.waitForFunction(() => document.documentElement.dataset.view === 'overview' && !document.querySelector('#overview-panel').hidden);
    // A clean image checks clean; with the check on open turned off, the overview says so.
    await openImage(page, img.dynamic);
    await page.waitForFunction(() => document.querySelector('#ov-verdict').dataset.status === 'done');
    assert.equal(await page.textContent('#ov-verdict-text'), 'No errors were found on the image.');
    await page.uncheck('#auto-check');
    await openImage(page, img.static);
    assert.equal(await page.textContent('#ov-verdict-text'), 'Not checked yet.');
    await page.check('#auto-check');
    await screenshot(page, 'overview', '#overview-panel');
    assert.deepEqual(wb.consoleErrors, []);
  });

  test('dark theme from prefers-color-scheme', async () => {
    const bg = () => page.$eval('#overview-panel', (e) => getComputedStyle(e).backgroundColor);
    await page.emulateMedia({ colorScheme: 'light' });
    const light = await bg();
    await page.emulateMedia({ colorScheme: 'dark' });
    const dark = await bg();
    assert.equal(light, 'rgb(255, 255, 255)');
    assert.notEqual(dark, light);
    await screenshot(page, 'overview-dark', 'body');
    await page.emulateMedia({ colorScheme: 'light' });
  });

  test('readable on a phone-width window', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await openImage(page, img.vbox);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `no sideways scrolling (overflow ${overflow}px)`);
    for (const p of ['open', 'header-panel', 'map-panel']) await screenshot(page, `phone-${p}`, `#${p}`);
    // After the whole session (samples, exports, creations, a dozen images) the engine's
    // memory is still bounded.
    const d = await readDiag(page);
    assert.ok(d.memory <= 64 * MiB, `wasm memory after the session: ${d.memory} bytes`);
    console.log(`# wasm memory after the whole session: ${(d.memory / MiB).toFixed(1)} MiB`);
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  test('the Content-Security-Policy forbids remote loads, and wasm in the page itself', async () => {
    // In a browser of its own: these deliberate attempts must not mix with the request log
    // of the rest of the suite.
    const probe = await openWorkbench();
    try {
      const p = probe.page;
      const responses = [];
      const failed = [];
      p.on('response', (r) => responses.push(r.url()));
      p.on('requestfailed', (r) => failed.push([r.url(), r.failure()?.errorText]));
      const csp = await p.$eval('meta[http-equiv=Content-Security-Policy]', (m) => m.content);
      assert.match(csp, /default-src 'self'/);
      assert.match(csp, /connect-src 'self'/);
      assert.doesNotMatch(csp, /https?:|\*|unsafe-inline|unsafe-eval|wasm-unsafe-eval/);
      const r = await p.evaluate(async () => {
        const violations = [];
        document.addEventListener('securitypolicyviolation', (e) => violations.push(e.violatedDirective));
        const fetched = await fetch('https://example.com/x').then(() => 'loaded', (e) => e.name);
        const img = document.createElement('img');
        const loaded = await new Promise((res) => { img.onload = () => res('loaded'); img.onerror = () => res('blocked'); img.src = 'https://example.com/x.png'; });
        // The main thread never runs wasm: the page's policy does not even allow compiling it.
        const wasm = await WebAssembly.compile(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])).then(() => 'compiled', (e) => e.name);
        await new Promise((res) => setTimeout(res, 100));
        return { fetched, loaded, wasm, violations };
      });
      assert.equal(r.fetched, 'TypeError');
      assert.equal(r.loaded, 'blocked');
      assert.equal(r.wasm, 'CompileError');
      assert.ok(r.violations.includes('connect-src') && r.violations.includes('img-src'), r.violations.join());
      assert.deepEqual(responses.filter((u) => !u.startsWith(probe.origin)), [], 'nothing remote answered');
      for (const [u, why] of failed) assert.match(why ?? '', /csp|blocked/i, `${u} failed for ${why}`);
      // The page still works after all that.
      await p.click('#sample');
      await waitOpened(p);
    } finally {
      await probe.close();
    }
  });

  test('no request left the page\'s origin', () => {
    assert.ok(wb.requests.length > 3);
    assert.deepEqual(wb.foreignRequests(), []);
    assert.ok(wb.requests.some((u) => u.endsWith('.wasm')), 'the wasm was fetched from the origin');
  });
});
