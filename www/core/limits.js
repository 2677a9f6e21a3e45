// Limits the page and the worker share, each stated once. They are the engine's own limits
// (crates/vdi-wasm); the page must stay within them.
// TODO(session): read from the engine: the wasm does not expose these to JavaScript yet.

/** Most cells the engine folds a block map into (crates/vdi-wasm map.rs and chain.rs
 * MAX_CELLS); the page asks for at most this many.
 * TODO(session): read from the engine */
export const MAX_CELLS = 1 << 20;

/** Most files a snapshot chain is opened from (crates/vdi-wasm chain.rs MAX_FILES).
 * TODO(session): read from the engine */
export const MAX_FILES = 64;

/** Bytes moved per piece of a copy or an export (vdi::transfer::CHUNK): large enough that a
 * write costs little per byte, small enough that nothing holds a whole image.
 * TODO(session): read from the engine */
export const CHUNK = 8 << 20;
