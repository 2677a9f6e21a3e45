// The workbench page: DOM only. The image, the wasm engine and every byte of storage live
// in worker.js; this module sends it {id, op, args} messages and shows the answers.
// Everything that comes from an image is set with textContent, never as HTML.

import { initEdit } from './edit.js';
import { initChain, takeDrop, openChain, diffNotice } from './chain.js';

export const $ = (sel) => document.querySelector(sel);

/* ---------- formatting ---------- */

export const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

/** Bytes with binary units: "8 GiB", "1.5 MiB", "512 B". */
export function human(n) {
  let v = Number(n);
  if (!Number.isFinite(v)) return String(n);
  let u = 0;
  while (Math.abs(v) >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u += 1;
  }
  if (u === 0) return `${v} B`;
  const s = v.toFixed(v >= 100 ? 1 : v >= 10 ? 2 : 3).replace(/\.?0+$/, '');
  return `${s} ${UNITS[u]}`;
}

export function hex(n, width = 0) {
  return `0x${BigInt(n).toString(16).padStart(width, '0')}`;
}

export function dec(n) {
  return typeof n === 'bigint' ? n.toString() : String(n);
}

/** A string with control characters (and backslashes) made visible, as C escapes. */
export function esc(s) {
  return String(s).replace(/[\\\u0000-\u001f\u007f]/g, (c) => {
    switch (c) {
      case '\\': return '\\\\';
      case '\n': return '\\n';
      case '\r': return '\\r';
      case '\t': return '\\t';
      default: return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
    }
  });
}

export function pct(part, whole) {
  if (!whole) return '0 %';
  const p = (100 * Number(part)) / Number(whole);
  // Never round 99.97 up to "100.0" (or 0.004 down to "0.00").
  const digits = (p > 99 && p < 100) || p < 10 ? 2 : 1;
  let s = p.toFixed(digits);
  if (Number(s) === 100 && p < 100) s = '99.99';
  if (Number(s) === 0 && p > 0) s = `<${(0.01).toFixed(2)}`;
  return `${p === 0 ? '0' : s} %`;
}

export function duration(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

export function rate(bytes, ms) {
  if (ms <= 0) return '';
  return `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s`;
}

/** Parse "512M", "20G", "1.5T", "4096" into bytes (binary units). */
export function parseSize(text) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?b)?\s*$/i.exec(text);
  if (!m) return { error: `"${text}" is not a size: use a number of bytes or a unit such as 512M, 20G, 1.5T` };
  const shift = { '': 0, k: 10, m: 20, g: 30, t: 40, p: 50, e: 60 }[m[2].toLowerCase()];
  const [whole, frac = ''] = m[1].split('.');
  const num = BigInt(whole + frac) * (1n << BigInt(shift));
  const den = 10n ** BigInt(frac.length);
  if (num % den !== 0n) return { error: `${text} is not a whole number of bytes` };
  const bytes = num / den;
  if (bytes === 0n) return { error: 'the size must be larger than 0' };
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) return { error: `${text} is too large` };
  return { bytes: Number(bytes) };
}

/** Make an element with text (never HTML). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c == null) continue;
    e.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return e;
}

/* ---------- the worker ---------- */

let worker = null;
let workerReady = null;
let nextId = 1;
const pending = new Map();

function startWorker() {
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  workerReady = new Promise((resolve, reject) => {
    const w = worker;
    let up = false;
    w.onmessage = (ev) => {
      const m = ev.data;
      if (m.ready) { up = true; resolve(); return; }
      if (m.fatal) { reject(m.fatal); return; }
      if (m.crashed) { if (w === worker) recoverWorker(m.crashed.cause); return; }
      const p = pending.get(m.id);
      if (!p) return;
      if (m.progress) { p.onProgress?.(m.progress); return; }
      pending.delete(m.id);
      if (m.ok) p.resolve(m.result); else p.reject(m.error);
    };
    w.onerror = (ev) => {
      ev.preventDefault?.();
      if (up) {
        // An uncaught error in a running worker: its state is unknown, replace it.
        if (w === worker) recoverWorker(`an uncaught error in the worker: ${ev.message || 'unknown'}`);
        return;
      }
      const err = { kind: 'worker', message: `the worker failed: ${ev.message || 'could not start (is the wasm built?)'}` };
      reject(err);
      for (const [id, p] of pending) { pending.delete(id); p.reject(err); }
    };
  });
  workerReady.catch((e) => showError(e));
}

/** Call the worker. Returns {id, promise} so long jobs can be cancelled. */
export function request(op, args = {}, { onProgress, transfer = [] } = {}) {
  const id = nextId++;
  const promise = workerReady.then(() => new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onProgress });
    worker.postMessage({ id, op, args }, transfer);
  }));
  return { id, promise };
}

export function call(op, args, opts) {
  return request(op, args, opts).promise;
}

/** Stop the worker; every request waiting on it fails with `err`. */
function stopWorker(err) {
  worker.terminate();
  for (const [id, p] of pending) { pending.delete(id); p.reject(err); }
}

/** Stop whatever the worker is doing (a running check cannot be interrupted otherwise):
 * a fresh worker, and the current image reopened in it. */
export async function restartWorker(err = { kind: 'cancelled', message: 'cancelled' }) {
  stopWorker(err);
  startWorker();
  if (current && current.source.kind !== 'none') {
    await call('open', { source: current.source });
  } else if (current) {
    current = null;
    document.body.classList.remove('has-image');
  }
}

let recovering = false;

/** The worker crashed (a wasm trap, or an uncaught error): what it was doing fails with
 * `engine-crashed`, a fresh worker reopens the current image, and the user is told.
 * A crash while reopening gives the image up (no restart loop). */
async function recoverWorker(cause) {
  const root = document.documentElement;
  root.dataset.workerRestarts = String(Number(root.dataset.workerRestarts ?? 0) + 1);
  const err = { kind: 'engine-crashed', message: `the engine stopped unexpectedly (${cause}) and was restarted` };
  if (recovering) { stopWorker(err); startWorker(); return; }
  recovering = true;
  const name = current && current.source.kind !== 'none' ? current.file.name : null;
  try {
    await restartWorker(err);
    await afterPaint(); // after the failed operation has shown its own error
    showError({ kind: 'engine-crashed', message: `${err.message}${name ? `; ${name} was reopened` : ''}. What it was doing did not finish: try again, or report the image that caused it.` });
    status(`The engine was restarted${name ? ` and ${name} reopened` : ''}.`);
  } catch (e) {
    current = null;
    document.body.classList.remove('has-image');
    showError({ kind: 'engine-crashed', message: `${err.message}, but ${name ?? 'the image'} could not be reopened: ${e.message ?? e}` });
  } finally {
    recovering = false;
  }
}

/* ---------- status and errors ---------- */

export function status(text) {
  $('#status').textContent = text;
}

export function showError(e) {
  const box = $('#error');
  if (!e) { box.hidden = true; return; }
  $('#error-message').textContent = e.message ?? String(e);
  $('#error-kind').textContent = e.kind ? `(${e.kind})` : '';
  box.dataset.kind = e.kind ?? '';
  box.hidden = false;
}

/* ---------- opening ---------- */

export let current = null; // {source, info, file}

/** Replace the current image (page modules cannot assign an imported binding). */
export function setCurrent(c) {
  current = c;
}
let busy = 0;

export function setBusy(delta) {
  busy += delta;
  document.body.classList.toggle('busy', busy > 0);
  for (const b of document.querySelectorAll('#file-input, #sample, #check-run, #export-raw, #export-image, #create-run, .edit-action')) {
    b.disabled = busy > 0;
  }
}

export function afterPaint() {
  return new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
}

export async function openSource(source, label) {
  const t0 = performance.now();
  showError(null);
  status(`Opening ${label}…`);
  delete document.documentElement.dataset.mapMs;
  delete document.documentElement.dataset.headerMs;
  setBusy(1);
  try {
    const r = await call('open', { source });
    current = { source, info: r.info, file: r.file };
    document.body.classList.add('has-image');
    clearResults();
    renderCurrent(r);
    renderHeader(r);
    diffNotice(r);
    await afterPaint();
    const headerMs = performance.now() - t0;
    await loadMap();
    await afterPaint();
    const mapMs = performance.now() - t0;
    $('#cur-time').textContent = `${duration(mapMs)} (header shown after ${duration(headerMs)}, block map after ${duration(mapMs)})`;
    await refreshDiag();
    // Set last: tests and the benchmark wait for these.
    document.documentElement.dataset.headerMs = headerMs.toFixed(1);
    document.documentElement.dataset.mapMs = mapMs.toFixed(1);
    status(`Opened ${r.file.name}.`);
    document.dispatchEvent(new CustomEvent('image-opened'));
  } catch (e) {
    // Name the file that failed: the image shown below may be the one still open.
    status(`Could not open ${label}${current ? `; ${current.file.name} is still open` : ''}.`);
    showError(e);
    if (source.kind === 'file') document.dispatchEvent(new CustomEvent('open-failed', { detail: { file: source.file, error: e } }));
  } finally {
    setBusy(-1);
  }
}

export function clearResults() {
  $('#check-findings').replaceChildren();
  $('#check-counts').replaceChildren();
  $('#check-verdict').hidden = true;
  $('#export-result').hidden = true;
}

export function renderCurrent(r) {
  $('#current').hidden = false;
  $('#cur-name').textContent = r.file.name;
  const backends = {
    file: 'the file, in place (read-only)',
    memory: 'memory (built in this tab)',
    opfs: 'browser storage (OPFS)',
  };
  $('#cur-backend').textContent = backends[r.file.backend] ?? r.file.backend;
  $('#cur-size').textContent = `${human(r.file.length)} (${dec(r.file.length)} bytes)`;
  $('#cur-time').textContent = '';
}

/** What the worker has read and how much memory the engine holds (shown, and used by the
 * tests to prove a large image is never read whole). */
export async function refreshDiag() {
  try {
    const s = await call('stats');
    const read = $('#cur-read');
    if (s.read) {
      read.textContent = `${human(s.read.bytes)} in ${s.read.calls} read${s.read.calls === 1 ? '' : 's'}`;
      read.dataset.bytes = String(s.read.bytes);
      read.dataset.calls = String(s.read.calls);
    }
    const mem = $('#cur-memory');
    mem.textContent = `${human(s.memory)} of WebAssembly memory`;
    mem.dataset.bytes = String(s.memory);
  } catch { /* the worker is restarting */ }
}

/* ---------- header panel ---------- */

const KNOWN_TEXTS = {
  '<<< Oracle VM VirtualBox Disk Image >>>\n': 'written by Oracle VM VirtualBox',
  '<<< Sun VirtualBox Disk Image >>>\n': 'written by Sun VirtualBox',
  '<<< Sun xVM VirtualBox Disk Image >>>\n': 'written by Sun xVM VirtualBox',
  '<<< innotek VirtualBox Disk Image >>>\n': 'written by innotek VirtualBox',
  '<<< QEMU VM Virtual Disk Image >>>\n': 'written by QEMU',
};

export const NIL = '00000000-0000-0000-0000-000000000000';

function geometryText(g) {
  if (g == null) return 'none';
  return `cylinders ${g.cylinders}, heads ${g.heads}, sectors ${g.sectors}, sector size ${g['sector-size']}`;
}

function geometryMeaning(g, what) {
  if (g == null) return 'not stored: header size 0x180 has no LCHS field';
  if (!g.cylinders && !g.heads && !g.sectors) return `${what} unset (VirtualBox fills it in when a VM first uses the disk)`;
  const sectors = BigInt(g.cylinders) * BigInt(g.heads) * BigInt(g.sectors);
  return `${what}: ${sectors} sectors = ${human(sectors * BigInt(g['sector-size'] || 512))}`;
}

function bytesMeaning(n) {
  return `${human(n)} (${hex(n)})`;
}

/** Rows of the header table: [key, label, raw value, meaning, odd-note]. */
function headerRows(r) {
  const info = r.info;
  const d = info['format-specific'].data;
  const f = r.file;
  const bs = Number(d['block-size']);
  const rows = [];
  const add = (key, label, raw, meaning, note) => rows.push({ key, label, raw, meaning, note });

  const knownText = KNOWN_TEXTS[d.text];
  add('text', 'Text', esc(d.text), knownText ?? 'informational only (never used to detect the format)',
    knownText ? null : 'unusual text: harmless, the format is detected by its signature');
  const v0 = d['version-raw'] === 2;
  add('version', 'Version', d.version, v0 ? 'legacy v0.2 header' : `major ${d['version-raw'] >> 16}, minor ${d['version-raw'] & 0xffff}`,
    v0 ? 'legacy v0.2 header: it has no offsets or LCHS; opened read-only' : (d.version !== '1.1' ? 'version 1.1 is expected' : null));
  add('version-raw', 'Version (raw)', dec(d['version-raw']), hex(d['version-raw'], 8), null);
  const hs = Number(d['header-size']);
  add('header-size', 'Header size', dec(hs),
    v0 ? 'v0.2 headers have no size field' : hs === 0x190 ? '0x190: v1.1+ with LCHS geometry (as VirtualBox writes)'
      : hs === 0x180 ? '0x180: v1.1 without LCHS geometry (as QEMU writes)' : hex(hs),
    !v0 && hs !== 0x180 && hs !== 0x190 ? `unusual header size ${hex(hs)} (0x180 or 0x190 expected)` : null);
  const typeMeaning = { dynamic: 'dynamic: blocks are allocated as they are written', fixed: 'fixed: every block allocated at creation',
    undo: 'undo (legacy): read as dynamic', diff: 'differencing: unallocated blocks come from the parent image' };
  add('image-type', 'Image type', d['image-type'], typeMeaning[d['image-type']] ?? 'unknown',
    d['image-type'] === 'undo' ? 'legacy undo image' : d['image-type'] === 'diff' ? 'differencing image: needs its parent for unallocated blocks' : null);
  add('image-type-raw', 'Image type (raw)', dec(d['image-type-raw']), '1 normal, 2 fixed, 3 undo, 4 diff', null);
  const flags = Number(d['image-flags']);
  const flagNames = [];
  if (flags & 1) flagNames.push('zero-expand (bit 0)');
  if (flags & ~1) flagNames.push(`unknown bits ${hex(flags & ~1)}`);
  add('image-flags', 'Flags', dec(flags), `${hex(flags, 8)}: ${flagNames.length ? flagNames.join(', ') : 'none'}`,
    flags & ~1 ? 'unknown flag bits are set' : null);
  add('comment', 'Comment', esc(d.comment), d.comment === '' ? '(no comment)' : `${new TextEncoder().encode(d.comment).length} bytes of text`, null);
  add('offset-bmap', 'Block map offset', dec(d['offset-bmap']), bytesMeaning(d['offset-bmap']), null);
  add('offset-data', 'Data offset', dec(d['offset-data']), bytesMeaning(d['offset-data']), null);
  add('legacy-geometry', 'Legacy geometry', geometryText(d['legacy-geometry']), geometryMeaning(d['legacy-geometry'], 'physical CHS'),
    d['legacy-geometry']['sector-size'] !== 512 ? 'sector size should be 512' : null);
  add('dummy', 'Dummy', dec(d.dummy), 'unused (old BIOS translation mode)', null);
  const disk = d['disk-size'];
  const odd = BigInt(disk) % 512n !== 0n;
  add('disk-size', 'Disk size', dec(disk), `${bytesMeaning(disk)}`,
    odd ? `not a multiple of 512: read as ${dec(info['virtual-size'])} bytes (QEMU rounds up; VirtualBox rounds down to ${dec(BigInt(disk) / 512n * 512n)})` : null);
  add('virtual-size', 'Virtual size', dec(info['virtual-size']), `${bytesMeaning(info['virtual-size'])}: the disk a VM sees`, null);
  add('block-size', 'Block size', dec(bs), bytesMeaning(bs),
    bs !== 1 << 20 ? `${human(bs)} blocks: QEMU opens only 1 MiB blocks${bs < 128 << 10 ? '; VirtualBox needs at least 128 KiB' : ''}` : null);
  add('cluster-size', 'Cluster size', dec(info['cluster-size']), 'what qemu-img calls the block size', null);
  add('block-extra', 'Block extra', dec(d['block-extra']), Number(d['block-extra']) ? `${human(d['block-extra'])} prefix before each block's data` : 'no per-block prefix',
    Number(d['block-extra']) ? 'blocks carry an extra prefix (rare)' : null);
  const bii = BigInt(d['blocks-in-image']);
  const capacity = bii * BigInt(bs);
  const covering = BigInt(f['blocks-covering-disk']);
  add('blocks-in-image', 'Blocks in image', dec(d['blocks-in-image']), `× ${human(bs)} = ${human(capacity)} of capacity`,
    bii > covering ? `${bii - covering} block(s) lie past the end of the disk` : null);
  const ba = BigInt(d['blocks-allocated']);
  const stride = BigInt(f['block-stride']);
  const needed = BigInt(d['offset-data']) + ba * stride;
  add('blocks-allocated', 'Blocks allocated', dec(d['blocks-allocated']), `${pct(ba, bii)} of the blocks: ${human(ba * BigInt(bs))} of data in the file`,
    BigInt(f.length) < needed ? `the file (${dec(f.length)} bytes) is shorter than its ${ba} allocated blocks need (${needed}): run Check` : null);
  const uuidRow = (key, label, meaning, nilMeaning, nilNote) => {
    const u = d[key];
    add(key, label, u, u === NIL ? nilMeaning : meaning, u === NIL ? nilNote : null);
  };
  uuidRow('uuid', 'Image UUID', 'identity in VirtualBox\'s media registry', 'null', 'null image UUID: VirtualBox refuses to register it');
  uuidRow('modify-uuid', 'Modify UUID', 'renewed by VirtualBox when the image is first written in a session', 'null', null);
  uuidRow('parent-uuid', 'Parent UUID', 'the parent image this differencing image is based on', 'none: not a differencing image', null);
  uuidRow('parent-modify-uuid', 'Parent modify UUID', 'the parent\'s modify UUID when this image was made', 'none', null);
  add('lchs-geometry', 'LCHS geometry', geometryText(d['lchs-geometry']), geometryMeaning(d['lchs-geometry'], 'logical CHS'), null);
  add('file-length', 'File length', dec(f.length), `${bytesMeaning(f.length)}: ${pct(f.length, info['virtual-size'])} of the virtual size`, null);
  return rows;
}

export function renderHeader(r) {
  const tbody = $('#header-table tbody');
  const rows = headerRows(r).map((row) => el('tr', { 'data-field': row.key, class: row.note ? 'odd' : null },
    el('th', { scope: 'row', text: row.label }),
    el('td', { class: 'raw', text: row.raw }),
    el('td', { class: 'meaning' },
      el('span', { class: 'human', text: row.meaning }),
      row.note ? el('span', { class: 'note', text: row.note }) : null)));
  tbody.replaceChildren(...rows);
  const notes = [...(r.info.notes ?? [])];
  if (r.file['layout-error']) notes.unshift(`broken layout (opened for inspection only): ${r.file['layout-error']}`);
  if (BigInt(r.file['readable-entries']) < BigInt(r.info['format-specific'].data['blocks-in-image'])) {
    notes.unshift(`the file ends inside the block map (the block map needs ${dec(r.file['map-end'])} bytes, the file has ${dec(r.file.length)}): only ${r.file['readable-entries']} of ${r.info['format-specific'].data['blocks-in-image']} entries can be read`);
  }
  $('#notes').replaceChildren(...notes.map((n) => el('li', { text: n })));
}

/* ---------- block map ---------- */

export const COLORS = {
  data: [37, 99, 235],
  zero: [20, 184, 166],
  free: [226, 232, 240],
  unreadable: [220, 38, 38],
};
export const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const MAX_CELLS = 262144;

let map = null; // {per, cells, blocks, readable, data, zero, slot, summary}
let mapLayout = null; // {cell, cols, rows, dpr}
let mapView = 'state';
let selected = -1;

export function ramp(t) {
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  return RAMP[i].map((c, k) => Math.round(c + (RAMP[i + 1][k] - c) * f));
}

/**
 * Lay `blocks` blocks out as square cells in a canvas `cssW` CSS pixels wide and at most
 * `maxCssH` high: the largest cell size (from `sizesCss`, then 1 device pixel) that fits,
 * folding several blocks into one cell (`per`) when even 1-pixel cells would not fit or
 * there would be more than MAX_CELLS cells. Sizes are in device pixels.
 */
export function planCells(blocks, cssW, maxCssH, sizesCss) {
  const dpr = window.devicePixelRatio || 1;
  const W = Math.floor(cssW * dpr);
  const maxH = Math.floor(maxCssH * dpr);
  const sizes = sizesCss.map((s) => Math.round(s * dpr)).concat([1]);
  const fit = (n) => {
    for (const cell of sizes) {
      const cols = Math.floor(W / cell);
      const rows = Math.ceil(n / cols);
      if (rows * cell <= maxH) return { cell, cols, rows };
    }
    return null;
  };
  let per = 1;
  let lay = blocks <= MAX_CELLS ? fit(blocks) : null;
  if (!lay) {
    per = Math.max(Math.ceil(blocks / (W * maxH)), Math.ceil(blocks / MAX_CELLS), 1);
    lay = fit(Math.ceil(blocks / per)) ?? { cell: 1, cols: W, rows: Math.ceil(Math.ceil(blocks / per) / W) };
  }
  return { per, dpr, ...lay };
}

/** Choose the cell size (device pixels) and blocks per cell for the block map panel. */
export function planMap(blocks) {
  const canvas = $('#map-canvas');
  const cssW = Math.max(200, canvas.parentElement.clientWidth);
  const maxCssH = window.innerWidth < 600 ? 280 : 400;
  return { cssW, ...planCells(blocks, cssW, maxCssH, [40, 32, 24, 20, 16, 14, 12, 10, 8, 6, 5, 4, 3, 2]) };
}

export async function loadMap() {
  const blocks = Number(current.info['format-specific'].data['blocks-in-image']);
  const plan = planMap(blocks);
  if (!map || map.per !== plan.per || map.blocks !== blocks || map.source !== current) {
    const m = await call('mapCells', { per: plan.per });
    map = { ...m, source: current };
  }
  mapLayout = plan;
  selected = -1;
  drawMap();
  renderMapSummary();
}

/** Mix colours by weight; a part present at all gets at least `floor` of the cell so a
 * single data block among thousands of free ones still shows. */
/** Blend the colours of `parts` ([rgb, count]) of a cell of `n` blocks; a part present at all
 * gets at least `floor` of the weight, so one odd block in a large cell stays visible. */
export function mix(parts, n, floor) {
  const w = parts.map(([, c]) => (c > 0 ? Math.max(c / n, floor) : 0));
  const sum = w.reduce((a, b) => a + b, 0) || 1;
  const out = [0, 0, 0];
  parts.forEach(([col], k) => { if (w[k]) for (let j = 0; j < 3; j++) out[j] += (col[j] * w[k]) / sum; });
  return out;
}

function cellColor(i) {
  const per = map.per;
  const first = i * per;
  const n = Math.min(per, map.blocks - first);
  const unread = Math.max(0, Math.min(n, first + n - map.readable));
  const d = map.data[i];
  const z = map.zero[i];
  const free = n - d - z - unread;
  const floor = per > 1 ? 0.6 : 0;
  if (mapView === 'position') {
    const maxSlot = map.summary['max-slot'] ?? 0;
    const c = d ? ramp(maxSlot ? map.slot[i] / maxSlot : 0) : [0, 0, 0];
    return mix([[c, d], [[204, 239, 233], z], [[236, 239, 243], free], [COLORS.unreadable, unread]], n, floor);
  }
  return mix([[COLORS.data, d], [COLORS.zero, z], [COLORS.free, free], [COLORS.unreadable, unread]], n, floor);
}

/**
 * Size `canvas` for `plan` ({cell, cols, rows, dpr}) and paint `cells` square cells, each
 * `per` blocks, cell `i` in `colorOf(i)` ([r, g, b]), `gap` device pixels apart. Returns the
 * canvas's 2D context.
 */
export function paintCells(canvas, plan, cells, per, gap, colorOf) {
  const { cell, cols, rows, dpr } = plan;
  const W = cols * cell;
  const H = Math.max(1, rows * cell);
  canvas.width = W;
  canvas.height = H;
  canvas.style.width = `${W / dpr}px`;
  canvas.style.height = `${H / dpr}px`;
  canvas.dataset.cols = cols;
  canvas.dataset.cell = String(cell / dpr);
  canvas.dataset.per = per;
  canvas.dataset.cells = cells;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(W, H);
  const px = img.data;
  const inner = cell - gap;
  for (let i = 0; i < cells; i++) {
    const [r, g, b] = colorOf(i);
    const x0 = (i % cols) * cell;
    const y0 = Math.floor(i / cols) * cell;
    for (let y = y0; y < y0 + inner; y++) {
      let o = (y * W + x0) * 4;
      for (let x = 0; x < inner; x++, o += 4) {
        px[o] = r; px[o + 1] = g; px[o + 2] = b; px[o + 3] = 255;
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  return ctx;
}

function drawMap() {
  const canvas = $('#map-canvas');
  const { cell, cols, dpr } = mapLayout;
  const gap = cell >= 20 ? 2 : cell >= 6 ? 1 : 0;
  const ctx = paintCells(canvas, mapLayout, map.cells, map.per, gap, cellColor);
  if (selected >= 0) {
    const x0 = (selected % cols) * cell;
    const y0 = Math.floor(selected / cols) * cell;
    ctx.strokeStyle = '#111';
    ctx.lineWidth = Math.max(1, Math.round(dpr));
    ctx.strokeRect(x0 + 0.5, y0 + 0.5, Math.max(1, cell - 1), Math.max(1, cell - 1));
  }
  canvas.setAttribute('aria-label', `Block map: ${map.blocks} blocks${map.per > 1 ? `, ${map.per} per cell` : ''}, coloured by ${mapView === 'state' ? 'state' : 'position in the file'}`);
  renderLegend();
}

function swatch(rgb, label, k) {
  return el('span', { class: 'key', 'data-k': k },
    el('span', { class: `sw sw-${k}`, 'aria-hidden': 'true' }), label);
}

function renderLegend() {
  const lg = $('#map-legend');
  if (mapView === 'state') {
    lg.replaceChildren(swatch(COLORS.data, 'data (stored in the file)', 'data'),
      swatch(COLORS.zero, 'zero (discarded, reads as zeros)', 'zero'),
      swatch(COLORS.free, 'free (never written)', 'free'),
      ...(map.readable < map.blocks ? [swatch(COLORS.unreadable, 'unreadable (map truncated)', 'unreadable')] : []));
  } else {
    lg.replaceChildren(el('span', { class: 'key' }, el('span', { class: 'sw sw-ramp', 'aria-hidden': 'true' }),
      'data block position in the file: start → end. A smooth left-to-right gradient means sequential; jumps mean fragmentation.'));
  }
  if (map.per > 1) lg.append(el('span', { class: 'key per', text: `each cell is ${map.per} blocks (a cell with any data or zero blocks shows their colour)` }));
}

/** One figure of a summary: <div class=stat><dt>label</dt><dd data-k>value</dd></div>. */
function stat([k, label, v]) {
  const text = String(v);
  return el('div', { class: text.length > 24 ? 'stat wide' : 'stat' }, el('dt', { text: label }), el('dd', { 'data-k': k, text }));
}

function renderMapSummary() {
  const s = map.summary;
  const d = current.info['format-specific'].data;
  const bs = Number(d['block-size']);
  const fileLen = Number(current.file.length);
  const dataBytes = s.data * bs;
  const items = [
    ['blocks', 'Blocks', `${s.blocks}`],
    ['data', 'Data', `${s.data}`],
    ['zero', 'Zero', `${s.zero}`],
    ['free', 'Free', `${s.free}`],
    ...(s.unreadable ? [['unreadable', 'Unreadable', `${s.unreadable}`]] : []),
    ['allocated', 'Allocated', pct(s.data, s.blocks)],
    ['fragmented', 'Out-of-order blocks', `${s.fragmented}`],
    ['efficiency', 'File efficiency', `${pct(dataBytes, fileLen)} of the file is block data (${human(dataBytes)} of ${human(fileLen)})`],
    ['saving', 'Space used', `the file is ${pct(fileLen, current.info['virtual-size'])} of the virtual size`],
  ];
  $('#map-summary').replaceChildren(...items.map(stat));
}

let tipToken = 0;

async function showTip(i, anchor) {
  const tip = $('#map-tip');
  if (i < 0 || !map || i >= map.cells) { tip.hidden = true; return; }
  const token = ++tipToken;
  const first = i * map.per;
  const end = Math.min(map.blocks, first + map.per);
  let rowsOut;
  try {
    if (map.per === 1) {
      const b = await call('blockInfo', { block: first });
      if (token !== tipToken) return;
      rowsOut = [
        ['block', 'Block', `${b.block}`],
        ['state', 'State', b.state],
        ['virtual', 'Virtual offset', `${dec(b['virtual-offset'])} (${hex(b['virtual-offset'])}, ${human(b['virtual-offset'])}), ${dec(b['virtual-length'])} bytes`],
      ];
      if (b.state === 'data') {
        rowsOut.push(['host', 'Host offset', `${dec(b['host-offset'])} (${hex(b['host-offset'])})${b['in-file'] ? '' : ' — past the end of the file!'}`]);
        rowsOut.push(['slot', 'Slot', `${b.slot}`]);
      } else {
        const fromParent = b.state === 'free' && current.info['format-specific'].data['image-type'] === 'diff';
        rowsOut.push(['host', 'Host offset', b.state === 'unreadable' ? 'unknown (map truncated)'
          : fromParent ? 'none: a differencing image reads this block from its parent image' : 'none (reads as zeros)']);
      }
      rowsOut.push(['entry', 'Map entry', `at ${dec(b['entry-offset'])} (${hex(b['entry-offset'])})${b['raw-entry'] != null ? ` = ${hex(b['raw-entry'], 8)}` : ''}`]);
    } else {
      const r = await call('rangeInfo', { first, end });
      if (token !== tipToken) return;
      rowsOut = [
        ['block', 'Blocks', `${first} – ${end - 1}`],
        ['state', 'States', `${r.data} data, ${r.zero} zero, ${r.free} free${r.unreadable ? `, ${r.unreadable} unreadable` : ''}`],
        ['virtual', 'Virtual offsets', `${dec(r['virtual-offset'])} – ${dec(r['virtual-end'])} (${human(r['virtual-offset'])} – ${human(r['virtual-end'])})`],
        ['host', 'Host offsets', r['host-min'] != null ? `${dec(r['host-min'])} – ${dec(r['host-max-end'])} (${hex(r['host-min'])} – ${hex(r['host-max-end'])})` : 'none'],
      ];
    }
  } catch (e) {
    if (token !== tipToken) return;
    rowsOut = [['error', 'Error', e.message]];
  }
  tip.replaceChildren(el('dl', {}, ...rowsOut.flatMap(([k, label, v]) => [el('dt', { text: label }), el('dd', { 'data-k': k, text: v })])));
  tip.dataset.cell = String(i);
  tip.hidden = false;
  const wrap = $('#map-wrap');
  const { cell, cols, dpr } = mapLayout;
  const cx = anchor ? anchor.x : ((i % cols) + 1) * cell / dpr;
  const cy = anchor ? anchor.y : (Math.floor(i / cols) + 1) * cell / dpr;
  const left = Math.min(cx + 12, wrap.clientWidth - tip.offsetWidth - 4);
  tip.style.left = `${Math.max(0, left)}px`;
  tip.style.top = `${cy + 12}px`;
}

function cellAt(ev) {
  const canvas = $('#map-canvas');
  const rect = canvas.getBoundingClientRect();
  const x = ev.clientX - rect.left;
  const y = ev.clientY - rect.top;
  const { cell, cols, dpr } = mapLayout;
  const col = Math.floor((x * dpr) / cell);
  const row = Math.floor((y * dpr) / cell);
  if (col < 0 || col >= cols || row < 0) return { i: -1 };
  const i = row * cols + col;
  return { i: i < map.cells ? i : -1, x, y };
}

let hoverFrame = 0;
function onMapMove(ev) {
  if (!map || !mapLayout) return;
  const at = cellAt(ev);
  cancelAnimationFrame(hoverFrame);
  hoverFrame = requestAnimationFrame(() => showTip(at.i, at));
}

function onMapKey(ev) {
  if (!map || !mapLayout) return;
  const { cols } = mapLayout;
  const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols, PageUp: -cols * 8, PageDown: cols * 8 };
  let i = selected < 0 ? 0 : selected;
  if (ev.key in moves) i += moves[ev.key];
  else if (ev.key === 'Home') i = 0;
  else if (ev.key === 'End') i = map.cells - 1;
  else if (ev.key === 'Escape') { selected = -1; drawMap(); showTip(-1); return; }
  else return;
  ev.preventDefault();
  selected = Math.max(0, Math.min(map.cells - 1, i));
  drawMap();
  showTip(selected);
}

/* ---------- check ---------- */

export function progressUi(prefix) {
  const row = $(`#${prefix}-progress-row`);
  const bar = $(`#${prefix}-progress`);
  const text = $(`#${prefix}-progress-text`);
  const t0 = performance.now();
  let frame = 0;
  let last = null;
  row.hidden = false;
  bar.value = 0;
  text.textContent = 'starting…';
  return {
    update(p, unit = 'bytes') {
      last = p;
      if (frame) return;
      frame = requestAnimationFrame(() => {
        frame = 0;
        const { done, total } = last;
        bar.max = 1;
        bar.value = total ? done / total : 1;
        const ms = performance.now() - t0;
        if (unit === 'bytes') {
          const speed = ms > 200 ? ` · ${rate(done, ms)}` : '';
          const eta = done > 0 && ms > 500 ? ` · ${duration((ms / done) * (total - done))} left` : '';
          text.textContent = `${human(done)} of ${human(total)}${last.ofData ? ' of data' : ''}${speed}${eta}`;
        } else {
          text.textContent = `${done} of ${total} ${unit}`;
        }
      });
    },
    done() {
      cancelAnimationFrame(frame);
      row.hidden = true;
    },
  };
}

let checkJob = null;

export async function runCheck() {
  if (!current) return;
  showError(null);
  $('#check-verdict').hidden = true;
  setBusy(1);
  $('#check-cancel').hidden = false;
  const ui = progressUi('check');
  try {
    const job = request('check', {}, { onProgress: (p) => ui.update(p, 'map entries') });
    checkJob = job;
    const r = await job.promise;
    renderCheck(r);
    status(`Check finished in ${duration(r.ms)}.`);
  } catch (e) {
    if (e.kind === 'cancelled') status('Check cancelled.'); else showError(e);
  } finally {
    checkJob = null;
    ui.done();
    refreshDiag();
    $('#check-cancel').hidden = true;
    setBusy(-1);
  }
}

async function cancelCheck() {
  if (!checkJob) return;
  status('Cancelling the check…');
  await restartWorker().catch(showError);
}

function renderCheck(r) {
  const verdict = $('#check-verdict');
  verdict.hidden = false;
  const clean = r.corruptions === 0 && r.leaks === 0;
  verdict.className = `verdict ${clean ? 'clean' : r.corruptions ? 'bad' : 'warn'}`;
  verdict.textContent = clean
    ? 'No errors were found on the image.'
    : `${r.corruptions} corruption${r.corruptions === 1 ? '' : 's'} and ${r.leaks} leak${r.leaks === 1 ? '' : 's'} found.`;
  verdict.dataset.corruptions = r.corruptions;
  verdict.dataset.leaks = r.leaks;
  const counts = [
    ['total-clusters', 'Blocks', r['total-clusters']],
    ['allocated-clusters', 'Allocated', r['allocated-clusters']],
    ['zero-clusters', 'Zero', r['zero-clusters']],
    ['free-clusters', 'Free', r['free-clusters']],
    ['fragmented-clusters', 'Fragmented', r['fragmented-clusters']],
    ['unreadable-entries', 'Unreadable entries', r['unreadable-entries']],
    ['image-end-offset', 'Image end offset', `${dec(r['image-end-offset'])} (${human(r['image-end-offset'])})`],
    ['file-length', 'File length', `${dec(r['file-length'])} (${human(r['file-length'])})`],
  ];
  $('#check-counts').replaceChildren(...counts.map(stat));
  const items = r.findings.map((f) => el('li', { class: `finding ${f.severity}`, 'data-kind': f.kind, 'data-severity': f.severity },
    el('span', { class: 'sev', text: f.severity }), ' ',
    el('code', { class: 'kind', text: f.kind }), ' ',
    el('span', { class: 'loc', text: f.location }), ' ',
    el('span', { class: 'msg', text: f.message })));
  if (r['unlisted-findings']) items.push(el('li', { class: 'more', text: `… and ${r['unlisted-findings']} more not listed` }));
  $('#check-findings').replaceChildren(...items);
}

/* ---------- saving: a save dialog where the browser has one, else OPFS then download ---------- */

/** Benchmark only (?sink=null): exports are read and thrown away, to time reading alone. */
const NULL_SINK = new URLSearchParams(location.search).get('sink') === 'null';

export async function pickTarget(suggestedName, description, ext) {
  if (NULL_SINK) return { kind: 'null' };
  if (typeof window.showSaveFilePicker !== 'function') return { kind: 'opfs' };
  try {
    const handle = await window.showSaveFilePicker({
      suggestedName,
      types: [{ description, accept: { 'application/octet-stream': [ext] } }],
    });
    return { kind: 'handle', handle };
  } catch (e) {
    if (e && e.name === 'AbortError') return null; // the user closed the dialog
    return { kind: 'opfs' }; // not allowed here (e.g. in a frame): fall back
  }
}

export function download(file, name) {
  const url = URL.createObjectURL(file);
  const a = el('a', { href: url, download: name, hidden: '' });
  document.body.append(a);
  a.click();
  a.remove();
  // The download has its own reference once started.
  setTimeout(() => URL.revokeObjectURL(url), 120000);
}

export function baseName(name) {
  return String(name).replace(/\.vdi$/i, '') || 'disk';
}

let exportJob = null;

export async function runExport(kind) {
  if (!current) return;
  showError(null);
  const raw = kind === 'raw';
  const name = raw ? `${baseName(current.file.name)}.raw` : (/\.vdi$/i.test(current.file.name) ? current.file.name : `${current.file.name}.vdi`);
  const result = $('#export-result');
  result.hidden = true;
  const target = await pickTarget(name, raw ? 'Raw disk image' : 'VirtualBox disk image', raw ? '.raw' : '.vdi');
  if (!target) { status('Save cancelled.'); return; }
  setBusy(1);
  $('#export-cancel').hidden = false;
  const ui = progressUi('export');
  try {
    const job = request(raw ? 'exportRaw' : 'exportImage', { target, name }, { onProgress: (p) => ui.update(p) });
    exportJob = job;
    const r = await job.promise;
    const speed = r.ms > 0 ? `, ${rate(r.size, r.ms)}` : '';
    const data = raw && r.dataBytes != null && r.dataBytes !== r.size ? ` (${human(r.dataBytes)} of data)` : '';
    if (r.kind === 'download') {
      download(r.file, r.name);
      result.textContent = `${r.name}: ${human(r.size)}${data} ready in ${duration(r.ms)}${speed}; your browser is saving it to your downloads.`;
    } else if (r.kind === 'saved') {
      result.textContent = `Saved ${r.name}: ${human(r.size)}${data} in ${duration(r.ms)}${speed}.`;
    } else {
      result.textContent = `Read ${human(r.size)}${data} in ${duration(r.ms)}${speed} (output discarded).`;
    }
    result.dataset.ms = String(r.ms);
    result.dataset.finishMs = String(r.finishMs ?? 0);
    result.dataset.size = String(r.size);
    result.hidden = false;
    status(result.textContent);
  } catch (e) {
    if (e.kind === 'cancelled') status('Export cancelled; the partial file was removed.'); else showError(e);
  } finally {
    exportJob = null;
    ui.done();
    refreshDiag();
    $('#export-cancel').hidden = true;
    setBusy(-1);
    refreshStorage();
  }
}

function cancelExport() {
  if (exportJob) call('cancel', { target: exportJob.id });
}

export async function refreshStorage() {
  try {
    const s = await call('storage');
    const staged = s.staged.reduce((a, f) => a + f.size, 0);
    const parts = [];
    if (s.quota != null) parts.push(`Browser storage: ${human(s.usage)} used of ${human(s.quota)} allowed`);
    if (s.staged.length) parts.push(`${s.staged.length} staged file(s), ${human(staged)}`);
    $('#storage-text').textContent = parts.join(' · ');
    $('#storage-free').hidden = s.staged.length === 0;
  } catch {
    $('#storage-text').textContent = '';
  }
}

/* ---------- create ---------- */

/** The raw disk file chosen in the Create panel, if any. */
function createRaw() {
  const f = $('#create-raw').files;
  return f && f.length ? f[0] : null;
}

function createOptions() {
  const raw = createRaw();
  $('#create-size').disabled = !!raw;
  if (raw) $('#create-size').value = String(Math.max(512, Math.ceil(raw.size / 512) * 512));
  const size = parseSize($('#create-size').value);
  const fixed = document.querySelector('input[name=kind]:checked').value === 'fixed';
  const blockSize = Number($('#create-block').value);
  const layout = $('#create-layout').value;
  const comment = $('#create-comment').value;
  const commentBytes = new TextEncoder().encode(comment).length;
  if (size.error) return { error: size.error };
  if (commentBytes > 255) return { error: `the comment is ${commentBytes} bytes of UTF-8; at most 255 fit` };
  if (comment.includes('\0')) return { error: 'the comment may not contain a NUL character' };
  return { options: { size: size.bytes, fixed, block_size: blockSize, layout, comment } };
}

function describeCreate() {
  const o = createOptions();
  const out = $('#create-summary');
  out.classList.toggle('invalid', !!o.error);
  if (o.error) { out.textContent = o.error; return o; }
  const { size, fixed, block_size: bs, layout } = o.options;
  const virt = Math.ceil(size / 512) * 512;
  const blocks = Math.ceil(virt / bs);
  const mapBytes = blocks * 4;
  const dataOff = layout === 'vbox' ? Math.ceil((0x100000 + mapBytes) / 0x100000) * 0x100000 : 0x200 + Math.ceil(mapBytes / 512) * 512;
  const fileLen = dataOff + (fixed ? blocks * bs : 0);
  const raw = createRaw();
  out.textContent = raw
    ? `${human(virt)} ${fixed ? 'fixed' : 'dynamic'} disk holding ${raw.name}: ${blocks} blocks of ${human(bs)}; ${fixed ? `the new file is ${human(fileLen)}` : 'only blocks with data are stored'}.`
    : `${human(virt)} ${fixed ? 'fixed' : 'dynamic'} disk: ${blocks} blocks of ${human(bs)}; the new file is ${human(fileLen)}${fixed ? '' : ' and grows as data is written'}.`;
  return o;
}

async function runCreate(ev) {
  ev.preventDefault();
  const o = describeCreate();
  if (o.error) { $('#create-size').focus(); return; }
  showError(null);
  const result = $('#create-result');
  result.hidden = true;
  const target = await pickTarget('new.vdi', 'VirtualBox disk image', '.vdi');
  if (!target) { status('Save cancelled.'); return; }
  setBusy(1);
  const ui = progressUi('create');
  const t0 = performance.now();
  const raw = createRaw();
  // Importing reads the whole raw file: it can be cancelled (through a shared flag the
  // engine polls when the page is cross-origin isolated, else by stopping the worker).
  const flag = raw && globalThis.crossOriginIsolated ? new SharedArrayBuffer(4) : null;
  const cancel = $('#create-cancel');
  cancel.hidden = !raw;
  cancel.onclick = () => {
    if (flag) Atomics.store(new Int32Array(flag), 0, 1);
    else restartWorker().catch(showError);
  };
  try {
    const r = raw
      ? await call('importRaw', { options: o.options, target, file: raw, flag }, { onProgress: (p) => ui.update(p) })
      : await call('create', { options: o.options, target }, { onProgress: (p) => ui.update(p) });
    const saved = r.saved;
    // Where the image can be reopened from (after a cancelled check restarts the worker).
    let source = { kind: 'none' };
    if (saved.kind === 'download') source = { kind: 'file', file: new File([saved.file], saved.name) };
    else if (target.kind === 'handle') source = await target.handle.getFile().then((file) => ({ kind: 'file', file }), () => source);
    if (saved.kind === 'download') download(saved.file, saved.name);
    // The new image is now the open one in the worker.
    current = { source, info: r.info.info, file: r.info.file };
    document.body.classList.add('has-image');
    clearResults();
    renderCurrent(r.info);
    renderHeader(r.info);
    await loadMap();
    document.dispatchEvent(new CustomEvent('image-opened'));
    const from = r.import ? ` from ${raw.name} (${human(r.import['data-bytes'])} of data stored, ${human(r.import['zero-bytes'])} of zeros skipped)` : '';
    result.textContent = saved.kind === 'download'
      ? `Created ${saved.name} (${human(saved.size)})${from}; your browser is saving it to your downloads.`
      : `Created and saved ${saved.name} (${human(saved.size)})${from} in ${duration(performance.now() - t0)}.`;
    if (r.import) result.dataset.dataBytes = String(r.import['data-bytes']);
    result.hidden = false;
    status(result.textContent);
  } catch (e) {
    if (e.kind === 'cancelled') status('Import cancelled; nothing was saved.'); else showError(e);
  } finally {
    ui.done();
    cancel.hidden = true;
    cancel.onclick = null;
    setBusy(-1);
    refreshStorage();
    refreshDiag();
  }
}

/* ---------- wiring ---------- */

function init() {
  startWorker();
  initEdit();
  initChain();
  const input = $('#file-input');
  input.addEventListener('change', () => {
    const files = [...(input.files || [])];
    input.value = '';
    if (files.length > 1) openChain(files);
    else if (files[0]) openSource({ kind: 'file', file: files[0] }, files[0].name);
  });
  const drop = $('#drop');
  drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    if (busy > 0) { status('Busy: wait for the current task to finish (or cancel it), then drop the file again.'); return; }
    if (takeDrop(ev.dataTransfer)) return; // several files or a folder: a snapshot chain (chain.js)
    const f = ev.dataTransfer && ev.dataTransfer.files[0];
    if (f) openSource({ kind: 'file', file: f }, f.name);
    else showError({ kind: 'invalid-argument', message: 'drop a file (folders and text are not images)' });
  });
  // A file dropped outside the zone must not navigate away from the page.
  window.addEventListener('dragover', (ev) => ev.preventDefault());
  window.addEventListener('drop', (ev) => ev.preventDefault());
  $('#sample').addEventListener('click', () => openSource({ kind: 'sample' }, 'the sample image'));

  const canvas = $('#map-canvas');
  canvas.addEventListener('mousemove', onMapMove);
  canvas.addEventListener('mouseleave', () => { if (selected < 0) { tipToken++; $('#map-tip').hidden = true; } });
  canvas.addEventListener('keydown', onMapKey);
  // A click pins the cell: the arrow keys then move from it.
  canvas.addEventListener('click', (ev) => {
    if (!map || !mapLayout) return;
    const at = cellAt(ev);
    if (at.i < 0) return;
    selected = at.i;
    drawMap();
    showTip(at.i, at);
  });
  canvas.addEventListener('blur', () => { tipToken++; $('#map-tip').hidden = true; });
  for (const r of document.querySelectorAll('input[name=map-view]')) {
    r.addEventListener('change', () => { mapView = r.value; if (map) drawMap(); });
  }
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (map && current) loadMap().catch(showError); }, 150);
  });

  $('#check-run').addEventListener('click', runCheck);
  $('#check-cancel').addEventListener('click', cancelCheck);
  $('#export-raw').addEventListener('click', () => runExport('raw'));
  $('#export-image').addEventListener('click', () => runExport('image'));
  $('#export-cancel').addEventListener('click', cancelExport);
  $('#storage-free').addEventListener('click', async () => {
    await call('freeStorage').catch(showError);
    refreshStorage();
  });
  const form = $('#create-form');
  form.addEventListener('submit', runCreate);
  form.addEventListener('input', describeCreate);
  describeCreate();
  refreshStorage();
}

init();
