// Handlers: snapshot chains, several files opened as one disk (the chain's Session, see
// worker/engine.js).

import { chain } from '../engine.js';
import { breathe, fail } from '../protocol.js';
import { copyChunks, withOpfsFile } from '../opfs.js';
import { exportFormat, pumpPieces, withSink } from '../sink.js';

export const chainHandlers = {
  chainOpen({ files }) {
    const t0 = performance.now();
    return { ...chain.open(files), ms: performance.now() - t0 };
  },
  chainClose() {
    chain.close();
    return null;
  },
  chainInfo: () => chain.info(),
  chainCells: ({ layer, per }) => chain.cells(layer, per),

  /** The flattened raw disk: the target is sized to the disk (zeros), data pieces are
   * written at their offsets; runs FREE or ZERO in every layer cost nothing. */
  async chainExportRaw({ target, name }, ctx) {
    const t0 = performance.now();
    const { size } = chain.exportBegin();
    try {
      const { value, ...saved } = await withSink(target, size, name, async (sink) => {
        const r = await pumpPieces(chain, sink, size, ctx, false);
        ctx.progress(size, size, { dataBytes: r.dataBytes });
        return r;
      });
      return { ...saved, dataBytes: value.dataBytes, writes: value.writes, ms: performance.now() - t0 };
    } finally {
      chain.exportCancel();
    }
  },

  /** The flattened disk in another hypervisor's format (see sink.js exportFormat). */
  chainExportFormat: (args, ctx) => exportFormat(chain, args, ctx),

  /** The flattened VDI: built by the engine in a staged OPFS file, then copied to the picked
   * file (and removed), or handed to the page for a download. */
  chainExportVdi({ target, name }, ctx) {
    const t0 = performance.now();
    return withOpfsFile({ name }, async (flat) => {
      let info;
      let size = 0;
      try {
        size = chain.flatBegin(flat.handle); // the bench owns (and closes) the handle from here
        let done = 0;
        let breath = t0;
        while (done < size) {
          if (ctx.cancelled()) throw fail('cancelled', 'the export was cancelled');
          done = chain.flatStep();
          ctx.progress(done, size);
          if (performance.now() - breath > 40) { await breathe(); breath = performance.now(); }
        }
        info = chain.flatFinish();
      } catch (e) {
        chain.flatCancel();
        throw e;
      }
      ctx.progress(size, size);
      const file = await flat.getFile();
      if (!(target && target.kind === 'handle')) {
        return { kind: 'download', file, name, size: file.size, info, ms: performance.now() - t0 };
      }
      flat.removeAfter = true;
      const { value, ...saved } = await withSink(target, file.size, name, (sink) => copyChunks(file.size,
        (off, len) => file.slice(off, off + len), (bytes, off) => sink.write(bytes, off), ctx, () => 'the export was cancelled'));
      return { ...saved, info, ms: performance.now() - t0 };
    });
  },
};
