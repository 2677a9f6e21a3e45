//! What the guest's filesystems call free, as whole blocks of the disk: the plan of a
//! filesystem-aware compaction ([`FreePlan::scan`]), applied by
//! [`VdiImage::compact_fs_aware`](crate::VdiImage::compact_fs_aware).
//!
//! ```text
//! PartitionTable::read ──> per partition: clean? ──> its free runs (bitmaps, FATs, exFAT bitmap, $Bitmap)
//!                                                      │ clipped to the partition
//!                                                      v
//!                          whole disk blocks inside one free run, touching no other
//!                          partition ──> FreePlan (a bit per block)
//! ```
//!
//! Space no readable filesystem accounts for — gaps between partitions (boot loaders live
//! there), unknown, encrypted or LVM partitions, filesystems read only for detection — is
//! never in the plan. A filesystem that is not clean (a journal to replay, mounted, errors)
//! is reported with why and how to make it clean, and compaction refuses the whole disk.

use crate::disk::{Block, Disk};
use crate::error::Result;
use crate::volume::ext::Ext;
use crate::volume::fat::Fat;
use crate::volume::io::{DiskReader, ReadDisk};
use crate::volume::free_exfat::Exfat;
use crate::volume::ntfs::Ntfs;
use crate::volume::{free_exfat, free_ext, free_fat, free_ntfs, FsKind, Partition, PartitionTable, VolumeError};

/// Why a filesystem is not clean, and what makes it clean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotClean {
    /// What is wrong ("its journal needs recovery ...").
    pub reason: String,
    /// How to make it clean ("boot the guest and shut it down fully ...").
    pub hint: String,
}

impl NotClean {
    pub(crate) fn new(reason: &str, hint: &str) -> Self {
        NotClean { reason: reason.into(), hint: hint.into() }
    }
}

/// Receives the free runs of a filesystem, as disk offsets, in increasing order.
pub(crate) trait FreeSink {
    fn free(&mut self, at: u64, len: u64);
}

/// What was made of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreeStatus {
    /// Its allocation map was read: [`PartitionFree::free_bytes`] is what it calls free.
    Read,
    /// Not read: no filesystem, one this engine does not read the allocation of, or a
    /// container; its space is kept as it is.
    NotRead {
        /// Why ("ntfs: its allocation map is not read").
        why: String,
    },
    /// Its filesystem is not clean: compaction refuses the disk.
    NotClean(NotClean),
}

/// One partition of a [`FreePlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFree {
    /// The partition's number (0: a filesystem on the whole disk).
    pub number: u32,
    /// First byte on the disk.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// Its filesystem, when one was detected.
    pub fs: Option<FsKind>,
    /// Whether its allocation map was read.
    pub status: FreeStatus,
    /// Bytes the filesystem calls free.
    pub free_bytes: u64,
    /// Disk blocks lying wholly in that free space (whatever their state in the image).
    pub free_blocks: u64,
    /// Of those, the blocks stored in the top layer: what compaction releases.
    pub releasable_blocks: u64,
}

/// The blocks of a disk its filesystems call free, per partition.
#[derive(Debug, Clone)]
pub struct FreePlan {
    /// Bytes per disk block.
    pub block_size: u64,
    /// Every partition the table lists (and a filesystem on the whole disk).
    pub partitions: Vec<PartitionFree>,
    /// Findings of the partition table reader (a damaged table, as far as it was read).
    pub findings: Vec<String>,
    bits: Vec<u64>,
}

/// Turns free runs into whole blocks: adjacent runs merge, a block counts when one merged
/// run covers it entirely and no other partition touches it.
struct Cover<'a> {
    bs: u64,
    /// The partition's span, and the spans of the others.
    lo: u64,
    hi: u64,
    others: &'a [(u64, u64)],
    run: Option<(u64, u64)>,
    free_bytes: u64,
    bits: &'a mut Vec<u64>,
    count: u64,
}

impl Cover<'_> {
    fn close(&mut self) {
        let Some((a, b)) = self.run.take() else { return };
        for blk in a.div_ceil(self.bs)..b / self.bs {
            let (x, y) = (blk * self.bs, (blk + 1) * self.bs);
            if self.others.iter().any(|&(s, e)| s < y && x < e) || (blk / 64) as usize >= self.bits.len() {
                continue;
            }
            let w = &mut self.bits[(blk / 64) as usize];
            if *w & (1 << (blk % 64)) == 0 {
                *w |= 1 << (blk % 64);
                self.count += 1;
            }
        }
    }
}

impl FreeSink for Cover<'_> {
    fn free(&mut self, at: u64, len: u64) {
        // A filesystem claiming more than its partition: only what lies inside counts.
        let (a, b) = (at.max(self.lo), at.saturating_add(len).min(self.hi));
        if a >= b {
            return;
        }
        self.free_bytes += b - a;
        match self.run {
            Some((s, e)) if a <= e => self.run = Some((s, e.max(b))),
            _ => {
                self.close();
                self.run = Some((a, b));
            }
        }
    }
}

impl FreePlan {
    /// Read the partition table of `disk` and the allocation maps of its ext2/3/4, FAT,
    /// exFAT and NTFS filesystems. Reads only: metadata, a few KiB per group or FAT window.
    pub fn scan(disk: &mut dyn Disk) -> Result<FreePlan> {
        let bs = disk.block_size();
        let nblocks = disk.block_count();
        let table = PartitionTable::read(&mut DiskReader(&mut *disk))?;
        let mut plan = FreePlan { block_size: bs, partitions: vec![], findings: table.findings.clone(), bits: vec![0; nblocks.div_ceil(64) as usize] };
        for p in &table.partitions {
            // Other partitions' spans, except a container holding this one (an extended
            // partition around a logical one).
            let others: Vec<(u64, u64)> = table
                .partitions
                .iter()
                .filter(|q| q.number != p.number)
                .filter(|q| !(q.filesystem.is_none() && q.start <= p.start && p.start + p.size <= q.start + q.size))
                .map(|q| (q.start, q.start + q.size))
                .collect();
            let mut part = PartitionFree {
                number: p.number,
                start: p.start,
                size: p.size,
                fs: p.filesystem.as_ref().map(|f| f.kind),
                status: FreeStatus::Read,
                free_bytes: 0,
                free_blocks: 0,
                releasable_blocks: 0,
            };
            let before = plan.bits.clone();
            let mut cover = Cover { bs, lo: p.start, hi: p.start + p.size, others: &others, run: None, free_bytes: 0, bits: &mut plan.bits, count: 0 };
            part.status = match scan_partition(&mut DiskReader(&mut *disk), p, &mut cover) {
                Ok(st) => st,
                // A damaged or unsupported filesystem keeps all its space.
                Err(crate::VdiError::Volume(e)) => FreeStatus::NotRead { why: e.to_string() },
                Err(e) => return Err(e),
            };
            cover.close();
            if part.status != FreeStatus::Read {
                plan.bits = before;
                part.free_bytes = 0;
                plan.partitions.push(part);
                continue;
            }
            part.free_bytes = cover.free_bytes;
            part.free_blocks = cover.count;
            let top = disk.layer_count().saturating_sub(1);
            for (w, (now, was)) in plan.bits.iter().zip(before.iter()).enumerate() {
                let mut new = now & !was;
                while new != 0 {
                    let b = w as u64 * 64 + new.trailing_zeros() as u64;
                    new &= new - 1;
                    if matches!(disk.block(b)?, Block::Data { layer, .. } if layer == top) {
                        part.releasable_blocks += 1;
                    }
                }
            }
            plan.partitions.push(part);
        }
        Ok(plan)
    }

    /// Whether disk block `b` lies wholly in free space of one filesystem.
    pub fn is_free(&self, b: u64) -> bool {
        self.bits.get((b / 64) as usize).is_some_and(|w| w & (1 << (b % 64)) != 0)
    }

    /// Blocks compaction releases (stored in the top layer and wholly free).
    pub fn releasable_blocks(&self) -> u64 {
        self.partitions.iter().map(|p| p.releasable_blocks).sum()
    }

    /// The refusal when a filesystem is not clean (the first one), else None.
    pub fn refusal(&self) -> Option<VolumeError> {
        self.partitions.iter().find_map(|p| match &p.status {
            FreeStatus::NotClean(n) => Some(VolumeError::NotClean {
                number: p.number,
                fs: p.fs.map(|k| k.name()).unwrap_or("?").to_string(),
                reason: n.reason.clone(),
                hint: n.hint.clone(),
            }),
            _ => None,
        })
    }
}

/// Read one partition's free space into `sink`, or say why not.
fn scan_partition(disk: &mut dyn ReadDisk, p: &Partition, sink: &mut dyn FreeSink) -> Result<FreeStatus> {
    let Some(info) = &p.filesystem else {
        return Ok(FreeStatus::NotRead { why: "no filesystem recognised: kept as it is".into() });
    };
    match info.kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            let fs = Ext::open(disk, p.start, p.size)?;
            let s = fs.span.vec(disk, 1024, 1024, &|| "superblock".into())?;
            if let Some(n) = free_ext::not_clean(&s) {
                return Ok(FreeStatus::NotClean(n));
            }
            free_ext::free_space(disk, &fs, sink)?;
        }
        FsKind::Vfat => {
            let fs = Fat::open(disk, p.start, p.size)?;
            if let Some(n) = free_fat::check_clean(disk, &fs)? {
                return Ok(FreeStatus::NotClean(n));
            }
            free_fat::free_space(disk, &fs, sink)?;
        }
        FsKind::Exfat => {
            let fs = Exfat::open(disk, p.start, p.size)?;
            if let Some(n) = fs.not_clean() {
                return Ok(FreeStatus::NotClean(n));
            }
            free_exfat::free_space(disk, &fs, sink)?;
        }
        FsKind::Ntfs => {
            let mut fs = Ntfs::open(disk, p.start, p.size)?;
            if let Some(n) = free_ntfs::check_clean(disk, &mut fs)? {
                return Ok(FreeStatus::NotClean(n));
            }
            free_ntfs::free_space(disk, &mut fs, sink)?;
        }
        other => {
            return Ok(FreeStatus::NotRead { why: format!("{other}: its allocation map is not read; kept as it is") });
        }
    }
    Ok(FreeStatus::Read)
}
