//! NTFS, read-only: MFT records (with their update-sequence fixups), resident and
//! non-resident attributes, run lists (sparse runs read as zeros), directories from their
//! `$I30` index (root and allocation), names in the Win32/POSIX namespaces.
//!
//! Not read: compressed and encrypted data, files whose attributes spill into an
//! `$ATTRIBUTE_LIST` (very fragmented or very large files), reparse points (listed as
//! "other"). Layout reference: the Linux-NTFS project's documentation of the on-disk format.

use crate::error::Result;
use crate::volume::io::{le16, le32, le64, utf16le, ReadDisk, Span};
use crate::volume::{Entry, EntryKind, FileExtent, VolumeError, MAX_DIR_BYTES, MAX_DIR_ENTRIES};

const ROOT: u64 = 5;
const AT_STANDARD_INFORMATION: u32 = 0x10;
const AT_ATTRIBUTE_LIST: u32 = 0x20;
const AT_FILE_NAME: u32 = 0x30;
const AT_VOLUME_NAME: u32 = 0x60;
const AT_DATA: u32 = 0x80;
const AT_INDEX_ROOT: u32 = 0x90;
const AT_INDEX_ALLOCATION: u32 = 0xa0;
const AT_END: u32 = 0xffff_ffff;
/// Most runs decoded from one run list.
const MAX_RUNS: usize = 1 << 16;
/// Seconds from 1601 (FILETIME's epoch) to 1970.
const EPOCH_1601: i64 = 11_644_473_600;

/// A run of clusters: `len` clusters from virtual cluster `vcn`, stored from `lcn` (None:
/// sparse).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub vcn: u64,
    pub lcn: Option<u64>,
    pub len: u64,
}

/// One attribute of a record.
pub(crate) struct Attr<'a> {
    pub kind: u32,
    pub named: bool,
    flags: u16,
    /// Resident: the value. Non-resident: the whole attribute (its header holds the sizes).
    pub resident: Option<&'a [u8]>,
    raw: &'a [u8],
}

#[derive(Debug, Clone)]
pub(crate) struct Ntfs {
    pub span: Span,
    pub cs: u64,
    rec_size: u64,
    index_size: u64,
    pub mft: Vec<Run>,
    pub clusters: u64,
}

fn damaged(place: impl Into<String>, detail: impl Into<String>) -> crate::VdiError {
    VolumeError::damaged("ntfs", place, detail).into()
}

/// A record size from its boot-sector byte: clusters if positive, else 2^-n bytes.
fn size_of(b: u8, cs: u64) -> u64 {
    let v = b as i8;
    if v > 0 {
        v as u64 * cs
    } else {
        1u64.checked_shl((-(v as i32)) as u32).unwrap_or(0)
    }
}

/// Apply the update-sequence fixups of a multi-sector record in place.
fn fixup(buf: &mut [u8], what: &dyn Fn() -> String) -> Result<()> {
    let usa = le16(buf, 4) as usize;
    let count = le16(buf, 6) as usize;
    if count == 0 || usa + 2 * count > buf.len() || (count - 1) * 512 > buf.len() {
        return Err(damaged(what(), format!("update sequence of {count} at {usa} does not fit {} bytes", buf.len())));
    }
    let check = [buf[usa], buf[usa + 1]];
    for i in 1..count {
        let end = i * 512 - 2;
        if buf[end..end + 2] != check {
            return Err(damaged(what(), format!("sector {} fails its update-sequence check", i - 1)));
        }
        buf[end] = buf[usa + 2 * i];
        buf[end + 1] = buf[usa + 2 * i + 1];
    }
    Ok(())
}

/// The attributes of a (fixed-up) MFT record.
pub(crate) fn attrs(rec: &[u8]) -> Vec<Attr<'_>> {
    let mut out = vec![];
    let mut at = le16(rec, 0x14) as usize;
    while at + 16 <= rec.len() {
        let kind = le32(rec, at);
        let len = le32(rec, at + 4) as usize;
        if kind == AT_END || len < 16 || at + len > rec.len() {
            break;
        }
        let a = &rec[at..at + len];
        let resident = if a[8] == 0 && len >= 24 {
            let (vlen, voff) = (le32(a, 0x10) as usize, le16(a, 0x14) as usize);
            a.get(voff..voff.saturating_add(vlen))
        } else {
            None
        };
        out.push(Attr { kind, named: a[9] != 0, flags: le16(a, 0x0c), resident, raw: a });
        at += len;
    }
    out
}

/// Decode a non-resident attribute's run list (bounded, offsets checked).
fn runs(a: &[u8], clusters: u64, what: &dyn Fn() -> String) -> Result<Vec<Run>> {
    if a.len() < 0x40 {
        return Err(damaged(what(), "non-resident header too short"));
    }
    let mut at = le16(a, 0x20) as usize;
    let mut vcn = le64(a, 0x10);
    let mut lcn: i64 = 0;
    let mut out = vec![];
    while at < a.len() && a[at] != 0 {
        let (lsize, osize) = ((a[at] & 0xf) as usize, (a[at] >> 4) as usize);
        if lsize == 0 || lsize > 8 || osize > 8 || at + 1 + lsize + osize > a.len() {
            return Err(damaged(what(), format!("run header {:#04x} at {at}", a[at])));
        }
        let mut len = 0u64;
        for i in 0..lsize {
            len |= (a[at + 1 + i] as u64) << (8 * i);
        }
        let stored = if osize == 0 {
            None
        } else {
            let mut off = 0i64;
            for i in 0..osize {
                off |= (a[at + 1 + lsize + i] as i64) << (8 * i);
            }
            let shift = 64 - 8 * osize as u32;
            off = (off << shift) >> shift;
            lcn = lcn.checked_add(off).ok_or_else(|| damaged(what(), "run offset overflows"))?;
            if lcn < 0 || (lcn as u64).checked_add(len).is_none_or(|e| e > clusters) {
                return Err(damaged(what(), format!("run of {len} clusters at {lcn} lies outside the {clusters} clusters")));
            }
            Some(lcn as u64)
        };
        out.push(Run { vcn, lcn: stored, len });
        if out.len() > MAX_RUNS {
            return Err(VolumeError::Limit { what: "runs in one run list", value: out.len() as u64, limit: MAX_RUNS as u64 }.into());
        }
        vcn = vcn.saturating_add(len);
        at += 1 + lsize + osize;
    }
    Ok(out)
}

impl Ntfs {
    pub fn open(disk: &mut dyn ReadDisk, start: u64, size: u64) -> Result<Ntfs> {
        let mut span = Span { start, size, fs: "ntfs" };
        let b = span.vec(disk, 0, 512, &|| "boot sector".into())?;
        let bps = le16(&b, 11) as u64;
        let spc = b[13] as u64;
        if !(256..=4096).contains(&bps) || !bps.is_power_of_two() || spc == 0 || !spc.is_power_of_two() {
            return Err(damaged("boot sector", format!("{bps} bytes per sector, {spc} sectors per cluster")));
        }
        let cs = bps * spc;
        let rec_size = size_of(b[0x40], cs);
        let index_size = size_of(b[0x44], cs);
        if !(512..=65536).contains(&rec_size) || !rec_size.is_power_of_two() || !(512..=65536).contains(&index_size) {
            return Err(damaged("boot sector", format!("MFT record size {rec_size}, index record size {index_size}")));
        }
        let clusters = (le64(&b, 0x28).saturating_mul(bps) / cs).min(size / cs);
        let mft_lcn = le64(&b, 0x30);
        if mft_lcn >= clusters {
            return Err(damaged("boot sector", format!("$MFT at cluster {mft_lcn}, outside the {clusters} clusters")));
        }
        span.fs = "ntfs";
        let mut fs = Ntfs { span, cs, rec_size, index_size, mft: vec![Run { vcn: 0, lcn: Some(mft_lcn), len: rec_size.div_ceil(cs) }], clusters };
        let rec0 = fs.record(disk, 0)?;
        let data = attrs(&rec0).into_iter().find(|a| a.kind == AT_DATA && !a.named && a.resident.is_none());
        let Some(data) = data else { return Err(damaged("MFT record 0 ($MFT)", "no non-resident $DATA")) };
        fs.mft = runs(data.raw, clusters, &|| "$MFT's run list".into())?;
        Ok(fs)
    }

    /// The volume label: `$VOLUME_NAME` of the `$Volume` record (3).
    pub fn label(&self, disk: &mut dyn ReadDisk) -> Result<String> {
        let rec = self.record(disk, 3)?;
        Ok(attrs(&rec).iter().find(|a| a.kind == AT_VOLUME_NAME).and_then(|a| a.resident).map(utf16le).unwrap_or_default())
    }

    /// Read `buf.len()` bytes at `offset` of data stored in `runs`; sparse runs and bytes
    /// past the runs read zeros.
    fn read_runs(&self, disk: &mut dyn ReadDisk, runs: &[Run], offset: u64, buf: &mut [u8], what: &dyn Fn() -> String) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let vcn = pos / self.cs;
            let within = pos % self.cs;
            let run = runs.iter().find(|r| vcn >= r.vcn && vcn - r.vcn < r.len);
            let avail = match run {
                Some(r) => (r.vcn.saturating_add(r.len) - vcn).saturating_mul(self.cs) - within,
                None => self.cs - within,
            };
            let n = (avail.min((buf.len() - done) as u64)) as usize;
            let out = &mut buf[done..done + n];
            match run.and_then(|r| r.lcn.map(|l| l + (vcn - r.vcn))) {
                Some(lcn) => self.span.read(disk, lcn * self.cs + within, out, what)?,
                None => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// MFT record `n`, fixed up.
    pub(crate) fn record(&self, disk: &mut dyn ReadDisk, n: u64) -> Result<Vec<u8>> {
        let what = || format!("MFT record {n}");
        let mft_len = self.mft.iter().fold(0u64, |n, r| n.saturating_add(r.len)).saturating_mul(self.cs);
        if n.checked_mul(self.rec_size).is_none_or(|o| o + self.rec_size > mft_len) {
            return Err(damaged(what(), format!("past the end of the {mft_len}-byte $MFT")));
        }
        let mut rec = vec![0u8; self.rec_size as usize];
        self.read_runs(disk, &self.mft, n * self.rec_size, &mut rec, &what)?;
        if &rec[..4] != b"FILE" {
            return Err(damaged(what(), "no FILE signature"));
        }
        fixup(&mut rec, &what)?;
        if le16(&rec, 0x16) & 1 == 0 {
            return Err(damaged(what(), "the record is not in use"));
        }
        if le16(&rec, 0x14) as u64 >= self.rec_size {
            return Err(damaged(what(), "first attribute past the record"));
        }
        Ok(rec)
    }

    pub(crate) fn entry(&self, disk: &mut dyn ReadDisk, n: u64, name: String) -> Result<Entry> {
        let rec = self.record(disk, n)?;
        let flags = le16(&rec, 0x16);
        let list = attrs(&rec);
        let mtime = list
            .iter()
            .find(|a| a.kind == AT_STANDARD_INFORMATION)
            .and_then(|a| a.resident)
            .filter(|v| v.len() >= 16)
            .map(|v| (le64(v, 8) / 10_000_000) as i64 - EPOCH_1601)
            .unwrap_or(0);
        let reparse = list.iter().any(|a| a.kind == AT_FILE_NAME && a.resident.is_some_and(|v| v.len() > 0x3c && le32(v, 0x38) & 0x400 != 0));
        let (kind, mode) = if flags & 2 != 0 {
            (EntryKind::Dir, 0o40755)
        } else if reparse {
            (EntryKind::Other, 0o644)
        } else {
            (EntryKind::File, 0o100644)
        };
        let size = match list.iter().find(|a| a.kind == AT_DATA && !a.named) {
            Some(Attr { resident: Some(v), .. }) => v.len() as u64,
            Some(a) if a.raw.len() >= 0x40 => le64(a.raw, 0x30),
            _ => 0,
        };
        Ok(Entry { name, kind, size: if kind == EntryKind::Dir { 0 } else { size }, mtime, mode, id: n, target: None })
    }

    pub fn root(&mut self, disk: &mut dyn ReadDisk) -> Result<Entry> {
        self.entry(disk, ROOT, "/".into())
    }

    /// The (record number, name) pairs of a directory's `$I30` index, DOS names left out.
    fn index(&self, disk: &mut dyn ReadDisk, dir: u64) -> Result<Vec<(u64, String)>> {
        let rec = self.record(disk, dir)?;
        let list = attrs(&rec);
        let mut out = vec![];
        if let Some(root) = list.iter().find(|a| a.kind == AT_INDEX_ROOT).and_then(|a| a.resident) {
            if root.len() >= 0x20 {
                entries(&root[0x10..], &mut out, &|| format!("directory {dir} index root"))?;
            }
        }
        if let Some(alloc) = list.iter().find(|a| a.kind == AT_INDEX_ALLOCATION && a.resident.is_none()) {
            let what = || format!("directory {dir} index allocation");
            let rs = runs(alloc.raw, self.clusters, &what)?;
            let len = le64(alloc.raw, 0x30);
            if len > MAX_DIR_BYTES {
                return Err(VolumeError::Limit { what: "directory index size", value: len, limit: MAX_DIR_BYTES }.into());
            }
            let mut buf = vec![0u8; self.index_size as usize];
            let mut at = 0;
            while at + self.index_size <= len {
                self.read_runs(disk, &rs, at, &mut buf, &what)?;
                if &buf[..4] == b"INDX" {
                    fixup(&mut buf, &what)?;
                    entries(&buf[0x18..], &mut out, &what)?;
                }
                at += self.index_size;
            }
        }
        out.retain(|(n, name)| *n != dir && !(dir == ROOT && *n < 16 && name.starts_with('$')));
        Ok(out)
    }

    pub fn list(&mut self, disk: &mut dyn ReadDisk, dir: &Entry) -> Result<Vec<Entry>> {
        if list_attr_only(self, disk, dir.id)? {
            return Err(VolumeError::Unsupported { number: 0, fs: format!("ntfs directory {} with an attribute list", dir.id) }.into());
        }
        let found = self.index(disk, dir.id)?;
        found.into_iter().map(|(n, name)| self.entry(disk, n, name)).collect()
    }

    pub fn find(&mut self, disk: &mut dyn ReadDisk, dir: &Entry, name: &str) -> Result<Option<Entry>> {
        let found = self.index(disk, dir.id)?;
        let hit = found.iter().find(|(_, n)| n == name).or_else(|| found.iter().find(|(_, n)| n.to_lowercase() == name.to_lowercase()));
        match hit {
            Some((n, name)) => Ok(Some(self.entry(disk, *n, name.clone())?)),
            None => Ok(None),
        }
    }

    /// The unnamed `$DATA` of record `n`: its resident bytes, or its runs and sizes.
    fn data(&self, disk: &mut dyn ReadDisk, n: u64) -> Result<Data> {
        let rec = self.record(disk, n)?;
        let list = attrs(&rec);
        if list.iter().any(|a| a.kind == AT_ATTRIBUTE_LIST) && !list.iter().any(|a| a.kind == AT_DATA && !a.named) {
            return Err(VolumeError::Unsupported { number: 0, fs: format!("ntfs file {n} whose data is in an attribute list") }.into());
        }
        let Some(a) = list.iter().find(|a| a.kind == AT_DATA && !a.named) else {
            return Err(damaged(format!("MFT record {n}"), "no unnamed $DATA attribute"));
        };
        if a.flags & 0x4001 != 0 {
            return Err(VolumeError::Unsupported { number: 0, fs: format!("ntfs compressed or encrypted data (record {n})") }.into());
        }
        if let Some(v) = a.resident {
            return Ok(Data::Resident(v.to_vec()));
        }
        let rs = runs(a.raw, self.clusters, &|| format!("MFT record {n} $DATA"))?;
        if le64(a.raw, 0x10) != 0 {
            return Err(VolumeError::Unsupported { number: 0, fs: format!("ntfs file {n} whose data continues in other records") }.into());
        }
        Ok(Data::Runs { runs: rs, initialized: le64(a.raw, 0x38) })
    }

    pub fn read(&mut self, disk: &mut dyn ReadDisk, file: &Entry, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self.data(disk, file.id)? {
            Data::Resident(v) => {
                let end = (offset + buf.len() as u64).min(v.len() as u64);
                let n = end.saturating_sub(offset) as usize;
                buf[..n].copy_from_slice(&v[offset as usize..offset as usize + n]);
                buf[n..].fill(0);
            }
            Data::Runs { runs, initialized } => {
                let what = || format!("data of MFT record {}", file.id);
                let stored = initialized.saturating_sub(offset).min(buf.len() as u64) as usize;
                self.read_runs(disk, &runs, offset, &mut buf[..stored], &what)?;
                buf[stored..].fill(0);
            }
        }
        Ok(())
    }

    pub fn extents(&mut self, disk: &mut dyn ReadDisk, file: &Entry, from: u64, max: usize) -> Result<Vec<FileExtent>> {
        let Data::Runs { runs, .. } = self.data(disk, file.id)? else { return Ok(vec![]) };
        let mut out = vec![];
        for r in runs {
            let (a, b) = (r.vcn.saturating_mul(self.cs).max(from), r.vcn.saturating_add(r.len).saturating_mul(self.cs).min(file.size));
            if a >= b {
                continue;
            }
            if out.len() == max {
                break;
            }
            let disk_offset = r.lcn.map(|l| self.span.start + l * self.cs + (a - r.vcn * self.cs));
            out.push(FileExtent { offset: a, disk_offset, len: b - a });
        }
        Ok(out)
    }
}

enum Data {
    Resident(Vec<u8>),
    Runs { runs: Vec<Run>, initialized: u64 },
}

/// A directory whose index lives behind an attribute list (not read).
fn list_attr_only(fs: &Ntfs, disk: &mut dyn ReadDisk, n: u64) -> Result<bool> {
    let rec = fs.record(disk, n)?;
    let list = attrs(&rec);
    Ok(list.iter().any(|a| a.kind == AT_ATTRIBUTE_LIST) && !list.iter().any(|a| a.kind == AT_INDEX_ROOT))
}

/// The entries of an index node (its header first): file reference and `$FILE_NAME` key.
fn entries(node: &[u8], out: &mut Vec<(u64, String)>, what: &dyn Fn() -> String) -> Result<()> {
    if node.len() < 16 {
        return Err(damaged(what(), "index header too short"));
    }
    let (first, total) = (le32(node, 0) as usize, le32(node, 4) as usize);
    let end = total.min(node.len());
    let mut at = first;
    while at + 16 <= end {
        let len = le16(node, at + 8) as usize;
        let key = le16(node, at + 10) as usize;
        let flags = le32(node, at + 12);
        if len < 16 || at + len > end {
            return Err(damaged(what(), format!("index entry of {len} bytes at {at}")));
        }
        if flags & 2 != 0 {
            break;
        }
        if key >= 0x42 && at + 16 + key <= end {
            let k = &node[at + 16..at + 16 + key];
            let chars = k[0x40] as usize;
            let space = k[0x41];
            if space != 2 && 0x42 + 2 * chars <= k.len() {
                out.push((le64(node, at) & 0xffff_ffff_ffff, utf16le(&k[0x42..0x42 + 2 * chars])));
                if out.len() > MAX_DIR_ENTRIES {
                    return Err(VolumeError::Limit { what: "directory entries", value: out.len() as u64, limit: MAX_DIR_ENTRIES as u64 }.into());
                }
            }
        }
        at += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_boot_sector_counts_do_not_overflow() {
        // Fuzzer-found: total sectors near 2^64 times 512-byte sectors overflowed.
        let mut b = vec![0u8; 64 << 10];
        b[3..11].copy_from_slice(b"NTFS    ");
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 1;
        b[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        b[0x30..0x38].copy_from_slice(&4u64.to_le_bytes());
        b[0x40] = 0xf6; // 2^10-byte records
        b[0x44] = 0xf4;
        let e = Ntfs::open(&mut b, 0, 64 << 10).unwrap_err();
        assert_eq!(e.to_string(), "damaged ntfs: MFT record 0: no FILE signature");
    }
}
