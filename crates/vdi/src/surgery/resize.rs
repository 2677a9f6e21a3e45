//! Resize: shrink over zeros, grow in place, grow a fixed image, grow with the map moved.

use super::NONE;
use crate::block_map::{Entry, BLOCK_FREE};
use crate::error::{Result, VdiError};
use crate::header::{ImageType, VdiHeader, MAX_BLOCKS_IN_IMAGE, SECTOR_SIZE};
use crate::image::VdiImage;
use crate::monitor::Monitor;
use crate::storage::{flush, set_len, write_all, Storage};

/// Bytes of new block-map entries gathered per storage write.
const ENTRY_WRITE: usize = 256 * 1024;

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

impl<S: Storage> VdiImage<S> {
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
        let mut st = ResizeStats { old_size, new_size, ..Default::default() };
        if new_size < old_size {
            self.shrink_over_zeros(new_size, nb64 as u32, monitor)?;
            return Ok(st);
        }
        // Growing. The map may already hold more blocks than the old size needs (disk_size
        // below blocks_in_image * block_size): keep them all.
        self.zero_past_end(old_size)?;
        let mut h = self.header.clone();
        h.disk_size = new_size;
        h.blocks_in_image = (nb64 as u32).max(old_blocks);
        let fits = h.offset_bmap as u64 + h.map_bytes() <= h.offset_data as u64;
        match (self.header.kind() == Some(ImageType::Fixed), fits) {
            _ if h.blocks_in_image == old_blocks => self.commit_header(h)?,
            (true, _) => self.grow_fixed(h, fits)?,
            (false, true) => self.grow_in_place(h)?,
            (false, false) => self.grow_relocating_map(h, &mut st, monitor)?,
        }
        Ok(st)
    }

    /// Shrink to `new_size` (`new_blocks` blocks) when everything past it reads as zeros.
    fn shrink_over_zeros(&mut self, new_size: u64, new_blocks: u32, monitor: &mut dyn Monitor) -> Result<()> {
        let fixed = self.header.kind() == Some(ImageType::Fixed);
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
        Ok(())
    }

    /// Refuse a shrink that would cut non-zero data, or blocks of a fixed image that are not
    /// its last slots.
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
                if !self.zeros_at(at, bs, &mut buf)? {
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
            let upto = self.virtual_size().min(new_blocks as u64 * bs) - last as u64 * bs;
            if let Entry::Data(slot) = self.entry(last)? {
                let at = self.data_offset(last, slot)?;
                if !self.zeros_at(at + cut, upto.saturating_sub(cut), &mut buf)? {
                    return Err(VdiError::Unsupported(format!(
                        "shrinking to {new_size} bytes would discard non-zero data in block {last}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Before growing from `old_size`: make what lies past the old end read as zeros once it
    /// is inside the disk, first the rest of the old last block, then any block wholly past
    /// the old end (a dynamic image forgets it: a leak at worst; a fixed one gets zeros
    /// written). Until the header changes, none of it is inside the disk, so an
    /// interruption changes nothing the image reads.
    fn zero_past_end(&mut self, old_size: u64) -> Result<()> {
        let bs = self.block_size();
        let fixed = self.header.kind() == Some(ImageType::Fixed);
        let old_needed = old_size.div_ceil(bs) as u32;
        if old_size % bs != 0 && old_needed > 0 {
            let last = old_needed - 1;
            if let Entry::Data(slot) = self.entry(last)? {
                let from = old_size % bs;
                let host = self.data_offset(last, slot)? + from;
                self.write_zeros(host, bs - from)?;
            }
        }
        for b in old_needed..self.header.blocks_in_image {
            if let Entry::Data(slot) = self.entry(b)? {
                if fixed {
                    let host = self.data_offset(b, slot)?;
                    self.write_zeros(host, bs)?;
                } else {
                    self.map.set(&self.storage, b, BLOCK_FREE)?;
                }
            }
        }
        self.map.flush(&mut self.storage)?;
        Ok(())
    }

    /// Grow a dynamic image whose larger map `h` fits before the data: the new FREE entries
    /// go into the padding after the old map (unused until the header says they exist).
    fn grow_in_place(&mut self, h: VdiHeader) -> Result<()> {
        let old_blocks = self.header.blocks_in_image;
        self.write_new_entries(h.offset_bmap as u64, old_blocks, h.blocks_in_image, None)?;
        self.commit_header(h)
    }

    /// Grow a fixed image to `h`: the file is extended first, the new blocks allocated after
    /// the last slot, then their entries written after the old map. Refused when the larger
    /// map does not fit before the data (`fits` false).
    fn grow_fixed(&mut self, mut h: VdiHeader, fits: bool) -> Result<()> {
        if !fits {
            // Moving blocks to the end would need blocks_allocated > blocks_in_image for a
            // moment, which no reader accepts: there is no crash-safe order for this case.
            return Err(VdiError::Unsupported(format!(
                "growing this fixed image to {} bytes needs a larger block map than fits before its data \
                 (at {}); convert it to a dynamic image, resize, and convert back",
                h.disk_size, self.header.offset_data
            )));
        }
        let (old_blocks, new_blocks) = (self.header.blocks_in_image, h.blocks_in_image);
        let first_new_slot = self.header.blocks_allocated;
        self.extend_fixed(first_new_slot, new_blocks - old_blocks)?;
        h.blocks_allocated = first_new_slot + (new_blocks - old_blocks);
        self.write_new_entries(h.offset_bmap as u64, old_blocks, new_blocks, Some(first_new_slot))?;
        self.commit_header(h)
    }

    /// Grow a dynamic image whose larger map `h` would run into the data: free the first
    /// slots by moving their blocks to the end, write the whole new map, renumbered for the
    /// new data offset, where they were (dead space for the old header), then switch to it
    /// with one header write once the map is down.
    fn grow_relocating_map(&mut self, mut h: VdiHeader, st: &mut ResizeStats, monitor: &mut dyn Monitor) -> Result<()> {
        let stride = self.header.block_stride();
        let align: u64 = if self.header.offset_data % (1 << 20) == 0 { 1 << 20 } else { SECTOR_SIZE as u64 };
        let map_bytes = h.map_bytes().next_multiple_of(align);
        let k = map_bytes.div_ceil(stride);
        let new_bmap = self.header.offset_data as u64;
        let new_data = new_bmap + k * stride;
        let new_data32 = u32::try_from(new_data).map_err(|_| {
            VdiError::InvalidArgument(format!("a block map of {map_bytes} bytes would put the data past 4 GiB"))
        })?;
        let (relocated, moved_end) = self.move_first_slots(k, monitor)?;
        st.blocks_relocated = relocated;
        self.write_renumbered_map(new_bmap, k)?;
        self.write_new_entries(new_bmap, self.header.blocks_in_image, h.blocks_in_image, None)?;
        flush(&mut self.storage)?;
        h.offset_bmap = new_bmap as u32;
        h.offset_data = new_data32;
        h.blocks_allocated = moved_end.saturating_sub(k) as u32;
        self.commit_header(h)?;
        st.map_moved = true;
        Ok(())
    }

    /// Move the blocks of slots `0..k` to the end of the data area: the copies, then the
    /// header count, then the entries, each on the disk before the next. Returns the blocks
    /// moved and the slots now counted (`blocks_allocated`).
    fn move_first_slots(&mut self, k: u64, monitor: &mut dyn Monitor) -> Result<(u64, u64)> {
        // (No slot past blocks_in_image here: resize asks for a consistent image.)
        let owners = self.slot_owners()?.dense;
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
        Ok((moving.len() as u64, moved_end))
    }

    /// Write the current map at `at` (one write), each slot numbered `k` lower (the data
    /// area will start `k` slots later).
    fn write_renumbered_map(&mut self, at: u64, k: u64) -> Result<()> {
        let mut out: Vec<u8> = Vec::with_capacity(ENTRY_WRITE);
        let mut still_used = None;
        self.map.scan(&self.storage, 0, self.header.blocks_in_image, |_, entries| {
            for &raw in entries {
                let v = match Entry::from_raw(raw) {
                    Entry::Data(s) if (s as u64) < k => {
                        still_used = Some(s);
                        raw
                    }
                    Entry::Data(s) => s - k as u32,
                    _ => raw,
                };
                out.extend_from_slice(&v.to_le_bytes());
            }
            Ok(())
        })?;
        if let Some(s) = still_used {
            return Err(VdiError::Unsupported(format!("internal: slot {s} still in use after relocation")));
        }
        write_all(&mut self.storage, at, &out)?;
        self.file_len = self.file_len.max(at + out.len() as u64);
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
        let mut out = Vec::with_capacity(ENTRY_WRITE);
        let mut start = from;
        for i in from..to {
            let v = slot0.map(|s| s + (i - from)).unwrap_or(BLOCK_FREE);
            out.extend_from_slice(&v.to_le_bytes());
            if out.len() >= ENTRY_WRITE || i + 1 == to {
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
