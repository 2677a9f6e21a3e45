// The Edit view's "Reclaim what the guest deleted": a preview of what each partition's
// filesystem calls free (a bar of used / free / reclaimable per partition; reads only) and
// the filesystem-aware compaction itself, on the editable copy. What an image says is set
// as text only.

import { bridge } from '../core/bridge.js';
import { $, el, showError } from '../core/dom.js';
import { dec, duration, human } from '../core/format.js';
import { on, state } from '../core/state.js';
import { runEdit, showOpened, showResult } from './edit-run.js';

const backend = () => (state.current ? state.current.file.backend : null);

/** One bar: used, free (not whole blocks, or not stored), reclaimable; widths in %. */
function bar(p) {
  const size = Number(p.size) || 1;
  const free = Number(p['free-bytes']);
  const back = Math.min(Number(p['releasable-bytes']), free);
  const parts = p.status === 'read'
    ? [['used', size - free], ['free', free - back], ['reclaim', back]]
    : [['kept', size]];
  const b = el('div', { class: 'fs-bar', role: 'img', 'aria-label': `partition ${p.number}` });
  for (const [k, v] of parts) {
    const s = el('span', { class: `fs-${k}`, title: `${k}: ${human(v)}` });
    s.style.width = `${(100 * Math.max(0, v)) / size}%`;
    b.append(s);
  }
  return b;
}

function describe(p) {
  const fs = p.filesystem ?? 'no filesystem';
  const head = `Partition ${p.number} (${fs}, ${human(p.size)}): `;
  if (p.status === 'read') {
    return `${head}${human(p['free-bytes'])} free; ${human(p['releasable-bytes'])} (${p['releasable-blocks']} block(s)) comes back.`;
  }
  if (p.status === 'not-clean') return `${head}NOT CLEAN: ${p.reason}; ${p.hint}.`;
  return `${head}kept as it is (${p.reason}).`;
}

function showPlan(plan) {
  const out = $('#fs-plan');
  out.replaceChildren();
  for (const p of plan.partitions) {
    out.append(el('div', { class: 'fs-row', 'data-number': p.number, 'data-status': p.status },
      el('div', { text: describe(p) }), bar(p)));
  }
  if (plan.partitions.length) {
    const key = el('p', { class: 'hint fs-legend' });
    for (const [k, label] of [['used', 'used'], ['free', 'free, kept (partial blocks or not stored)'], ['reclaim', 'comes back'], ['kept', 'not read, kept']]) {
      key.append(el('span', { class: `fs-key fs-${k}` }), label);
    }
    out.append(key);
  }
  const total = plan['releasable-blocks'];
  const summary = plan.refused
    ? `Compaction would be refused: ${plan.refused}`
    : (plan.partitions.length
      ? `${total} block(s) come back: the file shrinks by at least ${human(plan['estimated-bytes-reclaimed'])}.`
      : 'No partition table or filesystem found: nothing to reclaim.');
  out.append(el('p', { id: 'fs-plan-summary', text: summary, 'data-releasable': total, 'data-refused': plan.refused ? 1 : 0 }));
  out.hidden = false;
  $('#fs-compact').disabled = !!plan.refused || backend() === 'file' || !total;
}

async function preview() {
  showError(null);
  try {
    showPlan(await bridge.ops.fsFreePlan());
  } catch (e) {
    showError(e);
  }
}

async function compact(ev) {
  ev.preventDefault();
  const r = await runEdit('compactFsAware', {}, { label: 'Reclaiming what the guest deleted' });
  if (!r) return;
  await showOpened(r.opened);
  const s = r.result;
  showResult(`Reclaimed in ${duration(r.ms)}: ${s['blocks-released']} block(s) the filesystems call free released, ` +
    `${s['blocks-zeroed']} zero block(s) marked ZERO, ${s['blocks-moved']} moved, ${human(s['bytes-reclaimed'])} reclaimed ` +
    `(${dec(s['file-length-before'])} → ${dec(s['file-length-after'])} bytes).`, {
    blocksReleased: s['blocks-released'], bytesReclaimed: s['bytes-reclaimed'], fileLengthAfter: s['file-length-after'],
  });
  await preview();
}

export function initFsCompact() {
  $('#fs-preview').addEventListener('click', preview);
  $('#fs-compact-form').addEventListener('submit', compact);
  on('image', ({ reason }) => {
    if (reason !== 'changed') $('#fs-plan').hidden = true;
    const diff = state.current?.info['format-specific'].data['image-type'] === 'diff';
    $('#fs-preview').disabled = !state.current || diff;
    $('#fs-compact').disabled = true; // until a preview says there is something to reclaim
  });
}
