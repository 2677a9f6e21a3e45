// Inside the disk, end to end in headless Chromium: a GPT disk built at test time
// (sgdisk, mkfs.ext4 -d, mkfs.vfat + mcopy, `vdi convert`), opened in the page. The Hex
// view shows the disk's bytes with the MBR and GPT fields labelled (compared with what
// sgdisk wrote), is bounded by the virtual size, and opens from a block of the map.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { openImage, openWorkbench, scratch, screenshot, stopServer } from './helpers.mjs';
import { gptDisk } from './disks.mjs';

/** The hex view's rows as {off, hex, text}, and its fields table as {group/name: value}. */
async function hexView(page) {
  return page.evaluate(() => ({
    where: document.querySelector('#hex-where').textContent,
    rows: [...document.querySelectorAll('#hex-grid .hex-row')].map((r) => ({
      off: parseInt(r.querySelector('.off').textContent, 16),
      hex: [...r.querySelectorAll('.hx .b')].map((b) => b.textContent).join(' '),
      text: r.querySelector('.tx').textContent,
    })),
    fields: Object.fromEntries([...document.querySelectorAll('#hex-fields tbody tr')].map((tr) => {
      const td = tr.querySelectorAll('td');
      return [`${td[2].textContent}/${tr.querySelector('th').textContent}`, { at: td[0].textContent, len: Number(td[1].textContent), value: td[3].textContent }];
    })),
  }));
}

/** Go to `value` (`unit`: byte | lba) and wait for the window holding byte `expect` (or,
 * with no `expect`, for the message). */
async function goTo(page, value, unit, expect = null) {
  await page.fill('#hex-at', value);
  await page.selectOption('#hex-unit', unit);
  await page.evaluate(() => { document.querySelector('#hex-message').hidden = true; });
  await page.click('#hex-go');
  await page.waitForFunction((t) => (t == null ? !document.querySelector('#hex-message').hidden
    : document.querySelector('#hex-grid').dataset.target === String(t)), expect);
}

describe('inside the disk', () => {
  let wb;
  let tmp;
  let disk;

  before(async () => {
    tmp = scratch('vdi-files-');
    disk = gptDisk(tmp.dir);
    wb = await openWorkbench();
    await openImage(wb.page, disk.vdi);
  });

  after(async () => {
    await wb?.close();
    tmp?.cleanup();
    stopServer();
  });

  test('the hex view at LBA 1 of a GPT disk shows "EFI PART" and its fields labelled', async () => {
    const { page } = wb;
    await goTo(page, '1', 'lba', 512);
    const v = await hexView(page);
    assert.equal(v.rows[0].off, 512, 'the window starts at the byte of LBA 1');
    assert.equal(v.rows.length, 256, '4 KiB, 16 bytes a row');
    assert.match(v.rows[0].text, /^EFI PART/);
    assert.equal(v.rows[0].hex.slice(0, 23), '45 46 49 20 50 41 52 54');
    assert.match(v.where, /^Bytes 512–4607 \(0x200–0x11ff, LBA 1–8\)/);
    const f = v.fields;
    assert.deepEqual(f['GPT header/signature'], { at: '0x200', len: 8, value: '"EFI PART"' });
    assert.equal(f['GPT header/revision'].value, '1.0 (0x00010000)');
    assert.equal(f['GPT header/header size'].value, '92 bytes');
    assert.match(f['GPT header/header CRC32'].value, /\(matches\)$/);
    assert.match(f['GPT header/entries CRC32'].value, /\(matches\)$/);
    assert.equal(f['GPT header/disk GUID'].value, disk.diskGuid, 'the disk GUID sgdisk reports');
    assert.equal(f['GPT header/partition entries LBA'].value, '2 (byte 1024)');
    assert.equal(f['GPT header/number of entries'].value, '128');
    assert.equal(f['GPT header/size of an entry'].value, '128 bytes');
    assert.equal(f['GPT header/last usable LBA'].value, '32734');
    // The entries at LBA 2 (in the same window), as sgdisk wrote them.
    assert.equal(f['GPT entry 1/partition type GUID'].value, '0FC63DAF-8483-4772-8E79-3D69D8477DE4 (Linux filesystem)');
    assert.equal(f['GPT entry 1/first LBA'].value, '2048 (byte 1048576)');
    assert.equal(f['GPT entry 1/last LBA'].value, '14335, 6 MiB');
    assert.equal(f['GPT entry 1/name'].value, '"linux data"');
    assert.equal(f['GPT entry 2/partition type GUID'].value, 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7 (Microsoft basic data)');
    assert.equal(f['GPT entry 2/name'].value, '"fat stuff"');
    assert.equal(f['GPT entries 3–128/entries'].value, 'unused (126 entries)');
    // Hovering a byte of the header names its field.
    await page.hover('#hex-grid .hex-row:first-child .hx .b:nth-child(3)');
    assert.match(await page.$eval('#hex-field', (e) => e.textContent), /^GPT header — signature \(8 bytes at 512\)/);
    await screenshot(page, 'hex-gpt', '#hex-panel');
  });

  test('"go to" is bounded by the virtual size, with a clear message', async () => {
    const { page } = wb;
    await goTo(page, '32768', 'lba');
    const msg = await page.$eval('#hex-message', (e) => (e.hidden ? null : e.textContent));
    assert.equal(msg, 'LBA 32768 is past the end of the disk: it has 16777216 bytes (16 MiB), so the last byte is 16777215 (0xffffff) and the last LBA 32767');
    await goTo(page, 'twelve', 'byte');
    assert.match(await page.$eval('#hex-message', (e) => e.textContent), /is not a number/);
    // The last byte itself is fine: the window ends at the disk's end.
    await goTo(page, '0xffffff', 'byte', 0xffffff);
    const v = await hexView(page);
    assert.equal(await page.$eval('#hex-message', (e) => e.hidden), true);
    assert.equal(v.rows.at(-1).off, 0xfffff0);
    assert.equal(await page.$eval('#hex-grid .b.target', (e) => e.closest('.hex-row').querySelector('.off').textContent), '0000fffff0');
    // The backup GPT header at the last LBA is labelled too.
    assert.equal(v.fields['GPT backup header/signature'].at, '0xfffe00');
    assert.equal(await page.$eval('#hex-next', (b) => b.disabled), true);
  });

  test('a block of the map opens the hex view at its first byte, with the MBR labelled', async () => {
    const { page } = wb;
    await page.click('#map-canvas', { position: { x: 3, y: 3 } });
    await page.waitForSelector('#map-pick:not([hidden])');
    assert.equal(await page.$eval('#map-pick-text', (e) => e.textContent), 'Block 0');
    await page.evaluate(() => { delete document.querySelector('#hex-grid').dataset.target; });
    await page.click('#map-hex');
    await page.waitForFunction(() => document.querySelector('#hex-grid').dataset.target === '0' && !document.querySelector('#hex-panel').hidden);
    const v = await hexView(page);
    assert.equal(v.rows[0].off, 0);
    assert.match(v.where, /Opened from block 0 of the block map\.$/);
    assert.equal(v.fields['MBR/boot signature'].value, '55 AA (valid)');
    assert.equal(v.fields['MBR partition 1/type'].value, '0xee (GPT protective)');
    assert.equal(v.fields['MBR partition 1/first LBA'].value, '1 (byte 512)');
    assert.equal(v.fields['MBR partition 2/entry'].value, 'unused');
    assert.equal(v.rows[31].hex.slice(-5), '55 aa');
  });

  test('no request leaves the page\'s origin', () => {
    assert.deepEqual(wb.foreignRequests(), []);
    assert.deepEqual(wb.consoleErrors, []);
  });
});
