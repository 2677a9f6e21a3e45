// The views: a tablist of links (#overview, #header, ...) and one panel per view. The URL
// hash names the view shown, so back and forward move between views and a view can be
// linked. The tabs follow the ARIA tabs pattern: one tab stop, arrow keys move between tabs,
// Enter or Space shows one.

import { emit } from './state.js';

let tabs = [];
let shown = null;

const viewOf = (hash) => String(hash).replace(/^#/, '');

function tabFor(view) {
  return tabs.find((t) => t.dataset.view === view) ?? null;
}

/** Tabs that can be shown now (a view can be unavailable, e.g. Chain with no chain open). */
function usable() {
  return tabs.filter((t) => !t.hidden && t.getAttribute('aria-disabled') !== 'true');
}

function show(view) {
  const tab = tabFor(view);
  if (!tab || tab.hidden || tab.getAttribute('aria-disabled') === 'true') return false;
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute('aria-selected', on ? 'true' : 'false');
    t.tabIndex = on ? 0 : -1;
    const panel = document.getElementById(t.getAttribute('aria-controls'));
    if (panel) panel.hidden = !on;
  }
  keepInView(tab);
  if (shown !== view) {
    shown = view;
    document.documentElement.dataset.view = view;
    emit('view', { view });
  }
  return true;
}

/** Scroll the tablist sideways (never the page) so `tab` shows. */
function keepInView(tab) {
  const list = tab.parentElement;
  const lr = list.getBoundingClientRect();
  const tr = tab.getBoundingClientRect();
  if (tr.left < lr.left) list.scrollLeft -= lr.left - tr.left + 8;
  else if (tr.right > lr.right) list.scrollLeft += tr.right - lr.right + 8;
}

/** The view shown. */
export function currentView() {
  return shown;
}

/** Show `view` (a new history entry, unless it is shown already). */
export function go(view) {
  if (shown === view) return;
  if (tabFor(view)) location.hash = `#${view}`;
}

/** Make the tab of `view` available or not; when it goes while shown, show the first view. */
export function setAvailable(view, on) {
  const tab = tabFor(view);
  if (!tab) return;
  tab.hidden = !on;
  if (!on && shown === view) {
    history.replaceState(null, '', `#${tabs[0].dataset.view}`);
    show(tabs[0].dataset.view);
  }
}

function onKey(ev) {
  const list = usable();
  const i = list.indexOf(document.activeElement);
  if (i < 0) return;
  const next = { ArrowRight: i + 1, ArrowDown: i + 1, ArrowLeft: i - 1, ArrowUp: i - 1, Home: 0, End: list.length - 1 }[ev.key];
  if (next !== undefined) {
    ev.preventDefault();
    list[(next + list.length) % list.length].focus();
  } else if (ev.key === ' ') {
    ev.preventDefault();
    document.activeElement.click();
  }
}

/** Wire the tablist `listSel`: its [role=tab] links carry data-view and aria-controls. */
export function initRouter(listSel) {
  const list = document.querySelector(listSel);
  tabs = [...list.querySelectorAll('[role=tab]')];
  list.addEventListener('keydown', onKey);
  // A tab's link changes the hash; showing follows the hash, whoever changed it.
  window.addEventListener('hashchange', () => {
    if (show(viewOf(location.hash))) {
      const top = list.getBoundingClientRect().top;
      if (top < 0) list.scrollIntoView({ block: 'start' });
    }
  });
  if (!show(viewOf(location.hash))) show(tabs[0].dataset.view);
}
