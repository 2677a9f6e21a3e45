// What the page has open, and the events the panels follow. Panels never call each other
// to show an image: they listen here.
//
// Events (listeners may return a promise; `emit` resolves when all have settled):
//   'image'       {current, reason}   reason: 'opened' | 'changed' (an edit) | 'closed'
//   'opened'      {report, headerMs, mapMs}   an image finished opening (after 'image')
//   'open-failed' {file, error}
//   'chain'       {chain}             a chain was opened (or closed: null)
//   'check'       {check}             the open image's check: state.check
//   'busy'        boolean
//   'view'        {view}              the view shown changed (core/router.js)
//   'hex'         {offset, why?}      show the disk's bytes at `offset` (panels/hex.js)
//   'partitions'  {partitions} | null the open disk's partitions, each with its colour (files.js)
//   'highlight'   {ranges, label} | null  blocks [first, last] to outline on the map (files.js)
//   'diag'        ask the diagnostics to refresh (awaited)
//   'storage'     ask the storage figures to refresh

/** The page's state. current: {source, info, file} | null (info: the engine's info
 * report, file: what it says about the file); chain: {info, files} | null;
 * check: {of: current, status: 'running'|'done'|'failed'|'stale', report?, error?} | null. */
export const state = {
  current: null,
  chain: null,
  check: null,
};

const listeners = new Map();

export function on(type, fn) {
  if (!listeners.has(type)) listeners.set(type, []);
  listeners.get(type).push(fn);
}

/** Call every listener of `type` now; resolves (or rejects) when their promises settle. */
export function emit(type, detail) {
  const waits = [];
  for (const fn of listeners.get(type) ?? []) {
    try {
      const r = fn(detail);
      if (r && typeof r.then === 'function') waits.push(r);
    } catch (e) {
      waits.push(Promise.reject(e));
    }
  }
  return Promise.all(waits);
}

/** Make `current` the open image and tell the panels (see 'image'). */
export function setImage(current, reason) {
  state.current = current;
  if (reason !== 'changed' || !current) state.check = null;
  return emit('image', { current, reason: current ? reason : 'closed' });
}

export function setChain(chain) {
  state.chain = chain;
  return emit('chain', { chain });
}

export function setCheck(check) {
  state.check = check;
  emit('check', { check });
}

/** True when the open image is the top of the open chain: the disk the Hex and Files views
 * read is then the chain's (what the top layer's VM sees), not the top layer alone. */
export function chainDisk() {
  const { current, chain } = state;
  if (!current || !chain) return false;
  const top = chain.info.layers[chain.info.layers.length - 1];
  return top?.info['format-specific'].data.uuid === current.info['format-specific'].data.uuid;
}

/** The virtual size (bytes) of the disk those views read. */
export function diskSize() {
  return Number(chainDisk() ? state.chain.info['virtual-size'] : state.current.info['virtual-size']);
}

let busy = 0;

/** +1 when a task starts, -1 when it ends. */
export function setBusy(delta) {
  busy += delta;
  emit('busy', busy > 0);
}

export const isBusy = () => busy > 0;
