// Limits the page and the worker share. They are the engine's own (crates/vdi-wasm
// `limits()`), never retyped here: the worker sets them when the engine has loaded, and
// the bridge sets them in the page from the worker's `ready` message. They are live
// bindings: importers see the values once `setLimits` ran, which is before any operation
// (await `bridge.start()` before using them outside an answer from the worker).

/** Most cells the engine folds a block map into; the page asks for at most this many. */
export let MAX_CELLS = 0;

/** Most files a snapshot chain is opened from. */
export let MAX_FILES = 0;

/** Bytes moved per piece of a copy or an export (vdi::transfer::CHUNK): large enough that a
 * write costs little per byte, small enough that nothing holds a whole image. */
export let CHUNK = 0;

/** Take the engine's limits ({max-cells, max-files, chunk, ...}, as `limits()` gives them). */
export function setLimits(l) {
  for (const [key, value] of [['max-cells', l?.['max-cells']], ['max-files', l?.['max-files']], ['chunk', l?.chunk]]) {
    if (!Number.isSafeInteger(value) || value < 1) throw new Error(`the engine gave no limit ${key} (${value})`);
  }
  MAX_CELLS = l['max-cells'];
  MAX_FILES = l['max-files'];
  CHUNK = l.chunk;
}
