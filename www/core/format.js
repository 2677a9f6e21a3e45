// Formatting numbers and text for the page (no DOM).

export const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

/** Bytes with binary units: "8 GiB", "1.5 MiB", "512 B". */
export function human(n) {
  let v = Number(n);
  if (!Number.isFinite(v)) return String(n);
  let u = 0;
  while (Math.abs(v) >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u += 1;
  }
  if (u === 0) return `${v} B`;
  const s = v.toFixed(v >= 100 ? 1 : v >= 10 ? 2 : 3).replace(/\.?0+$/, '');
  return `${s} ${UNITS[u]}`;
}

export function hex(n, width = 0) {
  return `0x${BigInt(n).toString(16).padStart(width, '0')}`;
}

export function dec(n) {
  return typeof n === 'bigint' ? n.toString() : String(n);
}

/** A string with control characters (and backslashes) made visible, as C escapes. */
export function esc(s) {
  return String(s).replace(/[\\\u0000-\u001f\u007f]/g, (c) => {
    switch (c) {
      case '\\': return '\\\\';
      case '\n': return '\\n';
      case '\r': return '\\r';
      case '\t': return '\\t';
      default: return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
    }
  });
}

export function pct(part, whole) {
  if (!whole) return '0 %';
  const p = (100 * Number(part)) / Number(whole);
  // Never round 99.97 up to "100.0" (or 0.004 down to "0.00").
  const digits = (p > 99 && p < 100) || p < 10 ? 2 : 1;
  let s = p.toFixed(digits);
  if (Number(s) === 100 && p < 100) s = '99.99';
  if (Number(s) === 0 && p > 0) s = `<${(0.01).toFixed(2)}`;
  return `${p === 0 ? '0' : s} %`;
}

export function duration(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

export function rate(bytes, ms) {
  if (ms <= 0) return '';
  return `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s`;
}

export function plural(n, word) {
  return `${n} ${word}${Number(n) === 1 ? '' : 's'}`;
}

/** Parse "512M", "20G", "1.5T", "4096" into bytes (binary units). */
export function parseSize(text) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?b)?\s*$/i.exec(text);
  if (!m) return { error: `"${text}" is not a size: use a number of bytes or a unit such as 512M, 20G, 1.5T` };
  const shift = { '': 0, k: 10, m: 20, g: 30, t: 40, p: 50, e: 60 }[m[2].toLowerCase()];
  const [whole, frac = ''] = m[1].split('.');
  const num = BigInt(whole + frac) * (1n << BigInt(shift));
  const den = 10n ** BigInt(frac.length);
  if (num % den !== 0n) return { error: `${text} is not a whole number of bytes` };
  const bytes = num / den;
  if (bytes === 0n) return { error: 'the size must be larger than 0' };
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) return { error: `${text} is too large` };
  return { bytes: Number(bytes) };
}

/** `n` bytes in the largest binary unit that divides it exactly ("128M", "1536K", "1000"). */
export function exactSize(n) {
  const units = ['', 'K', 'M', 'G', 'T', 'P'];
  let u = 0;
  while (u < units.length - 1 && n > 0 && n % 1024 === 0) { n /= 1024; u += 1; }
  return `${n}${units[u]}`;
}

/** Curly quotes around a name from a file or an image. */
export const quoted = (s) => `\u201c${s}\u201d`;

/** The null UUID. */
export const NIL = '00000000-0000-0000-0000-000000000000';
