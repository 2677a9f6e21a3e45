//! Filesystem-aware compaction: blocks the guest's filesystems call free are released
//! without being zero-filled first, then the image is compacted as usual.
//!
//! The plan ([`FreePlan::scan`]) reads only the partition table and the filesystems'
//! allocation maps, through the whole disk (a chain's too); it refuses the disk when any
//! filesystem on it is not clean. Applying it keeps compact's crash-safe order: the entries
//! of released blocks are written and on the disk before any block moves into their slots,
//! then [`VdiImage::reclaim`]'s order takes over. Stopping after any write leaves every
//! block reading what it read before or zeros — and only a block the filesystem calls free
//! can read zeros. A released block becomes FREE in a base image and ZERO in a differencing
//! image (where FREE would show the parent's bytes again).

use crate::block_map::{Entry, BLOCK_FREE, BLOCK_ZERO};
use crate::chain::Chain;
use crate::error::{Result, VdiError};
use crate::header::ImageType;
use crate::image::VdiImage;
use crate::monitor::{Monitor, NoMonitor};
use crate::storage::Storage;
use crate::surgery::CompactStats;
use crate::volume::FreePlan;

/// What [`VdiImage::compact_fs_aware`] did.
#[derive(Debug, Clone)]
pub struct FsCompactStats {
    /// What was read of each partition (the plan that was applied).
    pub plan: FreePlan,
    /// Stored blocks released because a filesystem calls them free.
    pub blocks_released: u64,
    /// The compaction that followed (all-zero blocks marked, blocks moved, bytes).
    pub compact: CompactStats,
}

/// The refusal to compact a fixed image.
pub(super) fn fixed_refused() -> VdiError {
    VdiError::Unsupported(
        "compacting a fixed image: every block of a fixed image stays allocated by design; \
         convert it to a dynamic image (vdi convert -O vdi) instead"
            .into(),
    )
}

impl<S: Storage> VdiImage<S> {
    /// Read the filesystems inside this dynamic base image, release the blocks lying wholly
    /// in their free space (FREE), mark all-zero blocks ZERO, pack and truncate the file.
    /// Refuses, writing nothing, when a filesystem on the disk is not clean
    /// ([`VolumeError::NotClean`](crate::volume::VolumeError::NotClean), kind
    /// `filesystem-not-clean`). Cancelling leaves a consistent image, packed as far as
    /// the blocks released so far (see [`VdiImage::compact`]). A differencing image is
    /// compacted through its chain ([`Chain::compact_fs_aware_top`]).
    pub fn compact_fs_aware(&mut self, monitor: &mut dyn Monitor) -> Result<FsCompactStats> {
        match self.header.kind() {
            Some(ImageType::Fixed) => return Err(fixed_refused()),
            Some(ImageType::Diff) => {
                return Err(VdiError::Unsupported(
                    "filesystem-aware compaction of a differencing image without its parents (open its chain)".into(),
                ))
            }
            _ => {}
        }
        self.require_consistent("compacting")?;
        let plan = FreePlan::scan(self)?;
        self.apply_fs_plan(plan, BLOCK_FREE, monitor)
    }

    /// Release what `plan` calls free (as `mark`), mark all-zero blocks ZERO, pack and
    /// truncate; refuses first, writing nothing, when the plan found an unclean filesystem.
    fn apply_fs_plan(&mut self, plan: FreePlan, mark: u32, monitor: &mut dyn Monitor) -> Result<FsCompactStats> {
        if let Some(e) = plan.refusal() {
            return Err(e.into());
        }
        let mut compact = CompactStats { file_len_before: self.file_len, ..Default::default() };
        let blocks_released = self.release_free(&plan, mark, monitor)?;
        compact.blocks_zeroed = self.mark_zero_blocks(BLOCK_ZERO, monitor)?;
        let (moved, _) = self.reclaim_unchecked(monitor)?;
        compact.blocks_moved = moved;
        compact.file_len_after = self.file_len;
        compact.bytes_reclaimed = compact.file_len_before.saturating_sub(compact.file_len_after);
        Ok(FsCompactStats { plan, blocks_released, compact })
    }

    /// Set the entry of every stored block the plan calls free to `mark`, the map written
    /// per batch. Returns the number of blocks released.
    fn release_free(&mut self, plan: &FreePlan, mark: u32, monitor: &mut dyn Monitor) -> Result<u64> {
        let nb = self.header.blocks_in_image;
        let mut released = 0u64;
        const BATCH: u32 = 4096;
        let mut b = 0u32;
        while b < nb {
            if monitor.cancelled() {
                // As compact: pack the holes made so far so the image checks clean.
                self.map.flush(&mut self.storage)?;
                self.reclaim_unchecked(&mut NoMonitor)?;
                return Err(VdiError::Cancelled);
            }
            let end = (b + BATCH).min(nb);
            for i in b..end {
                if plan.is_free(i as u64) && matches!(self.entry(i)?, Entry::Data(_)) {
                    self.map.set(&self.storage, i, mark)?;
                    released += 1;
                }
            }
            self.map.flush(&mut self.storage)?;
            b = end;
            monitor.progress(b as u64, nb as u64);
        }
        Ok(released)
    }
}

impl<S: Storage> Chain<S> {
    /// Filesystem-aware compaction of the top layer: the filesystems are read through the
    /// whole chain, and the top's blocks lying wholly in their free space become ZERO (they
    /// read zeros, hiding the parents' bytes), then the top is compacted. A chain of one
    /// layer is [`VdiImage::compact_fs_aware`].
    pub fn compact_fs_aware_top(&mut self, monitor: &mut dyn Monitor) -> Result<FsCompactStats> {
        if self.layers().len() < 2 {
            return self.top_mut().compact_fs_aware(monitor);
        }
        let top = self.top_mut();
        top.check_writable_layer()?;
        top.require_no_corruption("compacting", false)?;
        let plan = FreePlan::scan(self)?;
        self.top_mut().apply_fs_plan(plan, BLOCK_ZERO, monitor)
    }
}
