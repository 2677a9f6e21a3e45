//! The DOS/MBR partition table: four primary slots at byte 446 of sector 0, and the chain of
//! extended boot records (EBRs) holding the logical partitions.

use crate::error::Result;
use crate::volume::io::{le32, ReadDisk};
use crate::volume::table::{clip, Partition, PartitionTable, Scheme, TypeId, SECTOR};

/// Most logical partitions followed along an EBR chain (Linux stops at 256 partitions too).
pub const MAX_LOGICAL: usize = 252;

/// One 16-byte slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub status: u8,
    pub kind: u8,
    pub lba: u32,
    pub count: u32,
}

/// Sector 0 as an MBR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mbr {
    pub slots: [Slot; 4],
    pub signature: u32,
}

impl Mbr {
    /// No MBR at all (sector 0 empty).
    pub fn empty() -> Mbr {
        Mbr { slots: [Slot { status: 0, kind: 0, lba: 0, count: 0 }; 4], signature: 0 }
    }

    /// A GPT's protective MBR (a slot of type 0xEE).
    pub fn protective(&self) -> bool {
        self.slots.iter().any(|s| s.kind == 0xee)
    }
}

fn slots(sector: &[u8]) -> [Slot; 4] {
    std::array::from_fn(|i| {
        let e = &sector[446 + 16 * i..446 + 16 * (i + 1)];
        Slot { status: e[0], kind: e[4], lba: le32(e, 8), count: le32(e, 12) }
    })
}

/// Sector 0 as an MBR, if it ends in 55 AA and its status bytes are 0x00 or 0x80.
pub(crate) fn parse(s0: &[u8]) -> Option<Mbr> {
    if s0.len() < 512 || s0[510] != 0x55 || s0[511] != 0xaa {
        return None;
    }
    let slots = slots(s0);
    if slots.iter().any(|s| s.status != 0 && s.status != 0x80) {
        return None;
    }
    Some(Mbr { slots, signature: le32(s0, 440) })
}

fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0f | 0x85)
}

fn partition(number: u32, start: u64, size: u64, slot: &Slot) -> Partition {
    Partition {
        number,
        start,
        size,
        type_id: TypeId::Mbr(slot.kind),
        type_name: type_name(slot.kind).to_string(),
        name: String::new(),
        uuid: String::new(),
        attributes: slot.status as u64,
        filesystem: None,
    }
}

/// Fill `table` from an MBR: the primaries, then the logical partitions of the first
/// extended partition.
pub(crate) fn read(disk: &mut dyn ReadDisk, mbr: &Mbr, table: &mut PartitionTable) -> Result<()> {
    table.scheme = Scheme::Mbr;
    table.disk_id = format!("{:08x}", mbr.signature);
    let size = disk.disk_size();
    let mut extended = None;
    for (i, s) in mbr.slots.iter().enumerate() {
        if s.kind == 0 || s.count == 0 {
            continue;
        }
        let number = i as u32 + 1;
        let Some((start, len)) = clip(number, s.lba as u64 * SECTOR, s.count as u64 * SECTOR, size, &mut table.findings)
        else {
            continue;
        };
        if is_extended(s.kind) {
            if extended.is_none() {
                extended = Some((start, len));
            } else {
                table.findings.push(format!("partition {number} is a second extended partition; its logical partitions are not read"));
            }
        }
        table.partitions.push(partition(number, start, len, s));
    }
    if let Some((start, len)) = extended {
        logicals(disk, start, len, table)?;
    }
    Ok(())
}

/// Follow the EBR chain of the extended partition at `ext_start`: each EBR's first slot is
/// a logical partition (relative to the EBR), its second the next EBR (relative to the
/// extended partition). A chain that loops, leaves the extended partition or runs past
/// [`MAX_LOGICAL`] stops with a finding.
fn logicals(disk: &mut dyn ReadDisk, ext_start: u64, ext_len: u64, table: &mut PartitionTable) -> Result<()> {
    let size = disk.disk_size();
    let mut ebr = ext_start;
    let mut seen = Vec::new();
    let mut number = 5;
    loop {
        if seen.contains(&ebr) {
            table.findings.push(format!("the chain of logical partitions loops back to the EBR at byte {ebr}"));
            return Ok(());
        }
        if seen.len() >= MAX_LOGICAL {
            table.findings.push(format!("more than {MAX_LOGICAL} logical partitions; the rest are not read"));
            return Ok(());
        }
        seen.push(ebr);
        if ebr + SECTOR > size {
            table.findings.push(format!("the EBR at byte {ebr} lies past the end of the disk"));
            return Ok(());
        }
        let mut sector = [0u8; SECTOR as usize];
        disk.read_disk(ebr, &mut sector)?;
        if sector[510] != 0x55 || sector[511] != 0xaa {
            table.findings.push(format!("the EBR at byte {ebr} lacks the 55 AA signature; the logical partitions stop there"));
            return Ok(());
        }
        let s = slots(&sector);
        if s[0].kind != 0 && s[0].count != 0 {
            let start = ebr + s[0].lba as u64 * SECTOR;
            let len = s[0].count as u64 * SECTOR;
            if start + len > ext_start + ext_len {
                table.findings.push(format!("logical partition {number} reaches past the end of its extended partition"));
            }
            if let Some((start, len)) = clip(number, start, len, size, &mut table.findings) {
                table.partitions.push(partition(number, start, len, &s[0]));
            }
            number += 1;
        }
        if !is_extended(s[1].kind) || s[1].lba == 0 {
            return Ok(());
        }
        ebr = ext_start + s[1].lba as u64 * SECTOR;
        if ebr >= ext_start + ext_len {
            table.findings.push(format!("the next EBR (byte {ebr}) lies outside the extended partition"));
            return Ok(());
        }
    }
}

/// The usual name of an MBR type byte (as `sfdisk` prints them), "" when unknown.
pub fn type_name(kind: u8) -> &'static str {
    match kind {
        0x01 => "FAT12",
        0x04 => "FAT16 <32M",
        0x05 => "Extended",
        0x06 => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x0e => "W95 FAT16 (LBA)",
        0x0f => "W95 Ext'd (LBA)",
        0x11 => "Hidden FAT12",
        0x14 => "Hidden FAT16 <32M",
        0x16 => "Hidden FAT16",
        0x17 => "Hidden HPFS/NTFS",
        0x1b => "Hidden W95 FAT32",
        0x1c => "Hidden W95 FAT32 (LBA)",
        0x1e => "Hidden W95 FAT16 (LBA)",
        0x27 => "Hidden NTFS WinRE",
        0x82 => "Linux swap / Solaris",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xa6 => "OpenBSD",
        0xa8 => "Darwin UFS",
        0xa9 => "NetBSD",
        0xab => "Darwin boot",
        0xaf => "HFS / HFS+",
        0xee => "GPT",
        0xef => "EFI (FAT-12/16/32)",
        0xfd => "Linux raid autodetect",
        _ => "",
    }
}
