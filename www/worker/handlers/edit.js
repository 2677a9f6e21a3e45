// Handlers: editable copies in OPFS and the edits made on them (see crates/vdi-wasm/src/edit.rs).

import { image } from '../engine.js';
import { fail } from '../protocol.js';
import {
  EDITING, checkCopyName, copyChunks, deleteCopy, fileBytes, human, withOpfsFile, writeAllSync,
} from '../opfs.js';

/** Copy `file` into a new OPFS file, 8 MiB at a time, then run `then(copy)` (which opens it
 * and keeps its handle). The copy is removed if anything fails. */
function copyToOpfs(file, ctx, then) {
  return withOpfsFile({
    prefix: EDITING,
    name: file.name,
    noSpace: () => `not enough browser storage for a ${human(file.size)} copy; free space with "Free browser storage"`,
  }, async (copy) => {
    copy.handle.truncate(file.size);
    await copyChunks(file.size, (off, len) => fileBytes(file, off, len),
      (bytes, off) => writeAllSync(copy.handle, bytes, off, 'the copy'), ctx, () => 'making the editable copy was cancelled');
    copy.handle.flush();
    return then(copy);
  });
}

/** An edit: its result, how long it took, and the image's report after it. */
function edit(run) {
  return async (args, ctx) => {
    const t0 = performance.now();
    const result = await run(args, ctx);
    return { result: result ?? null, ms: performance.now() - t0, opened: image.info() };
  };
}

export const editHandlers = {
  /** Copy the open image's file into OPFS and reopen it read-write from there. */
  editCopy(_, ctx) {
    const file = image.sourceFile();
    if (!file) throw fail('invalid-argument', 'the open image is not read from a file (it is already editable or in memory)');
    const label = file.name;
    return copyToOpfs(file, ctx, (copy) => {
      const t0 = performance.now();
      const r = image.openOpfs(copy.handle, label);
      copy.keepHandle = true;
      return { ...r, ms: performance.now() - t0, source: { kind: 'opfs', name: copy.name, label } };
    });
  },

  /** Close the open editable copy and delete it from OPFS. */
  async closeCopy({ name }) {
    checkCopyName(name);
    image.close();
    await deleteCopy(name);
    return null;
  },

  repairPlan: ({ file }) => image.repairPlan(file),

  /** Copy a file that may not open into OPFS, repair it there and open the result. */
  repairCopy({ file }, ctx) {
    return copyToOpfs(file, ctx, (copy) => {
      const report = image.repairOpfs(copy.handle, file.name, ctx.progress, ctx.cancelled);
      copy.keepHandle = true;
      return { report, opened: image.info(), source: { kind: 'opfs', name: copy.name, label: file.name } };
    });
  },

  compact: edit(({ free }, ctx) => image.compact(!!free, ctx.progress, ctx.cancelled)),
  fsFreePlan: () => image.fsFreePlan(),
  compactFsAware: edit((_, ctx) => image.compactFsAware(ctx.progress, ctx.cancelled)),
  resize: edit(({ size }, ctx) => image.resize(size, ctx.progress, ctx.cancelled)),
  discard: edit(({ offset, length }, ctx) => image.discard(offset, length, ctx.progress, ctx.cancelled)),
  repair: edit(({ dryRun }, ctx) => image.repair(!!dryRun, ctx.progress, ctx.cancelled)),
  setFields: edit(({ fields }) => image.setFields(fields)),

  /** Write a file into the open image at `offset`, a CHUNK at a time. */
  writeFile: edit(async ({ file, offset }, ctx) => {
    const size = Number(image.info().info['virtual-size']);
    if (!(Number.isSafeInteger(offset) && offset >= 0)) throw fail('invalid-argument', `offset ${offset} is not a whole number of bytes`);
    if (offset + file.size > size) {
      throw fail('out-of-range', `${file.name} (${file.size} bytes) does not fit at offset ${offset}: the virtual disk is ${size} bytes`);
    }
    try {
      await copyChunks(file.size, (off, len) => fileBytes(file, off, len), (bytes, off) => image.writeDisk(offset + off, bytes), ctx,
        (off) => `writing ${file.name} was cancelled after ${off} bytes (those are written; the image is consistent)`);
    } finally {
      image.flush();
    }
    return { written: file.size, offset };
  }),
};
