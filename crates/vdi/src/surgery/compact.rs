//! Compact: mark all-zero data blocks, then reclaim their slots.

use crate::block_map::{Entry, BLOCK_FREE, BLOCK_ZERO};
use crate::error::{Result, VdiError};
use crate::header::ImageType;
use crate::image::VdiImage;
use crate::monitor::{Monitor, NoMonitor};
use crate::storage::Storage;

/// Bytes of a block compact reads first to tell data from zeros.
const SCAN_HEAD: u64 = 64 * 1024;

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

impl<S: Storage> VdiImage<S> {
    /// Compact: mark all-zero data blocks ZERO (or FREE with `zero_as_free`), move blocks
    /// from the end of the file into the holes, set `blocks_allocated` and truncate.
    /// Dynamic images only. Blocks stored in slots past `blocks_in_image` (see
    /// [`crate::FindingKind::SlotPastBlocks`]) are moved below it: nothing is lost. `monitor` sees blocks scanned, then blocks moved.
    ///
    /// Cancelling stops the scan; the holes made so far are then packed (at most one block
    /// moved per block marked, not interruptible) so the image ends consistent with a
    /// `blocks_allocated` equal to the blocks in use. Cancelling while blocks are being
    /// moved is honoured between moves and leaves leaked slots (see [`VdiImage::reclaim`]).
    pub fn compact(&mut self, zero_as_free: bool, monitor: &mut dyn Monitor) -> Result<CompactStats> {
        match self.header.kind() {
            Some(ImageType::Fixed) => return Err(super::fs_aware::fixed_refused()),
            Some(ImageType::Diff) => {
                return Err(VdiError::Unsupported("compacting a differencing image without its parent".into()))
            }
            _ => {}
        }
        // Slots past blocks_in_image are packed below it like any other block.
        self.require_consistent_but_past_blocks("compacting")?;
        let mut st = CompactStats { file_len_before: self.file_len, ..Default::default() };
        st.blocks_zeroed = self.mark_zero_blocks(if zero_as_free { BLOCK_FREE } else { BLOCK_ZERO }, monitor)?;
        let (moved, _) = self.reclaim_unchecked(monitor)?;
        st.blocks_moved = moved;
        st.file_len_after = self.file_len;
        st.bytes_reclaimed = st.file_len_before.saturating_sub(st.file_len_after);
        Ok(st)
    }

    /// Set the entry of every all-zero data block to `mark`, the map written per batch of
    /// entries. Returns the number of blocks marked.
    pub(super) fn mark_zero_blocks(&mut self, mark: u32, monitor: &mut dyn Monitor) -> Result<u64> {
        // Sized at the first stored block: a header may claim 128 MiB blocks in a tiny file.
        let mut buf = Vec::new();
        let nb = self.header.blocks_in_image;
        let mut marked = 0u64;
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
                    if self.block_is_zero(i, slot, &mut buf)? {
                        self.map.set(&self.storage, i, mark)?;
                        marked += 1;
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
        Ok(marked)
    }

    /// True when the data of `block`, stored in `slot`, is all zeros.
    fn block_is_zero(&self, block: u32, slot: u32, buf: &mut Vec<u8>) -> Result<bool> {
        let at = self.data_offset(block, slot)?;
        let bs = self.block_size();
        // Data rarely starts with 64 KiB of zeros: read that much first, and the rest only
        // when it is all zeros (a scan of real disks reads ~1/16).
        let head = bs.min(SCAN_HEAD);
        Ok(self.zeros_at(at, head, buf)? && self.zeros_at(at + head, bs - head, buf)?)
    }
}
