// The Edit view: compact, resize, discard, write and header fields, on a writable image —
// an editable copy in the browser's storage (OPFS) or an image built in memory. A dropped
// file is only ever read: editing starts by copying it.

import { bridge } from '../core/bridge.js';
import { $, showError, status } from '../core/dom.js';
import { dec, duration, exactSize, human, NIL, parseSize } from '../core/format.js';
import { openImage, present } from '../core/session.js';
import { emit, on, setBusy, setCheck, state } from '../core/state.js';
import { runExport } from './export.js';
import { editing, runEdit, showOpened, showResult } from './edit-run.js';

/** What was open before the editable copy (reopened when the copy is closed). */
let original = null;

const backend = () => (state.current ? state.current.file.backend : null);
const headerData = () => state.current.info['format-specific'].data;

/** Copy the open file into browser storage and open the copy for editing; true when
 * the open image is an editable copy afterwards. */
export async function makeCopy() {
  if (backend() !== 'file') return backend() === 'opfs' || backend() === 'memory';
  const before = state.current;
  const r = await runEdit('editCopy', {}, { label: 'Making the editable copy', unit: 'bytes' });
  if (!r) return false;
  original = before;
  const { check } = state;
  await present({ source: r.source, info: r.info, file: r.file }, 'changed');
  // The copy holds the file's bytes: the file's check holds for it.
  if (check?.of === before && check.status === 'done') setCheck({ ...check, of: state.current });
  emit('storage');
  showResult(`Made an editable copy of ${r.file.name} (${human(r.file.length)}) in browser storage. Your file is unchanged.`, { copy: r.source.name });
  return true;
}

async function closeCopy() {
  if (backend() !== 'opfs' || editing()) return;
  const { name } = state.current.source;
  setBusy(1);
  try {
    await bridge.ops.closeCopy({ name });
    const back = original;
    original = null;
    if (back && back.source.kind !== 'none') {
      if (await openImage(back.source, back.file.name)) status('The copy was deleted; the original file is open again (unchanged).');
    } else {
      await present(null, 'closed');
      status('The copy was deleted.');
    }
  } catch (e) {
    showError(e);
  } finally {
    setBusy(-1);
    emit('storage');
    emit('diag');
  }
}

async function compact(ev) {
  ev.preventDefault();
  const free = $('#edit-compact-free').checked;
  const r = await runEdit('compact', { free }, { label: 'Compact' });
  if (!r) return;
  await showOpened(r.opened);
  const s = r.result;
  showResult(`Compacted in ${duration(r.ms)}: ${s['blocks-zeroed']} zero block(s) marked ${free ? 'FREE' : 'ZERO'}, ` +
    `${s['blocks-moved']} block(s) moved, ${human(s['bytes-reclaimed'])} reclaimed (${dec(s['file-length-before'])} → ${dec(s['file-length-after'])} bytes).`, {
    blocksZeroed: s['blocks-zeroed'], blocksMoved: s['blocks-moved'], bytesReclaimed: s['bytes-reclaimed'],
    fileLengthAfter: s['file-length-after'],
  });
}

async function resize(ev) {
  ev.preventDefault();
  const size = parseSize($('#edit-size').value);
  if (size.error) { showError({ kind: 'invalid-argument', message: size.error }); return; }
  const r = await runEdit('resize', { size: size.bytes }, { label: 'Resize' });
  if (!r) return;
  await showOpened(r.opened);
  const s = r.result;
  const verb = Number(s['new-size']) >= Number(s['old-size']) ? 'Grown' : 'Shrunk (everything cut held no data)';
  const moved = s['map-moved']
    ? ` The block map needed more room: ${s['blocks-relocated']} data block(s) moved to the end of the file; the map now starts at ${dec(s['offset-bmap'])}.`
    : '';
  showResult(`${verb} from ${human(s['old-size'])} to ${human(s['new-size'])} in ${duration(r.ms)}.${moved}`, {
    newSize: s['new-size'], blocksRelocated: s['blocks-relocated'], mapMoved: s['map-moved'] ? 1 : 0,
  });
}

function offsetArg(id, what, allowZero) {
  const text = $(id).value.trim();
  if (allowZero && /^0*$/.test(text)) return { bytes: 0 };
  const v = parseSize(text);
  if (v.error) return { error: `${what}: ${v.error}` };
  return v;
}

async function discard(ev) {
  ev.preventDefault();
  const off = offsetArg('#edit-discard-offset', 'offset', true);
  const len = offsetArg('#edit-discard-length', 'length', false);
  const bad = off.error || len.error;
  if (bad) { showError({ kind: 'invalid-argument', message: bad }); return; }
  const r = await runEdit('discard', { offset: off.bytes, length: len.bytes }, { label: 'Discard' });
  if (!r) return;
  await showOpened(r.opened);
  showResult(`Discarded ${human(len.bytes)} at ${dec(off.bytes)}: ${r.result['blocks-discarded']} whole block(s) now ZERO, ${human(r.result['bytes-reclaimed'])} reclaimed.`, {
    blocksDiscarded: r.result['blocks-discarded'],
  });
}

async function writeFile(ev) {
  ev.preventDefault();
  const file = $('#edit-write-file').files[0];
  if (!file) { showError({ kind: 'invalid-argument', message: 'choose a data file to write' }); return; }
  const off = offsetArg('#edit-write-offset', 'offset', true);
  if (off.error) { showError({ kind: 'invalid-argument', message: off.error }); return; }
  const r = await runEdit('writeFile', { file, offset: off.bytes }, { label: `Writing ${file.name}`, unit: 'bytes' });
  if (!r) return;
  await showOpened(r.opened);
  showResult(`Wrote ${file.name} (${human(file.size)}) at offset ${dec(off.bytes)} in ${duration(r.ms)}.`, { written: file.size });
}

/** The header-field changes the form asks for (only fields that differ), or {error}. */
function fieldChanges() {
  if (!state.current) return { fields: {} };
  const d = headerData();
  const fields = {};
  const comment = $('#edit-comment').value;
  if (comment !== d.comment) {
    const n = new TextEncoder().encode(comment).length;
    if (n > 255) return { error: `the comment is ${n} bytes of UTF-8; at most 255 fit` };
    if (comment.includes('\0')) return { error: 'the comment may not contain a NUL character' };
    fields.comment = comment;
  }
  const uuids = [['#edit-uuid', 'uuid', 'uuid'], ['#edit-modify-uuid', 'modify_uuid', 'modify-uuid'],
    ['#edit-parent-uuid', 'parent_uuid', 'parent-uuid'], ['#edit-parent-modify-uuid', 'parent_modify_uuid', 'parent-modify-uuid']];
  for (const [sel, key, field] of uuids) {
    const v = $(sel).value.trim().toLowerCase();
    if (v === '' && d[field] === NIL) continue;
    if (v !== d[field]) {
      if (v !== '' && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(v)) {
        return { error: `${$(sel).labels[0].textContent}: "${v}" is not a UUID (8-4-4-4-12 hexadecimal digits)` };
      }
      fields[key] = v === '' ? 'null' : v;
    }
  }
  const g = d['lchs-geometry'];
  const lchs = $('#edit-lchs').value.trim();
  const cur = g ? `${g.cylinders}/${g.heads}/${g.sectors}` : '';
  if (lchs !== cur && lchs !== '') fields.lchs = lchs;
  return { fields };
}

function describeFields() {
  const c = fieldChanges();
  const out = $('#edit-fields-summary');
  out.classList.toggle('invalid', !!c.error);
  const n = c.fields ? Object.keys(c.fields).length : 0;
  out.textContent = c.error ?? (n ? `${n} field(s) will change: ${Object.keys(c.fields).join(', ').replaceAll('_', ' ')}` : 'No changes yet.');
  return c;
}

async function saveFields(ev) {
  ev.preventDefault();
  const c = describeFields();
  if (c.error) { showError({ kind: 'invalid-argument', message: c.error }); return; }
  if (!Object.keys(c.fields).length) { status('No header field was changed.'); return; }
  const r = await runEdit('setFields', { fields: c.fields }, { label: 'Saving header fields' });
  if (!r) return;
  await showOpened(r.opened);
  showResult(`Saved ${Object.keys(c.fields).join(', ').replaceAll('_', ' ')}.`, { fields: Object.keys(c.fields).join(',') });
}

/** Show the controls that fit the open image. */
function updateEdit() {
  const b = backend();
  const where = $('#edit-where');
  $('#edit-copy-row').hidden = b !== 'file';
  $('#edit-tools').hidden = !(b === 'opfs' || b === 'memory');
  $('#edit-close').hidden = b !== 'opfs';
  if (!state.current) { where.textContent = ''; return; }
  if (b === 'file') {
    where.textContent = 'This image is read straight from your file, which is never modified. Edits are made on a copy in this browser\'s storage; save the result when you are done.';
  } else if (b === 'opfs') {
    where.textContent = `Editing a copy of ${state.current.file.name} in this browser's storage. Your original file is unchanged; "Save edited image…" writes the result where you choose.`;
  } else {
    where.textContent = 'Editing the image in this tab\'s memory.';
  }
  if (b === 'file') return;
  const d = headerData();
  const diff = d['image-type'] === 'diff';
  $('#edit-compact').disabled = diff;
  $('#edit-compact').title = diff ? 'a snapshot is compacted against its parent: use `vdi compact` with the chain' : '';
  $('#edit-size').value = exactSize(Number(state.current.info['virtual-size']));
  $('#edit-discard-length').value = '1M';
  $('#edit-comment').value = d.comment;
  $('#edit-uuid').value = d.uuid;
  $('#edit-modify-uuid').value = d['modify-uuid'];
  $('#edit-parent-uuid').value = d['parent-uuid'] === NIL ? '' : d['parent-uuid'];
  $('#edit-parent-modify-uuid').value = d['parent-modify-uuid'] === NIL ? '' : d['parent-modify-uuid'];
  const g = d['lchs-geometry'];
  $('#edit-lchs').value = g ? `${g.cylinders}/${g.heads}/${g.sectors}` : '';
  $('#edit-lchs').disabled = !g;
  describeFields();
}

export function initEdit() {
  $('#edit-copy').addEventListener('click', makeCopy);
  $('#edit-close').addEventListener('click', closeCopy);
  $('#edit-save').addEventListener('click', () => runExport('image'));
  $('#edit-compact-form').addEventListener('submit', compact);
  $('#edit-resize-form').addEventListener('submit', resize);
  $('#edit-discard-form').addEventListener('submit', discard);
  $('#edit-write-form').addEventListener('submit', writeFile);
  const fields = $('#edit-fields-form');
  fields.addEventListener('submit', saveFields);
  fields.addEventListener('input', describeFields);
  for (const b of document.querySelectorAll('.new-uuid')) {
    b.addEventListener('click', () => {
      const input = document.getElementById(b.dataset.for);
      input.value = crypto.randomUUID();
      describeFields();
    });
  }
  on('image', ({ reason }) => {
    if (reason !== 'changed') {
      $('#edit-result').hidden = true;
      $('#edit-actions').replaceChildren();
      original = null;
    }
    updateEdit();
  });
}
