// Opening an image and showing it: the one path every source takes (a file, a folder of
// one image, the sample, a created image, an edited copy), and the restore hook that
// reopens it in a fresh worker after a restart.

import { bridge } from './bridge.js';
import { afterPaint, showError, status } from './dom.js';
import { emit, setBusy, setImage, state } from './state.js';

/** Show `current` ({source, info, file}) in every panel. Resolves with the time the
 * synchronous panels (header, overview) were painted, once the map is drawn too. */
export async function present(current, reason) {
  const shown = setImage(current, reason);
  await afterPaint();
  const painted = performance.now();
  await shown;
  return painted;
}

/** Open `source` ({kind: 'file', file} | {kind: 'opfs', name, label} | {kind: 'sample'}),
 * called `label` in messages. On failure the image open before stays open. */
export async function openImage(source, label) {
  const t0 = performance.now();
  const root = document.documentElement;
  showError(null);
  status(`Opening ${label}…`);
  delete root.dataset.mapMs;
  delete root.dataset.headerMs;
  setBusy(1);
  try {
    const r = await bridge.ops.open({ source });
    const painted = await present({ source, info: r.info, file: r.file }, 'opened');
    await afterPaint();
    const headerMs = painted - t0;
    const mapMs = performance.now() - t0;
    await emit('diag');
    // Set last: tests and the benchmark wait for these.
    root.dataset.headerMs = headerMs.toFixed(1);
    root.dataset.mapMs = mapMs.toFixed(1);
    status(`Opened ${r.file.name}.`);
    emit('opened', { report: r, headerMs, mapMs });
    return true;
  } catch (e) {
    // Name the file that failed: the image shown may be the one still open.
    const still = state.current ? `; ${state.current.file.name} is still open` : '';
    status(`Could not open ${label}${still}.`);
    showError(e);
    if (source.kind === 'file') emit('open-failed', { file: source.file, error: e });
    return false;
  } finally {
    setBusy(-1);
  }
}

/** A fresh worker reopens the open image; an image it cannot reopen (built in memory and
 * never saved) is closed. Returns the name reopened, or null. */
bridge.onRestore(() => {
  const cur = state.current;
  if (!cur) return null;
  if (cur.source.kind === 'none') {
    setImage(null, 'closed');
    return null;
  }
  return bridge.ops.open({ source: cur.source }).then(() => cur.file.name, (e) => {
    setImage(null, 'closed');
    throw { kind: e.kind, message: e.message ?? String(e), image: cur.file.name };
  });
});
