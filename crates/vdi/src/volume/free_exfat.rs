//! The free space of an exFAT volume: clusters whose bit is clear in its allocation bitmap
//! (found through the root directory's bitmap entry). The boot region, the FATs and
//! everything before the cluster heap are never free.
//!
//! Refused unless clean: the VolumeDirty flag (set while mounted) or MediaFailure. Verified
//! before anything is released: the clusters of the bitmap itself, the up-case table and
//! the root directory are marked used, else the volume is reported damaged.
//!
//! Layout reference: Microsoft's "exFAT file system specification" (main boot sector,
//! FAT, allocation bitmap and up-case table directory entries).

use crate::error::Result;
use crate::volume::free::{FreeSink, NotClean};
use crate::volume::io::{le16, le32, le64, ReadDisk, Span};
use crate::volume::VolumeError;

const VOLUME_DIRTY: u16 = 0x2;
const MEDIA_FAILURE: u16 = 0x4;
const ENTRY_BITMAP: u8 = 0x81;
const ENTRY_UPCASE: u8 = 0x82;
const FAT_END: u32 = 0xffff_ffff;
/// Bitmap bytes read at a time.
const WINDOW: usize = 64 * 1024;

fn damaged(place: &str, detail: String) -> crate::VdiError {
    VolumeError::damaged("exfat", place, detail).into()
}

/// An exFAT volume's geometry.
pub(crate) struct Exfat {
    span: Span,
    flags: u16,
    cs: u64,
    fat_at: u64,
    heap_at: u64,
    clusters: u64,
    root: u32,
}

impl Exfat {
    pub fn open(disk: &mut dyn ReadDisk, start: u64, size: u64) -> Result<Exfat> {
        let span = Span { start, size, fs: "exfat" };
        let b = span.vec(disk, 0, 512, &|| "boot sector".into())?;
        let (bps_shift, spc_shift) = (b[0x6c] as u32, b[0x6d] as u32);
        if !(9..=12).contains(&bps_shift) || bps_shift + spc_shift > 25 {
            return Err(damaged("boot sector", format!("sector shift {bps_shift}, cluster shift {spc_shift}: expected 9..12 and a cluster of at most 32 MiB")));
        }
        let bps = 1u64 << bps_shift;
        let cs = bps << spc_shift;
        let fats = b[0x6e] as u64;
        let flags = le16(&b, 0x6a);
        let fat_len = le32(&b, 0x54) as u64 * bps;
        // The second FAT is the active one when ActiveFat is set (TexFAT).
        let active = if fats == 2 && flags & 1 != 0 { 1 } else { 0 };
        let fat_at = le32(&b, 0x50) as u64 * bps + active * fat_len;
        let heap_at = le32(&b, 0x58) as u64 * bps;
        let clusters = le32(&b, 0x5c) as u64;
        if !(1..=2).contains(&fats) || fat_len < (clusters + 2) * 4 || heap_at.saturating_add(clusters * cs) > size {
            return Err(damaged("boot sector", format!("{fats} FATs of {fat_len} bytes, {clusters} clusters of {cs} bytes from byte {heap_at}: do not fit the {size}-byte volume")));
        }
        Ok(Exfat { span, flags, cs, fat_at, heap_at, clusters, root: le32(&b, 0x60) })
    }

    /// Why the volume is not clean, if it is not.
    pub fn not_clean(&self) -> Option<NotClean> {
        if self.flags & VOLUME_DIRTY != 0 {
            return Some(NotClean::new("its VolumeDirty flag is set (it is mounted or was not unmounted cleanly)", "shut the guest down fully, or run fsck.exfat on the volume"));
        }
        if self.flags & MEDIA_FAILURE != 0 {
            return Some(NotClean::new("its MediaFailure flag is set (the guest saw read or write errors)", "run fsck.exfat (chkdsk on Windows) on the volume"));
        }
        None
    }

    fn check(&self, c: u32, what: &str) -> Result<()> {
        if c < 2 || c as u64 >= self.clusters + 2 {
            return Err(damaged(what, format!("cluster {c} is outside 2..{}", self.clusters + 2)));
        }
        Ok(())
    }

    /// The clusters of the chain from `first` holding `len` bytes (or, with `len` None, to
    /// its end), bounded by the cluster count.
    fn chain(&self, disk: &mut dyn ReadDisk, first: u32, len: Option<u64>, what: &str) -> Result<Vec<u32>> {
        let want = len.map(|l| l.div_ceil(self.cs));
        let mut out = vec![];
        let mut c = first;
        loop {
            self.check(c, what)?;
            out.push(c);
            if want.is_some_and(|w| out.len() as u64 >= w) {
                return Ok(out);
            }
            if out.len() as u64 > self.clusters {
                return Err(damaged(what, "its cluster chain loops".into()));
            }
            let mut e = [0u8; 4];
            self.span.read(disk, self.fat_at + c as u64 * 4, &mut e, &|| format!("FAT entry of cluster {c}"))?;
            c = u32::from_le_bytes(e);
            if c == FAT_END {
                return match want {
                    Some(w) => Err(damaged(what, format!("its chain ends after {} of {w} clusters", out.len()))),
                    None => Ok(out),
                };
            }
        }
    }

    fn cluster_at(&self, c: u32) -> u64 {
        self.heap_at + (c as u64 - 2) * self.cs
    }
}

/// Walk the free clusters of `fs` (already checked clean), telling `sink` each free run as
/// disk offsets, in increasing order.
pub(crate) fn free_space(disk: &mut dyn ReadDisk, fs: &Exfat, sink: &mut dyn FreeSink) -> Result<()> {
    let root = fs.chain(disk, fs.root, None, "root directory")?;
    let mut must: Vec<u32> = root.clone();
    let mut bitmap = None;
    let mut dir = vec![0u8; fs.cs as usize];
    'walk: for &c in &root {
        fs.span.read(disk, fs.cluster_at(c), &mut dir, &|| "root directory".into())?;
        for e in dir.chunks_exact(32) {
            match e[0] {
                0 => break 'walk,
                ENTRY_BITMAP | ENTRY_UPCASE => {
                    let (first, len) = (le32(e, 20), le64(e, 24));
                    let chain = fs.chain(disk, first, Some(len), if e[0] == ENTRY_BITMAP { "allocation bitmap" } else { "up-case table" })?;
                    if e[0] == ENTRY_BITMAP && e[1] & 1 == 0 {
                        bitmap = Some(chain.clone());
                    }
                    must.extend(chain);
                }
                _ => {}
            }
        }
    }
    let Some(bitmap) = bitmap else { return Err(damaged("root directory", "no allocation bitmap entry".into())) };
    if (bitmap.len() as u64) * fs.cs * 8 < fs.clusters {
        return Err(damaged("allocation bitmap", format!("{} clusters hold fewer than {} bits", bitmap.len(), fs.clusters)));
    }
    must.sort_unstable();
    let mut run: Option<u64> = None;
    let mut buf = vec![0u8; WINDOW.min(fs.cs as usize)];
    let mut n = 0u64; // bitmap bit: cluster n + 2
    'bits: for &c in &bitmap {
        let mut at = 0u64;
        while at < fs.cs {
            let len = buf.len().min((fs.cs - at) as usize);
            fs.span.read(disk, fs.cluster_at(c) + at, &mut buf[..len], &|| "allocation bitmap".into())?;
            for byte in &buf[..len] {
                for bit in 0..8 {
                    if n >= fs.clusters {
                        break 'bits;
                    }
                    let free = byte & (1 << bit) == 0;
                    let cluster = n + 2;
                    if free && must.binary_search(&(cluster as u32)).is_ok() {
                        return Err(damaged("allocation bitmap", format!("cluster {cluster} holds metadata but is marked free (run fsck.exfat)")));
                    }
                    match (free, run) {
                        (true, None) => run = Some(cluster),
                        (false, Some(r)) => {
                            sink.free(fs.span.start + fs.cluster_at(r as u32), (cluster - r) * fs.cs);
                            run = None;
                        }
                        _ => {}
                    }
                    n += 1;
                }
            }
            at += len as u64;
        }
    }
    if let Some(r) = run {
        sink.free(fs.span.start + fs.cluster_at(r as u32), (fs.clusters + 2 - r) * fs.cs);
    }
    Ok(())
}
