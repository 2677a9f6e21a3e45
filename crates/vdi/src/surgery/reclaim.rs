//! Reclaim: fill the holes of the data area with blocks from its end, then truncate.

use super::NONE;
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
        self.truncate_to(used)?;
        Ok((moved, before.saturating_sub(self.file_len)))
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
