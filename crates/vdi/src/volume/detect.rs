//! Filesystem detection by signature, as `blkid` does it: the kind, label, UUID or serial,
//! size and (where the superblock says) space used, from the first 68 KiB of a partition.

use uuid::Uuid;

use crate::error::Result;
use crate::volume::io::{be32, be64, le16, le32, le64, text, ReadDisk};
use crate::volume::{ext, FsInfo, FsKind};

/// Bytes read from the start of a partition to detect what it holds (btrfs's superblock
/// is at 64 KiB).
pub const PROBE: u64 = 0x11000;

/// What the `size` bytes at `start` hold, if a known signature is there.
pub fn detect(disk: &mut dyn ReadDisk, start: u64, size: u64) -> Result<Option<FsInfo>> {
    let len = size.min(PROBE).min(disk.disk_size().saturating_sub(start));
    let mut b = vec![0u8; PROBE as usize];
    disk.read_disk(start, &mut b[..len as usize])?;
    let found = [ext::probe, fat, exfat, ntfs, hfsplus, apfs, xfs, btrfs, lvm2, luks, swap, iso9660]
        .iter()
        .find_map(|probe| probe(&b));
    Ok(found)
}

fn info(kind: FsKind, label: String, uuid: String, size: u64, free: Option<u64>) -> FsInfo {
    FsInfo { kind, label, uuid, size, used: free.map(|f| size.saturating_sub(f)), free, readable: kind.readable() }
}

fn guid_be(b: &[u8]) -> String {
    Uuid::from_bytes(b[..16].try_into().unwrap()).hyphenated().to_string()
}

/// A FAT boot sector: 55 AA, a power-of-two sector size, a cluster size, reserved sectors,
/// one or two FATs, and the "FAT" type string of its FAT12/16 or FAT32 extended BPB.
fn fat(b: &[u8]) -> Option<FsInfo> {
    let bps = le16(b, 11) as u64;
    let spc = b[13] as u64;
    if b[510] != 0x55 || b[511] != 0xaa || !(512..=4096).contains(&bps) || !bps.is_power_of_two() {
        return None;
    }
    if spc == 0 || !spc.is_power_of_two() || le16(b, 14) == 0 || !(1..=2).contains(&b[16]) {
        return None;
    }
    let (label_at, serial_at) = if &b[82..87] == b"FAT32" {
        (71, 67)
    } else if &b[54..57] == b"FAT" {
        (43, 39)
    } else {
        return None;
    };
    let sectors = match le16(b, 19) {
        0 => le32(b, 32) as u64,
        n => n as u64,
    };
    let label = text(&b[label_at..label_at + 11]);
    let label = if label == "NO NAME" { String::new() } else { label };
    let serial = le32(b, serial_at);
    Some(info(FsKind::Vfat, label, format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff), sectors * bps, None))
}

fn exfat(b: &[u8]) -> Option<FsInfo> {
    if &b[3..11] != b"EXFAT   " {
        return None;
    }
    let serial = le32(b, 100);
    let shift = b[108].min(12);
    Some(info(FsKind::Exfat, String::new(), format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff), le64(b, 72) << shift, None))
}

fn ntfs(b: &[u8]) -> Option<FsInfo> {
    if &b[3..11] != b"NTFS    " {
        return None;
    }
    let bps = le16(b, 11) as u64;
    Some(info(FsKind::Ntfs, String::new(), format!("{:016X}", le64(b, 72)), le64(b, 40).saturating_mul(bps), None))
}

/// HFS+ / HFSX volume header at 1024 (big-endian): blkid's UUID is the 64-bit volume id in
/// the Finder info.
fn hfsplus(b: &[u8]) -> Option<FsInfo> {
    let h = &b[1024..1536];
    if &h[0..2] != b"H+" && &h[0..2] != b"HX" {
        return None;
    }
    let block = be32(h, 40) as u64;
    let total = be32(h, 44) as u64 * block;
    let free = be32(h, 48) as u64 * block;
    let id = be64(h, 80 + 24);
    let uuid = if id == 0 { String::new() } else { format!("{id:016x}") };
    Some(info(FsKind::Hfsplus, String::new(), uuid, total, Some(free)))
}

fn apfs(b: &[u8]) -> Option<FsInfo> {
    if &b[32..36] != b"NXSB" {
        return None;
    }
    let size = (le32(b, 36) as u64).saturating_mul(le64(b, 40));
    Some(info(FsKind::Apfs, String::new(), guid_be(&b[72..88]), size, None))
}

fn xfs(b: &[u8]) -> Option<FsInfo> {
    if &b[0..4] != b"XFSB" {
        return None;
    }
    let block = be32(b, 4) as u64;
    let size = be64(b, 8).saturating_mul(block);
    let free = be64(b, 144).saturating_mul(block);
    Some(info(FsKind::Xfs, text(&b[108..120]), guid_be(&b[32..48]), size, Some(free)))
}

fn btrfs(b: &[u8]) -> Option<FsInfo> {
    let s = &b[0x10000..0x11000];
    if &s[0x40..0x48] != b"_BHRfS_M" {
        return None;
    }
    let total = le64(s, 0x70);
    let used = le64(s, 0x78);
    Some(info(FsKind::Btrfs, text(&s[0x12b..0x22b]), guid_be(&s[0x20..0x30]), total, Some(total.saturating_sub(used))))
}

/// An LVM2 label ("LABELONE" in one of the first four sectors, type "LVM2 001"); the PV
/// UUID is 32 characters shown in blkid's 6-4-4-4-4-4-6 grouping.
fn lvm2(b: &[u8]) -> Option<FsInfo> {
    (0..4).find_map(|s| {
        let l = &b[s * 512..(s + 1) * 512];
        if &l[0..8] != b"LABELONE" || &l[24..32] != b"LVM2 001" {
            return None;
        }
        let at = le32(l, 20) as usize;
        let id = l.get(at..at.saturating_add(32))?;
        let id = String::from_utf8_lossy(id);
        let groups = [6, 4, 4, 4, 4, 4, 6];
        let mut parts = vec![];
        let mut i = 0;
        for g in groups {
            parts.push(id.get(i..i + g).unwrap_or(""));
            i += g;
        }
        let size = l.get(at + 32..at + 40).map(|v| le64(v, 0)).unwrap_or(0);
        Some(info(FsKind::Lvm2Member, String::new(), parts.join("-"), size, None))
    })
}

fn luks(b: &[u8]) -> Option<FsInfo> {
    if &b[0..6] != b"LUKS\xba\xbe" {
        return None;
    }
    let version = u16::from_be_bytes([b[6], b[7]]);
    let label = if version == 2 { text(&b[24..72]) } else { String::new() };
    Some(info(FsKind::CryptoLuks, label, text(&b[168..208]), 0, None))
}

/// Linux swap: "SWAPSPACE2" ending the first page (4 KiB pages; 8/16/64 KiB also tried).
fn swap(b: &[u8]) -> Option<FsInfo> {
    let page = [4096usize, 8192, 16384, 65536].into_iter().find(|&p| {
        let m = &b[p - 10..p];
        m == b"SWAPSPACE2" || m == b"SWAP-SPACE"
    })?;
    let last_page = le32(b, 1024 + 4) as u64;
    let uuid = Uuid::from_bytes(b[1024 + 12..1024 + 28].try_into().unwrap());
    let uuid = if uuid.is_nil() { String::new() } else { uuid.hyphenated().to_string() };
    Some(info(FsKind::Swap, text(&b[1024 + 28..1024 + 44]), uuid, (last_page + 1) * page as u64, None))
}

fn iso9660(b: &[u8]) -> Option<FsInfo> {
    let d = &b[0x8000..0x8800];
    if &d[1..6] != b"CD001" {
        return None;
    }
    let size = le32(d, 80) as u64 * le16(d, 128) as u64;
    Some(info(FsKind::Iso9660, text(&d[40..72]), String::new(), size, None))
}
