// The Export view: the virtual disk as a raw file, or the image file itself, streamed to
// a file the user picks (or staged in browser storage, then downloaded); and the browser
// storage the worker uses.

import { bridge } from '../core/bridge.js';
import { $, showError, status } from '../core/dom.js';
import { human } from '../core/format.js';
import { DISK_FORMATS, baseName, fillFormats, finishSave, formatNotes, pickTarget, saveJobs } from '../core/save.js';
import { emit, on, setBusy, state } from '../core/state.js';

let jobs = null; // the view's save jobs (saveJobs), made in initExport

/** Export the open image: kind 'raw' (its disk, in the format chosen: raw or another
 * hypervisor's) or 'image' (its file). Call it from a click. */
export async function runExport(kind) {
  const { current } = state;
  if (!current) return;
  showError(null);
  const raw = kind === 'raw';
  const format = raw ? $('#export-format').value : 'raw';
  const other = format !== 'raw';
  const { ext, label } = DISK_FORMATS[format];
  const fileName = current.file.name;
  const name = raw ? `${baseName(fileName)}${ext}` : (/\.vdi$/i.test(fileName) ? fileName : `${fileName}.vdi`);
  const result = $('#export-result');
  result.hidden = true;
  const target = await pickTarget(name, raw ? label : 'VirtualBox disk image', raw ? ext : '.vdi');
  if (!target) { status('Save cancelled.'); return; }
  setBusy(1);
  try {
    const op = other ? 'exportFormat' : raw ? 'exportRaw' : 'exportImage';
    const r = await jobs.run((opts) => bridge.call(op, other ? { target, name, format } : { target, name }, opts));
    if (!r) return;
    const data = raw && !other && r.dataBytes != null && r.dataBytes !== r.size ? ` (${human(r.dataBytes)} of data)` : '';
    result.textContent = finishSave(r, { data, what: other ? ` (${format})` : '' }) + formatNotes(r);
    result.dataset.format = format;
    result.dataset.ms = String(r.ms);
    result.dataset.finishMs = String(r.finishMs ?? 0);
    result.dataset.size = String(r.size);
    result.dataset.writes = String(r.writes ?? '');
    result.hidden = false;
    status(result.textContent);
  } finally {
    emit('diag');
    setBusy(-1);
    refreshStorage();
  }
}

/** How much browser storage is used, and by how many staged files. */
export async function refreshStorage() {
  try {
    const s = await bridge.ops.storage();
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

export function initExport() {
  fillFormats($('#export-format'));
  $('#export-raw').addEventListener('click', () => runExport('raw'));
  $('#export-image').addEventListener('click', () => runExport('image'));
  jobs = saveJobs('export');
  $('#storage-free').addEventListener('click', async () => {
    await bridge.ops.freeStorage().catch(showError);
    refreshStorage();
  });
  on('image', () => { $('#export-result').hidden = true; });
  on('storage', refreshStorage);
  refreshStorage();
}
