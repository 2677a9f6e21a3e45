//! In-place surgery: compact, reclaim, discard, resize, repair.
//!
//! Every operation is ordered so that stopping after any single storage write leaves an
//! image that opens, reads the same data as before or after for every block, and checks
//! clean at worst with leaks. The invariant that makes this work: `blocks_allocated` in the
//! header is never below the highest slot in use + 1 (a new block never lands on data), and
//! a block's data is always written before the block-map entry that points at it.
//!
//! "Before" holds on the disk too, not only in the order of the calls: wherever a later
//! write depends on an earlier one having landed (data before the entry that points at it,
//! an entry that frees a slot before the slot is overwritten, the count before entries past
//! it, entries before the truncation that cuts their old slots), a write barrier
//! ([`Storage::flush`]) separates them, so a power cut keeps the same guarantee as a crash.
//! Moves go in batches of [`MOVE_BATCH`] blocks: two barriers per batch.

use crate::block_map::{Entry, BLOCK_FREE, BLOCK_ZERO};
use crate::check::{check_image, CheckReport};
use crate::error::{Result, VdiError};
use crate::header::{ImageType, VdiHeader, MAX_BLOCKS_IN_IMAGE, SECTOR_SIZE};
use crate::image::{all_zero, VdiImage};
use crate::monitor::{Monitor, NoMonitor};
use crate::storage::{flush, read_exact, set_len, write_all, ReadAt, Storage};

const NONE: u32 = u32::MAX;

/// Bytes of a block compact reads first to tell data from zeros.
const SCAN_HEAD: usize = 64 * 1024;

/// Blocks moved between two write barriers (see [`VdiImage::barrier`]).
const MOVE_BATCH: usize = 256;

/// What [`VdiImage::compact`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Data blocks found all-zero and marked ZERO (or FREE).
    pub blocks_zeroed: u64,
    /// Blocks moved from the end of the file into holes.
    pub blocks_moved: u64,
    /// Bytes the file shrank by.
    pub bytes_reclaimed: u64,
    /// File length before.
    pub file_len_before: u64,
    /// File length after.
    pub file_len_after: u64,
}

/// What [`VdiImage::resize`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResizeStats {
    /// Virtual size before.
    pub old_size: u64,
    /// Virtual size after.
    pub new_size: u64,
    /// Data blocks moved to the end of the file to make room for the larger block map.
    pub blocks_relocated: u64,
    /// Whether the block map moved (to where the first data blocks were).
    pub map_moved: bool,
}

/// One change [`repair`] makes (or would make, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairAction {
    /// What is done, for people.
    pub message: String,
    /// True when data that was reachable before is lost (it was already unreliable).
    pub data_lost: bool,
}

/// The result of [`repair`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// True when nothing was written.
    pub dry_run: bool,
    /// The changes, in order (the first [`crate::check::MAX_LISTED`] per kind are listed).
    pub actions: Vec<RepairAction>,
    /// Header values that could not be read and were guessed.
    pub guessed: Vec<String>,
    /// The check before repairing.
    pub before: CheckReport,
    /// The check after repairing (None in a dry run).
    pub after: Option<CheckReport>,
}

impl<S: Storage> VdiImage<S> {
    fn slots_in_file(&self) -> u64 {
        let h = &self.header;
        if self.file_len > h.offset_data as u64 {
            (self.file_len - h.offset_data as u64) / h.block_stride()
        } else {
            0
        }
    }

    /// A write barrier: everything written so far is on the disk before anything after.
    fn barrier(&mut self) -> Result<()> {
        self.map.flush(&mut self.storage)?;
        flush(&mut self.storage)
    }

    fn slot_base(&self, slot: u64) -> u64 {
        self.header.offset_data as u64 + slot * self.header.block_stride()
    }

    /// Refuse surgery on an image check finds corrupt (run repair first) or that is not a
    /// dynamic base image.
    fn require_consistent(&mut self, what: &str) -> Result<()> {
        self.check_writable()?;
        let r = check_image(self, &mut NoMonitor)?;
        if r.corruptions > 0 {
            let first = r.findings.iter().find(|f| f.severity == crate::Severity::Corruption);
            return Err(VdiError::Unsupported(format!(
                "{what} on an image with {} corruption(s) (first: {}); run repair first",
                r.corruptions,
                first.map(|f| f.message.as_str()).unwrap_or("?")
            )));
        }
        Ok(())
    }

    /// Which block owns each slot below `max(blocks_allocated, highest slot + 1)`.
    fn slot_owners(&mut self) -> Result<Vec<u32>> {
        let n = (self.header.blocks_allocated as u64).min(self.slots_in_file());
        let mut owners = vec![NONE; n as usize];
        let nb = self.header.blocks_in_image;
        self.map.scan(&self.storage, 0, nb, |first, entries| {
            for (k, &raw) in entries.iter().enumerate() {
                if let Entry::Data(s) = Entry::from_raw(raw) {
                    if let Some(o) = owners.get_mut(s as usize) {
                        *o = first + k as u32;
                    }
                }
            }
            Ok(())
        })?;
        Ok(owners)
    }

    /// Copy the stored bytes of slot `from` (prefix included) to slot `to`.
    fn copy_slot(&mut self, from: u64, to: u64, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize(self.header.block_stride() as usize, 0);
        read_exact(&self.storage, self.slot_base(from), buf)?;
        let at = self.slot_base(to);
        write_all(&mut self.storage, at, buf)?;
        self.file_len = self.file_len.max(at + buf.len() as u64);
        Ok(())
    }

    /// Fill holes in the data area by moving blocks from its end, then set
    /// `blocks_allocated` to the blocks in use and truncate the file. Each moved block is
    /// on the disk before its block-map entry (a write barrier per batch of moves).
    /// Returns (blocks moved, bytes reclaimed).
    pub fn reclaim(&mut self, monitor: &mut dyn Monitor) -> Result<(u64, u64)> {
        self.require_consistent("reclaiming space")?;
        self.reclaim_unchecked(monitor)
    }

    pub(crate) fn reclaim_unchecked(&mut self, monitor: &mut dyn Monitor) -> Result<(u64, u64)> {
        let before = self.file_len;
        let mut owners = self.slot_owners()?;
        let used = owners.iter().filter(|&&o| o != NONE).count() as u64;
        let mut buf = Vec::new();
        let (mut lo, mut hi) = (0usize, owners.len());
        let mut moved = 0u64;
        let to_move = owners[used as usize..].iter().filter(|&&o| o != NONE).count() as u64;
        if to_move > 0 {
            // The entries that freed the holes are on the disk before a hole is overwritten.
            self.barrier()?;
        }
        // (block, new slot) of the batch whose data is copied but not yet pointed at.
        let mut batch: Vec<(u32, u32)> = Vec::new();
        loop {
            while lo < owners.len() && owners[lo] != NONE {
                lo += 1;
            }
            while hi > 0 && owners[hi - 1] == NONE {
                hi -= 1;
            }
            let done = hi == 0 || lo >= hi - 1;
            let stop = !done && monitor.cancelled();
            if (done || stop || batch.len() == MOVE_BATCH) && !batch.is_empty() {
                // The copies land before the entries that point at them, and the entries
                // before their old slots are reused or cut.
                self.barrier()?;
                for (block, slot) in batch.drain(..) {
                    self.map.set(&self.storage, block, slot)?;
                }
                self.barrier()?;
            }
            if done {
                break;
            }
            if stop {
                return Err(VdiError::Cancelled);
            }
            let src = hi - 1;
            let block = owners[src];
            self.copy_slot(src as u64, lo as u64, &mut buf)?;
            batch.push((block, lo as u32));
            owners[lo] = block;
            owners[src] = NONE;
            moved += 1;
            monitor.progress(moved, to_move);
        }
        let end = self.slot_base(used);
        if self.header.blocks_allocated as u64 != used {
            self.header.blocks_allocated = used as u32;
            self.write_header()?;
        }
        if self.file_len > end {
            // The smaller count is on the disk before the slots it no longer covers go.
            flush(&mut self.storage)?;
            set_len(&mut self.storage, end)?;
            self.file_len = end;
        }
        self.next_slot = None;
        Ok((moved, before.saturating_sub(self.file_len)))
    }

    /// Compact: mark all-zero data blocks ZERO (or FREE with `zero_as_free`), move blocks
    /// from the end of the file into the holes, set `blocks_allocated` and truncate.
    /// Dynamic images only. `monitor` sees blocks scanned, then blocks moved.
    ///
    /// Cancelling stops the scan; the holes made so far are then packed (at most one block
    /// moved per block marked, not interruptible) so the image ends consistent with a
    /// `blocks_allocated` equal to the blocks in use. Cancelling while blocks are being
    /// moved is honoured between moves and leaves leaked slots (see [`VdiImage::reclaim`]).
    pub fn compact(&mut self, zero_as_free: bool, monitor: &mut dyn Monitor) -> Result<CompactStats> {
        match self.header.kind() {
            Some(ImageType::Fixed) => {
                return Err(VdiError::Unsupported(
                    "compacting a fixed image: every block of a fixed image stays allocated by design; \
                     convert it to a dynamic image (vdi convert -O vdi) instead"
                        .into(),
                ))
            }
            Some(ImageType::Diff) => {
                return Err(VdiError::Unsupported("compacting a differencing image without its parent".into()))
            }
            _ => {}
        }
        self.require_consistent("compacting")?;
        let mut st = CompactStats { file_len_before: self.file_len, ..Default::default() };
        let mark = if zero_as_free { BLOCK_FREE } else { BLOCK_ZERO };
        let bs = self.header.block_size as usize;
        // Sized at the first stored block: a header may claim 128 MiB blocks in a tiny file.
        let mut buf = Vec::new();
        let nb = self.header.blocks_in_image;
        const BATCH: u32 = 1024;
        let mut b = 0u32;
        while b < nb {
            let end = (b + BATCH).min(nb);
            for i in b..end {
                if monitor.cancelled() {
                    // Blocks already marked leave holes that blocks_allocated still counts: a
                    // leak to us, an "allocated blocks mismatch" corruption to qemu-img. Pack
                    // them (at most one move per block marked) before stopping, so a cancelled
                    // compact leaves an image both tools call clean.
                    self.map.flush(&mut self.storage)?;
                    self.reclaim_unchecked(&mut NoMonitor)?;
                    return Err(VdiError::Cancelled);
                }
                if let Entry::Data(slot) = self.entry(i)? {
                    let at = self.data_offset(i, slot)?;
                    buf.resize(bs, 0);
                    // Data rarely starts with 64 KiB of zeros: read that much first, and the
                    // rest only when it is all zeros (a scan of real disks reads ~1/16).
                    let head = bs.min(SCAN_HEAD);
                    read_exact(&self.storage, at, &mut buf[..head])?;
                    let zero = all_zero(&buf[..head]) && {
                        read_exact(&self.storage, at + head as u64, &mut buf[head..])?;
                        all_zero(&buf[head..])
                    };
                    if zero {
                        self.map.set(&self.storage, i, mark)?;
                        st.blocks_zeroed += 1;
                    }
                    // Reading is the slow part: report it often (a batch is up to 128 GiB).
                    if i % 16 == 15 {
                        monitor.progress(i as u64 + 1, nb as u64);
                    }
                }
            }
            self.map.flush(&mut self.storage)?;
            b = end;
            monitor.progress(b as u64, nb as u64);
        }
        let (moved, _) = self.reclaim_unchecked(monitor)?;
        st.blocks_moved = moved;
        st.file_len_after = self.file_len;
        st.bytes_reclaimed = st.file_len_before.saturating_sub(st.file_len_after);
        Ok(st)
    }

    /// Discard `len` bytes at `offset`: whole blocks become ZERO and their space is
    /// reclaimed; the parts of partial blocks in the range are overwritten with zeros.
    /// Returns the number of whole blocks discarded and the bytes the file shrank by.
    pub fn discard(&mut self, offset: u64, len: u64, monitor: &mut dyn Monitor) -> Result<(u64, u64)> {
        self.check_range("discard", offset, len)?;
        if self.header.kind() == Some(ImageType::Fixed) {
            return Err(VdiError::Unsupported(
                "discarding in a fixed image: every block of a fixed image stays allocated by design; \
                 write zeros instead"
                    .into(),
            ));
        }
        self.require_consistent("discarding")?;
        let bs = self.block_size();
        let end = offset + len;
        let first_whole = offset.div_ceil(bs);
        let last_whole = end / bs; // exclusive
        let size = self.virtual_size();
        // Zero the partial pieces (data first).
        let zero_range = |img: &mut Self, a: u64, b: u64| -> Result<()> {
            if b > a {
                let block = (a / bs) as u32;
                if let Entry::Data(slot) = img.entry(block)? {
                    let host = img.data_offset(block, slot)? + a % bs;
                    write_all(&mut img.storage, host, &vec![0u8; (b - a) as usize])?;
                }
            }
            Ok(())
        };
        if first_whole > last_whole {
            zero_range(self, offset, end)?; // inside one block
        } else {
            zero_range(self, offset, (first_whole * bs).min(end))?;
            // The disk's last block counts as whole when the range reaches the end of the disk.
            let tail_start = last_whole * bs;
            if end == size && tail_start < end {
                self.discard_block(last_whole as u32)?;
            } else {
                zero_range(self, tail_start.max(offset), end)?;
            }
        }
        let mut n = 0;
        for b in first_whole..last_whole {
            if self.discard_block(b as u32)? {
                n += 1;
            }
        }
        self.map.flush(&mut self.storage)?;
        let (_, reclaimed) = self.reclaim_unchecked(monitor)?;
        Ok((n, reclaimed))
    }

    fn discard_block(&mut self, block: u32) -> Result<bool> {
        match self.entry(block)? {
            Entry::Data(_) => {
                self.map.set(&self.storage, block, BLOCK_ZERO)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Change the virtual size. Growing never moves data unless the larger block map would
    /// run into the data area: then the first data blocks move to the end of the file and
    /// the new map is written where they were; one header write switches to it. Shrinking
    /// is allowed only when everything past the new end reads as zeros.
    pub fn resize(&mut self, new_size: u64, monitor: &mut dyn Monitor) -> Result<ResizeStats> {
        if self.is_diff() {
            return Err(VdiError::Unsupported("resizing a differencing image without its parent".into()));
        }
        self.require_consistent("resizing")?;
        let new_size = new_size
            .checked_next_multiple_of(SECTOR_SIZE as u64)
            .ok_or_else(|| VdiError::InvalidArgument(format!("size {new_size} is too large")))?;
        let bs = self.block_size();
        let old_size = self.virtual_size();
        let old_blocks = self.header.blocks_in_image;
        let nb64 = new_size.div_ceil(bs);
        if nb64 > MAX_BLOCKS_IN_IMAGE as u64 {
            return Err(VdiError::InvalidArgument(format!(
                "size {new_size} needs {nb64} blocks of {bs} bytes; at most {MAX_BLOCKS_IN_IMAGE} fit"
            )));
        }
        let new_blocks = nb64 as u32;
        let fixed = self.header.kind() == Some(ImageType::Fixed);
        let mut st = ResizeStats { old_size, new_size, ..Default::default() };
        if new_size < old_size {
            self.check_shrink(new_size, new_blocks, fixed)?;
            let mut h = self.header.clone();
            h.disk_size = new_size;
            h.blocks_in_image = new_blocks;
            if fixed {
                h.blocks_allocated = new_blocks;
            }
            self.commit_header(h)?;
            if fixed {
                let end = self.slot_base(new_blocks as u64);
                set_len(&mut self.storage, end)?;
                self.file_len = end;
            } else {
                // Blocks past the new end (all zeros) no longer have entries: reclaim their slots.
                self.reclaim_unchecked(monitor)?;
            }
            return Ok(st);
        }
        // Growing. The map may already hold more blocks than the old size needs (disk_size
        // below blocks_in_image * block_size): keep them all, and make what lies past the old
        // end read as zeros once it is inside the disk, first the rest of the old last block,
        // then any block wholly past the old end (a dynamic image forgets it: a leak at
        // worst; a fixed one gets zeros written). Until the header changes, none of it is
        // inside the disk, so an interruption changes nothing the image reads.
        let new_blocks = new_blocks.max(old_blocks);
        let old_needed = old_size.div_ceil(bs) as u32;
        if old_size % bs != 0 && old_needed > 0 {
            let last = old_needed - 1;
            if let Entry::Data(slot) = self.entry(last)? {
                let from = old_size % bs;
                let host = self.data_offset(last, slot)? + from;
                write_all(&mut self.storage, host, &vec![0u8; (bs - from) as usize])?;
            }
        }
        for b in old_needed..old_blocks {
            if let Entry::Data(slot) = self.entry(b)? {
                if fixed {
                    let host = self.data_offset(b, slot)?;
                    write_all(&mut self.storage, host, &vec![0u8; bs as usize])?;
                } else {
                    self.map.set(&self.storage, b, BLOCK_FREE)?;
                }
            }
        }
        self.map.flush(&mut self.storage)?;
        let mut h = self.header.clone();
        h.disk_size = new_size;
        h.blocks_in_image = new_blocks;
        if new_blocks == old_blocks {
            return self.commit_header(h).map(|_| st);
        }
        let need_end = h.offset_bmap as u64 + new_blocks as u64 * 4;
        // Fixed images allocate the new blocks now: extend the file first.
        let first_new_slot = self.header.blocks_allocated;
        if need_end <= self.header.offset_data as u64 {
            if fixed {
                self.extend_fixed(first_new_slot, new_blocks - old_blocks)?;
                h.blocks_allocated = first_new_slot + (new_blocks - old_blocks);
            }
            // New entries go into the padding after the old map (unused until the header
            // says they exist).
            self.write_new_entries(h.offset_bmap as u64, old_blocks, new_blocks, fixed.then_some(first_new_slot))?;
            self.commit_header(h)?;
            return Ok(st);
        }
        if fixed {
            // Moving blocks to the end would need blocks_allocated > blocks_in_image for a
            // moment, which no reader accepts: there is no crash-safe order for this case.
            return Err(VdiError::Unsupported(format!(
                "growing this fixed image to {new_size} bytes needs a larger block map than fits before its data \
                 (at {}); convert it to a dynamic image, resize, and convert back",
                self.header.offset_data
            )));
        }
        // Relocation: free the first k slots by moving their blocks to the end.
        let stride = self.header.block_stride();
        let align: u64 = if self.header.offset_data % (1 << 20) == 0 { 1 << 20 } else { SECTOR_SIZE as u64 };
        let map_bytes = (new_blocks as u64 * 4).next_multiple_of(align);
        let k = map_bytes.div_ceil(stride);
        let new_bmap = self.header.offset_data as u64;
        let new_data = new_bmap + k * stride;
        let new_data32 = u32::try_from(new_data).map_err(|_| {
            VdiError::InvalidArgument(format!("a block map of {map_bytes} bytes would put the data past 4 GiB"))
        })?;
        let owners = self.slot_owners()?;
        let ba = self.header.blocks_allocated as u64;
        let target0 = ba.max(k);
        let moving: Vec<(u64, u32)> =
            owners.iter().take(k as usize).enumerate().filter(|(_, &o)| o != NONE).map(|(s, &o)| (s as u64, o)).collect();
        let mut buf = Vec::new();
        for (j, &(slot, _)) in moving.iter().enumerate() {
            if monitor.cancelled() {
                return Err(VdiError::Cancelled);
            }
            self.copy_slot(slot, target0 + j as u64, &mut buf)?;
            monitor.progress(j as u64 + 1, moving.len() as u64);
        }
        let moved_end = if moving.is_empty() { ba } else { target0 + moving.len() as u64 };
        // Header count first (the copies are on the disk now), then the entries.
        self.barrier()?;
        if moved_end > ba {
            self.header.blocks_allocated = moved_end as u32;
            self.write_header()?;
            flush(&mut self.storage)?;
        }
        for (j, &(_, block)) in moving.iter().enumerate() {
            self.map.set(&self.storage, block, (target0 + j as u64) as u32)?;
        }
        // The entries point at the copies before the old slots are overwritten by the map.
        self.barrier()?;
        st.blocks_relocated = moving.len() as u64;
        // Fixed: allocate the new blocks after everything else.
        let mut new_alloc = None;
        let mut count_end = moved_end.max(ba);
        if fixed {
            let base = count_end.max(k);
            self.extend_fixed(base as u32, new_blocks - old_blocks)?;
            new_alloc = Some((base - k) as u32);
            count_end = base + (new_blocks - old_blocks) as u64;
        }
        // Write the whole new map, renumbered for the new data offset, where the moved
        // blocks were (dead space for the old header).
        let mut out: Vec<u8> = Vec::with_capacity(256 * 1024);
        let mut pos = new_bmap;
        let flush_out = |img: &mut Self, out: &mut Vec<u8>, pos: &mut u64| -> Result<()> {
            write_all(&mut img.storage, *pos, out)?;
            img.file_len = img.file_len.max(*pos + out.len() as u64);
            *pos += out.len() as u64;
            out.clear();
            Ok(())
        };
        let mut renumber_err = None;
        let map = std::mem::replace(&mut self.map, crate::block_map::BlockMap::new(0, 0));
        let scan = map.scan(&self.storage, 0, old_blocks, |_, entries| {
            for &raw in entries {
                let v = match Entry::from_raw(raw) {
                    Entry::Data(s) if (s as u64) < k => {
                        renumber_err = Some(s);
                        raw
                    }
                    Entry::Data(s) => s - k as u32,
                    _ => raw,
                };
                out.extend_from_slice(&v.to_le_bytes());
            }
            Ok(())
        });
        self.map = map;
        scan?;
        if let Some(s) = renumber_err {
            return Err(VdiError::Unsupported(format!("internal: slot {s} still in use after relocation")));
        }
        flush_out(self, &mut out, &mut pos)?;
        for i in old_blocks..new_blocks {
            let v = match new_alloc {
                Some(base) => base + (i - old_blocks),
                None => BLOCK_FREE,
            };
            out.extend_from_slice(&v.to_le_bytes());
            if out.len() >= 256 * 1024 {
                flush_out(self, &mut out, &mut pos)?;
            }
        }
        if !out.is_empty() {
            flush_out(self, &mut out, &mut pos)?;
        }
        // One header write switches to the new map and data offset (once the map is down).
        flush(&mut self.storage)?;
        h.offset_bmap = new_bmap as u32;
        h.offset_data = new_data32;
        h.blocks_allocated = count_end.saturating_sub(k) as u32;
        self.commit_header(h)?;
        st.map_moved = true;
        Ok(st)
    }

    fn check_shrink(&mut self, new_size: u64, new_blocks: u32, fixed: bool) -> Result<()> {
        let bs = self.block_size();
        let old_blocks = self.header.blocks_in_image;
        if fixed {
            // Fixed images: the blocks past the end are allocated by design; they may go
            // only if they hold zeros and are the last slots.
            for b in new_blocks..old_blocks {
                if self.entry(b)? != Entry::Data(b) {
                    return Err(VdiError::Unsupported(format!(
                        "shrinking this fixed image: block {b} is not in slot {b}"
                    )));
                }
            }
        }
        let mut buf = Vec::new(); // sized at the first stored block, as in compact
        for b in new_blocks..old_blocks {
            if let Entry::Data(slot) = self.entry(b)? {
                let at = self.data_offset(b, slot)?;
                buf.resize(bs as usize, 0);
                read_exact(&self.storage, at, &mut buf)?;
                if !all_zero(&buf) {
                    return Err(VdiError::Unsupported(format!(
                        "shrinking to {new_size} bytes would discard data: block {b} (at {}) holds non-zero data",
                        b as u64 * bs
                    )));
                }
            }
        }
        // The part of the new last block past the new end.
        let cut = new_size % bs;
        if cut != 0 {
            let last = new_blocks - 1;
            let upto = (self.virtual_size().min(new_blocks as u64 * bs) - last as u64 * bs) as usize;
            if let Entry::Data(slot) = self.entry(last)? {
                let at = self.data_offset(last, slot)?;
                let mut tail = vec![0u8; upto.saturating_sub(cut as usize)];
                read_exact(&self.storage, at + cut, &mut tail)?;
                if !all_zero(&tail) {
                    return Err(VdiError::Unsupported(format!(
                        "shrinking to {new_size} bytes would discard non-zero data in block {last}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Extend the file with `n` zero-filled slots starting at `first` (fixed images).
    fn extend_fixed(&mut self, first: u32, n: u32) -> Result<()> {
        let end = self.slot_base(first as u64 + n as u64);
        if end > self.file_len {
            set_len(&mut self.storage, end)?;
            self.file_len = end;
        }
        Ok(())
    }

    /// Write entries `from..to` of a map at `bmap`: FREE, or consecutive slots from `slot0`.
    fn write_new_entries(&mut self, bmap: u64, from: u32, to: u32, slot0: Option<u32>) -> Result<()> {
        let mut out = Vec::with_capacity(256 * 1024);
        let mut start = from;
        for i in from..to {
            let v = slot0.map(|s| s + (i - from)).unwrap_or(BLOCK_FREE);
            out.extend_from_slice(&v.to_le_bytes());
            if out.len() >= 256 * 1024 || i + 1 == to {
                let at = bmap + start as u64 * 4;
                write_all(&mut self.storage, at, &out)?;
                self.file_len = self.file_len.max(at + out.len() as u64);
                start = i + 1;
                out.clear();
            }
        }
        Ok(())
    }

    /// Write a header that changes the layout, and reset the cached state to match.
    fn commit_header(&mut self, h: VdiHeader) -> Result<()> {
        h.validate_fields()?;
        h.validate_layout(self.file_len)?;
        self.header = h;
        self.write_header()?;
        let (off, n) = (self.header.offset_bmap as u64, self.header.blocks_in_image);
        self.map.reset(off, n);
        self.next_slot = None;
        Ok(())
    }
}

/// Repair what check finds and can be fixed: entries out of range, past the end of the file
/// or duplicated are cleared (the data they named is reported lost), `blocks_allocated` is
/// recomputed, leaked slots are reclaimed, trailing bytes are cut, an odd `disk_size` is
/// rounded up to a sector. Header fields that break a rule but can be inferred are rebuilt
/// and listed in `guessed`. With `dry_run` nothing is written.
pub fn repair<S: Storage>(mut storage: S, dry_run: bool, monitor: &mut dyn Monitor) -> Result<(RepairReport, S)> {
    let mut rep = RepairReport { dry_run, ..Default::default() };
    let mut header = crate::image::read_header(&storage).or_else(|e| match e {
        VdiError::BadSignature { .. } => {
            let h = restore_signature(&storage)?;
            rep.guessed.push("signature at 0x40 was damaged; restored from the header text and version".into());
            Ok(h)
        }
        e => Err(e),
    })?;
    if header.version == crate::header::VDI_VERSION_0_2 {
        // Refused in a dry run too: it would list changes that cannot be written.
        return Err(VdiError::Unsupported("repairing a legacy v0.2 image (v0.2 images are read-only)".into()));
    }
    let file_len = crate::storage::storage_len(&storage)?;
    guess_fields(&mut header, file_len, &mut rep.guessed)?;
    header.validate_fields()?;
    header.validate_layout(file_len)?;
    if !rep.guessed.is_empty() && !dry_run {
        let b = header.to_bytes()?;
        write_all(&mut storage, 0, &b)?;
    }
    let mut img = VdiImage::with_header(storage, header, file_len)?;
    rep.before = check_image(&mut img, &mut NoMonitor)?;

    // Plan the entry fixes.
    let h = img.header.clone();
    let slots_in_file = img.slots_in_file().min(h.blocks_in_image as u64);
    let mut seen = vec![NONE; slots_in_file as usize];
    let mut clear: Vec<(u32, String)> = Vec::new();
    let mut max_end = 0u64;
    let mut used = 0u64;
    let mut free = 0u64;
    img.map.scan(&img.storage, 0, h.blocks_in_image, |first, entries| {
        for (k, &raw) in entries.iter().enumerate() {
            let b = first + k as u32;
            free += (raw == BLOCK_FREE) as u64;
            if let Entry::Data(s) = Entry::from_raw(raw) {
                let off = h.virtual_size().min(b as u64 * h.block_size as u64);
                if s >= h.blocks_in_image {
                    clear.push((b, format!("block {b} (disk offset {off}) named slot {s}, not below blocks_in_image; cleared, its data is lost")));
                } else if s as u64 >= slots_in_file {
                    clear.push((b, format!("block {b} (disk offset {off}) named slot {s}, past the end of the file; cleared, its data was never stored")));
                } else if seen[s as usize] != NONE {
                    clear.push((b, format!("block {b} (disk offset {off}) shared slot {s} with block {}; cleared, block {b} now reads zeros", seen[s as usize])));
                } else {
                    seen[s as usize] = b;
                    used += 1;
                    max_end = max_end.max(s as u64 + 1);
                }
            }
        }
        Ok(())
    })?;
    for (_, m) in &clear {
        if rep.actions.len() < crate::check::MAX_LISTED {
            rep.actions.push(RepairAction { message: m.clone(), data_lost: true });
        }
    }
    if clear.len() > crate::check::MAX_LISTED {
        rep.actions.push(RepairAction {
            message: format!("... and {} more entries cleared", clear.len() - crate::check::MAX_LISTED),
            data_lost: true,
        });
    }
    // A fixed image has every block allocated; one that has lost blocks (entries cleared
    // here, or FREE already: a truncated fixed image) can only be a dynamic one. Growing the
    // file back to the size its header claims could take any amount of space.
    let unallocated = free + clear.len() as u64;
    let to_dynamic = h.kind() == Some(ImageType::Fixed) && unallocated > 0;
    if to_dynamic {
        rep.actions.push(RepairAction {
            message: format!(
                "image_type set from 2 (fixed) to 1 (dynamic): {unallocated} block(s) are no longer allocated and read as zeros"
            ),
            data_lost: false,
        });
    }
    let leaked = max_end - used;
    let trailing = file_len.saturating_sub(img.slot_base(used));
    if h.blocks_allocated as u64 != used {
        rep.actions.push(RepairAction {
            message: format!("blocks_allocated set from {} to {used}", h.blocks_allocated),
            data_lost: false,
        });
    }
    if leaked > 0 {
        rep.actions.push(RepairAction {
            message: format!("{leaked} leaked slot(s) reclaimed by moving blocks from the end of the file"),
            data_lost: false,
        });
    }
    if trailing > 0 {
        rep.actions.push(RepairAction {
            message: format!("file truncated to {} bytes (from {file_len})", img.slot_base(used)),
            data_lost: false,
        });
    }
    if dry_run {
        return Ok((rep, img.storage));
    }
    // 1. The header count covers every slot still in use (never below: crash-safe).
    let recount = (img.header.blocks_allocated as u64) < max_end || img.header.blocks_allocated as u64 > slots_in_file;
    if recount {
        img.header.blocks_allocated = max_end as u32;
    }
    if to_dynamic {
        img.header.image_type = ImageType::Normal.raw();
    }
    if recount || to_dynamic {
        img.write_header()?;
    }
    // 2. Clear the bad entries.
    for (b, _) in &clear {
        img.map.set(&img.storage, *b, BLOCK_FREE)?;
    }
    img.map.flush(&mut img.storage)?;
    // 3. Fill holes, set the count, truncate.
    img.reclaim_unchecked(monitor)?;
    crate::storage::flush(&mut img.storage)?;
    rep.after = Some(check_image(&mut img, &mut NoMonitor)?);
    Ok((rep, img.storage))
}

/// Rebuild a header whose signature was damaged, when the rest still reads as a v1.1 header.
fn restore_signature<S: ReadAt>(storage: &S) -> Result<VdiHeader> {
    let len = crate::storage::storage_len(storage)?;
    let mut buf = vec![0u8; len.min(0x200) as usize];
    read_exact(storage, 0, &mut buf)?;
    if buf.len() < 0x1D8 || !buf.starts_with(b"<<< ") || !buf[..64].windows(10).any(|w| w == b"Disk Image") {
        return Err(VdiError::BadSignature { found: u32::from_le_bytes([buf[0x40], buf[0x41], buf[0x42], buf[0x43]]) });
    }
    buf[0x40..0x44].copy_from_slice(&crate::header::VDI_SIGNATURE.to_le_bytes());
    VdiHeader::parse(&buf)
}

/// Fix header fields that break a rule but can be inferred; say what was guessed.
fn guess_fields(h: &mut VdiHeader, file_len: u64, guessed: &mut Vec<String>) -> Result<()> {
    if h.kind().is_none() {
        guessed.push(format!("image_type {} is invalid; set to 1 (dynamic)", h.image_type));
        h.image_type = 1;
    }
    if h.legacy_geometry.sector_size != SECTOR_SIZE && h.version != crate::header::VDI_VERSION_0_2 {
        guessed.push(format!("sector_size {} set to 512", h.legacy_geometry.sector_size));
        h.legacy_geometry.sector_size = SECTOR_SIZE;
    }
    if let Some(l) = h.lchs.as_mut() {
        if l.sector_size != SECTOR_SIZE && l.sector_size != 0 {
            guessed.push(format!("LCHS sector_size {} set to 512", l.sector_size));
            l.sector_size = SECTOR_SIZE;
        }
    }
    if h.block_size.is_power_of_two() && h.blocks_in_image <= MAX_BLOCKS_IN_IMAGE {
        let cap = h.blocks_in_image as u64 * h.block_size as u64;
        if h.disk_size > cap {
            guessed.push(format!("disk_size {} exceeds blocks_in_image * block_size; set to {cap}", h.disk_size));
            h.disk_size = cap;
        }
    }
    if h.disk_size % SECTOR_SIZE as u64 != 0 {
        let r = h.virtual_size();
        guessed.push(format!("disk_size {} rounded up to {r} (a whole sector)", h.disk_size));
        h.disk_size = r;
    }
    if h.blocks_allocated > h.blocks_in_image {
        let slots = file_len.saturating_sub(h.offset_data as u64) / h.block_stride().max(1);
        let v = slots.min(h.blocks_in_image as u64) as u32;
        guessed.push(format!("blocks_allocated {} exceeds blocks_in_image; set to {v} from the file size", h.blocks_allocated));
        h.blocks_allocated = v;
    }
    Ok(())
}
