// The Create view: a new image (dynamic or fixed, either layout, any block size), empty or
// holding a raw disk file; saved where the user picks, then opened.

import { bridge } from '../core/bridge.js';
import { $, showError, status } from '../core/dom.js';
import { duration, human, parseSize } from '../core/format.js';
import { progressUi } from '../core/progress.js';
import { download, pickTarget } from '../core/save.js';
import { present } from '../core/session.js';
import { emit, setBusy } from '../core/state.js';

/** The raw disk file chosen in the Create panel, if any. */
function createRaw() {
  const f = $('#create-raw').files;
  return f && f.length ? f[0] : null;
}

function createOptions() {
  const raw = createRaw();
  $('#create-size').disabled = !!raw;
  if (raw) $('#create-size').value = String(Math.max(512, Math.ceil(raw.size / 512) * 512));
  const size = parseSize($('#create-size').value);
  const fixed = document.querySelector('input[name=kind]:checked').value === 'fixed';
  const blockSize = Number($('#create-block').value);
  const layout = $('#create-layout').value;
  const comment = $('#create-comment').value;
  const commentBytes = new TextEncoder().encode(comment).length;
  if (size.error) return { error: size.error };
  if (commentBytes > 255) return { error: `the comment is ${commentBytes} bytes of UTF-8; at most 255 fit` };
  if (comment.includes('\0')) return { error: 'the comment may not contain a NUL character' };
  return { options: { size: size.bytes, fixed, block_size: blockSize, layout, comment } };
}

function describeCreate() {
  const o = createOptions();
  const out = $('#create-summary');
  out.classList.toggle('invalid', !!o.error);
  if (o.error) { out.textContent = o.error; return o; }
  const { size, fixed, block_size: bs, layout } = o.options;
  const virt = Math.ceil(size / 512) * 512;
  const blocks = Math.ceil(virt / bs);
  const mapBytes = blocks * 4;
  const dataOff = layout === 'vbox' ? Math.ceil((0x100000 + mapBytes) / 0x100000) * 0x100000 : 0x200 + Math.ceil(mapBytes / 512) * 512;
  const fileLen = dataOff + (fixed ? blocks * bs : 0);
  const raw = createRaw();
  out.textContent = raw
    ? `${human(virt)} ${fixed ? 'fixed' : 'dynamic'} disk holding ${raw.name}: ${blocks} blocks of ${human(bs)}; ${fixed ? `the new file is ${human(fileLen)}` : 'only blocks with data are stored'}.`
    : `${human(virt)} ${fixed ? 'fixed' : 'dynamic'} disk: ${blocks} blocks of ${human(bs)}; the new file is ${human(fileLen)}${fixed ? '' : ' and grows as data is written'}.`;
  return o;
}

async function runCreate(ev) {
  ev.preventDefault();
  const o = describeCreate();
  if (o.error) { $('#create-size').focus(); return; }
  showError(null);
  const result = $('#create-result');
  result.hidden = true;
  const target = await pickTarget('new.vdi', 'VirtualBox disk image', '.vdi');
  if (!target) { status('Save cancelled.'); return; }
  setBusy(1);
  const ui = progressUi('create');
  const t0 = performance.now();
  const raw = createRaw();
  // Importing reads the whole raw file: it can be cancelled (the bridge stops the engine
  // through a shared flag, or by stopping the worker).
  const ctl = new AbortController();
  const cancel = $('#create-cancel');
  cancel.hidden = !raw;
  cancel.onclick = () => ctl.abort();
  const opts = { onProgress: (p) => ui.update(p), signal: ctl.signal };
  try {
    const r = raw
      ? await bridge.ops.importRaw({ options: o.options, target, file: raw }, opts)
      : await bridge.ops.create({ options: o.options, target }, opts);
    const { saved } = r;
    // Where the image can be reopened from (after a restart of the worker).
    let source = { kind: 'none' };
    if (saved.kind === 'download') source = { kind: 'file', file: new File([saved.file], saved.name) };
    else if (target.kind === 'handle') source = await target.handle.getFile().then((file) => ({ kind: 'file', file }), () => source);
    if (saved.kind === 'download') download(saved.file, saved.name);
    // The new image is now the open one in the worker.
    await present({ source, info: r.info.info, file: r.info.file }, 'opened');
    const from = r.import ? ` from ${raw.name} (${human(r.import['data-bytes'])} of data stored, ${human(r.import['zero-bytes'])} of zeros skipped)` : '';
    result.textContent = saved.kind === 'download'
      ? `Created ${saved.name} (${human(saved.size)})${from}; your browser is saving it to your downloads.`
      : `Created and saved ${saved.name} (${human(saved.size)})${from} in ${duration(performance.now() - t0)}.`;
    if (r.import) result.dataset.dataBytes = String(r.import['data-bytes']);
    result.hidden = false;
    status(result.textContent);
    emit('opened', { report: r.info });
  } catch (e) {
    if (e.kind === 'cancelled') status('Import cancelled; nothing was saved.'); else showError(e);
  } finally {
    ui.done();
    cancel.hidden = true;
    cancel.onclick = null;
    setBusy(-1);
    emit('storage');
    emit('diag');
  }
}

export function initCreate() {
  const form = $('#create-form');
  form.addEventListener('submit', runCreate);
  form.addEventListener('input', describeCreate);
  describeCreate();
}
