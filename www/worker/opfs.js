// Browser storage (the origin private file system) for the worker: staged files (exports on
// their way to a download, images being built), editable copies, and the one helper that
// creates such a file, hands it out with a sync access handle, and releases the handle and
// removes the file when the work fails (`withOpfsFile`). Also the chunked copy loop.

import { CHUNK } from '../core/limits.js';
import { breathe, fail, toError } from './protocol.js';

/** Prefix of OPFS files the worker stages (exports, created images); removed at start-up. */
export const STAGING = 'vdi-workbench-';
/** Prefix of the editable copies. Unlike staged exports they are kept across visits until
 * the user closes them or frees browser storage. */
export const EDITING = 'vdi-edit-';

export async function opfsRoot() {
  if (!self.navigator.storage || !self.navigator.storage.getDirectory) {
    throw fail('unsupported', 'this browser has no origin private file system (OPFS)');
  }
  return self.navigator.storage.getDirectory();
}

export async function storageEstimate() {
  try {
    const e = await self.navigator.storage.estimate();
    return { usage: e.usage ?? null, quota: e.quota ?? null };
  } catch {
    return { usage: null, quota: null };
  }
}

export function human(n) {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = Number(n);
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return u ? `${v.toFixed(v >= 100 ? 0 : 1).replace(/\.0$/, '')} ${units[u]}` : `${v} bytes`;
}

export function safeName(name) {
  return String(name).replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 80) || 'image';
}

/** Files this worker staged or copied in OPFS: [{name, size}]. */
export async function stagedFiles() {
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
export async function removeStaged(ageMs = 0, prefixes = [STAGING]) {
  try {
    const dir = await opfsRoot();
    const now = Date.now();
    for (const f of await stagedFiles()) {
      const prefix = prefixes.find((p) => f.name.startsWith(p));
      if (!prefix) continue;
      const t = Number(f.name.slice(prefix.length).split('-')[0]);
      if (!(now - t < ageMs)) await removeQuietly(dir, f.name);
    }
  } catch { /* no OPFS */ }
}

/** Storage figures for the page: {usage, quota, staged: [{name, size}]}. */
export async function storageReport() {
  return { ...(await storageEstimate()), staged: await stagedFiles() };
}

async function removeQuietly(dir, name) {
  try { await dir.removeEntry(name); } catch { /* in use or gone */ }
}

function closeQuietly(handle) {
  try { handle.close(); } catch { /* already closed (the engine closes handles it owns) */ }
}

/** A sync access handle on an OPFS file. A handle the previous worker held (a job
 * cancelled by stopping the worker) is released shortly after: busy files are retried. */
export async function syncHandle(fh) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fh.createSyncAccessHandle();
    } catch (e) {
      if (!(e && e.name === 'NoModificationAllowedError') || attempt >= 40) throw e;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** The editable copy `name` reopened: its sync access handle. */
export async function openCopy(name, label) {
  const dir = await opfsRoot();
  let fh;
  try {
    fh = await dir.getFileHandle(name);
  } catch (e) {
    throw fail('io', `the editable copy ${label} is no longer in browser storage (${toError(e).message})`);
  }
  return syncHandle(fh);
}

/** Refuse a name that is not one of the editable copies. */
export function checkCopyName(name) {
  if (!String(name).startsWith(EDITING)) throw fail('invalid-argument', `${name} is not an editable copy`);
}

/** Delete the editable copy `name` (its handle must be closed). */
export async function deleteCopy(name) {
  checkCopyName(name);
  const dir = await opfsRoot();
  await dir.removeEntry(name);
}

/**
 * Make a new OPFS file `${prefix}${time}-${name}` and run `work(file)` with it, where
 * file = {name, handle (a sync access handle), keepHandle, removeAfter, close(), getFile()}.
 * The one place staged files are released: afterwards the handle is closed (unless `work`
 * gave it to the engine for good and set `file.keepHandle`), and the file is removed when
 * `work` throws (or when it set `file.removeAfter`). A full storage becomes a `no-space`
 * error whose message is `noSpace(estimate)`.
 */
export async function withOpfsFile({ prefix = STAGING, name, noSpace }, work) {
  const dir = await opfsRoot();
  const fileName = `${prefix}${Date.now()}-${safeName(name)}`;
  const fh = await dir.getFileHandle(fileName, { create: true });
  let handle;
  try {
    handle = await fh.createSyncAccessHandle();
  } catch (e) {
    await removeQuietly(dir, fileName);
    throw e;
  }
  const file = {
    name: fileName,
    handle,
    keepHandle: false,
    removeAfter: false,
    /** Release the handle now (before reading the file back with getFile). */
    close: () => closeQuietly(handle),
    getFile: () => fh.getFile(),
  };
  let ok = false;
  try {
    const result = await work(file);
    ok = true;
    return result;
  } catch (e) {
    if (e && e.name === 'QuotaExceededError' && noSpace) {
      throw fail('no-space', await noSpace(await storageEstimate()));
    }
    throw e;
  } finally {
    if (!(ok && file.keepHandle)) closeQuietly(handle);
    if (!ok || file.removeAfter) await removeQuietly(dir, fileName);
  }
}

/** Write all of `data` at `position` through a sync access handle (a write may be short). */
export function writeAllSync(handle, data, position, what) {
  let done = 0;
  while (done < data.length) {
    const n = handle.write(done ? data.subarray(done) : data, { at: position + done });
    if (n <= 0) throw fail('no-space', `writing at ${position + done} of ${what} wrote nothing (browser storage full?)`);
    done += n;
  }
}

/**
 * Copy `size` bytes in CHUNK pieces: `read(offset, len)` returns (a promise of) the bytes,
 * `write(bytes, offset)` stores them (and may return a promise). Stops when the job is
 * cancelled (with the message `cancelledAt(offset)`), reports progress, and lets messages
 * in now and then.
 */
export async function copyChunks(size, read, write, ctx, cancelledAt) {
  let breath = performance.now();
  for (let off = 0; off < size; off += CHUNK) {
    if (ctx.cancelled()) throw fail('cancelled', cancelledAt(off));
    const len = Math.min(CHUNK, size - off);
    await write(await read(off, len), off);
    ctx.progress(off + len, size);
    if (performance.now() - breath > 40) {
      await breathe();
      breath = performance.now();
    }
  }
}

/** The bytes `off..off+len` of a File (checked: a file changed under us reads short). */
export async function fileBytes(file, off, len) {
  let ab;
  try {
    ab = await file.slice(off, off + len).arrayBuffer();
  } catch (e) {
    throw fail('io', `reading ${len} bytes at ${off} of ${file.name} failed (was the file changed or removed?): ${toError(e).message}`);
  }
  if (ab.byteLength !== len) throw fail('io', `reading ${len} bytes at ${off} of ${file.name} returned ${ab.byteLength} (was the file changed?)`);
  return new Uint8Array(ab);
}
