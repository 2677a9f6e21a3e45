// Shared helpers for the workbench's end-to-end tests: the server, the browser, images.
//
// The server is the one `cargo xtask serve` runs: `cargo xtask test` starts it and passes
// its URL in VDI_WORKBENCH_URL; run alone, these tests start `cargo xtask serve --no-build
// --port 0` themselves (build the wasm first with `cargo xtask build-wasm`).

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const OUT = path.join(ROOT, 'tests/e2e/out');
export const VDI = process.env.VDI_BIN || path.join(ROOT, 'target/release/vdi');
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let serverProc = null;

/** The workbench's base URL (starting the xtask server when none was given). */
export async function serverUrl() {
  if (process.env.VDI_WORKBENCH_URL) return process.env.VDI_WORKBENCH_URL;
  if (!fs.existsSync(path.join(ROOT, 'www/pkg/vdi_wasm_bg.wasm'))) {
    throw new Error('www/pkg has no wasm build: run `cargo xtask build-wasm` first (or `cargo xtask test`)');
  }
  // Its own process group, so stopping it stops cargo's child (the server) too.
  serverProc = spawn('cargo', ['xtask', 'serve', '--no-build', '--port', '0'], {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], detached: true,
  });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    serverProc.stdout.on('data', (d) => {
      out += d;
      const m = /http:\/\/127\.0\.0\.1:\d+\//.exec(out);
      if (m) resolve(m[0]);
    });
    serverProc.on('exit', (code) => reject(new Error(`cargo xtask serve exited with ${code}`)));
  });
  process.env.VDI_WORKBENCH_URL = url;
  return url;
}

export function stopServer() {
  if (serverProc) {
    try { process.kill(-serverProc.pid, 'SIGTERM'); } catch { /* already gone */ }
    delete process.env.VDI_WORKBENCH_URL;
  }
  serverProc = null;
}

/**
 * A fresh headless Chromium (Debian's, never a downloaded one) with a new profile, and a page
 * on the workbench (at `url`, or the xtask server's). Every request the page makes is
 * recorded in `requests`.
 */
export async function openWorkbench({ viewport = { width: 1280, height: 900 }, beforeGoto = null, colorScheme = 'light', url: at = null } = {}) {
  const url = at ?? await serverUrl();
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'vdi-e2e-profile-'));
  const downloads = fs.mkdtempSync(path.join(os.tmpdir(), 'vdi-e2e-dl-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    viewport,
    colorScheme,
    acceptDownloads: true,
    downloadsPath: downloads,
  });
  const requests = [];
  const dialogs = [];
  const consoleErrors = [];
  context.on('request', (r) => requests.push(r.url()));
  const page = context.pages()[0] ?? await context.newPage();
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  if (beforeGoto) await beforeGoto(context);
  await page.goto(url);
  await page.waitForFunction(() => document.querySelector('#storage-text') !== null);
  autoReveal(page);
  const origin = new URL(url).origin;
  return {
    url, origin, context, page, requests, dialogs, consoleErrors,
    /** Requests that left the page's origin (blob: and data: URLs stay inside it). */
    foreignRequests() {
      return requests.filter((u) => !(u.startsWith(origin + '/') || u.startsWith('blob:' + origin) || u.startsWith('data:')));
    },
    async close() {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
      fs.rmSync(downloads, { recursive: true, force: true });
    },
  };
}

/**
 * The page is an app of views (Overview, Header, Block map, ...) in a tablist; a control
 * in a view that is not shown cannot be used until its view is. Like a user, the tests pick
 * the view first: `reveal` clicks the tab of the view that holds `selector` when that view
 * is hidden (the real tab, so the router is exercised).
 */
export async function reveal(page, selector) {
  const tab = await page.evaluate((sel) => {
    let e = null;
    try { e = document.querySelector(sel); } catch { return null; }
    const panel = e?.closest('[role=tabpanel]');
    return panel && panel.hidden ? panel.getAttribute('aria-labelledby') : null;
  }, selector);
  if (!tab) return;
  await page.locator(`#${tab}`).click();
  await page.waitForFunction((id) => {
    const t = document.getElementById(id);
    return t.getAttribute('aria-selected') === 'true' && !document.getElementById(t.getAttribute('aria-controls')).hidden;
  }, tab);
}

/** page.click, fill, check, ... reveal the view of their element first (see `reveal`). */
function autoReveal(page) {
  for (const m of ['click', 'fill', 'check', 'uncheck', 'selectOption', 'hover', 'focus', 'setInputFiles']) {
    const original = page[m].bind(page);
    page[m] = async (selector, ...rest) => {
      await reveal(page, selector);
      return original(selector, ...rest);
    };
  }
}

/** Open `file` through the page's file input and wait until header and map are shown. */
export async function openImage(page, file) {
  await page.evaluate(() => { delete document.documentElement.dataset.mapMs; });
  await page.setInputFiles('#file-input', file);
  await waitOpened(page);
}

export async function waitOpened(page, timeout = 60000) {
  await page.waitForFunction(() => document.documentElement.dataset.mapMs || !document.querySelector('#error').hidden, null, { timeout });
  const err = await page.$eval('#error', (e) => (e.hidden ? null : e.textContent));
  if (err) throw new Error(`the page shows an error: ${err}`);
}

/** The header table as {field: {raw, meaning, note}}. */
export async function headerFields(page) {
  return page.$$eval('#header-table tbody tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.field, {
    raw: r.querySelector('.raw').textContent,
    meaning: r.querySelector('.human').textContent,
    note: r.querySelector('.note')?.textContent ?? null,
  }])));
}

/** Run a command, return stdout (throws with stderr on failure). */
export function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * MiB, ...opts });
}

export function vdiJson(...args) {
  if (!fs.existsSync(VDI)) throw new Error(`${VDI} is missing: build it with cargo build -p vdi-cli --release`);
  return JSON.parse(run(VDI, args));
}

/** `vdi check --json` (exit codes 2 and 3 mean findings, not failure). */
export function vdiCheckJson(file) {
  try {
    return JSON.parse(run(VDI, ['check', '--json', file]));
  } catch (e) {
    if (e.status === 2 || e.status === 3) return JSON.parse(e.stdout);
    throw e;
  }
}

export function qemuInfo(file) {
  return JSON.parse(run('qemu-img', ['info', '--output=json', '-f', 'vdi', file]));
}

export async function sha256File(file) {
  const h = createHash('sha256');
  await new Promise((resolve, reject) => {
    fs.createReadStream(file, { highWaterMark: 8 * MiB }).on('data', (d) => h.update(d)).on('end', resolve).on('error', reject);
  });
  return h.digest('hex');
}

/** A scratch directory removed by the returned cleanup. */
export function scratch(prefix = 'vdi-e2e-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, file: (n) => path.join(dir, n), cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** Write `len` bytes of a recognisable pattern into `file` at `offset` (creating it). */
export function writePattern(file, offset, len, seed) {
  const fd = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w');
  const buf = Buffer.alloc(Math.min(len, 4 * MiB));
  for (let done = 0; done < len; done += buf.length) {
    const n = Math.min(buf.length, len - done);
    for (let i = 0; i < n; i += 4) buf.writeUInt32LE(((seed * 2654435761) ^ (offset + done + i)) >>> 0, i);
    fs.writeSync(fd, buf, 0, n, offset + done);
  }
  fs.closeSync(fd);
}

/**
 * A VirtualBox-made fixture (8 GiB dynamic image). Extracted from the shared .vdi.bz2 into
 * target/fixtures once when missing.
 */
export function fixture(name) {
  const dir = path.join(ROOT, 'target/fixtures');
  const file = path.join(dir, name);
  if (fs.existsSync(file)) return file;
  const archive = path.join(ROOT, '../shared/fixtures', `${name}.bz2`);
  if (!fs.existsSync(archive)) throw new Error(`fixture ${name} is missing and ${archive} does not exist`);
  const tmp = fs.mkdtempSync(path.join(dir, '.extract-'));
  try {
    run('tar', ['-xjf', archive, '-C', tmp]);
    const found = run('find', [tmp, '-name', name, '-type', 'f']).trim().split('\n')[0];
    if (!found) throw new Error(`${archive} does not contain ${name}`);
    fs.renameSync(found, file);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return file;
}

export async function screenshot(page, name, selector) {
  fs.mkdirSync(OUT, { recursive: true });
  if (selector) await reveal(page, selector);
  const file = path.join(OUT, `${name}.png`);
  if (selector) await page.locator(selector).screenshot({ path: file });
  else await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Replace showSaveFilePicker with one returning an OPFS file (headless Chromium aborts the
 * real dialog, and Playwright cannot drive it). */
export async function stubSavePicker(page, opfsName) {
  await page.evaluate(async (name) => {
    window.showSaveFilePicker = async () => {
      const dir = await navigator.storage.getDirectory();
      return dir.getFileHandle(name, { create: true });
    };
  }, opfsName);
}

/** Make the page fall back to OPFS staging + download. */
export async function removeSavePicker(page) {
  await page.evaluate(() => { delete window.showSaveFilePicker; window.showSaveFilePicker = undefined; });
}

/** SHA-256 and size of an OPFS file, computed in the page in chunks. */
export async function opfsDigest(page, name) {
  return page.evaluate(async (n) => {
    const dir = await navigator.storage.getDirectory();
    const file = await (await dir.getFileHandle(n)).getFile();
    // crypto.subtle has no streaming digest: hash 8 MiB pieces, then the list of their hashes.
    const parts = [];
    for (let off = 0; off < file.size; off += 8 << 20) {
      const buf = await file.slice(off, off + (8 << 20)).arrayBuffer();
      parts.push(new Uint8Array(await crypto.subtle.digest('SHA-256', buf)));
    }
    const all = new Uint8Array(parts.length * 32);
    parts.forEach((p, i) => all.set(p, i * 32));
    const d = new Uint8Array(await crypto.subtle.digest('SHA-256', all));
    return { size: file.size, digest: [...d].map((b) => b.toString(16).padStart(2, '0')).join('') };
  }, name);
}

/** The same chunked digest as `opfsDigest`, of a local file. */
export async function chunkedDigest(file) {
  const fd = fs.openSync(file, 'r');
  const size = fs.fstatSync(fd).size;
  const all = [];
  const buf = Buffer.alloc(8 * MiB);
  for (let off = 0; off < size; off += 8 * MiB) {
    const n = fs.readSync(fd, buf, 0, Math.min(8 * MiB, size - off), off);
    all.push(createHash('sha256').update(buf.subarray(0, n)).digest());
  }
  fs.closeSync(fd);
  return { size, digest: createHash('sha256').update(Buffer.concat(all)).digest('hex') };
}

export async function mapSummary(page) {
  return page.$$eval('#map-summary dd', (dds) => Object.fromEntries(dds.map((d) => [d.dataset.k, d.textContent])));
}

/** Hover block `block` of the map and return the tip's fields. Cells of a pixel or two
 * cannot be hit exactly (sub-pixel rounding, edges): then click near it (which pins the
 * cell) and step to it with the arrow keys, as a keyboard user would. */
export async function hoverBlock(page, block) {
  await reveal(page, '#map-canvas');
  const geo = await page.$eval('#map-canvas', (c) => ({
    cols: +c.dataset.cols, cell: +c.dataset.cell, per: +c.dataset.per, w: c.clientWidth, h: c.clientHeight,
  }));
  const i = Math.floor(block / geo.per);
  const clamp = (v, max) => Math.min(Math.max(v, 3), max - 3);
  const position = {
    x: clamp(((i % geo.cols) + 0.5) * geo.cell, geo.w),
    y: clamp((Math.floor(i / geo.cols) + 0.5) * geo.cell, geo.h),
  };
  const small = geo.cell < 4;
  if (small) await page.locator('#map-canvas').click({ position });
  else await page.locator('#map-canvas').hover({ position });
  await page.waitForFunction(() => !document.querySelector('#map-tip').hidden && document.querySelector('#map-tip').dataset.cell !== undefined);
  let at = Number(await page.$eval('#map-tip', (t) => t.dataset.cell));
  if (!small) assert.equal(at, i, 'hovering a cell shows that cell');
  assert.ok(Math.abs(at - i) <= 4 * geo.cols + 4, `clicked cell ${at}, wanted ${i}`);
  while (at !== i) {
    const row = Math.floor(at / geo.cols) !== Math.floor(i / geo.cols);
    const key = row ? (at < i ? 'ArrowDown' : 'ArrowUp') : (at < i ? 'ArrowRight' : 'ArrowLeft');
    await page.keyboard.press(key);
    at += row ? (at < i ? geo.cols : -geo.cols) : (at < i ? 1 : -1);
  }
  await page.waitForFunction((cell) => {
    const t = document.querySelector('#map-tip');
    return !t.hidden && t.dataset.cell === String(cell);
  }, i);
  const tip = await page.$$eval('#map-tip dd', (dds) => Object.fromEntries(dds.map((d) => [d.dataset.k, d.textContent])));
  if (small) await page.keyboard.press('Escape');
  return { geo, tip };
}
