// Where exported bytes go, for the length of one job: `withSink(target, size, name, work)`
// opens the target sized to `size` (zeros), runs `work(sink)` where sink.write(bytes,
// position) stores bytes, then finishes it; when `work` throws, the partial output is
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
      const value = await work({ write: (bytes, position) => w.write({ type: 'write', position, data: bytes }) });
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
      for (;;) {
        if (ctx.cancelled()) throw fail('cancelled', 'the export was cancelled');
        const step = source.formatStep();
        if (!step) break;
        // One write at a time: the pieces are views of the engine's buffer.
        for (const p of step.pieces) if (p.bytes) await sink.write(p.bytes, p.offset);
        n = step.written;
        ctx.progress(step.done, total);
        if (performance.now() - breath > 40) {
          await breathe();
          breath = performance.now();
        }
      }
      return n;
    });
    return { ...saved, size: written, plan, ms: performance.now() - t0 };
  } finally {
    source.formatCancel();
  }
}

/**
 * Write a raw export read by the engine piece by piece (`source.exportNext()`: data in
 * wasm memory, or zeros that need no write) to `sink`, one write at a time since the
 * engine reuses its buffer. Returns the data bytes written.
 */
export async function pumpPieces(source, sink, total, ctx, ofData) {
  let breath = performance.now();
  let dataBytes = 0;
  for (;;) {
    if (ctx.cancelled()) throw fail('cancelled', 'the export was cancelled');
    const p = source.exportNext();
    if (!p) break;
    if (p.bytes) {
      await sink.write(p.bytes, p.offset);
      dataBytes += p.len;
    }
    ctx.progress(source.exportDone(), total, { dataBytes, ofData });
    if (performance.now() - breath > 40) {
      await breathe();
      breath = performance.now();
    }
  }
  return dataBytes;
}
