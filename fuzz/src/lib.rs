//! What the fuzz targets share: a storage that counts what is read from it, and a reference
//! reader, written from VDI-FORMAT.md alone, that says what each block of an image must read
//! as (or why it cannot be read). The targets compare the engine against it.

#![forbid(unsafe_code)]

use std::cell::Cell;

use vdi::{MemStorage, ReadAt, StorageError, VdiHeader};

/// Bytes every target may read beyond the file's length in one open + check (the header is
/// read twice).
pub const SLACK: u64 = 2048;

/// Storage over bytes that records every read asked of it (including failed ones).
#[derive(Debug, Default)]
pub struct Counting {
    data: MemStorage,
    /// Reads asked.
    pub reads: Cell<u64>,
    /// Bytes asked, in all.
    pub bytes: Cell<u64>,
    /// The largest single read asked.
    pub largest: Cell<u64>,
}

impl Counting {
    /// Storage holding `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        Counting { data: MemStorage::from_vec(bytes.to_vec()), ..Default::default() }
    }
    /// The file's length.
    pub fn file_len(&self) -> u64 {
        self.data.as_slice().len() as u64
    }
    /// Forget what was counted.
    pub fn reset(&self) {
        self.reads.set(0);
        self.bytes.set(0);
        self.largest.set(0);
    }
}

impl ReadAt for Counting {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let n = buf.len() as u64;
        self.reads.set(self.reads.get() + 1);
        self.bytes.set(self.bytes.get() + n);
        self.largest.set(self.largest.get().max(n));
        self.data.read_at(offset, buf)
    }
    fn len(&self) -> Result<u64, StorageError> {
        self.data.len()
    }
}

/// Why a block cannot be read, as the reference sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// The block's map entry lies past the end of the file.
    MapTruncated,
    /// The block's data lies (partly) past the end of the file.
    PastEnd,
    /// A FREE block of a differencing image: its parent holds it.
    NeedsParent,
}

impl Unreadable {
    /// The engine's error kind for this.
    pub fn kind(self) -> &'static str {
        match self {
            Unreadable::MapTruncated => "truncated",
            Unreadable::PastEnd => "block-past-end",
            Unreadable::NeedsParent => "needs-parent",
        }
    }
}

/// What a block holds, per the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefBlock {
    /// Reads as zeros (FREE in a base image, or ZERO).
    Zeros,
    /// Reads as `len` bytes of the file from `host`, stored in `slot`.
    Data { slot: u32, host: u64 },
}

fn le32(b: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

/// The raw map entry of `block`, or `None` when it lies past the end of the file.
pub fn raw_entry(file: &[u8], h: &VdiHeader, block: u64) -> Option<u32> {
    le32(file, h.offset_bmap as u64 + 4 * block)
}

/// What block `block` of the image in `file` (whose header is `h`) reads as.
pub fn ref_block(file: &[u8], h: &VdiHeader, block: u64) -> Result<RefBlock, Unreadable> {
    let raw = raw_entry(file, h, block).ok_or(Unreadable::MapTruncated)?;
    match raw {
        0xFFFF_FFFF if h.image_type == 4 => Err(Unreadable::NeedsParent),
        0xFFFF_FFFF | 0xFFFF_FFFE => Ok(RefBlock::Zeros),
        slot => {
            let stride = h.block_size as u64 + h.block_extra as u64;
            let host = h.offset_data as u64 + slot as u64 * stride + h.block_extra as u64;
            if host + h.block_size as u64 > file.len() as u64 {
                return Err(Unreadable::PastEnd);
            }
            Ok(RefBlock::Data { slot, host })
        }
    }
}

/// What `len` bytes of the virtual disk at `offset` read as: the bytes, or the first reason a
/// block in the range cannot be read.
pub fn ref_read(file: &[u8], h: &VdiHeader, offset: u64, len: usize) -> Result<Vec<u8>, Unreadable> {
    let bs = h.block_size as u64;
    let mut out = vec![0u8; len];
    let mut done = 0usize;
    while done < len {
        let pos = offset + done as u64;
        let n = ((bs - pos % bs) as usize).min(len - done);
        match ref_block(file, h, pos / bs)? {
            RefBlock::Zeros => {}
            RefBlock::Data { host, .. } => {
                let at = (host + pos % bs) as usize;
                out[done..done + n].copy_from_slice(&file[at..at + n]);
            }
        }
        done += n;
    }
    Ok(out)
}

/// A small deterministic generator (xorshift64*), seeded from the input, for picking ranges.
pub struct Rng(u64);

impl Rng {
    /// Seeded from a hash of `data`.
    pub fn from_bytes(data: &[u8]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data.iter().take(4096) {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        h ^= data.len() as u64;
        Rng(h | 1)
    }
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A value below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Up to `count` ranges `(offset, len)` inside a disk of `size` bytes, each at most `max`
/// bytes: both ends of the disk, block boundaries, and random places.
pub fn ranges(rng: &mut Rng, size: u64, bs: u64, count: usize, max: u64) -> Vec<(u64, usize)> {
    let mut v = Vec::new();
    if size == 0 {
        v.push((0, 0));
        return v;
    }
    let clamp = |o: u64, l: u64| -> (u64, usize) {
        let o = o.min(size);
        (o, l.min(size - o).min(max) as usize)
    };
    v.push(clamp(0, max));
    v.push(clamp(size.saturating_sub(max.min(size)), max));
    while v.len() < count {
        let r = rng.below(3);
        let (o, l) = match r {
            0 => {
                // Straddle a block boundary.
                let b = rng.below(size.div_ceil(bs)) * bs;
                (b.saturating_sub(rng.below(600)), rng.below(bs + 1200) + 1)
            }
            1 => (rng.below(size), rng.below(max) + 1),
            _ => (rng.below(size.div_ceil(bs)) * bs, bs),
        };
        v.push(clamp(o, l));
    }
    v
}

/// In-memory storage that refuses to grow past `cap` bytes, like a quota: a damaged header
/// may place data anywhere (offset_data near 4 GiB in a 1 KiB file), and honouring it in
/// memory would only measure the fuzzer's RAM. The engine must fail such writes cleanly.
#[derive(Debug, Clone)]
pub struct Capped {
    /// The bytes.
    pub inner: MemStorage,
    /// The largest length allowed.
    pub cap: u64,
}

impl ReadAt for Capped {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.inner.read_at(offset, buf)
    }
    fn len(&self) -> Result<u64, StorageError> {
        self.inner.len()
    }
}

impl vdi::Storage for Capped {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        if offset.saturating_add(buf.len() as u64) > self.cap {
            return Err(StorageError::no_space(format!("quota of {} bytes exceeded", self.cap)));
        }
        self.inner.write_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        if len > self.cap {
            return Err(StorageError::no_space(format!("quota of {} bytes exceeded", self.cap)));
        }
        self.inner.set_len(len)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}
