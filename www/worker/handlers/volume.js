// Handlers: what is inside the disk — its bytes (the Hex view), its partitions, folders and
// files (the Files view), a file or a folder (as a .zip) streamed to a save target.

import { CHUNK } from '../../core/limits.js';
import { disk } from '../engine.js';
import { breathe, fail } from '../protocol.js';
import { withSink } from '../sink.js';

/** Write the pieces `next()` gives (views into wasm memory; null at the end) one after
 * another to `sink`, with progress over `total` bytes; returns the bytes written. A piece
 * is copied before the write: the engine reuses its buffer, and a query answered while a
 * write is awaited may grow wasm memory. */
async function pump(next, sink, total, ctx, what) {
  let off = 0;
  let breath = performance.now();
  for (;;) {
    if (ctx.cancelled()) throw fail('cancelled', `the ${what} was cancelled`);
    const bytes = next(off);
    if (!bytes) break;
    await sink.write(bytes.slice(), off);
    off += bytes.length;
    ctx.progress(off, total);
    if (performance.now() - breath > 40) {
      await breathe();
      breath = performance.now();
    }
  }
  return off;
}

/** The folder name a zip unpacks into. */
function rootName(path, part) {
  const parts = String(path).split('/').filter(Boolean);
  return parts.length ? parts[parts.length - 1] : `partition-${part}`;
}

export const volumeHandlers = {
  hexRead: ({ offset, len, chain }) => disk.read(!!chain, offset, len),
  partitions: ({ chain }) => disk.partitions(!!chain),
  fsList: ({ chain, part, path }) => disk.list(!!chain, part, path),
  fsHead: ({ chain, part, path, len }) => ({ bytes: disk.head(!!chain, part, path, len) }),
  fsExtents: ({ chain, part, path }) => disk.extents(!!chain, part, path),

  async fsSave({ chain, part, path, target, name }, ctx) {
    const t0 = performance.now();
    const entry = disk.fileOpen(!!chain, part, path);
    const size = entry.size;
    const { value, ...saved } = await withSink(target, size, name, async (sink) => {
      const n = await pump((off) => (off < size ? disk.fileRead(!!chain, off, Math.min(CHUNK, size - off)) : null), sink, size, ctx, 'download');
      if (n !== size) throw fail('damaged', `${path} gave ${n} of its ${size} bytes`);
    });
    return { ...saved, dataBytes: size, ms: performance.now() - t0 };
  },

  async fsZip({ chain, part, path, target, name }, ctx) {
    const t0 = performance.now();
    try {
      const plan = disk.zipBegin(!!chain, part, path, rootName(path, part));
      const { value, ...saved } = await withSink(target, plan.size, name, async (sink) => {
        const n = await pump(() => disk.zipNext(!!chain), sink, plan.size, ctx, 'download');
        if (n !== plan.size) throw fail('damaged', `the archive came to ${n} bytes, ${plan.size} were planned (did a file change?)`);
        return disk.zipStatus(!!chain);
      });
      return { ...saved, dataBytes: plan.data, entries: plan.entries, skipped: value.skipped, ms: performance.now() - t0 };
    } finally {
      disk.zipEnd(!!chain);
    }
  },
};
