// The Overview view, shown first: the health verdict (from the check run when the image
// opened), the facts that matter (type, sizes, allocation, chain depth) and buttons for
// the actions that apply to this image.

import { $, el, pairs } from '../core/dom.js';
import { dec, human, NIL, pct, plural } from '../core/format.js';
import { isBusy, on, state } from '../core/state.js';
import { AUTO_CHECK_MAX_BLOCKS, verdictClass, verdictText } from './check.js';

/** The actions main.js wires in: name -> function (called from the click). */
let actions = {};
/** The open disk's partitions (the 'partitions' event), or null. */
let parts = null;

const TYPES = {
  dynamic: 'Dynamic (grows as written)',
  fixed: 'Fixed (every block allocated)',
  undo: 'Undo (legacy; read as dynamic)',
  diff: 'Differencing (a snapshot)',
};

/** The verdict line: [class, text, status]. */
function verdict() {
  const { current, check } = state;
  if (!current) return ['pending', '', 'none'];
  if (!check) {
    const blocks = Number(current.info['format-specific'].data['blocks-in-image']);
    return ['pending', blocks > AUTO_CHECK_MAX_BLOCKS
      ? `Not checked yet: its block map has ${blocks.toLocaleString('en')} entries, so it is checked only when you ask.`
      : 'Not checked yet.', 'none'];
  }
  if (check.of !== current) return ['pending', 'The image changed since it was checked: check it again.', 'stale'];
  switch (check.status) {
    case 'running': return ['pending', 'Checking the image…', 'running'];
    case 'done': return [verdictClass(check.report), verdictText(check.report), 'done'];
    case 'cancelled': return ['pending', 'The check was cancelled.', 'cancelled'];
    default: return ['bad', `The check could not run: ${check.error?.message ?? check.error}`, 'failed'];
  }
}

/** Where the image sits in a chain. */
function depth(current) {
  const d = current.info['format-specific'].data;
  const { chain } = state;
  const layers = chain?.info.layers ?? [];
  const at = layers.findIndex((l) => l.info['format-specific'].data.uuid === d.uuid);
  if (at >= 0) return `${layers.length} images: this is ${at === layers.length - 1 ? 'the top' : `layer ${at + 1}`}, on ${plural(at, 'parent')}`;
  if (d['image-type'] === 'diff') return d['parent-uuid'] === NIL ? '1, a snapshot whose parent is unknown' : '1: a snapshot, its parent is not open';
  return '1 (a single image)';
}

function facts(current) {
  const d = current.info['format-specific'].data;
  const f = current.file;
  const bs = Number(d['block-size']);
  const allocated = Number(d['blocks-allocated']);
  const blocks = Number(d['blocks-in-image']);
  const rows = [
    ['name', 'Image', f.name],
    ['type', 'Type', TYPES[d['image-type']] ?? d['image-type']],
    ['virtual-size', 'Virtual size', `${human(current.info['virtual-size'])} (${dec(current.info['virtual-size'])} bytes)`],
    ['file-size', 'File size', `${human(f.length)} (${pct(f.length, current.info['virtual-size'])} of the virtual size)`],
    ['allocation', 'Allocation', `${plural(allocated, 'block')} of ${blocks} allocated (${pct(allocated, blocks)}), ${human(allocated * bs)} of data in ${human(bs)} blocks`],
    ['depth', 'Chain depth', depth(current)],
  ];
  if (parts?.length) {
    const list = parts.map((p) => `${p.number ? `${p.number}: ` : ''}${p.filesystem ?? 'no filesystem'} ${human(p.size)}`).join(', ');
    rows.push(['inside', 'Inside', `${plural(parts.length, 'partition')}: ${list}`]);
  }
  if (f['layout-error']) rows.push(['layout', 'Layout', `broken: opened for inspection only (${f['layout-error']})`]);
  return rows;
}

/** Buttons for what can be done with this image. */
function buttons(current) {
  const b = current.file.backend;
  const check = state.check;
  const list = [];
  const add = (name, label, primary = false) => list.push(el('button', {
    type: 'button', class: primary ? 'primary' : null, 'data-action': name, 'data-idle': true,
  }, label));
  const running = check?.of === current && check.status === 'running';
  const bad = check?.of === current && check.status === 'done' && check.report.corruptions + check.report.leaks > 0;
  if (!running) add('check', check?.of === current && check.status === 'done' ? 'Check again' : 'Check now', !check || check.of !== current);
  if (bad) add('repair', b === 'file' ? 'Repair a copy…' : 'Repair…', true);
  // A snapshot's disk is read through its parents: the chain's flattened exports.
  const d = current.info['format-specific'].data;
  const inChain = state.chain?.info.layers.some((l) => l.info['format-specific'].data.uuid === d.uuid);
  if (inChain) {
    add('chain-export-raw', 'Export flattened raw disk…');
    add('chain-export-vdi', 'Save flattened VDI…');
  } else if (d['image-type'] !== 'diff') {
    add('export-raw', 'Export raw disk…');
  }
  add('save-image', b === 'file' ? 'Save image file…' : 'Save edited image…');
  if (b === 'file') add('edit-copy', 'Make an editable copy');
  else add('edit', 'Edit…');
  if (state.chain) add('chain', 'Snapshot chain…');
  if (parts?.some((p) => p.readable)) add('files', 'Files…');
  add('header', 'Header fields');
  add('map', 'Block map');
  for (const btn of list) btn.disabled = isBusy();
  return list;
}

function render() {
  const { current } = state;
  const panel = $('#overview-panel');
  panel.classList.toggle('has-image', !!current);
  const [cls, text, status] = verdict();
  const box = $('#ov-verdict');
  box.className = `verdict ${cls}`;
  box.dataset.status = status;
  $('#ov-verdict-text').textContent = text;
  $('#ov-facts').replaceChildren(...(current ? pairs(facts(current)) : []));
  $('#ov-actions').replaceChildren(...(current ? buttons(current) : []));
}

/** `wired`: {check, repair, 'export-raw', 'save-image', 'edit-copy', edit, chain,
 * 'chain-export-raw', 'chain-export-vdi', files, header, map}: name -> function. */
export function initOverview(wired) {
  actions = wired;
  $('#ov-actions').addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-action]');
    if (btn && !btn.disabled) actions[btn.dataset.action]?.();
  });
  on('image', render);
  on('check', render);
  on('chain', render);
  on('partitions', (d) => { parts = d?.partitions ?? null; render(); });
  render();
}
