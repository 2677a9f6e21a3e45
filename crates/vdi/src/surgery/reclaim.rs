//! Reclaim: fill the holes of the data area with blocks from its end, then truncate.

use super::{SlotOwners, NONE};
use crate::error::{Result, VdiError};
use crate::image::VdiImage;
use crate::monitor::Monitor;
use crate::storage::{flush, set_len, Storage};

/// Blocks moved between two write barriers (see the module docs of [`crate::surgery`]).
const MOVE_BATCH: usize = 256;

impl<S: Storage> VdiImage<S> {
    /// Fill holes in the data area by moving blocks from its end, then set
    /// `blocks_allocated` to the blocks in use and truncate the file. Each moved block is
    /// on the disk before its block-map entry (a write barrier per batch of moves).
    /// Returns (blocks moved, bytes reclaimed).
    pub fn reclaim(&mut self, monitor: &mut dyn Monitor) -> Result<(u64, u64)> {
        self.require_consistent("reclaiming space")?;
        self.reclaim_unchecked(monitor)
    }

    /// [`VdiImage::reclaim`] on an image the caller knows to be consistent (no duplicate
    /// entries, none past the end of the file).
    pub(crate) fn reclaim_unchecked(&mut self, monitor: &mut dyn Monitor) -> Result<(u64, u64)> {
        let before = self.file_len;
        let SlotOwners { mut dense, past } = self.slot_owners()?;
        let used = dense.iter().filter(|&&o| o != NONE).count() + past.len();
        // The slots in use at or past `used`, highest first: each moves into a hole below
        // `used` (as many holes there as slots in use past it; all below blocks_in_image,
        // since no more slots are in use than entries).
        let past = past.iter().rev().map(|(&s, &b)| (s, b));
        let high = dense.iter().enumerate().skip(used).rev().filter(|(_, &o)| o != NONE).map(|(s, &o)| (s as u64, o));
        let sources: Vec<(u64, u32)> = past.chain(high).collect();
        let to_move = sources.len() as u64;
        if to_move > 0 {
            // The entries that freed the holes are on the disk before a hole is overwritten.
            self.barrier()?;
        }
        let mut buf = Vec::new();
        // (block, new slot) of the batch whose data is copied but not yet pointed at.
        let mut batch: Vec<(u32, u32)> = Vec::new();
        let (mut lo, mut moved) = (0usize, 0u64);
        for &(src, block) in &sources {
            if monitor.cancelled() {
                self.point_batch(&mut batch)?;
                return Err(VdiError::Cancelled);
            }
            while dense[lo] != NONE {
                lo += 1;
            }
            self.copy_slot(src, lo as u64, &mut buf)?;
            batch.push((block, lo as u32));
            dense[lo] = block;
            moved += 1;
            monitor.progress(moved, to_move);
            if batch.len() == MOVE_BATCH {
                self.point_batch(&mut batch)?;
            }
        }
        self.point_batch(&mut batch)?;
        self.truncate_to(used as u64)?;
        Ok((moved, before.saturating_sub(self.file_len)))
    }

    /// Point the entries of `batch` at their copies: the copies land before the entries
    /// that point at them, and the entries before their old slots are reused or cut.
    fn point_batch(&mut self, batch: &mut Vec<(u32, u32)>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.barrier()?;
        for (block, slot) in batch.drain(..) {
            self.map.set(&self.storage, block, slot)?;
        }
        self.barrier()
    }

    /// Set `blocks_allocated` to `used` and cut the file after that many slots.
    fn truncate_to(&mut self, used: u64) -> Result<()> {
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
        Ok(())
    }
}
