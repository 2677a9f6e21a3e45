// DOM helpers shared by the panels: element building (text only, never HTML), the status
// line, the error box, progress rows, summaries.

export const $ = (sel) => document.querySelector(sel);

/** Make an element with text (never HTML). `text` sets textContent; other keys are attributes. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) {
    if (c == null) continue;
    e.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return e;
}

export function status(text) {
  $('#status').textContent = text;
}

/** Show `e` ({kind, message}) in the error box, or hide the box (null). */
export function showError(e) {
  const box = $('#error');
  if (!e) { box.hidden = true; return; }
  $('#error-message').textContent = e.message ?? String(e);
  $('#error-kind').textContent = e.kind ? `(${e.kind})` : '';
  box.dataset.kind = e.kind ?? '';
  box.hidden = false;
}

/** Resolves after the browser has painted what was just changed. */
export function afterPaint() {
  return new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
}

/** Busy: the page shows it, and the controls marked data-idle wait. */
export function showBusy(busy) {
  document.body.classList.toggle('busy', busy);
  for (const b of document.querySelectorAll('[data-idle]')) b.disabled = busy;
}

/** One figure of a summary: <div class=stat><dt>label</dt><dd data-k>value</dd></div>. */
export function stat([k, label, v]) {
  const text = String(v);
  return el('div', { class: text.length > 24 ? 'stat wide' : 'stat' }, el('dt', { text: label }), el('dd', { 'data-k': k, text }));
}

/** A legend key: a colour swatch (an [r, g, b] or a CSS class) and its label. */
export function swatch(colour, label, k) {
  const sw = el('span', { class: Array.isArray(colour) ? 'sw' : `sw ${colour}`, 'aria-hidden': 'true' });
  if (Array.isArray(colour)) sw.style.background = `rgb(${colour.join(' ')})`;
  return el('span', { class: 'key', 'data-k': k }, sw, label);
}

/** A row of <dt>/<dd> pairs: [[k, label, value], ...] as elements for a <dl>. */
export function pairs(rows) {
  return rows.flatMap(([k, label, v]) => [el('dt', { text: label }), el('dd', { 'data-k': k, text: String(v) })]);
}
