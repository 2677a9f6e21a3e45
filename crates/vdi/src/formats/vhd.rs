//! VHD (Microsoft's Virtual Hard Disk Image Format Specification, 2006): dynamic and fixed.
//!
//! ```text
//! dynamic: footer copy (512) | dynamic header (1024) | BAT (4 bytes a block, 0xFFFFFFFF
//!          free) | per stored block: sector bitmap (512, all set) + 2 MiB of data | footer
//! fixed:   the disk, every byte | footer
//! ```
//!
//! **Size.** Readers disagree on a VHD's size: Virtual PC and QEMU (for most creators) take
//! it from the CHS geometry, Hyper-V, Azure and VirtualBox from the footer's current size.
//! The size written is one both readings agree on, never smaller than the disk:
//! - dynamic: the smallest size whose specification geometry covers it exactly (what
//!   `qemu-img` does: at most a cylinder, under 2 MiB, more);
//! - fixed (Azure wants a whole number of MiB): the disk rounded up to 1 MiB, with the
//!   geometry 16 heads × 128 sectors × one cylinder per MiB, which covers it exactly, up to
//!   64 GiB (65535 cylinders).
//!
//! Past what a geometry covers (127.5 GiB by the specification's, 64 GiB by the fixed one's)
//! the largest geometry is written, and every reader (QEMU included) then takes the
//! footer's size, the disk's rounded up. The format's limit is 2040 GiB.

use super::{sector_size, table_piece, Cursor, Format, FormatOptions, FormatWriter, Out, Placement, Plan};
use crate::disk::Disk;
use crate::error::{Result, VdiError};

/// Block size of a dynamic VHD (Hyper-V's and QEMU's).
const BLOCK: u64 = 2 << 20;
/// Sector bitmap of a block, padded to a sector.
const BITMAP: u64 = 512;
const BAT_AT: u64 = 1536;
/// The largest geometry: 65535 cylinders, 16 heads, 255 sectors.
const MAX_CHS: u64 = 65535 * 16 * 255;
/// The format's limit (QEMU's VHD_MAX_SECTORS): 2040 GiB.
const MAX_SECTORS: u64 = 0xff00_0000;
/// Seconds from 1970-01-01 to 2000-01-01 (VHD time stamps count from 2000).
const EPOCH_2000: u64 = 946_684_800;

/// The VHD specification's geometry for `sectors` (appendix "CHS calculation").
pub(crate) fn geometry(sectors: u64) -> (u64, u64, u64) {
    let total = sectors.min(MAX_CHS);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        (spt, heads, cth) = (255, 16, total / 255);
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            (s, h, c) = (31, 16, total / 31);
        }
        if c >= h * 1024 {
            (s, h, c) = (63, 16, total / 63);
        }
        (spt, heads, cth) = (s, h, c);
    }
    (cth / heads, heads, spt)
}

fn chs_sectors(g: (u64, u64, u64)) -> u64 {
    g.0 * g.1 * g.2
}

/// The size in sectors (and its geometry) a dynamic VHD of a disk of `sectors` gets: the
/// smallest at least `sectors` that its geometry covers exactly (see the module docs).
fn vhd_sectors(sectors: u64) -> (u64, (u64, u64, u64)) {
    let mut n = sectors.max(1);
    loop {
        let g = geometry(n);
        if n >= MAX_CHS || chs_sectors(g) == n {
            return (n, g);
        }
        n += 1;
    }
}

/// The size in sectors and geometry of a fixed VHD: whole MiB, one cylinder each.
fn fixed_sectors(sectors: u64) -> (u64, (u64, u64, u64)) {
    let mib = sectors.div_ceil(2048).max(1);
    let g = if mib <= 65535 { (mib, 16, 128) } else { (65535, 16, 255) };
    (mib * 2048, g)
}

struct Vhd {
    fixed: bool,
    size: u64,
    geometry: (u64, u64, u64),
    blocks: u64,
    bat_bytes: u64,
    data_at: u64,
    opts: FormatOptions,
    step: usize,
    next: u64,
    cursor: Cursor,
}

pub(super) fn plan(disk: &mut dyn Disk, format: Format, opts: &FormatOptions) -> Result<(Plan, Box<dyn FormatWriter>)> {
    let fixed = format == Format::VhdFixed;
    let mut notes = Vec::new();
    let disk_size = disk.virtual_size();
    let sectors = sector_size(disk_size, &mut Vec::new(), format) / 512;
    if sectors > MAX_SECTORS {
        return Err(VdiError::Unsupported(format!(
            "a VHD holds at most 2040 GiB ({} bytes); the disk is {disk_size} bytes (use vhdx)",
            MAX_SECTORS * 512
        )));
    }
    let (n, geometry) = if fixed { fixed_sectors(sectors) } else { vhd_sectors(sectors) };
    let size = n * 512;
    if size != disk_size {
        let why = if fixed { "a whole number of MiB (Azure's rule)" } else { "the size its CHS geometry gives (as qemu-img makes it)" };
        notes.push(format!(
            "{} holds {why}: the virtual size is {size} bytes, {} more than the disk's {disk_size} (zeros)",
            format.name(),
            size - disk_size
        ));
    }
    let blocks = size.div_ceil(BLOCK);
    let bat_bytes = (blocks * 4).next_multiple_of(512);
    let data_at = BAT_AT + bat_bytes;
    let units = if fixed { 0 } else { super::Alloc::count(disk, BLOCK)? };
    let output_len = if fixed { size + 512 } else { data_at + units * (BITMAP + BLOCK) + 512 };
    let w = Vhd { fixed, size, geometry, blocks, bat_bytes, data_at, opts: opts.clone(), step: 0, next: 0, cursor: Cursor::new(BLOCK) };
    let plan = Plan { format, disk_size, virtual_size: size, units, unit: if fixed { size } else { BLOCK }, output_len: Some(output_len), notes };
    Ok((plan, Box::new(w)))
}

/// Ones' complement of the byte sum (the footer's and the dynamic header's checksum).
fn checksum(b: &[u8]) -> u64 {
    !b.iter().fold(0u32, |a, &x| a.wrapping_add(x as u32)) as u64
}

impl Vhd {
    fn footer(&self) -> Vec<u8> {
        let be = super::put_be;
        let mut f = vec![0u8; 512];
        f[0..8].copy_from_slice(b"conectix");
        be(&mut f, 8, 2, 4); // features: reserved bit always set
        be(&mut f, 12, 0x0001_0000, 4); // version 1.0
        be(&mut f, 16, if self.fixed { u64::MAX } else { 512 }, 8); // data offset
        be(&mut f, 24, self.opts.unix_time.saturating_sub(EPOCH_2000) & 0xffff_ffff, 4);
        f[28..32].copy_from_slice(b"vdi ");
        be(&mut f, 32, 0x0001_0000, 4); // creator version
        f[36..40].copy_from_slice(b"Wi2k");
        be(&mut f, 40, self.size, 8); // original size
        be(&mut f, 48, self.size, 8); // current size
        let (c, h, s) = self.geometry;
        be(&mut f, 56, c, 2);
        be(&mut f, 58, h, 1);
        be(&mut f, 59, s, 1);
        be(&mut f, 60, if self.fixed { 2 } else { 3 }, 4);
        f[68..84].copy_from_slice(self.opts.ids[0].as_bytes());
        let sum = checksum(&f);
        be(&mut f, 64, sum, 4);
        f
    }

    fn dynamic_header(&self) -> Vec<u8> {
        let be = super::put_be;
        let mut d = vec![0u8; 1024];
        d[0..8].copy_from_slice(b"cxsparse");
        be(&mut d, 8, u64::MAX, 8); // data offset: unused
        be(&mut d, 16, BAT_AT, 8);
        be(&mut d, 24, 0x0001_0000, 4);
        be(&mut d, 28, self.blocks, 4);
        be(&mut d, 32, BLOCK, 4);
        let sum = checksum(&d);
        be(&mut d, 36, sum, 4);
        d
    }
}

impl FormatWriter for Vhd {
    fn meta(&mut self, disk: &mut dyn Disk, out: &mut Out<'_>) -> Result<bool> {
        if self.fixed {
            return Ok(false);
        }
        match self.step {
            0 => {
                out.bytes(&self.footer())?;
                out.bytes(&self.dynamic_header())?;
                self.step = 1;
                Ok(true)
            }
            1 => {
                let (cursor, data_at) = (&mut self.cursor, self.data_at);
                let slot_bytes = BITMAP + BLOCK;
                let done = table_piece(out, &mut self.next, self.blocks, 4, true, |b| {
                    Ok(cursor.slot(disk, b)?.map_or(0xffff_ffff, |k| (data_at + k * slot_bytes) / 512))
                })?;
                if done {
                    out.zeros_to(BAT_AT + self.bat_bytes)?;
                    self.step = 2;
                }
                Ok(!done)
            }
            _ => Ok(false),
        }
    }

    fn data(&self) -> Placement {
        if self.fixed {
            Placement::Linear { start: 0 }
        } else {
            Placement::Slots { unit: BLOCK, start: self.data_at, stride: BITMAP + BLOCK, prefix: vec![0xff; BITMAP as usize] }
        }
    }

    fn trailer(&mut self, out: &mut Out<'_>) -> Result<()> {
        if self.fixed {
            out.zeros_to(self.size)?;
        }
        out.bytes(&self.footer())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_specification() {
        // 10 MiB: 20480 sectors -> 17 sectors, 4 heads, 301 cylinders.
        assert_eq!(geometry(20480), (301, 4, 17));
        assert_eq!(geometry(MAX_CHS + 5), (65535, 16, 255));
        // The size chosen is covered exactly by its geometry, and never smaller.
        for s in [1u64, 2047, 20480, 20481, 1 << 22, 66_060_288, 133_693_440] {
            let (n, g) = vhd_sectors(s);
            assert!(n >= s && chs_sectors(g) == n, "{s}: {n} {g:?}");
            assert!(n - s < 16 * 255, "{s}: at most a cylinder more, got {n}");
            let (n, g) = fixed_sectors(s);
            assert!(n >= s && n % 2048 == 0 && n - s < 2048 && chs_sectors(g) == n, "{s}: {n} {g:?}");
        }
        // Beyond 64 GiB: the largest geometry, which makes every reader take the footer's size.
        assert_eq!(fixed_sectors(65536 * 2048).1, (65535, 16, 255));
    }
}
