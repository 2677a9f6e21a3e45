// Handlers: the open image (open, report, map, check) and the worker's storage.

import { engineMemory, image } from '../engine.js';
import { fail } from '../protocol.js';
import { EDITING, STAGING, openCopy, removeStaged, storageReport } from '../opfs.js';

/** An open call's answer: the report and how long opening took. */
function timed(t0, report) {
  return { ...report, ms: performance.now() - t0 };
}

export const imageHandlers = {
  async open({ source }) {
    const t0 = performance.now();
    switch (source?.kind) {
      case 'file': return timed(t0, image.openFile(source.file));
      case 'opfs': return timed(t0, image.openOpfs(await openCopy(source.name, source.label), source.label));
      case 'sample': return timed(t0, image.openSample());
      default: throw fail('invalid-argument', `unknown source kind ${source?.kind}`);
    }
  },

  close() {
    image.close();
    return null;
  },

  info: () => image.info(),

  mapCells({ per }) {
    const t0 = performance.now();
    return timed(t0, image.mapCells(per));
  },

  blockInfo: ({ block }) => image.blockInfo(block),
  rangeInfo: ({ first, end }) => image.rangeInfo(first, end),

  check(_, ctx) {
    const t0 = performance.now();
    return timed(t0, image.check(ctx.progress));
  },

  stats: () => ({ memory: engineMemory(), read: image.readStats() }),

  storage: () => storageReport(),

  async freeStorage() {
    await removeStaged(0, [STAGING, EDITING]);
    return storageReport();
  },
};
