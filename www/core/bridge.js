// The page's side of the worker protocol (core/ops.js): one module worker, one queue of
// calls, and everything about a call's life in one place: progress, cancel (by message, by
// the shared flag, or by stopping the worker), restarting the worker, and recovering from a
// crashed engine. The page's calls are generated from the table (`bridge.ops.check(...)`);
// a name not in the table is refused without reaching the worker.
//
// Events (an EventTarget): 'restarted' {reason, crash, results} after every restart, once
// the restore hooks have run; 'fatal' {kind, message} when the worker cannot start.

import { setLimits } from './limits.js';
import { OP_NAMES, compareOps, opSpec } from './ops.js';
import { scriptURL, WORKER_URL } from './trusted.js';

/** What a cancelled call rejects with. */
export const CANCELLED = Object.freeze({ kind: 'cancelled', message: 'cancelled' });

function defaultSpawn() {
  return new Worker(scriptURL(WORKER_URL), { type: 'module' });
}

export class Bridge extends EventTarget {
  #spawnWorker;
  #worker = null;
  #ready = null;
  #pending = new Map();
  #nextId = 1;
  #hooks = [];
  #recovering = false;

  /** @param {{spawn?: () => Worker}} [options] how to make a worker (tests pass a fake). */
  constructor({ spawn = defaultSpawn } = {}) {
    super();
    this.#spawnWorker = spawn;
    /** Workers replaced after a crash. */
    this.crashes = 0;
    /** One function per operation of the table: `ops.name(args, {onProgress, signal})`. */
    this.ops = Object.freeze(Object.fromEntries(OP_NAMES.map((name) => [name, (args, opts) => this.call(name, args, opts)])));
  }

  /** Start the worker (once; calls start it too). */
  start() {
    if (!this.#worker) this.#spawn();
    return this.#ready;
  }

  /**
   * Call operation `op` of the table with `args`. `onProgress({done, total, ...})` gets the
   * worker's progress; aborting `signal` cancels the call the way the table says. Resolves
   * with the result, rejects with {kind, message}.
   */
  call(op, args = {}, { onProgress = null, signal = null } = {}) {
    const spec = opSpec(op);
    if (!spec) return Promise.reject({ kind: 'unknown-op', message: `${JSON.stringify(op)} is not an operation of the worker (core/ops.js)` });
    if (signal?.aborted) return Promise.reject(CANCELLED);
    this.start();
    const id = this.#nextId++;
    const flag = spec.cancel === 'flag' && globalThis.crossOriginIsolated && typeof SharedArrayBuffer === 'function'
      ? new SharedArrayBuffer(4) : null;
    return new Promise((resolve, reject) => {
      const job = { id, op, spec, resolve, reject, onProgress, flag, posted: false, cancelAsked: false };
      this.#pending.set(id, job);
      signal?.addEventListener('abort', () => this.#cancel(job), { once: true });
      this.#ready.then(() => {
        if (this.#pending.get(id) !== job) return; // failed meanwhile (a restart)
        this.#worker.postMessage({ id, op, args, flag });
        job.posted = true;
        if (job.cancelAsked) this.#worker.postMessage({ id, cancel: true });
      }, (e) => {
        // The worker never started (a later call than the ones #fail rejected).
        if (this.#pending.get(id) !== job) return;
        this.#pending.delete(id);
        reject(e);
      });
    });
  }

  /** Run `hook()` after every restart (before other calls reach the new worker: its
   * first call must be made synchronously). Its result or error is in 'restarted'. */
  onRestore(hook) {
    this.#hooks.push(hook);
  }

  /**
   * Stop the worker and start a fresh one: every call waiting on the old one fails with
   * `reason`; the restore hooks run; then 'restarted' is sent. Rejects with the first
   * hook's error, if any.
   */
  async restart(reason = CANCELLED, crash = null) {
    const jobs = [...this.#pending.values()];
    this.#pending.clear();
    this.#worker?.terminate();
    this.#spawn();
    const runs = this.#hooks.map((hook) => {
      try { return Promise.resolve(hook()); } catch (e) { return Promise.reject(e); }
    });
    for (const job of jobs) job.reject(reason);
    const results = await Promise.allSettled(runs);
    this.dispatchEvent(new CustomEvent('restarted', { detail: { reason, crash, results } }));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  #spawn() {
    const w = this.#spawnWorker();
    this.#worker = w;
    let up = false;
    this.#ready = new Promise((resolve, reject) => {
      w.onmessage = (ev) => {
        if (w !== this.#worker) return;
        const m = ev.data;
        if (m.ready) {
          const { missing, extra } = compareOps(m.ops ?? []);
          if (missing.length || extra.length) {
            reject(this.#fail({ kind: 'protocol', message: `the worker and the page disagree on the operations (reload the page): ${[...missing, ...extra].join(', ')}` }));
            return;
          }
          try {
            setLimits(m.limits);
          } catch (e) {
            reject(this.#fail({ kind: 'protocol', message: `${e.message} (reload the page)` }));
            return;
          }
          up = true;
          resolve();
          return;
        }
        if (m.fatal) { reject(this.#fail(m.fatal)); return; }
        if (m.crashed) { this.#recover(m.crashed.cause); return; }
        const job = this.#pending.get(m.id);
        if (!job) return;
        if (m.progress) {
          if (job.spec.progress) job.onProgress?.(m.progress);
          return;
        }
        this.#pending.delete(m.id);
        if (m.ok) job.resolve(m.result); else job.reject(m.error);
      };
      w.onerror = (ev) => {
        ev.preventDefault?.();
        if (w !== this.#worker) return;
        // An uncaught error in a running worker: its state is unknown, replace it.
        if (up) { this.#recover(`an uncaught error in the worker: ${ev.message || 'unknown'}`); return; }
        reject(this.#fail({ kind: 'worker', message: `the worker failed: ${ev.message || 'could not start (is the wasm built?)'}` }));
      };
    });
    this.#ready.catch((e) => this.dispatchEvent(new CustomEvent('fatal', { detail: e })));
  }

  /** Every waiting call fails with `err`; returns `err`. */
  #fail(err) {
    for (const job of this.#pending.values()) job.reject(err);
    this.#pending.clear();
    return err;
  }

  #cancel(job) {
    if (this.#pending.get(job.id) !== job || !job.spec.cancel) return;
    if (job.spec.cancel === 'restart' || (job.spec.cancel === 'flag' && !job.flag)) {
      this.restart(CANCELLED).catch(() => { /* in the 'restarted' event */ });
      return;
    }
    if (job.flag) Atomics.store(new Int32Array(job.flag), 0, 1);
    if (job.posted) this.#worker.postMessage({ id: job.id, cancel: true });
    else job.cancelAsked = true;
  }

  /** The engine crashed (a wasm trap, or an uncaught error): what it was doing fails with
   * `engine-crashed` and a fresh worker restores the page's state. A crash while restoring
   * gives the state up (no restart loop). */
  #recover(cause) {
    this.crashes += 1;
    const err = { kind: 'engine-crashed', message: `the engine stopped unexpectedly (${cause}) and was restarted` };
    if (this.#recovering) {
      const jobs = [...this.#pending.values()];
      this.#pending.clear();
      this.#worker.terminate();
      this.#spawn();
      for (const job of jobs) job.reject(err);
      return;
    }
    this.#recovering = true;
    this.restart(err, cause).catch(() => { /* in the 'restarted' event */ }).finally(() => { this.#recovering = false; });
  }
}

/** The page's bridge. */
export const bridge = new Bridge();
