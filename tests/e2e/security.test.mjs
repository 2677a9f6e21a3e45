// Page security: the Content-Security-Policy (served on every response, so it governs the
// worker too; and the page's <meta>), Trusted Types (string sinks throw; the one policy is
// for the worker scripts, www/core/trusted.js), a static scan of www/ for inline handlers and HTML
// sinks, and script injection through every text an image brings in: the header's text
// (the pre-header, 64 bytes), its comment (256 bytes), and the file name, followed through
// the header table, the status line, Check's findings, the block map's tip, the error box
// and the export result. A payload must show literally and never run, add an element,
// trip the CSP, open a dialog, or make a request.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  headerFields, hoverBlock, openWorkbench, removeSavePicker, ROOT, run, scratch, screenshot, stopServer, vdiJson,
} from './helpers.mjs';
import { patchBytes } from './images.mjs';

const WWW = path.join(ROOT, 'www');

/** Each payload sets window.__pwned if it ever runs. */
const PAYLOADS = [
  '<img src=x onerror="window.__pwned=1">',
  '<script>window.__pwned=2</script>',
  '"><svg onload=window.__pwned=3>',
  '\'><iframe srcdoc="<script>parent.__pwned=4</script>">',
  'javascript:window.__pwned=5//',
];
/** File names (valid on Linux: no '/' and no NUL) that are markup. */
const NAMES = [
  '<img src=x onerror=window.__pwned=6>.vdi',
  '"><svg onload=window.__pwned=7>.vdi',
  '\'-alert(8)-\'<b onmouseover=window.__pwned=8>.vdi',
  '<script>window.__pwned=9<\\script>.vdi',
  'javascript:window.__pwned=10.vdi',
];
const COMMENT = PAYLOADS.join(' | ');

/** What the page shows for a string from the image (control characters as C escapes). */
function shown(v) {
  return v.replace(/[\\\u0000-\u001f\u007f]/g, (c) => ({ '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' })[c]
    ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** A 4 MiB qemu-img image with data in block 0, its pre-header text and comment replaced. */
function payloadImage(file, text, comment, { trailing = false } = {}) {
  run('qemu-img', ['create', '-q', '-f', 'vdi', file, '4M']);
  run('qemu-io', ['-f', 'vdi', '-c', 'write -P 0x3c 0 64k', file]);
  const t = Buffer.alloc(64);
  assert.ok(Buffer.byteLength(text) < 64, `text payload ${text} fits the 64-byte field`);
  t.write(`${text}\n`, 'utf8');
  patchBytes(file, 0, t);
  const c = Buffer.alloc(256);
  assert.ok(Buffer.byteLength(comment) < 256);
  c.write(comment, 'utf8');
  patchBytes(file, 0x54, c);
  // Trailing bytes: Check then has a finding to list.
  if (trailing) fs.appendFileSync(file, Buffer.from(PAYLOADS.join('\n')));
  return file;
}

/** Parse a CSP into {directive: [tokens]}. */
function parseCsp(text) {
  return Object.fromEntries(text.split(';').map((d) => d.trim()).filter(Boolean).map((d) => {
    const [name, ...tokens] = d.split(/\s+/);
    return [name.toLowerCase(), tokens];
  }));
}

/** The rules every policy of ours keeps. */
function assertStrict(csp, where, { wasm }) {
  const p = parseCsp(csp);
  const all = Object.values(p).flat();
  for (const bad of ["'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", '*', 'data:', 'blob:', 'http:', 'https:', 'filesystem:']) {
    assert.ok(!all.includes(bad), `${where}: ${bad} in ${csp}`);
  }
  assert.deepEqual(p['default-src'], ["'self'"], `${where}: default-src`);
  assert.deepEqual(p['script-src'], wasm ? ["'self'", "'wasm-unsafe-eval'"] : ["'self'"], `${where}: script-src`);
  assert.deepEqual(p['object-src'], ["'none'"], `${where}: object-src`);
  assert.deepEqual(p['base-uri'], ["'none'"], `${where}: base-uri`);
  for (const d of ['worker-src', 'style-src', 'img-src', 'connect-src']) {
    assert.ok(!p[d] || p[d].every((t) => t === "'self'" || t === "'none'"), `${where}: ${d} ${p[d]}`);
  }
  // Trusted Types: every script sink takes typed values only, and the one policy that may be
  // created is the worker's (no 'allow-duplicates', no wildcard, no default policy).
  assert.deepEqual(p['require-trusted-types-for'], ["'script'"], `${where}: require-trusted-types-for`);
  assert.deepEqual(p['trusted-types'], ['vdi-worker'], `${where}: trusted-types`);
  return p;
}

/** Files served from www/, without the wasm-bindgen output (generated, not ours). */
function wwwSources() {
  return fs.readdirSync(WWW, { recursive: true })
    .filter((f) => /\.(html|js|mjs)$/.test(f) && !f.split(path.sep).includes('pkg'))
    .map((f) => ({ name: f, text: fs.readFileSync(path.join(WWW, f), 'utf8') }));
}

describe('security: CSP, static scan, script injection through image text and file names', () => {
  let wb;
  let page;
  let tmp;
  const images = [];

  before(async () => {
    tmp = scratch('vdi-e2e-security-');
    PAYLOADS.forEach((p, i) => {
      images.push({ file: payloadImage(tmp.file(NAMES[i]), p, COMMENT, { trailing: i % 2 === 0 }), text: p });
    });
    wb = await openWorkbench();
    page = wb.page;
    // Watch from the very start of a fresh load: CSP violations, added elements, and any
    // sign that a payload ran.
    await wb.context.addInitScript(() => {
      window.__violations = [];
      window.__added = [];
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`);
      });
      new MutationObserver((ms) => {
        for (const m of ms) for (const n of m.addedNodes) if (n.nodeType === 1) window.__added.push(n.tagName);
      }).observe(document, { childList: true, subtree: true });
    });
    await page.reload();
    await page.waitForFunction(() => document.querySelector('#storage-text') !== null);
    // The page's own elements are in; from now on every added element is watched.
    await page.evaluate(() => { window.__added = []; });
    // The worker has a global of its own: watch it too.
    const w = page.workers().find((x) => x.url().endsWith('/worker.js'));
    await w.evaluate(() => {
      self.__violations = [];
      self.addEventListener('securitypolicyviolation', (e) => self.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    await removeSavePicker(page); // exports go to OPFS then a download, under the image's name
  });

  after(async () => {
    await wb?.close();
    tmp?.cleanup();
    stopServer();
  });

  /** Nothing ran, nothing was injected, nothing left the origin. */
  async function assertNothingRan(what) {
    const s = await page.evaluate(() => ({
      pwned: window.__pwned ?? null,
      violations: window.__violations,
      added: [...new Set(window.__added)],
      scripts: [...document.scripts].map((x) => x.getAttribute('src')),
      foreign: [...document.querySelectorAll('img, svg, iframe, object, embed, frame, frameset, base, meta[http-equiv=refresh], link:not([rel=stylesheet]):not([rel=icon]):not([rel=manifest])')].map((x) => x.outerHTML),
      handlers: [...document.querySelectorAll('*')].flatMap((e) => [...e.attributes].filter((a) => /^on/i.test(a.name)).map((a) => `${e.tagName} ${a.name}`)),
      jsLinks: [...document.querySelectorAll('[href], [src], [action], [formaction]')].map((e) => e.getAttribute('href') ?? e.getAttribute('src') ?? e.getAttribute('action') ?? e.getAttribute('formaction')).filter((u) => /^\s*javascript:/i.test(u)),
    }));
    assert.equal(s.pwned, null, `${what}: a payload ran`);
    const w = page.workers().find((x) => x.url().endsWith('/worker.js'));
    assert.deepEqual(await w.evaluate(() => self.__violations), [], `${what}: CSP violations in the worker`);
    assert.deepEqual(s.violations, [], `${what}: CSP violations`);
    assert.deepEqual(s.scripts, ['main.js'], `${what}: scripts in the page`);
    assert.deepEqual(s.foreign, [], `${what}: injected elements`);
    assert.deepEqual(s.handlers, [], `${what}: inline event handlers`);
    assert.deepEqual(s.jsLinks, [], `${what}: javascript: URLs`);
    for (const tag of ['IMG', 'SCRIPT', 'SVG', 'svg', 'IFRAME', 'B', 'OBJECT', 'EMBED']) {
      assert.ok(!s.added.includes(tag), `${what}: a <${tag.toLowerCase()}> was added (added: ${s.added.join(' ')})`);
    }
    assert.deepEqual(wb.dialogs, [], `${what}: dialogs`);
    assert.deepEqual(wb.foreignRequests(), [], `${what}: requests off the origin`);
    // Every same-origin request is for a file the site has (an <img src=x> would ask for /x).
    for (const u of wb.requests.filter((r) => r.startsWith(`${wb.origin}/`))) {
      const p = decodeURIComponent(new URL(u).pathname);
      const file = path.join(WWW, p === '/' ? 'index.html' : p);
      assert.ok(file.startsWith(WWW) && fs.existsSync(file), `${what}: a request for ${u}, which the site does not have`);
    }
    const cspConsole = wb.consoleErrors.filter((m) => /Content Security Policy|Refused to/i.test(m));
    assert.deepEqual(cspConsole, [], `${what}: CSP reports on the console`);
  }

  test('every response carries a strict CSP; the page keeps a strict <meta> one', async () => {
    const paths = ['/', '/index.html', '/main.js', '/worker.js', '/style.css', '/pkg/vdi_wasm.js', '/pkg/vdi_wasm_bg.wasm', '/no-such-file'];
    const seen = new Set();
    for (const p of paths) {
      const r = await fetch(new URL(p, wb.url));
      await r.arrayBuffer();
      const csp = r.headers.get('content-security-policy');
      assert.ok(csp, `${p} (${r.status}) has a Content-Security-Policy header`);
      const d = assertStrict(csp, `header of ${p}`, { wasm: true });
      assert.deepEqual(d['frame-ancestors'], ["'none'"]);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
      seen.add(csp);
    }
    assert.equal(seen.size, 1, 'one policy for every response');
    const html = await (await fetch(wb.url)).text();
    const metas = [...html.matchAll(/<meta\s+http-equiv="Content-Security-Policy"\s+content="([^"]+)"/gi)];
    assert.equal(metas.length, 1, 'index.html has one CSP meta');
    // The page itself compiles no wasm: its meta leaves out 'wasm-unsafe-eval'.
    assertStrict(metas[0][1], 'the <meta> of index.html', { wasm: false });
  });

  test('www/ has no inline scripts, inline handlers, inline styles or HTML sinks', () => {
    const files = wwwSources();
    assert.ok(files.some((f) => f.name === 'index.html') && files.some((f) => f.name === 'main.js'));
    for (const { name, text } of files) {
      if (name.endsWith('.html')) {
        assert.doesNotMatch(text, /<[a-z][^>]*\son[a-z]+\s*=/i, `${name}: an inline event handler`);
        assert.doesNotMatch(text, /<[a-z][^>]*\sstyle\s*=/i, `${name}: an inline style (style-src 'self' blocks it)`);
        assert.doesNotMatch(text, /<style[\s>]/i, `${name}: a <style> element`);
        assert.doesNotMatch(text, /javascript:/i, `${name}: a javascript: URL`);
        for (const m of text.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)) {
          assert.match(m[1], /\ssrc="[^"]+"/, `${name}: a <script> without src`);
          assert.equal(m[2].trim(), '', `${name}: an inline script`);
        }
      } else {
        // Markup sinks: only a constant string may be assigned (e.g. clearing with '').
        for (const m of text.matchAll(/\.(innerHTML|outerHTML)\s*\+?=\s*([^;\n]*)/g)) {
          assert.match(m[2].trim(), /^(['"])[^'"$`]*\1$/, `${name}: ${m[0]} (use textContent or el())`);
        }
        for (const sink of [/\binsertAdjacentHTML\s*\(/, /\bdocument\.write(ln)?\s*\(/, /\bcreateContextualFragment\s*\(/,
          /\bDOMParser\b/, /\beval\s*\(/, /\bnew\s+Function\s*\(/, /\bset(Timeout|Interval)\s*\(\s*['"`]/,
          /\.setAttribute\s*\(\s*['"`]on/i, /\bsrcdoc\b/, /javascript:/i]) {
          assert.doesNotMatch(text, sink, `${name}: ${sink}`);
        }
      }
    }
  });

  for (let i = 0; i < PAYLOADS.length; i++) {
    test(`payload ${i + 1} in the header text and comment, file named ${JSON.stringify(NAMES[i])}`, async () => {
      const { file, text } = images[i];
      const name = path.basename(file);
      await page.evaluate(() => { delete document.documentElement.dataset.mapMs; });
      await page.setInputFiles('#file-input', file);
      await page.waitForFunction(() => document.documentElement.dataset.mapMs || !document.querySelector('#error').hidden);
      assert.equal(await page.$eval('#error', (e) => e.hidden), true, await page.$eval('#error', (e) => e.textContent));

      // Literally, as text: the header text, the comment, the file name.
      const info = vdiJson('info', '--json', file)['format-specific'].data;
      assert.equal(info.text, `${text}\n`);
      assert.equal(info.comment, COMMENT);
      const f = await headerFields(page);
      assert.equal(f.text.raw, shown(`${text}\n`));
      assert.equal(f.comment.raw, COMMENT);
      const cells = await page.$$eval('[data-field=text] td, [data-field=comment] td.raw, #cur-name, #status',
        (els) => els.map((e) => ({ id: e.id || e.className, elements: e.querySelectorAll('*').length - e.querySelectorAll('span').length })));
      for (const c of cells) assert.equal(c.elements, 0, `${c.id} holds only text`);
      assert.equal(await page.$eval('#cur-name', (e) => e.textContent), name);
      assert.equal(await page.$eval('#status', (e) => e.textContent), `Opened ${name}.`);
      await assertNothingRan(`opening ${name}`);
      if (i === 0) await screenshot(page, 'security-injection-header', 'body');

      // Check: findings (trailing bytes made of payloads on every other image) as text.
      await page.click('#check-run');
      await page.waitForFunction(() => !document.querySelector('#check-verdict').hidden);
      const kinds = await page.$$eval('#check-findings li[data-kind]', (li) => li.map((l) => l.dataset.kind));
      assert.deepEqual(kinds, i % 2 === 0 ? ['trailing-bytes'] : []);
      const tags = await page.$$eval('#check-findings *', (els) => [...new Set(els.map((e) => e.tagName))].sort());
      assert.ok(tags.every((t) => ['LI', 'SPAN', 'CODE'].includes(t)), tags.join(' '));
      await assertNothingRan(`checking ${name}`);

      // The block map's tip.
      await page.mouse.move(0, 0);
      await page.evaluate(() => { const t = document.querySelector('#map-tip'); t.hidden = true; delete t.dataset.cell; });
      const { tip } = await hoverBlock(page, 0); // a fresh tip, not the last image's
      assert.equal(tip.state, 'data');
      assert.deepEqual(await page.$$eval('#map-tip *', (els) => [...new Set(els.map((e) => e.tagName))].sort()), ['DD', 'DL', 'DT']);
      await assertNothingRan(`the tip of ${name}`);

      // Export raw: the result line names the file the image's name gives.
      const download = page.waitForEvent('download');
      await page.click('#export-raw');
      await page.waitForFunction(() => !document.querySelector('#export-result').hidden || !document.querySelector('#error').hidden);
      assert.equal(await page.$eval('#error', (e) => e.hidden), true, await page.$eval('#error', (e) => e.textContent));
      const result = await page.$eval('#export-result', (e) => ({ text: e.textContent, elements: e.children.length }));
      const raw = `${name.replace(/\.vdi$/, '')}.raw`;
      assert.ok(result.text.startsWith(`${raw}: 4 MiB`), result.text);
      assert.equal(result.elements, 0);
      const d = await download;
      await d.delete().catch(() => {});
      await page.click('#storage-free');
      await assertNothingRan(`exporting ${name}`);
    });
  }

  test('a file named with markup that is not an image: the error and the status are text', async () => {
    const junk = tmp.file('<img src=x onerror=window.__pwned=11>junk.vdi');
    fs.writeFileSync(junk, Buffer.from(`${PAYLOADS.join('\n')}\n`.repeat(20)));
    await page.setInputFiles('#file-input', junk);
    await page.waitForSelector('#error:not([hidden])');
    const e = await page.$eval('#error', (x) => ({ kind: x.dataset.kind, text: x.querySelector('#error-message').textContent, elements: x.querySelector('#error-message').children.length }));
    assert.equal(e.kind, 'bad-signature');
    assert.equal(e.elements, 0);
    assert.equal(await page.$eval('#status', (x) => x.textContent),
      `Could not open ${path.basename(junk)}; ${path.basename(images.at(-1).file)} is still open.`);
    assert.equal(await page.$eval('#status', (x) => x.children.length), 0);
    await screenshot(page, 'security-injection-error', '#open');
    await assertNothingRan('a markup-named non-image');
  });

  test('the policy is in force: in the page no string eval, no inline script, no data: import, no wasm; in the worker no string eval, no data: import, but wasm', async () => {
    // The tests above found no violation; this shows the listener would have seen one.
    const inPage = await page.evaluate(async () => {
      const out = {};
      const attempt = (f) => { try { f(); return 'allowed'; } catch (e) { return e.name; } };
      // (A string evaluated by the page itself: eval() inside page.evaluate is exempt, since
      // DevTools' Runtime.evaluate allows it whatever the policy.) Trusted Types refuse both
      // strings (a TypeError) before script-src is asked.
      out.evalCall = attempt(() => setTimeout('window.__evaluated = 1', 0));
      const s = document.createElement('script');
      out.inlineCall = attempt(() => {
        s.textContent = 'window.__inline = 1';
        document.body.append(s);
      });
      s.remove();
      await new Promise((r) => setTimeout(r, 100));
      out.inline = window.__inline ?? null;
      out.eval = window.__evaluated ?? null;
      // script-src on its own: a data: import (not a Trusted Types sink) and wasm.
      try { await import('data:text/javascript,window.__dataImport=1'); out.dataImport = 'ran'; } catch (e) { out.dataImport = e.name; }
      // The smallest wasm module: the page may not compile wasm at all (its meta policy).
      try { await WebAssembly.compile(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])); out.wasm = 'compiled'; } catch (e) { out.wasm = e.name; }
      await new Promise((r) => setTimeout(r, 100));
      out.violations = window.__violations.map((v) => v.split(' ')[0]);
      return out;
    });
    assert.equal(inPage.evalCall, 'TypeError');
    assert.equal(inPage.inlineCall, 'TypeError');
    assert.equal(inPage.eval, null);
    assert.equal(inPage.inline, null);
    assert.equal(inPage.dataImport, 'TypeError');
    assert.equal(inPage.wasm, 'CompileError');
    assert.ok(inPage.violations.some((v) => v.startsWith('script-src')), `violations seen: ${inPage.violations}`);
    assert.ok(inPage.violations.includes('require-trusted-types-for'), `violations seen: ${inPage.violations}`);

    // The worker runs under the served header (a <meta> does not reach it).
    const w = page.workers().find((x) => x.url().endsWith('/worker.js'));
    assert.ok(w, 'the worker is running');
    const inWorker = await w.evaluate(async () => {
      const out = {};
      try { setTimeout('self.__evaluated = 1', 0); out.evalCall = 'allowed'; } catch (e) { out.evalCall = e.name; }
      await new Promise((r) => setTimeout(r, 100));
      out.eval = self.__evaluated ?? null;
      try { await WebAssembly.compile(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])); out.wasm = 'compiled'; } catch (e) { out.wasm = e.name; }
      try { await import('data:text/javascript,self.__dataImport=1'); out.dataImport = 'ran'; } catch (e) { out.dataImport = e.name; }
      return out;
    });
    assert.deepEqual(inWorker, { evalCall: 'TypeError', eval: null, wasm: 'compiled', dataImport: 'TypeError' });
  });

  test('Trusted Types are enforced: string sinks throw, no other policy can be made, the worker starts through its own', async () => {
    // The images above opened, checked and exported under this policy with no violation:
    // the workbench needs no string sink. Here a string is handed to each kind of sink.
    const inPage = await page.evaluate(() => {
      const out = {};
      const attempt = (name, f) => {
        try { f(); out[name] = 'allowed'; } catch (e) { out[name] = `${e.name}: ${e.message}`; }
      };
      const div = document.createElement('div');
      attempt('innerHTML', () => { div.innerHTML = '<img src=x onerror="window.__pwned=20">'; });
      attempt('insertAdjacentHTML', () => document.body.insertAdjacentHTML('beforeend', '<b id="tt-probe">x</b>'));
      attempt('scriptText', () => { document.createElement('script').textContent = 'window.__pwned=21'; });
      attempt('workerString', () => new Worker('worker.js', { type: 'module' }).terminate());
      attempt('workerUrl', () => new Worker(new URL('worker.js', location.href), { type: 'module' }).terminate());
      // Policies: another name is refused by trusted-types, and the worker's name is taken.
      attempt('otherPolicy', () => trustedTypes.createPolicy('evil', { createHTML: (x) => x }));
      attempt('workerPolicyAgain', () => trustedTypes.createPolicy('vdi-worker', { createScriptURL: (x) => x }));
      out.children = div.childNodes.length;
      out.probe = document.querySelector('#tt-probe') !== null;
      return out;
    });
    for (const [sink, type] of [['innerHTML', 'TrustedHTML'], ['insertAdjacentHTML', 'TrustedHTML'],
      ['scriptText', 'TrustedScript'], ['workerString', 'TrustedScriptURL'], ['workerUrl', 'TrustedScriptURL']]) {
      assert.match(inPage[sink], new RegExp(`^TypeError: .*${type}`), `${sink}: ${inPage[sink]}`);
    }
    assert.match(inPage.otherPolicy, /^TypeError: .*evil/, inPage.otherPolicy);
    assert.match(inPage.workerPolicyAgain, /^TypeError: .*vdi-worker/, inPage.workerPolicyAgain);
    assert.equal(inPage.children, 0);
    assert.equal(inPage.probe, false);
    assert.equal(await page.evaluate(() => window.__pwned ?? null), null);
    const violations = await page.evaluate(() => window.__violations.map((v) => v.split(' ')[0]));
    assert.ok(violations.includes('require-trusted-types-for'), `violations seen: ${violations}`);
    assert.ok(violations.includes('trusted-types'), `violations seen: ${violations}`);

    // The worker runs under the served header, which enforces the same.
    const w = page.workers().find((x) => x.url().endsWith('/worker.js'));
    assert.ok(w, 'the worker is running');
    const inWorker = await w.evaluate(() => {
      try { trustedTypes.createPolicy('evil', { createScriptURL: (x) => x }); return 'created'; } catch (e) { return e.name; }
    });
    assert.equal(inWorker, 'TypeError');

    // The workbench still starts its worker (through the vdi-worker policy): a restart makes a
    // fresh one, which answers.
    const stats = await page.evaluate(async () => {
      const { bridge } = await import('./core/bridge.js');
      await bridge.restart();
      return bridge.ops.stats();
    });
    assert.ok(stats && typeof stats === 'object', `stats: ${JSON.stringify(stats)}`);
    assert.ok(page.workers().some((x) => x.url().endsWith('/worker.js')), 'a worker runs after the restart');
  });
});
