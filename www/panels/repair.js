// Repair: the offer for a file that does not open (a dry run says what repair could
// rebuild; the repair runs on a copy in browser storage), and Preview repair / Repair on
// an editable image.

import { bridge } from '../core/bridge.js';
import { $, el } from '../core/dom.js';
import { present } from '../core/session.js';
import { emit, on } from '../core/state.js';
import { makeCopy } from './edit.js';
import { runEdit, showOpened, showResult } from './edit-run.js';

/** The last file that failed to open (offered for repair). */
let failedFile = null;

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
    rep = await bridge.ops.repairPlan({ file });
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
  await present({ source: r.source, info: r.opened.info, file: r.opened.file }, 'opened');
  $('#edit-actions').replaceChildren(...renderRepair(r.report));
  const after = r.report.after;
  showResult(`Repaired a copy of ${file.name} in browser storage: ${r.report.actions.length + r.report.guessed.length} change(s), listed below. ` +
    (after && after.corruptions === 0 ? 'The copy now checks clean; save it with "Save edited image…".' : 'Check still reports problems.'), {
    changes: r.report.actions.length + r.report.guessed.length, corruptionsAfter: after ? after.corruptions : '',
  });
  emit('storage');
  emit('opened', { report: r.opened });
}

/** From the Overview: an editable copy (if the image is read from a file), then what
 * repair would do to it. */
export async function previewRepairOfOpen() {
  if (await makeCopy()) await repair(true);
}

export function initRepair() {
  $('#edit-repair-plan').addEventListener('click', () => repair(true));
  $('#edit-repair').addEventListener('click', () => repair(false));
  $('#repair-copy').addEventListener('click', repairCopyOf);
  on('image', ({ reason }) => {
    if (reason === 'changed') return;
    failedFile = null;
    $('#repair-offer').hidden = true;
    $('#repair-plan-list').replaceChildren();
  });
  on('open-failed', ({ file }) => { offerRepair(file); });
}
