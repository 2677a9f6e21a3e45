// The Edit panel end to end: an editable copy in OPFS, compact, resize, header fields,
// discard, write, repair, reclaiming what the guest deleted, and cancel, each result downloaded and judged by qemu-img and by
// the same operation run with the `vdi` command on a copy of the same file.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  headerFields, MiB, openImage, openWorkbench, removeSavePicker, run, scratch, screenshot, sha256File,
  stopServer, vdiCheckJson, vdiJson, VDI, writePattern,
} from './helpers.mjs';

/** Wait for the edit result (or an error) and return it with its data attributes. */
async function editResult(page, timeout = 180000) {
  await page.waitForFunction(() => !document.querySelector('#edit-result').hidden || !document.querySelector('#error').hidden,
    null, { timeout });
  const err = await page.$eval('#error', (e) => (e.hidden ? null : e.textContent));
  if (err) throw new Error(`the page shows an error: ${err}`);
  return page.$eval('#edit-result', (e) => ({ text: e.textContent, ...e.dataset }));
}

/** Click `button` and expect the page to refuse it with an error of `kind`; hide the error. */
async function refused(page, button, kind) {
  await page.evaluate(() => { document.querySelector('#edit-result').hidden = true; document.querySelector('#error').hidden = true; });
  await page.click(button);
  await page.waitForFunction(() => !document.querySelector('#edit-result').hidden || !document.querySelector('#error').hidden,
    null, { timeout: 30000 });
  const got = await page.$eval('#error', (e) => (e.hidden ? null : e.dataset.kind));
  assert.equal(got, kind, `${button}: ${await page.textContent('#edit-result')}`);
  await page.evaluate(() => { document.querySelector('#error').hidden = true; });
}

async function submit(page, button) {
  await page.evaluate(() => { document.querySelector('#edit-result').hidden = true; });
  await page.click(button);
  return editResult(page);
}

/** Save the edited image through the download fallback; returns the downloaded path. */
async function saveEdited(page, dir) {
  const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 180000 }), page.click('#edit-save')]);
  // Beside, not over, the original (which has the same name).
  fs.mkdirSync(`${dir}/saved`, { recursive: true });
  const file = `${dir}/saved/${dl.suggestedFilename()}`;
  await dl.saveAs(file);
  return file;
}

/** Close the editable copy and wait until the original file is open again, read-only. */
async function closeCopy(page) {
  await page.click('#edit-close');
  try {
    await page.waitForFunction(() => /read-only/.test(document.querySelector('#cur-backend').textContent)
      || !document.querySelector('#error').hidden, null, { timeout: 30000 });
  } finally {
    const err = await page.$eval('#error', (e) => (e.hidden ? null : e.textContent));
    if (err) throw new Error(`closing the copy: the page shows an error: ${err}`);
  }
  assert.match(await page.textContent('#cur-backend'), /read-only/, await page.textContent('#status'));
}

/** `qemu-img check` exit code and output (0 clean, 3 leaks only, 2 corruptions). */
function qemuCheck(file) {
  try {
    return { code: 0, out: run('qemu-img', ['check', '-f', 'vdi', file]) };
  } catch (e) {
    return { code: e.status, out: `${e.stdout}${e.stderr}` };
  }
}

function qemuCompare(image, raw) {
  run('qemu-img', ['compare', '-f', 'vdi', '-F', 'raw', image, raw]);
}

/** Run `vdi` on a file (exit code 0 expected). */
function vdi(...args) {
  return execFileSync(VDI, args, { encoding: 'utf8' });
}

describe('edit panel', () => {
  let s;
  let wb;
  before(async () => {
    s = scratch('vdi-e2e-edit-');
    wb = await openWorkbench();
    await removeSavePicker(wb.page);
  });
  after(async () => {
    await wb?.close();
    s?.cleanup();
    stopServer();
  });

  test('page is cross-origin isolated, so cancel can reach the engine while it runs', async () => {
    assert.equal(await wb.page.evaluate(() => globalThis.crossOriginIsolated), true);
  });

  test('compact, resize, header fields, discard, write on an OPFS copy: same bytes as the vdi command, clean in qemu-img', async () => {
    const { page } = wb;
    // A QEMU-layout image (map right before the data, so growing must move blocks) with
    // 24 MiB of data, three of its blocks overwritten with zeros (still allocated).
    const img = s.file('disk.vdi');
    const raw = s.file('disk.raw');
    vdi('create', '--layout', 'qemu', img, '64M');
    writePattern(raw, 0, 24 * MiB, 7);
    fs.truncateSync(raw, 64 * MiB);
    vdi('write', img, raw);
    const zeros = s.file('zeros.bin');
    fs.writeFileSync(zeros, Buffer.alloc(MiB));
    for (const b of [2, 9, 17]) vdi('write', img, zeros, '--offset', String(b * MiB));
    // The expected disk: the pattern with blocks 2, 9, 17 zeroed.
    const fd = fs.openSync(raw, 'r+');
    for (const b of [2, 9, 17]) fs.writeSync(fd, Buffer.alloc(MiB), 0, MiB, b * MiB);
    fs.closeSync(fd);
    qemuCompare(img, raw);
    assert.equal(vdiJson('info', '--json', img)['format-specific'].data['blocks-allocated'], 24);
    const originalHash = await sha256File(img);

    // The same edits by the command line, on a copy.
    const cli = s.file('cli.vdi');
    fs.copyFileSync(img, cli);
    const cliCompact = JSON.parse(vdi('compact', '--json', cli));

    await openImage(page, img);
    assert.equal(await page.isHidden('#edit-tools'), true, 'a dropped file is read-only: no edit tools before the copy');
    await page.click('#edit-copy');
    const copied = await editResult(page);
    assert.match(copied.text, /editable copy/);
    assert.match(await page.textContent('#cur-backend'), /OPFS/);
    assert.equal(await page.isVisible('#edit-tools'), true);

    // Compact.
    const c = await submit(page, '#edit-compact');
    assert.equal(Number(c.blocksZeroed), cliCompact['blocks-zeroed']);
    assert.equal(Number(c.blocksZeroed), 3);
    assert.equal(Number(c.bytesReclaimed), cliCompact['bytes-reclaimed']);
    assert.equal(Number(c.fileLengthAfter), cliCompact['file-length-after']);
    assert.equal((await headerFields(page))['blocks-allocated'].raw, '21');

    // Grow to 1 GiB: the 16 KiB map no longer fits before the data, blocks move.
    vdi('resize', cli, '1G');
    await page.fill('#edit-size', '1G');
    const r = await submit(page, '#edit-resize');
    assert.equal(Number(r.newSize), 1 << 30);
    assert.equal(r.mapMoved, '1', r.text);
    assert.ok(Number(r.blocksRelocated) > 0, r.text);
    assert.equal((await headerFields(page))['virtual-size'].raw, String(1 << 30));

    // Header fields: comment (untrusted-looking text, shown as text), image UUID.
    const comment = 'edited in the page — <b>not bold</b> ✓';
    const uuid = '0badc0de-1234-4567-89ab-0123456789ab';
    vdi('set', cli, '--comment', comment, '--uuid', uuid);
    await page.fill('#edit-comment', comment);
    await page.fill('#edit-uuid', uuid);
    assert.match(await page.textContent('#edit-fields-summary'), /2 field\(s\) will change/);
    const f = await submit(page, '#edit-fields');
    assert.equal(f.fields, 'comment,uuid');
    const h = await headerFields(page);
    assert.equal(h.comment.raw, comment);
    assert.equal(h.uuid.raw, uuid);
    assert.equal(await page.$('#header-table b'), null, 'the comment is text, not HTML');
    // A comment that does not fit is refused before anything is written.
    await page.fill('#edit-comment', 'é'.repeat(128));
    assert.match(await page.textContent('#edit-fields-summary'), /256 bytes of UTF-8; at most 255/);
    await page.fill('#edit-comment', comment);

    // Discard blocks 4..6 (whole) and half of block 7.
    vdi('discard', cli, '--offset', String(4 * MiB), '--length', String(3.5 * MiB));
    await page.fill('#edit-discard-offset', '4M');
    await page.fill('#edit-discard-length', String(3.5 * MiB));
    const d = await submit(page, '#edit-discard');
    assert.equal(d.blocksDiscarded, '3');

    // Write a file at 900 MiB (a new block past the old end).
    const data = s.file('data.bin');
    writePattern(data, 0, 3 * MiB + 124, 99);
    vdi('write', cli, data, '--offset', String(900 * MiB));
    await page.setInputFiles('#edit-write-file', data);
    await page.fill('#edit-write-offset', '900M');
    const w = await submit(page, '#edit-write');
    assert.equal(Number(w.written), 3 * MiB + 124);

    await screenshot(page, 'edit-panel', '#edit-panel');

    // The edited copy, downloaded: byte for byte what the vdi command made, clean in
    // qemu-img, and the disk the edits describe.
    const got = await saveEdited(page, s.dir);
    assert.equal(await sha256File(got), await sha256File(cli), 'page edits = vdi command edits, byte for byte');
    assert.equal(qemuCheck(got).code, 0, qemuCheck(got).out);
    assert.equal(vdiCheckJson(got).corruptions, 0);
    const want = s.file('want.raw');
    fs.copyFileSync(raw, want);
    fs.truncateSync(want, 1 << 30);
    const wfd = fs.openSync(want, 'r+');
    fs.writeSync(wfd, Buffer.alloc(3.5 * MiB), 0, 3.5 * MiB, 4 * MiB);
    fs.writeSync(wfd, fs.readFileSync(data), 0, 3 * MiB + 124, 900 * MiB);
    fs.closeSync(wfd);
    qemuCompare(got, want);
    const info = vdiJson('info', '--json', got);
    assert.equal(info['format-specific'].data.comment, comment);
    assert.equal(info['format-specific'].data.uuid, uuid);
    // The user's file was never touched.
    assert.equal(await sha256File(img), originalHash);

    // Repair preview on the clean copy: nothing to do.
    await page.evaluate(() => { document.querySelector('#edit-result').hidden = true; });
    await page.click('#edit-repair-plan');
    assert.match((await editResult(page)).text, /Nothing to repair/);

    // Closing the copy deletes it and reopens the original, read-only.
    await closeCopy(page);
    const staged = await page.evaluate(async () => {
      const dir = await navigator.storage.getDirectory();
      const names = [];
      for await (const [n] of dir.entries()) names.push(n);
      return names.filter((n) => n.startsWith('vdi-edit-'));
    });
    assert.deepEqual(staged, []);
    fs.rmSync(got);
    fs.rmSync(want);
  });

  test('a file that does not open is repaired on a copy; the result checks clean in qemu-img', async () => {
    const { page } = wb;
    const img = s.file('broken.vdi');
    vdi('create', img, '32M');
    const data = s.file('d.bin');
    writePattern(data, 0, 5 * MiB, 3);
    vdi('write', img, data);
    // Wipe the signature: the image no longer opens.
    const fd = fs.openSync(img, 'r+');
    fs.writeSync(fd, Buffer.alloc(4), 0, 4, 0x40);
    fs.closeSync(fd);
    await page.evaluate(() => { delete document.documentElement.dataset.mapMs; });
    await page.setInputFiles('#file-input', img);
    await page.waitForSelector('#repair-offer:not([hidden])');
    assert.equal(await page.getAttribute('#error', 'data-kind'), 'bad-signature');
    assert.match(await page.textContent('#repair-plan-list'), /signature/);
    await page.click('#repair-copy');
    const r = await editResult(page);
    assert.equal(r.corruptionsAfter, '0', r.text);
    assert.match(await page.textContent('#edit-actions'), /signature/);
    const got = await saveEdited(page, s.dir);
    assert.equal(qemuCheck(got).code, 0, qemuCheck(got).out);
    const want = s.file('broken-want.raw');
    fs.copyFileSync(data, want);
    fs.truncateSync(want, 32 * MiB);
    qemuCompare(got, want);
    await page.click('#edit-close');
    await page.waitForFunction(() => !document.body.classList.contains('has-image') || !document.querySelector('#edit-copy-row').hidden);

    // A file that is not a VDI at all: the error, and no repair offer.
    const junk = s.file('junk.vdi');
    fs.writeFileSync(junk, Buffer.alloc(4096, 0x41));
    await page.setInputFiles('#file-input', junk);
    await page.waitForFunction(() => !document.querySelector('#error').hidden && /junk/.test(document.querySelector('#status').textContent));
    await page.waitForFunction(() => document.querySelector('#repair-offer').dataset.checked === 'junk.vdi');
    assert.equal(await page.isHidden('#repair-offer'), true, 'no repair offer for a file repair cannot rebuild');
  });

  test('slots past blocks_in_image (a compaction tool\'s image): read-only, then repair and compact on the copy keep every byte', async () => {
    const { page } = wb;
    // qemu-img's image of 8 blocks with data in 0, 2, 3, 5; then by hand: holes up to slot 8,
    // blocks 6 and 7 appended at slots 8 and 9 (past blocks_in_image), blocks_allocated 10.
    const src = s.file('past-src.raw');
    for (const [i, b] of [0, 2, 3, 5].entries()) writePattern(src, b * MiB, MiB, 40 + i);
    fs.truncateSync(src, 8 * MiB);
    const img = s.file('past.vdi');
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vdi', src, img]);
    const head = fs.readFileSync(img).subarray(0, 0x200);
    const [bmap, data] = [head.readUInt32LE(0x154), head.readUInt32LE(0x158)];
    assert.equal(fs.statSync(img).size, data + 4 * MiB);
    fs.truncateSync(img, data + 8 * MiB);
    writePattern(img, data + 8 * MiB, 2 * MiB, 48);
    const fd = fs.openSync(img, 'r+');
    const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
    fs.writeSync(fd, u32(8), 0, 4, bmap + 6 * 4);
    fs.writeSync(fd, u32(9), 0, 4, bmap + 7 * 4);
    fs.writeSync(fd, u32(10), 0, 4, 0x184);
    fs.closeSync(fd);
    const want = s.file('past-want.raw');
    run('qemu-img', ['convert', '-f', 'vdi', '-O', 'raw', img, want]);
    assert.equal(vdiCheckJson(img).corruptions, 3);

    // It opens (read-only, with the engine's note); the editable copy is repaired, not emptied.
    await openImage(page, img);
    assert.match(await page.textContent('#notes'), /blocks_allocated 10 exceeds blocks_in_image 8/);
    for (const op of ['repair', 'compact']) {
      await page.click('#edit-copy');
      assert.match((await editResult(page)).text, /editable copy/);
      if (op === 'repair') {
        // Before repair, the copy is as read-only as the engine makes the image: writes,
        // resize, discard and header fields are refused, nothing changes.
        await page.setInputFiles('#edit-write-file', src);
        await page.fill('#edit-write-offset', '0');
        await refused(page, '#edit-write', 'unsupported');
        await page.fill('#edit-size', '16M');
        await refused(page, '#edit-resize', 'unsupported');
        await page.fill('#edit-discard-offset', '0');
        await page.fill('#edit-discard-length', String(MiB));
        await refused(page, '#edit-discard', 'unsupported');
        await page.fill('#edit-comment', 'refused');
        await refused(page, '#edit-fields', 'unsupported');
        await page.fill('#edit-comment', '');
        assert.equal((await headerFields(page))['blocks-allocated'].raw, '10');
        await submit(page, '#edit-repair-plan');
        const plan = await page.textContent('#edit-actions');
        assert.match(plan, /2 block\(s\) stored in slots past blocks_in_image \(8\) moved below it/);
        assert.doesNotMatch(plan, /Data lost/);
        assert.equal((await submit(page, '#edit-repair')).corruptionsAfter, '0');
      } else {
        await submit(page, '#edit-compact');
      }
      assert.equal((await headerFields(page))['blocks-allocated'].raw, '6');
      const got = await saveEdited(page, s.dir);
      assert.equal(qemuCheck(got).code, 0, `${op}: ${qemuCheck(got).out}`);
      qemuCompare(got, want);
      assert.equal(fs.statSync(got).size, data + 6 * MiB, op);
      fs.rmSync(got);
      await closeCopy(page);
    }
    for (const f of [src, img, want]) fs.rmSync(f);
  });

  test('create from a raw disk file: only data blocks stored, qemu-img reads the same disk', async () => {
    const { page } = wb;
    // 20 MiB + 1000 bytes (not a whole sector: the disk is rounded up, as qemu-img does),
    // with 8 MiB of zeros in the middle.
    const raw = s.file('import.raw');
    writePattern(raw, 0, 4 * MiB, 21);
    writePattern(raw, 12 * MiB, 8 * MiB + 1000, 22);
    const cli = s.file('import-cli.vdi');
    vdi('convert', '-O', 'vdi', raw, cli);
    await page.setInputFiles('#create-raw', raw);
    assert.equal(await page.inputValue('#create-size'), String(20 * MiB + 1024));
    assert.match(await page.textContent('#create-summary'), /import\.raw/);
    await page.evaluate(() => { document.querySelector('#create-result').hidden = true; });
    const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 120000 }), page.click('#create-run')]);
    fs.mkdirSync(`${s.dir}/saved`, { recursive: true });
    const got = `${s.dir}/saved/${dl.suggestedFilename()}`;
    await dl.saveAs(got);
    assert.equal(dl.suggestedFilename(), 'import.vdi');
    await page.waitForSelector('#create-result:not([hidden])');
    assert.equal(Number(await page.getAttribute('#create-result', 'data-data-bytes')), 12 * MiB + 1000);
    assert.equal(qemuCheck(got).code, 0, qemuCheck(got).out);
    qemuCompare(got, raw);
    const mine = vdiJson('info', '--json', got);
    assert.equal(mine['virtual-size'], 20 * MiB + 1024);
    assert.equal(mine['format-specific'].data['blocks-allocated'], vdiJson('info', '--json', cli)['format-specific'].data['blocks-allocated']);
    assert.equal(mine['format-specific'].data['blocks-allocated'], 13);
    // The new image is the open one.
    assert.equal((await headerFields(page))['virtual-size'].raw, String(20 * MiB + 1024));
    await page.setInputFiles('#create-raw', []);
    assert.equal(await page.isDisabled('#create-size'), false);
    for (const f of [raw, cli, got]) fs.rmSync(f);
  });

  for (const op of ['compact', 'resize']) {
    test(`cancelling ${op} midway leaves an image that checks clean and reads the same`, async () => {
      const { page } = wb;
      // 1 GiB of data in 1 MiB blocks, the first 400 blocks overwritten with zeros: compact
      // scans 1 GiB and moves 400 blocks; growing to 100 TiB moves 400 blocks for the map.
      const img = s.file(`cancel-${op}.vdi`);
      const raw = s.file(`cancel-${op}.raw`);
      vdi('create', '--layout', 'qemu', img, '1G');
      writePattern(raw, 0, 1 << 30, 11);
      vdi('write', img, raw);
      const zeros = s.file('zeros400.bin');
      fs.writeFileSync(zeros, Buffer.alloc(400 * MiB));
      vdi('write', img, zeros, '--offset', '0');
      fs.rmSync(zeros);
      const rfd = fs.openSync(raw, 'r+');
      fs.writeSync(rfd, Buffer.alloc(400 * MiB), 0, 400 * MiB, 0);
      fs.closeSync(rfd);

      await openImage(page, img);
      await page.click('#edit-copy');
      await editResult(page);
      await page.evaluate(() => { document.querySelector('#edit-result').hidden = true; });
      // Cancel as soon as the engine reports progress (compact: blocks scanned; resize: blocks
      // relocated), from inside the page so no round trip to the test delays it.
      await page.evaluate(() => {
        const bar = document.querySelector('#edit-progress');
        const obs = new MutationObserver(() => {
          if (Number(bar.value) > 0 && !document.querySelector('#edit-cancel').hidden) {
            obs.disconnect();
            document.querySelector('#edit-cancel').click();
          }
        });
        obs.observe(bar, { attributes: true });
      });
      if (op === 'compact') {
        await page.click('#edit-compact');
      } else {
        await page.fill('#edit-size', '100T');
        await page.click('#edit-resize');
      }
      const r = await editResult(page);
      assert.equal(r.cancelled, '1', `the ${op} finished before the cancel arrived: ${r.text}`);
      assert.equal(r.corruptions, '0', r.text);
      const got = await saveEdited(page, s.dir);
      const q = qemuCheck(got);
      assert.ok(q.code === 0 || q.code === 3, `qemu-img check: ${q.out}`);
      const v = vdiCheckJson(got);
      assert.equal(v.corruptions, 0);
      // Same disk as before (a cancelled resize keeps the old size).
      assert.equal(vdiJson('info', '--json', got)['virtual-size'], 1 << 30);
      qemuCompare(got, raw);
      await closeCopy(page);
      for (const f of [got, raw, img]) fs.rmSync(f);
    });
  }

  test('reclaim what the guest deleted: a FAT16 disk\'s preview, then Compact, as vdi compact --fs-aware does', async () => {
    const { page } = wb;
    const mtools = (cmd, ...args) => execFileSync(cmd, args, { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
    const fat = s.file('fat.img');
    run('mkfs.vfat', ['-C', '-F', '16', fat, String(24 * 1024)]);
    const keep = s.file('keep.bin');
    const gone = s.file('gone.bin');
    writePattern(keep, 0, 2 * 1024 * 1024 + 100, 3);
    writePattern(gone, 0, 8 * 1024 * 1024, 4);
    mtools('mcopy', '-i', fat, keep, '::keep.bin');
    mtools('mcopy', '-i', fat, gone, '::gone.bin');
    mtools('mdel', '-i', fat, '::gone.bin');
    const img = s.file('fsc.vdi');
    vdi('convert', '-O', 'vdi', fat, img);
    const cli = s.file('fsc-cli.vdi');
    fs.copyFileSync(img, cli);
    const dry = JSON.parse(vdi('compact', '--fs-aware', '--dry-run', '--json', cli));
    const done = JSON.parse(vdi('compact', '--fs-aware', '--json', cli));
    assert.ok(dry['releasable-blocks'] >= 7, JSON.stringify(dry));

    await openImage(page, img);
    await page.click('#edit-copy');
    await editResult(page);
    await page.click('#fs-preview');
    await page.waitForSelector('#fs-plan-summary');
    const summary = await page.$eval('#fs-plan-summary', (e) => ({ text: e.textContent, ...e.dataset }));
    assert.equal(Number(summary.releasable), dry['releasable-blocks'], summary.text);
    const row = await page.$eval('.fs-row[data-number="0"]', (e) => ({ text: e.textContent, status: e.dataset.status }));
    assert.equal(row.status, 'read');
    assert.match(row.text, /vfat/);
    assert.equal(await page.isEnabled('#fs-compact'), true);

    const r = await submit(page, '#fs-compact');
    assert.equal(Number(r.blocksReleased), done['blocks-released'], r.text);
    assert.equal(Number(r.fileLengthAfter), done['file-length-after'], r.text);
    // Afterwards the preview has nothing more to give back.
    await page.waitForFunction(() => document.querySelector('#fs-plan-summary')?.dataset.releasable === '0');

    const saved = await saveEdited(page, s.dir);
    assert.equal(await sha256File(saved), await sha256File(cli), 'the page and the command made different files');
    run('qemu-img', ['check', '-f', 'vdi', saved]);
    await closeCopy(page);
    for (const f of [saved, cli, img, fat, keep, gone]) fs.rmSync(f);
  });
});

describe('edit panel without cross-origin isolation', () => {
  // Served without COOP/COEP (as a plain static host would) the page has no
  // SharedArrayBuffer: cancel stops the worker in the middle of the engine's writes, a real
  // interruption. The image is reopened in a new worker and checked.
  let s;
  let wb;
  before(async () => {
    s = scratch('vdi-e2e-edit-plain-');
    wb = await openWorkbench({
      beforeGoto: (context) => context.route('**/*', async (route) => {
        try {
          const response = await route.fetch();
          const headers = { ...response.headers() };
          delete headers['cross-origin-embedder-policy'];
          delete headers['cross-origin-opener-policy'];
          await route.fulfill({ response, headers });
        } catch {
          // The context closed while a request was in flight: nothing left to serve.
        }
      }),
    });
    await removeSavePicker(wb.page);
  });
  after(async () => {
    await wb?.close();
    s?.cleanup();
    stopServer();
  });

  test('cancelling compact stops the worker; the reopened image has at worst leaks and reads the same', async () => {
    const { page } = wb;
    assert.equal(await page.evaluate(() => globalThis.crossOriginIsolated), false);
    const img = s.file('plain.vdi');
    const raw = s.file('plain.raw');
    vdi('create', '--layout', 'qemu', img, '1G');
    writePattern(raw, 0, 1 << 30, 5);
    vdi('write', img, raw);
    const zeros = s.file('zeros.bin');
    fs.writeFileSync(zeros, Buffer.alloc(400 * MiB));
    vdi('write', img, zeros, '--offset', String(600 * MiB));
    fs.rmSync(zeros);
    const rfd = fs.openSync(raw, 'r+');
    fs.writeSync(rfd, Buffer.alloc(400 * MiB), 0, 400 * MiB, 600 * MiB);
    fs.closeSync(rfd);
    await openImage(page, img);
    await page.click('#edit-copy');
    await editResult(page);
    await page.evaluate(() => {
      document.querySelector('#edit-result').hidden = true;
      const bar = document.querySelector('#edit-progress');
      const obs = new MutationObserver(() => {
        // Past the first zero block (block 600), so the interruption leaves marked blocks.
        if (Number(bar.value) > 0.62 && !document.querySelector('#edit-cancel').hidden) {
          obs.disconnect();
          document.querySelector('#edit-cancel').click();
        }
      });
      obs.observe(bar, { attributes: true });
    });
    await page.click('#edit-compact');
    const r = await editResult(page);
    assert.equal(r.cancelled, '1', r.text);
    assert.equal(r.corruptions, '0', r.text);
    const got = await saveEdited(page, s.dir);
    const v = vdiCheckJson(got);
    assert.equal(v.corruptions, 0);
    assert.equal(Number(r.leaks), v.leaks, 'the page reports the leaks vdi check finds');
    qemuCompare(got, raw);
    await closeCopy(page);
  });
});
