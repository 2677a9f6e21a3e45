// The Edit panel: compact, resize, discard, write, header fields and repair, all on a
// writable image — an editable copy in the browser's storage (OPFS) or an image built in
// memory. A dropped file is only ever read: editing starts by copying it.
//
// Cancel: when the page is cross-origin isolated (the workbench's server sends COOP/COEP)
// a SharedArrayBuffer flag is handed to the worker and the engine stops at its next safe
// point between blocks. Otherwise the only way to interrupt the engine is to stop the
// worker; the engine's write order makes that safe too. Either way the image is then
// reopened and checked, and the page says what the check found.

import {
  $, el, human, dec, duration, parseSize, request, call, showError, status, setBusy, progressUi,
  current, setCurrent, renderCurrent, renderHeader, clearResults, loadMap, refreshDiag, runExport,
  refreshStorage, restartWorker, NIL,
} from './main.js';

/** The running job: {id, flag, op, label}. */
let job = null;
/** What was open before the editable copy (reopened when the copy is closed). */
let original = null;
/** The last file that failed to open (offered for repair). */
let failedFile = null;

function backend() {
  return current ? current.file.backend : null;
}

function headerData() {
  return current.info['format-specific'].data;
}

function cancelFlag() {
  return globalThis.crossOriginIsolated && typeof SharedArrayBuffer === 'function' ? new SharedArrayBuffer(4) : null;
}

function showResult(text, data = {}) {
  const out = $('#edit-result');
  out.textContent = text;
  for (const k of Object.keys(out.dataset)) delete out.dataset[k];
  for (const [k, v] of Object.entries(data)) out.dataset[k] = String(v);
  out.hidden = false;
  status(text);
}

/** Show the image the worker has open now (after an edit changed it). */
async function showOpened(opened) {
  setCurrent({ ...current, info: opened.info, file: opened.file });
  clearResults();
  renderCurrent(opened);
  renderHeader(opened);
  await loadMap();
  updateEdit();
}

/** After a cancel: the image as it is now, and what check says about it. */
async function afterCancel(label) {
  status(`${label} cancelled; checking the image…`);
  const opened = await call('info');
  await showOpened(opened);
  const c = await call('check');
  const verdict = c.corruptions === 0
    ? (c.leaks === 0 ? 'it checks clean' : `it checks clean apart from ${c.leaks} leaked block(s), which Compact or Repair reclaims`)
    : `check found ${c.corruptions} corruption(s): run Repair`;
  showResult(`${label} was cancelled. The image is consistent: ${verdict}.`, {
    cancelled: 1, corruptions: c.corruptions, leaks: c.leaks,
  });
}

/**
 * Run an edit in the worker with progress (and, for long ones, cancel). Returns the
 * worker's answer, or null when it failed or was cancelled (already reported).
 */
async function runEdit(op, args, { label, unit = 'blocks', cancellable = true }) {
  if (job) return null;
  showError(null);
  $('#edit-result').hidden = true;
  $('#edit-actions').replaceChildren();
  setBusy(1);
  const flag = cancellable ? cancelFlag() : null;
  const ui = progressUi('edit');
  $('#edit-cancel').hidden = !cancellable;
  let failure = null;
  let answer = null;
  try {
    const j = request(op, { ...args, flag }, { onProgress: (p) => ui.update(p, unit) });
    job = { id: j.id, flag, op, label };
    answer = await j.promise;
  } catch (e) {
    failure = e;
  }
  job = null;
  ui.done();
  $('#edit-cancel').hidden = true;
  if (failure && failure.kind === 'cancelled') {
    await afterCancel(label).catch(showError);
  } else if (failure) {
    showError(failure);
    // A refused or failed edit changes nothing the engine has not ordered safely; show the
    // image as it is.
    await call('info').then(showOpened, () => {});
  }
  setBusy(-1);
  refreshDiag();
  return answer;
}

/** Engine operations run synchronously in the worker: without a shared flag they can only
 * be interrupted by stopping the worker. */
const ENGINE_OPS = new Set(['compact', 'resize', 'discard', 'repair', 'repairCopy']);

async function cancelEdit() {
  if (!job) return;
  status(`Cancelling: ${job.label}…`);
  if (job.flag) Atomics.store(new Int32Array(job.flag), 0, 1);
  call('cancel', { target: job.id }).catch(() => {});
  if (!job.flag && ENGINE_OPS.has(job.op)) {
    // The pending request is rejected as cancelled; runEdit then checks the reopened image.
    await restartWorker().catch(showError);
  }
}

/* ---------- the operations ---------- */

async function makeCopy() {
  if (backend() !== 'file') return;
  const before = current;
  const r = await runEdit('editCopy', {}, { label: 'Making the editable copy', unit: 'bytes' });
  if (!r) return;
  original = before;
  setCurrent({ source: r.source });
  await showOpened(r);
  refreshStorage();
  showResult(`Made an editable copy of ${r.file.name} (${human(r.file.length)}) in browser storage. Your file is unchanged.`, { copy: r.source.name });
}

async function closeCopy() {
  if (backend() !== 'opfs' || job) return;
  const name = current.source.name;
  setBusy(1);
  try {
    await call('closeCopy', { name });
    const back = original;
    original = null;
    if (back && back.source.kind !== 'none') {
      setCurrent({ source: back.source });
      await showOpened(await call('open', { source: back.source }));
      status('The copy was deleted; the original file is open again (unchanged).');
    } else {
      setCurrent(null);
      document.body.classList.remove('has-image');
      status('The copy was deleted.');
    }
  } catch (e) {
    showError(e);
  } finally {
    setBusy(-1);
    updateEdit();
    refreshStorage();
    refreshDiag();
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
  if (!current) return { fields: {} };
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
  const r = await runEdit('setFields', { fields: c.fields }, { label: 'Saving header fields', cancellable: false });
  if (!r) return;
  await showOpened(r.opened);
  showResult(`Saved ${Object.keys(c.fields).join(', ').replaceAll('_', ' ')}.`, { fields: Object.keys(c.fields).join(',') });
}

function renderRepair(rep) {
  const items = [];
  for (const g of rep.guessed) items.push(el('li', { class: 'warn', text: `Guessed: ${g}` }));
  for (const a of rep.actions) {
    items.push(el('li', { class: a['data-lost'] ? 'bad' : null, text: `${a['data-lost'] ? 'Data lost: ' : ''}${a.message}` }));
  }
  return items;
}

async function repair(dryRun) {
  const r = await runEdit('repair', { dryRun }, { label: dryRun ? 'Repair preview' : 'Repair' });
  if (!r) return;
  if (!dryRun) await showOpened(r.opened);
  const rep = r.result;
  $('#edit-actions').replaceChildren(...renderRepair(rep));
  const n = rep.actions.length + rep.guessed.length;
  const after = rep.after;
  const text = n === 0 ? 'Nothing to repair: the image checks clean.'
    : dryRun ? `Repair would make ${n} change(s), listed below. Nothing was written.`
      : `Repaired: ${n} change(s), listed below. ${after && after.corruptions === 0 && after.leaks === 0 ? 'The image now checks clean.' : `Check now reports ${after?.corruptions ?? '?'} corruption(s), ${after?.leaks ?? '?'} leak(s).`}`;
  showResult(text, { changes: n, dryRun: dryRun ? 1 : 0, corruptionsAfter: after ? after.corruptions : '' });
}

/* ---------- a file that does not open ---------- */

/** When a file does not open, ask repair (a dry run, reading header and map only) what it
 * could do; offer it only when it could do something. */
async function offerRepair(file) {
  failedFile = file;
  $('#repair-offer').hidden = true;
  const offer = $('#repair-offer');
  delete offer.dataset.checked;
  let rep = null;
  try {
    rep = await call('repairPlan', { file });
  } catch {
    // Not something repair can rebuild (not a VDI at all, a legacy v0.2 image, ...).
  }
  if (failedFile !== file) return;
  if (rep && rep.actions.length + rep.guessed.length > 0) {
    $('#repair-plan-list').replaceChildren(...renderRepair(rep));
    offer.hidden = false;
  }
  offer.dataset.checked = file.name; // the question is answered (tests wait for it)
}

async function repairCopyOf() {
  if (!failedFile) return;
  const file = failedFile;
  const r = await runEdit('repairCopy', { file }, { label: `Repairing a copy of ${file.name}`, unit: 'bytes' });
  if (!r) return;
  failedFile = null;
  $('#repair-offer').hidden = true;
  original = null;
  setCurrent({ source: r.source });
  document.body.classList.add('has-image');
  await showOpened(r.opened);
  $('#edit-actions').replaceChildren(...renderRepair(r.report));
  const after = r.report.after;
  showResult(`Repaired a copy of ${file.name} in browser storage: ${r.report.actions.length + r.report.guessed.length} change(s), listed below. ` +
    (after && after.corruptions === 0 ? 'The copy now checks clean; save it with "Save edited image…".' : 'Check still reports problems.'), {
    changes: r.report.actions.length + r.report.guessed.length, corruptionsAfter: after ? after.corruptions : '',
  });
  refreshStorage();
}

/* ---------- state ---------- */

/** `n` bytes in the largest binary unit that divides it exactly ("128M", "1536K", "1000"). */
function exactSize(n) {
  const units = ['', 'K', 'M', 'G', 'T', 'P'];
  let u = 0;
  while (u < units.length - 1 && n > 0 && n % 1024 === 0) { n /= 1024; u += 1; }
  return `${n}${units[u]}`;
}

/** Show the controls that fit the open image. */
export function updateEdit() {
  const b = backend();
  const where = $('#edit-where');
  $('#edit-copy-row').hidden = b !== 'file';
  $('#edit-tools').hidden = !(b === 'opfs' || b === 'memory');
  $('#edit-close').hidden = b !== 'opfs';
  if (!current) { where.textContent = ''; return; }
  if (b === 'file') {
    where.textContent = 'This image is read straight from your file, which is never modified. Edits are made on a copy in this browser\'s storage; save the result when you are done.';
  } else if (b === 'opfs') {
    where.textContent = `Editing a copy of ${current.file.name} in this browser's storage. Your original file is unchanged; "Save edited image…" writes the result where you choose.`;
  } else {
    where.textContent = 'Editing the image in this tab\'s memory.';
  }
  if (b === 'file') return;
  const d = headerData();
  const diff = d['image-type'] === 'diff';
  $('#edit-compact').disabled = diff;
  $('#edit-compact').title = diff ? 'a snapshot is compacted against its parent: use `vdi compact` with the chain' : '';
  $('#edit-size').value = exactSize(Number(current.info['virtual-size']));
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
  $('#edit-cancel').addEventListener('click', cancelEdit);
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
  $('#edit-repair-plan').addEventListener('click', () => repair(true));
  $('#edit-repair').addEventListener('click', () => repair(false));
  $('#repair-copy').addEventListener('click', repairCopyOf);
  document.addEventListener('image-opened', () => {
    failedFile = null;
    $('#repair-offer').hidden = true;
    $('#repair-plan-list').replaceChildren();
    $('#edit-result').hidden = true;
    $('#edit-actions').replaceChildren();
    if (backend() !== 'opfs') original = null;
    updateEdit();
  });
  document.addEventListener('open-failed', (ev) => { offerRepair(ev.detail.file); });
}
