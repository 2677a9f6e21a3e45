//! VHDX (Microsoft's [MS-VHDX] specification), dynamic, 1 MiB blocks, 512-byte logical and
//! 4 KiB physical sectors.
//!
//! ```text
//! 0        file type identifier ("vhdxfile", creator)
//! 64 KiB   header 1, 128 KiB header 2 (CRC-32C; no log to replay)
//! 192 KiB  region table 1, 256 KiB region table 2 (the BAT and metadata regions)
//! 1 MiB    log (empty)
//! 2 MiB    metadata region: table + file parameters, virtual disk size, page 83 data,
//!          logical and physical sector sizes
//! 3 MiB    BAT: an entry per block (FULLY_PRESENT + offset, or NOT_PRESENT), a sector
//!          bitmap entry (NOT_PRESENT: none, the disk has no parent) after every chunk
//! ...      the stored blocks in disk order, each 1 MiB aligned
//! ```
//! 1 MiB blocks, Hyper-V's smallest, keep the file as small as the VDI it comes from.

use super::{put_le, sector_size, table_piece, Cursor, Format, FormatOptions, FormatWriter, Out, Placement, Plan};
use crate::disk::Disk;
use crate::error::{Result, VdiError};
use uuid::Uuid;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = MIB;
const LOGICAL_SECTOR: u64 = 512;
/// Blocks per chunk: the blocks one sector bitmap block covers.
const CHUNK_RATIO: u64 = (1 << 23) * LOGICAL_SECTOR / BLOCK;
const LOG_AT: u64 = MIB;
const META_AT: u64 = 2 * MIB;
const BAT_AT: u64 = 3 * MIB;
/// The format's limit: 64 TiB.
const MAX_SIZE: u64 = 64 << 40;
const PAYLOAD_FULLY_PRESENT: u64 = 6;

const BAT_REGION: u128 = 0x2DC27766_F623_4200_9D64_115E9BFD4A08;
const METADATA_REGION: u128 = 0x8B7CA206_4790_4B9A_B8FE_575F050F886E;
const FILE_PARAMETERS: u128 = 0xCAA16737_FA36_4D43_B3B6_33F0AA44E76B;
const VIRTUAL_DISK_SIZE: u128 = 0x2FA54224_CD1B_4876_B211_5DBED83BF4B8;
const PAGE_83: u128 = 0xBECA12AB_B2E6_4523_93EF_C309E000C746;
const LOGICAL_SECTOR_SIZE: u128 = 0x8141BF1D_A96F_4709_BA47_F233A8FAAB5F;
const PHYSICAL_SECTOR_SIZE: u128 = 0xCDA348C7_445D_4471_9CC9_E9885251C556;

/// A GUID as VHDX stores it (the first three fields little-endian).
fn guid(u: Uuid) -> [u8; 16] {
    u.to_bytes_le()
}

/// CRC-32C (Castagnoli), as the VHDX headers and region tables carry it.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
        }
        *t = c;
    }
    !data.iter().fold(!0u32, |c, &b| table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}

struct Vhdx {
    size: u64,
    blocks: u64,
    bat_entries: u64,
    bat_len: u64,
    data_at: u64,
    opts: FormatOptions,
    step: usize,
    next: u64,
    cursor: Cursor,
}

pub(super) fn plan(disk: &mut dyn Disk, opts: &FormatOptions) -> Result<(Plan, Box<dyn FormatWriter>)> {
    let mut notes = Vec::new();
    let size = sector_size(disk.virtual_size(), &mut notes, Format::Vhdx);
    if size > MAX_SIZE {
        return Err(VdiError::Unsupported(format!("a VHDX holds at most 64 TiB ({MAX_SIZE} bytes); the disk is {size} bytes")));
    }
    let blocks = size.div_ceil(BLOCK);
    let bat_entries = blocks + blocks.saturating_sub(1) / CHUNK_RATIO;
    let bat_len = (bat_entries * 8).next_multiple_of(MIB).max(MIB);
    let data_at = BAT_AT + bat_len;
    let units = super::Alloc::count(disk, BLOCK)?;
    let w = Vhdx { size, blocks, bat_entries, bat_len, data_at, opts: opts.clone(), step: 0, next: 0, cursor: Cursor::new(BLOCK) };
    let plan = Plan {
        format: Format::Vhdx,
        disk_size: disk.virtual_size(),
        virtual_size: size,
        units,
        unit: BLOCK,
        output_len: Some(data_at + units * BLOCK),
        notes,
    };
    Ok((plan, Box::new(w)))
}

impl Vhdx {
    fn identifier() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..8].copy_from_slice(b"vhdxfile");
        for (i, c) in "vdi".encode_utf16().enumerate() {
            put_le(&mut b, 8 + 2 * i, c as u64, 2);
        }
        b
    }

    fn header(&self, sequence: u64) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(b"head");
        put_le(&mut h, 8, sequence, 8);
        h[16..32].copy_from_slice(&guid(self.opts.ids[1]));
        h[32..48].copy_from_slice(&guid(self.opts.ids[2]));
        put_le(&mut h, 66, 1, 2); // version
        put_le(&mut h, 68, MIB, 4); // log length
        put_le(&mut h, 72, LOG_AT, 8);
        let c = crc32c(&h);
        put_le(&mut h, 4, c as u64, 4);
        h
    }

    fn region_table(&self) -> Vec<u8> {
        let mut r = vec![0u8; 64 * 1024];
        r[..4].copy_from_slice(b"regi");
        put_le(&mut r, 8, 2, 4);
        for (i, (id, at, len)) in [(BAT_REGION, BAT_AT, self.bat_len), (METADATA_REGION, META_AT, MIB)].into_iter().enumerate() {
            let e = 16 + 32 * i;
            r[e..e + 16].copy_from_slice(&guid(Uuid::from_u128(id)));
            put_le(&mut r, e + 16, at, 8);
            put_le(&mut r, e + 24, len, 4);
            put_le(&mut r, e + 28, 1, 4); // required
        }
        let c = crc32c(&r);
        put_le(&mut r, 4, c as u64, 4);
        r
    }

    fn metadata(&self) -> Vec<u8> {
        const ITEMS_AT: usize = 64 * 1024;
        let mut m = vec![0u8; ITEMS_AT + 64];
        m[..8].copy_from_slice(b"metadata");
        // (id, offset in the region, length, flags: 4 required, 2 virtual disk)
        let items: [(u128, usize, usize, u64); 5] = [
            (FILE_PARAMETERS, ITEMS_AT, 8, 4),
            (VIRTUAL_DISK_SIZE, ITEMS_AT + 8, 8, 6),
            (PAGE_83, ITEMS_AT + 16, 16, 6),
            (LOGICAL_SECTOR_SIZE, ITEMS_AT + 32, 4, 6),
            (PHYSICAL_SECTOR_SIZE, ITEMS_AT + 36, 4, 6),
        ];
        put_le(&mut m, 10, items.len() as u64, 2);
        for (i, (id, at, len, flags)) in items.into_iter().enumerate() {
            let e = 32 + 32 * i;
            m[e..e + 16].copy_from_slice(&guid(Uuid::from_u128(id)));
            put_le(&mut m, e + 16, at as u64, 4);
            put_le(&mut m, e + 20, len as u64, 4);
            put_le(&mut m, e + 24, flags, 4);
        }
        put_le(&mut m, ITEMS_AT, BLOCK, 4); // block size; flags 0: blocks may be unallocated, no parent
        put_le(&mut m, ITEMS_AT + 8, self.size, 8);
        m[ITEMS_AT + 16..ITEMS_AT + 32].copy_from_slice(&guid(self.opts.ids[0]));
        put_le(&mut m, ITEMS_AT + 32, LOGICAL_SECTOR, 4);
        put_le(&mut m, ITEMS_AT + 36, 4096, 4);
        m
    }
}

impl FormatWriter for Vhdx {
    fn meta(&mut self, disk: &mut dyn Disk, out: &mut Out<'_>) -> Result<bool> {
        match self.step {
            0 => {
                out.bytes(&Self::identifier())?;
                out.zeros_to(64 * 1024)?;
                out.bytes(&self.header(1))?;
                out.zeros_to(128 * 1024)?;
                out.bytes(&self.header(2))?;
                out.zeros_to(192 * 1024)?;
                let r = self.region_table();
                out.bytes(&r)?;
                out.bytes(&r)?;
                out.zeros_to(META_AT)?;
                out.bytes(&self.metadata())?;
                out.zeros_to(BAT_AT)?;
                self.step = 1;
                Ok(true)
            }
            1 => {
                let (cursor, data_at, blocks) = (&mut self.cursor, self.data_at, self.blocks);
                let done = table_piece(out, &mut self.next, self.bat_entries, 8, false, |j| {
                    if (j + 1) % (CHUNK_RATIO + 1) == 0 {
                        return Ok(0); // sector bitmap: none
                    }
                    let b = j - j / (CHUNK_RATIO + 1);
                    debug_assert!(b < blocks);
                    Ok(cursor.slot(disk, b)?.map_or(0, |k| (data_at + k * BLOCK) | PAYLOAD_FULLY_PRESENT))
                })?;
                if done {
                    out.zeros_to(self.data_at)?;
                    self.step = 2;
                }
                Ok(!done)
            }
            _ => Ok(false),
        }
    }

    fn data(&self) -> Placement {
        Placement::Slots { unit: BLOCK, start: self.data_at, stride: BLOCK, prefix: Vec::new() }
    }

    fn trailer(&mut self, _out: &mut Out<'_>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
