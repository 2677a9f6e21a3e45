// The Block map view: every block of the map as a cell, coloured by state (data, zero,
// free, unreadable) or by where its data lies in the file; a tip with a block's offsets on
// hover, click or arrow keys; a summary of the counts.

import { bridge } from '../core/bridge.js';
import { COLORS, freeColour, mix, paintCells, planCells, ramp, viewContentWidth } from '../core/cells.js';
import { $, el, pairs, showError, stat, swatch } from '../core/dom.js';
import { dec, hex, human, pct } from '../core/format.js';
import { emit, on, state } from '../core/state.js';

let map = null; // {per, cells, blocks, readable, data, zero, slot, summary, of}
let layout = null; // {cell, cols, rows, dpr, cssW}
let colourBy = 'state';
let selected = -1;
let free = COLORS.free;
let parts = null; // the disk's partitions, each with its colour (the 'partitions' event)
let marks = null; // {ranges: [[first, last]], label}: blocks of a file (the 'highlight' event)

/** The cell size (device pixels) and blocks per cell for `blocks` at the views' width. */
function planMap(blocks) {
  const wrap = $('#map-wrap');
  const cssW = Math.max(200, wrap.clientWidth || viewContentWidth());
  const maxCssH = window.innerWidth < 600 ? 280 : 400;
  return planCells(blocks, cssW, maxCssH, [40, 32, 24, 20, 16, 14, 12, 10, 8, 6, 5, 4, 3, 2]);
}

/** Fetch the cells the plan needs (unless they are fetched already) and draw them. */
async function loadMap() {
  const current = state.current;
  const blocks = Number(current.info['format-specific'].data['blocks-in-image']);
  const plan = planMap(blocks);
  if (!map || map.per !== plan.per || map.blocks !== blocks || map.of !== current) {
    const m = await bridge.ops.mapCells({ per: plan.per });
    if (state.current !== current) return; // another image opened meanwhile
    map = { ...m, of: current };
  }
  layout = plan;
  selected = -1;
  draw();
  renderSummary();
}

function cellColor(i) {
  const per = map.per;
  const first = i * per;
  const n = Math.min(per, map.blocks - first);
  const unread = Math.max(0, Math.min(n, first + n - map.readable));
  const d = map.data[i];
  const z = map.zero[i];
  const f = n - d - z - unread;
  const floor = per > 1 ? 0.6 : 0;
  if (colourBy === 'position') {
    const maxSlot = map.summary['max-slot'] ?? 0;
    const c = d ? ramp(maxSlot ? map.slot[i] / maxSlot : 0) : [0, 0, 0];
    return mix([[c, d], [[204, 239, 233], z], [free.map((x) => Math.min(255, x + 10)), f], [COLORS.unreadable, unread]], n, floor);
  }
  return mix([[COLORS.data, d], [COLORS.zero, z], [free, f], [COLORS.unreadable, unread]], n, floor);
}

/** Cells `first`..`last` (inclusive) of the blocks `a`..`b`. */
const cellsOf = (a, b) => [Math.floor(a / map.per), Math.min(map.cells - 1, Math.floor(b / map.per))];

/** Partitions as bands along the bottom of their cells; a file's blocks outlined. */
function overlay(ctx, cell, cols, dpr) {
  const bs = Number(state.current.info['format-specific'].data['block-size']);
  const band = Math.max(1, Math.round(cell / 4));
  for (const p of parts ?? []) {
    if (!p.size) continue;
    const [c0, c1] = cellsOf(Math.floor(p.start / bs), Math.floor((p.start + p.size - 1) / bs));
    ctx.fillStyle = `rgb(${p.colour.join(' ')})`;
    for (let i = c0; i <= c1; i++) ctx.fillRect((i % cols) * cell, Math.floor(i / cols) * cell + cell - band, cell, band);
  }
  if (!marks) return;
  ctx.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue('--focus').trim() || '#f59e0b';
  ctx.lineWidth = Math.max(2, Math.round(2 * dpr));
  for (const [a, b] of marks.ranges) {
    const [c0, c1] = cellsOf(a, b);
    for (let i = c0; i <= c1; i++) ctx.strokeRect((i % cols) * cell + 1, Math.floor(i / cols) * cell + 1, Math.max(1, cell - 2), Math.max(1, cell - 2));
  }
}

/** The picked cell's row under the map: its blocks and "Show in hex view". */
function renderPick() {
  const row = $('#map-pick');
  row.hidden = selected < 0 || !map;
  if (row.hidden) return;
  const first = selected * map.per;
  const last = Math.min(map.blocks, first + map.per) - 1;
  $('#map-pick-text').textContent = first === last ? `Block ${first}` : `Blocks ${first} – ${last}`;
}

function showInHex() {
  if (selected < 0 || !map) return;
  const block = selected * map.per;
  const bs = Number(state.current.info['format-specific'].data['block-size']);
  emit('hex', { offset: block * bs, why: `Opened from block ${block} of the block map.` });
}

/** Set when the map changed while its view was hidden: painted when the view is shown. */
let stale = false;

/** Repaint now when the map's view is shown, else when it next is: painting the canvas of a
 * large disk's map takes hundreds of ms of the main thread (it delayed the Files view,
 * whose partitions and "where is it" change the map). The legend is cheap: kept current. */
function redraw() {
  if (!map || !layout) return;
  if (document.documentElement.dataset.view === 'map') draw();
  else {
    stale = true;
    renderLegend();
  }
}

function draw() {
  stale = false;
  const canvas = $('#map-canvas');
  const { cell, cols, dpr } = layout;
  const gap = cell >= 20 ? 2 : cell >= 6 ? 1 : 0;
  free = freeColour();
  const ctx = paintCells(canvas, layout, map.cells, map.per, gap, cellColor);
  if (selected >= 0) {
    const x0 = (selected % cols) * cell;
    const y0 = Math.floor(selected / cols) * cell;
    ctx.strokeStyle = getComputedStyle(canvas).color;
    ctx.lineWidth = Math.max(1, Math.round(dpr));
    ctx.strokeRect(x0 + 0.5, y0 + 0.5, Math.max(1, cell - 1), Math.max(1, cell - 1));
  }
  overlay(ctx, cell, cols, dpr);
  renderPick();
  canvas.setAttribute('aria-label', `Block map: ${map.blocks} blocks${map.per > 1 ? `, ${map.per} per cell` : ''}, coloured by ${colourBy === 'state' ? 'state' : 'position in the file'}`);
  renderLegend();
}

function renderLegend() {
  const lg = $('#map-legend');
  if (colourBy === 'state') {
    lg.replaceChildren(swatch('sw-data', 'data (stored in the file)', 'data'),
      swatch('sw-zero', 'zero (discarded, reads as zeros)', 'zero'),
      swatch('sw-free', 'free (never written)', 'free'),
      ...(map.readable < map.blocks ? [swatch('sw-unreadable', 'unreadable (map truncated)', 'unreadable')] : []));
  } else {
    lg.replaceChildren(el('span', { class: 'key' }, el('span', { class: 'sw sw-ramp', 'aria-hidden': 'true' }),
      'data block position in the file: start → end. A smooth left-to-right gradient means sequential; jumps mean fragmentation.'));
  }
  for (const p of parts ?? []) lg.append(swatch(p.colour, `band: partition ${p.number}${p.name ? ` ${p.name}` : ''}${p.filesystem ? ` (${p.filesystem})` : ''}`, `part-${p.number}`));
  if (marks) lg.append(el('span', { class: 'key', 'data-k': 'file' }, el('span', { class: 'sw sw-mark', 'aria-hidden': 'true' }), `outlined: the blocks holding ${marks.label}`));
  if (map.per > 1) lg.append(el('span', { class: 'key per', text: `each cell is ${map.per} blocks (a cell with any data or zero blocks shows their colour)` }));
}

function renderSummary() {
  const s = map.summary;
  const { current } = state;
  const bs = Number(current.info['format-specific'].data['block-size']);
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

/* ---------- the tip ---------- */

let tipToken = 0;

function hideTip() {
  tipToken++;
  $('#map-tip').hidden = true;
}

/** The tip's rows for cell `i`: one block's offsets, or a range's counts. */
async function tipRows(i) {
  const first = i * map.per;
  const end = Math.min(map.blocks, first + map.per);
  if (map.per > 1) {
    const r = await bridge.ops.rangeInfo({ first, end });
    return [
      ['block', 'Blocks', `${first} – ${end - 1}`],
      ['state', 'States', `${r.data} data, ${r.zero} zero, ${r.free} free${r.unreadable ? `, ${r.unreadable} unreadable` : ''}`],
      ['virtual', 'Virtual offsets', `${dec(r['virtual-offset'])} – ${dec(r['virtual-end'])} (${human(r['virtual-offset'])} – ${human(r['virtual-end'])})`],
      ['host', 'Host offsets', r['host-min'] != null ? `${dec(r['host-min'])} – ${dec(r['host-max-end'])} (${hex(r['host-min'])} – ${hex(r['host-max-end'])})` : 'none'],
    ];
  }
  const b = await bridge.ops.blockInfo({ block: first });
  const rows = [
    ['block', 'Block', `${b.block}`],
    ['state', 'State', b.state],
    ['virtual', 'Virtual offset', `${dec(b['virtual-offset'])} (${hex(b['virtual-offset'])}, ${human(b['virtual-offset'])}), ${dec(b['virtual-length'])} bytes`],
  ];
  if (b.state === 'data') {
    rows.push(['host', 'Host offset', `${dec(b['host-offset'])} (${hex(b['host-offset'])})${b['in-file'] ? '' : ' — past the end of the file!'}`]);
    rows.push(['slot', 'Slot', `${b.slot}`]);
  } else {
    const fromParent = b.state === 'free' && state.current.info['format-specific'].data['image-type'] === 'diff';
    rows.push(['host', 'Host offset', b.state === 'unreadable' ? 'unknown (map truncated)'
      : fromParent ? 'none: a differencing image reads this block from its parent image' : 'none (reads as zeros)']);
  }
  rows.push(['entry', 'Map entry', `at ${dec(b['entry-offset'])} (${hex(b['entry-offset'])})${b['raw-entry'] != null ? ` = ${hex(b['raw-entry'], 8)}` : ''}`]);
  return rows;
}

async function showTip(i, anchor) {
  const tip = $('#map-tip');
  if (i < 0 || !map || i >= map.cells) { tip.hidden = true; return; }
  const token = ++tipToken;
  let rows;
  try {
    rows = await tipRows(i);
  } catch (e) {
    rows = [['error', 'Error', e.message]];
  }
  if (token !== tipToken) return;
  tip.replaceChildren(el('dl', {}, ...pairs(rows)));
  tip.dataset.cell = String(i);
  tip.hidden = false;
  const wrap = $('#map-wrap');
  const { cell, cols, dpr } = layout;
  const cx = anchor ? anchor.x : ((i % cols) + 1) * cell / dpr;
  const cy = anchor ? anchor.y : (Math.floor(i / cols) + 1) * cell / dpr;
  const left = Math.min(cx + 12, wrap.clientWidth - tip.offsetWidth - 4);
  tip.style.left = `${Math.max(0, left)}px`;
  tip.style.top = `${cy + 12}px`;
}

function cellAt(ev) {
  const rect = $('#map-canvas').getBoundingClientRect();
  const x = ev.clientX - rect.left;
  const y = ev.clientY - rect.top;
  const { cell, cols, dpr } = layout;
  const col = Math.floor((x * dpr) / cell);
  const row = Math.floor((y * dpr) / cell);
  if (col < 0 || col >= cols || row < 0) return { i: -1 };
  const i = row * cols + col;
  return { i: i < map.cells ? i : -1, x, y };
}

let hoverFrame = 0;
function onMove(ev) {
  if (!map || !layout) return;
  const at = cellAt(ev);
  cancelAnimationFrame(hoverFrame);
  hoverFrame = requestAnimationFrame(() => showTip(at.i, at));
}

function onKey(ev) {
  if (!map || !layout) return;
  const { cols } = layout;
  const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -cols, ArrowDown: cols, PageUp: -cols * 8, PageDown: cols * 8 };
  let i = selected < 0 ? 0 : selected;
  if (ev.key in moves) i += moves[ev.key];
  else if (ev.key === 'Home') i = 0;
  else if (ev.key === 'End') i = map.cells - 1;
  else if (ev.key === 'Escape') { selected = -1; draw(); showTip(-1); return; }
  else return;
  ev.preventDefault();
  selected = Math.max(0, Math.min(map.cells - 1, i));
  draw();
  showTip(selected);
}

/** Re-plan for the width shown now; fetch and draw again when the plan changed. */
function refit() {
  if (!map || !state.current || !layout) return;
  const plan = planMap(map.blocks);
  if (plan.per !== layout.per || plan.cols !== layout.cols || plan.cell !== layout.cell) loadMap().catch(showError);
}

export function initMap() {
  const canvas = $('#map-canvas');
  canvas.addEventListener('mousemove', onMove);
  canvas.addEventListener('mouseleave', () => { if (selected < 0) hideTip(); });
  canvas.addEventListener('keydown', onKey);
  // A click pins the cell: the arrow keys then move from it.
  canvas.addEventListener('click', (ev) => {
    if (!map || !layout) return;
    const at = cellAt(ev);
    if (at.i < 0) return;
    selected = at.i;
    draw();
    showTip(at.i, at);
  });
  canvas.addEventListener('blur', hideTip);
  $('#map-hex').addEventListener('click', showInHex);
  for (const r of document.querySelectorAll('input[name=map-view]')) {
    r.addEventListener('change', () => { colourBy = r.value; if (map) draw(); });
  }
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(refit, 150);
  });
  // The theme changes the colour of free blocks.
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', redraw);
  on('view', ({ view }) => {
    if (view !== 'map') return;
    if (stale && map && layout) draw();
    refit();
  });
  on('partitions', (d) => { parts = d?.partitions ?? null; redraw(); });
  on('highlight', (h) => { marks = h; redraw(); });
  on('image', ({ current }) => {
    hideTip();
    if (current) return loadMap();
    map = null;
    layout = null;
    renderPick();
    $('#map-summary').replaceChildren();
    $('#map-legend').replaceChildren();
    return undefined;
  });
}
