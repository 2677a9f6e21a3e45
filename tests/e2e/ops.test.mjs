// The worker protocol is the table in www/core/ops.js, and nothing else: in node, the
// page's bridge (www/core/bridge.js) talks to the worker's protocol loop
// (www/worker/protocol.js) through an in-memory worker, and in headless Chromium the real
// bridge talks to the real worker.
//   - the worker refuses to start when its handlers and the table differ;
//   - a name missing from the table is refused, by the bridge (it never posts it) and by
//     the worker (for a message that bypasses the bridge);
//   - every operation of the table is generated on the bridge and answered by the worker;
//   - progress, cancel (message, flag, restart), transfers and crash recovery follow the table.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { OPS, OP_NAMES, argsProblem, compareOps } from '../../www/core/ops.js';
import { Bridge, CANCELLED } from '../../www/core/bridge.js';
import { createServer, mergeHandlers } from '../../www/worker/protocol.js';
import { openWorkbench, stopServer } from './helpers.mjs';

/** Handlers that answer {op, args} (and report progress where the table says so). */
function stubHandlers(overrides = {}) {
  return Object.fromEntries(OP_NAMES.map((op) => [op, overrides[op] ?? ((args, ctx) => {
    if (OPS[op].progress) ctx.progress(1, 2);
    const result = { op, args };
    for (const k of OPS[op].transfer ?? []) result[k] = new Uint32Array([1, 2, 3]);
    return result;
  })]));
}

/** A worker in this process: messages are cloned and delivered on a later task, as
 * postMessage does. `log` records what the page posted and what the worker transferred. */
/** What a real worker's ready message carries besides its operations: the engine's limits
 * (a fixture here; the browser test below reads the real ones). */
const LIMITS = { 'max-cells': 1 << 20, 'max-files': 64, chunk: 8 << 20 };

function fakeWorker(handlers, { ops, limits = LIMITS } = {}) {
  const log = { posted: [], transferred: [], terminated: false };
  const w = {
    onmessage: null,
    onerror: null,
    postMessage(msg) {
      log.posted.push(msg);
      setTimeout(() => { if (!log.terminated) server.receive(structuredClone(msg)); }, 0);
    },
    terminate() { log.terminated = true; },
  };
  const server = createServer({
    handlers,
    post: (msg, transfer = []) => {
      log.transferred.push(...transfer);
      setTimeout(() => { if (!log.terminated) w.onmessage?.({ data: msg }); }, 0);
    },
  });
  setTimeout(() => w.onmessage?.({ data: { ready: true, ops: ops ?? Object.keys(handlers), limits } }), 0);
  w.log = log;
  w.server = server;
  return w;
}

/** A bridge over fake workers; `workers` lists every worker it started. */
function fakeBridge(handlers = stubHandlers(), opts = {}) {
  const workers = [];
  const bridge = new Bridge({ spawn: () => { const w = fakeWorker(handlers, opts); workers.push(w); return w; } });
  return { bridge, workers };
}

describe('the operation table (node)', () => {
  test('every operation is described, with known cancel modes and argument types', () => {
    assert.ok(OP_NAMES.length >= 30, `${OP_NAMES.length} operations`);
    for (const [name, spec] of Object.entries(OPS)) {
      assert.equal(typeof spec.about, 'string', `${name}: about`);
      assert.ok([undefined, 'message', 'flag', 'restart'].includes(spec.cancel), `${name}: cancel ${spec.cancel}`);
      if (spec.cancel) assert.ok(!spec.query, `${name}: a query is never cancelled`);
      for (const t of Object.values(spec.args ?? {})) {
        assert.match(t, /^(object|string|boolean|file|files|index|count)\??$/, `${name}: argument type ${t}`);
      }
      assert.ok(Object.isFrozen(spec), `${name} is frozen`);
    }
    assert.ok(Object.isFrozen(OPS));
    assert.deepEqual(compareOps(OP_NAMES), { missing: [], extra: [] });
    assert.deepEqual(compareOps(['open', 'nope']).extra, ['nope']);
    assert.equal(argsProblem('mapCells', { per: 0 }), 'mapCells: per must be count (got number)');
    assert.equal(argsProblem('chainCells', { layer: null, per: 3 }), null);
    assert.equal(argsProblem('toString', {}), 'no operation "toString"');
  });

  test('the worker refuses to start when its handlers and the table differ', () => {
    const handlers = stubHandlers();
    delete handlers.check;
    assert.throws(() => createServer({ handlers, post() {} }), (e) => e.kind === 'protocol' && /no handler for check/.test(e.message));
    assert.throws(() => createServer({ handlers: { ...stubHandlers(), bogus() {} }, post() {} }),
      (e) => e.kind === 'protocol' && /bogus is not in the table/.test(e.message));
    assert.throws(() => mergeHandlers({ open() {} }, { open() {} }), /two handlers for open/);
  });

  test('every operation of the table is generated on the bridge and answered through it', async () => {
    const { bridge } = fakeBridge();
    assert.deepEqual(Object.keys(bridge.ops), OP_NAMES);
    const valid = {
      object: {}, 'object?': {}, string: 's', boolean: true, 'boolean?': false,
      file: new Blob(['x']), files: [new Blob(['x'])], index: 0, 'index?': null, count: 1,
    };
    for (const op of OP_NAMES) {
      const args = Object.fromEntries(Object.entries(OPS[op].args ?? {}).map(([k, t]) => [k, valid[t]]));
      const progress = [];
      const r = await bridge.ops[op](args, { onProgress: (p) => progress.push(p) });
      assert.equal(r.op, op);
      assert.deepEqual(progress, OPS[op].progress ? [{ done: 1, total: 2 }] : [], `${op}: progress`);
      for (const k of OPS[op].transfer ?? []) assert.deepEqual([...r[k]], [1, 2, 3], `${op}: ${k}`);
    }
  });

  test('a name missing from the table is refused by the bridge (never posted) and by the worker', async () => {
    const { bridge, workers } = fakeBridge();
    await bridge.start();
    for (const name of ['nope', 'toString', '__proto__', 'cancel', undefined]) {
      await assert.rejects(bridge.call(name, {}), (e) => e.kind === 'unknown-op', String(name));
    }
    assert.equal(workers[0].log.posted.length, 0, 'nothing reached the worker');
    // A message that bypasses the bridge.
    const answers = [];
    const server = createServer({ handlers: stubHandlers(), post: (m) => answers.push(m) });
    server.receive({ id: 7, op: 'nope', args: {} });
    server.receive({ id: 8, op: 'constructor', args: {} });
    server.receive({ id: 9, op: 'mapCells', args: { per: 'x' } });
    assert.deepEqual(answers.map((a) => [a.id, a.ok, a.error.kind]), [[7, false, 'unknown-op'], [8, false, 'unknown-op'], [9, false, 'invalid-argument']]);
  });

  test('transfers: the buffers the table names move to the page', async () => {
    const { bridge, workers } = fakeBridge();
    await bridge.ops.mapCells({ per: 1 });
    assert.equal(workers[0].log.transferred.length, OPS.mapCells.transfer.length);
  });

  test('cancel by message reaches the running job; by restart, a fresh worker', async () => {
    let started = null;
    const handlers = stubHandlers({
      async exportRaw(args, ctx) {
        started?.();
        for (let i = 0; i < 200; i++) {
          if (ctx.cancelled()) throw Object.assign(new Error('the export was cancelled'), { kind: 'cancelled' });
          await new Promise((r) => setTimeout(r, 5));
        }
        return 'finished';
      },
      check: () => new Promise(() => {}), // never ends: only a restart stops it
    });
    const { bridge, workers } = fakeBridge(handlers);
    const ctl = new AbortController();
    const run = bridge.ops.exportRaw({ target: {}, name: 'x' }, { signal: ctl.signal });
    await new Promise((r) => { started = r; });
    ctl.abort();
    await assert.rejects(run, (e) => e.kind === 'cancelled' && /export was cancelled/.test(e.message));
    assert.equal(workers.length, 1, 'a cancel by message keeps the worker');
    // Aborted before it was even posted: the worker still decides.
    const early = new AbortController();
    const p = bridge.ops.exportRaw({ target: {}, name: 'y' }, { signal: early.signal });
    early.abort();
    await assert.rejects(p, (e) => e.kind === 'cancelled');
    // check is cancelled by stopping the worker.
    const restored = [];
    bridge.onRestore(() => { restored.push(workers.length); return bridge.ops.stats(); });
    const events = [];
    bridge.addEventListener('restarted', (ev) => events.push(ev.detail));
    const c = new AbortController();
    const checking = bridge.ops.check({}, { signal: c.signal });
    await new Promise((r) => setTimeout(r, 20));
    c.abort();
    await assert.rejects(checking, (e) => e === CANCELLED);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(workers.length, 2, 'a fresh worker');
    assert.equal(workers[0].log.terminated, true);
    assert.deepEqual(restored, [2]);
    assert.equal(events.length, 1);
    assert.equal(events[0].crash, null);
    assert.equal((await bridge.ops.stats()).op, 'stats', 'the new worker answers');
  });

  test('a trapped engine: the call fails with engine-crashed, a fresh worker restores the state', async () => {
    const handlers = stubHandlers({ open: () => { throw new WebAssembly.RuntimeError('unreachable'); } });
    const { bridge, workers } = fakeBridge(handlers);
    const events = [];
    bridge.addEventListener('restarted', (ev) => events.push(ev.detail));
    bridge.onRestore(() => 'restored');
    await assert.rejects(bridge.ops.open({ source: {} }), (e) => e.kind === 'engine-crashed');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(workers.length, 2);
    assert.equal(bridge.crashes, 1);
    assert.equal(events[0].crash, 'RuntimeError: unreachable');
    assert.deepEqual(events[0].results, [{ status: 'fulfilled', value: 'restored' }]);
  });

  test('a worker whose operations differ from the table is refused', async () => {
    const { bridge } = fakeBridge(stubHandlers(), { ops: OP_NAMES.filter((n) => n !== 'check') });
    const fatal = new Promise((r) => bridge.addEventListener('fatal', (ev) => r(ev.detail)));
    await assert.rejects(bridge.ops.stats(), (e) => e.kind === 'protocol' && /check/.test(e.message));
    assert.equal((await fatal).kind, 'protocol');
  });

  test('a worker that brings no engine limits is refused (the page never guesses them)', async () => {
    const { bridge } = fakeBridge(stubHandlers(), { limits: null });
    await assert.rejects(bridge.ops.stats(), (e) => e.kind === 'protocol' && /max-cells/.test(e.message));
  });
});

describe('the operation table in the browser', () => {
  let wb;
  before(async () => { wb = await openWorkbench(); });
  after(async () => {
    await wb?.close();
    stopServer();
  });

  test('every operation of the table is answered by the real worker; an unknown one is refused', async () => {
    const answers = await wb.page.evaluate(async () => {
      const { bridge } = await import('./core/bridge.js');
      const { OP_NAMES } = await import('./core/ops.js');
      const out = {};
      for (const op of OP_NAMES) {
        // No arguments: the worker checks them against the table (or, for operations
        // without any, runs them with no image open).
        out[op] = await Promise.race([
          bridge.ops[op]({}).then(() => 'ok', (e) => e.kind),
          new Promise((r) => setTimeout(() => r('no answer'), 15000)),
        ]);
      }
      out['(unknown)'] = await bridge.call('noSuchOperation', {}).then(() => 'ok', (e) => e.kind);
      return out;
    });
    for (const op of OP_NAMES) {
      assert.ok(!['no answer', 'unknown-op', 'engine-crashed', 'protocol'].includes(answers[op]), `${op}: ${answers[op]}`);
      if (OPS[op].args && Object.values(OPS[op].args).some((t) => !t.endsWith('?'))) assert.equal(answers[op], 'invalid-argument', op);
    }
    assert.equal(answers['(unknown)'], 'unknown-op');
    assert.deepEqual(wb.consoleErrors, []);
  });

  test('the page draws with the engine\'s limits, given by the worker', async () => {
    const l = await wb.page.evaluate(async () => {
      const { bridge } = await import('./core/bridge.js');
      await bridge.start();
      const { MAX_CELLS, MAX_FILES, CHUNK } = await import('./core/limits.js');
      return { MAX_CELLS, MAX_FILES, CHUNK };
    });
    // crates/vdi-wasm: cells::MAX_CELLS, chain::MAX_FILES, vdi::transfer::CHUNK.
    assert.deepEqual(l, { MAX_CELLS: 1 << 20, MAX_FILES: 64, CHUNK: 8 << 20 });
  });
});
