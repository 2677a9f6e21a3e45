// Worker side of snapshot chains: several dropped files opened as one chain (ChainBench in
// crates/vdi-wasm/src/chain.rs). worker.js dispatches every op starting with "chain" here
// and hands over its plumbing (save targets, progress, cancel flags) in `ctx`.

import { ChainBench, PieceKind } from './pkg/vdi_wasm.js';

/**
 * @param {object} ctx  {memory(): WebAssembly.Memory, openSink, progress, cancelled, fail,
 *                       breathe, opfsRoot, parseJson, safeName, STAGING}
 */
export function chainOps(ctx) {
  const bench = new ChainBench();
  const { openSink, progress, cancelled, fail, breathe, parseJson } = ctx;

  const view = (off, len) => new Uint8Array(ctx.memory().buffer, bench.buffer_ptr() + off, len);

  function cellsResult(c) {
    try {
      const data = c.data();
      const zero = c.zero();
      const unreadable = c.unreadable();
      const layer = c.layer();
      const result = { per: c.per, cells: c.cells, blocks: c.blocks, data, zero, unreadable, layer, summary: parseJson(c.summary()) };
      return { result, transfer: [data.buffer, zero.buffer, unreadable.buffer, layer.buffer] };
    } finally {
      c.free();
    }
  }

  /** The flattened raw disk: the target is sized to the disk (zeros), data pieces are
   * written at their offsets; runs FREE or ZERO in every layer cost nothing. */
  async function exportRaw(id, { target, name }) {
    const size = bench.export_begin();
    const t0 = performance.now();
    let sink = null;
    try {
      sink = await openSink(target, size, name);
      let dataBytes = 0;
      let last = 0;
      let breath = t0;
      for (;;) {
        if (cancelled.has(id)) throw fail('cancelled', 'the export was cancelled');
        const kind = bench.export_next();
        if (kind === PieceKind.End) break;
        if (kind === PieceKind.Data) {
          const len = bench.piece_len();
          await sink.write(view(0, len), bench.piece_offset());
          dataBytes += len;
        }
        const now = performance.now();
        if (now - last > 50) { last = now; progress(id, bench.export_done(), size, { dataBytes }); }
        if (now - breath > 40) { await breathe(); breath = performance.now(); }
      }
      progress(id, size, size, { dataBytes });
      const result = await sink.finish();
      return { ...result, dataBytes, ms: performance.now() - t0 };
    } catch (e) {
      if (sink) await sink.abort();
      throw e;
    } finally {
      bench.export_cancel();
    }
  }

  /** The flattened VDI: built by the engine in an OPFS file (a sync access handle), then
   * copied to the picked file, or handed to the page for a download. */
  async function exportVdi(id, { target, name }) {
    const dir = await ctx.opfsRoot();
    const fileName = `${ctx.STAGING}${Date.now()}-${ctx.safeName(name)}`;
    const fh = await dir.getFileHandle(fileName, { create: true });
    const ah = await fh.createSyncAccessHandle();
    const remove = async () => { try { await dir.removeEntry(fileName); } catch { /* gone */ } };
    const t0 = performance.now();
    let info;
    try {
      const size = bench.flat_begin(ah); // the bench owns (and closes) the handle from here
      let done = 0;
      let last = 0;
      let breath = t0;
      while (done < size) {
        if (cancelled.has(id)) throw fail('cancelled', 'the export was cancelled');
        done = bench.flat_step();
        const now = performance.now();
        if (now - last > 50) { last = now; progress(id, done, size); }
        if (now - breath > 40) { await breathe(); breath = performance.now(); }
      }
      info = parseJson(bench.flat_finish());
      progress(id, size, size);
    } catch (e) {
      bench.flat_cancel();
      await remove();
      throw e;
    }
    const file = await fh.getFile();
    if (!(target && target.kind === 'handle')) {
      return { kind: 'download', file, name, size: file.size, info, ms: performance.now() - t0 };
    }
    let sink = null;
    try {
      sink = await openSink(target, file.size, name);
      const CH = 8 << 20;
      for (let off = 0; off < file.size; off += CH) {
        if (cancelled.has(id)) throw fail('cancelled', 'the export was cancelled');
        await sink.write(file.slice(off, Math.min(file.size, off + CH)), off);
      }
      const result = await sink.finish();
      return { ...result, info, ms: performance.now() - t0 };
    } catch (e) {
      if (sink) await sink.abort();
      throw e;
    } finally {
      await remove();
    }
  }

  return async function run(id, op, args) {
    switch (op) {
      case 'chainOpen': {
        const t0 = performance.now();
        const r = parseJson(bench.open(args.files));
        r.ms = performance.now() - t0;
        return r;
      }
      case 'chainClose': bench.close(); return null;
      case 'chainInfo': return parseJson(bench.info());
      case 'chainCells':
        return cellsResult(args.layer == null ? bench.combined_cells(args.per) : bench.layer_cells(args.layer, args.per));
      case 'chainExportRaw': return exportRaw(id, args);
      case 'chainExportVdi': return exportVdi(id, args);
      default: throw fail('invalid-argument', `unknown operation ${op}`);
    }
  };
}
