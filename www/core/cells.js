// Block maps drawn as square cells on a canvas: the colours, the planner that picks the
// cell size and how many blocks a cell holds, and the painter. Used by the block map and
// the chain maps.

import { MAX_CELLS } from './limits.js';

/** Block states. FREE follows the theme (see freeColour). */
export const COLORS = {
  data: [37, 99, 235],
  zero: [20, 184, 166],
  free: [226, 232, 240],
  unreadable: [220, 38, 38],
};

/** Layer colours of a chain, base first (distinct from the zero/free colours). */
export const LAYER_COLORS = [
  [37, 99, 235], [234, 88, 12], [147, 51, 234], [22, 163, 74], [219, 39, 119],
  [202, 138, 4], [14, 116, 144], [120, 53, 15], [79, 70, 229], [190, 18, 60],
];

export function layerColor(i) {
  return LAYER_COLORS[i % LAYER_COLORS.length];
}

/** The colour of never-written blocks in the current theme (CSS --cell-free: "r g b"). */
export function freeColour() {
  const v = getComputedStyle(document.documentElement).getPropertyValue('--cell-free').trim().split(/\s+/).map(Number);
  return v.length === 3 && v.every(Number.isFinite) ? v : COLORS.free;
}

const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

/** A colour of the viridis ramp, t in 0..1. */
export function ramp(t) {
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  return RAMP[i].map((c, k) => Math.round(c + (RAMP[i + 1][k] - c) * f));
}

/** Blend the colours of `parts` ([rgb, count]) of a cell of `n` blocks; a part present at all
 * gets at least `floor` of the weight, so one odd block in a large cell stays visible. */
export function mix(parts, n, floor) {
  const w = parts.map(([, c]) => (c > 0 ? Math.max(c / n, floor) : 0));
  const sum = w.reduce((a, b) => a + b, 0) || 1;
  const out = [0, 0, 0];
  parts.forEach(([col], k) => { if (w[k]) for (let j = 0; j < 3; j++) out[j] += (col[j] * w[k]) / sum; });
  return out;
}

/**
 * Lay `blocks` blocks out as square cells in a canvas `cssW` CSS pixels wide and at most
 * `maxCssH` high: the largest cell size (from `sizesCss`, then 1 device pixel) that fits,
 * folding several blocks into one cell (`per`) when even 1-pixel cells would not fit or
 * there would be more cells than the engine makes (MAX_CELLS). Sizes are in device pixels.
 */
export function planCells(blocks, cssW, maxCssH, sizesCss) {
  const dpr = window.devicePixelRatio || 1;
  const W = Math.floor(cssW * dpr);
  const maxH = Math.floor(maxCssH * dpr);
  const sizes = sizesCss.map((s) => Math.round(s * dpr)).concat([1]);
  const fit = (n) => {
    for (const cell of sizes) {
      const cols = Math.floor(W / cell);
      const rows = Math.ceil(n / cols);
      if (rows * cell <= maxH) return { cell, cols, rows };
    }
    return null;
  };
  let per = 1;
  let lay = blocks <= MAX_CELLS ? fit(blocks) : null;
  if (!lay) {
    per = Math.max(Math.ceil(blocks / (W * maxH)), Math.ceil(blocks / MAX_CELLS), 1);
    lay = fit(Math.ceil(blocks / per)) ?? { cell: 1, cols: W, rows: Math.ceil(Math.ceil(blocks / per) / W) };
  }
  return { per, dpr, cssW, ...lay };
}

/**
 * Size `canvas` for `plan` ({cell, cols, rows, dpr}) and paint `cells` square cells, each
 * `per` blocks, cell `i` in `colorOf(i)` ([r, g, b]), `gap` device pixels apart. Returns the
 * canvas's 2D context.
 */
export function paintCells(canvas, plan, cells, per, gap, colorOf) {
  const { cell, cols, rows, dpr } = plan;
  const W = cols * cell;
  const H = Math.max(1, rows * cell);
  canvas.width = W;
  canvas.height = H;
  canvas.style.width = `${W / dpr}px`;
  canvas.style.height = `${H / dpr}px`;
  canvas.dataset.cols = cols;
  canvas.dataset.cell = String(cell / dpr);
  canvas.dataset.per = per;
  canvas.dataset.cells = cells;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(W, H);
  const px = img.data;
  const inner = cell - gap;
  for (let i = 0; i < cells; i++) {
    const [r, g, b] = colorOf(i);
    const x0 = (i % cols) * cell;
    const y0 = Math.floor(i / cols) * cell;
    for (let y = y0; y < y0 + inner; y++) {
      let o = (y * W + x0) * 4;
      for (let x = 0; x < inner; x++, o += 4) {
        px[o] = r; px[o + 1] = g; px[o + 2] = b; px[o + 3] = 255;
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  return ctx;
}

/** The width (CSS pixels) a map in the views can use: the content box of the view shown
 * (every view has the same width), so a map can be planned while its own view is hidden. */
export function viewContentWidth(fallback = 600) {
  const view = document.querySelector('.view:not([hidden])');
  if (!view) return fallback;
  const cs = getComputedStyle(view);
  const w = view.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  return w > 0 ? w : fallback;
}
