// The workbench's service worker: the offline copy of a static build (`cargo xtask dist`).
// Only a dist build registers it (www/panels/app.js); the development server never does.
//
// `cargo xtask dist` replaces the line below with {version, csp, files: {path: integrity}}:
// every file of the site with its SHA-256, and the policy of xtask/src/web.rs. Install
// fetches exactly those bytes (past the HTTP cache; a file whose bytes differ fails the
// install, so a half-copied deploy never becomes a cached version) into a cache named after
// the site's root and the version. Then every request for one of the site's files is answered from that cache,
// network or not (one version, never a mix), with the development server's security
// headers.
//
// A new build is a new sw.js (browsers compare it byte for byte): it installs beside the
// running one and waits; the page offers "New version available — Reload", which asks it to
// take over ('skip-waiting') and reloads. Activating removes the older versions' caches.
// Everything else (other paths, other origins, other methods) goes to the network untouched.
// Unstamped (BUILD null: www/ as `cargo xtask serve` serves it), this script undoes an
// earlier dist build's service worker at the same address (say, a dist build tried on the
// port the development server now uses), which would otherwise keep serving stale files.

const BUILD = null;

/** The site's root: the scope this script serves (any sub-path of any host). */
const ROOT = new URL('./', self.location.href).href;
/** This site's caches: one origin may host several copies, at different sub-paths. */
const PREFIX = `vdi-workbench ${ROOT} `;
const CACHE = BUILD ? PREFIX + BUILD.version : null;
/** Absolute URL of each file of the build, to its integrity. */
const FILES = new Map(BUILD ? Object.entries(BUILD.files).map(([p, sri]) => [new URL(p, ROOT).href, sri]) : []);

self.addEventListener('install', (event) => {
  // This file unstamped (the development server's, or a tree copied without `dist`) removes
  // what a dist build left at this address: it takes over at once, then unregisters.
  if (!BUILD) { self.skipWaiting(); return; }
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    try {
      await Promise.all([...FILES].map(async ([url, integrity]) => {
        const res = await fetch(url, { cache: 'reload', integrity });
        if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
        await cache.put(url, res);
      }));
    } catch (e) {
      await caches.delete(CACHE); // nothing partial is kept
      throw e;
    }
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith(PREFIX) && key !== CACHE) await caches.delete(key);
    }
    if (!BUILD) {
      // No offline copy here any more: the open pages reload from the host.
      await self.registration.unregister();
      for (const client of await self.clients.matchAll({ type: 'window' })) client.navigate(client.url);
      return;
    }
    // The first visit's page is served by this version from now on too (a restarted
    // engine worker then loads offline as well).
    await self.clients.claim();
  })());
});

self.addEventListener('message', (event) => {
  if (event.data?.type === 'skip-waiting') self.skipWaiting();
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET' || !CACHE) return;
  const url = new URL(req.url);
  let key = url.origin + url.pathname; // a query or a fragment names the same file
  if (req.mode === 'navigate' && key === ROOT) key = `${ROOT}index.html`;
  if (!FILES.has(key)) return;
  event.respondWith((async () => {
    const hit = await caches.match(key, { cacheName: CACHE });
    return hit ? withHeaders(hit) : fetch(req);
  })());
});

/**
 * The cached file with the headers the development server sends (a static host sends
 * none): the CSP reaches what a `<meta>` cannot — the engine's worker, which runs under its
 * script's response policy, and frame-ancestors — and content types are not sniffed.
 */
function withHeaders(res) {
  const headers = new Headers(res.headers);
  headers.set('Content-Security-Policy', BUILD.csp);
  headers.set('X-Content-Type-Options', 'nosniff');
  headers.set('Referrer-Policy', 'no-referrer');
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}
