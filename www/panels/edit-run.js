// Running an edit in the worker, for the Edit view and repair: one job at a time, with
// progress, cancel, and the image shown as it is afterwards, whatever happened.
//
// Cancel: the bridge stops the engine at its next safe point through a shared flag when
// the page is cross-origin isolated (the workbench's server sends COOP/COEP), else by
// stopping the worker; the engine's write order makes that safe too. Either way the image
// is then reopened and checked, and the page says what the check found.

import { bridge } from '../core/bridge.js';
import { opSpec } from '../core/ops.js';
import { $, showError, status } from '../core/dom.js';
import { progressUi } from '../core/progress.js';
import { present } from '../core/session.js';
import { emit, setBusy, state } from '../core/state.js';

/** The running job: {label, ctl}. */
let job = null;

export const editing = () => job !== null;

/** Show a result line (its data-* attributes are what tests read). */
export function showResult(text, data = {}) {
  const out = $('#edit-result');
  out.textContent = text;
  for (const k of Object.keys(out.dataset)) delete out.dataset[k];
  for (const [k, v] of Object.entries(data)) out.dataset[k] = String(v);
  out.hidden = false;
  status(text);
}

/** Show the image the worker has open now (`opened`: its report {info, file}). */
export function showOpened(opened) {
  return present({ ...state.current, info: opened.info, file: opened.file }, 'changed');
}

/** After a cancel: the image as it is now, and what check says about it. */
async function afterCancel(label) {
  status(`${label} cancelled; checking the image…`);
  await showOpened(await bridge.ops.info());
  const c = await bridge.ops.check();
  const verdict = c.corruptions === 0
    ? (c.leaks === 0 ? 'it checks clean' : `it checks clean apart from ${c.leaks} leaked block(s), which Compact or Repair reclaims`)
    : `check found ${c.corruptions} corruption(s): run Repair`;
  showResult(`${label} was cancelled. The image is consistent: ${verdict}.`, {
    cancelled: 1, corruptions: c.corruptions, leaks: c.leaks,
  });
}

/**
 * Run `op` with progress (in `unit`s) and, when the table allows it, cancel. Returns the
 * worker's answer, or null when it failed or was cancelled (already reported).
 */
export async function runEdit(op, args, { label, unit = 'blocks' }) {
  if (job) return null;
  showError(null);
  $('#edit-result').hidden = true;
  $('#edit-actions').replaceChildren();
  setBusy(1);
  const ui = progressUi('edit');
  const cancellable = !!opSpec(op)?.cancel;
  $('#edit-cancel').hidden = !cancellable;
  job = { label, ctl: new AbortController() };
  let failure = null;
  let answer = null;
  try {
    answer = await bridge.call(op, args, { signal: job.ctl.signal, onProgress: (p) => ui.update(p, unit) });
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
    await bridge.ops.info().then(showOpened, () => {});
  }
  setBusy(-1);
  emit('diag');
  return answer;
}

export function initEditRun() {
  $('#edit-cancel').addEventListener('click', () => {
    if (!job) return;
    status(`Cancelling: ${job.label}…`);
    job.ctl.abort();
  });
}
