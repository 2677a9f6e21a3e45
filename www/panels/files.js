// The Files view: the disk's partitions to scale (a bar), what each holds, and for a
// filesystem the engine reads, its folders as a tree listed lazily, a preview of a file
// (text, or hex for binary), downloads (a file, or a folder as a .zip, streamed by the
// worker through the save paths of core/save.js) and "where is it": the blocks of the block
// map that hold a file (emit 'highlight'). With a snapshot chain open, the disk is the
// chain's: files as its newest layer sees them. Every name and byte from the disk is set as
// textContent.

import { bridge } from '../core/bridge.js';
import { layerColor } from '../core/cells.js';
import { $, el, pairs, showError, status } from '../core/dom.js';
import { dec, esc, human, plural, quoted } from '../core/format.js';
import { setAvailable } from '../core/router.js';
import { finishSave, pickTarget, saveJobs } from '../core/save.js';
import { chainDisk, emit, on, setBusy, state } from '../core/state.js';

/** Bytes of a file shown as a preview. */
const PREVIEW = 4096;
/** Entries of one folder drawn at once (the rest are counted). */
const MAX_SHOWN = 2000;
const SECTOR = 512;

/** Filesystem names as people know them. */
const FS_NAMES = {
  ext2: 'ext2', ext3: 'ext3', ext4: 'ext4', vfat: 'FAT', exfat: 'exFAT', ntfs: 'NTFS', hfsplus: 'HFS+',
  apfs: 'APFS', xfs: 'XFS', btrfs: 'Btrfs', lvm2_member: 'LVM physical volume', crypto_luks: 'LUKS (encrypted)',
  swap: 'Linux swap', iso9660: 'ISO 9660',
};
export const fsName = (k) => FS_NAMES[k] ?? k;

let vol = null; // {of, chain, table, part, selected: {path, entry}}
let jobs = null;
let askedFor = null; // the image whose table was last asked for (read or on its way)

/* ---------- the partitions ---------- */

async function loadTable() {
  const current = state.current;
  const chain = chainDisk();
  askedFor = current;
  vol = null;
  renderEmpty();
  try {
    const table = await bridge.ops.partitions({ chain });
    if (state.current !== current) return;
    vol = { of: current, chain, table, part: null, selected: null };
    emit('partitions', { partitions: table.partitions.map((p, i) => ({ ...p, colour: layerColor(i + 1) })) });
    renderTable();
    const first = table.partitions.find((p) => p.readable) ?? table.partitions[0];
    if (first) selectPartition(first.number);
  } catch (e) {
    if (state.current !== current) return;
    $('#files-summary').textContent = `The partitions could not be read: ${e.message ?? e}`;
  }
}

function partLabel(p) {
  return p.name || p.label || p.type_name || (p.number === 0 ? 'whole disk' : `partition ${p.number}`);
}

function renderEmpty() {
  $('#disk-bar').replaceChildren();
  $('#files-findings').replaceChildren();
  $('#part-facts').hidden = true;
  $('#part-actions').hidden = true;
  $('#part-note').hidden = true;
  $('#files-browser').hidden = true;
  $('#files-summary').textContent = '';
  $('#files-result').hidden = true;
  emit('highlight', null);
  emit('partitions', null);
}

function renderTable() {
  const { table } = vol;
  const size = Number(table['disk-size']);
  const parts = table.partitions;
  const scheme = { gpt: 'a GUID partition table (GPT)', mbr: 'an MBR partition table', hybrid: 'a GPT with a hybrid MBR', none: 'no partition table' }[table.scheme] ?? table.scheme;
  const whose = vol.chain ? 'The disk of the snapshot chain (as its newest layer sees it)' : 'The disk';
  $('#files-summary').textContent = parts.length
    ? `${whose} has ${scheme}${table.disk_id ? ` (${table.disk_id})` : ''}: ${plural(parts.length, 'partition')}.`
    : `${whose} has ${scheme} and no filesystem this engine recognises.`;
  $('#files-findings').replaceChildren(...table.findings.map((f) => el('li', { text: f })));
  // The bar: partitions and the free space between them, to scale (a small one keeps a
  // minimum width so it can be read and clicked).
  const segs = [];
  let at = 0;
  const gap = (from, to) => {
    if (to - from < size / 100) return;
    // A narrow gap keeps its size in its title only.
    const text = (to - from) / size >= 0.05 ? `free · ${human(to - from)}` : '';
    const g = el('span', { class: 'seg free', title: `unpartitioned: ${human(to - from)}` }, el('span', { class: 'seg-text', text }));
    g.style.flexGrow = String((to - from) / size);
    segs.push(g);
  };
  [...parts].sort((a, b) => a.start - b.start).forEach((p) => {
    gap(at, p.start);
    const i = parts.indexOf(p);
    const fsText = `${p.filesystem ? fsName(p.filesystem) : 'no filesystem'} · ${human(p.size)}`;
    const b = el('button', { type: 'button', class: 'seg', 'data-part': String(p.number), 'aria-pressed': 'false', title: `${partLabel(p)}: ${fsText}` },
      el('span', { class: 'seg-name', text: `${p.number ? `${p.number}: ` : ''}${partLabel(p)}` }),
      el('span', { class: 'seg-text', text: fsText }));
    b.style.flexGrow = String(p.size / size);
    b.style.setProperty('--part', `rgb(${layerColor(i + 1).join(' ')})`);
    b.addEventListener('click', () => selectPartition(p.number));
    segs.push(b);
    at = Math.max(at, p.start + p.size);
  });
  gap(at, size);
  $('#disk-bar').replaceChildren(...segs);
}

function selectPartition(number) {
  const p = vol.table.partitions.find((x) => x.number === number);
  if (!p) return;
  vol.part = number;
  vol.selected = null;
  emit('highlight', null);
  for (const b of document.querySelectorAll('#disk-bar .seg[data-part]')) b.setAttribute('aria-pressed', String(Number(b.dataset.part) === number));
  const rows = [
    ['number', 'Partition', p.number === 0 ? 'none: a filesystem on the whole disk' : String(p.number)],
    ['start', 'Start', `${dec(p.start)} (LBA ${Math.floor(p.start / SECTOR)}, ${human(p.start)})`],
    ['size', 'Size', `${human(p.size)} (${dec(p.size)} bytes)`],
  ];
  if (p.type) rows.push(['type', 'Type', p.type_name ? `${p.type_name} (${p.type})` : p.type]);
  if (p.name) rows.push(['name', 'Name', esc(p.name)]);
  if (p.partuuid) rows.push(['partuuid', 'Partition GUID', p.partuuid]);
  rows.push(['filesystem', 'Filesystem', p.filesystem ? fsName(p.filesystem) : 'none recognised']);
  if (p.label) rows.push(['label', 'Label', esc(p.label)]);
  if (p.uuid) rows.push(['uuid', 'UUID', p.uuid]);
  if (p.used != null && p.free != null) rows.push(['usage', 'Used', `${human(p.used)} used, ${human(p.free)} free`]);
  const facts = $('#part-facts');
  facts.replaceChildren(...pairs(rows));
  facts.hidden = false;
  $('#part-actions').hidden = false;
  const note = $('#part-note');
  note.hidden = p.readable;
  note.textContent = p.filesystem ? `${fsName(p.filesystem)} — detected; reading files is not supported.` : 'No filesystem this engine recognises: nothing to list.';
  $('#files-browser').hidden = !p.readable;
  $('#files-detail').hidden = true;
  const tree = $('#files-tree');
  tree.replaceChildren();
  if (p.readable) {
    const root = node({ name: `/ (${partLabel(p)})`, kind: 'dir', size: 0, mtime: null }, '/', 1);
    tree.append(root);
    toggle(root, true);
  }
}

/* ---------- the tree ---------- */

function when(mtime) {
  if (mtime == null) return '';
  const d = new Date(Number(mtime) * 1000);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

/** A tree item for `entry` at `path`, `level` deep. */
function node(entry, path, level) {
  const dir = entry.kind === 'dir';
  const li = el('li', { role: 'treeitem', 'aria-level': String(level), 'aria-selected': 'false', 'data-path': path, 'data-kind': entry.kind, class: `item ${entry.kind}` });
  if (dir) li.setAttribute('aria-expanded', 'false');
  const row = el('button', { type: 'button', class: 'item-row', tabindex: '-1' },
    el('span', { class: 'twisty', 'aria-hidden': 'true', text: dir ? '▸' : '' }),
    el('span', { class: 'item-name', text: esc(entry.name) + (dir && path !== '/' ? '/' : '') + (entry.kind === 'symlink' ? ' →' : '') }),
    el('span', { class: 'item-size', text: dir ? '' : human(entry.size) }),
    el('span', { class: 'item-date', text: when(entry.mtime) }));
  li.append(row);
  li.entry = entry;
  return li;
}

/** Open (or close) folder item `li`, listing it the first time. */
async function toggle(li, open = li.getAttribute('aria-expanded') !== 'true') {
  if (li.dataset.kind !== 'dir') return;
  li.setAttribute('aria-expanded', String(open));
  li.querySelector(':scope > .item-row .twisty').textContent = open ? '▾' : '▸';
  let group = li.querySelector(':scope > ul');
  if (!open || group) return;
  group = el('ul', { role: 'group' }, el('li', { class: 'loading', text: 'listing…' }));
  li.append(group);
  const my = vol;
  try {
    const r = await bridge.ops.fsList({ chain: vol.chain, part: vol.part, path: li.dataset.path });
    if (vol !== my) return;
    const level = Number(li.getAttribute('aria-level')) + 1;
    const entries = r.entries.sort((a, b) => (b.kind === 'dir') - (a.kind === 'dir') || a.name.localeCompare(b.name));
    const items = entries.slice(0, MAX_SHOWN).map((e) => node(e, `${li.dataset.path.replace(/\/$/, '')}/${e.name}`, level));
    if (entries.length > MAX_SHOWN) items.push(el('li', { class: 'more', text: `… and ${entries.length - MAX_SHOWN} more entries` }));
    if (!entries.length) items.push(el('li', { class: 'more', text: 'empty folder' }));
    group.replaceChildren(...items);
    li.dataset.listed = String(entries.length);
  } catch (e) {
    group.replaceChildren(el('li', { class: 'more bad', text: `Could not list it: ${e.message ?? e}` }));
  }
}

function onTreeClick(ev) {
  const li = ev.target.closest('li.item');
  if (!li) return;
  select(li);
  if (li.dataset.kind === 'dir') toggle(li);
}

function onTreeKey(ev) {
  const items = [...document.querySelectorAll('#files-tree li.item')].filter((x) => x.offsetParent !== null);
  const li = ev.target.closest('li.item');
  const i = items.indexOf(li);
  if (i < 0) return;
  const to = (j) => { const x = items[Math.max(0, Math.min(items.length - 1, j))]; x.querySelector('.item-row').focus(); select(x); };
  const open = li.getAttribute('aria-expanded');
  const keys = {
    ArrowDown: () => to(i + 1),
    ArrowUp: () => to(i - 1),
    ArrowRight: () => (open === 'false' ? toggle(li, true) : null),
    ArrowLeft: () => (open === 'true' ? toggle(li, false) : li.parentElement.closest('li.item') && to(items.indexOf(li.parentElement.closest('li.item')))),
    Home: () => to(0),
    End: () => to(items.length - 1),
  };
  if (keys[ev.key]) { ev.preventDefault(); keys[ev.key](); }
}

/* ---------- a selected file or folder ---------- */

function mode(m, kind) {
  const t = { dir: 'd', symlink: 'l', file: '-' }[kind] ?? '?';
  const bits = 'rwxrwxrwx'.split('').map((c, k) => ((m >> (8 - k)) & 1 ? c : '-')).join('');
  return `${t}${bits} (${(m & 0o7777).toString(8).padStart(4, '0')})`;
}

function select(li) {
  for (const x of document.querySelectorAll('#files-tree [aria-selected="true"]')) x.setAttribute('aria-selected', 'false');
  li.setAttribute('aria-selected', 'true');
  for (const r of document.querySelectorAll('#files-tree .item-row')) r.tabIndex = -1;
  li.querySelector('.item-row').tabIndex = 0;
  const e = li.entry;
  const path = li.dataset.path;
  vol.selected = { path, entry: e };
  emit('highlight', null);
  $('#files-detail').hidden = false;
  $('#file-name').textContent = path === '/' ? e.name : esc(e.name);
  const rows = [['path', 'Path', esc(path)], ['kind', 'Kind', { file: 'file', dir: 'folder', symlink: 'symbolic link', other: 'device, FIFO or socket' }[e.kind] ?? e.kind]];
  if (e.kind !== 'dir') rows.push(['size', 'Size', `${human(e.size)} (${dec(e.size)} bytes)`]);
  if (e.mtime != null) rows.push(['mtime', 'Modified', when(e.mtime)]);
  if (e.mode != null) rows.push(['mode', 'Mode', mode(e.mode, e.kind)]);
  if (e.target != null) rows.push(['target', 'Points to', esc(e.target)]);
  if (e.id != null) rows.push(['id', 'Inode / cluster', dec(e.id)]);
  $('#file-facts').replaceChildren(...pairs(rows));
  const save = $('#file-save');
  save.hidden = !(e.kind === 'file' || e.kind === 'dir');
  save.textContent = e.kind === 'dir' ? 'Download folder as .zip' : 'Download';
  $('#file-where').hidden = e.kind !== 'file' && e.kind !== 'dir';
  $('#file-hex').hidden = e.kind !== 'file';
  $('#file-where-text').textContent = '';
  $('#file-preview-wrap').hidden = true;
  if (e.kind === 'file') preview(path, e);
}

/** Text when the bytes are UTF-8 with few control characters, else null. */
function asText(bytes, cut) {
  for (let trim = 0; trim <= (cut ? 3 : 0); trim++) {
    try {
      const t = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(0, bytes.length - trim));
      const ctrl = (t.match(/[\u0000-\u0008\u000e-\u001f\u007f]/g) ?? []).length;
      return ctrl <= t.length / 100 ? t : null;
    } catch { /* not UTF-8 (or cut inside a character) */ }
  }
  return null;
}

/** A hex dump: offset, 16 bytes, their printable characters. */
function hexDump(bytes) {
  const lines = [];
  for (let r = 0; r < bytes.length; r += 16) {
    const row = bytes.subarray(r, r + 16);
    const h = [...row].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const t = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${r.toString(16).padStart(8, '0')}  ${h.padEnd(47)}  ${t}`);
  }
  return lines.join('\n');
}

async function preview(path, entry) {
  const my = vol.selected;
  try {
    const { bytes } = entry.size ? await bridge.ops.fsHead({ chain: vol.chain, part: vol.part, path, len: PREVIEW }) : { bytes: new Uint8Array(0) };
    if (vol?.selected !== my) return;
    const cut = entry.size > bytes.length;
    const text = asText(bytes, cut);
    const pre = $('#file-preview');
    pre.textContent = text ?? hexDump(bytes);
    pre.classList.toggle('binary', text == null);
    pre.dataset.kind = text == null ? 'hex' : 'text';
    $('#file-preview-h').textContent = entry.size === 0 ? 'Preview: the file is empty'
      : `Preview${text == null ? ' (binary, in hexadecimal)' : ''}${cut ? `: the first ${human(bytes.length)} of ${human(entry.size)}` : ''}`;
    $('#file-preview-wrap').hidden = false;
  } catch (e) {
    if (vol?.selected !== my) return;
    $('#file-preview-h').textContent = `No preview: ${e.message ?? e}`;
    $('#file-preview').textContent = '';
    $('#file-preview-wrap').hidden = false;
  }
}

/** The blocks (first..last, inclusive) holding the file's extents, merged. */
function blocksOf(extents, bs) {
  const ranges = [];
  for (const x of extents) {
    if (x.disk_offset == null || !x.length) continue;
    const a = Math.floor(Number(x.disk_offset) / bs);
    const b = Math.floor((Number(x.disk_offset) + Number(x.length) - 1) / bs);
    const last = ranges[ranges.length - 1];
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else ranges.push([a, b]);
  }
  return ranges;
}

async function where() {
  const { path, entry } = vol.selected;
  const my = vol.selected;
  try {
    const r = await bridge.ops.fsExtents({ chain: vol.chain, part: vol.part, path });
    if (vol?.selected !== my) return null;
    const bs = Number(state.current.info['format-specific'].data['block-size']);
    const ranges = blocksOf(r.extents, bs);
    const stored = r.extents.filter((x) => x.disk_offset != null).reduce((a, x) => a + Number(x.length), 0);
    const blocks = ranges.reduce((a, [x, y]) => a + y - x + 1, 0);
    const list = ranges.slice(0, 8).map(([x, y]) => (x === y ? `${x}` : `${x}–${y}`)).join(', ') + (ranges.length > 8 ? ', …' : '');
    $('#file-where-text').textContent = stored
      ? `${human(stored)} of ${quoted(esc(entry.name))} lie${stored === 1 ? 's' : ''} in ${plural(r.extents.length, 'extent')} on ${plural(blocks, 'block')} of the block map (${list}), outlined there${r.complete ? '' : ' (the first extents only)'}. Its first byte is at ${dec(r.extents.find((x) => x.disk_offset != null).disk_offset)} on the disk.`
      : `${quoted(esc(entry.name))} has no bytes stored on the disk (it is empty or all holes).`;
    emit('highlight', { ranges, label: entry.name });
    return r;
  } catch (e) {
    $('#file-where-text').textContent = `Could not find its blocks: ${e.message ?? e}`;
    return null;
  }
}

async function showInHex() {
  const r = await where();
  const first = r?.extents.find((x) => x.disk_offset != null);
  if (first) emit('hex', { offset: Number(first.disk_offset), why: `Opened from ${vol.selected.path}: its first byte.` });
}

async function download() {
  const { path, entry } = vol.selected;
  const dir = entry.kind === 'dir';
  const base = path === '/' ? `partition-${vol.part}` : entry.name;
  const name = dir ? `${base}.zip` : base;
  const ext = dir ? '.zip' : (/\.[A-Za-z0-9]{1,8}$/.exec(base)?.[0] ?? '.bin');
  const result = $('#files-result');
  result.hidden = true;
  showError(null);
  const target = await pickTarget(name, dir ? 'Zip archive' : 'File', ext);
  if (!target) { status('Save cancelled.'); return; }
  setBusy(1);
  try {
    const args = { chain: vol.chain, part: vol.part, path, target, name };
    const r = await jobs.run((opts) => bridge.call(dir ? 'fsZip' : 'fsSave', args, opts));
    if (!r) return;
    const what = dir ? ` (a zip of ${r.entries} ${r.entries === 1 ? 'entry' : 'entries'}, ${human(r.dataBytes)} of files${r.skipped?.length ? `; ${r.skipped.length} ${r.skipped.length === 1 ? 'entry' : 'entries'} left out: links, devices or unsafe names` : ''})` : '';
    result.textContent = finishSave(r, { what });
    result.dataset.size = String(r.size);
    result.hidden = false;
    status(result.textContent);
  } finally {
    setBusy(-1);
    emit('storage');
  }
}

export function initFiles() {
  jobs = saveJobs('files');
  const tree = $('#files-tree');
  tree.addEventListener('click', onTreeClick);
  tree.addEventListener('keydown', onTreeKey);
  $('#file-save').addEventListener('click', download);
  $('#part-hex').addEventListener('click', () => {
    const p = vol?.table.partitions.find((x) => x.number === vol.part);
    if (p) emit('hex', { offset: Number(p.start), why: `Opened from partition ${p.number}: its first byte.` });
  });
  $('#file-where').addEventListener('click', where);
  $('#file-hex').addEventListener('click', showInHex);
  // The table is read when the view is first shown for an image (opening an image reads
  // its header and block map only), and again after an edit changes the disk.
  const shown = () => document.documentElement.dataset.view === 'files';
  on('image', ({ current }) => {
    setAvailable('files', !!current);
    vol = null;
    askedFor = null;
    renderEmpty();
    // Not awaited: it may queue behind a check that started.
    if (current && shown()) loadTable();
  });
  on('view', ({ view }) => {
    if (view === 'files' && state.current && askedFor !== state.current) loadTable();
  });
}

