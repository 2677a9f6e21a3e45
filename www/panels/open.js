// The side panel: opening (a file, several files or a folder for a chain, a drop, the
// sample, the files the installed app is launched with), the status line and the error
// box, what is open (the image, where it is read from, what reading it cost), the notice
// for a snapshot opened alone, the chain's layers, and what the page says when the engine
// had to be restarted.

import { bridge } from '../core/bridge.js';
import { $, afterPaint, el, showError, status } from '../core/dom.js';
import { dec, duration, human, NIL, quoted } from '../core/format.js';
import { MAX_FILES } from '../core/limits.js';
import { openImage } from '../core/session.js';
import { isBusy, on, state } from '../core/state.js';
import { chainBusy, isVdi, layerRole, openChain } from './chain.js';

/** Most directory entries looked at while walking a dropped folder. */
const MAX_ENTRIES = 4096;

/* ---------- collecting the files of a drop ---------- */

function readAllEntries(dirEntry) {
  const reader = dirEntry.createReader();
  const out = [];
  return new Promise((resolve, reject) => {
    const next = () => reader.readEntries((batch) => {
      if (!batch.length || out.length >= MAX_ENTRIES) { resolve(out); return; }
      out.push(...batch);
      next();
    }, reject);
    next();
  });
}

const entryFile = (entry) => new Promise((resolve, reject) => entry.file(resolve, reject));

/** The .vdi files under `entries` (folders walked recursively), at most MAX_FILES + 1. */
async function collectEntries(entries) {
  await bridge.start(); // the engine's limits
  const files = [];
  const queue = [...entries];
  let seen = 0;
  while (queue.length && files.length <= MAX_FILES && seen < MAX_ENTRIES) {
    const e = queue.shift();
    seen += 1;
    if (e.isDirectory) queue.push(...await readAllEntries(e));
    else if (e.isFile && isVdi(e.name)) files.push(await entryFile(e));
  }
  return files;
}

/**
 * Open what the user gave: several files, or the files of a folder, as a snapshot chain;
 * one file as the image. Every way in comes here: the pickers, a drop, and the files the
 * installed app is launched with (the manifest's file_handlers, through launchQueue).
 */
export function openFiles(files, fromFolder = false) {
  if (isBusy() || chainBusy()) {
    status('Busy: wait for the current task to finish (or cancel it), then open the file again.');
    return;
  }
  if (fromFolder ? files.length : files.length > 1) openChain(files, fromFolder);
  else if (files[0]) openImage({ kind: 'file', file: files[0] }, files[0].name);
}

/** A drop: several files or a folder open a chain, one file the image. The entries can
 * only be taken during the drop event. */
function onDrop(dt) {
  const items = [...(dt?.items || [])].filter((i) => i.kind === 'file');
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null)).filter(Boolean);
  const hasDir = entries.some((e) => e.isDirectory);
  const files = [...(dt?.files || [])];
  if (isBusy() || chainBusy()) {
    status('Busy: wait for the current task to finish (or cancel it), then drop the file again.');
    return;
  }
  if (hasDir) {
    collectEntries(entries).then((fs) => openFiles(fs, true), (e) => showError({ kind: 'browser', message: `the dropped folder could not be read: ${e?.message ?? e}` }));
  } else if (files.length) {
    openFiles(files);
  } else {
    showError({ kind: 'invalid-argument', message: 'drop a file (folders and text are not images)' });
  }
}

/** The installed app opened from the file manager ("Open with", a double click on a
 * .vdi): the launch's files open as if picked together. */
function initLaunch() {
  globalThis.launchQueue?.setConsumer(async ({ files = [] }) => {
    const handles = files.filter((h) => h.kind === 'file');
    if (!handles.length) return;
    try {
      openFiles(await Promise.all(handles.map((h) => h.getFile())));
    } catch (e) {
      showError({ kind: 'browser', message: `the files the app was opened with could not be read: ${e?.message ?? e}` });
    }
  });
}

/* ---------- what is open ---------- */

const BACKENDS = {
  file: 'the file, in place (read-only)',
  memory: 'memory (built in this tab)',
  opfs: 'browser storage (OPFS)',
};

function renderCurrent(current) {
  $('#current').hidden = !current;
  $('#diag').hidden = !current;
  $('#cur-time').textContent = '';
  if (!current) return;
  const f = current.file;
  $('#cur-name').textContent = f.name;
  $('#cur-backend').textContent = BACKENDS[f.backend] ?? f.backend;
  $('#cur-size').textContent = `${human(f.length)} (${dec(f.length)} bytes)`;
}

/** What the worker has read and how much memory the engine holds (shown, and used by the
 * tests to prove a large image is never read whole). */
async function refreshDiag() {
  try {
    const s = await bridge.ops.stats();
    const read = $('#cur-read');
    if (s.read) {
      read.textContent = `${human(s.read.bytes)} in ${s.read.calls} read${s.read.calls === 1 ? '' : 's'}`;
      read.dataset.bytes = String(s.read.bytes);
      read.dataset.calls = String(s.read.calls);
    }
    const mem = $('#cur-memory');
    mem.textContent = `${human(s.memory)} of WebAssembly memory`;
    mem.dataset.bytes = String(s.memory);
  } catch { /* the worker is restarting */ }
}

/** A differencing image alone cannot be read whole: say which parent it needs (unless it
 * is the top of the open chain). */
function diffNotice() {
  const box = $('#diff-notice');
  const { current, chain } = state;
  const d = current?.info['format-specific'].data;
  if (!d || d['image-type'] !== 'diff') { box.hidden = true; return; }
  const inChain = chain && chain.info.layers.some((l) => l.info['format-specific'].data.uuid === d.uuid);
  const name = quoted(current.file.name);
  if (inChain) {
    box.textContent = `${name} is the top of the snapshot chain shown in the Chain view; the other views show this layer alone (blocks it does not hold come from its parents).`;
    box.dataset.kind = 'top';
  } else {
    const parent = d['parent-uuid'];
    box.textContent = parent === NIL
      ? `${name} is a differencing image (a snapshot) with a null parent UUID: its parent cannot be found. The Header view still shows every field.`
      : `${name} is a differencing image (a snapshot): blocks it does not hold live in its parent, the image with UUID ${parent}, which is needed to read or export the disk. Drop the parent (and any snapshots between them) together with this file, or the folder that holds them. The Header view still shows every field.`;
    box.dataset.kind = 'needs-parent';
    box.dataset.parent = parent;
  }
  box.hidden = false;
}

function renderSideChain() {
  const { chain } = state;
  $('#side-chain').hidden = !chain;
  if (!chain) return;
  const n = chain.info.layers.length;
  $('#side-chain-layers').replaceChildren(...chain.info.layers.map((l, i) => el('li', {},
    el('span', { class: 'layer-role', text: layerRole(i, n) }), ' ', el('span', { class: 'layer-name', text: l.name }))));
}

/* ---------- restarts ---------- */

/** The engine crashed and the bridge started a fresh worker: say what happened (after the
 * failed operation has shown its own error). A cancel that restarted the worker but could
 * not reopen the image shows why. */
async function onRestarted({ detail: { reason, crash, results } }) {
  const failed = results.find((r) => r.status === 'rejected');
  if (!crash) {
    if (failed) showError(failed.reason);
    return;
  }
  const root = document.documentElement;
  root.dataset.workerRestarts = String(Number(root.dataset.workerRestarts ?? 0) + 1);
  await afterPaint();
  if (failed) {
    const e = failed.reason;
    showError({ kind: 'engine-crashed', message: `${reason.message}, but ${e.image ?? 'the image'} could not be reopened: ${e.message ?? e}` });
    return;
  }
  const name = results.find((r) => r.status === 'fulfilled' && r.value)?.value ?? null;
  showError({ kind: 'engine-crashed', message: `${reason.message}${name ? `; ${name} was reopened` : ''}. What it was doing did not finish: try again, or report the image that caused it.` });
  status(`The engine was restarted${name ? ` and ${name} reopened` : ''}.`);
}

export function initOpen() {
  const input = $('#file-input');
  input.addEventListener('change', () => {
    const files = [...(input.files || [])];
    input.value = '';
    openFiles(files);
  });
  const folder = $('#folder-input');
  folder.addEventListener('change', () => {
    const fs = [...(folder.files || [])];
    folder.value = '';
    openFiles(fs, true);
  });
  const drop = $('#drop');
  drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    onDrop(ev.dataTransfer);
  });
  // A file dropped anywhere else must not navigate away from the page: it opens too
  // (except on a file input, which takes it).
  const onInput = (ev) => ev.target instanceof Element && ev.target.closest('input[type=file]');
  window.addEventListener('dragover', (ev) => { if (!onInput(ev)) ev.preventDefault(); });
  window.addEventListener('drop', (ev) => {
    if (onInput(ev)) return;
    ev.preventDefault();
    if (!drop.contains(ev.target)) onDrop(ev.dataTransfer);
  });
  $('#sample').addEventListener('click', () => openImage({ kind: 'sample' }, 'the sample image'));

  on('image', ({ current }) => {
    renderCurrent(current);
    diffNotice();
  });
  on('chain', () => {
    renderSideChain();
    diffNotice();
  });
  on('opened', ({ headerMs, mapMs }) => {
    if (mapMs != null) $('#cur-time').textContent = `${duration(mapMs)} (header ${duration(headerMs)}, block map ${duration(mapMs)})`;
  });
  on('diag', refreshDiag);
  bridge.addEventListener('restarted', onRestarted);
  bridge.addEventListener('fatal', (ev) => showError(ev.detail));
  initLaunch();
}
