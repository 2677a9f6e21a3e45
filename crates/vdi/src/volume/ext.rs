//! ext2/3/4: the superblock, group descriptors, inodes and directories. How a file's
//! logical blocks map to the disk (extent trees, block maps) is in `ext_map.rs`.
//!
//! Layout reference: the kernel's Documentation/filesystems/ext4 (superblock, group
//! descriptors, inode table, directory entries). Read: 1–64 KiB blocks, 32- and 64-byte
//! descriptors, meta_bg, bigalloc (extents stay in blocks), hashed directories (read
//! linearly: their index blocks look like empty entries), fast and slow symlinks, inline
//! data (i_block and the in-inode system.data attribute). Not read: a journal is never
//! replayed; encrypted files.

use crate::error::Result;
use crate::volume::ext_map::Mapper;
use crate::volume::io::{le16, le32, text, ReadDisk, Span};
use crate::volume::{Entry, EntryKind, FileExtent, FsInfo, FsKind, VolumeError, MAX_DIR_BYTES, MAX_DIR_ENTRIES};

const MAGIC: u16 = 0xef53;
const COMPAT_JOURNAL: u32 = 0x4;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_COMPRESSION: u32 = 0x1;
const RO_SPARSE_SUPER: u32 = 0x1;
const RO_LARGE_FILE: u32 = 0x2;
const RO_BTREE_DIR: u32 = 0x4;
pub(crate) const FLAG_EXTENTS: u32 = 0x80000;
pub(crate) const FLAG_INLINE: u32 = 0x1000_0000;
/// Longest symlink target read (PATH_MAX).
const MAX_LINK: u64 = 4096;

/// The superblock (1024 bytes at byte 1024) as the kind detection reports.
pub(crate) fn probe(b: &[u8]) -> Option<FsInfo> {
    let s = &b[1024..2048];
    if le16(s, 0x38) != MAGIC || le32(s, 0x18) > 6 {
        return None;
    }
    let (compat, incompat, ro) = (le32(s, 0x5c), le32(s, 0x60), le32(s, 0x64));
    let ext3_incompat = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG | INCOMPAT_JOURNAL_DEV;
    let kind = if incompat & !ext3_incompat != 0 || ro & !(RO_SPARSE_SUPER | RO_LARGE_FILE | RO_BTREE_DIR) != 0 {
        FsKind::Ext4
    } else if compat & COMPAT_JOURNAL != 0 {
        FsKind::Ext3
    } else {
        FsKind::Ext2
    };
    let bs = 1024u64 << le32(s, 0x18);
    let wide = incompat & INCOMPAT_64BIT != 0;
    let blocks = le32(s, 0x4) as u64 | if wide { (le32(s, 0x150) as u64) << 32 } else { 0 };
    let free = le32(s, 0xc) as u64 | if wide { (le32(s, 0x158) as u64) << 32 } else { 0 };
    let uuid = uuid::Uuid::from_bytes(s[0x68..0x78].try_into().unwrap()).hyphenated().to_string();
    Some(FsInfo {
        kind,
        label: text(&s[0x78..0x88]),
        uuid,
        size: blocks.saturating_mul(bs),
        used: Some(blocks.saturating_sub(free).saturating_mul(bs)),
        free: Some(free.saturating_mul(bs)),
        readable: true,
    })
}

/// An inode's fields this reader uses.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub ino: u64,
    pub mode: u16,
    pub size: u64,
    pub mtime: i64,
    pub flags: u32,
    pub blocks_lo: u32,
    pub file_acl: u32,
    /// i_block: the extent tree root, the block map, or a fast symlink's target.
    pub block: [u8; 60],
    /// Inline data past i_block's 60 bytes: the in-inode `system.data` attribute.
    pub inline: Vec<u8>,
}

impl Inode {
    pub fn kind(&self) -> EntryKind {
        match self.mode & 0xf000 {
            0x8000 => EntryKind::File,
            0x4000 => EntryKind::Dir,
            0xa000 => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }
}

/// An open ext2/3/4 filesystem: its geometry.
#[derive(Debug, Clone)]
pub(crate) struct Ext {
    pub span: Span,
    pub bs: u64,
    pub blocks: u64,
    pub(crate) inodes: u64,
    pub(crate) ipg: u64,
    pub(crate) bpg: u64,
    pub(crate) groups: u64,
    pub(crate) inode_size: u64,
    pub(crate) desc_size: u64,
    pub(crate) first_data_block: u64,
    pub(crate) incompat: u32,
    pub(crate) ro: u32,
    pub(crate) first_meta_bg: u64,
}

impl Ext {
    /// Read and check the superblock of the filesystem at `start`.
    pub fn open(disk: &mut dyn ReadDisk, start: u64, size: u64) -> Result<Ext> {
        let mut span = Span { start, size, fs: "ext4" };
        let s = span.vec(disk, 1024, 1024, &|| "superblock".into())?;
        if le16(&s, 0x38) != MAGIC {
            return Err(VolumeError::damaged("ext4", "superblock", format!("magic is {:#06x}, expected 0xef53", le16(&s, 0x38))).into());
        }
        let bad = |field: &str, v: u64, want: &str| -> crate::VdiError {
            VolumeError::damaged("ext4", "superblock", format!("{field} is {v}, expected {want}")).into()
        };
        let log = le32(&s, 0x18);
        if log > 6 {
            return Err(bad("s_log_block_size", log as u64, "0 to 6 (1 KiB to 64 KiB blocks)"));
        }
        let bs = 1024u64 << log;
        let incompat = le32(&s, 0x60);
        if incompat & (INCOMPAT_COMPRESSION | INCOMPAT_JOURNAL_DEV | INCOMPAT_ENCRYPT) != 0 {
            return Err(VolumeError::Unsupported { number: 0, fs: format!("ext4 with incompatible features {incompat:#x}") }.into());
        }
        let wide = incompat & INCOMPAT_64BIT != 0;
        let blocks = le32(&s, 0x4) as u64 | if wide { (le32(&s, 0x150) as u64) << 32 } else { 0 };
        let inodes = le32(&s, 0x0) as u64;
        let ipg = le32(&s, 0x28) as u64;
        let bpg = le32(&s, 0x20) as u64;
        let rev = le32(&s, 0x4c);
        let inode_size = if rev == 0 { 128 } else { le16(&s, 0x58) as u64 };
        if !(128..=bs).contains(&inode_size) || !inode_size.is_power_of_two() {
            return Err(bad("s_inode_size", inode_size, "a power of two from 128 to the block size"));
        }
        if ipg == 0 || bpg == 0 || ipg > bs * 8 * 16 {
            return Err(bad("s_inodes_per_group", ipg, "non-zero, at most 16 bitmap blocks' worth"));
        }
        let desc_size = if wide { le16(&s, 0xfe) as u64 } else { 32 };
        if !(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
            return Err(bad("s_desc_size", desc_size, "a power of two from 32 to 1024"));
        }
        let first_data_block = le32(&s, 0x14) as u64;
        if blocks <= first_data_block || blocks.checked_mul(bs).is_none() {
            return Err(bad("s_blocks_count", blocks, "more than s_first_data_block and addressable"));
        }
        let groups = (blocks - first_data_block).div_ceil(bpg);
        if inodes > groups.saturating_mul(ipg) {
            return Err(bad("s_inodes_count", inodes, "at most groups × inodes per group"));
        }
        span.fs = probe_kind(&s);
        Ok(Ext {
            span,
            bs,
            blocks,
            inodes,
            ipg,
            bpg,
            groups,
            inode_size,
            desc_size,
            first_data_block,
            incompat,
            ro: le32(&s, 0x64),
            first_meta_bg: le32(&s, 0x104) as u64,
        })
    }

    pub(crate) fn has_super(&self, g: u64) -> bool {
        if self.ro & RO_SPARSE_SUPER == 0 || g <= 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&b| {
            let mut p = b;
            while p < g {
                p *= b;
            }
            p == g
        })
    }

    /// The byte offset (in the filesystem) of group `g`'s descriptor.
    pub(crate) fn desc_at(&self, g: u64) -> u64 {
        let per_block = self.bs / self.desc_size;
        let mg = g / per_block;
        let block = if self.incompat & INCOMPAT_META_BG != 0 && mg >= self.first_meta_bg {
            let first = mg * per_block;
            self.first_data_block + first * self.bpg + self.has_super(first) as u64
        } else {
            // Right after the superblock's block (block 1 with 1 KiB blocks, even when
            // bigalloc makes s_first_data_block 0).
            1024 / self.bs + 1 + mg
        };
        block * self.bs + (g % per_block) * self.desc_size
    }

    /// Inode `ino`, read from its group's inode table.
    pub fn inode(&self, disk: &mut dyn ReadDisk, ino: u64) -> Result<Inode> {
        if ino == 0 || ino > self.inodes {
            return Err(VolumeError::damaged(self.span.fs, format!("inode {ino}"), format!("inode numbers run from 1 to {}", self.inodes)).into());
        }
        let g = (ino - 1) / self.ipg;
        if g >= self.groups {
            return Err(VolumeError::damaged(self.span.fs, format!("inode {ino}"), format!("in group {g}, past the {} groups", self.groups)).into());
        }
        let place = || format!("group descriptor {g}");
        let d = self.span.vec(disk, self.desc_at(g), self.desc_size as usize, &place)?;
        let mut table = le32(&d, 0x8) as u64;
        if self.desc_size >= 64 {
            table |= (le32(&d, 0x28) as u64) << 32;
        }
        if table == 0 || table >= self.blocks {
            return Err(VolumeError::damaged(self.span.fs, place(), format!("inode table at block {table}, outside the {} blocks", self.blocks)).into());
        }
        let at = table * self.bs + ((ino - 1) % self.ipg) * self.inode_size;
        // The whole inode (at most a block, checked at open): its in-inode attributes may
        // hold inline data.
        let len = self.inode_size as usize;
        let b = self.span.vec(disk, at, len, &|| format!("inode {ino}"))?;
        let extra = if len > 128 { le16(&b, 0x80) as usize } else { 0 };
        let mut mtime = le32(&b, 0x10) as i32 as i64;
        if len >= 0x8c && 128 + extra >= 0x8c {
            mtime += ((le32(&b, 0x88) & 3) as i64) << 32;
        }
        let flags = le32(&b, 0x20);
        Ok(Inode {
            ino,
            inline: if flags & FLAG_INLINE != 0 { system_data(&b, extra) } else { vec![] },
            mode: le16(&b, 0),
            size: le32(&b, 0x4) as u64 | (le32(&b, 0x6c) as u64) << 32,
            mtime,
            flags,
            blocks_lo: le32(&b, 0x1c),
            file_acl: le32(&b, 0x68),
            block: b[0x28..0x64].try_into().unwrap(),
        })
    }

    fn entry(&self, disk: &mut dyn ReadDisk, name: String, inode: &Inode) -> Result<Entry> {
        let kind = inode.kind();
        let target = if kind == EntryKind::Symlink { Some(self.link(disk, inode)?) } else { None };
        Ok(Entry { name, kind, size: inode.size, mtime: inode.mtime, mode: inode.mode as u32, id: inode.ino, target })
    }

    /// A symlink's target: in i_block when short (a fast symlink), else in its data.
    fn link(&self, disk: &mut dyn ReadDisk, inode: &Inode) -> Result<String> {
        if inode.size > MAX_LINK {
            return Err(VolumeError::damaged(self.span.fs, format!("inode {}", inode.ino), format!("symlink of {} bytes, longer than {MAX_LINK}", inode.size)).into());
        }
        let acl_blocks = if inode.file_acl != 0 { (self.bs / 512) as u32 } else { 0 };
        let fast = inode.flags & (FLAG_EXTENTS | FLAG_INLINE) == 0 && inode.size < 60 && inode.blocks_lo <= acl_blocks;
        let bytes = if fast || inode.flags & FLAG_INLINE != 0 && inode.size <= 60 {
            inode.block[..inode.size as usize].to_vec()
        } else {
            let mut v = vec![0u8; inode.size as usize];
            self.read_inode(disk, inode, 0, &mut v)?;
            v
        };
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub fn root(&mut self, disk: &mut dyn ReadDisk) -> Result<Entry> {
        let inode = self.inode(disk, 2)?;
        if inode.kind() != EntryKind::Dir {
            return Err(VolumeError::damaged(self.span.fs, "inode 2", format!("the root is not a directory (mode {:#o})", inode.mode)).into());
        }
        self.entry(disk, "/".into(), &inode)
    }

    /// Walk a directory's entries, calling `f(name, inode number)` until it returns true.
    fn walk(&self, disk: &mut dyn ReadDisk, dir: &Inode, f: &mut dyn FnMut(&[u8], u64) -> Result<bool>) -> Result<()> {
        if dir.size > MAX_DIR_BYTES {
            return Err(VolumeError::Limit { what: "directory size", value: dir.size, limit: MAX_DIR_BYTES }.into());
        }
        let mut count = 0usize;
        if dir.flags & FLAG_INLINE != 0 {
            // An inline directory: the parent's inode number, then entries in the rest of
            // i_block and in the system.data attribute.
            for (i, region) in [&dir.block[4..], &dir.inline[..]].into_iter().enumerate() {
                if self.dirents(region, dir.ino, i as u64, &mut count, f)? {
                    break;
                }
            }
            return Ok(());
        }
        let mut block = vec![0u8; self.bs as usize];
        for i in 0..dir.size.div_ceil(self.bs) {
            let n = (dir.size - i * self.bs).min(self.bs) as usize;
            self.read_inode(disk, dir, i * self.bs, &mut block[..n])?;
            if self.dirents(&block[..n], dir.ino, i, &mut count, f)? {
                break;
            }
        }
        Ok(())
    }

    /// The entries of one directory block (or inline region); true when `f` asked to stop.
    fn dirents(&self, block: &[u8], dir: u64, i: u64, count: &mut usize, f: &mut dyn FnMut(&[u8], u64) -> Result<bool>) -> Result<bool> {
        let n = block.len();
        let mut at = 0usize;
        while at + 8 <= n {
            let ino = le32(block, at) as u64;
            let rec = le16(block, at + 4) as usize;
            let name_len = if self.incompat & INCOMPAT_FILETYPE != 0 { block[at + 6] as usize } else { le16(block, at + 6) as usize };
            if rec < 8 || rec % 4 != 0 || at + rec > n || 8 + name_len > rec {
                return Err(VolumeError::damaged(
                    self.span.fs,
                    format!("directory inode {dir} block {i} offset {at}"),
                    format!("entry length {rec} (name {name_len}) does not fit the {n}-byte block"),
                )
                .into());
            }
            let name = &block[at + 8..at + 8 + name_len];
            if ino != 0 && name != b"." && name != b".." {
                *count += 1;
                if *count > MAX_DIR_ENTRIES {
                    return Err(VolumeError::Limit { what: "directory entries", value: *count as u64, limit: MAX_DIR_ENTRIES as u64 }.into());
                }
                if f(name, ino)? {
                    return Ok(true);
                }
            }
            at += rec;
        }
        Ok(false)
    }

    pub fn list(&mut self, disk: &mut dyn ReadDisk, dir: &Entry) -> Result<Vec<Entry>> {
        let inode = self.inode(disk, dir.id)?;
        let mut found = vec![];
        self.walk(disk, &inode, &mut |name, ino| {
            found.push((String::from_utf8_lossy(name).into_owned(), ino));
            Ok(false)
        })?;
        found.into_iter().map(|(name, ino)| self.inode(disk, ino).and_then(|i| self.entry(disk, name, &i))).collect()
    }

    pub fn find(&mut self, disk: &mut dyn ReadDisk, dir: &Entry, name: &str) -> Result<Option<Entry>> {
        let inode = self.inode(disk, dir.id)?;
        let mut hit = None;
        self.walk(disk, &inode, &mut |n, ino| {
            if n == name.as_bytes() {
                hit = Some(ino);
            }
            Ok(hit.is_some())
        })?;
        match hit {
            Some(ino) => {
                let i = self.inode(disk, ino)?;
                Ok(Some(self.entry(disk, name.to_string(), &i)?))
            }
            None => Ok(None),
        }
    }

    fn mapper(&self) -> Mapper<'_> {
        // Pointers are checked against the partition too: a superblock claiming more
        // blocks than the partition holds must not send reads into the next one.
        Mapper { span: &self.span, bs: self.bs, blocks: self.blocks.min(self.span.size / self.bs) }
    }

    /// Read `buf.len()` bytes of an inode's data from `offset` (the caller bounds it by the
    /// file's size; holes and unwritten extents read zeros).
    fn read_inode(&self, disk: &mut dyn ReadDisk, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<()> {
        if inode.flags & FLAG_INLINE != 0 {
            inline(inode, offset, buf);
            return Ok(());
        }
        let m = self.mapper();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let piece = m.map(disk, inode, pos / self.bs)?;
            let within = pos % self.bs;
            let n = (piece.blocks.saturating_mul(self.bs) - within).min((buf.len() - done) as u64) as usize;
            let out = &mut buf[done..done + n];
            match piece.phys {
                Some(p) => self.span.read(disk, p * self.bs + within, out, &|| format!("data of inode {}", inode.ino))?,
                None => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    pub fn read(&mut self, disk: &mut dyn ReadDisk, file: &Entry, offset: u64, buf: &mut [u8]) -> Result<()> {
        let inode = self.inode(disk, file.id)?;
        self.read_inode(disk, &inode, offset, buf)
    }

    pub fn extents(&mut self, disk: &mut dyn ReadDisk, file: &Entry, from: u64, max: usize) -> Result<Vec<FileExtent>> {
        let inode = self.inode(disk, file.id)?;
        let mut out: Vec<FileExtent> = vec![];
        if inode.flags & FLAG_INLINE != 0 {
            return Ok(out);
        }
        let m = self.mapper();
        let mut pos = from;
        while pos < inode.size && out.len() < max {
            let piece = m.map(disk, &inode, pos / self.bs)?;
            let within = pos % self.bs;
            let len = (piece.blocks.saturating_mul(self.bs) - within).min(inode.size - pos);
            let disk_offset = piece.phys.map(|p| self.span.start + p * self.bs + within);
            match out.last_mut() {
                Some(last) if last.disk_offset.map(|d| d + last.len) == disk_offset || (last.disk_offset.is_none() && disk_offset.is_none()) => {
                    last.len += len
                }
                _ => out.push(FileExtent { offset: pos, disk_offset, len }),
            }
            pos += len;
        }
        Ok(out)
    }
}

fn probe_kind(s: &[u8]) -> &'static str {
    let mut b = vec![0u8; 2048];
    b[1024..].copy_from_slice(s);
    probe(&b).map(|i| i.kind.name()).unwrap_or("ext4")
}

/// Inline data: the first 60 bytes live in i_block, the rest in the `system.data`
/// attribute; past both, zeros.
fn inline(inode: &Inode, offset: u64, buf: &mut [u8]) {
    for (i, out) in buf.iter_mut().enumerate() {
        let p = offset as usize + i;
        *out = if p < 60 { inode.block[p] } else { inode.inline.get(p - 60).copied().unwrap_or(0) };
    }
}

/// The value of the in-inode extended attribute `system.data` (index 7, name "data"), from
/// the attribute area after the inode's extra fields; empty when there is none.
fn system_data(b: &[u8], extra: usize) -> Vec<u8> {
    let start = 128 + extra;
    if start + 4 > b.len() || le32(b, start) != 0xea02_0000 {
        return vec![];
    }
    let first = start + 4;
    let mut at = first;
    while at + 16 <= b.len() && le32(b, at) != 0 {
        let (name_len, index) = (b[at] as usize, b[at + 1]);
        let (offs, inum, size) = (le16(b, at + 2) as usize, le32(b, at + 4), le32(b, at + 8) as usize);
        if index == 7 && inum == 0 && b.get(at + 16..at + 16 + name_len) == Some(b"data") {
            return b.get(first + offs..first + offs + size).map(<[u8]>::to_vec).unwrap_or_default();
        }
        at += (16 + name_len + 3) & !3;
    }
    vec![]
}
