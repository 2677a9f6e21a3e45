//! Raw export as a sequence of pieces the worker writes at their positions, for an image
//! and a chain alike: both are a [`vdi::Disk`], walked by the engine's one run iterator
//! ([`vdi::Runs`]).
//!
//! The engine's [`vdi::export_disk`] pushes the disk into a synchronous sink. A browser's
//! save target (a `FileSystemWritableFileStream`) is asynchronous, so the worker pulls
//! pieces instead, awaiting each write; both browser targets accept positioned writes into
//! a file already sized to the disk (zeros implied), which frees the order:
//!
//! - **host order** (the usual case, [`vdi::Runs::host_order`]): the data is read layer by
//!   layer, each file front to back, in reads of up to [`CHUNK`] bytes that may hold
//!   several runs; each run then goes to its virtual position. A dynamic image written in
//!   random order costs a few large sequential reads instead of one small read per block,
//!   which is what a browser `File` (each read a round trip to the browser process) is
//!   slow at. Zeros are never touched: they are already in the target.
//! - **disk order** ([`vdi::Runs::export`]): for a chain, for a differencing image opened alone (a block
//!   of the missing parent must surface the engine's "needs parent" error) and for disks
//!   with more data blocks than [`vdi::disk::MAX_HOST_ORDER_BLOCKS`]; runs without data
//!   are reported as zeros, data is read with [`vdi::Disk::read_at`].
//!
//! Memory: the transfer buffer ([`CHUNK`]) and 24 bytes per data block in host order.

use vdi::{Disk, Run, Runs, VdiError};

/// Bytes moved per piece at most (the engine's own chunk size).
pub const CHUNK: usize = vdi::transfer::CHUNK;

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

/// An export in progress.
#[derive(Debug)]
pub struct Export {
    runs: Runs,
    /// A host-order run that did not fit the last read, first of the next.
    pending: Option<Run>,
    /// Pieces of the current read (host order), and the next to hand out.
    window: Vec<Piece>,
    next: usize,
    /// Bytes of work (data bytes in host order, disk bytes in disk order).
    pub total: u64,
    /// Bytes of work done.
    pub done: u64,
}

impl Export {
    /// Plan an export of `disk`, in host order when `host_order` allows it (the worker
    /// reads a single image's file itself in host order; a chain, whose layers are files
    /// of their own, goes in disk order).
    pub fn begin(disk: &mut dyn Disk, host_order: bool) -> vdi::Result<Self> {
        let planned = if host_order { Runs::host_order(disk)? } else { None };
        let (runs, total) = match planned {
            Some(r) => {
                let total = r.host_data_bytes(disk).unwrap_or(0);
                (r, total)
            }
            None => (Runs::export(), disk.virtual_size()),
        };
        Ok(Export { runs, pending: None, window: Vec::new(), next: 0, total, done: 0 })
    }

    /// True when pieces come in host order (zeros are never reported).
    pub fn host_order(&self) -> bool {
        self.runs.is_host_order()
    }

    /// The next piece; data lands in `buf` (at least [`CHUNK`] bytes).
    pub fn next(&mut self, disk: &mut dyn Disk, buf: &mut [u8]) -> vdi::Result<Piece> {
        let p = if self.host_order() { self.next_host(disk, buf)? } else { self.next_disk(disk, buf)? };
        if p.kind == PieceKind::Data || !self.host_order() {
            self.done += p.len;
        }
        Ok(p)
    }

    /// Disk order: a run of zeros (any length) or up to [`CHUNK`] bytes of data.
    fn next_disk(&mut self, disk: &mut dyn Disk, buf: &mut [u8]) -> vdi::Result<Piece> {
        let Some(r) = self.runs.next(disk)? else { return Ok(end(disk)) };
        if !r.block.is_read() {
            return Ok(Piece { kind: PieceKind::Zeros, offset: r.start, len: r.len, buf_off: 0 });
        }
        let part = &mut buf[..r.len as usize];
        disk.read_at(r.start, part)?;
        // Data that reads as zeros needs no write either (the target holds zeros).
        let kind = if vdi::all_zero(part) { PieceKind::Zeros } else { PieceKind::Data };
        Ok(Piece { kind, offset: r.start, len: r.len, buf_off: 0 })
    }

    fn next_host(&mut self, disk: &mut dyn Disk, buf: &mut [u8]) -> vdi::Result<Piece> {
        if self.next == self.window.len() {
            let read = match self.plan(disk) {
                Ok(Some((layer, host, len))) => disk.read_host(layer, host, &mut buf[..len as usize]),
                Ok(None) => return Ok(end(disk)),
                Err(e) => Err(e),
            };
            if let Err(e) = read {
                // Never hand out pieces that were not read.
                self.window.clear();
                self.next = 0;
                return Err(e);
            }
        }
        let p = self.window[self.next];
        self.next += 1;
        Ok(p)
    }

    /// Plan the next read in host order: runs contiguous in one layer's file, at most
    /// [`CHUNK`] bytes in all. Returns `(layer, host offset, length)` and leaves the runs in
    /// `window` (buffer offsets relative to the read); `None` at the end.
    fn plan(&mut self, disk: &mut dyn Disk) -> vdi::Result<Option<(usize, u64, u64)>> {
        self.window.clear();
        self.next = 0;
        let mut read: Option<(usize, u64)> = None;
        let mut filled = 0u64;
        loop {
            let r = match self.pending.take() {
                Some(r) => r,
                None => match self.runs.next(disk)? {
                    Some(r) => r,
                    None => break,
                },
            };
            let vdi::Block::Data { layer, host } = r.block else {
                return Err(VdiError::InvalidArgument(format!("host order gave a run that is not data: {r:?}")));
            };
            match read {
                Some((l, h)) if l != layer || h + filled != host || filled + r.len > CHUNK as u64 => {
                    self.pending = Some(r);
                    break;
                }
                None => read = Some((layer, host)),
                _ => {}
            }
            self.window.push(Piece { kind: PieceKind::Data, offset: r.start, len: r.len, buf_off: filled as usize });
            filled += r.len;
        }
        Ok(read.map(|(l, h)| (l, h, filled)))
    }

    /// Host order only: plan the next read without making it, for a caller that reads the
    /// host range itself (the worker does, asynchronously, from a `File`). Returns
    /// `[host offset, length, (disk offset, length, offset in the read) × pieces]`, empty
    /// at the end. (A chain's layers are files of their own: the worker reads the image
    /// file only for a single image; a chain is read through [`Export::next`].)
    pub fn plan_next(&mut self, disk: &mut dyn Disk) -> vdi::Result<Vec<f64>> {
        if !self.host_order() {
            return Err(VdiError::InvalidArgument("this export runs in disk order: use export_next".into()));
        }
        let Some((_, host, len)) = self.plan(disk)? else {
            return Ok(Vec::new());
        };
        let mut out = vec![host as f64, len as f64];
        for p in self.window.drain(..) {
            out.extend([p.offset as f64, p.len as f64, p.buf_off as f64]);
        }
        self.next = 0;
        self.done += len;
        Ok(out)
    }
}

fn end(disk: &dyn Disk) -> Piece {
    Piece { kind: PieceKind::End, offset: disk.virtual_size(), len: 0, buf_off: 0 }
}
