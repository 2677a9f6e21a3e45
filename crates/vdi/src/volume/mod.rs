//! Inside the disk: partition tables, filesystems and files.
//!
//! ```text
//! Disk ──> PartitionTable::read ──> Partition { number, start, size, type, filesystem: FsInfo }
//!                                        │
//!                     Filesystem::open ──┘──> lookup(path) / list(dir) -> Entry
//!                                             read(file, offset, buf)   bounded reads
//!                                             extents(file, ...)        where its bytes lie
//! ```
//!
//! Nothing here owns the disk: a [`Filesystem`] keeps only what it parsed (a superblock,
//! geometry) and takes the disk — anything that implements [`ReadDisk`], e.g.
//! [`DiskReader`] around a [`Disk`](crate::Disk) or a chain — on every call. A caller that
//! holds the disk (the wasm session, the CLI) keeps an open filesystem beside it and lists a
//! directory now and reads a file later without parsing anything again.
//!
//! Read: ext2/3/4, FAT12/16/32 and NTFS files. Detected only (type, label, UUID, size): see
//! [`FsKind`] and docs/volumes.md. Every count and size taken from the image is bounded
//! before anything is allocated; reads are proportional to what is asked.

mod detect;
mod error;
mod ext;
mod ext_map;
mod fat;
mod free;
mod free_exfat;
mod free_ext;
mod free_fat;
mod free_ntfs;
#[cfg(feature = "json")]
pub mod free_json;
mod gpt;
mod io;
#[cfg(feature = "json")]
pub mod json;
mod mbr;
mod ntfs;
mod table;

pub use detect::detect;
pub use error::VolumeError;
pub use free::{FreePlan, FreeStatus, NotClean, PartitionFree};
pub use io::{DiskReader, ReadDisk};
pub use table::{Partition, PartitionTable, Scheme, TypeId};

use crate::error::Result;

/// Longest path, in components, a lookup walks.
pub const MAX_PATH_DEPTH: usize = 256;
/// Most symlinks [`Filesystem::resolve`] follows for one path (Linux's limit).
pub const MAX_SYMLINK_HOPS: usize = 40;
/// Most entries one directory listing returns (a listing holds them all: about 100 bytes
/// each).
pub const MAX_DIR_ENTRIES: usize = 1 << 17;
/// Largest directory read, in bytes (ext4's large directories can be bigger; this holds
/// several times [`MAX_DIR_ENTRIES`] entries, and bounds the walk of a damaged directory
/// claiming terabytes of holes).
pub const MAX_DIR_BYTES: u64 = 64 << 20;

/// A filesystem kind, named as `blkid` names its TYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FsKind {
    /// ext2 (no journal).
    Ext2,
    /// ext3 (journal, no ext4 features).
    Ext3,
    /// ext4.
    Ext4,
    /// FAT12, FAT16 or FAT32.
    Vfat,
    /// exFAT.
    Exfat,
    /// NTFS.
    Ntfs,
    /// HFS+ (or HFSX).
    Hfsplus,
    /// An APFS container.
    Apfs,
    /// XFS.
    Xfs,
    /// btrfs.
    Btrfs,
    /// An LVM2 physical volume.
    Lvm2Member,
    /// A LUKS encrypted volume.
    CryptoLuks,
    /// Linux swap.
    Swap,
    /// ISO 9660.
    Iso9660,
}

impl FsKind {
    /// The lower-case name (`blkid`'s TYPE).
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Vfat => "vfat",
            FsKind::Exfat => "exfat",
            FsKind::Ntfs => "ntfs",
            FsKind::Hfsplus => "hfsplus",
            FsKind::Apfs => "apfs",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Lvm2Member => "lvm2_member",
            FsKind::CryptoLuks => "crypto_luks",
            FsKind::Swap => "swap",
            FsKind::Iso9660 => "iso9660",
        }
    }

    /// Whether this engine lists and reads its files (the others are detection only).
    pub fn readable(self) -> bool {
        matches!(self, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Vfat | FsKind::Ntfs)
    }
}

impl std::fmt::Display for FsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a signature says about a filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// Its kind.
    pub kind: FsKind,
    /// Its label ("" when it has none or it is not read).
    pub label: String,
    /// Its UUID or serial number as `blkid` prints it ("" when it has none).
    pub uuid: String,
    /// Bytes the filesystem says it spans (0 when unknown).
    pub size: u64,
    /// Bytes in use, when the superblock says so.
    pub used: Option<u64>,
    /// Bytes free, when the superblock says so.
    pub free: Option<u64>,
    /// Whether [`Filesystem::open`] reads its files.
    pub readable: bool,
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

impl EntryKind {
    /// "file", "dir", "symlink" or "other".
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "other",
        }
    }
}

/// One file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name in its directory ("/" for the root). Bytes that are not UTF-8 are shown
    /// as U+FFFD.
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Bytes of data.
    pub size: u64,
    /// Last modification, seconds since 1970 (UTC; FAT's local time taken as UTC).
    pub mtime: i64,
    /// Unix permission bits and type (`st_mode`); FAT gives 0o755 dirs, 0o644 files.
    pub mode: u32,
    /// The filesystem's own id: inode number (ext), first cluster (FAT; 0 for FAT12/16's
    /// root), MFT record number (NTFS).
    pub id: u64,
    /// A symlink's target.
    pub target: Option<String>,
}

/// Where a piece of a file lies: `len` bytes at file offset `offset`, stored at
/// `disk_offset` on the virtual disk, or nowhere (`None`: a hole, or an unwritten extent,
/// reading zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileExtent {
    /// Offset in the file.
    pub offset: u64,
    /// Offset on the virtual disk (None: reads zeros).
    pub disk_offset: Option<u64>,
    /// Length in bytes.
    pub len: u64,
}

/// An open filesystem on a partition: what was parsed of it, not the disk (pass the disk to
/// each call).
#[derive(Debug, Clone)]
pub struct Filesystem {
    info: FsInfo,
    number: u32,
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Ext(Box<ext::Ext>),
    Fat(Box<fat::Fat>),
    Ntfs(Box<ntfs::Ntfs>),
}

/// Split a path into its components ("/a//b/" is a, b); refuses "." and ".." (paths here
/// are absolute and plain).
pub(crate) fn components(path: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.len() > MAX_PATH_DEPTH {
        return Err(VolumeError::Limit { what: "path depth", value: parts.len() as u64, limit: MAX_PATH_DEPTH as u64 }.into());
    }
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(VolumeError::NotFound { path: path.to_string() }.into());
    }
    Ok(parts)
}

/// An unsupported-feature error from a reader, with the partition's number put in.
fn numbered(e: crate::VdiError, number: u32) -> crate::VdiError {
    match e {
        crate::VdiError::Volume(VolumeError::Unsupported { fs, .. }) => VolumeError::Unsupported { number, fs }.into(),
        other => other,
    }
}

impl Filesystem {
    /// Open the filesystem of `part` (as found by [`PartitionTable::read`]).
    pub fn open(disk: &mut dyn ReadDisk, part: &Partition) -> Result<Filesystem> {
        let Some(info) = part.filesystem.clone() else {
            return Err(VolumeError::NoFilesystem { number: part.number }.into());
        };
        let inner = match info.kind {
            FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
                Inner::Ext(Box::new(ext::Ext::open(disk, part.start, part.size).map_err(|e| numbered(e, part.number))?))
            }
            FsKind::Vfat => Inner::Fat(Box::new(fat::Fat::open(disk, part.start, part.size)?)),
            FsKind::Ntfs => Inner::Ntfs(Box::new(ntfs::Ntfs::open(disk, part.start, part.size)?)),
            other => return Err(VolumeError::Unsupported { number: part.number, fs: other.name().into() }.into()),
        };
        Ok(Filesystem { info, number: part.number, inner })
    }

    /// What detection said about it.
    pub fn info(&self) -> &FsInfo {
        &self.info
    }

    /// The number of the partition it is on.
    pub fn partition(&self) -> u32 {
        self.number
    }

    /// The root directory.
    pub fn root(&mut self, disk: &mut dyn ReadDisk) -> Result<Entry> {
        match &mut self.inner {
            Inner::Ext(fs) => fs.root(disk),
            Inner::Fat(fs) => Ok(fs.root()),
            Inner::Ntfs(fs) => fs.root(disk),
        }
    }

    /// The entry a path names ("/" is the root). Symlinks are not followed.
    pub fn lookup(&mut self, disk: &mut dyn ReadDisk, path: &str) -> Result<Entry> {
        let parts = components(path)?;
        let mut cur = self.root(disk)?;
        for (i, part) in parts.iter().enumerate() {
            if cur.kind != EntryKind::Dir {
                return Err(VolumeError::NotADirectory { path: format!("/{}", parts[..i].join("/")) }.into());
            }
            cur = self.child(disk, &cur, part)?.ok_or_else(|| VolumeError::NotFound { path: path.to_string() })?;
        }
        Ok(cur)
    }

    /// The entry a path names with every symlink on the way followed, the last one too
    /// (what `cat` opens): relative targets from the link's directory, absolute ones from
    /// this filesystem's root, at most [`MAX_SYMLINK_HOPS`] links.
    pub fn resolve(&mut self, disk: &mut dyn ReadDisk, path: &str) -> Result<Entry> {
        let mut todo: std::collections::VecDeque<String> = components(path)?.into_iter().map(String::from).collect();
        // The entries from the root down to where the walk is.
        let mut trail = vec![self.root(disk)?];
        let mut hops = 0;
        while let Some(part) = todo.pop_front() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    if trail.len() > 1 {
                        trail.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let cur = trail.last().expect("the root stays");
            if cur.kind != EntryKind::Dir {
                return Err(VolumeError::NotADirectory { path: cur.name.clone() }.into());
            }
            let cur = cur.clone();
            let next = self.child(disk, &cur, &part)?.ok_or_else(|| VolumeError::NotFound { path: path.to_string() })?;
            if next.kind != EntryKind::Symlink {
                trail.push(next);
                continue;
            }
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(VolumeError::Limit { what: "symlinks followed", value: hops as u64, limit: MAX_SYMLINK_HOPS as u64 }.into());
            }
            let target = next.target.unwrap_or_default();
            if target.starts_with('/') {
                trail.truncate(1);
            }
            for p in target.split('/').filter(|c| !c.is_empty()).rev() {
                todo.push_front(p.to_string());
            }
            if todo.len() > MAX_PATH_DEPTH {
                return Err(VolumeError::Limit { what: "path depth", value: todo.len() as u64, limit: MAX_PATH_DEPTH as u64 }.into());
            }
        }
        Ok(trail.pop().expect("the root stays"))
    }

    /// The entry named `name` in directory `dir`.
    fn child(&mut self, disk: &mut dyn ReadDisk, dir: &Entry, name: &str) -> Result<Option<Entry>> {
        match &mut self.inner {
            Inner::Ext(fs) => fs.find(disk, dir, name),
            Inner::Fat(fs) => fs.find(disk, dir, name),
            Inner::Ntfs(fs) => fs.find(disk, dir, name),
        }
        .map_err(|e| numbered(e, self.number))
    }

    /// The entries of a directory, without "." and "..", in on-disk order.
    pub fn list(&mut self, disk: &mut dyn ReadDisk, dir: &Entry) -> Result<Vec<Entry>> {
        if dir.kind != EntryKind::Dir {
            return Err(VolumeError::NotADirectory { path: dir.name.clone() }.into());
        }
        match &mut self.inner {
            Inner::Ext(fs) => fs.list(disk, dir),
            Inner::Fat(fs) => fs.list(disk, dir),
            Inner::Ntfs(fs) => fs.list(disk, dir),
        }
        .map_err(|e| numbered(e, self.number))
    }

    /// The entries of the directory a path names.
    pub fn list_path(&mut self, disk: &mut dyn ReadDisk, path: &str) -> Result<Vec<Entry>> {
        let dir = self.lookup(disk, path)?;
        if dir.kind != EntryKind::Dir {
            return Err(VolumeError::NotADirectory { path: path.to_string() }.into());
        }
        self.list(disk, &dir)
    }

    /// Read a regular file's bytes from `offset` into `buf`; returns how many were read
    /// (fewer than `buf.len()` only at the end of the file). Reads only what is asked.
    pub fn read(&mut self, disk: &mut dyn ReadDisk, file: &Entry, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if file.kind != EntryKind::File {
            return Err(VolumeError::NotAFile { path: file.name.clone() }.into());
        }
        let want = file.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        match &mut self.inner {
            Inner::Ext(fs) => fs.read(disk, file, offset, &mut buf[..want]),
            Inner::Fat(fs) => fs.read(disk, file, offset, &mut buf[..want]),
            Inner::Ntfs(fs) => fs.read(disk, file, offset, &mut buf[..want]),
        }
        .map_err(|e| numbered(e, self.number))?;
        Ok(want)
    }

    /// Where a file's (or directory's) bytes lie on the virtual disk, from file offset
    /// `from` on, at most `max` extents (ask again from the end of the last one for more).
    /// Holes and unwritten extents have no disk offset.
    pub fn extents(&mut self, disk: &mut dyn ReadDisk, file: &Entry, from: u64, max: usize) -> Result<Vec<FileExtent>> {
        match &mut self.inner {
            Inner::Ext(fs) => fs.extents(disk, file, from, max),
            Inner::Fat(fs) => fs.extents(disk, file, from, max),
            Inner::Ntfs(fs) => fs.extents(disk, file, from, max),
        }
        .map_err(|e| numbered(e, self.number))
    }
}
