// The worker protocol, declared once. The worker (worker.js) registers exactly one handler
// per entry and refuses to start when the two differ; the page's bridge (core/bridge.js)
// generates its calls from the same table and refuses any name not in it.
//
// Messages:
//   page -> worker  {id, op, args, flag?}      flag: a SharedArrayBuffer(4) for `cancel: 'flag'`
//                   {id, cancel: true}          ask the job `id` to stop (`cancel: 'message'|'flag'`)
//   worker -> page  {id, ok: true, result} | {id, ok: false, error: {kind, message}}
//                   {id, progress: {done, total, ...}}   only for ops with `progress: true`
//                   {ready: true, ops: [names]}         once, when the engine is loaded
//                   {fatal: {kind, message}} | {crashed: {cause}}
//
// Each entry:
//   query     answered at once, beside a running job (hover tips, diagnostics); the others
//             run one at a time, in the order sent
//   progress  the job reports {done, total} as it goes
//   cancel    how a running job is stopped:
//               'message'  the worker sees {id, cancel} between its awaits (exports, copies)
//               'flag'     the engine runs without yielding and polls the shared flag the
//                          bridge sends when the page is cross-origin isolated; otherwise
//                          the bridge stops the worker (the engine's write order makes that safe)
//               'restart'  only by stopping the worker (the engine's check takes no flag)
//   transfer  keys of the result whose ArrayBuffers move to the page instead of being copied
//   args      what the worker accepts ({name: type}, `?` when it may be left out or null),
//             checked before the handler runs so nothing malformed reaches the engine:
//               object, string, boolean, file (a File or Blob), files (an array of them),
//               index (a whole number >= 0), count (a whole number >= 1)

/** @typedef {{query?: boolean, progress?: boolean, cancel?: 'message'|'flag'|'restart', transfer?: string[], args?: Record<string, string>, about: string}} OpSpec */

/** The arrays of the engine's one cell map (crates/vdi-wasm Cells) that move to the page. */
const CELLS = ['data', 'zero', 'unreadable', 'slot', 'layer'];

/** @type {Readonly<Record<string, Readonly<OpSpec>>>} */
export const OPS = deepFreeze({
  // One image (a dropped File read in place, an OPFS copy, or an image in memory).
  open: { args: { source: 'object' }, about: 'open {source: {kind: file|opfs|sample}}; the previous image stays open if this fails' },
  close: { about: 'close the open image' },
  info: { about: 'the open image\'s report ({info, file})' },
  mapCells: { args: { per: 'count' }, transfer: CELLS, about: 'the block map folded into cells of `per` blocks' },
  blockInfo: { args: { block: 'index' }, query: true, about: 'one block: entry, state, offsets' },
  rangeInfo: { args: { first: 'index', end: 'index' }, query: true, about: 'blocks first..end: counts and host offsets' },
  check: { progress: true, cancel: 'restart', about: 'the engine\'s check (vdi check --json)' },
  stats: { query: true, about: 'bytes read from the file and the engine\'s memory' },

  // Saving and creating.
  exportRaw: { args: { target: 'object', name: 'string' }, progress: true, cancel: 'message', about: 'the virtual disk as a raw file, to {target}' },
  exportFormat: { args: { target: 'object', name: 'string', format: 'string' }, progress: true, cancel: 'message', about: 'the virtual disk as qcow2, vmdk, vmdk-stream, vhd, vhd-fixed or vhdx {format}, to {target}' },
  exportImage: { args: { target: 'object', name: 'string' }, progress: true, cancel: 'message', about: 'the image file itself, to {target}' },
  create: { args: { options: 'object', target: 'object' }, progress: true, about: 'a new image from {options}, saved to {target}' },
  importRaw: { args: { file: 'file', options: 'object', target: 'object' }, progress: true, cancel: 'flag', about: 'a new image holding a raw disk {file}' },
  storage: { query: true, about: 'browser storage used and the files staged by the worker' },
  freeStorage: { about: 'remove every staged file and editable copy not in use' },

  // Edits, on an editable copy in OPFS (or an image in memory).
  editCopy: { progress: true, cancel: 'message', about: 'copy the open file into OPFS and reopen it read-write' },
  closeCopy: { args: { name: 'string' }, about: 'close the editable copy {name} and delete it' },
  repairPlan: { args: { file: 'file' }, about: 'what repair would do to a {file} that does not open (a dry run)' },
  repairCopy: { args: { file: 'file' }, progress: true, cancel: 'flag', about: 'copy a {file} into OPFS, repair it there and open it' },
  compact: { args: { free: 'boolean?' }, progress: true, cancel: 'flag', about: 'ZERO (or FREE) blocks of zeros, shrink the file' },
  fsFreePlan: { about: 'per partition, what its filesystem calls free and what fs-aware compaction would release (reads only)' },
  compactFsAware: { progress: true, cancel: 'flag', about: 'release the blocks the guest\'s filesystems call free, then compact' },
  resize: { args: { size: 'count' }, progress: true, cancel: 'flag', about: 'change the virtual size' },
  discard: { args: { offset: 'index', length: 'count' }, progress: true, cancel: 'flag', about: 'drop the data of a byte range' },
  repair: { args: { dryRun: 'boolean?' }, progress: true, cancel: 'flag', about: 'fix what check finds ({dryRun} only plans)' },
  setFields: { args: { fields: 'object' }, about: 'write header fields (comment, UUIDs, LCHS geometry)' },
  writeFile: { args: { file: 'file', offset: 'index' }, progress: true, cancel: 'message', about: 'write a {file} into the disk at {offset}' },

  // Inside the disk (the Hex and Files views): the chain's disk ({chain: true}) or the
  // image's. Partitions are numbered as Linux numbers them; paths are absolute.
  hexRead: { args: { offset: 'index', len: 'count', chain: 'boolean?' }, query: true, transfer: ['bytes'], about: '{len} bytes of the disk at {offset} and the labels of the known structures there' },
  partitions: { args: { chain: 'boolean?' }, about: 'the partition table and the filesystem found in each partition' },
  fsList: { args: { chain: 'boolean?', part: 'index', path: 'string' }, about: 'the entries of folder {path} of partition {part}' },
  fsHead: { args: { chain: 'boolean?', part: 'index', path: 'string', len: 'count' }, transfer: ['bytes'], about: 'the first {len} bytes of file {path} (a preview)' },
  fsExtents: { args: { chain: 'boolean?', part: 'index', path: 'string' }, about: 'where the bytes of {path} lie on the disk' },
  fsSave: { args: { chain: 'boolean?', part: 'index', path: 'string', target: 'object', name: 'string' }, progress: true, cancel: 'message', about: 'file {path} of partition {part}, to {target}' },
  fsZip: { args: { chain: 'boolean?', part: 'index', path: 'string', target: 'object', name: 'string' }, progress: true, cancel: 'message', about: 'folder {path} of partition {part} as a .zip, to {target}' },

  // Snapshot chains (several files linked by UUID).
  chainOpen: { args: { files: 'files' }, about: 'link {files} into one chain, base first' },
  chainClose: { about: 'close the chain' },
  chainInfo: { about: 'the open chain\'s report' },
  chainCells: { args: { layer: 'index?', per: 'count' }, transfer: CELLS, about: 'a layer\'s map, or the combined one ({layer: null})' },
  chainExportRaw: { args: { target: 'object', name: 'string' }, progress: true, cancel: 'message', about: 'the flattened disk as a raw file' },
  chainExportFormat: { args: { target: 'object', name: 'string', format: 'string' }, progress: true, cancel: 'message', about: 'the flattened disk in another hypervisor\'s {format}' },
  chainExportVdi: { args: { target: 'object', name: 'string' }, progress: true, cancel: 'message', about: 'the flattened disk as a new dynamic VDI' },
});

/** The names of the operations, in table order. */
export const OP_NAMES = Object.freeze(Object.keys(OPS));

/** The spec of `name`, or null when the table has no such operation (never inherited keys). */
export function opSpec(name) {
  return typeof name === 'string' && Object.hasOwn(OPS, name) ? OPS[name] : null;
}

/** How a list of operation names differs from the table: {missing, extra}, both empty when
 * they agree (used by the worker for its handlers and by the bridge for the worker's list). */
export function compareOps(names) {
  const have = new Set(names);
  return {
    missing: OP_NAMES.filter((n) => !have.has(n)),
    extra: [...have].filter((n) => !opSpec(n)),
  };
}

const isBlob = (v) => typeof Blob === 'function' && v instanceof Blob;
const isWhole = (v) => Number.isSafeInteger(v) && v >= 0;
const TYPES = {
  object: (v) => typeof v === 'object' && v !== null && !Array.isArray(v),
  string: (v) => typeof v === 'string',
  boolean: (v) => typeof v === 'boolean',
  file: isBlob,
  files: (v) => Array.isArray(v) && v.every(isBlob),
  index: isWhole,
  count: (v) => isWhole(v) && v >= 1,
};

/** Why `args` do not fit operation `name`'s `args`, or null when they do. */
export function argsProblem(name, args) {
  const spec = opSpec(name);
  if (!spec) return `no operation ${JSON.stringify(name)}`;
  if (typeof args !== 'object' || args === null) return `${name} takes an object of arguments`;
  for (const [key, type] of Object.entries(spec.args ?? {})) {
    const optional = type.endsWith('?');
    const v = args[key];
    if (optional && v == null) continue;
    if (!TYPES[type.replace('?', '')](v)) return `${name}: ${key} must be ${type.replace('?', '')} (got ${v === null ? 'null' : typeof v})`;
  }
  return null;
}

function deepFreeze(o) {
  for (const v of Object.values(o)) if (v && typeof v === 'object') deepFreeze(v);
  return Object.freeze(o);
}
