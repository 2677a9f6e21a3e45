// Snapshot chains in the page: several files (or a folder) dropped at once are linked by
// UUID in the worker (chain-worker.js); this module draws the chain, each layer's block map,
// the combined map coloured by the layer that supplies each block, and runs the flattened
// exports. DOM only; everything from an image or a file name is set with textContent.

import {
  $, el, human, dec, pct, duration, rate, call, request, showError, status, progressUi, pickTarget, download,
  baseName, openSource, COLORS, NIL, planCells, paintCells, mix,
} from './main.js';

/** Most files taken from one drop or folder. */
export const MAX_FILES = 64;
/** Most directory entries looked at while walking a dropped folder. */
const MAX_ENTRIES = 4096;

/** Layer colours, base first (distinct from the zero/free colours). */
export const LAYER_COLORS = [
  [37, 99, 235], [234, 88, 12], [147, 51, 234], [22, 163, 74], [219, 39, 119],
  [202, 138, 4], [14, 116, 144], [120, 53, 15], [79, 70, 229], [190, 18, 60],
];

export function layerColor(i) {
  return LAYER_COLORS[i % LAYER_COLORS.length];
}

let chain = null; // {info, files, combined, layers: [cells]}
let busy = false;
let job = null;

const isVdi = (name) => /\.vdi$/i.test(name);
const q = (s) => `\u201c${s}\u201d`;

/* ---------- collecting the files of a drop ---------- */

function readAllEntries(dirEntry) {
  const reader = dirEntry.createReader();
  const out = [];
  return new Promise((resolve, reject) => {
    const next = () => reader.readEntries((batch) => {
      if (!batch.length || out.length >= MAX_ENTRIES) { resolve(out); return; }
      out.push(...batch);
      next();
    }, reject);
    next();
  });
}

const entryFile = (entry) => new Promise((resolve, reject) => entry.file(resolve, reject));

/** The .vdi files under `entries` (folders walked recursively), at most MAX_FILES + 1. */
async function collectEntries(entries) {
  const files = [];
  const queue = [...entries];
  let seen = 0;
  while (queue.length && files.length <= MAX_FILES && seen < MAX_ENTRIES) {
    const e = queue.shift();
    seen += 1;
    if (e.isDirectory) queue.push(...await readAllEntries(e));
    else if (e.isFile && isVdi(e.name)) files.push(await entryFile(e));
  }
  return files;
}

/**
 * A drop: several files or a folder go to chain mode (returns true); one plain file is
 * left to the single-image workbench (returns false). Must be called during the drop event
 * (the entries can only be taken then).
 */
export function takeDrop(dt) {
  if (!dt) return false;
  const items = [...(dt.items || [])].filter((i) => i.kind === 'file');
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null)).filter(Boolean);
  const hasDir = entries.some((e) => e.isDirectory);
  const files = [...(dt.files || [])];
  if (!hasDir && files.length <= 1) return false;
  if (busy) { status('Busy: wait for the current task to finish (or cancel it), then drop the files again.'); return true; }
  const got = hasDir ? collectEntries(entries) : Promise.resolve(files);
  got.then((fs) => openChain(fs, hasDir), (e) => showError({ kind: 'browser', message: `the dropped folder could not be read: ${e?.message ?? e}` }));
  return true;
}

/* ---------- opening ---------- */

/** Open `files` as one chain. From a folder (or a mixed pick), only .vdi files are kept. */
export async function openChain(fileList, fromFolder = false) {
  let files = [...fileList];
  if (fromFolder || files.some((f) => isVdi(f.name))) {
    const vdis = files.filter((f) => isVdi(f.name));
    if (fromFolder || vdis.length >= 2) files = vdis;
  }
  showError(null);
  if (files.length === 0) {
    showError({ kind: 'invalid-argument', message: 'no .vdi files were found in what was dropped' });
    return;
  }
  if (files.length > MAX_FILES) {
    showError({ kind: 'invalid-argument', message: `more than ${MAX_FILES} .vdi files were dropped; drop the files of one chain (a base and its snapshots)` });
    return;
  }
  if (files.length === 1) {
    // A folder with one image: the single-image workbench.
    await openSource({ kind: 'file', file: files[0] }, files[0].name);
    return;
  }
  delete document.documentElement.dataset.chainMs;
  const t0 = performance.now();
  setChainBusy(true);
  status(`Linking ${files.length} images by UUID…`);
  try {
    let info;
    try {
      info = await call('chainOpen', { files });
    } catch (e) {
      closeChain();
      call('chainClose').catch(() => {});
      status('');
      showError(e);
      document.documentElement.dataset.chainMs = String(performance.now() - t0);
      return;
    }
    chain = { info, files: info.layers.map((l) => files[l.index]) };
    renderChain();
    await loadChainMaps();
    const top = info.layers[info.layers.length - 1];
    status(`Opened a chain of ${info.layers.length} images: ${info.layers.map((l) => l.name).join(' \u2192 ')}.`);
    // The header, map and check panels show the top layer (the image a VM writes to).
    const topFile = chain.files[chain.files.length - 1];
    if (topFile) await openSource({ kind: 'file', file: topFile }, top.name);
    status(`Opened a chain of ${info.layers.length} images: ${info.layers.map((l) => l.name).join(' \u2192 ')}. The panels below show the top layer, ${top.name}.`);
    $('#chain-panel').scrollIntoView?.({ block: 'start' });
  } finally {
    setChainBusy(false);
    document.documentElement.dataset.chainMs = String(performance.now() - t0);
  }
}

function closeChain() {
  chain = null;
  $('#chain-panel').classList.remove('open');
  $('#chain-layers').replaceChildren();
  $('#chain-warnings').replaceChildren();
  $('#chain-export-result').hidden = true;
}

function setChainBusy(on) {
  busy = on;
  for (const b of document.querySelectorAll('#chain-export-raw, #chain-export-vdi, #folder-input')) b.disabled = on;
}

/* ---------- the single-image notice for a differencing image ---------- */

/** Called by main.js after a single image opened: a differencing image alone cannot be
 * read whole, so say which parent it needs (unless it is the top of the open chain). */
export function diffNotice(r) {
  const box = $('#diff-notice');
  if (!box) return;
  const d = r.info['format-specific'].data;
  if (d['image-type'] !== 'diff') { box.hidden = true; return; }
  const inChain = chain && chain.info.layers.some((l) => l.info['format-specific'].data.uuid === d.uuid);
  if (inChain) {
    box.textContent = `${q(r.file.name)} is the top of the snapshot chain shown in the Snapshot chain panel; the panels below show this layer alone (blocks it does not hold come from its parents).`;
    box.dataset.kind = 'top';
  } else {
    const parent = d['parent-uuid'];
    box.textContent = parent === NIL
      ? `${q(r.file.name)} is a differencing image (a snapshot) with a null parent UUID: its parent cannot be found. The header below still shows every field.`
      : `${q(r.file.name)} is a differencing image (a snapshot): blocks it does not hold live in its parent, the image with UUID ${parent}, which is needed to read or export the disk. Drop the parent (and any snapshots between them) together with this file, or the folder that holds them. The header below still shows every field.`;
    box.dataset.kind = 'needs-parent';
    box.dataset.parent = parent;
  }
  box.hidden = false;
}

/* ---------- drawing ---------- */

/** Cells for a chain map `width` CSS pixels wide, at most `maxCss` high (see main.js). */
function chainCells(blocks, width, maxCss) {
  return planCells(blocks, Math.max(120, width), maxCss, [24, 20, 16, 14, 12, 10, 8, 6, 5, 4, 3, 2]);
}

function drawCells(canvas, m, plan) {
  const floor = m.per > 1 ? 0.6 : 0;
  paintCells(canvas, plan, m.cells, m.per, plan.cell >= 8 ? 1 : 0, (i) => {
    const n = Math.min(m.per, m.blocks - i * m.per);
    const d = m.data[i];
    const z = m.zero[i];
    const u = m.unreadable[i];
    const free = Math.max(0, n - d - z - u);
    const dc = m.layer[i] === 255 ? COLORS.data : layerColor(m.layer[i]);
    return mix([[dc, d], [COLORS.zero, z], [COLORS.free, free], [COLORS.unreadable, u]], n, floor);
  });
}

function swatch(rgb, label, k) {
  const sw = el('span', { class: 'sw', 'aria-hidden': 'true' });
  sw.style.background = `rgb(${rgb.join(' ')})`;
  return el('span', { class: 'key', 'data-k': k }, sw, label);
}

function uuidRow(label, value, k) {
  return [el('dt', { text: label }), el('dd', { class: 'mono', 'data-k': k, text: value })];
}

function renderChain() {
  const { info } = chain;
  const n = info.layers.length;
  $('#chain-panel').classList.add('open');
  $('#chain-export-result').hidden = true;
  $('#chain-title').textContent = `${n} images, ${human(info['virtual-size'])} disk in ${human(info['block-size'])} blocks`;
  $('#chain-warnings').replaceChildren(...info.warnings.map((w) => el('li', { text: w })));
  const items = info.layers.map((l, i) => {
    const d = l.info['format-specific'].data;
    const role = i === 0 ? (n > 1 ? 'base' : 'image') : i === n - 1 ? 'top' : `snapshot ${i}`;
    const canvas = el('canvas', { class: 'chain-map', role: 'img', 'data-layer': String(i), 'aria-label': `Block map of layer ${i + 1}` });
    const sw = el('span', { class: 'sw', 'aria-hidden': 'true' });
    sw.style.background = `rgb(${layerColor(i).join(' ')})`;
    const notes = [];
    if (l['layout-error']) notes.push(`broken layout (read for inspection only): ${l['layout-error']}`);
    if (Number(l['readable-entries']) < Number(d['blocks-in-image'])) notes.push(`the file ends inside the block map: ${l['readable-entries']} of ${d['blocks-in-image']} entries can be read`);
    return el('li', { class: 'layer', 'data-layer': String(i), 'data-uuid': d.uuid },
      el('div', { class: 'layer-head' },
        sw,
        el('span', { class: 'layer-role', text: role }),
        el('strong', { class: 'layer-name', text: l.name }),
        el('span', { class: 'layer-type', text: d['image-type'] })),
      el('dl', { class: 'layer-facts' },
        ...uuidRow('Image UUID', d.uuid, 'uuid'),
        ...uuidRow('Parent UUID', d['parent-uuid'] === NIL ? 'none (base image)' : d['parent-uuid'], 'parent-uuid'),
        el('dt', { text: 'Allocated' }),
        el('dd', { 'data-k': 'allocated', text: `${dec(d['blocks-allocated'])} of ${dec(d['blocks-in-image'])} blocks (${pct(d['blocks-allocated'], d['blocks-in-image'])}), file ${human(l['file-length'])}` })),
      ...(notes.length ? [el('ul', { class: 'notes' }, ...notes.map((t) => el('li', { text: t })))] : []),
      el('div', { class: 'chain-map-wrap' }, canvas),
      el('p', { class: 'layer-counts hint', 'data-layer': String(i) }));
  });
  const list = [];
  items.forEach((it, i) => {
    list.push(it);
    if (i < items.length - 1) list.push(el('li', { class: 'link', 'aria-hidden': 'true', text: '\u2193 snapshot of the image above' }));
  });
  $('#chain-layers').replaceChildren(...list);
}

async function loadChainMaps() {
  if (!chain) return;
  const { info } = chain;
  const wrap = $('#chain-combined-wrap');
  const width = wrap.clientWidth || 600;
  const small = window.innerWidth < 600;
  const plan = chainCells(Number(info.blocks), width, small ? 200 : 260);
  const combined = await call('chainCells', { layer: null, per: plan.per });
  chain.combined = combined;
  const canvas = $('#chain-combined');
  drawCells(canvas, combined, plan);
  const byLayer = combined.summary['data-by-layer'];
  const zeroBy = combined.summary['zero-by-layer'];
  canvas.setAttribute('aria-label', `Combined block map: ${combined.blocks} blocks coloured by the layer that supplies them`);
  canvas.dataset.layersShown = String(byLayer.filter((x) => x > 0).length);
  const keys = info.layers.map((l, i) => swatch(layerColor(i), `${l.name}: ${byLayer[i]} block${byLayer[i] === 1 ? '' : 's'}${zeroBy[i] ? `, ${zeroBy[i]} zeroed` : ''}`, `layer-${i}`));
  keys.push(swatch(COLORS.zero, `zero (a ZERO entry hides the layers below): ${combined.summary.zero}`, 'zero'));
  keys.push(swatch(COLORS.free, `free in every layer (reads as zeros): ${combined.summary.free}`, 'free'));
  if (combined.summary.unreadable) keys.push(swatch(COLORS.unreadable, `unreadable (a block map is truncated): ${combined.summary.unreadable}`, 'unreadable'));
  if (combined.per > 1) keys.push(el('span', { class: 'key per', text: `each cell is ${combined.per} blocks, coloured by the layer supplying most of them` }));
  $('#chain-legend').replaceChildren(...keys);
  for (const [i, l] of info.layers.entries()) {
    const c = document.querySelector(`#chain-layers canvas[data-layer="${i}"]`);
    const lw = c.parentElement.clientWidth || width;
    const lp = chainCells(Number(l.info['format-specific'].data['blocks-in-image']), lw, small ? 80 : 110);
    const m = await call('chainCells', { layer: i, per: lp.per });
    drawCells(c, m, lp);
    const s = m.summary;
    const counts = document.querySelector(`#chain-layers p.layer-counts[data-layer="${i}"]`);
    counts.textContent = `${s.data} data, ${s.zero} zero, ${s.free} free${s.unreadable ? `, ${s.unreadable} unreadable` : ''}${m.per > 1 ? ` (${m.per} blocks per cell)` : ''}; ${byLayer[i]} of its blocks show in the combined disk`;
    counts.dataset.data = String(s.data);
    counts.dataset.zero = String(s.zero);
    counts.dataset.supplied = String(byLayer[i]);
  }
}

/* ---------- exports ---------- */

/** The worker may have been restarted (a cancelled check does that) and lost the chain:
 * open it again from the same files. */
async function ensureOpen() {
  try {
    await call('chainInfo');
  } catch (e) {
    if (e.kind !== 'no-image') throw e;
    await call('chainOpen', { files: chain.files });
  }
}

async function runExport(kind) {
  if (!chain || busy) return;
  showError(null);
  const raw = kind === 'raw';
  const top = chain.info.layers[chain.info.layers.length - 1].name;
  const name = `${baseName(top)}-flat.${raw ? 'raw' : 'vdi'}`;
  const result = $('#chain-export-result');
  result.hidden = true;
  const target = await pickTarget(name, raw ? 'Raw disk image' : 'VirtualBox disk image', raw ? '.raw' : '.vdi');
  if (!target) { status('Save cancelled.'); return; }
  setChainBusy(true);
  $('#chain-export-cancel').hidden = false;
  const ui = progressUi('chain-export');
  try {
    await ensureOpen();
    job = request(raw ? 'chainExportRaw' : 'chainExportVdi', { target, name }, { onProgress: (p) => ui.update(p) });
    const r = await job.promise;
    const speed = r.ms > 0 ? `, ${rate(r.size, r.ms)}` : '';
    const what = raw ? 'flattened raw disk' : 'flattened VDI';
    if (r.kind === 'download') {
      download(r.file, r.name);
      result.textContent = `${r.name} (${what}): ${human(r.size)} ready in ${duration(r.ms)}${speed}; your browser is saving it to your downloads.`;
    } else if (r.kind === 'saved') {
      result.textContent = `Saved ${r.name} (${what}): ${human(r.size)} in ${duration(r.ms)}${speed}.`;
    } else {
      result.textContent = `Read ${human(r.size)} in ${duration(r.ms)}${speed} (output discarded).`;
    }
    result.dataset.kind = kind;
    result.dataset.size = String(r.size);
    result.hidden = false;
    status(result.textContent);
  } catch (e) {
    if (e.kind === 'cancelled') status('Export cancelled; the partial file was removed.'); else showError(e);
  } finally {
    job = null;
    ui.done();
    $('#chain-export-cancel').hidden = true;
    setChainBusy(false);
  }
}

/* ---------- wiring ---------- */

export function initChain() {
  const folder = $('#folder-input');
  folder.addEventListener('change', () => {
    const fs = [...(folder.files || [])];
    folder.value = '';
    if (fs.length) openChain(fs, true);
  });
  $('#chain-export-raw').addEventListener('click', () => runExport('raw'));
  $('#chain-export-vdi').addEventListener('click', () => runExport('vdi'));
  $('#chain-export-cancel').addEventListener('click', () => { if (job) call('cancel', { target: job.id }); });
  let t = 0;
  window.addEventListener('resize', () => {
    clearTimeout(t);
    t = setTimeout(() => { if (chain) loadChainMaps().catch(showError); }, 200);
  });
}
