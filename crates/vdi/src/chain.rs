//! Differencing-image chains (VirtualBox snapshots).
//!
//! A differencing image (image_type 4) names its parent only by UUID: `uuid_link` is the
//! parent's image UUID and `uuid_parent_modify` the parent's modify UUID when the diff was
//! made. FREE entries of a diff fall through to the parent; ZERO entries read zeros and do
//! not. A [`Chain`] holds the layers base first and reads, writes, merges and compacts
//! through them.

use std::collections::HashMap;

use uuid::Uuid;

use crate::block_map::{Entry, BLOCK_FREE, BLOCK_ZERO};
use crate::error::{ChainError, Result, VdiError};
use crate::header::ImageType;
use crate::image::{all_zero, BlockState, VdiImage};
use crate::monitor::Monitor;
use crate::storage::{set_len, ReadAt, Storage};
use crate::surgery::CompactStats;

/// Where one block of the chain's disk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Stored in layer `layer` (0 = base) at `slot`.
    Data {
        /// Layer index, base first.
        layer: usize,
        /// Slot in that layer.
        slot: u32,
    },
    /// A ZERO entry in layer `layer` (reads zeros, hides everything below).
    Zero {
        /// Layer index, base first.
        layer: usize,
    },
    /// FREE all the way down: reads zeros.
    Free,
}

/// A run of the chain's disk with one state and one source layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainExtent {
    /// Virtual byte offset.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// State of the run.
    pub state: BlockState,
    /// The layer that decides the run's content (None: FREE everywhere).
    pub layer: Option<usize>,
    /// Host offset in that layer's file, for data.
    pub host_offset: Option<u64>,
}

/// What [`Chain::commit`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Data blocks copied into the parent.
    pub blocks_merged: u64,
    /// Blocks the parent now reads as zeros (ZERO entries of the diff).
    pub blocks_zeroed: u64,
}

/// Layers of a differencing chain, base first.
#[derive(Debug)]
pub struct Chain<S> {
    layers: Vec<VdiImage<S>>,
    warnings: Vec<String>,
}

fn needs_parent<S>(img: &VdiImage<S>) -> bool {
    img.header.kind() == Some(ImageType::Diff)
}

impl<S: ReadAt> Chain<S> {
    /// The chain ending at `top`, with its parents taken from `candidates` by UUID.
    /// Candidates that are not needed are dropped. Errors: a missing parent (naming the
    /// UUID needed), a cycle, two candidates with the needed UUID, a block-size mismatch.
    pub fn resolve(top: VdiImage<S>, candidates: Vec<VdiImage<S>>) -> Result<Self> {
        let mut by_uuid: HashMap<Uuid, Vec<VdiImage<S>>> = HashMap::new();
        for c in candidates {
            by_uuid.entry(c.header.uuid_create).or_default().push(c);
        }
        let mut layers = vec![top];
        let mut warnings = Vec::new();
        loop {
            let cur = layers.last().expect("at least the top");
            if !needs_parent(cur) {
                break;
            }
            let link = cur.header.uuid_link;
            let child = cur.header.uuid_create;
            if link.is_nil() {
                return Err(ChainError::NullParent { child }.into());
            }
            if layers.iter().any(|l| l.header.uuid_create == link) {
                return Err(ChainError::Cycle { child, parent: link }.into());
            }
            let mut found = by_uuid.remove(&link).unwrap_or_default();
            if found.len() > 1 {
                return Err(ChainError::DuplicateUuid { uuid: link, count: found.len(), needed_by: Some(child) }.into());
            }
            let Some(parent) = found.pop() else {
                return Err(VdiError::MissingParent { child: child.to_string(), parent: link.to_string(), hint: String::new() });
            };
            if parent.header.block_size != cur.header.block_size {
                return Err(ChainError::BlockSizeMismatch {
                    child,
                    child_block_size: cur.header.block_size,
                    parent: link,
                    parent_block_size: parent.header.block_size,
                }
                .into());
            }
            let recorded = cur.header.uuid_parent_modify;
            if !recorded.is_nil() && recorded != parent.header.uuid_modify {
                warnings.push(format!(
                    "parent {link} was written after {child} was made from it (its modify UUID is {}, the child recorded {recorded}): the chain may not read as the snapshot did",
                    parent.header.uuid_modify
                ));
            }
            if parent.virtual_size() != cur.virtual_size() {
                warnings.push(format!(
                    "image {child} is {} bytes and its parent {link} is {} bytes",
                    cur.virtual_size(),
                    parent.virtual_size()
                ));
            }
            layers.push(parent);
        }
        layers.reverse();
        Ok(Chain { layers, warnings })
    }

    /// Order a set of images into one chain (e.g. files dropped together, in any order).
    /// Every image must belong to it: two children of one parent, two images with one
    /// UUID, or images from separate chains are errors that name them.
    pub fn from_set(images: Vec<VdiImage<S>>) -> Result<Self> {
        if images.is_empty() {
            return Err(VdiError::InvalidArgument("no images given".into()));
        }
        let n = images.len();
        let mut seen: HashMap<Uuid, usize> = HashMap::new();
        for img in &images {
            *seen.entry(img.header.uuid_create).or_default() += 1;
        }
        // The first UUID (in the order given) that more than one image has.
        if let Some((uuid, count)) =
            images.iter().map(|i| i.header.uuid_create).map(|u| (u, seen[&u])).find(|&(_, c)| c > 1)
        {
            return Err(ChainError::DuplicateUuid { uuid, count, needed_by: None }.into());
        }
        let mut claimed: HashMap<Uuid, Uuid> = HashMap::new();
        for img in &images {
            let u = img.header.uuid_create;
            if needs_parent(img) {
                let p = img.header.uuid_link;
                if let Some(other) = claimed.insert(p, u) {
                    return Err(ChainError::Fork { parent: p, first: other, second: u }.into());
                }
            }
        }
        for img in &images {
            if needs_parent(img) && !seen.contains_key(&img.header.uuid_link) && !img.header.uuid_link.is_nil() {
                return Err(VdiError::MissingParent {
                    child: img.header.uuid_create.to_string(),
                    parent: img.header.uuid_link.to_string(),
                    hint: " (it is not among the images given)".into(),
                });
            }
        }
        let tops: Vec<usize> =
            (0..n).filter(|&i| !claimed.contains_key(&images[i].header.uuid_create)).collect();
        if tops.is_empty() {
            return Err(ChainError::CycleInSet { images: n }.into());
        }
        if tops.len() > 1 {
            let tops = tops.iter().map(|&i| images[i].header.uuid_create).collect();
            return Err(ChainError::SeparateChains { tops }.into());
        }
        let mut images = images;
        let top = images.remove(tops[0]);
        let chain = Chain::resolve(top, images)?;
        if chain.layers.len() != n {
            return Err(ChainError::NotInChain {
                extra: n - chain.layers.len(),
                total: n,
                top: chain.top().header.uuid_create,
            }
            .into());
        }
        Ok(chain)
    }

    /// Layers, base first.
    pub fn layers(&self) -> &[VdiImage<S>] {
        &self.layers
    }
    /// Give the layers back, base first.
    pub fn into_layers(self) -> Vec<VdiImage<S>> {
        self.layers
    }
    /// The top layer (the one a VM writes to).
    pub fn top(&self) -> &VdiImage<S> {
        self.layers.last().expect("a chain has a layer")
    }
    pub(crate) fn top_mut(&mut self) -> &mut VdiImage<S> {
        self.layers.last_mut().expect("a chain has a layer")
    }
    /// Facts about the links that do not stop reading (e.g. a parent written after the
    /// snapshot was taken).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    /// The disk size: the top's.
    pub fn virtual_size(&self) -> u64 {
        self.top().virtual_size()
    }
    /// Block size (the same in every layer).
    pub fn block_size(&self) -> u64 {
        self.top().block_size()
    }

    /// Where block `block` comes from, looking through layers `..=upto` from the top down.
    fn source_in(&mut self, block: u32, upto: usize) -> Result<Source> {
        for layer in (0..=upto).rev() {
            let img = &mut self.layers[layer];
            if block >= img.header.blocks_in_image {
                continue;
            }
            match img.entry(block)? {
                Entry::Data(slot) => return Ok(Source::Data { layer, slot }),
                Entry::Zero => return Ok(Source::Zero { layer }),
                Entry::Free => {}
            }
        }
        Ok(Source::Free)
    }

    /// Where block `block` of the chain's disk comes from.
    pub fn source(&mut self, block: u32) -> Result<Source> {
        let top = self.layers.len() - 1;
        self.source_in(block, top)
    }

    /// Read through layers `..=upto`.
    fn read_in(&mut self, upto: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        let size = self.layers[upto].virtual_size();
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > size) {
            return Err(VdiError::OutOfRange { op: "read", offset, len: buf.len() as u64, size });
        }
        let bs = self.block_size();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = (pos / bs) as u32;
            let n = ((bs - pos % bs) as usize).min(buf.len() - done);
            match self.source_in(block, upto)? {
                Source::Data { layer, slot } => {
                    let img = &mut self.layers[layer];
                    let host = img.data_offset(block, slot)? + pos % bs;
                    crate::storage::read_exact(&img.storage, host, &mut buf[done..done + n])?;
                }
                Source::Zero { .. } | Source::Free => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// Read the chain's disk at `offset`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let top = self.layers.len() - 1;
        self.read_in(top, offset, buf)
    }

    /// Visit the chain's disk as merged extents, each with the layer it comes from
    /// ([`crate::Runs::map`]).
    pub fn extents(&mut self, mut f: impl FnMut(ChainExtent) -> Result<()>) -> Result<()> {
        let mut runs = crate::disk::Runs::map();
        while let Some(r) = runs.next(self)? {
            let (state, layer, host_offset) = (r.block.state(), r.block.layer(), r.block.host());
            f(ChainExtent { start: r.start, length: r.len, state, layer, host_offset })?;
        }
        Ok(())
    }
}

impl<S: Storage> Chain<S> {
    /// Write into layer `target` so that the chain `..=target` reads `data` at `offset`.
    /// A new block of a diff is filled from the layers below; zeros over a FREE block that
    /// the layers below read as non-zero become a ZERO entry.
    fn write_in(&mut self, target: usize, offset: u64, data: &[u8]) -> Result<()> {
        self.layers[target].check_writable_layer()?;
        let size = self.layers[target].virtual_size();
        if offset.checked_add(data.len() as u64).is_none_or(|e| e > size) {
            return Err(VdiError::OutOfRange { op: "write", offset, len: data.len() as u64, size });
        }
        let bs = self.block_size();
        let mut done = 0usize;
        let mut full = Vec::new();
        while done < data.len() {
            let pos = offset + done as u64;
            let block = (pos / bs) as u32;
            let in_block = (pos % bs) as usize;
            let n = ((bs as usize) - in_block).min(data.len() - done);
            let piece = &data[done..done + n];
            done += n;
            let entry = self.layers[target].entry(block)?;
            if matches!(entry, Entry::Data(_)) || target == 0 {
                self.layers[target].write_unchecked(pos, piece)?;
                continue;
            }
            // A block not stored in the target: build it whole.
            let start = block as u64 * bs;
            let len = bs.min(size - start) as usize;
            full.resize(len, 0);
            if entry == Entry::Zero {
                full.fill(0);
            } else {
                self.read_in(target - 1, start, &mut full)?;
            }
            let below_zero = entry == Entry::Zero || all_zero(&full);
            full[in_block..in_block + n].copy_from_slice(piece);
            if all_zero(&full) {
                if !below_zero && entry == Entry::Free {
                    let img = &mut self.layers[target];
                    img.map.set(&img.storage, block, BLOCK_ZERO)?;
                    img.map.flush(&mut img.storage)?;
                }
                continue;
            }
            let buf = std::mem::take(&mut full);
            let r = self.layers[target].write_unchecked(start, &buf);
            full = buf;
            r?;
        }
        Ok(())
    }

    /// Write to the chain's disk: into the top layer, allocating only there.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let top = self.layers.len() - 1;
        self.write_in(top, offset, data)
    }

    /// Flush every layer (writes land in the top; a commit also writes below it).
    pub fn flush(&mut self) -> Result<()> {
        self.layers.iter_mut().try_for_each(|l| l.flush())
    }

    /// Merge the top diff into its parent, so the parent reads as the whole chain does;
    /// then empty the top (all FREE, linked to the parent's new modify UUID), as
    /// `qemu-img commit` does, unless `keep_top`. Stopped midway, the chain still reads the
    /// same (the top still holds every block it held).
    pub fn commit(&mut self, new_parent_modify: Uuid, keep_top: bool, monitor: &mut dyn Monitor) -> Result<CommitStats> {
        let n = self.layers.len();
        if n < 2 {
            return Err(VdiError::InvalidArgument("commit needs a differencing image and its parent".into()));
        }
        let (t, p) = (n - 1, n - 2);
        // Refused before anything is written (a layer with slots past blocks_in_image, say).
        self.layers[p].check_writable_layer()?;
        self.layers[t].check_writable_layer()?;
        let bs = self.block_size();
        let size = self.layers[p].virtual_size().min(self.virtual_size());
        let nblocks = size.div_ceil(bs) as u32;
        let mut st = CommitStats::default();
        // Sized at the first block that needs it (a header may claim 128 MiB blocks).
        let mut buf = Vec::new();
        for block in 0..nblocks {
            if monitor.cancelled() {
                return Err(VdiError::Cancelled);
            }
            let start = block as u64 * bs;
            let len = bs.min(size - start) as usize;
            let entry = self.layers[t].entry(block)?;
            if entry != Entry::Free && buf.len() < len {
                buf.resize(len, 0);
            }
            match entry {
                Entry::Data(slot) => {
                    let img = &self.layers[t];
                    let host = img.data_offset(block, slot)?;
                    crate::storage::read_exact(&img.storage, host, &mut buf[..len])?;
                    let data = std::mem::take(&mut buf);
                    let r = self.write_in(p, start, &data[..len]);
                    buf = data;
                    r?;
                    st.blocks_merged += 1;
                }
                Entry::Zero => {
                    let parent_reads_zero = {
                        self.read_in(p, start, &mut buf[..len])?;
                        all_zero(&buf[..len])
                    };
                    if !parent_reads_zero {
                        let img = &mut self.layers[p];
                        img.map.set(&img.storage, block, BLOCK_ZERO)?;
                        img.map.flush(&mut img.storage)?;
                    }
                    st.blocks_zeroed += 1;
                }
                Entry::Free => {}
            }
            monitor.progress(block as u64 + 1, nblocks as u64);
        }
        // The parent's slots that ZERO entries released are leaks: reclaim them.
        {
            let parent = &mut self.layers[p];
            parent.reclaim_unchecked(&mut crate::monitor::NoMonitor)?;
            let mut h = parent.header.clone();
            h.uuid_modify = new_parent_modify;
            parent.header = h;
            parent.write_header()?;
        }
        if !keep_top {
            let top = &mut self.layers[t];
            let nb = top.header.blocks_in_image;
            for b in 0..nb {
                if top.entry(b)? != Entry::Free {
                    top.map.set(&top.storage, b, BLOCK_FREE)?;
                }
            }
            top.map.flush(&mut top.storage)?;
            top.header.blocks_allocated = 0;
            top.header.uuid_parent_modify = new_parent_modify;
            top.write_header()?;
            let end = top.header.offset_data as u64;
            if top.file_len > end {
                set_len(&mut top.storage, end)?;
                top.file_len = end;
            }
            top.next_slot = None;
        } else {
            let top = &mut self.layers[t];
            top.header.uuid_parent_modify = new_parent_modify;
            top.write_header()?;
        }
        Ok(st)
    }

    /// Pull the parent's blocks into the top diff, so the top no longer needs that parent:
    /// it becomes a standalone image (when the parent was the base) or links to the
    /// grandparent. The parent is not modified. Returns the blocks copied.
    pub fn stream(&mut self, monitor: &mut dyn Monitor) -> Result<u64> {
        let n = self.layers.len();
        if n < 2 {
            return Err(VdiError::InvalidArgument("the image has no parent to merge".into()));
        }
        let (t, p) = (n - 1, n - 2);
        self.layers[t].check_writable_layer()?;
        let bs = self.block_size();
        let size = self.layers[p].virtual_size().min(self.virtual_size());
        let nblocks = size.div_ceil(bs) as u32;
        let mut copied = 0;
        // Sized at the first block that needs it (a header may claim 128 MiB blocks).
        let mut buf = Vec::new();
        for block in 0..nblocks {
            if monitor.cancelled() {
                return Err(VdiError::Cancelled);
            }
            if self.layers[t].entry(block)? != Entry::Free {
                continue;
            }
            let start = block as u64 * bs;
            let len = bs.min(size - start) as usize;
            match self.layers[p].entry(block)? {
                Entry::Data(slot) => {
                    buf.resize(len.max(buf.len()), 0);
                    let img = &self.layers[p];
                    let host = img.data_offset(block, slot)?;
                    crate::storage::read_exact(&img.storage, host, &mut buf[..len])?;
                    if all_zero(&buf[..len]) {
                        let top = &mut self.layers[t];
                        top.map.set(&top.storage, block, BLOCK_ZERO)?;
                        top.map.flush(&mut top.storage)?;
                    } else {
                        self.layers[t].write_unchecked(start, &buf[..len])?;
                        copied += 1;
                    }
                }
                Entry::Zero => {
                    let top = &mut self.layers[t];
                    top.map.set(&top.storage, block, BLOCK_ZERO)?;
                    top.map.flush(&mut top.storage)?;
                }
                Entry::Free => {}
            }
            monitor.progress(block as u64 + 1, nblocks as u64);
        }
        // One header write detaches the top from the parent.
        let parent = self.layers[p].header.clone();
        let top = &mut self.layers[t];
        if parent.kind() == Some(ImageType::Diff) {
            top.header.uuid_link = parent.uuid_link;
            top.header.uuid_parent_modify = parent.uuid_parent_modify;
        } else {
            top.header.image_type = ImageType::Normal.raw();
            top.header.uuid_link = Uuid::nil();
            top.header.uuid_parent_modify = Uuid::nil();
        }
        top.write_header()?;
        self.layers.remove(p);
        Ok(copied)
    }

    /// Compact the top diff: blocks that read the same as the layers below become FREE,
    /// all-zero blocks over non-zero ones become ZERO; then holes are filled and the file
    /// truncated. A chain of one layer compacts that image.
    pub fn compact_top(&mut self, monitor: &mut dyn Monitor) -> Result<CompactStats> {
        let n = self.layers.len();
        if n < 2 {
            return self.layers[0].compact(false, monitor);
        }
        let t = n - 1;
        // What compact asks of a single image: packing keeps only the slots check accounts
        // for (slots past blocks_in_image too), so any other corruption is refused first.
        self.layers[t].require_consistent_but_past_blocks("compacting")?;
        let mut st = CompactStats { file_len_before: self.layers[t].file_len, ..Default::default() };
        let bs = self.block_size();
        let size = self.virtual_size();
        let nblocks = size.div_ceil(bs) as u32;
        // Sized at the first stored block (a header may claim 128 MiB blocks).
        let (mut mine, mut below) = (Vec::new(), Vec::new());
        for block in 0..nblocks {
            if monitor.cancelled() {
                let img = &mut self.layers[t];
                img.map.flush(&mut img.storage)?;
                return Err(VdiError::Cancelled);
            }
            let Entry::Data(slot) = self.layers[t].entry(block)? else { continue };
            let start = block as u64 * bs;
            let len = bs.min(size - start) as usize;
            if mine.len() < len {
                mine.resize(len, 0);
                below.resize(len, 0);
            }
            {
                let img = &self.layers[t];
                let host = img.data_offset(block, slot)?;
                crate::storage::read_exact(&img.storage, host, &mut mine[..len])?;
            }
            self.read_in(t - 1, start, &mut below[..len])?;
            let mark = if mine[..len] == below[..len] {
                Some(BLOCK_FREE)
            } else if all_zero(&mine[..len]) {
                Some(BLOCK_ZERO)
            } else {
                None
            };
            if let Some(m) = mark {
                let img = &mut self.layers[t];
                img.map.set(&img.storage, block, m)?;
                st.blocks_zeroed += 1;
            }
            if block % 1024 == 1023 {
                let img = &mut self.layers[t];
                img.map.flush(&mut img.storage)?;
            }
            monitor.progress(block as u64 + 1, nblocks as u64);
        }
        let img = &mut self.layers[t];
        img.map.flush(&mut img.storage)?;
        let (moved, _) = img.reclaim_unchecked(monitor)?;
        st.blocks_moved = moved;
        st.file_len_after = img.file_len;
        st.bytes_reclaimed = st.file_len_before.saturating_sub(st.file_len_after);
        Ok(st)
    }
}
