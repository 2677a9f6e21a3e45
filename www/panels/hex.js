// The Hex view: 4 KiB of the virtual disk at a time, 16 bytes a row (offset, hexadecimal,
// text), paged with buttons or keys, "go to" a byte offset or an LBA. The bytes and the
// labels of known structures (MBR, GPT header and entries) come from the worker, which
// parses them; this view only formats them. Bytes from the disk are set as textContent
// (non-printable ones as '.').
//
// Other views open it at an offset with emit('hex', {offset, why}) (see core/state.js).

import { bridge } from '../core/bridge.js';
import { $, el } from '../core/dom.js';
import { dec, hex, human } from '../core/format.js';
import { go, setAvailable } from '../core/router.js';
import { chainDisk, diskSize, on, state } from '../core/state.js';

/** Bytes shown at a time. */
export const WINDOW = 4096;
const ROW = 16;
const SECTOR = 512;

let win = null; // {start, bytes, labels, target, of}
let token = 0;
let askedFor = null; // the image a window was last asked for (shown or on its way)

/** A byte as a character of the text column: printable ASCII, else '.'. */
const glyph = (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.');
const hex2 = (b) => b.toString(16).padStart(2, '0');

/** Parse what was typed in "Go to": {offset} in bytes, or {error}. */
export function parseTarget(text, unit, size) {
  const t = String(text).trim();
  const m = /^(0x[0-9a-f]+|\d+)$/i.exec(t);
  if (!m) return { error: `"${t}" is not a number: type a decimal number or 0x followed by hexadecimal digits` };
  const n = BigInt(m[1]);
  const bytes = unit === 'lba' ? n * BigInt(SECTOR) : n;
  const last = BigInt(size) - 1n;
  if (bytes > last) {
    const what = unit === 'lba' ? `LBA ${n}` : `offset ${n} (${hex(n)})`;
    return { error: `${what} is past the end of the disk: it has ${dec(size)} bytes (${human(size)}), so the last byte is ${dec(last)} (${hex(last)}) and the last LBA ${(BigInt(size) - 1n) / BigInt(SECTOR)}` };
  }
  return { offset: Number(bytes) };
}

function message(text) {
  const m = $('#hex-message');
  m.textContent = text ?? '';
  m.hidden = !text;
}

/** Show the window holding byte `offset` (the target), read from the worker. */
export async function showAt(offset, why = '') {
  const current = state.current;
  if (!current) return;
  const size = diskSize();
  const target = Math.max(0, Math.min(offset, size - 1));
  // A full window where the disk allows: near the end it ends at the disk's last byte.
  const start = Math.min(Math.floor(target / ROW) * ROW, Math.floor(Math.max(0, size - WINDOW) / ROW) * ROW);
  const len = Math.min(WINDOW, size - start);
  const my = ++token;
  askedFor = current;
  message(null);
  try {
    const r = await bridge.ops.hexRead({ offset: start, len, chain: chainDisk() });
    if (my !== token || state.current !== current) return;
    win = { start, bytes: r.bytes, labels: r.labels, target, why, of: current };
    render();
  } catch (e) {
    if (my !== token) return;
    message(`Could not read ${len} bytes at ${dec(start)}: ${e.message ?? e}`);
  }
}

/** The labels covering each byte of the window: an index into win.labels, or -1. */
function labelMap() {
  const at = new Int32Array(win.bytes.length).fill(-1);
  win.labels.forEach((l, k) => {
    const a = Math.max(0, l.start - win.start);
    const b = Math.min(win.bytes.length, l.start + l.len - win.start);
    for (let i = a; i < b; i++) at[i] = k;
  });
  return at;
}

function byteSpan(text, i, k, l) {
  const cls = ['b'];
  if (k >= 0) {
    cls.push(`lab`, `c${k % 4}`);
    if (win.start + i === l.start) cls.push('first');
  }
  if (win.start + i === win.target) cls.push('target');
  return el('span', { class: cls.join(' '), 'data-i': String(i), 'data-l': k >= 0 ? String(k) : null, text });
}

function render() {
  const { start, bytes, labels } = win;
  const at = labelMap();
  const rows = [];
  for (let r = 0; r < bytes.length; r += ROW) {
    const hexCol = el('span', { class: 'hx' });
    const txtCol = el('span', { class: 'tx' });
    for (let i = r; i < Math.min(r + ROW, bytes.length); i++) {
      const k = at[i];
      hexCol.append(byteSpan(hex2(bytes[i]), i, k, labels[k]));
      txtCol.append(byteSpan(glyph(bytes[i]), i, k, labels[k]));
    }
    rows.push(el('div', { class: 'hex-row' }, el('span', { class: 'off', text: (start + r).toString(16).padStart(10, '0') }), hexCol, txtCol));
  }
  const grid = $('#hex-grid');
  grid.replaceChildren(...rows);
  grid.dataset.start = String(start);
  grid.dataset.target = String(win.target);
  const end = start + bytes.length;
  const what = chainDisk() ? 'the disk of the snapshot chain (as its top layer sees it)' : 'the virtual disk';
  const lbas = `LBA ${Math.floor(start / SECTOR)}${end - 1 >= start + SECTOR ? `–${Math.floor((end - 1) / SECTOR)}` : ''}`;
  $('#hex-where').textContent = `Bytes ${dec(start)}–${dec(end - 1)} (${hex(start)}–${hex(end - 1)}, ${lbas}) of ${what}, ${human(diskSize())}.${win.why ? ` ${win.why}` : ''}`;
  $('#hex-field').textContent = '';
  renderFields();
  $('#hex-prev').disabled = start === 0;
  $('#hex-first').disabled = start === 0;
  $('#hex-next').disabled = end >= diskSize();
  $('#hex-last').disabled = end >= diskSize();
}

/** A label's value, with the size it stands for in units. */
const valueOf = (l) => (l.bytes != null ? `${l.value} (${human(l.bytes)})` : l.value);

function renderFields() {
  const { labels } = win;
  $('#hex-fields-wrap').hidden = labels.length === 0;
  $('#hex-fields tbody').replaceChildren(...labels.map((l, k) => el('tr', { 'data-l': String(k), class: `c${k % 4}` },
    el('td', { class: 'mono', text: hex(l.start) }),
    el('td', { text: String(l.len) }),
    el('td', { text: l.group }),
    el('th', { scope: 'row', text: l.name }),
    el('td', { class: 'value', text: valueOf(l) }))));
}

/** Highlight label `k` (or none: -1) in the grid and say what it is. */
function highlight(k) {
  for (const e of document.querySelectorAll('#hex-grid .hl, #hex-fields tr.hl')) e.classList.remove('hl');
  if (k < 0 || !win?.labels[k]) { $('#hex-field').textContent = ''; return; }
  const l = win.labels[k];
  for (const e of document.querySelectorAll(`#hex-grid [data-l="${k}"], #hex-fields tr[data-l="${k}"]`)) e.classList.add('hl');
  $('#hex-field').textContent = `${l.group} — ${l.name} (${l.len} bytes at ${dec(l.start)}): ${valueOf(l)}`;
}

function onPoint(ev) {
  const b = ev.target.closest?.('.b');
  if (!b || !win) return;
  const i = Number(b.dataset.i);
  const k = b.dataset.l == null ? -1 : Number(b.dataset.l);
  if (k >= 0) highlight(k);
  else {
    highlight(-1);
    $('#hex-field').textContent = `byte ${dec(win.start + i)} (${hex(win.start + i)}) = 0x${hex2(win.bytes[i])}`;
  }
}

function page(delta) {
  if (!win) return;
  showAt(Math.max(0, win.start + delta));
}

function last() {
  const size = diskSize();
  showAt(Math.max(0, Math.floor(Math.max(0, size - WINDOW) / ROW) * ROW));
}

export function initHex() {
  $('#hex-go-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (!state.current) return;
    const t = parseTarget($('#hex-at').value, $('#hex-unit').value, diskSize());
    if (t.error) { message(t.error); return; }
    showAt(t.offset);
  });
  $('#hex-first').addEventListener('click', () => showAt(0));
  $('#hex-prev').addEventListener('click', () => page(-WINDOW));
  $('#hex-next').addEventListener('click', () => page(WINDOW));
  $('#hex-last').addEventListener('click', last);
  const grid = $('#hex-grid');
  grid.addEventListener('mouseover', onPoint);
  grid.addEventListener('keydown', (ev) => {
    const keys = { PageDown: () => page(WINDOW), PageUp: () => page(-WINDOW), Home: () => showAt(0), End: last };
    if (keys[ev.key]) { ev.preventDefault(); keys[ev.key](); }
  });
  $('#hex-fields tbody').addEventListener('mouseover', (ev) => {
    const tr = ev.target.closest('tr[data-l]');
    if (tr) highlight(Number(tr.dataset.l));
  });
  on('hex', ({ offset, why }) => {
    go('hex');
    return showAt(offset, why);
  });
  on('view', ({ view }) => {
    // First shown for this image: its first bytes.
    if (view === 'hex' && state.current && askedFor !== state.current) showAt(0);
  });
  const reset = () => {
    win = null;
    askedFor = null;
    token++;
    $('#hex-grid').replaceChildren();
    delete $('#hex-grid').dataset.target;
    $('#hex-fields tbody').replaceChildren();
    $('#hex-fields-wrap').hidden = true;
    $('#hex-where').textContent = '';
    message(null);
  };
  on('image', ({ current }) => {
    setAvailable('hex', !!current);
    reset();
    if (current && document.documentElement.dataset.view === 'hex') return showAt(0);
    return undefined;
  });
  on('chain', reset);
}
