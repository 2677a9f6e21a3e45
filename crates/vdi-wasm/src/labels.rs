//! Field labels for the hex view: the byte ranges of the known structures at the start of
//! a disk — the MBR (boot signature, the four partition entries), the GPT header at LBA 1
//! (and its backup at the disk's end), and the GPT partition entries — each with its name
//! and its value as text. The page shows them over the bytes; it never parses bytes itself.
//!
//! Only what a window of the disk overlaps is read and labelled; sizes from the disk (entry
//! count and size, header size) are bounded before they are used. Sectors are 512 bytes,
//! or 4096 when the GPT header is found there instead.

use serde_json::{json, Value};
use vdi::volume::{PartitionTable, Scheme};
use vdi::{Disk, Result};

use vdi::crc32::crc32;

/// The largest window labelled in one call.
pub const MAX_LABEL_WINDOW: u64 = 1 << 20;
/// Most GPT entries considered (the specification's minimum is 128; tools make 128).
const MAX_GPT_ENTRIES: u64 = 1 << 14;
/// Bytes of entries whose CRC is verified (larger arrays are labelled, not checked).
const MAX_CRC_BYTES: u64 = 1 << 20;

/// One labelled field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// First byte on the virtual disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The structure it belongs to ("MBR", "MBR partition 1", "GPT header", "GPT entry 3").
    pub group: String,
    /// The field's name.
    pub name: String,
    /// Its value, as text.
    pub value: String,
    /// A size in bytes the value stands for (the page shows it in units), if any.
    pub bytes: Option<u64>,
}

impl Label {
    /// `{start, len, group, name, value}`.
    pub fn to_json(&self) -> Value {
        json!({ "start": self.start, "len": self.len, "group": self.group, "name": self.name, "value": self.value, "bytes": self.bytes })
    }
}

/// The labels of every known field overlapping `offset..offset + len` (at most
/// [`MAX_LABEL_WINDOW`] bytes are considered), in disk order. The partition types are named
/// as the engine's partition `table` of the disk names them, when it is given.
pub fn structure_labels(disk: &mut dyn Disk, table: Option<&PartitionTable>, offset: u64, len: u64) -> Result<Vec<Label>> {
    let size = disk.virtual_size();
    let end = offset.saturating_add(len.min(MAX_LABEL_WINDOW)).min(size);
    let mut out = Labeller { offset, end, labels: Vec::new(), table };
    if size < 512 || offset >= end {
        return Ok(out.labels);
    }
    let mut s0 = [0u8; 512];
    disk.read_at(0, &mut s0)?;
    if s0[510..512] == [0x55, 0xAA] {
        out.mbr(&s0);
    }
    for sector in [512u64, 4096] {
        if size < 3 * sector {
            break;
        }
        let mut h = vec![0u8; sector as usize];
        disk.read_at(sector, &mut h)?;
        if &h[..8] == b"EFI PART" {
            let primary = out.gpt(disk, &h, sector, 1, "GPT header", "GPT entry")?;
            let last = size / sector - 1;
            if let Some(alt) = primary.filter(|&a| a > 1 && a <= last) {
                disk.read_at(alt * sector, &mut h)?;
                if &h[..8] == b"EFI PART" {
                    out.gpt(disk, &h, sector, alt, "GPT backup header", "GPT backup entry")?;
                }
            }
            break;
        }
    }
    out.labels.sort_by_key(|l| l.start);
    Ok(out.labels)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A GUID as stored on disk (the first three fields little-endian), upper case.
pub fn guid(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        le32(b, 0),
        le16(b, 4),
        le16(b, 6),
        b[8],
        b[9],
        b[10..16].iter().map(|x| format!("{x:02X}")).collect::<String>()
    )
}

fn chs(b: &[u8]) -> String {
    let (h, s, c) = (b[0], b[1] & 0x3f, (u16::from(b[1] & 0xc0) << 2) | u16::from(b[2]));
    format!("C/H/S {c}/{h}/{s}")
}

struct Labeller<'t> {
    offset: u64,
    end: u64,
    labels: Vec<Label>,
    table: Option<&'t PartitionTable>,
}

impl Labeller<'_> {
    /// The usual name of partition `number`'s type, from the engine's table ("" when unknown).
    fn type_name(&self, number: u64) -> &str {
        self.table
            .and_then(|t| t.partitions.iter().find(|p| u64::from(p.number) == number))
            .map_or("", |p| p.type_name.as_str())
    }

    /// `value`, with the type's name after it when it has one.
    fn typed(&self, value: String, number: u64) -> String {
        match self.type_name(number) {
            "" => value,
            n => format!("{value} ({n})"),
        }
    }

    fn add_bytes(&mut self, start: u64, len: u64, group: &str, name: &str, value: String, bytes: u64) {
        self.add(start, len, group, name, value);
        if let Some(l) = self.labels.last_mut().filter(|l| l.start == start && l.name == name) {
            l.bytes = Some(bytes);
        }
    }

    fn overlaps(&self, start: u64, len: u64) -> bool {
        start < self.end && start + len > self.offset
    }

    fn add(&mut self, start: u64, len: u64, group: &str, name: &str, value: String) {
        if self.overlaps(start, len) {
            self.labels.push(Label { start, len, group: group.into(), name: name.into(), value, bytes: None });
        }
    }

    fn mbr(&mut self, s: &[u8]) {
        if !self.overlaps(0, 512) {
            return;
        }
        self.add(0, 440, "MBR", "boot code", if s[..440].iter().all(|&b| b == 0) { "none (zeros)".into() } else { "440 bytes".into() });
        self.add(440, 4, "MBR", "disk signature", format!("0x{:08x}", le32(s, 440)));
        for i in 0..4 {
            let at = 446 + 16 * i;
            let e = &s[at..at + 16];
            let group = format!("MBR partition {}", i + 1);
            let a = at as u64;
            let t = e[4];
            if e.iter().all(|&b| b == 0) {
                self.add(a, 16, &group, "entry", "unused".into());
                continue;
            }
            let status = match e[0] {
                0x80 => "0x80 (active, bootable)".into(),
                0x00 => "0x00 (inactive)".into(),
                x => format!("0x{x:02x} (invalid: expected 0x00 or 0x80)"),
            };
            self.add(a, 1, &group, "status", status);
            self.add(a + 1, 3, &group, "first sector (CHS)", chs(&e[1..4]));
            let gpt = self.table.is_some_and(|x| matches!(x.scheme, Scheme::Gpt | Scheme::HybridMbr));
            let ty = if t == 0xee && gpt { format!("0x{t:02x} (GPT protective)") } else { self.typed(format!("0x{t:02x}"), i as u64 + 1) };
            self.add(a + 4, 1, &group, "type", ty);
            self.add(a + 5, 3, &group, "last sector (CHS)", chs(&e[5..8]));
            let first = u64::from(le32(e, 8));
            let count = u64::from(le32(e, 12));
            self.add(a + 8, 4, &group, "first LBA", format!("{first} (byte {})", first * 512));
            self.add_bytes(a + 12, 4, &group, "sectors", count.to_string(), count * 512);
        }
        self.add(510, 2, "MBR", "boot signature", "55 AA (valid)".into());
    }

    /// Label the GPT header held in `h` (read at LBA `lba`) and the entries it points to.
    /// Returns its alternate (backup) LBA.
    fn gpt(&mut self, disk: &mut dyn Disk, h: &[u8], sector: u64, lba: u64, hg: &str, eg: &str) -> Result<Option<u64>> {
        let base = lba * sector;
        let hsize = u64::from(le32(h, 12));
        let hlen = hsize.clamp(92, sector);
        let entries_lba = le64(h, 72);
        let count = u64::from(le32(h, 80));
        let esize = u64::from(le32(h, 84));
        // Sizes from the disk bounded before anything is read: the whole entry array is read
        // (for its CRC and to name runs of unused entries) when it is small, as it always is.
        let esize_ok = (128..=4096).contains(&esize) && esize % 8 == 0;
        let estart = entries_lba.checked_mul(sector);
        let array = match estart {
            Some(start) if esize_ok && count * esize <= MAX_CRC_BYTES && start + count * esize <= disk.virtual_size() => {
                let mut all = vec![0u8; (count * esize) as usize];
                disk.read_at(start, &mut all)?;
                Some(all)
            }
            _ => None,
        };
        if self.overlaps(base, hlen) {
            let rev = le32(h, 8);
            self.add(base, 8, hg, "signature", "\"EFI PART\"".into());
            self.add(base + 8, 4, hg, "revision", format!("{}.{} (0x{rev:08x})", rev >> 16, rev & 0xffff));
            let ok_size = (92..=sector).contains(&hsize);
            self.add(base + 12, 4, hg, "header size", format!("{hsize} bytes{}", if ok_size { "" } else { " (invalid: expected 92 up to a sector)" }));
            let stored = le32(h, 16);
            let mut copy = h[..hlen as usize].to_vec();
            copy[16..20].fill(0);
            let computed = crc32(&copy);
            let verdict = if computed == stored { "matches".into() } else { format!("does not match: computed 0x{computed:08x}") };
            self.add(base + 16, 4, hg, "header CRC32", format!("0x{stored:08x} ({verdict})"));
            self.add(base + 20, 4, hg, "reserved", format!("0x{:08x}", le32(h, 20)));
            self.add(base + 24, 8, hg, "this header's LBA", le64(h, 24).to_string());
            self.add(base + 32, 8, hg, "other header's LBA", le64(h, 32).to_string());
            self.add(base + 40, 8, hg, "first usable LBA", le64(h, 40).to_string());
            self.add(base + 48, 8, hg, "last usable LBA", le64(h, 48).to_string());
            self.add(base + 56, 16, hg, "disk GUID", guid(&h[56..72]));
            self.add(base + 72, 8, hg, "partition entries LBA", format!("{entries_lba} (byte {})", entries_lba.saturating_mul(sector)));
            self.add(base + 80, 4, hg, "number of entries", count.to_string());
            self.add(base + 84, 4, hg, "size of an entry", format!("{esize} bytes"));
            let ecrc = le32(h, 88);
            let verdict = match &array {
                None => "not verified".to_string(),
                Some(all) => match crc32(all) {
                    c if c == ecrc => "matches".into(),
                    c => format!("does not match: computed 0x{c:08x}"),
                },
            };
            self.add(base + 88, 4, hg, "entries CRC32", format!("0x{ecrc:08x} ({verdict})"));
        }
        if let (Some(start), true) = (estart, esize_ok) {
            self.gpt_entries(disk, start, count.min(MAX_GPT_ENTRIES), esize, sector, eg, array.as_deref())?;
        }
        Ok(Some(le64(h, 32)))
    }

    /// Label the entries of a GPT at `start`: from `array` (all of them) when it was read,
    /// else those the window overlaps, read one by one. Runs of unused entries are one label.
    #[allow(clippy::too_many_arguments)]
    fn gpt_entries(&mut self, disk: &mut dyn Disk, start: u64, count: u64, esize: u64, sector: u64, eg: &str, array: Option<&[u8]>) -> Result<()> {
        let size = disk.virtual_size();
        let (first, last) = match array {
            Some(_) => (0, count),
            None if self.end <= start => return Ok(()),
            None => (self.offset.saturating_sub(start) / esize, (self.end - start).div_ceil(esize).min(count)),
        };
        let mut unused: Option<u64> = None; // first of a run of unused entries
        let mut e = [0u8; 128];
        for k in first..=last {
            let at = start + k * esize;
            let used = k < last && {
                match array {
                    Some(all) => e.copy_from_slice(&all[(k * esize) as usize..][..128]),
                    None if at + 128 > size => break,
                    None => disk.read_at(at, &mut e)?,
                }
                e[..16].iter().any(|&b| b != 0)
            };
            if used || k == last {
                if let Some(u) = unused.take() {
                    let (group, name, value) = if u + 1 == k {
                        (format!("{eg} {k}"), "entry", "unused".to_string())
                    } else {
                        (format!("{} {}\u{2013}{k}", eg.replace("entry", "entries"), u + 1), "entries", format!("unused ({} entries)", k - u))
                    };
                    self.add(start + u * esize, (k - u) * esize, &group, name, value);
                }
            } else if unused.is_none() {
                unused = Some(k);
            }
            if used {
                self.gpt_entry(&e, at, &format!("{eg} {}", k + 1), k + 1, sector);
            }
        }
        Ok(())
    }

    fn gpt_entry(&mut self, e: &[u8], at: u64, group: &str, number: u64, sector: u64) {
        let tv = self.typed(guid(&e[..16]), number);
        self.add(at, 16, group, "partition type GUID", tv);
        self.add(at + 16, 16, group, "unique partition GUID", guid(&e[16..32]));
        let (f, l) = (le64(e, 32), le64(e, 40));
        self.add(at + 32, 8, group, "first LBA", format!("{f} (byte {})", f.saturating_mul(sector)));
        if l >= f {
            self.add_bytes(at + 40, 8, group, "last LBA", l.to_string(), (l - f + 1).saturating_mul(sector));
        } else {
            self.add(at + 40, 8, group, "last LBA", format!("{l} (before the first LBA!)"));
        }
        self.add(at + 48, 8, group, "attributes", format!("0x{:016x}", le64(e, 48)));
        let units: Vec<u16> = (0..36).map(|i| le16(e, 56 + 2 * i)).take_while(|&u| u != 0).collect();
        self.add(at + 56, 72, group, "name", format!("\"{}\"", String::from_utf16_lossy(&units)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdi::{create, CreateOptions, MemStorage, NoMonitor, Uuid, VdiImage};

    const EFI: [u8; 16] = [0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b];

    /// A 4 MiB disk with a protective MBR and a GPT of 128 entries, one an EFI system
    /// partition named "boot" at LBA 2048..4095 (the way sgdisk writes it).
    fn gpt_disk() -> VdiImage<MemStorage> {
        let size = 4u64 << 20;
        let mut img = create(MemStorage::new(), &CreateOptions::new(size, Uuid::from_u128(1), Uuid::from_u128(2)), &mut NoMonitor).unwrap();
        let mut mbr = [0u8; 512];
        mbr[446 + 4] = 0xee;
        mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&(((size / 512) - 1) as u32).to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        img.write_at(0, &mbr).unwrap();
        let mut entries = vec![0u8; 128 * 128];
        entries[..16].copy_from_slice(&EFI);
        entries[16..32].copy_from_slice(&[7; 16]);
        entries[32..40].copy_from_slice(&2048u64.to_le_bytes());
        entries[40..48].copy_from_slice(&4095u64.to_le_bytes());
        for (i, c) in "boot".encode_utf16().enumerate() {
            entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        img.write_at(1024, &entries).unwrap();
        let mut h = [0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(size / 512 - 1).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
        let c = crc32(&h);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        img.write_at(512, &h).unwrap();
        img
    }

    fn find<'a>(l: &'a [Label], group: &str, name: &str) -> &'a Label {
        l.iter().find(|x| x.group == group && x.name == name).unwrap_or_else(|| panic!("no {group} / {name} in {l:#?}"))
    }

    #[test]
    fn mbr_and_gpt_fields() {
        let mut img = gpt_disk();
        let table = PartitionTable::read(&mut vdi::volume::DiskReader(&mut img)).unwrap();
        let l = structure_labels(&mut img, Some(&table), 0, 4096).unwrap();
        assert_eq!(find(&l, "MBR", "boot signature").start, 510);
        let t = find(&l, "MBR partition 1", "type");
        assert_eq!((t.start, t.value.as_str()), (450, "0xee (GPT protective)"));
        assert_eq!(find(&l, "MBR partition 2", "entry").value, "unused");
        let sig = find(&l, "GPT header", "signature");
        assert_eq!((sig.start, sig.len), (512, 8));
        assert_eq!(find(&l, "GPT header", "revision").value, "1.0 (0x00010000)");
        assert!(find(&l, "GPT header", "header CRC32").value.ends_with("(matches)"));
        assert!(find(&l, "GPT header", "entries CRC32").value.ends_with("(matches)"));
        assert_eq!(find(&l, "GPT header", "number of entries").value, "128");
        let ty = find(&l, "GPT entry 1", "partition type GUID");
        assert_eq!((ty.start, ty.value.as_str()), (1024, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI system partition)"));
        assert_eq!(find(&l, "GPT entry 1", "name").value, "\"boot\"");
        let last = find(&l, "GPT entry 1", "last LBA");
        assert_eq!((last.value.as_str(), last.bytes), ("4095", Some(1 << 20)));
        assert_eq!(find(&l, "MBR partition 1", "sectors").bytes, Some((4 << 20) - 512));
        assert_eq!(find(&l, "GPT entries 2\u{2013}128", "entries").value, "unused (127 entries)");
        assert!(l.windows(2).all(|w| w[0].start <= w[1].start), "in disk order");
    }

    #[test]
    fn only_the_window_and_damage_is_named() {
        let mut img = gpt_disk();
        let l = structure_labels(&mut img, None, 512, 16).unwrap();
        let names: Vec<&str> = l.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["signature", "revision", "header size"]);
        // A changed byte of the header: its CRC no longer matches.
        img.write_at(512 + 40, &[9]).unwrap();
        let l = structure_labels(&mut img, None, 512, 92).unwrap();
        assert!(find(&l, "GPT header", "header CRC32").value.contains("does not match"));
        // Entry 130 is past the 128 the header declares: nothing there.
        assert!(structure_labels(&mut img, None, 1024 + 130 * 128, 128).unwrap().is_empty());
    }

    #[test]
    fn mbr_types_are_named_by_the_engine_table() {
        let mut img = create(MemStorage::new(), &CreateOptions::new(4 << 20, Uuid::from_u128(1), Uuid::from_u128(2)), &mut NoMonitor).unwrap();
        let mut mbr = [0u8; 512];
        mbr[440..444].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        let e = &mut mbr[446..462];
        e[0] = 0x80;
        e[4] = 0x83;
        e[8..12].copy_from_slice(&2048u32.to_le_bytes());
        e[12..16].copy_from_slice(&4096u32.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        img.write_at(0, &mbr).unwrap();
        let table = PartitionTable::read(&mut vdi::volume::DiskReader(&mut img)).unwrap();
        let l = structure_labels(&mut img, Some(&table), 0, 512).unwrap();
        assert_eq!(find(&l, "MBR partition 1", "type").value, "0x83 (Linux)");
        assert_eq!(find(&l, "MBR partition 1", "status").value, "0x80 (active, bootable)");
        let n = find(&l, "MBR partition 1", "sectors");
        assert_eq!((n.value.as_str(), n.bytes), ("4096", Some(2 << 20)));
        assert_eq!(find(&l, "MBR", "disk signature").value, "0x12345678");
        // Without the table the type is its number alone.
        let l = structure_labels(&mut img, None, 0, 512).unwrap();
        assert_eq!(find(&l, "MBR partition 1", "type").value, "0x83");
    }

    #[test]
    fn a_blank_disk_has_no_labels() {
        let mut img = create(MemStorage::new(), &CreateOptions::new(1 << 20, Uuid::from_u128(1), Uuid::from_u128(2)), &mut NoMonitor).unwrap();
        assert!(structure_labels(&mut img, None, 0, 1 << 20).unwrap().is_empty());
    }
}
