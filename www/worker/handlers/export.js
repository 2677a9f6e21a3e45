// Handlers: saving the disk or the image file, creating an image, importing a raw disk.

import { image } from '../engine.js';
import { fail, toError } from '../protocol.js';
import { copyChunks, withOpfsFile } from '../opfs.js';
import { exportFormat, merger, pumpPieces, withSink, writeQueue } from '../sink.js';

/** Runs of the file kept in flight by the File export (each at most one CHUNK). */
const READS_IN_FLIGHT = 3;

/**
 * Host order from a File: the engine plans each run of the file (front to back, at most one
 * CHUNK, see export.rs), and each run's pieces go to their disk offsets. Two ways:
 * - to a writable stream (sink.stream): each piece is a slice of the File, never read
 *   here, and pieces adjacent on the disk are merged into one write (sink.js merger). A
 *   stream write costs milliseconds whatever its size (docs/benchmarks.md, "Browser"),
 *   and its bytes would otherwise be read into the worker and copied out again;
 * - otherwise (the staged OPFS file, written synchronously): the run is read
 *   asynchronously (a few in flight) and its pieces written straight from that buffer.
 * Writes are queued while the next reads proceed. Memory: the runs in flight and the
 * queued writes, a few tens of MiB at most. Returns {dataBytes, writes}.
 */
async function fromFile(file, sink, total, ctx) {
  const reads = [];
  let dataBytes = 0;
  // A Blob of the File that can no longer be read (changed or removed) fails in the write.
  const q = writeQueue(sink, (e) => (sink.stream && e && e.name === 'NotReadableError'
    ? fail('io', `reading the image failed (was the file changed or removed?): ${toError(e).message}`)
    : e));
  const m = sink.stream ? merger(q) : null;
  const planNext = () => {
    const p = image.exportPlanNext();
    if (!p) return null;
    if (m) return { plan: p, data: null };
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
    if (ctx.cancelled()) throw fail('cancelled', 'the export was cancelled');
    const { plan, data } = reads.shift();
    const ab = data && await data;
    fill();
    const host = plan[0];
    for (let k = 2; k < plan.length; k += 3) {
      const [offset, len, at] = [plan[k], plan[k + 1], plan[k + 2]];
      dataBytes += len;
      if (m) await m.add(offset, len, file.slice(host + at, host + at + len));
      else await q.write(new Uint8Array(ab, at, len), offset, len);
    }
    ctx.progress(image.exportDone(), total, { dataBytes, ofData: true });
  }
  if (m) await m.flush();
  await q.drain();
  return { dataBytes, writes: q.count };
}

/** Save the open image's file itself to `target`. */
async function exportImage({ target, name }, ctx) {
  const meta = image.info().file;
  const size = meta.length;
  const file = image.sourceFile();
  if (file && !(target && target.kind === 'handle')) {
    // The page's File is already a download source: nothing to copy.
    return { kind: 'download', file, name, size, dataBytes: size, ms: 0 };
  }
  const t0 = performance.now();
  const { value, ...saved } = await withSink(target, size, name, async (sink) => {
    if (meta.backend === 'memory') {
      // Only the stored bytes; the rest of the file is zeros (already there after truncate).
      await sink.write(image.createdMeta(), 0);
      ctx.progress(size, size);
      return;
    }
    await copyChunks(size, (off, len) => (file ? file.slice(off, off + len) : image.readImage(off, len)),
      (bytes, off) => sink.write(bytes, off), ctx, () => 'the export was cancelled');
  });
  return { ...saved, dataBytes: size, ms: performance.now() - t0 };
}

export const exportHandlers = {
  /** The virtual disk as a raw file: the target is sized to the disk first (zeros), then
   * data is written at its offsets, so FREE and ZERO blocks cost nothing. */
  async exportRaw({ target, name }, ctx) {
    const t0 = performance.now();
    const { size, total, hostOrder } = image.exportBegin();
    try {
      const file = hostOrder ? image.sourceFile() : null;
      const { value, ...saved } = await withSink(target, size, name, async (sink) => {
        const r = file ? await fromFile(file, sink, total, ctx) : await pumpPieces(image, sink, total, ctx, hostOrder);
        ctx.progress(total, total, { dataBytes: r.dataBytes, ofData: hostOrder });
        return { ...r, written: performance.now() };
      });
      const now = performance.now();
      return { ...saved, dataBytes: value.dataBytes, writes: value.writes, ms: now - t0, finishMs: now - value.written };
    } finally {
      image.exportCancel();
    }
  },

  exportImage,

  /** The virtual disk in another hypervisor's format (see sink.js exportFormat). */
  exportFormat: (args, ctx) => exportFormat(image, args, ctx),

  /** Create an image: in memory and streamed to a picked file, or built by the engine in a
   * staged OPFS file, then reopened read-only from it for a download. */
  async create({ options, target }, ctx) {
    if (target && target.kind === 'handle') {
      const info = image.create(options);
      const size = info.file.length;
      const { value, ...saved } = await withSink(target, size, info.file.name, async (sink) => {
        await sink.write(image.createdMeta(), 0);
        ctx.progress(size, size);
      });
      return { info, saved };
    }
    return withOpfsFile({ name: 'new.vdi' }, async (staged) => {
      const made = image.create(options, staged.handle);
      image.close(); // releases the handle, then the new image is reopened read-only
      const file = await staged.getFile();
      const name = made.file.name;
      const t0 = performance.now();
      const info = { ...image.openFile(new File([file], name)), ms: performance.now() - t0 };
      ctx.progress(file.size, file.size);
      return { info, saved: { kind: 'download', file, name, size: file.size } };
    });
  },

  /** A raw disk file as a new image: built in a staged OPFS file by the engine, reopened
   * read-only from it and saved like a created image. */
  async importRaw({ file, options, target }, ctx) {
    const name = `${String(file.name).replace(/\.(raw|img|bin|dd)$/i, '') || 'disk'}.vdi`;
    const opts = { ...options, size: Math.max(512, Math.ceil(file.size / 512) * 512) };
    const built = await withOpfsFile({ name: `${file.name}.vdi` }, async (staged) => {
      const r = image.importRaw(file, opts, staged.handle, ctx.progress, ctx.cancelled);
      image.close();
      // The staged file stays: the open image reads it (removed with the other staged files).
      return { r, file: await staged.getFile() };
    });
    const t0 = performance.now();
    const info = { ...image.openFile(new File([built.file], name)), ms: performance.now() - t0 };
    let saved = { kind: 'download', file: built.file, name, size: built.file.size };
    if (target && target.kind === 'handle') saved = await exportImage({ target, name }, ctx);
    return { info, saved, import: built.r.import };
  },
};
