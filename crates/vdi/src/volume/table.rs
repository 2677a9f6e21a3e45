//! The partition table: which scheme (MBR, GPT, hybrid, none), the partitions, and what is
//! inconsistent about it (findings).

use uuid::Uuid;

use crate::error::Result;
use crate::volume::io::ReadDisk;
use crate::volume::{detect, gpt, mbr, FsInfo, VolumeError};

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
            _ => {}
        }
        if table.scheme == Scheme::None {
            if let Some(fs) = whole {
                table.partitions.push(Partition {
                    number: 0,
                    start: 0,
                    size,
                    type_id: TypeId::None,
                    type_name: String::new(),
                    name: String::new(),
                    uuid: String::new(),
                    attributes: 0,
                    filesystem: Some(fs),
                });
            }
        }
        for p in &mut table.partitions {
            if p.filesystem.is_none() && !is_container(p.type_id) {
                p.filesystem = detect(disk, p.start, p.size)?;
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
