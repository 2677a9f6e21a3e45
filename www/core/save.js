// Saving: a save dialog where the browser has one (the worker streams into the file it
// returns), else the worker stages the file in browser storage and the page downloads it.

import { $, el, showError, status } from './dom.js';
import { duration, human, rate } from './format.js';
import { progressUi } from './progress.js';

/** Benchmark only (?sink=null): exports are read and thrown away, to time reading alone. */
const NULL_SINK = new URLSearchParams(location.search).get('sink') === 'null';

/** Where to save `suggestedName`: {kind: 'handle', handle} | {kind: 'opfs'} | {kind: 'null'},
 * or null when the user closed the dialog. Call it from the click (user activation). */
export async function pickTarget(suggestedName, description, ext) {
  if (NULL_SINK) return { kind: 'null' };
  if (typeof window.showSaveFilePicker !== 'function') return { kind: 'opfs' };
  try {
    const handle = await window.showSaveFilePicker({
      suggestedName,
      types: [{ description, accept: { 'application/octet-stream': [ext] } }],
    });
    return { kind: 'handle', handle };
  } catch (e) {
    if (e && e.name === 'AbortError') return null; // the user closed the dialog
    return { kind: 'opfs' }; // not allowed here (e.g. in a frame): fall back
  }
}

/** The formats "Export as…" offers (raw stays the default), as the engine names them:
 * the file extension and what the save dialog calls the file. */
export const DISK_FORMATS = Object.freeze({
  raw: { ext: '.raw', label: 'Raw disk image' },
  qcow2: { ext: '.qcow2', label: 'qcow2 (QEMU/KVM, Proxmox, UTM)' },
  vmdk: { ext: '.vmdk', label: 'VMDK (VMware Workstation, Fusion)' },
  'vmdk-stream': { ext: '.vmdk', label: 'VMDK stream-optimized (OVA, ESXi import)' },
  vhd: { ext: '.vhd', label: 'VHD dynamic (Hyper-V, Virtual PC)' },
  'vhd-fixed': { ext: '.vhd', label: 'VHD fixed (Azure)' },
  vhdx: { ext: '.vhdx', label: 'VHDX dynamic (Hyper-V)' },
});

/** Fill a <select> with DISK_FORMATS (raw first, selected). */
export function fillFormats(select) {
  for (const [value, { label }] of Object.entries(DISK_FORMATS)) select.append(el('option', { value, text: label }));
  select.value = 'raw';
}

/** What an export to another format did to fit it (its plan's notes), as a sentence. */
export function formatNotes(r) {
  const notes = r && r.plan ? r.plan.notes : [];
  return notes.length ? ` Note: ${notes.join('; ')}.` : '';
}

/** Hand `file` to the browser's downloads as `name`. */
export function download(file, name) {
  const url = URL.createObjectURL(file);
  const a = el('a', { href: url, download: name, hidden: '' });
  document.body.append(a);
  a.click();
  a.remove();
  // The download has its own reference once started.
  setTimeout(() => URL.revokeObjectURL(url), 120000);
}

export function baseName(name) {
  return String(name).replace(/\.vdi$/i, '') || 'disk';
}

/** The worker's answer to a save ({kind, name, size, ms, file?}): the download started if
 * it is one, and the sentence that says what happened. `what` names the output
 * (" (flattened VDI)"), `data` adds how much of it was data. */
export function finishSave(r, { what = '', data = '' } = {}) {
  const speed = r.ms > 0 ? `, ${rate(r.size, r.ms)}` : '';
  if (r.kind === 'download') {
    download(r.file, r.name);
    return `${r.name}${what}: ${human(r.size)}${data} ready in ${duration(r.ms)}${speed}; your browser is saving it to your downloads.`;
  }
  if (r.kind === 'saved') return `Saved ${r.name}${what}: ${human(r.size)}${data} in ${duration(r.ms)}${speed}.`;
  return `Read ${human(r.size)}${data} in ${duration(r.ms)}${speed} (output discarded).`;
}

/** The save jobs of one view, one at a time: `prefix` names its progress UI (see
 * progressUi) and its Cancel button (`#${prefix}-cancel`). Make it once the page is
 * loaded. `run(call)` runs `call({signal, onProgress})` (a bridge call) with both shown, and
 * returns its result, or null when it failed (the error is shown) or was cancelled. */
export function saveJobs(prefix) {
  const cancel = $(`#${prefix}-cancel`);
  let job = null;
  cancel.addEventListener('click', () => job?.abort());
  return {
    async run(call) {
      cancel.hidden = false;
      const ui = progressUi(prefix);
      job = new AbortController();
      try {
        return await call({ signal: job.signal, onProgress: (p) => ui.update(p) });
      } catch (e) {
        if (e.kind === 'cancelled') status('Export cancelled; the partial file was removed.'); else showError(e);
        return null;
      } finally {
        job = null;
        ui.done();
        cancel.hidden = true;
      }
    },
  };
}
