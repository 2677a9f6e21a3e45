// The worker's side of the protocol in core/ops.js, with no engine in it: it checks the
// handlers against the table, queues jobs, builds each job's context (progress, cancel),
// answers {id, ok, result|error}, moves the buffers the table names, and notices a trapped
// engine. worker.js gives it the handlers; tests/e2e/ops.test.mjs runs it in node.

import { OPS, argsProblem, compareOps, opSpec } from '../core/ops.js';

/** An Error with a stable kind (what the page switches on). */
export function fail(kind, message) {
  const e = new Error(message);
  e.kind = kind;
  return e;
}

/** Anything thrown (engine {kind, message}, DOMException, Error) as {kind, message}. */
export function toError(e) {
  if (e && typeof e === 'object' && typeof e.kind === 'string') {
    return { kind: e.kind, message: String(e.message) };
  }
  if (e && e.name === 'QuotaExceededError') {
    return { kind: 'no-space', message: `the browser's storage is full: ${e.message}` };
  }
  if (e && typeof e.name === 'string' && typeof e.message === 'string') {
    return { kind: 'browser', message: `${e.name}: ${e.message}` };
  }
  return { kind: 'browser', message: String(e) };
}

/** Let queued messages (cancel, hover queries) in. */
export function breathe() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** One handler table from several groups; a name registered twice is an error. */
export function mergeHandlers(...groups) {
  const out = {};
  for (const g of groups) {
    for (const [name, h] of Object.entries(g)) {
      if (Object.hasOwn(out, name)) throw fail('protocol', `two handlers for ${name}`);
      out[name] = h;
    }
  }
  return out;
}

/** Progress at most every 50 ms (and always the last step). */
const PROGRESS_MS = 50;

/**
 * The protocol loop. `handlers` must hold exactly one function per operation of the table
 * (else this throws, and the worker reports a fatal error instead of starting);
 * `handler(args, ctx)` returns the result (or a promise of it), where ctx is
 * {id, progress(done, total, extra?), cancelled(), checkCancelled(what)}.
 * `post(message, transfer)` sends to the page; `ready` is a promise that settles when the
 * engine is loaded. Returns {receive(message), noteTrap(error)}.
 */
export function createServer({ handlers, post, ready = Promise.resolve() }) {
  const { missing, extra } = compareOps(Object.keys(handlers));
  if (missing.length || extra.length) {
    throw fail('protocol', `the worker's handlers and the operation table differ: ${[
      ...missing.map((n) => `no handler for ${n}`), ...extra.map((n) => `${n} is not in the table`)].join(', ')}`);
  }
  for (const [name, h] of Object.entries(handlers)) {
    if (typeof h !== 'function') throw fail('protocol', `the handler for ${name} is not a function`);
  }
  /** Jobs received and not answered yet: id -> {cancelled}. */
  const live = new Map();
  let queue = Promise.resolve();
  /** Set once the wasm instance trapped (a Rust panic or abort executes `unreachable`; also
   * out-of-bounds memory, stack overflow): its state can no longer be trusted, so every
   * later call fails with this error and the page replaces this worker. */
  let crashed = null;

  function noteTrap(e) {
    if (!crashed && typeof WebAssembly !== 'undefined' && e instanceof WebAssembly.RuntimeError) {
      const cause = `${e.name}: ${e.message}`;
      crashed = { kind: 'engine-crashed', message: `the engine stopped unexpectedly (${cause})` };
      post({ crashed: { cause } });
    }
  }

  function context(id, spec, flag) {
    const job = live.get(id);
    const shared = flag ? new Int32Array(flag) : null;
    const cancelled = () => job.cancelled || (shared !== null && Atomics.load(shared, 0) !== 0);
    let last = 0;
    return {
      id,
      cancelled,
      checkCancelled(what) {
        if (cancelled()) throw fail('cancelled', `${what} was cancelled`);
      },
      progress: spec.progress
        ? (done, total, extra) => {
          const now = performance.now();
          if (now - last < PROGRESS_MS && done !== total) return;
          last = now;
          post({ id, progress: { done, total, ...extra } });
        }
        : () => {},
    };
  }

  async function dispatch({ id, op, args, flag }) {
    const spec = OPS[op];
    try {
      const result = await handlers[op](args ?? {}, context(id, spec, flag));
      const transfer = (spec.transfer ?? []).map((k) => result?.[k]?.buffer).filter(Boolean);
      post({ id, ok: true, result: result ?? null }, transfer);
    } catch (e) {
      noteTrap(e);
      post({ id, ok: false, error: crashed ?? toError(e) });
    } finally {
      live.delete(id);
    }
  }

  function receive(msg) {
    if (!msg || typeof msg.id !== 'number') return;
    const { id, op } = msg;
    if (msg.cancel) {
      const job = live.get(id);
      if (job) job.cancelled = true;
      return;
    }
    const spec = opSpec(op);
    if (!spec) {
      post({ id, ok: false, error: { kind: 'unknown-op', message: `the worker has no operation ${JSON.stringify(op)}` } });
      return;
    }
    if (crashed) { post({ id, ok: false, error: crashed }); return; }
    const bad = argsProblem(op, msg.args ?? {});
    if (bad) { post({ id, ok: false, error: { kind: 'invalid-argument', message: bad } }); return; }
    live.set(id, { cancelled: false });
    const go = () => ready.then(() => dispatch(msg), (e) => {
      live.delete(id);
      post({ id, ok: false, error: toError(e) });
    });
    if (spec.query) go();
    else queue = queue.then(go);
  }

  return { receive, noteTrap };
}
