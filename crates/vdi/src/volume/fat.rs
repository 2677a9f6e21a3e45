//! FAT12/16/32, read-only: the boot sector's geometry, cluster chains through the FAT, and
//! directories with long (VFAT) names.
//!
//! Layout reference: Microsoft's "FAT: General Overview of On-Disk Format" (the type is
//! decided by the cluster count alone). Chains are bounded by the cluster count, so a
//! looping FAT ends in a named error; FAT sectors are cached a few KiB at a time and the
//! last position in a chain is remembered, so reading a file front to back walks its chain
//! once.

use crate::error::Result;
use crate::volume::io::{le16, le32, ReadDisk, Span};
use crate::volume::{Entry, EntryKind, FileExtent, VolumeError};

/// Most entries a FAT directory can hold (the format's own limit).
const MAX_DIR_ENTRIES: u64 = 65536;
/// Bytes of the FAT cached at once.
const FAT_WINDOW: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    Fat12,
    Fat16,
    Fat32,
}

/// An open FAT filesystem.
#[derive(Debug, Clone)]
pub(crate) struct Fat {
    pub(crate) span: Span,
    pub(crate) width: Width,
    /// Bytes per cluster.
    pub(crate) cs: u64,
    /// Byte offset of the first FAT.
    pub(crate) fat_at: u64,
    /// Byte offset of cluster 2.
    pub(crate) data_at: u64,
    /// FAT12/16: the fixed root directory (offset, bytes); FAT32: its first cluster.
    root: Root,
    /// Highest valid cluster number + 1.
    pub(crate) end: u32,
    /// A window of the FAT: (byte offset in the FAT, bytes).
    window: Option<(u64, Vec<u8>)>,
    /// The last position reached in a chain: (first cluster, index, cluster).
    cursor: Option<(u32, u64, u32)>,
}

#[derive(Debug, Clone, Copy)]
enum Root {
    Fixed { at: u64, len: u64 },
    Cluster(u32),
}

impl Fat {
    pub fn open(disk: &mut dyn ReadDisk, start: u64, size: u64) -> Result<Fat> {
        let span = Span { start, size, fs: "vfat" };
        let b = span.vec(disk, 0, 512, &|| "boot sector".into())?;
        let bad = |field: &str, v: u64, want: &str| -> crate::VdiError {
            VolumeError::damaged("vfat", "boot sector", format!("{field} is {v}, expected {want}")).into()
        };
        let bps = le16(&b, 11) as u64;
        if !(512..=4096).contains(&bps) || !bps.is_power_of_two() {
            return Err(bad("bytes per sector", bps, "a power of two from 512 to 4096"));
        }
        let spc = b[13] as u64;
        if spc == 0 || !spc.is_power_of_two() {
            return Err(bad("sectors per cluster", spc, "a power of two"));
        }
        let reserved = le16(&b, 14) as u64;
        let fats = b[16] as u64;
        if reserved == 0 || fats == 0 {
            return Err(bad("reserved sectors or FAT count", reserved.min(fats), "non-zero"));
        }
        let root_entries = le16(&b, 17) as u64;
        let total = match le16(&b, 19) {
            0 => le32(&b, 32) as u64,
            n => n as u64,
        };
        let fat_sectors = match le16(&b, 22) {
            0 => le32(&b, 36) as u64,
            n => n as u64,
        };
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let first_data = reserved + fats * fat_sectors + root_sectors;
        if total <= first_data || fat_sectors == 0 {
            return Err(bad("total sectors", total, &format!("more than the {first_data} before the data area")));
        }
        let clusters = (total - first_data) / spc;
        let width = if clusters < 4085 {
            Width::Fat12
        } else if clusters < 65525 {
            Width::Fat16
        } else {
            Width::Fat32
        };
        let cs = bps * spc;
        let root = if width == Width::Fat32 {
            Root::Cluster(le32(&b, 44))
        } else {
            Root::Fixed { at: (reserved + fats * fat_sectors) * bps, len: root_sectors * bps }
        };
        // Clusters past the partition's end are refused like clusters past the FAT's.
        let fit = size.saturating_sub(first_data * bps) / cs;
        let end = (clusters.min(fit) + 2).min(0x0fff_fff7) as u32;
        let need = match width {
            Width::Fat12 => (end as u64 * 3).div_ceil(2),
            Width::Fat16 => end as u64 * 2,
            Width::Fat32 => end as u64 * 4,
        };
        if need > fat_sectors * bps {
            return Err(bad("sectors per FAT", fat_sectors, &format!("room for {clusters} clusters")));
        }
        Ok(Fat { span, width, cs, fat_at: reserved * bps, data_at: first_data * bps, root, end, window: None, cursor: None })
    }

    fn damaged(&self, place: impl Into<String>, detail: impl Into<String>) -> crate::VdiError {
        VolumeError::damaged("vfat", place, detail).into()
    }

    /// The FAT entry of cluster `c` (the next cluster of a chain, or an end mark).
    fn next(&mut self, disk: &mut dyn ReadDisk, c: u32) -> Result<u32> {
        let (at, len) = match self.width {
            Width::Fat12 => (c as u64 * 3 / 2, 2),
            Width::Fat16 => (c as u64 * 2, 2),
            Width::Fat32 => (c as u64 * 4, 4),
        };
        let hit = matches!(&self.window, Some((w, v)) if at >= *w && at + len <= *w + v.len() as u64);
        if !hit {
            let w = at - at % FAT_WINDOW;
            let n = (FAT_WINDOW + 4).min(self.span.size.saturating_sub(self.fat_at + w)) as usize;
            let v = self.span.vec(disk, self.fat_at + w, n, &|| format!("FAT entry of cluster {c}"))?;
            self.window = Some((w, v));
        }
        let (w, v) = self.window.as_ref().unwrap();
        let i = (at - w) as usize;
        if i + len as usize > v.len() {
            return Err(self.damaged(format!("FAT entry of cluster {c}"), "past the end of the filesystem"));
        }
        Ok(match self.width {
            Width::Fat12 => {
                let x = le16(v, i) as u32;
                if c % 2 == 0 {
                    x & 0xfff
                } else {
                    x >> 4
                }
            }
            Width::Fat16 => le16(v, i) as u32,
            Width::Fat32 => le32(v, i) & 0x0fff_ffff,
        })
    }

    fn is_end(&self, v: u32) -> bool {
        match self.width {
            Width::Fat12 => v >= 0xff8,
            Width::Fat16 => v >= 0xfff8,
            Width::Fat32 => v >= 0x0fff_fff8,
        }
    }

    /// The cluster at position `index` of the chain starting at `first` (None past its end),
    /// continuing from the remembered cursor when it is on the way.
    fn nth(&mut self, disk: &mut dyn ReadDisk, first: u32, index: u64) -> Result<Option<u32>> {
        self.check(first, first)?;
        let (mut i, mut c) = match self.cursor {
            Some((f, i, c)) if f == first && i <= index => (i, c),
            _ => (0, first),
        };
        while i < index {
            if i >= self.end as u64 {
                return Err(self.damaged(format!("cluster chain from {first}"), "longer than the filesystem has clusters (a loop)"));
            }
            let n = self.next(disk, c)?;
            if self.is_end(n) {
                return Ok(None);
            }
            self.check(first, n)?;
            if n == c {
                return Err(self.damaged(format!("cluster chain from {first}"), format!("cluster {c} points to itself")));
            }
            c = n;
            i += 1;
        }
        self.cursor = Some((first, i, c));
        Ok(Some(c))
    }

    fn check(&self, first: u32, c: u32) -> Result<()> {
        if c < 2 || c >= self.end {
            return Err(self.damaged(format!("cluster chain from {first}"), format!("cluster {c} is outside 2..{}", self.end)));
        }
        Ok(())
    }

    fn cluster_at(&self, c: u32) -> u64 {
        self.data_at + (c as u64 - 2) * self.cs
    }

    /// Read `buf.len()` bytes of the chain from `first` at `offset` (`len`: the bytes the
    /// chain must hold).
    fn read_chain(&mut self, disk: &mut dyn ReadDisk, first: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let Some(c) = self.nth(disk, first, pos / self.cs)? else {
                return Err(self.damaged(format!("cluster chain from {first}"), format!("ends before byte {pos} of the file")));
            };
            let within = pos % self.cs;
            let n = ((self.cs - within) as usize).min(buf.len() - done);
            self.span.read(disk, self.cluster_at(c) + within, &mut buf[done..done + n], &|| format!("cluster {c}"))?;
            done += n;
        }
        Ok(())
    }

    pub fn root(&mut self) -> Entry {
        let id = match self.root {
            Root::Fixed { .. } => 0,
            Root::Cluster(c) => c as u64,
        };
        Entry { name: "/".into(), kind: EntryKind::Dir, size: 0, mtime: 0, mode: 0o40755, id, target: None }
    }

    /// A directory's raw 32-byte records, bounded by the format's 65536 entries.
    fn records(&mut self, disk: &mut dyn ReadDisk, dir: &Entry) -> Result<Vec<u8>> {
        if dir.id == 0 {
            let Root::Fixed { at, len } = self.root else {
                return Err(self.damaged("root directory", "cluster 0"));
            };
            return self.span.vec(disk, at, len as usize, &|| "root directory".into());
        }
        let first = dir.id as u32;
        self.check(first, first)?;
        let mut out = vec![];
        let mut c = first;
        for i in 0.. {
            if out.len() as u64 >= MAX_DIR_ENTRIES * 32 {
                return Err(VolumeError::Limit { what: "directory bytes", value: out.len() as u64, limit: MAX_DIR_ENTRIES * 32 }.into());
            }
            let at = out.len();
            out.resize(at + self.cs as usize, 0);
            self.span.read(disk, self.cluster_at(c), &mut out[at..], &|| format!("directory cluster {c}"))?;
            if out[at..].chunks_exact(32).any(|r| r[0] == 0) {
                break;
            }
            let n = self.next(disk, c)?;
            if self.is_end(n) {
                break;
            }
            self.check(first, n)?;
            if i as u64 > self.end as u64 {
                return Err(self.damaged(format!("directory chain from {first}"), "loops"));
            }
            c = n;
        }
        Ok(out)
    }

    pub fn list(&mut self, disk: &mut dyn ReadDisk, dir: &Entry) -> Result<Vec<Entry>> {
        let raw = self.records(disk, dir)?;
        Ok(parse_dir(&raw, self.width == Width::Fat32))
    }

    pub fn find(&mut self, disk: &mut dyn ReadDisk, dir: &Entry, name: &str) -> Result<Option<Entry>> {
        // An exact match first, then one without regard to case (as FAT compares names).
        let entries = self.list(disk, dir)?;
        let exact = entries.iter().position(|e| e.name == name);
        let folded = || entries.iter().position(|e| e.name.to_lowercase() == name.to_lowercase());
        Ok(exact.or_else(folded).map(|i| entries[i].clone()))
    }

    pub fn read(&mut self, disk: &mut dyn ReadDisk, file: &Entry, offset: u64, buf: &mut [u8]) -> Result<()> {
        let first = file.id as u32;
        self.check(first, first)?;
        self.read_chain(disk, first, offset, buf)
    }

    pub fn extents(&mut self, disk: &mut dyn ReadDisk, file: &Entry, from: u64, max: usize) -> Result<Vec<FileExtent>> {
        let mut out: Vec<FileExtent> = vec![];
        if file.id == 0 {
            if let (Root::Fixed { at, len }, true) = (self.root, file.kind == EntryKind::Dir) {
                out.push(FileExtent { offset: 0, disk_offset: Some(self.span.start + at), len });
            }
            return Ok(out);
        }
        let size = if file.kind == EntryKind::Dir { u64::MAX } else { file.size };
        let mut pos = from;
        while pos < size && out.len() < max {
            let Some(c) = self.nth(disk, file.id as u32, pos / self.cs)? else { break };
            let within = pos % self.cs;
            let len = (self.cs - within).min(size - pos);
            let d = self.span.start + self.cluster_at(c) + within;
            match out.last_mut() {
                Some(l) if l.disk_offset.map(|x| x + l.len) == Some(d) => l.len += len,
                _ => out.push(FileExtent { offset: pos, disk_offset: Some(d), len }),
            }
            pos += len;
        }
        Ok(out)
    }
}

/// The entries of a directory's records: long names gathered and checked against their
/// short entry's checksum, "." and ".." and the volume label left out.
fn parse_dir(raw: &[u8], fat32: bool) -> Vec<Entry> {
    let mut out = vec![];
    let mut long: Vec<(u8, [u8; 26])> = vec![];
    for r in raw.chunks_exact(32) {
        match r[0] {
            0 => break,
            0xe5 => {
                long.clear();
                continue;
            }
            _ => {}
        }
        let attr = r[11];
        if attr & 0x3f == 0x0f {
            let mut piece = [0u8; 26];
            piece[..10].copy_from_slice(&r[1..11]);
            piece[10..22].copy_from_slice(&r[14..26]);
            piece[22..].copy_from_slice(&r[28..32]);
            if r[0] & 0x40 != 0 {
                long.clear();
            }
            long.push((r[13], piece));
            continue;
        }
        if attr & 0x08 != 0 {
            long.clear();
            continue;
        }
        let short = short_name(r);
        let sum = r[..11].iter().fold(0u8, |s, &c| s.rotate_right(1).wrapping_add(c));
        let name = if !long.is_empty() && long.iter().all(|(c, _)| *c == sum) {
            let bytes: Vec<u8> = long.iter().rev().flat_map(|(_, p)| p.iter().copied()).collect();
            let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0 && u != 0xffff).collect();
            String::from_utf16_lossy(&units)
        } else {
            short
        };
        long.clear();
        if name == "." || name == ".." {
            continue;
        }
        let dir = attr & 0x10 != 0;
        let hi = if fat32 { (le16(r, 20) as u64) << 16 } else { 0 };
        let mode = match (dir, attr & 0x01 != 0) {
            (true, _) => 0o40755,
            (false, true) => 0o100444,
            (false, false) => 0o100644,
        };
        out.push(Entry {
            name,
            kind: if dir { EntryKind::Dir } else { EntryKind::File },
            size: if dir { 0 } else { le32(r, 28) as u64 },
            mtime: dos_time(le16(r, 24), le16(r, 22)),
            mode,
            id: hi | le16(r, 26) as u64,
            target: None,
        });
    }
    out
}

/// An 8.3 name, lower-cased where the NT case bits say so.
fn short_name(r: &[u8]) -> String {
    let mut base: Vec<u8> = r[..8].to_vec();
    if base[0] == 0x05 {
        base[0] = 0xe5;
    }
    let lower = |v: &[u8], on: bool| -> String {
        let s: String = v.iter().map(|&c| c as char).collect::<String>().trim_end().to_string();
        if on {
            s.to_lowercase()
        } else {
            s
        }
    };
    let b = lower(&base, r[12] & 0x08 != 0);
    let e = lower(&r[8..11], r[12] & 0x10 != 0);
    if e.is_empty() {
        b
    } else {
        format!("{b}.{e}")
    }
}

/// Seconds since 1970 of a DOS date and time (local time, taken as UTC).
fn dos_time(date: u16, time: u16) -> i64 {
    let y = 1980 + (date >> 9) as i64;
    let m = ((date >> 5) & 0xf).clamp(1, 12) as i64;
    let d = (date & 0x1f).max(1) as i64;
    // Days from civil (Howard Hinnant's algorithm).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86400 + (time >> 11) as i64 * 3600 + ((time >> 5) & 0x3f) as i64 * 60 + (time & 0x1f) as i64 * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_times_convert() {
        // 2000-02-29 12:34:56
        let date = (20 << 9) | (2 << 5) | 29;
        let time = (12 << 11) | (34 << 5) | 28;
        assert_eq!(dos_time(date, time), 951_827_696);
    }
}
