//! Raw export as a sequence of pieces the worker writes at their positions.
//!
//! The engine's [`vdi::export_raw`] pushes the disk into a synchronous sink, in disk order.
//! A browser's save target (a `FileSystemWritableFileStream`) is asynchronous, so the
//! worker pulls pieces instead, awaiting each write; both browser targets accept positioned
//! writes into a file already sized to the disk (zeros implied), which frees the order:
//!
//! - **host order** (the usual case): the block map is scanned once into `(slot, block)`
//!   pairs sorted by slot, and the data area is read front to back in [`CHUNK`]-sized reads;
//!   each block then goes to its virtual position. A dynamic image written in random order
//!   costs a few large sequential reads instead of one small read per block, which is what
//!   a browser `File` (each read a round trip to the browser process) is slow at. FREE and
//!   ZERO blocks are never touched: they are the zeros already in the target.
//! - **disk order**: for a differencing image (a FREE block must surface the engine's
//!   "needs parent" error) and for maps with more allocated blocks than [`MAX_PAIRS`]; runs
//!   of zeros are reported as such, data is read with [`VdiImage::read_at`].
//!
//! Memory: the transfer buffer ([`CHUNK`]) and 8 bytes per allocated block (bounded by
//! [`MAX_PAIRS`]).

use vdi::{Entry, ReadAt, VdiError, VdiImage};

use crate::storage::Backend;

/// Bytes moved per piece at most (the engine's own chunk size).
pub const CHUNK: usize = vdi::transfer::CHUNK;

/// Most allocated blocks exported in host order (32 MiB of pairs); beyond, disk order.
pub const MAX_PAIRS: usize = 4 << 20;

/// What a piece is.
#[wasm_bindgen::prelude::wasm_bindgen]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    /// Nothing left.
    End = 0,
    /// `len` bytes of the disk at `offset`, at `buf_off` in the transfer buffer.
    Data = 1,
    /// `len` zero bytes of the disk at `offset` (nothing to copy; the target already holds
    /// zeros there).
    Zeros = 2,
}

/// One step of a raw export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// What this piece is.
    pub kind: PieceKind,
    /// Virtual byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where the bytes of a data piece start in the transfer buffer.
    pub buf_off: usize,
}

impl Piece {
    fn end(size: u64) -> Self {
        Piece { kind: PieceKind::End, offset: size, len: 0, buf_off: 0 }
    }
}

/// An export in progress.
#[derive(Debug)]
pub struct Export {
    order: Order,
    /// Bytes of work (data bytes in host order, disk bytes in disk order).
    pub total: u64,
    /// Bytes of work done.
    pub done: u64,
}

#[derive(Debug)]
enum Order {
    Disk { pos: u64 },
    Host(HostOrder),
}

#[derive(Debug)]
struct HostOrder {
    /// `(slot, block)` of every data block inside the disk, by slot.
    pairs: Vec<(u32, u32)>,
    /// Next pair to read, and bytes of it already read.
    idx: usize,
    skip: u64,
    /// Pieces of the current window (read into the buffer), and the next to hand out.
    window: Vec<Piece>,
    next: usize,
}

fn vdi_err_of_storage(offset: u64, len: u64, e: vdi::StorageError) -> VdiError {
    VdiError::Io { op: "read", offset, len, source: e }
}

impl Export {
    /// Plan an export of `img`.
    pub fn begin(img: &mut VdiImage<Backend>) -> vdi::Result<Self> {
        let size = img.virtual_size();
        if img.is_diff() {
            return Ok(Export { order: Order::Disk { pos: 0 }, total: size, done: 0 });
        }
        let nblocks = img.blocks_covering_disk();
        let mut pairs = Vec::new();
        let mut too_many = false;
        img.block_map().scan(img.storage(), 0, nblocks, |first, entries| {
            for (k, &raw) in entries.iter().enumerate() {
                if let Entry::Data(slot) = Entry::from_raw(raw) {
                    if pairs.len() == MAX_PAIRS {
                        too_many = true;
                        return Ok(());
                    }
                    pairs.push((slot, first + k as u32));
                }
            }
            Ok(())
        })?;
        if too_many {
            return Ok(Export { order: Order::Disk { pos: 0 }, total: size, done: 0 });
        }
        pairs.sort_unstable();
        let bs = img.block_size();
        let total = pairs.iter().map(|&(_, b)| bs.min(size - b as u64 * bs)).sum();
        Ok(Export {
            order: Order::Host(HostOrder { pairs, idx: 0, skip: 0, window: Vec::new(), next: 0 }),
            total,
            done: 0,
        })
    }

    /// True when pieces come in host order (zeros are never reported).
    pub fn host_order(&self) -> bool {
        matches!(self.order, Order::Host(_))
    }

    /// The next piece; data lands in `buf` (at least [`CHUNK`] bytes).
    pub fn next(&mut self, img: &mut VdiImage<Backend>, buf: &mut [u8]) -> vdi::Result<Piece> {
        let p = match &mut self.order {
            Order::Disk { pos } => disk_next(img, pos, buf)?,
            Order::Host(h) => h.next(img, buf)?,
        };
        self.done += if p.kind == PieceKind::Data || !self.host_order() { p.len } else { 0 };
        Ok(p)
    }
}

/// Disk order: a run of holes (any length) or up to [`CHUNK`] bytes of data.
fn disk_next(img: &mut VdiImage<Backend>, pos: &mut u64, buf: &mut [u8]) -> vdi::Result<Piece> {
    let size = img.virtual_size();
    let start = *pos;
    if start >= size {
        return Ok(Piece::end(size));
    }
    let bs = img.block_size();
    let diff = img.is_diff();
    let is_hole = |e: Entry| match e {
        Entry::Data(_) => false,
        Entry::Zero => true,
        // In a differencing image a FREE block reads the parent: read it, so the engine
        // reports that the parent is needed.
        Entry::Free => !diff,
    };
    let mut block = start / bs;
    let hole = is_hole(img.entry(block as u32)?);
    let mut end = ((block + 1) * bs).min(size);
    while end < size && (hole || end - start < CHUNK as u64) {
        block += 1;
        if is_hole(img.entry(block as u32)?) != hole {
            break;
        }
        end = ((block + 1) * bs).min(size);
    }
    if hole {
        *pos = end;
        return Ok(Piece { kind: PieceKind::Zeros, offset: start, len: end - start, buf_off: 0 });
    }
    let len = (end - start).min(CHUNK as u64) as usize;
    img.read_at(start, &mut buf[..len])?;
    *pos = start + len as u64;
    Ok(Piece { kind: PieceKind::Data, offset: start, len: len as u64, buf_off: 0 })
}

impl HostOrder {
    fn next(&mut self, img: &mut VdiImage<Backend>, buf: &mut [u8]) -> vdi::Result<Piece> {
        if self.next == self.window.len() {
            if let Some((host, len)) = self.plan(img)? {
                let part = &mut buf[..len as usize];
                img.storage().read_at(host, part).map_err(|e| vdi_err_of_storage(host, len, e))?;
            }
            if self.window.is_empty() {
                return Ok(Piece::end(img.virtual_size()));
            }
        }
        let p = self.window[self.next];
        self.next += 1;
        Ok(p)
    }

    /// Plan the next run of host-contiguous data (at most [`CHUNK`] bytes): returns its
    /// host range and leaves its pieces in `window` (buffer offsets relative to the run),
    /// merging blocks that are also contiguous on the disk. `None` at the end.
    fn plan(&mut self, img: &mut VdiImage<Backend>) -> vdi::Result<Option<(u64, u64)>> {
        self.window.clear();
        self.next = 0;
        let h = img.header().clone();
        let bs = h.block_size as u64;
        let size = img.virtual_size();
        let file_len = img.file_len();
        let mut host_start: Option<u64> = None;
        let mut filled = 0u64;
        while self.idx < self.pairs.len() && filled < CHUNK as u64 {
            let (slot, block) = self.pairs[self.idx];
            let v = block as u64 * bs;
            let vlen = bs.min(size - v);
            let host = h.slot_offset(slot);
            if host + bs > file_len {
                // Let the engine say what is wrong (its BlockPastEnd error).
                img.read_at(v, &mut [0u8; 1])?;
            }
            let at = host + self.skip;
            match host_start {
                Some(hs) if hs + filled != at => break,
                None => host_start = Some(at),
                _ => {}
            }
            let n = (vlen - self.skip).min(CHUNK as u64 - filled);
            let off = v + self.skip;
            match self.window.last_mut() {
                Some(last) if last.offset + last.len == off => last.len += n,
                _ => self.window.push(Piece { kind: PieceKind::Data, offset: off, len: n, buf_off: filled as usize }),
            }
            filled += n;
            self.skip += n;
            if self.skip == vlen {
                self.idx += 1;
                self.skip = 0;
                if vlen < bs {
                    break; // the rest of this slot is not part of the disk
                }
            }
        }
        Ok(host_start.map(|hs| (hs, filled)))
    }
}

impl Export {
    /// Host order only: plan the next run without reading it, for a caller that reads the
    /// host range itself (the worker does, asynchronously, from a `File`). Returns
    /// `[host offset, length, (disk offset, length, offset in the run) × pieces]`, empty at
    /// the end.
    pub fn plan_next(&mut self, img: &mut VdiImage<Backend>) -> vdi::Result<Vec<f64>> {
        let Order::Host(h) = &mut self.order else {
            return Err(VdiError::InvalidArgument("this export runs in disk order: use export_next".into()));
        };
        let Some((host, len)) = h.plan(img)? else {
            return Ok(Vec::new());
        };
        let mut out = vec![host as f64, len as f64];
        for p in h.window.drain(..) {
            out.extend([p.offset as f64, p.len as f64, p.buf_off as f64]);
        }
        self.done += len;
        Ok(out)
    }
}
