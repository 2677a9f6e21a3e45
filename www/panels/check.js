// The Check view: the engine's consistency check with progress and cancel, its verdict,
// counts and findings. A check also runs by itself when an image opens (unless the user
// turned that off, or the block map is too large to read in passing): the Overview shows
// its verdict.

import { bridge } from '../core/bridge.js';
import { $, el, showError, stat, status } from '../core/dom.js';
import { dec, duration, human, plural } from '../core/format.js';
import { progressUi } from '../core/progress.js';
import { emit, on, setBusy, setCheck, state } from '../core/state.js';

/** Images with more blocks are not checked as they open: a check reads the whole block
 * map, here up to 4 MiB. Run check still checks them. */
export const AUTO_CHECK_MAX_BLOCKS = 1 << 20;

/** The running check: {promise, ctl}. */
let job = null;

/** The sentence for a check report. */
export function verdictText(r) {
  return r.corruptions === 0 && r.leaks === 0
    ? 'No errors were found on the image.'
    : `${plural(r.corruptions, 'corruption')} and ${plural(r.leaks, 'leak')} found.`;
}

export function verdictClass(r) {
  return r.corruptions === 0 && r.leaks === 0 ? 'clean' : r.corruptions ? 'bad' : 'warn';
}

function render(r) {
  const verdict = $('#check-verdict');
  verdict.hidden = false;
  verdict.className = `verdict ${verdictClass(r)}`;
  verdict.textContent = verdictText(r);
  verdict.dataset.corruptions = r.corruptions;
  verdict.dataset.leaks = r.leaks;
  const counts = [
    ['total-clusters', 'Blocks', r['total-clusters']],
    ['allocated-clusters', 'Allocated', r['allocated-clusters']],
    ['zero-clusters', 'Zero', r['zero-clusters']],
    ['free-clusters', 'Free', r['free-clusters']],
    ['fragmented-clusters', 'Fragmented', r['fragmented-clusters']],
    ['unreadable-entries', 'Unreadable entries', r['unreadable-entries']],
    ['image-end-offset', 'Image end offset', `${dec(r['image-end-offset'])} (${human(r['image-end-offset'])})`],
    ['file-length', 'File length', `${dec(r['file-length'])} (${human(r['file-length'])})`],
  ];
  $('#check-counts').replaceChildren(...counts.map(stat));
  const items = r.findings.map((f) => el('li', { class: `finding ${f.severity}`, 'data-kind': f.kind, 'data-severity': f.severity },
    el('span', { class: 'sev', text: f.severity }), ' ',
    el('code', { class: 'kind', text: f.kind }), ' ',
    el('span', { class: 'loc', text: f.location }), ' ',
    el('span', { class: 'msg', text: f.message })));
  if (r['unlisted-findings']) items.push(el('li', { class: 'more', text: `… and ${r['unlisted-findings']} more not listed` }));
  $('#check-findings').replaceChildren(...items);
}

function clear() {
  $('#check-findings').replaceChildren();
  $('#check-counts').replaceChildren();
  $('#check-verdict').hidden = true;
}

/**
 * Check the open image. `auto`: started by opening it, so it reports only here and in the
 * Overview (no status line, no error box, nothing waits for it). A check already running
 * is joined, not started again.
 */
export function runCheck({ auto = false } = {}) {
  const of = state.current;
  if (!of) return Promise.resolve();
  if (job) return job.promise;
  const ctl = new AbortController();
  const ui = progressUi('check');
  $('#check-verdict').hidden = true;
  $('#check-cancel').hidden = false;
  if (!auto) {
    showError(null);
    setBusy(1);
  }
  setCheck({ of, status: 'running' });
  const promise = (async () => {
    try {
      const r = await bridge.ops.check({}, { signal: ctl.signal, onProgress: (p) => ui.update(p, 'map entries') });
      if (state.current !== of) return;
      render(r);
      setCheck({ of, status: 'done', report: r });
      if (!auto) status(`Check finished in ${duration(r.ms)}.`);
    } catch (e) {
      if (state.current === of) setCheck({ of, status: e.kind === 'cancelled' ? 'cancelled' : 'failed', error: e });
      if (e.kind === 'cancelled') status('Check cancelled.');
      else if (!auto) showError(e);
    } finally {
      job = null;
      ui.done();
      $('#check-cancel').hidden = true;
      if (!auto) setBusy(-1);
      emit('diag');
    }
  })();
  job = { promise, ctl };
  return promise;
}

/** Whether opening `current` checks it (see AUTO_CHECK_MAX_BLOCKS). */
export function checksOnOpen(current) {
  return $('#auto-check').checked
    && Number(current.info['format-specific'].data['blocks-in-image']) <= AUTO_CHECK_MAX_BLOCKS;
}

export function initCheck() {
  $('#check-run').addEventListener('click', () => runCheck());
  // The engine's check cannot be interrupted: cancelling stops the worker (the bridge
  // starts a fresh one and the image is reopened in it).
  $('#check-cancel').addEventListener('click', () => {
    if (!job) return;
    status('Cancelling the check…');
    job.ctl.abort();
  });
  on('image', clear);
  on('opened', () => {
    if (state.current && checksOnOpen(state.current)) runCheck({ auto: true });
  });
}
