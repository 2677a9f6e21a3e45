// The one module that calls the wasm engine (crates/vdi-wasm): every call into a Session
// (what is open: an image or a snapshot chain, one type for both), and every view into
// wasm memory, is made here. The handlers (worker/handlers/) see plain values: parsed
// reports, typed arrays, and pieces whose bytes are views valid until the next call.
//
// Two sessions are kept: `image` (what the Header, Block map, Check, Export and Edit views
// show) and `chain` (the Chain view's disk), because with a chain open the other views show
// its top layer. Both are the same Session type and share every code path below.
//
// The open image's report is parsed once per change and kept (`image.info()`): the
// handlers that need one field of it read the kept value.

import init, { Session, PieceKind, limits } from '../pkg/vdi_wasm.js';
import { setLimits } from '../core/limits.js';

let wasm = null;
/** The image session, and the chain session. */
let s = null;
let c = null;
/** The open image's report, parsed; null when it must be asked for again. */
let infoCache = null;
/** The File the open image is read from (to save it back without a copy), or null. */
let currentFile = null;

/** Load the wasm module and make the engine objects. */
export async function startEngine() {
  wasm = await init();
  s = new Session();
  c = new Session();
  setLimits(engineLimits());
}

/** The engine's limits: {max-cells, max-files, chunk, mem-open-limit, mem-create-limit}. */
export function engineLimits() {
  return parseJson(limits());
}

/** Bytes of WebAssembly memory the engine holds. */
export function engineMemory() {
  return wasm.memory.buffer.byteLength;
}

/** Parse engine JSON; integers beyond 2^53 become BigInt so no digit is lost. */
export function parseJson(text) {
  return JSON.parse(text, (key, value, ctx) => {
    if (typeof value === 'number' && !Number.isSafeInteger(value) && ctx && /^-?\d+$/.test(ctx.source)) {
      return BigInt(ctx.source);
    }
    return value;
  });
}

const view = (ptr, len) => new Uint8Array(wasm.memory.buffer, ptr, len);

/** Run `call` that changes the image: the kept report is dropped first (a call that
 * fails or is cancelled halfway may have changed the image too). Returns its parsed JSON. */
function changing(call) {
  infoCache = null;
  const text = call();
  return text === undefined ? undefined : parseJson(text);
}

/** A new open image (its report is the answer of the open call). */
function opened(text, file = null) {
  infoCache = parseJson(text);
  currentFile = file;
  return infoCache;
}

/** Cells (the engine's one Cells type) as plain values with typed arrays of their own
 * (transferable); the engine object is freed. */
function cells(m) {
  try {
    return {
      per: m.per, cells: m.cells, blocks: m.blocks, readable: m.readable,
      data: m.data(), zero: m.zero(), unreadable: m.unreadable(), slot: m.slot(), layer: m.layer(),
      summary: parseJson(m.summary()),
    };
  } finally {
    m.free();
  }
}

/** A raw-export piece, or null at the end: {offset, len, bytes} (bytes: a view into wasm
 * memory for data, null for zeros, valid until the next engine call). */
function piece(kind, offset, len, ptr) {
  if (kind === PieceKind.End) return null;
  return { offset, len, bytes: kind === PieceKind.Data ? view(ptr, len) : null };
}

/** The raw export of a session's disk (pieces in disk order, or host order for an image). */
function exportOf(session) {
  return {
    /** Start a raw export: {size (of the disk), total (bytes of work), hostOrder}. */
    exportBegin() {
      const size = session().export_begin();
      return { size, total: session().export_total(), hostOrder: session().export_host_order() };
    },
    /** Disk order: the next piece read by the engine, or null at the end. */
    exportNext() {
      const x = session();
      const kind = x.export_next();
      return piece(kind, x.piece_offset(), x.piece_len(), x.buffer_ptr() + x.piece_buffer_offset());
    },
    exportDone: () => session().export_done(),
    exportCancel: () => session().export_cancel(),
    /** Start an export to another `format` into a file `name`: the plan {format, disk-size,
     * virtual-size, output-length (null: known at the end), notes}. */
    formatBegin: (format, name) => parseJson(session().format_begin(format, name)),
    /** The next step, or null at the end: {done (disk bytes), written (output bytes),
     * pieces: [{offset, len, bytes}]} (bytes: a view valid until the next engine call, or
     * null for zeros). */
    formatStep() {
      const x = session();
      const v = x.format_step();
      if (!v.length) return null;
      const ptr = x.format_buffer_ptr();
      const pieces = [];
      for (let k = 2; k < v.length; k += 3) {
        pieces.push({ offset: v[k], len: v[k + 1], bytes: v[k + 2] < 0 ? null : view(ptr + v[k + 2], v[k + 1]) });
      }
      return { done: v[0], written: v[1], pieces };
    },
    formatCancel: () => session().format_cancel(),
  };
}

/** The single image. */
export const image = {
  ...exportOf(() => s),
  /** Open a File read-only, in place; the previous image stays open if this throws. */
  openFile: (file) => opened(s.open_file(file), file),
  /** Open an OPFS file read-write through its sync access handle (the engine closes it). */
  openOpfs: (handle, label) => opened(s.open_opfs(handle, label)),
  /** The sample (built in memory); the open image is closed first, even if this fails. */
  openSample() {
    infoCache = null;
    currentFile = null;
    return opened(s.open_sample());
  },
  close() { s.close(); infoCache = null; currentFile = null; },
  /** The report {info, file}: kept from the last change. Do not modify it. */
  info() {
    infoCache ??= parseJson(s.info());
    return infoCache;
  },
  /** The File the open image is read from, when it is still that File; else null. */
  sourceFile() {
    if (!currentFile) return null;
    const { file } = image.info();
    return file.backend === 'file' && file.length === currentFile.size ? currentFile : null;
  },
  check: (progress) => parseJson(s.check(progress)),
  readStats() {
    try { return parseJson(s.read_stats()); } catch { return null; }
  },
  /** The map folded into cells of `per` blocks: typed arrays of their own (transferable). */
  mapCells: (per) => cells(s.map_cells(per)),
  blockInfo: (block) => parseJson(s.block_info(block)),
  rangeInfo: (first, end) => parseJson(s.range_info(first, end)),

  /** Host order: the next run of the file to copy, [host, len, (disk, len, at) × n], or null. */
  exportPlanNext() {
    const p = s.export_plan_next();
    return p.length ? p : null;
  },
  /** `len` bytes of the image file at `offset` (a view valid until the next call). */
  readImage(offset, len) {
    s.read_image(offset, len);
    return view(s.buffer_ptr(), len);
  },

  /** Create an image from `options`, in memory (no handle) or in the OPFS file behind
   * `handle`; it becomes the open image. Returns its report. */
  create(options, handle) {
    infoCache = null;
    return opened(s.create_image(JSON.stringify(options), handle));
  },
  /** The stored bytes of an image built in memory (the rest of its file is zeros). */
  createdMeta: () => view(s.created_meta_ptr(), s.created_meta_len()),
  /** Build an image holding the raw disk `file` in the OPFS file behind `handle`. */
  importRaw(file, options, handle, progress, cancelled) {
    infoCache = null;
    const r = parseJson(s.import_raw(file, JSON.stringify(options), handle, progress, cancelled));
    currentFile = null;
    return r;
  },

  compact: (free, progress, cancelled) => changing(() => s.compact(free, progress, cancelled)),
  fsFreePlan: () => parseJson(s.fs_free_plan()),
  compactFsAware: (progress, cancelled) => changing(() => s.compact_fs_aware(progress, cancelled)),
  resize: (size, progress, cancelled) => changing(() => s.resize(size, progress, cancelled)),
  discard: (offset, length, progress, cancelled) => changing(() => s.discard(offset, length, progress, cancelled)),
  repair: (dryRun, progress, cancelled) => changing(() => s.repair(dryRun, progress, cancelled)),
  setFields(fields) { changing(() => { s.set_fields(JSON.stringify(fields)); }); },
  writeDisk(offset, bytes) { changing(() => { s.write_disk(offset, bytes); }); },
  flush: () => s.flush(),
  repairPlan: (file) => parseJson(s.repair_plan(file)),
  /** Repair the OPFS file behind `handle` and open it; returns the repair report. */
  repairOpfs(handle, label, progress, cancelled) {
    infoCache = null;
    const r = parseJson(s.repair_opfs(handle, label, progress, cancelled));
    currentFile = null;
    return r;
  },
};

/** A snapshot chain, in its own session. */
export const chain = {
  ...exportOf(() => c),
  open: (files) => parseJson(c.open_files(files)),
  close: () => c.close(),
  info: () => parseJson(c.info()),
  /** A layer's cells, or the combined disk's (layer null). */
  cells: (layer, per) => cells(layer == null ? c.map_cells(per) : c.layer_cells(layer, per)),
  /** Start the flattened VDI in the OPFS file behind `handle` (the session owns the handle
   * from here); returns its size in bytes of work. */
  flatBegin: (handle) => c.flat_begin(handle),
  /** One step; returns the work done so far. */
  flatStep: () => c.flat_step(),
  flatFinish: () => parseJson(c.flat_finish()),
  flatCancel: () => c.flat_cancel(),
};

/** The disk seen by the Hex and Files views: the chain's (files as its top sees them) or
 * the image's. `chainDisk` picks the session; byte views are valid until the next call. */
export const disk = {
  /** `len` bytes at `offset` (a copy of their own) and the labelled fields there. */
  read(chainDisk, offset, len) {
    const x = chainDisk ? c : s;
    const bytes = x.read_copy(offset, len);
    return { offset, bytes, labels: parseJson(x.structure_labels(offset, len)) };
  },
  partitions: (chainDisk) => parseJson((chainDisk ? c : s).partitions()),
  list: (chainDisk, part, path) => parseJson((chainDisk ? c : s).fs_list(part, path)),
  head: (chainDisk, part, path, len) => (chainDisk ? c : s).fs_head(part, path, len),
  extents: (chainDisk, part, path) => parseJson((chainDisk ? c : s).fs_extents(part, path)),
  /** Open a file for `fileRead`; returns its entry. */
  fileOpen: (chainDisk, part, path) => parseJson((chainDisk ? c : s).fs_file(part, path)),
  /** Up to `len` bytes of the open file at `offset` (a view; empty at its end). */
  fileRead(chainDisk, offset, len) {
    const x = chainDisk ? c : s;
    const n = x.fs_read(offset, len);
    return view(x.buffer_ptr(), n);
  },
  /** Start a zip of a folder: {size, data, entries}. */
  zipBegin: (chainDisk, part, path, root) => parseJson((chainDisk ? c : s).zip_begin(part, path, root)),
  /** The next piece of the zip (a view), or null at the end. */
  zipNext(chainDisk) {
    const x = chainDisk ? c : s;
    const n = x.zip_next();
    return n ? view(x.buffer_ptr(), n) : null;
  },
  zipStatus: (chainDisk) => parseJson((chainDisk ? c : s).zip_status()),
  zipEnd: (chainDisk) => (chainDisk ? c : s).zip_end(),
};
