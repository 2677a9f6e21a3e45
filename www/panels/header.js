// The Header view: every field of the header, its raw value and what it means, with the
// odd ones pointed out; and the notes the engine makes about the image.

import { $, el } from '../core/dom.js';
import { dec, esc, hex, human, NIL, pct } from '../core/format.js';
import { on } from '../core/state.js';

const KNOWN_TEXTS = {
  '<<< Oracle VM VirtualBox Disk Image >>>\n': 'written by Oracle VM VirtualBox',
  '<<< Sun VirtualBox Disk Image >>>\n': 'written by Sun VirtualBox',
  '<<< Sun xVM VirtualBox Disk Image >>>\n': 'written by Sun xVM VirtualBox',
  '<<< innotek VirtualBox Disk Image >>>\n': 'written by innotek VirtualBox',
  '<<< QEMU VM Virtual Disk Image >>>\n': 'written by QEMU',
};

function geometryText(g) {
  if (g == null) return 'none';
  return `cylinders ${g.cylinders}, heads ${g.heads}, sectors ${g.sectors}, sector size ${g['sector-size']}`;
}

function geometryMeaning(g, what) {
  if (g == null) return 'not stored: header size 0x180 has no LCHS field';
  if (!g.cylinders && !g.heads && !g.sectors) return `${what} unset (VirtualBox fills it in when a VM first uses the disk)`;
  const sectors = BigInt(g.cylinders) * BigInt(g.heads) * BigInt(g.sectors);
  return `${what}: ${sectors} sectors = ${human(sectors * BigInt(g['sector-size'] || 512))}`;
}

function bytesMeaning(n) {
  return `${human(n)} (${hex(n)})`;
}

/** Rows of the header table: [key, label, raw value, meaning, odd-note]. */
function headerRows(r) {
  const info = r.info;
  const d = info['format-specific'].data;
  const f = r.file;
  const bs = Number(d['block-size']);
  const rows = [];
  const add = (key, label, raw, meaning, note) => rows.push({ key, label, raw, meaning, note });

  const knownText = KNOWN_TEXTS[d.text];
  add('text', 'Text', esc(d.text), knownText ?? 'informational only (never used to detect the format)',
    knownText ? null : 'unusual text: harmless, the format is detected by its signature');
  const v0 = d['version-raw'] === 2;
  add('version', 'Version', d.version, v0 ? 'legacy v0.2 header' : `major ${d['version-raw'] >> 16}, minor ${d['version-raw'] & 0xffff}`,
    v0 ? 'legacy v0.2 header: it has no offsets or LCHS; opened read-only' : (d.version !== '1.1' ? 'version 1.1 is expected' : null));
  add('version-raw', 'Version (raw)', dec(d['version-raw']), hex(d['version-raw'], 8), null);
  const hs = Number(d['header-size']);
  add('header-size', 'Header size', dec(hs),
    v0 ? 'v0.2 headers have no size field' : hs === 0x190 ? '0x190: v1.1+ with LCHS geometry (as VirtualBox writes)'
      : hs === 0x180 ? '0x180: v1.1 without LCHS geometry (as QEMU writes)' : hex(hs),
    !v0 && hs !== 0x180 && hs !== 0x190 ? `unusual header size ${hex(hs)} (0x180 or 0x190 expected)` : null);
  const typeMeaning = { dynamic: 'dynamic: blocks are allocated as they are written', fixed: 'fixed: every block allocated at creation',
    undo: 'undo (legacy): read as dynamic', diff: 'differencing: unallocated blocks come from the parent image' };
  add('image-type', 'Image type', d['image-type'], typeMeaning[d['image-type']] ?? 'unknown',
    d['image-type'] === 'undo' ? 'legacy undo image' : d['image-type'] === 'diff' ? 'differencing image: needs its parent for unallocated blocks' : null);
  add('image-type-raw', 'Image type (raw)', dec(d['image-type-raw']), '1 normal, 2 fixed, 3 undo, 4 diff', null);
  const flags = Number(d['image-flags']);
  const flagNames = [];
  if (flags & 1) flagNames.push('zero-expand (bit 0)');
  if (flags & ~1) flagNames.push(`unknown bits ${hex(flags & ~1)}`);
  add('image-flags', 'Flags', dec(flags), `${hex(flags, 8)}: ${flagNames.length ? flagNames.join(', ') : 'none'}`,
    flags & ~1 ? 'unknown flag bits are set' : null);
  add('comment', 'Comment', esc(d.comment), d.comment === '' ? '(no comment)' : `${new TextEncoder().encode(d.comment).length} bytes of text`, null);
  add('offset-bmap', 'Block map offset', dec(d['offset-bmap']), bytesMeaning(d['offset-bmap']), null);
  add('offset-data', 'Data offset', dec(d['offset-data']), bytesMeaning(d['offset-data']), null);
  add('legacy-geometry', 'Legacy geometry', geometryText(d['legacy-geometry']), geometryMeaning(d['legacy-geometry'], 'physical CHS'),
    d['legacy-geometry']['sector-size'] !== 512 ? 'sector size should be 512' : null);
  add('dummy', 'Dummy', dec(d.dummy), 'unused (old BIOS translation mode)', null);
  const disk = d['disk-size'];
  const odd = BigInt(disk) % 512n !== 0n;
  add('disk-size', 'Disk size', dec(disk), `${bytesMeaning(disk)}`,
    odd ? `not a multiple of 512: read as ${dec(info['virtual-size'])} bytes (QEMU rounds up; VirtualBox rounds down to ${dec(BigInt(disk) / 512n * 512n)})` : null);
  add('virtual-size', 'Virtual size', dec(info['virtual-size']), `${bytesMeaning(info['virtual-size'])}: the disk a VM sees`, null);
  add('block-size', 'Block size', dec(bs), bytesMeaning(bs),
    bs !== 1 << 20 ? `${human(bs)} blocks: QEMU opens only 1 MiB blocks${bs < 128 << 10 ? '; VirtualBox needs at least 128 KiB' : ''}` : null);
  add('cluster-size', 'Cluster size', dec(info['cluster-size']), 'what qemu-img calls the block size', null);
  add('block-extra', 'Block extra', dec(d['block-extra']), Number(d['block-extra']) ? `${human(d['block-extra'])} prefix before each block's data` : 'no per-block prefix',
    Number(d['block-extra']) ? 'blocks carry an extra prefix (rare)' : null);
  const bii = BigInt(d['blocks-in-image']);
  const capacity = bii * BigInt(bs);
  const covering = BigInt(f['blocks-covering-disk']);
  add('blocks-in-image', 'Blocks in image', dec(d['blocks-in-image']), `× ${human(bs)} = ${human(capacity)} of capacity`,
    bii > covering ? `${bii - covering} block(s) lie past the end of the disk` : null);
  const ba = BigInt(d['blocks-allocated']);
  const stride = BigInt(f['block-stride']);
  const needed = BigInt(d['offset-data']) + ba * stride;
  add('blocks-allocated', 'Blocks allocated', dec(d['blocks-allocated']), `${pct(ba, bii)} of the blocks: ${human(ba * BigInt(bs))} of data in the file`,
    BigInt(f.length) < needed ? `the file (${dec(f.length)} bytes) is shorter than its ${ba} allocated blocks need (${needed}): run Check` : null);
  const uuidRow = (key, label, meaning, nilMeaning, nilNote) => {
    const u = d[key];
    add(key, label, u, u === NIL ? nilMeaning : meaning, u === NIL ? nilNote : null);
  };
  uuidRow('uuid', 'Image UUID', 'identity in VirtualBox\'s media registry', 'null', 'null image UUID: VirtualBox refuses to register it');
  uuidRow('modify-uuid', 'Modify UUID', 'renewed by VirtualBox when the image is first written in a session', 'null', null);
  uuidRow('parent-uuid', 'Parent UUID', 'the parent image this differencing image is based on', 'none: not a differencing image', null);
  uuidRow('parent-modify-uuid', 'Parent modify UUID', 'the parent\'s modify UUID when this image was made', 'none', null);
  add('lchs-geometry', 'LCHS geometry', geometryText(d['lchs-geometry']), geometryMeaning(d['lchs-geometry'], 'logical CHS'), null);
  add('file-length', 'File length', dec(f.length), `${bytesMeaning(f.length)}: ${pct(f.length, info['virtual-size'])} of the virtual size`, null);
  return rows;
}

function renderHeader(r) {
  const tbody = $('#header-table tbody');
  const rows = headerRows(r).map((row) => el('tr', { 'data-field': row.key, class: row.note ? 'odd' : null },
    el('th', { scope: 'row', text: row.label }),
    el('td', { class: 'raw', text: row.raw }),
    el('td', { class: 'meaning' },
      el('span', { class: 'human', text: row.meaning }),
      row.note ? el('span', { class: 'note', text: row.note }) : null)));
  tbody.replaceChildren(...rows);
  const notes = [...(r.info.notes ?? [])];
  if (r.file['layout-error']) notes.unshift(`broken layout (opened for inspection only): ${r.file['layout-error']}`);
  if (BigInt(r.file['readable-entries']) < BigInt(r.info['format-specific'].data['blocks-in-image'])) {
    notes.unshift(`the file ends inside the block map (the block map needs ${dec(r.file['map-end'])} bytes, the file has ${dec(r.file.length)}): only ${r.file['readable-entries']} of ${r.info['format-specific'].data['blocks-in-image']} entries can be read`);
  }
  $('#notes').replaceChildren(...notes.map((n) => el('li', { text: n })));
}

export function initHeader() {
  on('image', ({ current }) => {
    if (current) {
      renderHeader(current);
    } else {
      $('#header-table tbody').replaceChildren();
      $('#notes').replaceChildren();
    }
  });
}
