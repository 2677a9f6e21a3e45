//! The GUID partition table: the primary header at LBA 1, its entry array, and the backup
//! header at the disk's last sector, whose agreement with the primary is checked.

use uuid::Uuid;

use crate::error::Result;
use crate::crc32::crc32;
use crate::volume::io::{le32, le64, utf16le, ReadDisk};
use crate::volume::mbr::{self, Mbr};
use crate::volume::table::{clip, Partition, PartitionTable, Scheme, TypeId, SECTOR};

/// Most entries read from an entry array (the usual array has 128).
pub const MAX_ENTRIES: u32 = 1024;
/// Largest entry size accepted (the usual is 128).
pub const MAX_ENTRY_SIZE: u32 = 1024;

/// A parsed, checked header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    my_lba: u64,
    alternate_lba: u64,
    disk_guid: Uuid,
    entries_lba: u64,
    count: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// The header at `lba`, or why it is not one.
fn header(disk: &mut dyn ReadDisk, lba: u64) -> Result<std::result::Result<Header, String>> {
    if (lba + 1) * SECTOR > disk.disk_size() {
        return Ok(Err(format!("LBA {lba} is past the end of the disk")));
    }
    let mut s = [0u8; SECTOR as usize];
    disk.read_disk(lba * SECTOR, &mut s)?;
    if &s[0..8] != b"EFI PART" {
        return Ok(Err(format!("no \"EFI PART\" signature at LBA {lba}")));
    }
    let size = le32(&s, 12);
    if !(92..=SECTOR as u32).contains(&size) {
        return Ok(Err(format!("header size {size} at LBA {lba} is not between 92 and 512")));
    }
    let mut h = s[..size as usize].to_vec();
    let stored = le32(&h, 16);
    h[16..20].fill(0);
    let computed = crc32(&h);
    if stored != computed {
        return Ok(Err(format!("header CRC at LBA {lba} is {stored:#010x}, computed {computed:#010x}")));
    }
    let count = le32(&s, 80);
    let entry_size = le32(&s, 84);
    if entry_size < 128 || entry_size % 8 != 0 || entry_size > MAX_ENTRY_SIZE {
        return Ok(Err(format!("entry size {entry_size} at LBA {lba} is not a multiple of 8 from 128 to {MAX_ENTRY_SIZE}")));
    }
    if count > MAX_ENTRIES {
        return Ok(Err(format!("{count} entries at LBA {lba}: more than the {MAX_ENTRIES} read")));
    }
    Ok(Ok(Header {
        my_lba: le64(&s, 24),
        alternate_lba: le64(&s, 32),
        disk_guid: Uuid::from_bytes_le(s[56..72].try_into().unwrap()),
        entries_lba: le64(&s, 72),
        count,
        entry_size,
        entries_crc: le32(&s, 88),
    }))
}

/// The entry array of a header, checked against its CRC (bounded: count and size were).
fn entries(disk: &mut dyn ReadDisk, h: &Header) -> Result<std::result::Result<Vec<u8>, String>> {
    let len = h.count as u64 * h.entry_size as u64;
    let at = h.entries_lba.saturating_mul(SECTOR);
    if at.checked_add(len).is_none_or(|e| e > disk.disk_size()) {
        return Ok(Err(format!("the entry array at LBA {} lies past the end of the disk", h.entries_lba)));
    }
    let mut v = vec![0u8; len as usize];
    disk.read_disk(at, &mut v)?;
    let crc = crc32(&v);
    if crc != h.entries_crc {
        return Ok(Err(format!("entry array CRC at LBA {} is {:#010x}, computed {crc:#010x}", h.entries_lba, h.entries_crc)));
    }
    Ok(Ok(v))
}

/// The header at `lba` with its entry array, or why they are not sound.
fn sound(disk: &mut dyn ReadDisk, lba: u64) -> Result<std::result::Result<(Header, Vec<u8>), String>> {
    let h = match header(disk, lba)? {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    Ok(entries(disk, &h)?.map(|a| (h, a)))
}

/// Fill `table` from the GPT behind the protective MBR `mbr`: the primary header and array
/// if they are sound, else the backup's; disagreements between the two are findings.
pub(crate) fn read(disk: &mut dyn ReadDisk, mbr: &Mbr, table: &mut PartitionTable) -> Result<()> {
    let last = disk.disk_size() / SECTOR - 1;
    let primary = sound(disk, 1)?;
    let backup_lba = match &primary {
        Ok((h, _)) if h.alternate_lba != last => {
            table.findings.push(format!(
                "the primary GPT header names LBA {} for its backup, but the disk's last sector is LBA {last}",
                h.alternate_lba
            ));
            h.alternate_lba.min(last)
        }
        _ => last,
    };
    let backup = sound(disk, backup_lba)?;
    let (h, array) = match (primary, backup) {
        (Ok(p), Ok(b)) => {
            if p.0.disk_guid != b.0.disk_guid {
                table.findings.push(format!("the backup GPT header's disk GUID {} differs from the primary's {}", b.0.disk_guid, p.0.disk_guid));
            }
            if p.1 != b.1 {
                table.findings.push("the backup GPT entry array differs from the primary".into());
            }
            if b.0.my_lba != backup_lba {
                table.findings.push(format!("the backup GPT header says it is at LBA {}, not {backup_lba}", b.0.my_lba));
            }
            p
        }
        (Ok(p), Err(e)) => {
            table.findings.push(format!("the backup GPT is damaged: {e}"));
            p
        }
        (Err(e), Ok(b)) => {
            table.findings.push(format!("the primary GPT is damaged ({e}); the backup is read"));
            b
        }
        (Err(e), Err(f)) => {
            table.findings.push(format!("a protective MBR but no sound GPT: primary: {e}; backup: {f}"));
            return Ok(());
        }
    };
    table.scheme = if mbr.slots.iter().any(|s| s.kind != 0 && s.kind != 0xee) { Scheme::HybridMbr } else { Scheme::Gpt };
    table.disk_id = h.disk_guid.hyphenated().to_string();
    let size = disk.disk_size();
    for (i, e) in array.chunks_exact(h.entry_size as usize).enumerate() {
        let type_guid = Uuid::from_bytes_le(e[0..16].try_into().unwrap());
        if type_guid.is_nil() {
            continue;
        }
        let number = i as u32 + 1;
        let (first, last_lba) = (le64(e, 32), le64(e, 40));
        if last_lba < first {
            table.findings.push(format!("GPT entry {number} ends (LBA {last_lba}) before it starts (LBA {first})"));
            continue;
        }
        let start = first.saturating_mul(SECTOR);
        let len = (last_lba - first).saturating_add(1).saturating_mul(SECTOR);
        let Some((start, len)) = clip(number, start, len, size, &mut table.findings) else { continue };
        table.partitions.push(Partition {
            number,
            start,
            size: len,
            type_id: TypeId::Gpt(type_guid),
            type_name: type_name(&type_guid).to_string(),
            name: utf16le(&e[56..128]),
            uuid: Uuid::from_bytes_le(e[16..32].try_into().unwrap()).hyphenated().to_string(),
            attributes: le64(e, 48),
            filesystem: None,
        });
    }
    if table.scheme == Scheme::HybridMbr {
        for s in mbr.slots.iter().filter(|s| s.kind != 0 && s.kind != 0xee) {
            let (a, b) = (s.lba as u64 * SECTOR, (s.lba as u64 + s.count as u64) * SECTOR);
            if !table.partitions.iter().any(|p| p.start == a && p.start + p.size == b) {
                table.findings.push(format!(
                    "the hybrid MBR's {} partition at sector {} matches no GPT partition",
                    mbr::type_name(s.kind),
                    s.lba
                ));
            }
        }
    }
    Ok(())
}

/// The usual name of a GPT type GUID (as `sgdisk` prints them), "" when unknown.
pub fn type_name(g: &Uuid) -> &'static str {
    match g.hyphenated().to_string().to_uppercase().as_str() {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI system partition",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot partition",
        "024DEE41-33E7-11D3-9D69-0008C781F39F" => "MBR partition scheme",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => "Windows recovery environment",
        "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3" => "Windows LDM metadata",
        "AF9B60A0-1431-4F62-BC68-3311714A69AD" => "Windows LDM data",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "CA7D7CCB-63ED-4C53-861C-1742536059CC" => "Linux LUKS",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux x86-64 root (/)",
        "44479540-F297-41B2-9AF7-D131D5F0458A" => "Linux x86 root (/)",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" => "Linux ARM64 root (/)",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "Linux /home",
        "3B8F8425-20E0-4F3B-907F-1A25A76F98E8" => "Linux /srv",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux extended boot",
        "48465300-0000-11AA-AA11-00306543ECAC" => "Apple HFS/HFS+",
        "7C3457EF-0000-11AA-AA11-00306543ECAC" => "Apple APFS",
        "426F6F74-0000-11AA-AA11-00306543ECAC" => "Apple boot",
        "516E7CB4-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD disklabel",
        "516E7CB6-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD UFS",
        "516E7CBA-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD ZFS",
        "6A898CC3-1DD2-11B2-99A6-080020736631" => "Solaris /usr & Apple ZFS",
        _ => "",
    }
}
