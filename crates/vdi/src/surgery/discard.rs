//! Discard: whole blocks become ZERO and their slots are reclaimed; partial blocks get zeros.

use crate::block_map::{Entry, BLOCK_ZERO};
use crate::error::{Result, VdiError};
use crate::header::ImageType;
use crate::image::VdiImage;
use crate::monitor::Monitor;
use crate::storage::Storage;

impl<S: Storage> VdiImage<S> {
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
        if first_whole > last_whole {
            self.zero_range(offset, end)?; // inside one block
        } else {
            self.zero_range(offset, (first_whole * bs).min(end))?;
            // The disk's last block counts as whole when the range reaches the end of the disk.
            let tail_start = last_whole * bs;
            if end == size && tail_start < end {
                self.discard_block(last_whole as u32)?;
            } else {
                self.zero_range(tail_start.max(offset), end)?;
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

    /// Write zeros over the disk bytes `a..b`, which lie in one block, when it is stored.
    fn zero_range(&mut self, a: u64, b: u64) -> Result<()> {
        if b > a {
            let bs = self.block_size();
            let block = (a / bs) as u32;
            if let Entry::Data(slot) = self.entry(block)? {
                let host = self.data_offset(block, slot)? + a % bs;
                self.write_zeros(host, b - a)?;
            }
        }
        Ok(())
    }

    /// Mark `block` ZERO (in the map cache) if it is stored; returns whether it was.
    fn discard_block(&mut self, block: u32) -> Result<bool> {
        match self.entry(block)? {
            Entry::Data(_) => {
                self.map.set(&self.storage, block, BLOCK_ZERO)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
