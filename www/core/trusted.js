// The page's one Trusted Types policy. Where the browser enforces Trusted Types (the CSP's
// `require-trusted-types-for 'script'`), a worker's script URL must be a TrustedScriptURL:
// this policy, the only one the CSP allows (`trusted-types vdi-worker`), makes one for the
// workbench's own worker scripts — the engine's worker and the offline copy's service
// worker, both same-origin files of the site — and refuses every other URL. Created once,
// when this module loads (the name cannot be taken twice); null where the browser has no
// Trusted Types.

/** The engine's worker script: the one URL the page ever starts a worker from. */
export const WORKER_URL = new URL('../worker.js', import.meta.url).href;
/** The service worker script (registered by a dist build only, panels/app.js). */
export const SW_URL = new URL('../sw.js', import.meta.url).href;

const ALLOWED = new Set([WORKER_URL, SW_URL]);

const policy = globalThis.trustedTypes?.createPolicy('vdi-worker', {
  createScriptURL(url) {
    if (!ALLOWED.has(url)) throw new TypeError(`vdi-worker: ${url} is not one of the workbench's worker scripts`);
    return url;
  },
}) ?? null;

/** `url` (WORKER_URL or SW_URL) as what a worker or service worker constructor takes. */
export function scriptURL(url) {
  return policy ? policy.createScriptURL(url) : url;
}
