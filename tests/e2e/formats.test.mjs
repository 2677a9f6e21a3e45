// "Export as…" in headless Chromium: the page writes each of the other hypervisors' formats
// (download fallback, and a save dialog for the formats whose length is known only at the
// end), a single image and a flattened chain; qemu-img compares each with the source.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  MiB, openImage, openWorkbench, removeSavePicker, run, scratch, stopServer, stubSavePicker, VDI, waitOpened, writePattern,
} from './helpers.mjs';
import { dynamicImage, oddSizeImage } from './images.mjs';

const FORMATS = { qcow2: 'qcow2', vmdk: 'vmdk', 'vmdk-stream': 'vmdk', vhd: 'vpc', 'vhd-fixed': 'vpc', vhdx: 'vhdx' };
const EXT = { qcow2: 'qcow2', vmdk: 'vmdk', 'vmdk-stream': 'vmdk', vhd: 'vhd', 'vhd-fixed': 'vhd', vhdx: 'vhdx' };

/** qemu-img compare (identical) and, where qemu-img has one, check (clean). */
function judge(src, srcFmt, out, format) {
  const q = FORMATS[format];
  assert.match(run('qemu-img', ['compare', '-f', srcFmt, '-F', q, src, out]), /identical/, `${format}: compare`);
  if (q !== 'vpc') run('qemu-img', ['check', '-f', q, out]);
}

async function waitResult(page, sel, timeout = 120000) {
  await page.waitForFunction((s) => !document.querySelector(s).hidden || !document.querySelector('#error').hidden, sel, { timeout });
  const err = await page.$eval('#error', (e) => (e.hidden ? null : e.textContent));
  if (err) throw new Error(`the page shows an error: ${err}`);
  return page.$eval(sel, (e) => e.textContent);
}

/** The bytes of an OPFS file (small ones only), removed afterwards. */
async function takeOpfs(page, name) {
  const b64 = await page.evaluate(async (n) => {
    const dir = await navigator.storage.getDirectory();
    const bytes = new Uint8Array(await (await (await dir.getFileHandle(n)).getFile()).arrayBuffer());
    await dir.removeEntry(n);
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }, name);
  return Buffer.from(b64, 'base64');
}

describe('export as another format', () => {
  let wb;
  let page;
  let tmp;
  const img = {};

  before(async () => {
    tmp = scratch();
    img.dynamic = dynamicImage(tmp.dir);
    img.odd = oddSizeImage(tmp.dir);
    // A three-layer chain, written with the CLI.
    img.base = tmp.file('base.vdi');
    img.snap1 = tmp.file('snap1.vdi');
    img.snap2 = tmp.file('snap2.vdi');
    const data = tmp.file('d.bin');
    const put = (f, at, len, seed) => {
      fs.rmSync(data, { force: true });
      writePattern(data, 0, len, seed);
      run(VDI, ['write', '--offset', String(at), f, data]);
    };
    run(VDI, ['create', img.base, String(12 * MiB)]);
    put(img.base, 0, 3 * MiB, 1);
    run(VDI, ['create', '--parent', img.base, img.snap1]);
    put(img.snap1, MiB + 512, 4096, 2);
    run(VDI, ['create', '--parent', img.snap1, img.snap2]);
    put(img.snap2, 12 * MiB - 4096, 4096, 3);
    wb = await openWorkbench();
    page = wb.page;
  });

  after(async () => {
    await wb?.close();
    tmp?.cleanup();
    stopServer();
  });

  test('every format, downloaded, compares identical with the image (and raw stays the default)', async () => {
    for (const name of ['dynamic', 'odd']) {
      await openImage(page, img[name]);
      await removeSavePicker(page);
      await page.click('#tab-export');
      assert.equal(await page.$eval('#export-format', (s) => s.value), 'raw');
      for (const format of Object.keys(FORMATS)) {
        await page.selectOption('#export-format', format);
        await page.evaluate(() => { document.querySelector('#export-result').hidden = true; });
        const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#export-raw')]);
        assert.equal(dl.suggestedFilename(), `${name}.${EXT[format]}`);
        const got = tmp.file(`${name}.page.${format}`);
        await dl.saveAs(got);
        const text = await waitResult(page, '#export-result');
        assert.match(text, new RegExp(`\\(${format}\\)`));
        judge(img[name], 'vdi', got, format);
        fs.rmSync(got);
      }
      await page.selectOption('#export-format', 'raw');
    }
  });

  test('through a save dialog: a stream-optimized VMDK and a VHD, with the size note', async () => {
    await openImage(page, img.odd);
    for (const format of ['vmdk-stream', 'vhd']) {
      const opfsName = `e2e-format.${EXT[format]}`;
      await stubSavePicker(page, opfsName);
      await page.selectOption('#export-format', format);
      await page.evaluate(() => { document.querySelector('#export-result').hidden = true; });
      await page.click('#export-raw');
      const text = await waitResult(page, '#export-result');
      assert.match(text, /Saved/);
      // The odd size is rounded up to what the format holds, and the page says so.
      assert.match(text, /Note: .*more than the disk's 10000384 \(zeros\)/);
      const got = tmp.file(`dialog.${format}`);
      fs.writeFileSync(got, await takeOpfs(page, opfsName));
      judge(img.odd, 'vdi', got, format);
    }
    await page.selectOption('#export-format', 'raw');
  });

  test('the chain view exports the flattened disk in each format', async () => {
    await page.evaluate(() => { delete document.documentElement.dataset.chainMs; delete document.documentElement.dataset.mapMs; });
    await page.setInputFiles('#file-input', [img.snap2, img.base, img.snap1]);
    await page.waitForFunction(() => document.documentElement.dataset.chainMs, null, { timeout: 60000 });
    await waitOpened(page);
    await removeSavePicker(page);
    const flat = tmp.file('flat.raw');
    run(VDI, ['convert', '-O', 'raw', img.snap2, flat]);
    for (const format of Object.keys(FORMATS)) {
      await page.selectOption('#chain-export-format', format);
      await page.evaluate(() => { document.querySelector('#chain-export-result').hidden = true; });
      const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#chain-export-raw')]);
      assert.equal(dl.suggestedFilename(), `snap2-flat.${EXT[format]}`);
      const got = tmp.file(`flat.${format}`);
      await dl.saveAs(got);
      await waitResult(page, '#chain-export-result');
      judge(flat, 'raw', got, format);
      fs.rmSync(got);
    }
  });
});
