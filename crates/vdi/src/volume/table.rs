//! The partition table: which scheme (MBR, GPT, hybrid, none), the partitions, and what is
//! inconsistent about it (findings).

use uuid::Uuid;

use crate::error::Result;
use crate::volume::io::ReadDisk;
use crate::volume::{detect, gpt, mbr, ntfs, FsInfo, FsKind, VolumeError};

/// Bytes per sector the tables are read with (VDI disks have 512-byte sectors).
pub const SECTOR: u64 = 512;

/// How the disk is partitioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// A DOS/MBR table (with its extended partition's logical partitions).
    Mbr,
    /// A GUID partition table behind a protective MBR.
    Gpt,
    /// A GPT whose MBR also lists partitions (a hybrid MBR); the GPT is what is read.
    HybridMbr,
    /// No table: the disk is one filesystem, or empty, or unrecognised.
    None,
}

impl Scheme {
    /// "mbr", "gpt", "hybrid" or "none".
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Mbr => "mbr",
            Scheme::Gpt => "gpt",
            Scheme::HybridMbr => "hybrid",
            Scheme::None => "none",
        }
    }
}

/// A partition's type as its table stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeId {
    /// An MBR type byte.
    Mbr(u8),
    /// A GPT type GUID.
    Gpt(Uuid),
    /// No table (the whole disk).
    None,
}

impl std::fmt::Display for TypeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TypeId::Mbr(b) => write!(f, "0x{b:02x}"),
            TypeId::Gpt(g) => write!(f, "{}", g.hyphenated().to_string().to_uppercase()),
            TypeId::None => Ok(()),
        }
    }
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Linux's number: MBR primaries 1–4 by slot, logicals from 5 in chain order; GPT entry
    /// index + 1; 0 for a filesystem on the whole disk.
    pub number: u32,
    /// Byte offset on the virtual disk.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// The type as stored.
    pub type_id: TypeId,
    /// The type's usual name ("Linux filesystem", "W95 FAT32 (LBA)"), or "" when unknown.
    pub type_name: String,
    /// The GPT partition name ("" for MBR).
    pub name: String,
    /// The GPT unique partition GUID ("" for MBR).
    pub uuid: String,
    /// GPT attribute bits; for MBR, the status byte (0x80: bootable).
    pub attributes: u64,
    /// What its first bytes say it holds (None for an extended partition or no signature).
    pub filesystem: Option<FsInfo>,
}

impl Partition {
    /// A filesystem spanning the whole disk (`size` bytes): partition 0, no table.
    pub fn whole(size: u64, fs: FsInfo) -> Partition {
        Partition {
            number: 0,
            start: 0,
            size,
            type_id: TypeId::None,
            type_name: String::new(),
            name: String::new(),
            uuid: String::new(),
            attributes: 0,
            filesystem: Some(fs),
        }
    }
}

/// The partition table of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    /// The scheme.
    pub scheme: Scheme,
    /// The GPT disk GUID, or the MBR disk signature as 8 hex digits ("" when none).
    pub disk_id: String,
    /// The partitions, by number.
    pub partitions: Vec<Partition>,
    /// What is inconsistent, one sentence each (a backup GPT header that differs, a
    /// partition past the end of the disk, a loop in the logical partitions...).
    pub findings: Vec<String>,
}

impl PartitionTable {
    /// Read the table and detect the filesystem on each partition. A damaged table is
    /// reported in [`findings`](Self::findings) as far as the rest can still be read; only
    /// a failing read of the disk is an error.
    pub fn read(disk: &mut dyn ReadDisk) -> Result<PartitionTable> {
        let size = disk.disk_size();
        let mut table = PartitionTable { scheme: Scheme::None, disk_id: String::new(), partitions: vec![], findings: vec![] };
        if size < SECTOR {
            return Ok(table);
        }
        let mut s0 = [0u8; SECTOR as usize];
        disk.read_disk(0, &mut s0)?;
        let whole = detect(disk, 0, size)?;
        let parsed = mbr::parse(&s0);
        match parsed {
            Some(m) if m.protective() => gpt::read(disk, &m, &mut table)?,
            Some(m) if whole.is_none() => mbr::read(disk, &m, &mut table)?,
            _ if whole.is_none() && size >= 2 * SECTOR => {
                // A GPT without its protective MBR (some tools leave sector 0 alone).
                let mut s1 = [0u8; 8];
                disk.read_disk(SECTOR, &mut s1)?;
                if &s1 == b"EFI PART" {
                    table.findings.push("a GPT without a protective MBR in sector 0".into());
                    gpt::read(disk, &mbr::Mbr::empty(), &mut table)?;
                }
            }
            _ => {}
        }
        if table.scheme == Scheme::None {
            if let Some(fs) = whole {
                table.partitions.push(Partition::whole(size, fs));
            }
        }
        for p in &mut table.partitions {
            if p.filesystem.is_none() && !is_container(p.type_id) {
                p.filesystem = detect(disk, p.start, p.size)?;
            }
            if let Some(fs) = p.filesystem.as_mut().filter(|f| f.kind == FsKind::Ntfs) {
                // NTFS keeps its label in a file: read it when the filesystem opens; a
                // damaged one leaves the label empty (opening it will say what is wrong).
                match ntfs::Ntfs::open(disk, p.start, p.size).and_then(|n| n.label(disk)) {
                    Ok(label) => fs.label = label,
                    Err(crate::VdiError::Volume(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(table)
    }

    /// The partition numbered `number`.
    pub fn partition(&self, number: u32) -> Result<&Partition> {
        self.partitions.iter().find(|p| p.number == number).ok_or_else(|| {
            VolumeError::NoSuchPartition { number, available: numbers(self.partitions.iter()) }.into()
        })
    }

    /// The partition `number` names, or, with no number, the one partition holding a
    /// filesystem (an error when there are none or several).
    pub fn select(&self, number: Option<u32>) -> Result<&Partition> {
        if let Some(n) = number {
            return self.partition(n);
        }
        let with_fs: Vec<&Partition> = self.partitions.iter().filter(|p| p.filesystem.is_some()).collect();
        match with_fs.as_slice() {
            [one] => Ok(one),
            [] => Err(VolumeError::NoSuchPartition { number: 0, available: "none with a filesystem".into() }.into()),
            many => Err(VolumeError::PartitionNeeded { available: numbers(many.iter().copied()) }.into()),
        }
    }
}

fn numbers<'a>(parts: impl Iterator<Item = &'a Partition>) -> String {
    let list: Vec<String> = parts.map(|p| p.number.to_string()).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// An extended partition: a container of logical partitions, not a filesystem.
fn is_container(t: TypeId) -> bool {
    matches!(t, TypeId::Mbr(0x05 | 0x0f | 0x85))
}

/// A partition's bounds checked against the disk: clipped to it, with a finding when it
/// reaches past the end.
pub(crate) fn clip(number: u32, start: u64, size: u64, disk: u64, findings: &mut Vec<String>) -> Option<(u64, u64)> {
    if start >= disk {
        findings.push(format!("partition {number} starts at byte {start}, past the end of the {disk}-byte disk"));
        return None;
    }
    if size > disk - start {
        findings.push(format!(
            "partition {number} ({size} bytes at {start}) reaches past the end of the {disk}-byte disk; only its first {} bytes are read",
            disk - start
        ));
        return Some((start, disk - start));
    }
    Some((start, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc32::crc32;

    const S: usize = SECTOR as usize;

    /// Write MBR slot `i` of the sector at `sector`: status, type, first LBA, count.
    fn slot(disk: &mut [u8], sector: usize, i: usize, status: u8, kind: u8, lba: u32, count: u32) {
        let e = sector * S + 446 + 16 * i;
        disk[e] = status;
        disk[e + 4] = kind;
        disk[e + 8..e + 12].copy_from_slice(&lba.to_le_bytes());
        disk[e + 12..e + 16].copy_from_slice(&count.to_le_bytes());
        disk[sector * S + 510] = 0x55;
        disk[sector * S + 511] = 0xaa;
    }

    #[test]
    fn logical_partitions_are_numbered_from_5_and_a_looping_chain_stops() {
        let mut disk = vec![0u8; 1 << 20];
        slot(&mut disk, 0, 0, 0x80, 0x83, 100, 50);
        slot(&mut disk, 0, 1, 0, 0x05, 200, 1000);
        // EBRs at 200 (A), 201 (B), 202 (C); C links back to B.
        for (ebr, next) in [(200, 1), (201, 2), (202, 1)] {
            slot(&mut disk, ebr, 0, 0, 0x83, 10, 5);
            slot(&mut disk, ebr, 1, 0, 0x05, next, 1);
        }
        let t = PartitionTable::read(&mut disk).unwrap();
        assert_eq!(t.scheme, Scheme::Mbr);
        let got: Vec<(u32, u64)> = t.partitions.iter().map(|p| (p.number, p.start / SECTOR)).collect();
        assert_eq!(got, [(1, 100), (2, 200), (5, 210), (6, 211), (7, 212)]);
        assert_eq!(t.partitions[0].attributes, 0x80);
        assert_eq!(t.findings, ["the chain of logical partitions loops back to the EBR at byte 102912"]);
        assert_eq!(t.select(Some(9)).unwrap_err().to_string(), "no partition 9 on this disk (partitions: 1, 2, 5, 6, 7)");
    }

    #[test]
    fn a_partition_past_the_end_is_clipped_with_a_finding() {
        let mut disk = vec![0u8; 64 * S];
        slot(&mut disk, 0, 0, 0, 0x83, 10, 1000);
        slot(&mut disk, 0, 1, 0, 0x83, 5000, 10);
        let t = PartitionTable::read(&mut disk).unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.partitions[0].size, 54 * SECTOR);
        assert_eq!(t.findings.len(), 2, "{:?}", t.findings);
    }

    #[test]
    fn an_ebr_cut_off_by_the_end_of_the_disk_is_a_finding() {
        // Fuzzer-found: an extended partition starting in the disk's last, partial sector.
        let mut disk = vec![0u8; 30 * S + 26];
        slot(&mut disk, 0, 0, 0, 0x05, 30, 100);
        let t = PartitionTable::read(&mut disk).unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert!(t.findings.iter().any(|f| f == "the EBR at byte 15360 lies past the end of the disk"), "{:?}", t.findings);
    }

    /// A GPT header at `lba` with `count` entries of 128 bytes at `entries`, its CRCs right.
    fn gpt_header(disk: &mut [u8], lba: u64, alt: u64, entries: u64, count: u32) {
        let array_crc = crc32(&disk[entries as usize * S..][..count.min(4) as usize * 128]);
        let h = &mut disk[lba as usize * S..][..S];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x10000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[72..80].copy_from_slice(&entries.to_le_bytes());
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        h[16..20].fill(0);
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn gpt_primary_and_backup_are_compared_and_absurd_counts_refused() {
        let mut disk = vec![0u8; 128 * S];
        slot(&mut disk, 0, 0, 0, 0xee, 1, 127);
        let e = 2 * S;
        let linux = Uuid::parse_str("0FC63DAF-8483-4772-8E79-3D69D8477DE4").unwrap();
        disk[e..e + 16].copy_from_slice(&linux.to_bytes_le());
        disk[e + 32..e + 40].copy_from_slice(&34u64.to_le_bytes());
        disk[e + 40..e + 48].copy_from_slice(&99u64.to_le_bytes());
        for (i, c) in "données".encode_utf16().enumerate() {
            disk[e + 56 + 2 * i..e + 58 + 2 * i].copy_from_slice(&c.to_le_bytes());
        }
        let copy: Vec<u8> = disk[e..e + 4 * 128].to_vec();
        disk[100 * S..100 * S + 512].copy_from_slice(&copy);
        gpt_header(&mut disk, 1, 127, 2, 4);
        gpt_header(&mut disk, 127, 1, 100, 4);
        let t = PartitionTable::read(&mut disk).unwrap();
        assert_eq!((t.scheme, t.findings.len()), (Scheme::Gpt, 0), "{:?}", t.findings);
        let p = &t.partitions[0];
        assert_eq!((p.number, p.start, p.size, p.name.as_str(), p.type_name.as_str()), (1, 34 * SECTOR, 66 * SECTOR, "données", "Linux filesystem"));

        // The backup's array differs: a finding; the primary is what is read.
        disk[100 * S + 56] = b'X';
        gpt_header(&mut disk, 127, 1, 100, 4);
        let t = PartitionTable::read(&mut disk).unwrap();
        assert_eq!(t.findings, ["the backup GPT entry array differs from the primary"]);
        assert_eq!(t.partitions[0].name, "données");

        // A primary claiming 2^31 entries is refused without allocating them; the backup is read.
        gpt_header(&mut disk, 1, 127, 2, 1 << 31);
        let t = PartitionTable::read(&mut disk).unwrap();
        assert!(t.findings[0].starts_with("the primary GPT is damaged (2147483648 entries at LBA 1"), "{:?}", t.findings);
        assert_eq!(t.partitions[0].name, "Xonnées");
    }
}
