//! NTFS, for compaction: only whether the volume is clean. Its allocation map ($Bitmap) is
//! not read, so an NTFS partition keeps all its space; but a dirty volume (Windows running,
//! crashed, or chkdsk pending) refuses the whole disk, as its other filesystems may be in
//! use too.
//!
//! Read: the boot sector's geometry, then MFT record 3 ($Volume), its update sequence
//! applied, and the flags of its $VOLUME_INFORMATION attribute (0x0001: dirty). Not
//! detected: a hibernated or fast-startup Windows (that needs hiberfil.sys read).

use crate::error::Result;
use crate::volume::free::NotClean;
use crate::volume::io::{le16, le32, le64, ReadDisk, Span};
use crate::volume::VolumeError;

const VOLUME_RECORD: u64 = 3;
const ATTR_VOLUME_INFORMATION: u32 = 0x70;
const ATTR_END: u32 = 0xffff_ffff;
const VOLUME_DIRTY: u16 = 0x0001;

fn damaged(place: &str, detail: String) -> crate::VdiError {
    VolumeError::damaged("ntfs", place, detail).into()
}

/// Why the NTFS volume at `start` is not clean, if it is not.
pub(crate) fn check_clean(disk: &mut dyn ReadDisk, start: u64, size: u64) -> Result<Option<NotClean>> {
    let span = Span { start, size, fs: "ntfs" };
    let b = span.vec(disk, 0, 512, &|| "boot sector".into())?;
    let bps = le16(&b, 11) as u64;
    if !(256..=4096).contains(&bps) || !bps.is_power_of_two() {
        return Err(damaged("boot sector", format!("bytes per sector is {bps}, expected a power of two from 256 to 4096")));
    }
    let spc = match b[13] {
        n @ 1..=0x80 => n as u64,
        n @ 0xf4..=0xff => 1u64 << (256 - n as u32), // 2^-n, as Windows writes large clusters
        n => return Err(damaged("boot sector", format!("sectors per cluster is {n:#x}"))),
    };
    let cs = bps * spc;
    let rs = match b[0x40] as i8 {
        n @ 1..=64 => n as u64 * cs,
        n @ -12..=-9 => 1u64 << -(n as i32),
        n => return Err(damaged("boot sector", format!("clusters per MFT record is {n}, expected 1..64 or -9..-12"))),
    };
    let mft = le64(&b, 0x30);
    let at = mft.checked_mul(cs).and_then(|a| a.checked_add(VOLUME_RECORD * rs)).unwrap_or(u64::MAX);
    let mut r = span.vec(disk, at.min(size), rs as usize, &|| "MFT record 3 ($Volume)".into())?;
    if &r[..4] != b"FILE" {
        return Err(damaged("MFT record 3 ($Volume)", "no FILE signature".into()));
    }
    fixup(&mut r, bps as usize)?;
    let mut a = le16(&r, 0x14) as usize;
    while a + 24 <= r.len() {
        let (kind, len) = (le32(&r, a), le32(&r, a + 4) as usize);
        if kind == ATTR_END {
            break;
        }
        if len < 24 || a + len > r.len() {
            return Err(damaged("MFT record 3 ($Volume)", format!("attribute at {a} of length {len}")));
        }
        if kind == ATTR_VOLUME_INFORMATION && r[a + 8] == 0 {
            let v = a + le16(&r, a + 0x14) as usize;
            if v + 12 > a + len {
                return Err(damaged("$VOLUME_INFORMATION", "shorter than 12 bytes".into()));
            }
            if le16(&r, v + 0x0a) & VOLUME_DIRTY != 0 {
                return Ok(Some(NotClean::new(
                    "its dirty flag is set (Windows is running, crashed, or chkdsk is pending)",
                    "shut Windows down fully (shutdown /s /f /t 0, or hold Shift when choosing Shut down, so fast startup does not hibernate), or run chkdsk /f",
                )));
            }
            return Ok(None);
        }
        a += len;
    }
    Err(damaged("MFT record 3 ($Volume)", "no $VOLUME_INFORMATION attribute".into()))
}

/// Apply a record's update sequence: the last two bytes of each sector are in the array.
fn fixup(r: &mut [u8], bps: usize) -> Result<()> {
    let (off, count) = (le16(r, 4) as usize, le16(r, 6) as usize);
    if count == 0 || off + count * 2 > r.len() || (count - 1) * bps > r.len() {
        return Err(damaged("MFT record 3 ($Volume)", format!("update sequence of {count} at {off}")));
    }
    let usn = [r[off], r[off + 1]];
    for i in 1..count {
        let end = i * bps - 2;
        if r[end..end + 2] != usn {
            return Err(damaged("MFT record 3 ($Volume)", format!("sector {i} torn (update sequence mismatch)")));
        }
        r[end] = r[off + 2 * i];
        r[end + 1] = r[off + 2 * i + 1];
    }
    Ok(())
}
