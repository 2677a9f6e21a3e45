// The workbench's worker: the wasm engine and every storage backend live here.
// The page never loads wasm and never holds image bytes; it talks to this worker with
//   {id, op, args}  ->  {id, ok: true, result} | {id, ok: false, error: {kind, message}}
// and receives progress as separate {id, progress: {done, total}} messages.

import init, { Workbench, PieceKind } from './pkg/vdi_wasm.js';
import { chainOps } from './chain-worker.js';

let wasm = null;
let wb = null;
/** Snapshot chains (chain-worker.js): ops named chain*. */
let chainRun = null;
/** Ids of jobs the page asked to cancel. */
const cancelled = new Set();
/** Long jobs run one at a time, in order; queries run at once. */
let queue = Promise.resolve();
/** Prefix of OPFS files this worker stages (exports, created images); removed at start-up. */
const STAGING = 'vdi-workbench-';
/** Prefix of the editable copies (see the edits below). Unlike staged exports they are kept
 * across visits until the user closes them or frees browser storage. */
const EDITING = 'vdi-edit-';

const QUERIES = new Set(['blockInfo', 'rangeInfo', 'stats', 'cancel', 'storage']);
/** Set once the wasm instance trapped (a Rust panic or abort executes `unreachable`; also
 * out-of-bounds memory, stack overflow): its state can no longer be trusted, so every later
 * call fails with this error and the page replaces this worker with a fresh one. */
let crashed = null;

function noteTrap(e) {
  if (!crashed && e instanceof WebAssembly.RuntimeError) {
    const cause = `${e.name}: ${e.message}`;
    crashed = { kind: 'engine-crashed', message: `the engine stopped unexpectedly (${cause})` };
    post({ crashed: { cause } });
  }
}

function fail(kind, message) {
  const e = new Error(message);
  e.kind = kind;
  return e;
}

/** Turn anything thrown (engine {kind, message}, DOMException, Error) into {kind, message}. */
function toError(e) {
  if (e && typeof e === 'object' && typeof e.kind === 'string') {
    return { kind: e.kind, message: String(e.message) };
  }
  if (e && e.name === 'QuotaExceededError') {
    return { kind: 'no-space', message: `the browser's storage is full: ${e.message}` };
  }
  if (e && typeof e.name === 'string' && typeof e.message === 'string') {
    return { kind: 'browser', message: `${e.name}: ${e.message}` };
  }
  return { kind: 'browser', message: String(e) };
}

/** Parse engine JSON; integers beyond 2^53 become BigInt so no digit is lost. */
function parseJson(text) {
  return JSON.parse(text, (key, value, ctx) => {
    if (typeof value === 'number' && !Number.isSafeInteger(value) && ctx && /^-?\d+$/.test(ctx.source)) {
      return BigInt(ctx.source);
    }
    return value;
  });
}

/** Let queued messages (cancel, hover queries) run. */
function breathe() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function post(msg, transfer = []) {
  self.postMessage(msg, transfer);
}

function progress(id, done, total, extra = {}) {
  post({ id, progress: { done, total, ...extra } });
}

/** A view of the transfer buffer in wasm memory (re-made after every wasm call). */
function bufferView(len) {
  return new Uint8Array(wasm.memory.buffer, wb.buffer_ptr(), len);
}

async function opfsRoot() {
  if (!self.navigator.storage || !self.navigator.storage.getDirectory) {
    throw fail('unsupported', 'this browser has no origin private file system (OPFS)');
  }
  return self.navigator.storage.getDirectory();
}

async function storageEstimate() {
  try {
    const e = await self.navigator.storage.estimate();
    return { usage: e.usage ?? null, quota: e.quota ?? null };
  } catch {
    return { usage: null, quota: null };
  }
}

/** Files this worker staged in OPFS: [{name, size}]. */
async function stagedFiles() {
  const out = [];
  try {
    const dir = await opfsRoot();
    for await (const [name, h] of dir.entries()) {
      if (h.kind === 'file' && (name.startsWith(STAGING) || name.startsWith(EDITING))) {
        let size = 0;
        try { size = (await h.getFile()).size; } catch { /* locked or gone */ }
        out.push({ name, size });
      }
    }
  } catch { /* no OPFS */ }
  return out;
}

/** Remove staged files (names starting with one of `prefixes`, then a timestamp) older
 * than `ageMs`. Files in use (an open access handle, e.g. the copy being edited) refuse
 * removal and stay. */
async function removeStaged(ageMs = 0, prefixes = [STAGING]) {
  try {
    const dir = await opfsRoot();
    const now = Date.now();
    for (const f of await stagedFiles()) {
      const prefix = prefixes.find((p) => f.name.startsWith(p));
      if (!prefix) continue;
      const t = Number(f.name.slice(prefix.length).split('-')[0]);
      if (!(now - t < ageMs)) {
        try { await dir.removeEntry(f.name); } catch { /* in use */ }
      }
    }
  } catch { /* no OPFS */ }
}

function human(n) {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = Number(n);
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return u ? `${v.toFixed(v >= 100 ? 0 : 1).replace(/\.0$/, '')} ${units[u]}` : `${v} bytes`;
}

function safeName(name) {
  return String(name).replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 80) || 'image';
}

/** Where exported bytes go: a writable file stream (save picker) or a staged OPFS file.
 * (`{kind: 'null'}` discards them: the benchmark uses it to time reading alone.) */
async function openSink(target, size, name) {
  if (target && target.kind === 'null') {
    return {
      async write() {},
      async finish() { return { kind: 'discarded', name, size }; },
      async abort() {},
    };
  }
  if (target && target.kind === 'handle') {
    const w = await target.handle.createWritable({ keepExistingData: false });
    try {
      await w.truncate(size);
    } catch (e) {
      try { await w.abort(); } catch { /* already failed */ }
      throw e;
    }
    return {
      async write(view, position) {
        await w.write({ type: 'write', position, data: view });
      },
      async finish() {
        await w.close();
        return { kind: 'saved', name: target.handle.name, size };
      },
      async abort() {
        try { await w.abort(); } catch { /* closed */ }
      },
    };
  }
  // Stage in OPFS, then hand the page a File for a download.
  const dir = await opfsRoot();
  const fileName = `${STAGING}${Date.now()}-${safeName(name)}`;
  const fh = await dir.getFileHandle(fileName, { create: true });
  const ah = await fh.createSyncAccessHandle();
  const cleanup = async () => {
    try { ah.close(); } catch { /* closed */ }
    try { await dir.removeEntry(fileName); } catch { /* gone */ }
  };
  try {
    ah.truncate(size);
  } catch (e) {
    await cleanup();
    if (e && e.name === 'QuotaExceededError') {
      const est = await storageEstimate();
      const free = est.quota != null ? Math.max(0, est.quota - est.usage) : null;
      throw fail('no-space', `not enough browser storage to stage the ${human(size)} export for the download` +
        (free != null ? ` (the browser reports about ${human(free)} free)` : '') +
        '; use a browser with a save dialog (showSaveFilePicker), or free space with "Free browser storage"');
    }
    throw e;
  }
  return {
    async write(view, position) {
      writeAllSync(ah, view, position, 'the staged file');
    },
    async finish() {
      // No flush(): the staged file is a temporary the download copies; an fsync of
      // gigabytes would only make the user wait for the disk.
      ah.close();
      const file = await fh.getFile();
      return { kind: 'download', file, name, size };
    },
    abort: cleanup,
  };
}

/** Write all of `data` at `position` through a sync access handle (a write may be short). */
function writeAllSync(ah, data, position, what) {
  let done = 0;
  while (done < data.length) {
    const n = ah.write(done ? data.subarray(done) : data, { at: position + done });
    if (n <= 0) throw fail('no-space', `writing at ${position + done} of ${what} wrote nothing (browser storage full?)`);
    done += n;
  }
}

/** Reads of the image file kept in flight by the File export (each at most 8 MiB). */
const READS_IN_FLIGHT = 3;
/** Bytes of writes queued on the target before waiting for the oldest. */
const WRITE_QUEUE_BYTES = 32 << 20;

/** Raw export of the virtual disk. The target is sized to the disk first (zeros), then
 * data is written at its offsets, so FREE and ZERO blocks cost nothing. */
async function exportRaw(id, { target, name }) {
  const size = wb.export_begin();
  const total = wb.export_total();
  const sink = await openSink(target, size, name);
  const t0 = performance.now();
  const file = wb.export_host_order() ? sourceFile() : null;
  try {
    const dataBytes = file
      ? await exportFromFile(id, file, sink, total)
      : await exportThroughWasm(id, sink, total);
    progress(id, total, total, { dataBytes, ofData: wb.export_host_order() });
    const t1 = performance.now();
    const result = await sink.finish();
    const now = performance.now();
    return { ...result, dataBytes, ms: now - t0, finishMs: now - t1 };
  } catch (e) {
    await sink.abort();
    throw e;
  } finally {
    wb.export_cancel();
  }
}

/** The engine plans each run of the file (front to back, at most 8 MiB, see export.rs);
 * the run is read from the File asynchronously (a few in flight) and its pieces written
 * straight from that buffer to the target, writes queued while the next reads proceed.
 * Memory: the runs in flight and the queued writes, a few tens of MiB at most. */
async function exportFromFile(id, file, sink, total) {
  const reads = [];
  const writes = [];
  let queued = 0;
  let dataBytes = 0;
  let lastProgress = 0;
  let failure = null;
  const planNext = () => {
    const p = wb.export_plan_next();
    if (!p.length) return null;
    const [host, len] = p;
    const data = file.slice(host, host + len).arrayBuffer().then((ab) => {
      if (ab.byteLength !== len) throw fail('io', `reading ${len} bytes at ${host} of the image returned ${ab.byteLength} (was the file changed?)`);
      return ab;
    }, (e) => { throw fail('io', `reading ${len} bytes at ${host} of the image failed (was the file changed or removed?): ${toError(e).message}`); });
    data.catch(() => {}); // awaited below; never an unhandled rejection
    return { plan: p, data };
  };
  const fill = () => {
    while (reads.length < READS_IN_FLIGHT) {
      const r = planNext();
      if (!r) break;
      reads.push(r);
    }
  };
  fill();
  while (reads.length) {
    if (cancelled.has(id)) throw fail('cancelled', 'the export was cancelled');
    const { plan, data } = reads.shift();
    const ab = await data;
    fill();
    for (let k = 2; k < plan.length; k += 3) {
      const len = plan[k + 1];
      const w = sink.write(new Uint8Array(ab, plan[k + 2], len), plan[k]);
      const entry = { w: w.catch((e) => { failure ??= e; }), len };
      writes.push(entry);
      queued += len;
      dataBytes += len;
      while (queued > WRITE_QUEUE_BYTES) {
        const oldest = writes.shift();
        await oldest.w;
        queued -= oldest.len;
      }
      if (failure) throw failure;
    }
    const now = performance.now();
    if (now - lastProgress > 50) {
      lastProgress = now;
      progress(id, wb.export_done(), total, { dataBytes, ofData: true });
    }
  }
  await Promise.all(writes.map((x) => x.w));
  if (failure) throw failure;
  return dataBytes;
}

/** Pieces read by the engine into the transfer buffer (images in memory or in OPFS, and
 * disk order), one write awaited at a time since the buffer is reused. */
async function exportThroughWasm(id, sink, total) {
  let lastBreath = performance.now();
  let lastProgress = 0;
  let dataBytes = 0;
  for (;;) {
    if (cancelled.has(id)) throw fail('cancelled', 'the export was cancelled');
    const kind = wb.export_next();
    if (kind === PieceKind.End) break;
    const len = wb.piece_len();
    if (kind === PieceKind.Data) {
      const view = new Uint8Array(wasm.memory.buffer, wb.buffer_ptr() + wb.piece_buffer_offset(), len);
      await sink.write(view, wb.piece_offset());
      dataBytes += len;
    }
    const now = performance.now();
    if (now - lastProgress > 50) {
      lastProgress = now;
      progress(id, wb.export_done(), total, { dataBytes, ofData: wb.export_host_order() });
    }
    if (now - lastBreath > 40) {
      await breathe();
      lastBreath = performance.now();
    }
  }
  return dataBytes;
}

/** Save the image file itself. */
async function exportImage(id, { target, name }) {
  const info = parseJson(wb.info());
  const size = info.file.length;
  const file = sourceFile();
  if (file && !(target && target.kind === 'handle')) {
    // The page's File is already a download source: nothing to copy.
    return { kind: 'download', file, name, size, dataBytes: size, ms: 0 };
  }
  const sink = await openSink(target, size, name);
  const t0 = performance.now();
  let lastBreath = t0;
  try {
    if (info.file.backend === 'memory') {
      // Only the stored bytes; the rest of the file is zeros (already there after truncate).
      const len = wb.created_meta_len();
      await sink.write(new Uint8Array(wasm.memory.buffer, wb.created_meta_ptr(), len), 0);
      progress(id, size, size);
    } else {
      const CH = 8 << 20;
      for (let off = 0; off < size; off += CH) {
        if (cancelled.has(id)) throw fail('cancelled', 'the export was cancelled');
        const len = Math.min(CH, size - off);
        if (file) {
          await sink.write(file.slice(off, off + len), off);
        } else {
          wb.read_image(off, len);
          await sink.write(bufferView(len), off);
        }
        progress(id, off + len, size);
        if (performance.now() - lastBreath > 40) {
          await breathe();
          lastBreath = performance.now();
        }
      }
    }
    const result = await sink.finish();
    return { ...result, dataBytes: size, ms: performance.now() - t0 };
  } catch (e) {
    await sink.abort();
    throw e;
  }
}

/** The File the open image came from (for saving it back without a copy). */
let currentFile = null;

function opened(infoText, t0) {
  const r = parseJson(infoText);
  r.ms = performance.now() - t0;
  return r;
}

async function open({ source }) {
  const t0 = performance.now();
  if (source.kind === 'file') {
    const r = opened(wb.open_file(source.file), t0);
    currentFile = source.file; // only once open: a failed open keeps the previous image
    return r;
  }
  if (source.kind === 'opfs') {
    const r = opened(await openOpfs(source.name, source.label), t0);
    currentFile = null;
    return r;
  }
  if (source.kind === 'sample') {
    const r = opened(wb.open_sample(), t0);
    currentFile = null;
    return r;
  }
  throw fail('invalid-argument', `unknown source kind ${source.kind}`);
}

/** The File the open image is read from, or null (an image in memory). */
function sourceFile() {
  if (!currentFile) return null;
  const info = parseJson(wb.info());
  return info.file.backend === 'file' && info.file.length === currentFile.size ? currentFile : null;
}

/** Create an image; save it through the picked handle or stage it in OPFS for a download. */
async function create(id, { options, target }) {
  const opts = JSON.stringify(options);
  if (target && target.kind === 'handle') {
    const info = parseJson(wb.create_image(opts, undefined));
    currentFile = null; // the new image is in memory
    const size = info.file.length;
    const sink = await openSink(target, size, info.file.name);
    try {
      const len = wb.created_meta_len();
      await sink.write(new Uint8Array(wasm.memory.buffer, wb.created_meta_ptr(), len), 0);
      progress(id, size, size);
      const saved = await sink.finish();
      return { info, saved };
    } catch (e) {
      await sink.abort();
      throw e;
    }
  }
  // Fallback: build in OPFS with the engine writing through a sync access handle.
  const dir = await opfsRoot();
  const fileName = `${STAGING}${Date.now()}-new.vdi`;
  const fh = await dir.getFileHandle(fileName, { create: true });
  const ah = await fh.createSyncAccessHandle();
  let info;
  try {
    info = parseJson(wb.create_image(opts, ah));
  } catch (e) {
    try { ah.close(); } catch { /* closed by the engine */ }
    try { await dir.removeEntry(fileName); } catch { /* gone */ }
    throw e;
  }
  // Release the handle's lock, then reopen the new image read-only from its File.
  wb.close();
  const file = await fh.getFile();
  const name = info.file.name;
  const t0 = performance.now();
  const reopened = opened(wb.open_file(new File([file], name)), t0);
  currentFile = file;
  progress(id, file.size, file.size);
  return { info: reopened, saved: { kind: 'download', file, name, size: file.size } };
}

/* ---------- edits (see crates/vdi-wasm/src/edit.rs) ---------- */

/** `cancelled()` for a job: the page's shared flag (a SharedArrayBuffer the page sets while
 * the engine runs, when the page is cross-origin isolated), else the cancel message (seen
 * only between awaits). */
function cancelCheck(id, flag) {
  const view = flag ? new Int32Array(flag) : null;
  return () => (view !== null && Atomics.load(view, 0) !== 0) || cancelled.has(id);
}

function progressFn(id) {
  let last = 0;
  return (done, total) => {
    const now = performance.now();
    if (now - last > 50 || done === total) {
      last = now;
      progress(id, done, total);
    }
  };
}

/** A sync access handle on an OPFS file; a handle the previous worker held (a cancelled
 * job ended by stopping the worker) is released shortly after, so busy files are retried. */
async function syncHandle(fh) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fh.createSyncAccessHandle();
    } catch (e) {
      if (!(e && e.name === 'NoModificationAllowedError') || attempt >= 40) throw e;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function openOpfs(name, label) {
  const dir = await opfsRoot();
  let fh;
  try {
    fh = await dir.getFileHandle(name);
  } catch (e) {
    throw fail('io', `the editable copy ${label} is no longer in browser storage (${toError(e).message})`);
  }
  const ah = await syncHandle(fh);
  return wb.open_opfs(ah, label);
}

/** Copy `file` into a new OPFS file (8 MiB at a time); returns [dir, name, handle]. */
async function copyToOpfs(id, file, isCancelled) {
  const dir = await opfsRoot();
  const name = `${EDITING}${Date.now()}-${safeName(file.name)}`;
  const fh = await dir.getFileHandle(name, { create: true });
  const ah = await fh.createSyncAccessHandle();
  const cleanup = async () => {
    try { ah.close(); } catch { /* closed */ }
    try { await dir.removeEntry(name); } catch { /* gone */ }
  };
  try {
    ah.truncate(file.size);
    const CH = 8 << 20;
    for (let off = 0; off < file.size; off += CH) {
      if (isCancelled()) throw fail('cancelled', 'making the editable copy was cancelled');
      const len = Math.min(CH, file.size - off);
      const ab = await file.slice(off, off + len).arrayBuffer();
      if (ab.byteLength !== len) throw fail('io', `reading ${len} bytes at ${off} of ${file.name} returned ${ab.byteLength} (was the file changed?)`);
      writeAllSync(ah, new Uint8Array(ab), off, 'the copy');
      progress(id, off + len, file.size);
    }
    ah.flush();
  } catch (e) {
    await cleanup();
    if (e && e.name === 'QuotaExceededError') {
      throw fail('no-space', `not enough browser storage for a ${human(file.size)} copy; free space with "Free browser storage"`);
    }
    throw e;
  }
  return [dir, name, ah];
}

/** Copy the open image's file into OPFS and reopen it read-write from there. */
async function editCopy(id, { flag }) {
  const file = sourceFile();
  if (!file) throw fail('invalid-argument', 'the open image is not read from a file (it is already editable or in memory)');
  const label = file.name;
  const [, name, ah] = await copyToOpfs(id, file, cancelCheck(id, flag));
  const t0 = performance.now();
  let r;
  try {
    r = opened(wb.open_opfs(ah, label), t0);
  } catch (e) {
    const dir = await opfsRoot();
    try { await dir.removeEntry(name); } catch { /* gone */ }
    throw e;
  }
  currentFile = null;
  return { ...r, source: { kind: 'opfs', name, label } };
}

/** Copy a file that may not open into OPFS, repair it there and open the result. */
async function repairCopy(id, { file, flag }) {
  const isCancelled = cancelCheck(id, flag);
  const [dir, name, ah] = await copyToOpfs(id, file, isCancelled);
  try {
    const report = parseJson(wb.repair_opfs(ah, file.name, progressFn(id), isCancelled));
    currentFile = null;
    return { report, opened: parseJson(wb.info()), source: { kind: 'opfs', name, label: file.name } };
  } catch (e) {
    try { await dir.removeEntry(name); } catch { /* in use or gone */ }
    throw e;
  }
}

/** Import a raw disk file as a new image: built in a staged OPFS file by the engine, then
 * reopened read-only from it and saved like a created image. */
async function importRaw(id, { file, options, target, flag }) {
  const dir = await opfsRoot();
  const fileName = `${STAGING}${Date.now()}-${safeName(file.name)}.vdi`;
  const fh = await dir.getFileHandle(fileName, { create: true });
  const ah = await fh.createSyncAccessHandle();
  const name = `${String(file.name).replace(/\.(raw|img|bin|dd)$/i, '') || 'disk'}.vdi`;
  const opts = JSON.stringify({ ...options, size: Math.max(512, Math.ceil(file.size / 512) * 512) });
  let r;
  try {
    r = parseJson(wb.import_raw(file, opts, ah, progressFn(id), cancelCheck(id, flag)));
  } catch (e) {
    try { await dir.removeEntry(fileName); } catch { /* in use or gone */ }
    throw e;
  }
  wb.close();
  const staged = await fh.getFile();
  const t0 = performance.now();
  const info = opened(wb.open_file(new File([staged], name)), t0);
  currentFile = staged;
  let saved = { kind: 'download', file: staged, name, size: staged.size };
  if (target && target.kind === 'handle') {
    // The staged file stays: the open image reads it (removed with the other staged files).
    saved = await exportImage(id, { target, name });
  }
  return { info, saved, import: r.import };
}

/** Close the open editable copy and delete it from OPFS. */
async function closeCopy({ name }) {
  if (!String(name).startsWith(EDITING)) throw fail('invalid-argument', `${name} is not an editable copy`);
  currentFile = null;
  wb.close();
  const dir = await opfsRoot();
  await dir.removeEntry(name);
  return null;
}

/** Write a file into the open image at `offset`, 8 MiB at a time. */
async function writeFile(id, { file, offset }) {
  const size = Number(parseJson(wb.info()).info['virtual-size']);
  if (!(Number.isSafeInteger(offset) && offset >= 0)) throw fail('invalid-argument', `offset ${offset} is not a whole number of bytes`);
  if (offset + file.size > size) {
    throw fail('out-of-range', `${file.name} (${file.size} bytes) does not fit at offset ${offset}: the virtual disk is ${size} bytes`);
  }
  const CH = 8 << 20;
  let lastBreath = performance.now();
  try {
    for (let off = 0; off < file.size; off += CH) {
      if (cancelled.has(id)) throw fail('cancelled', `writing ${file.name} was cancelled after ${off} bytes (those are written; the image is consistent)`);
      const len = Math.min(CH, file.size - off);
      const ab = await file.slice(off, off + len).arrayBuffer();
      wb.write_disk(offset + off, new Uint8Array(ab));
      progress(id, off + len, file.size);
      if (performance.now() - lastBreath > 40) {
        await breathe();
        lastBreath = performance.now();
      }
    }
  } finally {
    wb.flush();
  }
  return { written: file.size, offset };
}

async function editOp(id, op, args) {
  const isCancelled = cancelCheck(id, args.flag);
  const t0 = performance.now();
  let result;
  switch (op) {
    case 'compact': result = parseJson(wb.compact(!!args.free, progressFn(id), isCancelled)); break;
    case 'resize': result = parseJson(wb.resize(args.size, progressFn(id), isCancelled)); break;
    case 'discard': result = parseJson(wb.discard(args.offset, args.length, progressFn(id), isCancelled)); break;
    case 'repair': result = parseJson(wb.repair(!!args.dryRun, progressFn(id), isCancelled)); break;
    case 'setFields': result = null; wb.set_fields(JSON.stringify(args.fields)); break;
    case 'writeFile': result = await writeFile(id, args); break;
    default: throw fail('invalid-argument', `unknown edit ${op}`);
  }
  return { result, ms: performance.now() - t0, opened: parseJson(wb.info()) };
}

function mapCells({ per }) {
  const t0 = performance.now();
  const m = wb.map_cells(per);
  try {
    const data = m.data();
    const zero = m.zero();
    const slot = m.slot();
    const result = {
      per: m.per, cells: m.cells, blocks: m.blocks, readable: m.readable,
      data, zero, slot, summary: parseJson(m.summary()), ms: performance.now() - t0,
    };
    return { result, transfer: [data.buffer, zero.buffer, slot.buffer] };
  } finally {
    m.free();
  }
}

async function stats() {
  let read = null;
  try { read = parseJson(wb.read_stats()); } catch { /* no image */ }
  return { memory: wasm.memory.buffer.byteLength, read };
}

async function run(id, op, args) {
  switch (op) {
    case 'open': return open(args);
    case 'close': currentFile = null; wb.close(); return null;
    case 'info': return parseJson(wb.info());
    case 'mapCells': return mapCells(args);
    case 'blockInfo': return parseJson(wb.block_info(args.block));
    case 'rangeInfo': return parseJson(wb.range_info(args.first, args.end));
    case 'check': {
      const t0 = performance.now();
      const r = parseJson(wb.check(progressFn(id)));
      r.ms = performance.now() - t0;
      return r;
    }
    case 'exportRaw': return exportRaw(id, args);
    case 'exportImage': return exportImage(id, args);
    case 'create': return create(id, args);
    case 'editCopy': return editCopy(id, args);
    case 'repairCopy': return repairCopy(id, args);
    case 'repairPlan': return parseJson(wb.repair_plan(args.file));
    case 'closeCopy': return closeCopy(args);
    case 'importRaw': return importRaw(id, args);
    case 'compact': case 'resize': case 'discard': case 'repair': case 'setFields': case 'writeFile':
      return editOp(id, op, args);
    case 'stats': return stats();
    case 'storage': return { ...(await storageEstimate()), staged: await stagedFiles() };
    case 'freeStorage': await removeStaged(0, [STAGING, EDITING]); return { ...(await storageEstimate()), staged: await stagedFiles() };
    case 'cancel': cancelled.add(args.target); return null;
    default:
      if (op.startsWith('chain') && chainRun) return chainRun(id, op, args);
      throw fail('invalid-argument', `unknown operation ${op}`);
  }
}

async function dispatch(msg) {
  const { id, op, args } = msg;
  try {
    const out = await run(id, op, args || {});
    if (out && out.transfer) {
      post({ id, ok: true, result: out.result }, out.transfer);
    } else {
      post({ id, ok: true, result: out });
    }
  } catch (e) {
    noteTrap(e);
    post({ id, ok: false, error: crashed ?? toError(e) });
  } finally {
    cancelled.delete(id);
  }
}

const ready = (async () => {
  wasm = await init();
  wb = new Workbench();
  chainRun = chainOps({ memory: () => wasm.memory, openSink, progress, cancelled, fail, breathe, opfsRoot, parseJson, safeName, STAGING });
  // Files staged by earlier visits: their downloads are long over. Recent ones may still be
  // downloading from another tab, so they stay (the page's "Free browser storage" removes all).
  await removeStaged(30 * 60 * 1000);
})();

self.onmessage = (ev) => {
  const msg = ev.data;
  if (!msg || typeof msg.id !== 'number') return;
  if (crashed) { post({ id: msg.id, ok: false, error: crashed }); return; }
  const go = () => ready.then(() => dispatch(msg), (e) => post({ id: msg.id, ok: false, error: toError(e) }));
  if (QUERIES.has(msg.op)) {
    go();
  } else {
    queue = queue.then(go);
  }
};

// A trap outside a request (a stray promise) poisons the instance just the same.
self.addEventListener('unhandledrejection', (ev) => noteTrap(ev.reason));

ready.then(
  () => post({ ready: true }),
  (e) => post({ fatal: toError(e) }),
);
