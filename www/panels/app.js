// The app around the views: which mode the page runs in (cross-origin isolated or not; the
// offline copy), the service worker of a static build (`cargo xtask dist`, www/sw.js), and
// "New version available — Reload" when a newer build is waiting.
//
// The development server (`cargo xtask serve`) serves www/ as it is: its index.html says
// `vdi-build` "dev" and no service worker is registered there (what is served is always
// what is on disk). A dist build stamps its version into that meta.

import { $ } from '../core/dom.js';
import { scriptURL, SW_URL } from '../core/trusted.js';

/** How often an open page asks the host for a newer build (besides each load). */
const UPDATE_EVERY_MS = 60 * 60 * 1000;

const root = document.documentElement;

function setOffline(state, text) {
  root.dataset.offline = state;
  $('#app-offline').textContent = text;
}

/** Say whether the page is cross-origin isolated, and what that changes. */
function showIsolation() {
  const isolated = globalThis.crossOriginIsolated === true;
  root.dataset.isolated = isolated ? 'yes' : 'no';
  $('#app-isolation').textContent = isolated
    ? 'Cross-origin isolated: Cancel stops the engine between blocks.'
    : 'Not cross-origin isolated (the host sends no COOP/COEP headers): Cancel stops the engine\u2019s worker and reopens the image.';
}

/** This tab asked the waiting version to take over (it reloads when it has). */
let asked = false;

/** Offer the waiting version; Reload hands over to it, then reloads. */
function offerUpdate(reg) {
  root.dataset.update = 'available';
  $('#update').hidden = false;
  $('#update-reload').onclick = () => {
    $('#update-reload').disabled = true;
    asked = true;
    if (reg.waiting) reg.waiting.postMessage({ type: 'skip-waiting' }); // then 'controllerchange'
    else location.reload();
  };
}

/** Another tab switched to the new version: the files now served are its, and this tab
 * reloads when the user says so (it may hold work). */
function offerReload() {
  root.dataset.update = 'active';
  $('#update-text').textContent = 'A new version of the workbench is now in use (another tab switched to it).';
  $('#update').hidden = false;
  $('#update-reload').disabled = false;
  $('#update-reload').onclick = () => location.reload();
}

async function registerWorker(version) {
  const sw = navigator.serviceWorker;
  if (!sw || !globalThis.isSecureContext) {
    setOffline('unsupported', 'No offline copy: this browser offers no service workers here (they need HTTPS or localhost).');
    return;
  }
  // The first install taking this page over changes nothing: it is this page's version.
  const wasControlled = !!sw.controller;
  sw.addEventListener('controllerchange', () => {
    if (asked) location.reload();
    else if (wasControlled) offerReload();
  });
  setOffline('installing', `Version ${version}: saving an offline copy\u2026`);
  let reg;
  try {
    reg = await sw.register(scriptURL(SW_URL), { updateViaCache: 'none' });
  } catch (e) {
    setOffline('failed', `Version ${version}: no offline copy (${e?.message ?? e}).`);
    return;
  }
  const watch = (w) => {
    if (!w) return;
    const check = () => {
      if (w.state === 'installed' && sw.controller) offerUpdate(reg);
      if (w.state === 'redundant' && !reg.active) setOffline('failed', `Version ${version}: the offline copy could not be saved (reload to try again).`);
    };
    w.addEventListener('statechange', check);
    check();
  };
  if (reg.waiting && sw.controller) offerUpdate(reg);
  watch(reg.installing);
  reg.addEventListener('updatefound', () => watch(reg.installing));
  sw.ready.then(() => setOffline('ready', `Version ${version}: works offline (saved in this browser).`));
  const check = () => reg.update().catch(() => { /* offline: the next check will do */ });
  check();
  setInterval(check, UPDATE_EVERY_MS);
}

export function initApp() {
  showIsolation();
  const version = document.querySelector('meta[name="vdi-build"]')?.content ?? 'dev';
  root.dataset.build = version;
  if (version === 'dev') {
    setOffline('dev', 'Development server: no offline copy (a build of cargo xtask dist has one).');
    return;
  }
  registerWorker(version);
}
