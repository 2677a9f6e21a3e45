// The workbench's worker: the wasm engine and every storage backend live here; the page
// never loads wasm and never holds image bytes. The protocol is the table in core/ops.js:
// one handler per operation (worker/handlers/), checked against the table at start-up.

import { createServer, mergeHandlers, toError } from './worker/protocol.js';
import { engineLimits, startEngine } from './worker/engine.js';
import { removeStaged } from './worker/opfs.js';
import { imageHandlers } from './worker/handlers/image.js';
import { exportHandlers } from './worker/handlers/export.js';
import { editHandlers } from './worker/handlers/edit.js';
import { chainHandlers } from './worker/handlers/chain.js';
import { volumeHandlers } from './worker/handlers/volume.js';

const post = (msg, transfer = []) => self.postMessage(msg, transfer);

const ready = (async () => {
  await startEngine();
  // Files staged by earlier visits: their downloads are long over. Recent ones may still be
  // downloading from another tab, so they stay (the page's "Free browser storage" removes all).
  await removeStaged(30 * 60 * 1000);
})();

let handlers = {};
let server = null;
try {
  handlers = mergeHandlers(imageHandlers, exportHandlers, editHandlers, chainHandlers, volumeHandlers);
  server = createServer({ handlers, post, ready });
} catch (e) {
  post({ fatal: toError(e) });
}

if (server) {
  self.onmessage = (ev) => server.receive(ev.data);
  // A trap outside a request (a stray promise) poisons the instance just the same.
  self.addEventListener('unhandledrejection', (ev) => server.noteTrap(ev.reason));
  ready.then(
    // The bridge compares these names with its own table (a stale cached page is refused).
    () => post({ ready: true, ops: Object.keys(handlers), limits: engineLimits() }),
    (e) => post({ fatal: toError(e) }),
  );
}
