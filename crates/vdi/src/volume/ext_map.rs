//! Where an ext inode's logical block lies: the extent tree (ext4) or the block map of
//! direct and indirect pointers (ext2/3). One call answers for a run of blocks — as far as
//! the extent, or the run of consecutive pointers in one indirect block, goes — so a read
//! costs one lookup per run, not per block.

use crate::error::Result;
use crate::volume::ext::{Inode, FLAG_EXTENTS};
use crate::volume::io::{le16, le32, ReadDisk, Span};
use crate::volume::VolumeError;

const EXTENT_MAGIC: u16 = 0xf30a;
/// Deepest extent tree accepted (the kernel's limit is 5).
const MAX_DEPTH: u16 = 5;
/// Largest initialised extent; longer lengths mark unwritten extents.
const INIT_MAX: u16 = 32768;

/// A run of `blocks` logical blocks stored from physical block `phys` on (None: a hole or
/// unwritten extent, reading zeros; `blocks` may reach far past the file's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub phys: Option<u64>,
    pub blocks: u64,
}

pub(crate) struct Mapper<'a> {
    pub span: &'a Span,
    pub bs: u64,
    pub blocks: u64,
}

impl Mapper<'_> {
    fn damaged(&self, inode: &Inode, place: &str, detail: String) -> crate::VdiError {
        VolumeError::damaged(self.span.fs, format!("inode {} {place}", inode.ino), detail).into()
    }

    /// A run of stored blocks, checked to lie inside the filesystem.
    fn stored(&self, inode: &Inode, phys: u64, blocks: u64) -> Result<Piece> {
        if phys == 0 || phys.checked_add(blocks).is_none_or(|e| e > self.blocks) {
            return Err(self.damaged(inode, "data", format!("blocks {phys}+{blocks} lie outside the {} blocks", self.blocks)));
        }
        Ok(Piece { phys: Some(phys), blocks })
    }

    /// The run that logical block `lblk` of `inode` starts.
    pub fn map(&self, disk: &mut dyn ReadDisk, inode: &Inode, lblk: u64) -> Result<Piece> {
        if inode.flags & FLAG_EXTENTS != 0 {
            self.extent(disk, inode, lblk)
        } else {
            self.indirect(disk, inode, lblk)
        }
    }

    fn extent(&self, disk: &mut dyn ReadDisk, inode: &Inode, lblk: u64) -> Result<Piece> {
        let mut node = inode.block.to_vec();
        let mut depth_above = None;
        // The first logical block past this subtree (the next sibling's start).
        let mut limit = u64::MAX;
        let mut where_ = "extent root".to_string();
        loop {
            if le16(&node, 0) != EXTENT_MAGIC {
                return Err(self.damaged(inode, &where_, format!("magic {:#06x}, expected 0xf30a", le16(&node, 0))));
            }
            let entries = le16(&node, 2) as usize;
            let depth = le16(&node, 6);
            if 12 + 12 * entries > node.len() || entries > le16(&node, 4) as usize {
                return Err(self.damaged(inode, &where_, format!("{entries} entries do not fit the {}-byte node", node.len())));
            }
            if depth > MAX_DEPTH || depth_above.is_some_and(|d: u16| depth + 1 != d) {
                return Err(self.damaged(inode, &where_, format!("depth {depth} under depth {depth_above:?}")));
            }
            let first = |i: usize| le32(&node, 12 + 12 * i) as u64;
            // The last entry starting at or before lblk.
            let idx = (0..entries).rev().find(|&i| first(i) <= lblk);
            if depth == 0 {
                let Some(i) = idx else {
                    let next = if entries > 0 { first(0) } else { limit };
                    return Ok(Piece { phys: None, blocks: next.saturating_sub(lblk).max(1) });
                };
                let e = &node[12 + 12 * i..24 + 12 * i];
                let raw = le16(e, 4);
                let (len, unwritten) = if raw > INIT_MAX { (raw - INIT_MAX, true) } else { (raw, false) };
                let start = first(i);
                let end = start + len as u64;
                if lblk >= end {
                    let next = if i + 1 < entries { first(i + 1) } else { limit };
                    return Ok(Piece { phys: None, blocks: next.saturating_sub(lblk).max(1) });
                }
                let phys = (le16(e, 6) as u64) << 32 | le32(e, 8) as u64;
                let piece = self.stored(inode, phys, len as u64)?;
                let skip = lblk - start;
                return Ok(if unwritten {
                    Piece { phys: None, blocks: len as u64 - skip }
                } else {
                    Piece { phys: piece.phys.map(|p| p + skip), blocks: len as u64 - skip }
                });
            }
            let Some(i) = idx else {
                let next = if entries > 0 { first(0) } else { limit };
                return Ok(Piece { phys: None, blocks: next.saturating_sub(lblk).max(1) });
            };
            if i + 1 < entries {
                limit = first(i + 1);
            }
            let e = &node[12 + 12 * i..24 + 12 * i];
            let child = (le16(e, 8) as u64) << 32 | le32(e, 4) as u64;
            self.stored(inode, child, 1)?;
            where_ = format!("extent node at block {child}");
            node = self.span.vec(disk, child * self.bs, self.bs as usize, &|| format!("inode {} extent node at block {child}", inode.ino))?;
            depth_above = Some(depth);
        }
    }

    /// The block map: 12 direct pointers, then single, double and triple indirect blocks.
    fn indirect(&self, disk: &mut dyn ReadDisk, inode: &Inode, lblk: u64) -> Result<Piece> {
        let per = self.bs / 4;
        let direct: Vec<u32> = (0..15).map(|i| le32(&inode.block, i * 4)).collect();
        if lblk < 12 {
            return self.run(inode, &direct[lblk as usize..12]);
        }
        // Which tree (single, double, triple indirect: `level`), and `rel`, the block's
        // index under it; `span` ends as the blocks under one pointer of its top block.
        let mut rel = lblk - 12;
        let mut span = 1u64;
        let mut level = 0usize;
        loop {
            let cover = span * per;
            if level == 3 {
                return Err(self.damaged(inode, "block map", format!("logical block {lblk} is past what a block map addresses")));
            }
            if rel < cover {
                break;
            }
            rel -= cover;
            span = cover;
            level += 1;
        }
        // Walk down from i_block[12 + level]: `level + 1` indirect blocks.
        let mut ptr = direct[12 + level] as u64;
        let mut under = span * per;
        for _ in 0..level {
            under /= per;
            if ptr == 0 {
                return Ok(Piece { phys: None, blocks: under * per - rel % (under * per) });
            }
            self.stored(inode, ptr, 1)?;
            let mut p = [0u8; 4];
            let at = ptr * self.bs + (rel / under) * 4;
            self.span.read(disk, at, &mut p, &|| format!("inode {} indirect block {ptr}", inode.ino))?;
            rel %= under;
            ptr = u32::from_le_bytes(p) as u64;
        }
        if ptr == 0 {
            return Ok(Piece { phys: None, blocks: per - rel });
        }
        self.stored(inode, ptr, 1)?;
        let ptrs = self.span.vec(disk, ptr * self.bs + rel * 4, ((per - rel) * 4) as usize, &|| format!("inode {} indirect block {ptr}", inode.ino))?;
        let ptrs: Vec<u32> = ptrs.chunks_exact(4).map(|c| le32(c, 0)).collect();
        self.run(inode, &ptrs)
    }

    /// The run the pointers `ptrs` start: consecutive blocks, or zeros (a hole).
    fn run(&self, inode: &Inode, ptrs: &[u32]) -> Result<Piece> {
        let first = ptrs[0] as u64;
        if first == 0 {
            let n = ptrs.iter().take_while(|&&p| p == 0).count() as u64;
            return Ok(Piece { phys: None, blocks: n });
        }
        let n = ptrs.iter().enumerate().take_while(|(i, &p)| p as u64 == first + *i as u64).count() as u64;
        self.stored(inode, first, n)
    }
}
