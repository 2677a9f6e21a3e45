// The Chain view: several files (or a folder) opened at once are linked by UUID in the
// worker; this view draws the chain base first, each layer's block map, the combined map
// coloured by the layer that supplies each block, and runs the flattened exports.
// Everything from an image or a file name is set with textContent.

import { bridge } from '../core/bridge.js';
import { COLORS, freeColour, layerColor, mix, paintCells, planCells, viewContentWidth } from '../core/cells.js';
import { $, el, showError, status, swatch } from '../core/dom.js';
import { dec, human, NIL, pct } from '../core/format.js';
import { MAX_FILES } from '../core/limits.js';
import { go, setAvailable } from '../core/router.js';
import { DISK_FORMATS, baseName, fillFormats, finishSave, formatNotes, pickTarget, saveJobs } from '../core/save.js';
import { openImage } from '../core/session.js';
import { setChain, state } from '../core/state.js';

let busy = false;
let jobs = null; // the view's save jobs (saveJobs), made in initChain

export const isVdi = (name) => /\.vdi$/i.test(name);
export const chainBusy = () => busy;

function setChainBusy(on) {
  busy = on;
  for (const b of document.querySelectorAll('#chain-export-raw, #chain-export-format, #chain-export-vdi, #folder-input')) b.disabled = on;
}

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
  await bridge.start(); // the engine's limits
  if (files.length > MAX_FILES) {
    showError({ kind: 'invalid-argument', message: `more than ${MAX_FILES} .vdi files were dropped; drop the files of one chain (a base and its snapshots)` });
    return;
  }
  if (files.length === 1) {
    // A folder with one image: the single-image workbench.
    await openImage({ kind: 'file', file: files[0] }, files[0].name);
    return;
  }
  const root = document.documentElement;
  delete root.dataset.chainMs;
  const t0 = performance.now();
  setChainBusy(true);
  status(`Linking ${files.length} images by UUID…`);
  try {
    let info;
    try {
      info = await bridge.ops.chainOpen({ files });
    } catch (e) {
      closeChain();
      bridge.ops.chainClose().catch(() => {});
      status('');
      showError(e);
      return;
    }
    await setChain({ info, files: info.layers.map((l) => files[l.index]) });
    render();
    setAvailable('chain', true);
    go('chain');
    await loadMaps();
    const names = info.layers.map((l) => l.name).join(' \u2192 ');
    const top = info.layers[info.layers.length - 1];
    // The other views show the top layer (the image a VM writes to).
    const topFile = state.chain.files[state.chain.files.length - 1];
    if (topFile) await openImage({ kind: 'file', file: topFile }, top.name);
    status(`Opened a chain of ${info.layers.length} images: ${names}. The other views show the top layer, ${top.name}.`);
  } finally {
    setChainBusy(false);
    root.dataset.chainMs = String(performance.now() - t0);
  }
}

function closeChain() {
  setChain(null);
  setAvailable('chain', false);
  $('#chain-panel').classList.remove('open');
  $('#chain-layers').replaceChildren();
  $('#chain-warnings').replaceChildren();
  $('#chain-export-result').hidden = true;
}

/* ---------- drawing ---------- */

/** Cells for a chain map `width` CSS pixels wide, at most `maxCss` high. */
function chainCells(blocks, width, maxCss) {
  return planCells(blocks, Math.max(120, width), maxCss, [24, 20, 16, 14, 12, 10, 8, 6, 5, 4, 3, 2]);
}

function drawCells(canvas, m, plan) {
  const floor = m.per > 1 ? 0.6 : 0;
  const free = freeColour();
  paintCells(canvas, plan, m.cells, m.per, plan.cell >= 8 ? 1 : 0, (i) => {
    const n = Math.min(m.per, m.blocks - i * m.per);
    const d = m.data[i];
    const z = m.zero[i];
    const u = m.unreadable[i];
    const f = Math.max(0, n - d - z - u);
    const dc = m.layer[i] === 255 ? COLORS.data : layerColor(m.layer[i]);
    return mix([[dc, d], [COLORS.zero, z], [free, f], [COLORS.unreadable, u]], n, floor);
  });
}

function uuidRow(label, value, k) {
  return [el('dt', { text: label }), el('dd', { class: 'mono', 'data-k': k, text: value })];
}

/** The role of layer `i` of `n`: base, snapshot i, top. */
export function layerRole(i, n) {
  return i === 0 ? (n > 1 ? 'base' : 'image') : i === n - 1 ? 'top' : `snapshot ${i}`;
}

function render() {
  const { info } = state.chain;
  const n = info.layers.length;
  $('#chain-panel').classList.add('open');
  $('#chain-export-result').hidden = true;
  $('#chain-title').textContent = `${n} images, ${human(info['virtual-size'])} disk in ${human(info['block-size'])} blocks`;
  $('#chain-warnings').replaceChildren(...info.warnings.map((w) => el('li', { text: w })));
  const items = info.layers.map((l, i) => {
    const d = l.info['format-specific'].data;
    const canvas = el('canvas', { class: 'chain-map', role: 'img', 'data-layer': String(i), 'aria-label': `Block map of layer ${i + 1}` });
    const notes = [];
    if (l['layout-error']) notes.push(`broken layout (read for inspection only): ${l['layout-error']}`);
    if (Number(l['readable-entries']) < Number(d['blocks-in-image'])) notes.push(`the file ends inside the block map: ${l['readable-entries']} of ${d['blocks-in-image']} entries can be read`);
    return el('li', { class: 'layer', 'data-layer': String(i), 'data-uuid': d.uuid },
      el('div', { class: 'layer-head' },
        swatch(layerColor(i), '', `layer-${i}`),
        el('span', { class: 'layer-role', text: layerRole(i, n) }),
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

async function loadMaps() {
  const chain = state.chain;
  if (!chain) return;
  const { info } = chain;
  const width = $('#chain-combined-wrap').clientWidth || viewContentWidth();
  const small = window.innerWidth < 600;
  const plan = chainCells(Number(info.blocks), width, small ? 200 : 260);
  const combined = await bridge.ops.chainCells({ layer: null, per: plan.per });
  const canvas = $('#chain-combined');
  drawCells(canvas, combined, plan);
  const byLayer = combined.summary['data-by-layer'];
  const zeroBy = combined.summary['zero-by-layer'];
  canvas.setAttribute('aria-label', `Combined block map: ${combined.blocks} blocks coloured by the layer that supplies them`);
  canvas.dataset.layersShown = String(byLayer.filter((x) => x > 0).length);
  const keys = info.layers.map((l, i) => swatch(layerColor(i), `${l.name}: ${byLayer[i]} block${byLayer[i] === 1 ? '' : 's'}${zeroBy[i] ? `, ${zeroBy[i]} zeroed` : ''}`, `layer-${i}`));
  keys.push(swatch(COLORS.zero, `zero (a ZERO entry hides the layers below): ${combined.summary.zero}`, 'zero'));
  keys.push(swatch(freeColour(), `free in every layer (reads as zeros): ${combined.summary.free}`, 'free'));
  if (combined.summary.unreadable) keys.push(swatch(COLORS.unreadable, `unreadable (a block map is truncated): ${combined.summary.unreadable}`, 'unreadable'));
  if (combined.per > 1) keys.push(el('span', { class: 'key per', text: `each cell is ${combined.per} blocks, coloured by the layer supplying most of them` }));
  $('#chain-legend').replaceChildren(...keys);
  for (const [i, l] of info.layers.entries()) {
    const c = document.querySelector(`#chain-layers canvas[data-layer="${i}"]`);
    const lw = c.parentElement.clientWidth || width;
    const lp = chainCells(Number(l.info['format-specific'].data['blocks-in-image']), lw, small ? 80 : 110);
    const m = await bridge.ops.chainCells({ layer: i, per: lp.per });
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
    await bridge.ops.chainInfo();
  } catch (e) {
    if (e.kind !== 'no-image') throw e;
    await bridge.ops.chainOpen({ files: state.chain.files });
  }
}

/** Export the flattened disk: kind 'raw' (in the format chosen: raw or another
 * hypervisor's) or 'vdi'. Call it from a click. */
export async function runChainExport(kind) {
  if (!state.chain || busy) return;
  showError(null);
  const raw = kind === 'raw';
  const format = raw ? $('#chain-export-format').value : 'raw';
  const other = format !== 'raw';
  const { ext, label } = DISK_FORMATS[format];
  const { layers } = state.chain.info;
  const name = `${baseName(layers[layers.length - 1].name)}-flat${raw ? ext : '.vdi'}`;
  const result = $('#chain-export-result');
  result.hidden = true;
  const target = await pickTarget(name, raw ? label : 'VirtualBox disk image', raw ? ext : '.vdi');
  if (!target) { status('Save cancelled.'); return; }
  setChainBusy(true);
  try {
    const r = await jobs.run(async (opts) => {
      await ensureOpen();
      if (other) return bridge.call('chainExportFormat', { target, name, format }, opts);
      return bridge.call(raw ? 'chainExportRaw' : 'chainExportVdi', { target, name }, opts);
    });
    if (!r) return;
    const what = other ? ` (flattened, ${format})` : raw ? ' (flattened raw disk)' : ' (flattened VDI)';
    result.textContent = finishSave(r, { what }) + formatNotes(r);
    result.dataset.kind = kind;
    result.dataset.format = format;
    result.dataset.size = String(r.size);
    result.dataset.writes = String(r.writes ?? '');
    result.hidden = false;
    status(result.textContent);
  } finally {
    setChainBusy(false);
  }
}

export function initChain() {
  fillFormats($('#chain-export-format'));
  $('#chain-export-raw').addEventListener('click', () => runChainExport('raw'));
  $('#chain-export-vdi').addEventListener('click', () => runChainExport('vdi'));
  jobs = saveJobs('chain-export');
  let t = 0;
  window.addEventListener('resize', () => {
    clearTimeout(t);
    t = setTimeout(() => { if (state.chain) loadMaps().catch(showError); }, 200);
  });
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => { if (state.chain) loadMaps().catch(() => {}); });
}
