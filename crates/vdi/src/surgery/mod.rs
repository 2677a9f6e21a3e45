//! In-place surgery: compact, reclaim, discard, resize, repair, one file each; this file
//! holds what they share (slot arithmetic, moves, barriers, zero fills and tests).
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
//! Moves go in batches of `MOVE_BATCH` blocks: two barriers per batch.
//!
//! No buffer here holds more than [`CHUNK`] bytes, whatever the block size (up to 128 MiB):
//! copies, zero fills and zero tests go in pieces.

mod compact;
mod discard;
mod fs_aware;
mod reclaim;
mod repair;
mod resize;

pub use compact::CompactStats;
pub use fs_aware::FsCompactStats;
pub use repair::{repair, RepairAction, RepairReport};
pub use resize::ResizeStats;

use std::collections::BTreeMap;

use crate::block_map::Entry;
use crate::check::check_image;
use crate::error::{Result, VdiError};
use crate::image::{all_zero, VdiImage};
use crate::monitor::NoMonitor;
use crate::storage::{flush, read_exact, write_all, Storage};
use crate::transfer::CHUNK;

/// No block owns the slot (in [`VdiImage::slot_owners`]).
const NONE: u32 = u32::MAX;

/// Which block owns each slot (see [`VdiImage::slot_owners`]).
struct SlotOwners {
    /// Below `blocks_in_image`: the owner of each slot, or [`NONE`].
    dense: Vec<u32>,
    /// Past it: slot -> owner.
    past: BTreeMap<u64, u32>,
}

impl<S: Storage> VdiImage<S> {
    /// A write barrier: everything written so far is on the disk before anything after.
    fn barrier(&mut self) -> Result<()> {
        self.map.flush(&mut self.storage)?;
        flush(&mut self.storage)
    }

    /// Host offset of `slot` (its prefix included).
    fn slot_base(&self, slot: u64) -> u64 {
        self.header.offset_data as u64 + slot * self.header.block_stride()
    }

    /// Refuse surgery on an image check finds corrupt (run repair first) or that is not a
    /// dynamic base image.
    fn require_consistent(&mut self, what: &str) -> Result<()> {
        self.check_writable()?;
        self.require_no_corruption(what, false)
    }

    /// [`Self::require_consistent`] for an operation that packs the data area (compact):
    /// slots past `blocks_in_image` are accepted, since packing moves them below it.
    pub(crate) fn require_consistent_but_past_blocks(&mut self, what: &str) -> Result<()> {
        self.check_layout_writable()?;
        self.require_no_corruption(what, true)
    }

    /// Refuse when check finds a corruption (other than slots past `blocks_in_image`, when
    /// `past_blocks_ok`).
    fn require_no_corruption(&mut self, what: &str, past_blocks_ok: bool) -> Result<()> {
        let r = check_image(self, &mut NoMonitor)?;
        let ok = |f: &crate::Finding| past_blocks_ok && f.kind == crate::FindingKind::SlotPastBlocks;
        let bad = r.corruptions - if past_blocks_ok { r.past_blocks } else { 0 };
        if bad > 0 {
            let first = r.findings.iter().find(|f| f.severity == crate::Severity::Corruption && !ok(f));
            return Err(VdiError::Unsupported(format!(
                "{what} on an image with {bad} corruption(s) (first: {}); run repair first",
                first.map(|f| f.message.as_str()).unwrap_or("?")
            )));
        }
        Ok(())
    }

    /// Which block owns each slot below `min(blocks_allocated, slots in the file)`: a dense
    /// array below `blocks_in_image`, the (at most `blocks_in_image`) slots past it sorted
    /// (the count may reach 2^32 slots in a sparse file; the map names few of them).
    fn slot_owners(&mut self) -> Result<SlotOwners> {
        let n = (self.header.blocks_allocated as u64).min(self.slots_in_file());
        let nb = self.header.blocks_in_image;
        let mut owners = SlotOwners { dense: vec![NONE; n.min(nb as u64) as usize], past: BTreeMap::new() };
        self.map.scan(&self.storage, 0, nb, |first, entries| {
            for (k, &raw) in entries.iter().enumerate() {
                if let Entry::Data(s) = Entry::from_raw(raw) {
                    let b = first + k as u32;
                    match owners.dense.get_mut(s as usize) {
                        Some(o) => *o = b,
                        None if (s as u64) < n => {
                            owners.past.insert(s as u64, b);
                        }
                        None => {}
                    }
                }
            }
            Ok(())
        })?;
        Ok(owners)
    }

    /// Copy the stored bytes of slot `from` (prefix included) to slot `to`, at most
    /// [`CHUNK`] bytes at a time through `buf`.
    fn copy_slot(&mut self, from: u64, to: u64, buf: &mut Vec<u8>) -> Result<()> {
        let stride = self.header.block_stride();
        let (src, dst) = (self.slot_base(from), self.slot_base(to));
        let mut done = 0u64;
        while done < stride {
            let piece = chunk_of(buf, stride - done);
            read_exact(&self.storage, src + done, piece)?;
            write_all(&mut self.storage, dst + done, piece)?;
            done += piece.len() as u64;
            self.file_len = self.file_len.max(dst + done);
        }
        Ok(())
    }

    /// Write `len` zero bytes at host offset `at`, at most [`CHUNK`] bytes per write.
    fn write_zeros(&mut self, at: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; len.min(CHUNK as u64) as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            write_all(&mut self.storage, at + done, &zeros[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// True when the `len` bytes at host offset `at` are all zeros; reads at most [`CHUNK`]
    /// bytes at a time through `buf` and stops at the first piece that is not.
    fn zeros_at(&self, at: u64, len: u64, buf: &mut Vec<u8>) -> Result<bool> {
        let mut done = 0u64;
        while done < len {
            let piece = chunk_of(buf, len - done);
            read_exact(&self.storage, at + done, piece)?;
            if !all_zero(piece) {
                return Ok(false);
            }
            done += piece.len() as u64;
        }
        Ok(true)
    }
}

/// The first `min(left, CHUNK)` bytes of `buf`, grown to that size if it is shorter (a
/// buffer is sized by what is read, never by what a header claims).
fn chunk_of(buf: &mut Vec<u8>, left: u64) -> &mut [u8] {
    let n = left.min(CHUNK as u64) as usize;
    if buf.len() < n {
        buf.resize(n, 0);
    }
    &mut buf[..n]
}
