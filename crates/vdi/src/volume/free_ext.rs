//! The free space of an ext2/3/4 filesystem: its block bitmaps, read group by group.
//!
//! Conservative on purpose (what is reported free may be discarded by compaction):
//! - refused unless clean: the journal needs no recovery (incompat RECOVER clear), the
//!   state says cleanly unmounted and no errors;
//! - every piece of metadata — the superblock and its backups, the group descriptors and the
//!   blocks reserved for their growth, every group's bitmaps and inode table, the journal —
//!   must be marked used, else the filesystem is refused as damaged (verified, not assumed);
//! - a group whose bitmap counts a different number of free clusters than its descriptor
//!   says is kept whole (not reported free);
//! - a BLOCK_UNINIT group (no bitmap written yet) is free except the metadata that lies in
//!   it, as the kernel computes it, and the same free-count check applies.
//!
//! Bigalloc: the bitmaps count clusters of 2^n blocks; a free bit frees its whole cluster.

use crate::error::Result;
use crate::volume::ext::Ext;
use crate::volume::free::{FreeSink, NotClean};
use crate::volume::io::{le16, le32, ReadDisk};
use crate::volume::{Entry, EntryKind, VolumeError};

const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;
const COMPAT_JOURNAL: u32 = 0x4;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_META_BG: u32 = 0x10;
const RO_BIGALLOC: u32 = 0x200;
const BG_BLOCK_UNINIT: u16 = 0x2;
/// Journal extents asked for at a time.
const EXTENTS_PER_CALL: usize = 256;

/// Why an ext superblock `s` (1024 bytes) is not clean, if it is not.
pub(crate) fn not_clean(s: &[u8]) -> Option<NotClean> {
    let state = le16(s, 0x3a);
    if le32(s, 0x60) & INCOMPAT_RECOVER != 0 {
        return Some(NotClean::new(
            "its journal needs recovery (needs_recovery is set: the guest did not shut down cleanly)",
            "boot the guest and shut it down fully, or run e2fsck on the filesystem",
        ));
    }
    if state & STATE_ERROR != 0 {
        return Some(NotClean::new("the kernel recorded errors on it (state: errors)", "run e2fsck -f on it inside the guest"));
    }
    if state & STATE_VALID == 0 {
        return Some(NotClean::new(
            "it is mounted or was not unmounted cleanly (state: not clean)",
            "shut the guest down fully (not suspend or save state), or run e2fsck on it",
        ));
    }
    None
}

/// Where one group's metadata lies, in blocks `[start, end)`.
type Range = (u64, u64);

struct Group {
    bitmap: u64,
    free: u64,
    uninit: bool,
}

/// Walk the free clusters of `fs` (already checked clean), telling `sink` each free run
/// as disk offsets, in increasing order.
pub(crate) fn free_space(disk: &mut dyn ReadDisk, fs: &Ext, sink: &mut dyn FreeSink) -> Result<()> {
    let s = fs.span.vec(disk, 1024, 1024, &|| "superblock".into())?;
    let name = fs.span.fs;
    let ratio_log = if fs.ro & RO_BIGALLOC != 0 { le32(&s, 0x1c).saturating_sub(le32(&s, 0x18)) } else { 0 };
    if ratio_log > 16 {
        return Err(VolumeError::damaged(name, "superblock", format!("cluster size 2^{ratio_log} blocks, expected at most 2^16")).into());
    }
    let ratio = 1u64 << ratio_log;
    let cpg = fs.bpg / ratio;
    if cpg == 0 || cpg * ratio != fs.bpg || cpg > fs.bs * 8 || (ratio > 1 && fs.first_data_block != 0) {
        return Err(VolumeError::damaged(name, "superblock", format!("{} blocks per group with {ratio}-block clusters: not whole bitmap clusters", fs.bpg)).into());
    }
    let (groups, meta) = read_groups(disk, fs, &s)?;
    let mut must = meta;
    if le32(&s, 0x5c) & COMPAT_JOURNAL != 0 {
        journal(disk, fs, le32(&s, 0xe0) as u64, &mut must)?;
    }
    must.sort_unstable();
    let mut bits = vec![0u8; cpg.div_ceil(8) as usize];
    let mut next = 0usize; // the first range of `must` that may reach the current group
    for (g, d) in groups.iter().enumerate() {
        let g = g as u64;
        let first = fs.first_data_block + g * fs.bpg;
        let end = (first + fs.bpg).min(fs.blocks);
        let clusters = (end - first).div_ceil(ratio);
        while next < must.len() && must[next].1 <= first {
            next += 1;
        }
        let mine: Vec<Range> = must[next..].iter().take_while(|r| r.0 < end).map(|&(a, b)| (a.max(first), b.min(end))).filter(|r| r.0 < r.1).collect();
        if d.uninit {
            bits.fill(0);
            for &(a, b) in &mine {
                for c in (a - first) / ratio..(b - first).div_ceil(ratio) {
                    bits[(c / 8) as usize] |= 1 << (c % 8);
                }
            }
        } else {
            if d.bitmap < fs.first_data_block || d.bitmap >= fs.blocks {
                return Err(VolumeError::damaged(name, format!("group descriptor {g}"), format!("block bitmap at block {}, outside the filesystem", d.bitmap)).into());
            }
            fs.span.read(disk, d.bitmap * fs.bs, &mut bits, &|| format!("block bitmap of group {g}"))?;
            for &(a, b) in &mine {
                for c in (a - first) / ratio..(b - first).div_ceil(ratio) {
                    if bits[(c / 8) as usize] & (1 << (c % 8)) == 0 {
                        return Err(VolumeError::damaged(
                            name,
                            format!("block bitmap of group {g}"),
                            format!("block {} holds metadata but is marked free (run e2fsck)", first + c * ratio),
                        )
                        .into());
                    }
                }
            }
        }
        let is_free = |c: u64| bits[(c / 8) as usize] & (1 << (c % 8)) == 0;
        let counted = (0..clusters).filter(|&c| is_free(c)).count() as u64;
        if counted != d.free {
            continue; // the bitmap and the descriptor disagree: keep the whole group
        }
        let mut c = 0;
        while c < clusters {
            if !is_free(c) {
                c += 1;
                continue;
            }
            let run = c;
            while c < clusters && is_free(c) {
                c += 1;
            }
            let a = first + run * ratio;
            let b = (first + c * ratio).min(end);
            sink.free(fs.span.start + a * fs.bs, (b - a) * fs.bs);
        }
    }
    Ok(())
}

/// Every group's descriptor, and the metadata ranges (blocks) the bitmaps must mark used.
fn read_groups(disk: &mut dyn ReadDisk, fs: &Ext, s: &[u8]) -> Result<(Vec<Group>, Vec<Range>)> {
    let name = fs.span.fs;
    let per_block = fs.bs / fs.desc_size;
    let gdt_blocks = fs.groups.div_ceil(per_block);
    let reserved = le16(s, 0xce) as u64;
    let meta_bg = fs.incompat & INCOMPAT_META_BG != 0;
    let itable_blocks = (fs.ipg * fs.inode_size).div_ceil(fs.bs);
    let mut groups = Vec::with_capacity(fs.groups.min(1 << 20) as usize);
    let mut meta: Vec<Range> = vec![];
    // Block 0 (boot sector, and the superblock with blocks over 1 KiB) is never free.
    meta.push((0, fs.first_data_block.max(1)));
    for g in 0..fs.groups {
        let first = fs.first_data_block + g * fs.bpg;
        let sb = fs.has_super(g) as u64;
        let mut own = sb; // superblock copy
        if meta_bg {
            let in_meta = g / per_block >= fs.first_meta_bg;
            if !in_meta && sb == 1 {
                own += fs.first_meta_bg + reserved;
            } else if in_meta && matches!(g % per_block, r if r == 0 || r == 1 || r == per_block - 1) {
                own += 1;
            }
        } else if sb == 1 {
            own += gdt_blocks + reserved;
        }
        if own > 0 {
            meta.push((first, first + own));
        }
        let place = || format!("group descriptor {g}");
        let d = fs.span.vec(disk, fs.desc_at(g), fs.desc_size as usize, &place)?;
        let wide = fs.desc_size >= 64;
        let hi = |at: usize| if wide { (le32(&d, at) as u64) << 32 } else { 0 };
        let bitmap = le32(&d, 0x0) as u64 | hi(0x20);
        let ibitmap = le32(&d, 0x4) as u64 | hi(0x24);
        let itable = le32(&d, 0x8) as u64 | hi(0x28);
        let free = le16(&d, 0xc) as u64 | if wide { (le16(&d, 0x2c) as u64) << 16 } else { 0 };
        let uninit = le16(&d, 0x12) & BG_BLOCK_UNINIT != 0;
        for (what, at, len) in [("block bitmap", bitmap, 1), ("inode bitmap", ibitmap, 1), ("inode table", itable, itable_blocks)] {
            if at < fs.first_data_block || at.checked_add(len).is_none_or(|e| e > fs.blocks) {
                return Err(VolumeError::damaged(name, place(), format!("{what} at block {at}, outside the {} blocks", fs.blocks)).into());
            }
            meta.push((at, at + len));
        }
        groups.push(Group { bitmap, free, uninit });
    }
    Ok((groups, meta))
}

/// Add the journal inode's blocks to `must` (a journal is metadata: it must be marked used).
fn journal(disk: &mut dyn ReadDisk, fs: &Ext, ino: u64, must: &mut Vec<Range>) -> Result<()> {
    let inode = fs.inode(disk, ino)?;
    let entry = Entry { name: "<journal>".into(), kind: EntryKind::File, size: inode.size, mtime: 0, mode: 0, id: ino, target: None };
    let mut from = 0u64;
    let mut ext = fs.clone();
    loop {
        let got = ext.extents(disk, &entry, from, EXTENTS_PER_CALL)?;
        let Some(last) = got.last() else { break };
        from = last.offset + last.len;
        for e in got.iter() {
            if let Some(at) = e.disk_offset {
                let a = (at - fs.span.start) / fs.bs;
                must.push((a, a + e.len.div_ceil(fs.bs)));
            }
        }
        if from >= inode.size {
            break;
        }
    }
    Ok(())
}
