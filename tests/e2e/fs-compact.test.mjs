// "Reclaim what the guest deleted" on the Edit view: the preview per partition and the
// filesystem-aware compaction on an OPFS copy, judged against `vdi compact --fs-aware` run
// on a copy of the same file (same plan, same bytes) and by qemu-img check.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  openImage, openWorkbench, removeSavePicker, run, scratch, sha256File, stopServer, VDI, writePattern,
} from './helpers.mjs';

const vdi = (...args) => execFileSync(VDI, args, { encoding: 'utf8' });
const mtools = (cmd, ...args) => execFileSync(cmd, args, { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });

async function editResult(page) {
  await page.waitForFunction(() => !document.querySelector('#edit-result').hidden || !document.querySelector('#error').hidden,
    null, { timeout: 120000 });
  const err = await page.$eval('#error', (e) => (e.hidden ? null : e.textContent));
  if (err) throw new Error(`the page shows an error: ${err}`);
  return page.$eval('#edit-result', (e) => ({ text: e.textContent, ...e.dataset }));
}

describe('reclaim what the guest deleted', () => {
  let s;
  let wb;
  before(async () => {
    s = scratch('vdi-e2e-fsc-');
    wb = await openWorkbench();
    await removeSavePicker(wb.page);
  });
  after(async () => {
    await wb?.close();
    s?.cleanup();
    stopServer();
  });

  test('a FAT16 disk with a deleted file: the preview, then Compact, as the vdi command does', async () => {
    const { page } = wb;
    const fat = s.file('fat.img');
    run('mkfs.vfat', ['-C', '-F', '16', fat, String(24 * 1024)]);
    const keep = s.file('keep.bin');
    const gone = s.file('gone.bin');
    writePattern(keep, 0, 2 * 1024 * 1024 + 100, 3);
    writePattern(gone, 0, 8 * 1024 * 1024, 4);
    mtools('mcopy', '-i', fat, keep, '::keep.bin');
    mtools('mcopy', '-i', fat, gone, '::gone.bin');
    mtools('mdel', '-i', fat, '::gone.bin');
    const img = s.file('disk.vdi');
    vdi('convert', '-O', 'vdi', fat, img);
    const cli = s.file('cli.vdi');
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

    await page.evaluate(() => { document.querySelector('#edit-result').hidden = true; });
    await page.click('#fs-compact');
    const r = await editResult(page);
    assert.equal(Number(r.blocksReleased), done['blocks-released'], r.text);
    assert.equal(Number(r.fileLengthAfter), done['file-length-after'], r.text);
    // Afterwards the preview has nothing more to give back.
    await page.waitForFunction(() => document.querySelector('#fs-plan-summary')?.dataset.releasable === '0');

    const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 60000 }), page.click('#edit-save')]);
    fs.mkdirSync(s.file('saved'), { recursive: true });
    const saved = s.file(`saved/${dl.suggestedFilename()}`);
    await dl.saveAs(saved);
    assert.equal(await sha256File(saved), await sha256File(cli), 'the page and the command made different files');
    run('qemu-img', ['check', '-f', 'vdi', saved]);
  });
});
