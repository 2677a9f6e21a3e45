//! The free space of a FAT12/16/32 filesystem: the clusters whose entry is 0 in every copy
//! of the FAT (a cluster one copy calls used is kept). The reserved sectors, the FATs and
//! FAT12/16's root directory come before the data area and are never free.
//!
//! Refused unless clean: the "dirty" bit Linux and Windows set in the boot sector while the
//! volume is mounted, and, on FAT16/32, the clean-shutdown and no-error bits of FAT entry 1.

use crate::error::Result;
use crate::volume::fat::{Fat, Width};
use crate::volume::free::{FreeSink, NotClean};
use crate::volume::io::{le16, le32, ReadDisk};

/// FAT bytes read at a time.
const WINDOW: u64 = 64 * 1024;

fn mount_hint() -> &'static str {
    "shut the guest down fully (not suspend), or run fsck.vfat -a on the volume"
}

/// Why the FAT volume with boot sector `b` and FAT entry 1 `fat1` is not clean, if it is not.
pub(crate) fn not_clean(width: Width, b: &[u8], fat1: u32) -> Option<NotClean> {
    let state = if width == Width::Fat32 { b[0x41] } else { b[0x25] };
    if state & 1 != 0 {
        return Some(NotClean::new("its dirty bit is set (it is mounted or was not unmounted cleanly)", mount_hint()));
    }
    let (clean, no_error) = match width {
        Width::Fat12 => return None,
        Width::Fat16 => (0x8000, 0x4000),
        Width::Fat32 => (0x0800_0000, 0x0400_0000),
    };
    if fat1 & clean == 0 {
        return Some(NotClean::new("FAT entry 1 says it was not shut down cleanly", mount_hint()));
    }
    if fat1 & no_error == 0 {
        return Some(NotClean::new("FAT entry 1 records a disk error", "run fsck.vfat -a on the volume"));
    }
    None
}

/// The boot sector (512 bytes), the number of FATs and the bytes of one FAT.
fn layout(disk: &mut dyn ReadDisk, fs: &Fat) -> Result<(Vec<u8>, u64, u64)> {
    let b = fs.span.vec(disk, 0, 512, &|| "boot sector".into())?;
    let bps = le16(&b, 11) as u64;
    let fat_sectors = match le16(&b, 22) {
        0 => le32(&b, 36) as u64,
        n => n as u64,
    };
    Ok((b.clone(), b[16] as u64, fat_sectors * bps))
}

/// Why `fs` is not clean, if it is not.
pub(crate) fn check_clean(disk: &mut dyn ReadDisk, fs: &Fat) -> Result<Option<NotClean>> {
    let (b, _, _) = layout(disk, fs)?;
    let mut e = [0u8; 8];
    fs.span.read(disk, fs.fat_at, &mut e, &|| "FAT entry 1".into())?;
    let fat1 = match fs.width {
        Width::Fat12 => 0,
        Width::Fat16 => le16(&e, 2) as u32,
        Width::Fat32 => le32(&e, 4) & 0x0fff_ffff,
    };
    Ok(not_clean(fs.width, &b, fat1))
}

/// The entry of cluster `c` in `fat` (bytes of the FAT from byte `base`).
fn entry(width: Width, fat: &[u8], base: u64, c: u64) -> u32 {
    match width {
        Width::Fat12 => {
            let x = le16(fat, (c * 3 / 2 - base) as usize) as u32;
            if c % 2 == 0 {
                x & 0xfff
            } else {
                x >> 4
            }
        }
        Width::Fat16 => le16(fat, (c * 2 - base) as usize) as u32,
        Width::Fat32 => le32(fat, (c * 4 - base) as usize) & 0x0fff_ffff,
    }
}

/// Walk the free clusters of `fs` (already checked clean), telling `sink` each free run as
/// disk offsets, in increasing order.
pub(crate) fn free_space(disk: &mut dyn ReadDisk, fs: &Fat, sink: &mut dyn FreeSink) -> Result<()> {
    let (_, fats, fat_len) = layout(disk, fs)?;
    let end = fs.end as u64;
    let (num, den) = match fs.width {
        Width::Fat12 => (3, 2),
        Width::Fat16 => (2, 1),
        Width::Fat32 => (4, 1),
    };
    // Clusters per window, even (a FAT12 pair of entries shares a byte).
    let per = WINDOW * den / num / 2 * 2;
    let mut run: Option<u64> = None;
    let mut c = 2u64;
    let mut bufs = vec![Vec::new(); fats as usize];
    while c < end {
        let last = (c - c % per + per).min(end);
        // Bytes [base, top) of each FAT hold the entries of clusters c..last.
        let base = c * num / den;
        let top = ((last * num).div_ceil(den) + 1).min(fat_len);
        for (k, buf) in bufs.iter_mut().enumerate() {
            *buf = fs.span.vec(disk, fs.fat_at + k as u64 * fat_len + base, (top - base) as usize, &|| format!("FAT {k}"))?;
        }
        for x in c..last {
            let free = bufs.iter().all(|f| entry(fs.width, f, base, x) == 0);
            match (free, run) {
                (true, None) => run = Some(x),
                (false, Some(r)) => {
                    emit(fs, sink, r, x);
                    run = None;
                }
                _ => {}
            }
        }
        c = last;
    }
    if let Some(r) = run {
        emit(fs, sink, r, end);
    }
    Ok(())
}

fn emit(fs: &Fat, sink: &mut dyn FreeSink, first: u64, end: u64) {
    let at = fs.data_at + (first - 2) * fs.cs;
    let len = ((end - first) * fs.cs).min(fs.span.size.saturating_sub(at));
    sink.free(fs.span.start + at, len);
}
