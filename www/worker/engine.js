// The one module that calls the wasm engine (crates/vdi-wasm): every call into a Workbench
// or ChainBench object, and every view into wasm memory, is made here. The handlers
// (worker/handlers/) see plain values: parsed reports, typed arrays, and pieces whose bytes
// are views valid until the next call.
//
// The open image's report is parsed once per change and kept (`image.info()`): the
// handlers that need one field of it read the kept value.

import init, { Workbench, ChainBench, PieceKind } from '../pkg/vdi_wasm.js';

let wasm = null;
let wb = null;
let bench = null;
/** The open image's report, parsed; null when it must be asked for again. */
let infoCache = null;
/** The File the open image is read from (to save it back without a copy), or null. */
let currentFile = null;

/** Load the wasm module and make the engine objects. */
export async function startEngine() {
  wasm = await init();
  wb = new Workbench();
  bench = new ChainBench();
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

/** A raw-export piece, or null at the end: {offset, len, bytes} (bytes: a view into wasm
 * memory for data, null for zeros, valid until the next engine call). */
function piece(kind, offset, len, ptr) {
  if (kind === PieceKind.End) return null;
  return { offset, len, bytes: kind === PieceKind.Data ? view(ptr, len) : null };
}

/** The single image. */
export const image = {
  /** Open a File read-only, in place; the previous image stays open if this throws. */
  openFile: (file) => opened(wb.open_file(file), file),
  /** Open an OPFS file read-write through its sync access handle (the engine closes it). */
  openOpfs: (handle, label) => opened(wb.open_opfs(handle, label)),
  /** The sample (built in memory); the open image is closed first, even if this fails. */
  openSample() {
    infoCache = null;
    currentFile = null;
    return opened(wb.open_sample());
  },
  close() { wb.close(); infoCache = null; currentFile = null; },
  /** The report {info, file}: kept from the last change. Do not modify it. */
  info() {
    infoCache ??= parseJson(wb.info());
    return infoCache;
  },
  /** The File the open image is read from, when it is still that File; else null. */
  sourceFile() {
    if (!currentFile) return null;
    const { file } = image.info();
    return file.backend === 'file' && file.length === currentFile.size ? currentFile : null;
  },
  check: (progress) => parseJson(wb.check(progress)),
  readStats() {
    try { return parseJson(wb.read_stats()); } catch { return null; }
  },
  /** The map folded into cells of `per` blocks: typed arrays of their own (transferable). */
  mapCells(per) {
    const m = wb.map_cells(per);
    try {
      return {
        per: m.per, cells: m.cells, blocks: m.blocks, readable: m.readable,
        data: m.data(), zero: m.zero(), slot: m.slot(), summary: parseJson(m.summary()),
      };
    } finally {
      m.free();
    }
  },
  blockInfo: (block) => parseJson(wb.block_info(block)),
  rangeInfo: (first, end) => parseJson(wb.range_info(first, end)),

  /** Start a raw export: {size (of the disk), total (bytes of work), hostOrder}. */
  exportBegin() {
    const size = wb.export_begin();
    return { size, total: wb.export_total(), hostOrder: wb.export_host_order() };
  },
  /** Host order: the next run of the file to copy, [host, len, (disk, len, at) × n], or null. */
  exportPlanNext() {
    const p = wb.export_plan_next();
    return p.length ? p : null;
  },
  /** Disk order: the next piece read by the engine, or null at the end. */
  exportNext() {
    const kind = wb.export_next();
    return piece(kind, wb.piece_offset(), wb.piece_len(), wb.buffer_ptr() + wb.piece_buffer_offset());
  },
  exportDone: () => wb.export_done(),
  exportCancel: () => wb.export_cancel(),
  /** `len` bytes of the image file at `offset` (a view valid until the next call). */
  readImage(offset, len) {
    wb.read_image(offset, len);
    return view(wb.buffer_ptr(), len);
  },

  /** Create an image from `options`, in memory (no handle) or in the OPFS file behind
   * `handle`; it becomes the open image. Returns its report. */
  create(options, handle) {
    infoCache = null;
    return opened(wb.create_image(JSON.stringify(options), handle));
  },
  /** The stored bytes of an image built in memory (the rest of its file is zeros). */
  createdMeta: () => view(wb.created_meta_ptr(), wb.created_meta_len()),
  /** Build an image holding the raw disk `file` in the OPFS file behind `handle`. */
  importRaw(file, options, handle, progress, cancelled) {
    infoCache = null;
    const r = parseJson(wb.import_raw(file, JSON.stringify(options), handle, progress, cancelled));
    currentFile = null;
    return r;
  },

  compact: (free, progress, cancelled) => changing(() => wb.compact(free, progress, cancelled)),
  resize: (size, progress, cancelled) => changing(() => wb.resize(size, progress, cancelled)),
  discard: (offset, length, progress, cancelled) => changing(() => wb.discard(offset, length, progress, cancelled)),
  repair: (dryRun, progress, cancelled) => changing(() => wb.repair(dryRun, progress, cancelled)),
  setFields(fields) { changing(() => { wb.set_fields(JSON.stringify(fields)); }); },
  writeDisk(offset, bytes) { changing(() => { wb.write_disk(offset, bytes); }); },
  flush: () => wb.flush(),
  repairPlan: (file) => parseJson(wb.repair_plan(file)),
  /** Repair the OPFS file behind `handle` and open it; returns the repair report. */
  repairOpfs(handle, label, progress, cancelled) {
    infoCache = null;
    const r = parseJson(wb.repair_opfs(handle, label, progress, cancelled));
    currentFile = null;
    return r;
  },
};

/** A snapshot chain. */
export const chain = {
  open: (files) => parseJson(bench.open(files)),
  close: () => bench.close(),
  info: () => parseJson(bench.info()),
  /** A layer's cells, or the combined disk's (layer null): typed arrays of their own. */
  cells(layer, per) {
    const c = layer == null ? bench.combined_cells(per) : bench.layer_cells(layer, per);
    try {
      return {
        per: c.per, cells: c.cells, blocks: c.blocks,
        data: c.data(), zero: c.zero(), unreadable: c.unreadable(), layer: c.layer(), summary: parseJson(c.summary()),
      };
    } finally {
      c.free();
    }
  },
  exportBegin() {
    const size = bench.export_begin();
    return { size, total: size, hostOrder: false };
  },
  exportNext() {
    const kind = bench.export_next();
    return piece(kind, bench.piece_offset(), bench.piece_len(), bench.buffer_ptr());
  },
  exportDone: () => bench.export_done(),
  exportCancel: () => bench.export_cancel(),
  /** Start the flattened VDI in the OPFS file behind `handle` (the bench owns the handle
   * from here); returns its size in bytes of work. */
  flatBegin: (handle) => bench.flat_begin(handle),
  /** One step; returns the work done so far. */
  flatStep: () => bench.flat_step(),
  flatFinish: () => parseJson(bench.flat_finish()),
  flatCancel: () => bench.flat_cancel(),
};
