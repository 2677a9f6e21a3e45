// Screenshots of the workbench for a person to look at (not a test): every view with an
// image open, a snapshot chain, phone width, and the dark theme.
//   node tests/e2e/shots.mjs [OUT_DIR]        (default /tmp/shots; needs target/release/vdi)

import fs from 'node:fs';
import path from 'node:path';

import { MiB, openImage, openWorkbench, reveal, run, scratch, stopServer, VDI, waitOpened } from './helpers.mjs';
import { corruptedImage, dynamicImage } from './images.mjs';
import { gptDisk } from './disks.mjs';

const OUT = process.argv[2] ?? '/tmp/shots';
fs.mkdirSync(OUT, { recursive: true });

const tmp = scratch('vdi-shots-');
const img = { dynamic: dynamicImage(tmp.dir), corrupt: corruptedImage(tmp.dir), gpt: gptDisk(tmp.dir).vdi };
// A chain: a base and two snapshots, each with data of its own.
const chain = ['base', 'snap1', 'snap2'].map((n) => tmp.file(`${n}.vdi`));
run(VDI, ['create', chain[0], String(64 * MiB)]);
run(VDI, ['create', '--parent', chain[0], chain[1]]);
run(VDI, ['create', '--parent', chain[1], chain[2]]);
const data = tmp.file('data.bin');
chain.forEach((f, i) => {
  fs.writeFileSync(data, Buffer.alloc((2 + i) * MiB, 0x30 + i));
  run(VDI, ['write', '--offset', String(i * 9 * MiB), f, data]);
});

async function shot(page, name) {
  const file = path.join(OUT, `${name}.png`);
  await page.waitForTimeout(150);
  await page.screenshot({ path: file, fullPage: true });
  console.log(file);
}

async function view(page, v) {
  await reveal(page, `#${v}-panel > h2`);
}

async function checked(page) {
  await page.waitForFunction(() => ['done', 'failed', 'none'].includes(document.querySelector('#ov-verdict').dataset.status));
}

async function session(scheme, viewport, tag, views) {
  const wb = await openWorkbench({ viewport, colorScheme: scheme });
  const { page } = wb;
  try {
    await shot(page, `${tag}-welcome`);
    await openImage(page, img.dynamic);
    await checked(page);
    await shot(page, `${tag}-overview`);
    for (const v of views) {
      await view(page, v);
      if (v === 'check') {
        await page.click('#check-run');
        await page.waitForSelector('#check-verdict:not([hidden])');
      }
      if (v === 'map') await page.locator('#map-canvas').hover({ position: { x: 30, y: 12 } });
      await shot(page, `${tag}-${v}`);
    }
    await openImage(page, img.corrupt);
    await checked(page);
    await view(page, 'overview');
    await shot(page, `${tag}-overview-corrupt`);
    await page.evaluate(() => { delete document.documentElement.dataset.chainMs; });
    await page.setInputFiles('#file-input', chain);
    await page.waitForFunction(() => document.documentElement.dataset.chainMs);
    await waitOpened(page);
    await shot(page, `${tag}-chain`);
    await view(page, 'overview');
    await checked(page);
    await shot(page, `${tag}-chain-overview`);
  } finally {
    await wb.close();
  }
}

/** Inside a partitioned disk: the Files view with a file picked, the Hex view at LBA 1. */
async function inside(scheme, viewport, tag) {
  const wb = await openWorkbench({ viewport, colorScheme: scheme });
  const { page } = wb;
  try {
    await openImage(page, img.gpt);
    await view(page, 'files');
    await page.waitForFunction(() => document.querySelector('#files-tree li[data-path="/"]')?.dataset.listed);
    await page.click('#files-tree li[data-path="/docs"] > .item-row');
    await page.waitForFunction(() => document.querySelector('#files-tree li[data-path="/docs"]')?.dataset.listed);
    await page.click('#files-tree li[data-path="/docs/readme.md"] > .item-row');
    await page.waitForSelector('#file-preview-wrap:not([hidden])');
    await page.click('#file-where');
    await page.waitForFunction(() => /outlined/.test(document.querySelector('#file-where-text').textContent));
    await shot(page, `${tag}-files`);
    await view(page, 'map');
    await shot(page, `${tag}-map-partitions`);
    await view(page, 'hex');
    await page.fill('#hex-at', '1');
    await page.selectOption('#hex-unit', 'lba');
    await page.click('#hex-go');
    await page.waitForFunction(() => document.querySelector('#hex-grid').dataset.target === '512');
    await page.hover('#hex-grid .hex-row:first-child .hx .b:nth-child(2)');
    await shot(page, `${tag}-hex`);
  } finally {
    await wb.close();
  }
}

try {
  await inside('light', { width: 1280, height: 900 }, 'desktop');
  await inside('dark', { width: 1280, height: 900 }, 'dark');
  await inside('light', { width: 390, height: 844 }, 'phone');
  await session('light', { width: 1280, height: 900 }, 'desktop', ['header', 'map', 'check', 'export', 'edit', 'create']);
  await session('dark', { width: 1280, height: 900 }, 'dark', ['header', 'map', 'check', 'edit']);
  await session('light', { width: 390, height: 844 }, 'phone', ['header', 'map', 'check']);
  await session('dark', { width: 390, height: 844 }, 'phone-dark', ['map']);
} finally {
  tmp.cleanup();
  stopServer();
}
