// Inside the disk, end to end in headless Chromium: a GPT disk built at test time
// (sgdisk, mkfs.ext4 -d, mkfs.vfat + mcopy, mkswap, `vdi convert`), opened in the page. The
// Hex view shows the disk's bytes with the MBR and GPT fields labelled (compared with what
// sgdisk wrote), is bounded by the virtual size, and opens from a block of the map. The
// Files view shows the partitions, lists folders, previews, downloads a file (its SHA-256
// is the source's) and a folder as a .zip (checked entry by entry by Python's zipfile and
// unzip -t), finds a file's blocks (the bytes at the offset it names are the file's), says
// what it cannot read, and reads a snapshot chain's newest view.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { fixture, openImage, openWorkbench, removeSavePicker, run, scratch, screenshot, sha256File, stopServer, waitOpened } from './helpers.mjs';
import { EXT4_FILES, ext4Snapshot, FAT_FILES, gptDisk, noise, ntfsDisk } from './disks.mjs';

/** Show the Files view and wait for partition `part`'s root folder to be listed. */
async function filesReady(page, part = 1) {
  await page.click('#tab-files');
  await page.waitForFunction((n) => document.querySelector(`#disk-bar .seg[data-part="${n}"]`)?.getAttribute('aria-pressed') === 'true'
    && document.querySelector('#files-tree li[data-path="/"]')?.dataset.listed, part);
}

/** Click the tree item of `path` (a folder opens: wait for its listing). */
async function clickItem(page, p) {
  await page.click(`#files-tree li[data-path="${p}"] > .item-row`);
  await page.waitForFunction((x) => {
    const li = document.querySelector(`#files-tree li[data-path="${x}"]`);
    return li.getAttribute('aria-selected') === 'true' && (li.dataset.kind !== 'dir' || li.dataset.listed || li.getAttribute('aria-expanded') === 'false');
  }, p);
}

/** The children shown under folder `path`: their paths. */
async function children(page, p) {
  return page.$$eval(`#files-tree li[data-path="${p}"] > ul > li.item`, (l) => l.map((x) => x.dataset.path));
}

/** Click the download button and save what the browser downloads to `dest`. */
async function download(page, dest) {
  const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 60000 }), page.click('#file-save')]);
  await dl.saveAs(dest);
  await page.waitForSelector('#files-result:not([hidden])');
  return dest;
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

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
    assert.equal(f['GPT entry 1/last LBA'].value, '14335 (6 MiB)');
    assert.equal(f['GPT entry 1/name'].value, '"linux data"');
    assert.equal(f['GPT entry 2/partition type GUID'].value, 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7 (Microsoft basic data)');
    assert.equal(f['GPT entry 2/name'].value, '"fat stuff"');
    assert.equal(f['GPT entry 3/name'].value, '"swap"');
    assert.equal(f['GPT entries 4–128/entries'].value, 'unused (125 entries)');
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

  test('the partitions are shown to scale with their filesystems; one not read says so', async () => {
    const { page } = wb;
    await filesReady(page);
    const segs = await page.$$eval('#disk-bar .seg[data-part]', (l) => l.map((b) => ({ n: b.dataset.part, text: b.textContent, grow: Number(b.style.flexGrow) })));
    assert.deepEqual(segs.map((s) => s.text), ['1: linux dataext4 · 6 MiB', '2: fat stuffFAT · 4 MiB', '3: swapLinux swap · 2 MiB']);
    assert.deepEqual(segs.map((s) => s.grow), [6 / 16, 4 / 16, 2 / 16], 'to scale');
    assert.match(await page.$eval('#files-summary', (e) => e.textContent), /GUID partition table \(GPT\).*: 3 partitions\.$/);
    const facts = await page.$$eval('#part-facts dd', (l) => Object.fromEntries(l.map((d) => [d.dataset.k, d.textContent])));
    assert.equal(facts.start, '1048576 (LBA 2048, 1 MiB)');
    assert.equal(facts.type, 'Linux filesystem (0FC63DAF-8483-4772-8E79-3D69D8477DE4)');
    assert.equal(facts.label, 'linuxdata');
    assert.deepEqual(await children(page, '/'), ['/data', '/docs', '/lost+found', '/hello.txt']);
    // A partition opens the hex view at its first byte (the ext4 superblock's magic 0xef53
    // lies 1080 bytes in).
    await page.click('#part-hex');
    await page.waitForFunction(() => document.querySelector('#hex-grid').dataset.target === '1048576' && !document.querySelector('#hex-panel').hidden);
    const magic = await page.$$eval('#hex-grid .hx .b', (l) => l.map((b) => b.textContent));
    assert.equal(await page.$eval('#hex-grid', (g) => g.dataset.start), '1048576');
    assert.deepEqual(magic.slice(1080, 1082), ['53', 'ef']);
    await page.click('#tab-files');
    // Partition 3 is detected only.
    await page.click('#disk-bar .seg[data-part="3"]');
    assert.equal(await page.$eval('#part-note', (e) => (e.hidden ? null : e.textContent)), 'Linux swap — detected; reading files is not supported.');
    assert.equal(await page.$eval('#files-browser', (e) => e.hidden), true);
    assert.equal(await page.$eval('#ov-facts dd[data-k=inside]', (e) => e.textContent), '3 partitions: 1: ext4 6 MiB, 2: vfat 4 MiB, 3: swap 2 MiB');
    // The partitions are bands on the block map, in the disk bar's colours.
    const legend = await page.$$eval('#map-legend .key', (l) => l.map((k) => k.textContent));
    assert.ok(legend.includes('band: partition 1 linux data (ext4)'), legend.join(' | '));
    await page.click('#disk-bar .seg[data-part="1"]');
    await filesReady(page);
  });

  test('a folder opens lazily; a text file shows as text, a binary one in hex', async () => {
    const { page } = wb;
    await clickItem(page, '/docs');
    assert.deepEqual(await children(page, '/docs'), ['/docs/notes', '/docs/readme.md']);
    await clickItem(page, '/docs/notes');
    assert.deepEqual(await children(page, '/docs/notes'), ['/docs/notes/deep.txt']);
    await clickItem(page, '/docs/readme.md');
    await page.waitForSelector('#file-preview-wrap:not([hidden])');
    assert.equal(await page.$eval('#file-preview', (e) => e.textContent), EXT4_FILES['docs/readme.md']);
    const facts = await page.$$eval('#file-facts dd', (l) => Object.fromEntries(l.map((d) => [d.dataset.k, d.textContent])));
    assert.equal(facts.size, `${EXT4_FILES['docs/readme.md'].length} B (${EXT4_FILES['docs/readme.md'].length} bytes)`);
    assert.equal(facts.mode, '-rw-r--r-- (0644)');
    await clickItem(page, '/data');
    await clickItem(page, '/data/small.bin');
    await page.waitForFunction(() => document.querySelector('#file-preview').dataset.kind === 'hex' && !document.querySelector('#file-preview-wrap').hidden);
    const lines = (await page.$eval('#file-preview', (e) => e.textContent)).split('\n');
    const src = EXT4_FILES['data/small.bin'];
    assert.equal(lines[0].slice(0, 57), `00000000  ${[...src.subarray(0, 16)].map((b) => b.toString(16).padStart(2, '0')).join(' ')}`);
    assert.equal(lines.length, 4096 / 16, 'the first 4 KiB of the 5000 bytes');
    assert.equal(await page.$eval('#file-preview-h', (e) => e.textContent), 'Preview (binary, in hexadecimal): the first 4 KiB of 4.883 KiB');
    await screenshot(page, 'files', '#files-panel');
  });

  test('a file downloads with the SHA-256 of its source, and its blocks are found', async () => {
    const { page } = wb;
    await removeSavePicker(page);
    await clickItem(page, '/data/random.bin');
    const got = await download(page, tmp.file('random.bin'));
    assert.equal(await sha256File(got), sha256(EXT4_FILES['data/random.bin']));
    // Where is it: the first byte it names holds the file's first bytes on the raw disk.
    await page.click('#file-where');
    await page.waitForFunction(() => /outlined there/.test(document.querySelector('#file-where-text').textContent));
    const text = await page.$eval('#file-where-text', (e) => e.textContent);
    const first = Number(/Its first byte is at (\d+) on the disk/.exec(text)[1]);
    const raw = fs.readFileSync(disk.raw);
    assert.equal(sha256(raw.subarray(first, first + 4096)), sha256(EXT4_FILES['data/random.bin'].subarray(0, 4096)));
    assert.ok((await page.$$eval('#map-legend .key', (l) => l.map((k) => k.dataset.k))).includes('file'));
    // And the hex view opens there.
    await page.click('#file-hex');
    await page.waitForFunction((t) => document.querySelector('#hex-grid').dataset.target === String(t) && !document.querySelector('#hex-panel').hidden, first);
    const row = await page.$eval('#hex-grid .b.target', (b) => [...b.closest('.hx').querySelectorAll('.b')].map((x) => x.textContent).join(''));
    const at = first % 16;
    assert.equal(row.slice(at * 2), EXT4_FILES['data/random.bin'].subarray(0, 16 - at).toString('hex'));
  });

  test('a folder downloads as a .zip, checked entry by entry by zipfile and unzip -t', async () => {
    const { page } = wb;
    await page.click('#tab-files');
    await clickItem(page, '/docs');
    assert.equal(await page.$eval('#file-save', (b) => b.textContent), 'Download folder as .zip');
    const zip = await download(page, tmp.file('docs.zip'));
    const check = `
import json, os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1]); top = sys.argv[2]
assert z.testzip() is None
want = {}
for dp, dns, fns in os.walk(os.path.join(top, 'docs')):
    rel = os.path.relpath(dp, top)
    for d in dns: want[rel + '/' + d + '/'] = None
    for f in fns: want[rel + '/' + f] = open(os.path.join(dp, f), 'rb').read()
names = sorted(z.namelist())
assert names == sorted(want), (names, sorted(want))
for n in names:
    if want[n] is not None: assert z.read(n) == want[n], n
print(json.dumps(names))
`;
    const names = JSON.parse(run('python3', ['-c', check, zip, disk.src.ext4]));
    assert.deepEqual(names, ['docs/notes/', 'docs/notes/deep.txt', 'docs/readme.md']);
    run('unzip', ['-tqq', zip]);
    assert.match(await page.$eval('#files-result', (e) => e.textContent), /a zip of 3 entries/);
  });

  test('a FAT partition lists and downloads too', async () => {
    const { page } = wb;
    await page.click('#tab-files');
    await page.click('#disk-bar .seg[data-part="2"]');
    await filesReady(page, 2);
    assert.deepEqual(await children(page, '/'), ['/PICS', '/README.TXT']);
    await clickItem(page, '/PICS');
    await clickItem(page, '/PICS/ONE.BIN');
    const got = await download(page, tmp.file('ONE.BIN'));
    assert.equal(await sha256File(got), sha256(FAT_FILES['PICS/ONE.BIN']));
  });

  test('a VirtualBox disk with HFS+ volumes: its EFI partition lists, HFS+ is detected only', async () => {
    const { page } = wb;
    await openImage(page, fixture('3hfs.vdi'));
    await filesReady(page, 1);
    const segs = await page.$$eval('#disk-bar .seg[data-part]', (l) => l.map((b) => b.textContent));
    assert.deepEqual(segs, ['1: EFI System PartitionFAT · 200 MiB', '2: vol1HFS+ · 2.667 GiB', '3: vol2HFS+ · 2.667 GiB', '4: vol3HFS+ · 2.096 GiB']);
    assert.deepEqual(await children(page, '/'), ['/.Trashes', '/._.Trashes']);
    await page.click('#disk-bar .seg[data-part="2"]');
    assert.equal(await page.$eval('#part-note', (e) => (e.hidden ? null : e.textContent)), 'HFS+ — detected; reading files is not supported.');
  });

  test('no request leaves the page\'s origin', () => {
    assert.deepEqual(wb.foreignRequests(), []);
    assert.deepEqual(wb.consoleErrors, []);
  });
});

/** A file name that is markup: it must show as text and never run. */
const MARKUP = '<img src=x onerror="window.__pwned=1">.txt';

describe('inside a snapshot chain', () => {
  let wb;
  let tmp;

  before(async () => {
    tmp = scratch('vdi-files-chain-');
    const base = gptDisk(tmp.dir);
    const { snap } = ext4Snapshot(tmp.dir, base.vdi, { 'hello.txt': 'Hello from the snapshot.\n', 'new/only-here.txt': 'new', [MARKUP]: 'x' });
    wb = await openWorkbench();
    await wb.page.setInputFiles('#file-input', [snap, base.vdi]);
    await wb.page.waitForFunction(() => document.documentElement.dataset.chainMs, null, { timeout: 60000 });
    await waitOpened(wb.page);
  });

  after(async () => {
    await wb?.close();
    tmp?.cleanup();
    stopServer();
  });

  test('the files are those the newest layer sees', async () => {
    const { page } = wb;
    await filesReady(page);
    assert.match(await page.$eval('#files-summary', (e) => e.textContent), /^The disk of the snapshot chain/);
    assert.deepEqual(await children(page, '/'), ['/lost+found', '/new', `/${MARKUP}`, '/hello.txt']);
    // A name from the disk is text: shown as it is, never run.
    const names = await page.$$eval('#files-tree li[data-path="/"] > ul > li .item-name', (l) => l.map((e) => e.textContent));
    assert.ok(names.includes(MARKUP), names.join(' | '));
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    assert.equal(await page.$$eval('#files-panel img', (l) => l.length), 0);
    await clickItem(page, '/hello.txt');
    await page.waitForSelector('#file-preview-wrap:not([hidden])');
    assert.equal(await page.$eval('#file-preview', (e) => e.textContent), 'Hello from the snapshot.\n');
    assert.equal(await page.$eval('#part-facts dd[data-k=label]', (e) => e.textContent), 'snapdata');
    assert.deepEqual(wb.foreignRequests(), []);
  });

  test('a block of the map opens the hex view of the chain\'s disk at once (its first visit)', async () => {
    const { page } = wb;
    await page.click('#tab-map');
    const cell = await page.$eval('#map-canvas', (c) => Number(c.dataset.cell));
    await page.click('#map-canvas', { position: { x: cell * 1.5, y: cell / 2 } });
    await page.waitForSelector('#map-pick:not([hidden])');
    await page.click('#map-hex');
    await page.waitForFunction(() => document.querySelector('#hex-grid').dataset.target === String(1 << 20) && !document.querySelector('#hex-panel').hidden);
    assert.match(await page.$eval('#hex-where', (e) => e.textContent), /^Bytes 1048576–1052671 .* of the disk of the snapshot chain/);
  });
});

describe('an MBR disk with NTFS', () => {
  let wb;
  let tmp;
  const data = noise(40000, 11);

  before(async () => {
    tmp = scratch('vdi-files-ntfs-');
    const { vdi } = ntfsDisk(tmp.dir, { 'data.bin': data, 'note.txt': 'NTFS note\n' });
    wb = await openWorkbench();
    await openImage(wb.page, vdi);
  });

  after(async () => {
    await wb?.close();
    tmp?.cleanup();
    stopServer();
  });

  test('the MBR entry is labelled with its type, and the NTFS files list and download', async () => {
    const { page } = wb;
    await goTo(page, '0', 'byte', 0);
    const v = await hexView(page);
    assert.equal(v.fields['MBR partition 1/type'].value, '0x07 (HPFS/NTFS/exFAT)');
    assert.equal(v.fields['MBR partition 1/first LBA'].value, '2048 (byte 1048576)');
    assert.equal(v.fields['MBR partition 1/sectors'].value, '24576 (12 MiB)');
    await filesReady(page);
    assert.match(await page.$eval('#files-summary', (e) => e.textContent), /an MBR partition table/);
    assert.equal(await page.$eval('#part-facts dd[data-k=label]', (e) => e.textContent), 'ntfsdata');
    const kids = await children(page, '/');
    assert.ok(kids.includes('/data.bin') && kids.includes('/note.txt'), kids.join(' '));
    await removeSavePicker(page);
    await clickItem(page, '/data.bin');
    const got = await download(page, tmp.file('data.bin'));
    assert.equal(await sha256File(got), sha256(data));
    assert.deepEqual(wb.foreignRequests(), []);
  });
});
