//! The free space of an NTFS volume: clusters whose bit is clear in `$Bitmap` (record 6).
//!
//! Refused unless clean:
//! - the `$Volume` dirty flag (Windows running, crashed, or chkdsk pending);
//! - `$LogFile` not clean (its newest restart area has clients and no "clean" flag): what a
//!   Windows left with fast startup ("metadata kept in Windows cache") or hibernated looks
//!   like;
//! - a `hiberfil.sys` in the root that starts with "hibr" (a hibernated Windows).
//!
//! Verified before anything is released: the clusters of the metadata files that hold data
//! ($MFT, $MFTMirr, $LogFile, $Bitmap, $Boot, $UpCase) are marked used, else the volume is
//! reported damaged and keeps all its space.

use crate::error::Result;
use crate::volume::free::{FreeSink, NotClean};
use crate::volume::io::{le16, le64, ReadDisk};
use crate::volume::ntfs::{attrs, Ntfs};
use crate::volume::{EntryKind, VolumeError};

const LOGFILE: u64 = 2;
const VOLUME: u64 = 3;
const BITMAP: u64 = 6;
/// Metadata files whose unnamed $DATA must be marked used.
const METADATA: [u64; 6] = [0, 1, LOGFILE, BITMAP, 7, 10];
const ATTR_VOLUME_INFORMATION: u32 = 0x70;
const VOLUME_DIRTY: u16 = 0x0001;
const RESTART_VOLUME_IS_CLEAN: u16 = 0x0002;
const NO_CLIENT: u16 = 0xffff;
/// $Bitmap bytes read at a time.
const WINDOW: usize = 64 * 1024;

fn windows_hint() -> &'static str {
    "boot Windows and shut it down fully (shutdown /s /f /t 0, or hold Shift when choosing Shut down, so fast startup does not hibernate), or run chkdsk /f"
}

/// Why the volume is not clean, if it is not.
pub(crate) fn check_clean(disk: &mut dyn ReadDisk, fs: &mut Ntfs) -> Result<Option<NotClean>> {
    let rec = fs.record(disk, VOLUME)?;
    let info = attrs(&rec).into_iter().find(|a| a.kind == ATTR_VOLUME_INFORMATION).and_then(|a| a.resident);
    let Some(v) = info.filter(|v| v.len() >= 12) else {
        return Err(VolumeError::damaged("ntfs", "MFT record 3 ($Volume)", "no $VOLUME_INFORMATION of 12 bytes").into());
    };
    if le16(v, 0x0a) & VOLUME_DIRTY != 0 {
        return Ok(Some(NotClean::new("its dirty flag is set (Windows is running, crashed, or chkdsk is pending)", windows_hint())));
    }
    if !logfile_clean(disk, fs)? {
        return Ok(Some(NotClean::new(
            "its $LogFile is not clean (Windows was not shut down fully: fast startup or hibernation keeps its metadata in memory)",
            windows_hint(),
        )));
    }
    let root = fs.root(disk)?;
    if let Some(h) = fs.find(disk, &root, "hiberfil.sys")? {
        let mut magic = [0u8; 4];
        if h.kind == EntryKind::File && h.size >= 4 {
            fs.read(disk, &h, 0, &mut magic)?;
        }
        if magic.eq_ignore_ascii_case(b"hibr") {
            return Ok(Some(NotClean::new("Windows is hibernated on it (hiberfil.sys holds a hibernation image)", windows_hint())));
        }
    }
    Ok(None)
}

/// Whether `$LogFile` says the volume is clean: empty (all 0xff, as mkntfs and ntfs-3g
/// leave it), or its newest restart area has no client in use or the clean flag.
fn logfile_clean(disk: &mut dyn ReadDisk, fs: &mut Ntfs) -> Result<bool> {
    let log = fs.entry(disk, LOGFILE, "$LogFile".into())?;
    let mut newest: Option<(u64, bool)> = None;
    let mut page = vec![0u8; 4096];
    for at in [0u64, 4096] {
        if log.size < at + 4096 {
            break;
        }
        fs.read(disk, &log, at, &mut page)?;
        if page.iter().all(|&b| b == 0xff) || &page[..4] != b"RSTR" {
            continue;
        }
        let ra = le16(&page, 0x18) as usize;
        if ra + 16 > 510 {
            return Err(VolumeError::damaged("ntfs", "$LogFile restart page", format!("restart area at {ra}")).into());
        }
        let lsn = le64(&page, ra);
        let clean = le16(&page, ra + 0x0c) == NO_CLIENT || le16(&page, ra + 0x0e) & RESTART_VOLUME_IS_CLEAN != 0;
        if newest.is_none_or(|(l, _)| lsn >= l) {
            newest = Some((lsn, clean));
        }
    }
    Ok(newest.is_none_or(|(_, clean)| clean))
}

/// Walk the free clusters of `fs` (already checked clean), telling `sink` each free run as
/// disk offsets, in increasing order.
pub(crate) fn free_space(disk: &mut dyn ReadDisk, fs: &mut Ntfs, sink: &mut dyn FreeSink) -> Result<()> {
    let bitmap = fs.entry(disk, BITMAP, "$Bitmap".into())?;
    let clusters = fs.clusters.min(bitmap.size.saturating_mul(8));
    let mut must: Vec<(u64, u64)> = vec![];
    for n in METADATA {
        let e = fs.entry(disk, n, format!("metadata file {n}"))?;
        for x in fs.extents(disk, &e, 0, usize::MAX)? {
            if let Some(d) = x.disk_offset {
                let a = (d - fs.span.start) / fs.cs;
                must.push((a, a + x.len.div_ceil(fs.cs)));
            }
        }
    }
    must.push((0, 1)); // the boot sector
    must.sort_unstable();
    let mut buf = vec![0u8; WINDOW];
    let mut run: Option<u64> = None;
    let mut m = 0usize;
    let mut c = 0u64;
    while c < clusters {
        let n = ((clusters - c).div_ceil(8) as usize).min(WINDOW);
        fs.read(disk, &bitmap, c / 8, &mut buf[..n])?;
        let last = (c + n as u64 * 8).min(clusters);
        for x in c..last {
            let i = (x - c) as usize;
            let free = buf[i / 8] & (1 << (i % 8)) == 0;
            while m < must.len() && must[m].1 <= x {
                m += 1;
            }
            if free && must[m..].iter().take_while(|r| r.0 <= x).any(|r| x < r.1) {
                return Err(VolumeError::damaged("ntfs", "$Bitmap", format!("cluster {x} holds metadata but is marked free (run chkdsk /f)")).into());
            }
            match (free, run) {
                (true, None) => run = Some(x),
                (false, Some(r)) => {
                    sink.free(fs.span.start + r * fs.cs, (x - r) * fs.cs);
                    run = None;
                }
                _ => {}
            }
        }
        c = last;
    }
    if let Some(r) = run {
        sink.free(fs.span.start + r * fs.cs, (clusters - r) * fs.cs);
    }
    Ok(())
}
