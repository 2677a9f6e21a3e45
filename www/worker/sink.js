// Where exported bytes go, for the length of one job: `withSink(target, size, name, work)`
// opens the target sized to `size` (zeros), runs `work(sink)` where sink.write(bytes,
// position) stores bytes (and, when sink.stream, a Blob's bytes), then finishes it; when `work` throws, the partial output is
// abandoned (a writable stream aborted, a staged file removed).
//   {kind: 'handle', handle}  a file the save picker returned (a writable stream)
//   {kind: 'opfs'}            a staged OPFS file, handed to the page for a download
//   {kind: 'null'}            nothing (the benchmark times reading alone)

import { human, withOpfsFile, writeAllSync } from './opfs.js';
import { breathe, fail } from './protocol.js';

/** Returns {kind: 'saved'|'download'|'discarded', name, size, file?} and `work`'s result
 * as `value`. */
export async function withSink(target, size, name, work) {
  if (target && target.kind === 'null') {
    const value = await work({ write() {} });
    return { kind: 'discarded', name, size, value };
  }
  if (target && target.kind === 'handle') {
    const w = await target.handle.createWritable({ keepExistingData: false });
    let closed = false;
    try {
      await w.truncate(size);
      // `stream`: each write costs milliseconds whatever its size, so callers merge pieces
      // adjacent on the disk; a Blob (a slice of the image's File) is written as is — the
      // browser copies it into the file without the bytes passing through this worker.
      const value = await work({ stream: true, write: (bytes, position) => w.write({ type: 'write', position, data: bytes }) });
      await w.close();
      closed = true;
      return { kind: 'saved', name: target.handle.name, size, value };
    } finally {
      if (!closed) await w.abort().catch(() => {});
    }
  }
  // Staged in OPFS, then a File for the page to download.
  return withOpfsFile({
    name,
    noSpace: (est) => {
      const free = est.quota != null ? Math.max(0, est.quota - est.usage) : null;
      return `not enough browser storage to stage the ${human(size)} export for the download` +
        (free != null ? ` (the browser reports about ${human(free)} free)` : '') +
        '; use a browser with a save dialog (showSaveFilePicker), or free space with "Free browser storage"';
    },
  }, async (staged) => {
    staged.handle.truncate(size);
    const value = await work({ write: (bytes, position) => writeAllSync(staged.handle, bytes, position, 'the staged file') });
    // No flush(): the staged file is a temporary the download copies; an fsync of
    // gigabytes would only make the user wait for the disk.
    staged.close();
    return { kind: 'download', file: await staged.getFile(), name, size, value };
  });
}

/**
 * Export the disk of `source` (engine.js `image` or `chain`) as another hypervisor's
 * `format` to `target`: the engine writes the output file in order, a step at a time; each
 * step's data pieces are written at their offsets (zeros are already there: the target is
 * sized first, or grows as a stream-optimized file is written). Returns the save's result
 * with `size` the output's length and `plan` (its notes say what was done to fit the
 * format).
 */
export async function exportFormat(source, { target, name, format }, ctx) {
  const t0 = performance.now();
  const plan = source.formatBegin(format, name);
  try {
    const total = plan['disk-size'];
    const { value: written, ...saved } = await withSink(target, plan['output-length'] ?? 0, name, async (sink) => {
      let breath = performance.now();
      let n = 0;
      // The pieces are written in order, so to a stream they mostly merge.
      const out = engineWriter(sink);
      for (;;) {
        if (ctx.cancelled()) throw fail('cancelled', 'the export was cancelled');
        const step = source.formatStep();
        if (!step) break;
        for (const p of step.pieces) if (p.bytes) await out.put(p.offset, p.bytes);
        n = step.written;
        ctx.progress(step.done, total);
        if (performance.now() - breath > 40) {
          await breathe();
          breath = performance.now();
        }
      }
      await out.finish();
      return n;
    });
    return { ...saved, size: written, plan, ms: performance.now() - t0 };
  } finally {
    source.formatCancel();
  }
}

/** Bytes of writes queued on a target before waiting for the oldest. */
const WRITE_QUEUE_BYTES = 32 << 20;
/** Largest write of merged pieces to a writable stream (pieces adjacent on the disk). */
export const MERGE_BYTES = 32 << 20;

/**
 * Writes to `sink` kept in flight, at most WRITE_QUEUE_BYTES of them; the first failure
 * (passed through `mapError`) is thrown by the next `write` or by `drain`. `count` is the
 * number of writes made. The data must not change until `drain` (a fresh buffer or a Blob).
 */
export function writeQueue(sink, mapError = (e) => e) {
  const writes = [];
  let queued = 0;
  let failure = null;
  const q = {
    count: 0,
    async write(data, offset, len) {
      q.count++;
      const w = Promise.resolve(sink.write(data, offset)).catch((e) => { failure ??= mapError(e); });
      writes.push({ w, len });
      queued += len;
      while (queued > WRITE_QUEUE_BYTES) {
        const oldest = writes.shift();
        await oldest.w;
        queued -= oldest.len;
      }
      if (failure) throw failure;
    },
    async drain() {
      const all = writes.splice(0);
      queued = 0;
      await Promise.all(all.map((x) => x.w));
      if (failure) throw failure;
    },
  };
  return q;
}

/**
 * Pieces adjacent on the disk gathered into one write of at most MERGE_BYTES through `q`
 * (a writeQueue): `add(offset, len, part)` with a Blob, or with bytes that are copied (the
 * engine reuses its buffer); `flush()` writes what is gathered.
 */
export function merger(q) {
  let at = 0;
  let len = 0;
  let parts = [];
  const flush = async () => {
    if (!len) return;
    const [offset, n, p] = [at, len, parts];
    len = 0;
    parts = [];
    let data = p[0];
    if (p.length > 1 && p[0] instanceof Blob) data = new Blob(p);
    else if (p.length > 1) {
      data = new Uint8Array(n);
      let k = 0;
      for (const x of p) data.set(x, k), k += x.length;
    }
    await q.write(data, offset, n);
  };
  return {
    flush,
    async add(offset, n, part) {
      if (len && (at + len !== offset || len + n > MERGE_BYTES)) await flush();
      if (!len) at = offset;
      parts.push(part instanceof Blob ? part : part.slice());
      len += n;
    },
  };
}

/**
 * Where pieces of the engine's buffer go (it reuses the buffer after each call): to a
 * writable stream, copied, merged when adjacent on the disk (merger) and queued while the
 * engine reads on; otherwise each written and awaited. `finish()` writes what is left and
 * waits for every write; `count()` is the number of writes made.
 */
function engineWriter(sink) {
  const q = writeQueue(sink);
  const m = sink.stream ? merger(q) : null;
  return {
    count: () => q.count,
    async put(offset, bytes) {
      if (m) return m.add(offset, bytes.length, bytes);
      await q.write(bytes, offset, bytes.length);
      return q.drain();
    },
    async finish() {
      if (m) await m.flush();
      await q.drain();
    },
  };
}

/**
 * Write a raw export read by the engine piece by piece (`source.exportNext()`: data in
 * wasm memory, or zeros that need no write) to `sink` through an engineWriter. Returns
 * {dataBytes, writes}.
 */
export async function pumpPieces(source, sink, total, ctx, ofData) {
  let breath = performance.now();
  let dataBytes = 0;
  const out = engineWriter(sink);
  for (;;) {
    if (ctx.cancelled()) throw fail('cancelled', 'the export was cancelled');
    const p = source.exportNext();
    if (!p) break;
    if (p.bytes) {
      await out.put(p.offset, p.bytes);
      dataBytes += p.len;
    }
    ctx.progress(source.exportDone(), total, { dataBytes, ofData });
    if (performance.now() - breath > 40) {
      await breathe();
      breath = performance.now();
    }
  }
  await out.finish();
  return { dataBytes, writes: out.count() };
}
