// The static build (`cargo xtask dist`) on a plain static host: python3's http.server
// serving it under a sub-path (/apps/vdi/), with no COOP/COEP and no CSP header. The page
// runs and says which mode it is in; the service worker caches the build and serves it
// offline (with the host stopped and the browser offline, a reload shows the page and an
// image opens); Chromium reads the manifest as an installable app with a .vdi file handler,
// and the page's launchQueue consumer opens what it is handed (one file: the image;
// several: a chain); a changed build is offered as a new version and Reload switches to it
// (a half-copied one is not: its files do not match its hashes); the <meta> CSP and Trusted
// Types still hold, the service worker adds the header policy, and no request leaves the
// origin.
//
// The build: VDI_DIST_DIR (`cargo xtask test` writes target/dist first), or else this test
// runs `cargo xtask dist --no-build` (build the wasm first: `cargo xtask build-wasm`).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { MiB, openImage, openWorkbench, ROOT, run, scratch, screenshot, VDI } from './helpers.mjs';
import { dynamicImage } from './images.mjs';

const SUB = 'apps/vdi/';

/** The {version, files} a build stamped into its sw.js. */
function buildOf(dir) {
  const m = /^const BUILD = (\{.*\});$/m.exec(fs.readFileSync(path.join(dir, 'sw.js'), 'utf8'));
  assert.ok(m, `${dir}/sw.js is stamped by cargo xtask dist`);
  return JSON.parse(m[1]);
}

/** `cargo xtask dist --no-build ARGS`; returns the folder it printed. */
function xtaskDist(...args) {
  return run('cargo', ['xtask', 'dist', '--no-build', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop();
}

/** python3 -m http.server on `port` (0: a free one) serving `dir`; every request line it
 * logs is kept. */
async function staticHost(dir, port = 0) {
  const proc = spawn('python3', ['-u', '-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  let err = '';
  proc.stderr.on('data', (d) => {
    err += d;
    const lines = err.split('\n');
    err = lines.pop();
    for (const l of lines) {
      const m = /"(GET|HEAD|POST|PUT) (\S+) HTTP\/[\d.]+" (\d+)/.exec(l);
      if (m) log.push({ method: m[1], path: m[2], status: Number(m[3]) });
    }
  });
  const bound = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /port (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.on('exit', (code) => reject(new Error(`python3 -m http.server exited with ${code}`)));
  });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  return { port: bound, url: `http://127.0.0.1:${bound}/`, log, stop: () => { proc.kill(); return exited; } };
}

/** Watches a page from its first script: CSP violations, and the launchQueue consumer the
 * page registers (kept so the test can hand it files; the OS launch cannot be simulated). */
function watchPage() {
  window.__violations = [];
  document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
  const q = window.launchQueue;
  window.__launch = { native: !!q, consumer: null };
  if (q) {
    const set = q.setConsumer.bind(q);
    q.setConsumer = (c) => { window.__launch.consumer = c; return set(c); };
  } else {
    window.launchQueue = { setConsumer: (c) => { window.__launch.consumer = c; } };
  }
}

describe('the static build on a plain static host, under a sub-path', () => {
  let tmp;
  let host;
  let wb;
  let page;
  let build;
  let appUrl;
  let image;
  const siteDir = () => path.join(tmp.dir, 'site', SUB);

  before(async () => {
    tmp = scratch('vdi-e2e-dist-');
    const dist = process.env.VDI_DIST_DIR || xtaskDist();
    fs.cpSync(dist, siteDir(), { recursive: true });
    build = buildOf(siteDir());
    image = dynamicImage(tmp.dir);
    host = await staticHost(path.join(tmp.dir, 'site'));
    appUrl = `${host.url}${SUB}`;
    wb = await openWorkbench({ url: appUrl, beforeGoto: (ctx) => ctx.addInitScript(watchPage) });
    page = wb.page;
  });

  after(async () => {
    await wb?.close();
    await host?.stop();
    tmp?.cleanup();
  });

  test('the page runs, says its mode, and the service worker caches the whole build', async () => {
    await page.waitForFunction(() => ['ready', 'failed', 'unsupported'].includes(document.documentElement.dataset.offline), null, { timeout: 60000 });
    const s = await page.evaluate(async () => {
      const names = await caches.keys();
      const cached = await Promise.all(names.map(async (n) => (await (await caches.open(n)).keys()).map((r) => r.url)));
      return {
        offline: document.documentElement.dataset.offline,
        offlineText: document.querySelector('#app-offline').textContent,
        isolated: document.documentElement.dataset.isolated,
        isolationText: document.querySelector('#app-isolation').textContent,
        coi: globalThis.crossOriginIsolated,
        build: document.documentElement.dataset.build,
        controller: navigator.serviceWorker.controller?.scriptURL ?? null,
        names,
        cached,
      };
    });
    assert.equal(s.offline, 'ready', s.offlineText);
    assert.match(s.offlineText, new RegExp(`Version ${build.version}: works offline`));
    assert.equal(s.build, build.version);
    // A plain static host sends no COOP/COEP: the page says so, and runs without.
    assert.equal(s.coi, false);
    assert.equal(s.isolated, 'no');
    assert.match(s.isolationText, /Not cross-origin isolated/);
    assert.equal(s.controller, `${appUrl}sw.js`, 'the service worker controls the page');
    assert.deepEqual(s.names, [`vdi-workbench ${appUrl} ${build.version}`]);
    const want = Object.keys(build.files).map((p) => new URL(p, appUrl).href).sort();
    assert.deepEqual(s.cached[0].sort(), want, 'every file of the build is cached');
    assert.ok(want.includes(`${appUrl}pkg/vdi_wasm_bg.wasm`) && want.includes(`${appUrl}worker.js`));
    // Relative URLs: every request stayed under the sub-path, and found its file.
    const stray = host.log.filter((r) => !r.path.startsWith(`/${SUB}`) || r.status >= 400);
    assert.deepEqual(stray, [], 'requests outside the sub-path, or for files the build lacks');
    await screenshot(page, 'dist-static-host');
  });

  test('the manifest: name, icons, theme, and a .vdi file handler in scope', async () => {
    const m = await page.evaluate(async () => {
      const link = document.querySelector('link[rel=manifest]');
      const res = await fetch(link.href);
      const json = await res.json();
      const icons = await Promise.all(json.icons.map(async (i) => {
        const r = await fetch(new URL(i.src, link.href));
        const b = new Uint8Array(await r.arrayBuffer());
        const dv = new DataView(b.buffer);
        // A PNG's IHDR: width and height at bytes 16 and 20.
        const png = b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47;
        return { ...i, ok: r.ok, type: r.headers.get('content-type'), size: png ? `${dv.getUint32(16)}x${dv.getUint32(20)}` : null };
      }));
      return { href: link.href, json, icons, theme: document.querySelector('meta[name=theme-color]').content };
    });
    const { json } = m;
    assert.equal(m.href, `${appUrl}manifest.webmanifest`);
    // Chromium's own reading: no manifest errors, installable, the app's identity is this
    // copy's address (two copies on one host are two apps). Its file handlers are not in
    // what the DevTools protocol reports, so they are checked as JSON below.
    const cdp = await wb.context.newCDPSession(page);
    const seen = await cdp.send('Page.getAppManifest');
    assert.deepEqual(seen.errors, []);
    assert.equal(seen.manifest.id, appUrl);
    assert.equal(seen.manifest.startUrl, appUrl);
    assert.deepEqual((await cdp.send('Page.getInstallabilityErrors')).installabilityErrors, []);
    await cdp.detach();
    assert.equal(json.name, 'VDI workbench');
    assert.ok(json.short_name);
    assert.equal(json.display, 'standalone');
    assert.equal(new URL(json.start_url, m.href).href, appUrl);
    assert.equal(new URL(json.scope, m.href).href, appUrl);
    assert.equal(json.theme_color, m.theme, 'the manifest and the page agree on the theme colour');
    assert.ok(json.background_color);
    for (const i of m.icons) {
      assert.ok(i.ok, `icon ${i.src} is in the build`);
      if (i.type === 'image/png') assert.equal(i.size, i.sizes, `icon ${i.src} is ${i.sizes}`);
    }
    assert.ok(m.icons.some((i) => i.size === '192x192') && m.icons.some((i) => i.size === '512x512'));
    assert.equal(json.file_handlers.length, 1);
    const fh = json.file_handlers[0];
    assert.ok(new URL(fh.action, m.href).href.startsWith(appUrl), 'the file handler opens the app itself');
    assert.deepEqual(Object.values(fh.accept).flat(), ['.vdi']);
    assert.equal(fh.launch_type, 'single-client', 'files launched together reach one page (a chain)');
  });

  test('launchQueue: the page opens the file it is launched with, and several as a chain', async () => {
    const t = scratch('vdi-e2e-launch-');
    try {
      const [base, snap] = [t.file('base.vdi'), t.file('snap.vdi')];
      run(VDI, ['create', base, String(8 * MiB)]);
      run(VDI, ['create', '--parent', base, snap]);
      fs.writeFileSync(t.file('data'), Buffer.alloc(MiB, 0x5a));
      run(VDI, ['write', '--offset', String(2 * MiB), snap, t.file('data')]);
      await page.evaluate(async (files) => {
        const dir = await navigator.storage.getDirectory();
        for (const [name, b64] of files) {
          const w = await (await dir.getFileHandle(name, { create: true })).createWritable();
          await w.write(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
          await w.close();
        }
      }, [['launch-base.vdi', base], ['launch-snap.vdi', snap]].map(([n, f]) => [n, fs.readFileSync(f).toString('base64')]));
      const launch = (names) => page.evaluate(async (ns) => {
        const dir = await navigator.storage.getDirectory();
        await window.__launch.consumer({ files: await Promise.all(ns.map((n) => dir.getFileHandle(n))) });
      }, names);
      assert.deepEqual(await page.evaluate(() => [window.__launch.native, typeof window.__launch.consumer]), [true, 'function'],
        'the page registered a consumer with the browser\'s launchQueue');

      await page.evaluate(() => { delete document.documentElement.dataset.mapMs; });
      await launch(['launch-base.vdi']);
      await page.waitForFunction(() => document.documentElement.dataset.mapMs);
      assert.equal(await page.$eval('#cur-name', (e) => e.textContent), 'launch-base.vdi');

      await page.evaluate(() => { delete document.documentElement.dataset.chainMs; });
      await launch(['launch-snap.vdi', 'launch-base.vdi']);
      await page.waitForFunction(() => document.documentElement.dataset.chainMs || !document.querySelector('#error').hidden);
      assert.equal(await page.$eval('#error', (e) => e.hidden), true);
      const layers = await page.$$eval('#side-chain-layers .layer-name', (es) => es.map((e) => e.textContent));
      assert.deepEqual(layers, ['launch-base.vdi', 'launch-snap.vdi'], 'linked base first');
    } finally {
      t.cleanup();
    }
  });

  test('the CSP and Trusted Types hold on the static build', async () => {
    const meta = (html) => [...html.matchAll(/<meta\s+http-equiv="Content-Security-Policy"\s+content="([^"]+)"/gi)].map((m) => m[1]);
    const src = meta(fs.readFileSync(path.join(ROOT, 'www/index.html'), 'utf8'));
    assert.equal(src.length, 1);
    assert.deepEqual(meta(await page.evaluate(() => fetch('index.html').then((r) => r.text()))), src, 'the build keeps the page\'s CSP');
    // Everything so far (service worker, engine worker, images, a chain) ran with no violation.
    assert.deepEqual(await page.evaluate(() => window.__violations), []);
    const probe = await page.evaluate(async () => {
      const out = {};
      const attempt = async (name, f) => { try { await f(); out[name] = 'allowed'; } catch (e) { out[name] = `${e.name}: ${e.message}`; } };
      await attempt('innerHTML', () => { document.createElement('div').innerHTML = '<b>x</b>'; });
      await attempt('otherPolicy', () => trustedTypes.createPolicy('evil', { createScriptURL: (x) => x }));
      await attempt('swString', () => navigator.serviceWorker.register('sw.js'));
      return out;
    });
    assert.match(probe.innerHTML, /^TypeError: .*TrustedHTML/);
    assert.match(probe.otherPolicy, /^TypeError: .*evil/);
    assert.match(probe.swString, /^TypeError: .*TrustedScriptURL/, 'registering a service worker from a string is refused');
    assert.deepEqual(wb.foreignRequests(), [], 'no request left the origin');
  });

  test('offline: a reload shows the page, and an image opens', async () => {
    // Offline for real: the host is stopped (the browser's own service-worker update check
    // ignores the emulated offline state), and the browser context is set offline.
    const { port } = host;
    await host.stop();
    await wb.context.setOffline(true);
    try {
      assert.equal(await page.evaluate(() => navigator.onLine), false);
      await page.reload();
      await page.waitForFunction(() => document.querySelector('#storage-text') !== null);
      assert.equal(await page.evaluate(() => document.documentElement.dataset.build), build.version);
      await openImage(page, image);
      assert.equal(await page.$eval('#cur-name', (e) => e.textContent), 'dynamic.vdi');
      assert.ok(Number(await page.$eval('#cur-read', (e) => e.dataset.bytes)) > 0, 'the engine read the image');
    } finally {
      await wb.context.setOffline(false);
      host = await staticHost(path.join(tmp.dir, 'site'), port); // the same origin
    }
  });

  test('served by the service worker, the page and the engine\'s worker run under the server\'s header policy', async () => {
    // The page now comes from the service worker (the offline reload above): it adds the
    // development server's CSP header, which a <meta> cannot give the worker.
    assert.match(build.csp, /script-src 'self' 'wasm-unsafe-eval';/);
    assert.match(build.csp, /require-trusted-types-for 'script'; trusted-types vdi-worker$/);
    const headers = await page.evaluate(async () => Object.fromEntries(await Promise.all(['index.html', 'worker.js', 'pkg/vdi_wasm_bg.wasm']
      .map(async (p) => [p, (await fetch(p)).headers.get('content-security-policy')]))));
    for (const [p, csp] of Object.entries(headers)) assert.equal(csp, build.csp, p);
    const worker = page.workers().find((w) => w.url() === `${appUrl}worker.js`);
    assert.ok(worker, 'the engine worker runs');
    const probe = await worker.evaluate(async () => {
      const out = {};
      // A string to a script sink (Trusted Types), and a script from outside 'self'.
      try { clearTimeout(setTimeout('self.__evaluated = 1', 0)); out.evalCall = 'allowed'; } catch (e) { out.evalCall = e.name; }
      try { await import('data:text/javascript,export default 1'); out.dataImport = 'ran'; } catch (e) { out.dataImport = e.name; }
      return out;
    });
    assert.deepEqual(probe, { evalCall: 'TypeError', dataImport: 'TypeError' }, 'the worker runs under the policy');
    // The image opened offline under that policy with no violation.
    assert.deepEqual(await page.evaluate(() => window.__violations), []);
  });

  test('a changed build is offered as a new version, and Reload switches to it', async () => {
    // The next release: the same sources with one change, copied over the old files.
    const www = path.join(tmp.dir, 'www');
    fs.cpSync(path.join(ROOT, 'www'), www, { recursive: true });
    fs.appendFileSync(path.join(www, 'style.css'), '\n/* the next build */\n');
    const staged = path.join(tmp.dir, 'next');
    assert.equal(xtaskDist('--www', www, '--out', staged), staged);
    const next = buildOf(staged);
    assert.notEqual(next.version, build.version);

    /** Ask for an update; the state the new service worker ends in ('none': no new one). */
    const update = () => page.evaluate(async () => {
      const reg = await navigator.serviceWorker.getRegistration();
      await reg.update();
      const w = reg.installing;
      if (!w) return 'none';
      await new Promise((resolve) => {
        const done = () => { if (w.state === 'installed' || w.state === 'redundant') resolve(); };
        w.addEventListener('statechange', done);
        done();
      });
      return w.state;
    });
    // Half deployed: the new sw.js is up, the old style.css still there. The new version
    // refuses to install (the file's bytes are not the build's), and nothing is offered.
    fs.cpSync(staged, siteDir(), { recursive: true, filter: (f) => path.basename(f) !== 'style.css' });
    assert.equal(await update(), 'redundant');
    assert.equal(await page.evaluate(() => document.documentElement.dataset.update ?? null), null);
    assert.deepEqual(await page.evaluate(() => caches.keys()), [`vdi-workbench ${appUrl} ${build.version}`], 'the running version\'s cache is kept whole');
    // The deploy completes.
    fs.cpSync(path.join(staged, 'style.css'), path.join(siteDir(), 'style.css'));
    assert.equal(await update(), 'installed');
    await page.waitForFunction(() => document.documentElement.dataset.update === 'available', null, { timeout: 60000 });
    assert.equal(await page.$eval('#update', (e) => e.hidden), false);
    assert.match(await page.$eval('#update', (e) => e.textContent), /new version/i);
    await screenshot(page, 'dist-update-offered');
    // Until the user says so, this page keeps its version.
    assert.equal(await page.evaluate(() => document.documentElement.dataset.build), build.version);

    // A second tab of the old version is offered the waiting one too.
    const other = await wb.context.newPage();
    await other.goto(appUrl);
    await other.waitForFunction(() => document.documentElement.dataset.update === 'available');

    await Promise.all([page.waitForEvent('load'), page.click('#update-reload')]);
    await page.waitForFunction((v) => document.documentElement.dataset.build === v, next.version);
    // The other tab keeps running its version, and says a new one is in use now.
    await other.waitForFunction(() => document.documentElement.dataset.update === 'active');
    assert.equal(await other.evaluate(() => document.documentElement.dataset.build), build.version);
    assert.match(await other.$eval('#update-text', (e) => e.textContent), /now in use/);
    await other.close();
    const s = await page.evaluate(async () => ({
      names: await caches.keys(),
      css: await (await fetch('style.css')).text(),
      update: document.documentElement.dataset.update ?? null,
    }));
    assert.deepEqual(s.names, [`vdi-workbench ${appUrl} ${next.version}`], 'only the new version is cached');
    assert.ok(s.css.includes('/* the next build */'));
    assert.equal(s.update, null);
    assert.deepEqual(wb.foreignRequests(), []);
  });

  test('www/ as the development server serves it, at the same address: the offline copy removes itself', async () => {
    for (const f of ['sw.js', 'index.html']) fs.copyFileSync(path.join(ROOT, 'www', f), path.join(siteDir(), f));
    // The unstamped service worker takes over, unregisters, and the page reloads from the host.
    const reloaded = page.waitForEvent('load');
    await page.evaluate(() => { navigator.serviceWorker.getRegistration().then((r) => r.update()); });
    await reloaded;
    await page.waitForFunction(() => document.documentElement.dataset.offline === 'dev');
    const s = await page.evaluate(async () => ({
      registrations: (await navigator.serviceWorker.getRegistrations()).length,
      caches: await caches.keys(),
      controller: !!navigator.serviceWorker.controller,
    }));
    assert.deepEqual(s, { registrations: 0, caches: [], controller: false });
  });
});
