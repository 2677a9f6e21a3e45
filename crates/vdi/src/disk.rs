//! The disk seam: what every face of the engine (the CLI, the wasm session, exports, the
//! formats and filesystems to come) sees of a virtual disk, whether it is one image or a
//! chain of differencing images.
//!
//! ```text
//! storage ──> VdiImage ─┐
//!                       ├─ impl Disk ──> Runs (disk order | host order) ──> exports, map, cells
//! storage ──> Chain ────┘
//! ```
//!
//! A [`Disk`] is a virtual size, a block size, what each block is ([`Block`]: data in which
//! layer at which host offset, zero, free, or in a parent that is not attached) and a
//! `read_at`. [`Runs`] is the one walk over it: a pull-based iterator of [`Run`]s — blocks of
//! one kind merged while they continue each other — bounded in length (data runs by
//! [`CHUNK`](crate::transfer::CHUNK) for exports, unbounded for a map), in disk order, or
//! in host order (each layer's file front to back) for readers whose reads are expensive.
//!
//! Chosen over a push-style visitor (what `export_raw` used to be): a browser sink is
//! asynchronous, so the worker must be able to stop between runs and await a write; a
//! pull-based iterator serves that and the synchronous callers alike.

use crate::block_map::{run_len, Entry, BLOCK_FREE, BLOCK_ZERO};
use crate::chain::{Chain, Source};
use crate::error::{Result, VdiError};
use crate::image::{BlockState, VdiImage};
use crate::storage::{read_exact, ReadAt, Storage};
use crate::transfer::CHUNK;

/// What one block of a disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Stored data in layer `layer` (0 = the base; a single image is layer 0), whose first
    /// byte is at `host` in that layer's file.
    Data {
        /// Layer index, base first.
        layer: usize,
        /// Host byte offset of the block's data in that layer's file.
        host: u64,
    },
    /// A ZERO entry in layer `layer`: reads zeros and hides the layers below.
    Zero {
        /// Layer index, base first.
        layer: usize,
    },
    /// FREE in every layer: reads zeros.
    Free,
    /// FREE in a differencing image whose parent is not attached: its bytes are in the
    /// parent, so reading it is an error that names the parent.
    Parent,
}

impl Block {
    /// The state `qemu-img map` would report (a block of a missing parent is "free").
    pub fn state(self) -> BlockState {
        match self {
            Block::Data { .. } => BlockState::Data,
            Block::Zero { .. } => BlockState::Zero,
            Block::Free | Block::Parent => BlockState::Free,
        }
    }

    /// The layer that decides the block (None: FREE everywhere, or a missing parent).
    pub fn layer(self) -> Option<usize> {
        match self {
            Block::Data { layer, .. } | Block::Zero { layer } => Some(layer),
            Block::Free | Block::Parent => None,
        }
    }

    /// The host offset of a data block's first byte (None for the others).
    pub fn host(self) -> Option<u64> {
        match self {
            Block::Data { host, .. } => Some(host),
            _ => None,
        }
    }

    /// Whether an export reads it (data, or a parent's block, whose read names the parent);
    /// the others are zeros without reading.
    pub fn is_read(self) -> bool {
        matches!(self, Block::Data { .. } | Block::Parent)
    }

    /// The block `n` bytes further on, if `next` continues `self` that way: same kind and
    /// layer, and for data, lying right after it in the file.
    fn continued_by(self, n: u64, next: Block) -> bool {
        match (self, next) {
            (Block::Data { layer: a, host: h }, Block::Data { layer: b, host: g }) => a == b && h + n == g,
            (a, b) => a == b,
        }
    }

    /// The same block, `n` bytes further into it.
    fn advanced(self, n: u64) -> Block {
        match self {
            Block::Data { layer, host } => Block::Data { layer, host: host + n },
            other => other,
        }
    }
}

/// A virtual disk made of blocks: one image or a chain.
///
/// The required methods describe the disk; [`Disk::block_runs`] has a default built on
/// [`Disk::block`] that a disk with a faster bulk view (an image scanning its map) replaces.
pub trait Disk {
    /// Bytes of the virtual disk.
    fn virtual_size(&self) -> u64;
    /// Bytes per block.
    fn block_size(&self) -> u64;
    /// What block `b` is.
    fn block(&mut self, b: u64) -> Result<Block>;
    /// Read `buf.len()` bytes of the disk at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Read `buf.len()` bytes of layer `layer`'s file at `host` (for host-order readers).
    fn read_host(&mut self, layer: usize, host: u64, buf: &mut [u8]) -> Result<()>;
    /// Refuse a data run whose blocks do not lie whole in their file, with the error a
    /// read of it would give (what a host-order reader, which reads the file itself,
    /// checks before planning a read).
    fn check_run(&mut self, run: &Run) -> Result<()> {
        let _ = run;
        Ok(())
    }
    /// Number of layers (1 for an image).
    fn layer_count(&self) -> usize {
        1
    }
    /// Blocks covering the disk (the last may be partial).
    fn block_count(&self) -> u64 {
        self.virtual_size().div_ceil(self.block_size())
    }
    /// Append to `out` the blocks from `first` on, at most `max` of them and at least one
    /// (unless `first` is past the end), as `(count, kind of the first)` runs, each block of
    /// a run continuing the one before it (same kind and layer; data contiguous in the
    /// file). An implementation may stop early, once it has about [`RUNS_PER_CALL`] runs.
    fn block_runs(&mut self, first: u64, max: u64, out: &mut Vec<(u64, Block)>) -> Result<()> {
        let end = first.saturating_add(max).min(self.block_count());
        let bs = self.block_size();
        for b in first..end {
            if out.len() >= RUNS_PER_CALL {
                break;
            }
            let k = self.block(b)?;
            match out.last_mut() {
                Some((n, last)) if last.continued_by(*n * bs, k) => *n += 1,
                _ => out.push((1, k)),
            }
        }
        Ok(())
    }
}

/// A disk that can be written: an image, or a chain (into its top layer, allocating only
/// there).
pub trait DiskMut: Disk {
    /// Write `data` at `offset` of the disk.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// Make what was written reach the storage.
    fn flush(&mut self) -> Result<()>;
}

impl<S: Storage> DiskMut for VdiImage<S> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        VdiImage::write_at(self, offset, data)
    }
    fn flush(&mut self) -> Result<()> {
        VdiImage::flush(self)
    }
}

impl<S: Storage> DiskMut for Chain<S> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        Chain::write_at(self, offset, data)
    }
    fn flush(&mut self) -> Result<()> {
        Chain::flush(self)
    }
}

/// Runs [`Disk::block_runs`] gathers per call, about (what [`Runs`] holds read ahead: a
/// few hundred KiB, however large or fragmented the disk).
pub const RUNS_PER_CALL: usize = 4096;

/// A run of the disk: `len` bytes at `start`, every block of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Virtual byte offset.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The kind of the run; for data, `host` is that of the run's first byte.
    pub block: Block,
}

/// The one walk over a [`Disk`]: see the module docs. Pull runs with [`Runs::next`].
#[derive(Debug)]
pub struct Runs {
    order: Order,
    /// Longest data run (bytes).
    max_data: u64,
    /// Longest run without data (bytes).
    max_hole: u64,
}

#[derive(Debug)]
enum Order {
    Disk {
        /// Next virtual byte.
        pos: u64,
        /// Runs read ahead from the disk: `(blocks, kind)`, the first starting at block
        /// `pos / block size`, of which `skip` bytes were already handed out.
        queue: std::collections::VecDeque<(u64, Block)>,
        skip: u64,
        /// First block not yet asked of the disk.
        asked: u64,
    },
    Host {
        /// Every data block, sorted by layer and host offset; the next to hand out, and
        /// bytes of it already handed out.
        blocks: Vec<HostBlock>,
        idx: usize,
        skip: u64,
    },
}

/// A data block in host order: 16 bytes (a layer index and a block number fit 32 bits: a
/// chain has at most a few hundred layers, a map at most 2^32 entries).
#[derive(Debug, Clone, Copy)]
struct HostBlock {
    layer: u32,
    block: u32,
    host: u64,
}

/// Most data blocks [`Runs::host_order`] sorts (64 MiB at 16 bytes each: 4 TiB of data at
/// the usual 1 MiB blocks); beyond, disk order.
pub const MAX_HOST_ORDER_BLOCKS: usize = 4 << 20;

impl Runs {
    /// The whole disk in disk order, data runs at most [`CHUNK`] bytes and runs without
    /// data at most 1 GiB (nothing is read for them; the bound keeps progress and
    /// cancellation coming on a huge empty disk): what an export walks.
    pub fn export() -> Self {
        Runs::disk_order(CHUNK as u64, 1 << 30)
    }

    /// The whole disk in disk order, runs as long as they go: what a map shows.
    pub fn map() -> Self {
        Runs::disk_order(u64::MAX, u64::MAX)
    }

    /// Disk order with the given bounds (each at least one byte).
    pub fn disk_order(max_data: u64, max_hole: u64) -> Self {
        let order = Order::Disk { pos: 0, queue: Default::default(), skip: 0, asked: 0 };
        Runs { order, max_data: max_data.max(1), max_hole: max_hole.max(1) }
    }

    /// The data of the disk in host order: layer by layer, each file front to back, runs
    /// contiguous both in the file and in the disk, at most [`CHUNK`] bytes; the zeros are
    /// not reported. `None` when the disk cannot be walked that way: it has blocks in a
    /// missing parent (reading them must fail, in disk order), or more than
    /// [`MAX_HOST_ORDER_BLOCKS`] data blocks.
    pub fn host_order<D: Disk + ?Sized>(disk: &mut D) -> Result<Option<Self>> {
        let mut blocks = Vec::new();
        let mut walk = Runs::map();
        let bs = disk.block_size();
        while let Some(r) = walk.next(disk)? {
            match r.block {
                Block::Parent => return Ok(None),
                Block::Data { layer, host } => {
                    let n = r.len.div_ceil(bs);
                    if blocks.len() as u64 + n > MAX_HOST_ORDER_BLOCKS as u64 {
                        return Ok(None);
                    }
                    let (first, layer) = (r.start / bs, layer as u32);
                    blocks.extend((0..n).map(|k| HostBlock { layer, block: (first + k) as u32, host: host + k * bs }));
                }
                _ => {}
            }
        }
        blocks.sort_unstable_by_key(|b| (b.layer, b.host));
        Ok(Some(Runs { order: Order::Host { blocks, idx: 0, skip: 0 }, max_data: CHUNK as u64, max_hole: 0 }))
    }

    /// True in host order.
    pub fn is_host_order(&self) -> bool {
        matches!(self.order, Order::Host { .. })
    }

    /// Bytes of data left to hand out in host order (None in disk order).
    pub fn host_data_bytes<D: Disk + ?Sized>(&self, disk: &D) -> Option<u64> {
        let Order::Host { blocks, idx, skip } = &self.order else { return None };
        let (size, bs) = (disk.virtual_size(), disk.block_size());
        let total: u64 = blocks[*idx..].iter().map(|h| bs.min(size - h.block as u64 * bs)).sum();
        Some(total - skip)
    }

    /// The next run, or None at the end.
    pub fn next<D: Disk + ?Sized>(&mut self, disk: &mut D) -> Result<Option<Run>> {
        let (max_data, max_hole) = (self.max_data, self.max_hole);
        match &mut self.order {
            Order::Disk { pos, queue, skip, asked } => {
                let size = disk.virtual_size();
                if *pos >= size {
                    return Ok(None);
                }
                let bs = disk.block_size();
                let nblocks = disk.block_count();
                let mut fill = |queue: &mut std::collections::VecDeque<(u64, Block)>, asked: &mut u64| -> Result<bool> {
                    if *asked >= nblocks {
                        return Ok(false);
                    }
                    let mut v = Vec::new();
                    disk.block_runs(*asked, nblocks - *asked, &mut v)?;
                    let got: u64 = v.iter().map(|r| r.0).sum();
                    if got == 0 {
                        return Err(VdiError::InvalidArgument(format!("the disk gave no block at {}", *asked)));
                    }
                    *asked += got;
                    queue.extend(v);
                    Ok(true)
                };
                if queue.is_empty() && !fill(queue, asked)? {
                    return Ok(None);
                }
                let (n0, first) = queue[0];
                let start = *pos;
                let block = first.advanced(*skip);
                let limit = if block.is_read() { max_data } else { max_hole };
                // Bytes of the run so far: the rest of the front entry.
                let mut len = n0 * bs - *skip;
                let mut taken = 1usize;
                while len < limit {
                    if taken == queue.len() && !fill(queue, asked)? {
                        break;
                    }
                    let (n, k) = queue[taken];
                    if !block.continued_by(len, k) {
                        break;
                    }
                    len += n * bs;
                    taken += 1;
                }
                let len = len.min(limit).min(size - start);
                // Consume `len` bytes of the queue.
                let mut left = len + *skip;
                *skip = 0;
                while let Some(&(n, _)) = queue.front() {
                    if left >= n * bs {
                        left -= n * bs;
                        queue.pop_front();
                        if left == 0 {
                            break;
                        }
                    } else {
                        *skip = left;
                        break;
                    }
                }
                *pos = start + len;
                if *pos >= size {
                    queue.clear();
                }
                Ok(Some(Run { start, len, block }))
            }
            Order::Host { blocks, idx, skip } => {
                let size = disk.virtual_size();
                let bs = disk.block_size();
                let Some(&HostBlock { layer, block, host }) = blocks.get(*idx) else { return Ok(None) };
                let start = block as u64 * bs + *skip;
                let run_host = host + *skip;
                let mut len = 0u64;
                while let Some(&HostBlock { layer: l, block: b, host: h }) = blocks.get(*idx) {
                    let b = b as u64;
                    let at = b * bs + *skip;
                    if l != layer || h + *skip != run_host + len || at != start + len || len >= max_data {
                        break;
                    }
                    let n = (bs.min(size - b * bs) - *skip).min(max_data - len);
                    len += n;
                    *skip += n;
                    if *skip == bs.min(size - b * bs) {
                        *idx += 1;
                        *skip = 0;
                    }
                }
                let run = Run { start, len, block: Block::Data { layer: layer as usize, host: run_host } };
                disk.check_run(&run)?;
                Ok(Some(run))
            }
        }
    }
}

impl<S: ReadAt> Disk for VdiImage<S> {
    fn virtual_size(&self) -> u64 {
        VdiImage::virtual_size(self)
    }
    fn block_size(&self) -> u64 {
        VdiImage::block_size(self)
    }
    fn block(&mut self, b: u64) -> Result<Block> {
        let b32 = u32::try_from(b).map_err(|_| VdiError::InvalidArgument(format!("block {b} is past the block map")))?;
        Ok(match self.entry(b32)? {
            Entry::Data(slot) => Block::Data { layer: 0, host: self.header.slot_offset(slot) },
            Entry::Zero => Block::Zero { layer: 0 },
            Entry::Free if self.is_diff() => Block::Parent,
            Entry::Free => Block::Free,
        })
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        VdiImage::read_at(self, offset, buf)
    }
    fn read_host(&mut self, layer: usize, host: u64, buf: &mut [u8]) -> Result<()> {
        if layer != 0 {
            return Err(VdiError::InvalidArgument(format!("an image has one layer, not layer {layer}")));
        }
        read_exact(&self.storage, host, buf)
    }
    fn check_run(&mut self, run: &Run) -> Result<()> {
        check_run_in(self, run)
    }
    /// Scans the map (one buffer, chunks of [`crate::block_map::SCAN_ENTRIES`]) until it has
    /// [`RUNS_PER_CALL`] runs; runs of FREE or ZERO entries are counted 64 at a time (a
    /// maximum-size map is mostly that).
    fn block_runs(&mut self, first: u64, max: u64, out: &mut Vec<(u64, Block)>) -> Result<()> {
        let end = first.saturating_add(max).min(self.block_count());
        if first >= end {
            return Ok(());
        }
        let (bs, diff, header) = (self.block_size(), self.is_diff(), &self.header);
        self.map.scan_while(&self.storage, first as u32, end as u32, |_, entries| {
            let mut k = 0;
            while k < entries.len() {
                let raw = entries[k];
                let (n, kind) = match raw {
                    BLOCK_FREE => (run_len(&entries[k..], raw), if diff { Block::Parent } else { Block::Free }),
                    BLOCK_ZERO => (run_len(&entries[k..], raw), Block::Zero { layer: 0 }),
                    slot => (1, Block::Data { layer: 0, host: header.slot_offset(slot) }),
                };
                k += n;
                match out.last_mut() {
                    Some((m, last)) if last.continued_by(*m * bs, kind) => *m += n as u64,
                    _ => out.push((n as u64, kind)),
                }
            }
            Ok(out.len() < RUNS_PER_CALL)
        })?;
        Ok(())
    }
}

impl<S: ReadAt> Disk for Chain<S> {
    fn virtual_size(&self) -> u64 {
        Chain::virtual_size(self)
    }
    fn block_size(&self) -> u64 {
        Chain::block_size(self)
    }
    fn layer_count(&self) -> usize {
        self.layers().len()
    }
    fn block(&mut self, b: u64) -> Result<Block> {
        let b32 = u32::try_from(b).map_err(|_| VdiError::InvalidArgument(format!("block {b} is past the block map")))?;
        Ok(match self.source(b32)? {
            Source::Data { layer, slot } => Block::Data { layer, host: self.layers()[layer].header().slot_offset(slot) },
            Source::Zero { layer } => Block::Zero { layer },
            Source::Free => Block::Free,
        })
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        Chain::read_at(self, offset, buf)
    }
    fn read_host(&mut self, layer: usize, host: u64, buf: &mut [u8]) -> Result<()> {
        let n = self.layers().len();
        let img = self
            .layers()
            .get(layer)
            .ok_or_else(|| VdiError::InvalidArgument(format!("the chain has {n} layers, not layer {layer}")))?;
        read_exact(img.storage(), host, buf)
    }
    fn check_run(&mut self, run: &Run) -> Result<()> {
        match run.block {
            Block::Data { layer, .. } => check_run_in(&self.layers()[layer], run),
            _ => Ok(()),
        }
    }
}

/// [`Disk::check_run`] for a run stored in `img`: every block's slot lies whole in the file
/// (the rule [`VdiImage::read_at`] enforces), else the engine's `BlockPastEnd` for the first
/// block that does not.
fn check_run_in<S>(img: &VdiImage<S>, run: &Run) -> Result<()> {
    let Block::Data { host, .. } = run.block else { return Ok(()) };
    if run.len == 0 {
        return Ok(());
    }
    let bs = img.header.block_size as u64;
    let first = run.start / bs;
    let first_host = host - run.start % bs;
    let last = (run.start + run.len - 1) / bs;
    if first_host + (last - first + 1) * bs <= img.file_len {
        return Ok(());
    }
    let base = img.header.slot_offset(0);
    let stride = img.header.block_stride();
    for b in first..=last {
        let at = first_host + (b - first) * bs;
        if at + bs > img.file_len {
            let slot = ((at - base) / stride) as u32;
            return Err(VdiError::BlockPastEnd { block: b, slot, offset: at, len: img.file_len });
        }
    }
    Ok(())
}
