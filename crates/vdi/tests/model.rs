//! Model test: random sequences of writes, reads, reopens, checks and raw exports applied to
//! an image on `MemStorage` and to a plain `Vec<u8>`, compared after every step.
//!
//! Varied: layout (vbox / qemu), fixed / dynamic, block size (4 KiB, 64 KiB, 1 MiB), disk
//! size (whole blocks, a partial last block, and a `disk_size` that is not a multiple of 512,
//! made by editing the header). After every step the allocation invariants are asserted:
//! all-zero writes to FREE blocks never allocate, `blocks_allocated` equals the number of
//! allocated entries, a dynamic image's file ends right after its last slot, and `check`
//! finds nothing.
//!
//! `PROPTEST_CASES` overrides the number of cases (256 by default).

use proptest::prelude::*;
use vdi::{
    all_zero, check, create, export_raw, CreateOptions, Entry, Layout, MemStorage, NoMonitor, ReadAt, Storage,
    Uuid, VdiImage,
};

const BLOCK_SIZES: [u32; 3] = [4 << 10, 64 << 10, 1 << 20];
/// Most whole blocks per block size (keeps a case small enough to compare every step).
const MAX_FULL_BLOCKS: [u32; 3] = [24, 10, 4];
/// Largest disk a resize may make, in blocks (beyond 128 entries a QEMU-layout map must move).
const MAX_RESIZE_BLOCKS: [u64; 3] = [300, 200, 12];

/// The image to start from.
#[derive(Debug, Clone)]
struct Config {
    qemu: bool,
    fixed: bool,
    bs_idx: usize,
    full_blocks: u32,
    /// Sectors of a partial last block (taken modulo the sectors per block).
    tail_sectors: u32,
    /// Bytes taken off the stored `disk_size` (0: none; else 1..=511, an odd size).
    odd_cut: u32,
}

impl Config {
    fn block_size(&self) -> u64 {
        BLOCK_SIZES[self.bs_idx] as u64
    }
    /// The size given to `create` (a multiple of 512, never 0).
    fn create_size(&self) -> u64 {
        let bs = self.block_size();
        let full = (self.full_blocks % (MAX_FULL_BLOCKS[self.bs_idx] + 1)) as u64;
        let tail = (self.tail_sectors as u64 % (bs / 512)) * 512;
        (full * bs + tail).max(512)
    }
}

/// Where an operation starts.
#[derive(Debug, Clone)]
enum Pos {
    /// Anywhere: a fraction (of 2^32) of the room left.
    Frac(u32),
    /// Near the start of a block (block index taken modulo the block count).
    Boundary { block: u32, delta: i32 },
    /// Ending at the very end of the disk.
    End,
}

/// How long an operation is (clamped to the disk).
#[derive(Debug, Clone)]
enum Len {
    Bytes(u32),
    Sectors(u32),
    Blocks { n: u32, extra: i32 },
    Zero,
}

/// What a write writes.
#[derive(Debug, Clone)]
enum Fill {
    Zeros,
    Byte(u8),
    Noise(u64),
    /// Zeros but one non-zero byte (position taken modulo the length).
    OneByte {
        at: u32,
        val: u8,
    },
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        pos: Pos,
        len: Len,
        fill: Fill,
    },
    Read {
        pos: Pos,
        len: Len,
    },
    Reopen,
    Check,
    Export,
    /// `compact(zero_as_free)`: dynamic images only.
    Compact(bool),
    /// `discard` a range: whole blocks are dropped, partial ones zeroed.
    Discard {
        pos: Pos,
        len: Len,
    },
    /// `resize` by whole blocks and bytes (clamped to a small disk; at least one sector).
    Resize {
        blocks: i32,
        bytes: i32,
    },
}

fn config() -> impl Strategy<Value = Config> {
    (
        any::<bool>(),
        prop_oneof![3 => Just(false), 1 => Just(true)],
        prop_oneof![3 => Just(0usize), 2 => Just(1usize), 1 => Just(2usize)],
        0u32..=24,
        prop_oneof![1 => Just(0u32), 2 => 1u32..2048],
        prop_oneof![2 => Just(0u32), 1 => 1u32..512],
    )
        .prop_map(|(qemu, fixed, bs_idx, full_blocks, tail_sectors, odd_cut)| Config {
            qemu,
            fixed,
            bs_idx,
            full_blocks,
            tail_sectors,
            odd_cut,
        })
}

fn pos() -> impl Strategy<Value = Pos> {
    prop_oneof![
        3 => any::<u32>().prop_map(Pos::Frac),
        3 => (any::<u32>(), -700i32..=700).prop_map(|(block, delta)| Pos::Boundary { block, delta }),
        1 => Just(Pos::End),
    ]
}

fn len() -> impl Strategy<Value = Len> {
    prop_oneof![
        3 => (1u32..=1100).prop_map(Len::Bytes),
        2 => (1u32..=16).prop_map(Len::Sectors),
        2 => (0u32..=3, -600i32..=600).prop_map(|(n, extra)| Len::Blocks { n, extra }),
        1 => Just(Len::Zero),
    ]
}

fn fill() -> impl Strategy<Value = Fill> {
    prop_oneof![
        2 => Just(Fill::Zeros),
        1 => (1u8..=255).prop_map(Fill::Byte),
        2 => any::<u64>().prop_map(Fill::Noise),
        2 => (any::<u32>(), 1u8..=255).prop_map(|(at, val)| Fill::OneByte { at, val }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (pos(), len(), fill()).prop_map(|(pos, len, fill)| Op::Write { pos, len, fill }),
        4 => (pos(), len()).prop_map(|(pos, len)| Op::Read { pos, len }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Check),
        1 => Just(Op::Export),
        1 => any::<bool>().prop_map(Op::Compact),
        2 => (pos(), len()).prop_map(|(pos, len)| Op::Discard { pos, len }),
        1 => (-6i32..=160, -3000i32..=3000).prop_map(|(blocks, bytes)| Op::Resize { blocks, bytes }),
    ]
}

/// Resolve an abstract (position, length) against a disk of `size` bytes in blocks of `bs`.
fn resolve(pos: &Pos, len: &Len, size: u64, bs: u64) -> (u64, u64) {
    let want = match *len {
        Len::Bytes(n) => n as u64,
        Len::Sectors(n) => n as u64 * 512,
        Len::Blocks { n, extra } => (n as u64 * bs).saturating_add_signed(extra as i64),
        Len::Zero => 0,
    };
    let l = want.min(size);
    let room = size - l;
    let off = match *pos {
        Pos::Frac(f) => ((room as u128 * f as u128) >> 32) as u64,
        Pos::Boundary { block, delta } => {
            let blocks = size.div_ceil(bs).max(1);
            ((block as u64 % blocks) * bs).saturating_add_signed(delta as i64).min(room)
        }
        Pos::End => room,
    };
    (off, l)
}

fn fill_bytes(fill: &Fill, n: usize) -> Vec<u8> {
    match *fill {
        Fill::Zeros => vec![0; n],
        Fill::Byte(b) => vec![b; n],
        Fill::Noise(seed) => {
            let mut x = seed | 1;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect()
        }
        Fill::OneByte { at, val } => {
            let mut v = vec![0; n];
            if n > 0 {
                v[at as usize % n] = val;
            }
            v
        }
    }
}

/// The image under test and the model it must match.
struct Harness {
    img: VdiImage<MemStorage>,
    disk: Vec<u8>,
    /// Which blocks the model expects allocated.
    alloc: Vec<bool>,
    fixed: bool,
    bs: u64,
    bs_idx: usize,
}

impl Harness {
    fn new(cfg: &Config) -> Self {
        let size = cfg.create_size();
        let bs = cfg.block_size();
        let mut o = CreateOptions::new(size, Uuid::from_u128(0xA11CE), Uuid::from_u128(0xB0B));
        o.fixed = cfg.fixed;
        o.block_size = bs as u32;
        o.layout = if cfg.qemu { Layout::Qemu } else { Layout::Vbox };
        let mut img = create(MemStorage::new(), &o, &mut NoMonitor).expect("create");
        assert_eq!(img.virtual_size(), size);
        if cfg.odd_cut > 0 {
            // An odd disk_size: edit the header, then reopen. The engine rounds it up.
            let disk_size = size - cfg.odd_cut as u64;
            let mut s = img.into_storage();
            s.write_at(0x170, &disk_size.to_le_bytes()).unwrap();
            img = VdiImage::open(s).expect("open with odd disk_size");
            assert_eq!(img.header().disk_size, disk_size);
            assert_eq!(img.virtual_size(), size, "odd disk_size rounds up to a sector");
            assert!(img.header().notes().iter().any(|n| n.contains("not a multiple of 512")));
        }
        let nblocks = img.header().blocks_in_image as usize;
        assert_eq!(nblocks as u64, size.div_ceil(bs));
        Harness {
            img,
            disk: vec![0; size as usize],
            alloc: vec![cfg.fixed; nblocks],
            fixed: cfg.fixed,
            bs,
            bs_idx: cfg.bs_idx,
        }
    }

    fn size(&self) -> u64 {
        self.disk.len() as u64
    }

    /// The part of the disk block `b` covers.
    fn block_range(&self, b: u64) -> std::ops::Range<usize> {
        (b * self.bs) as usize..((b + 1) * self.bs).min(self.size()) as usize
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Write { pos, len, fill } => {
                let (off, l) = resolve(pos, len, self.size(), self.bs);
                let data = fill_bytes(fill, l as usize);
                let before = self.img.header().blocks_allocated;
                self.img.write_at(off, &data).map_err(|e| TestCaseError::fail(format!("write {off}+{l}: {e}")))?;
                self.disk[off as usize..(off + l) as usize].copy_from_slice(&data);
                // Update the model's allocation: a block becomes allocated only when the
                // part written to it holds a non-zero byte.
                let mut newly = 0;
                let mut p = off;
                while p < off + l {
                    let b = p / self.bs;
                    let end = ((b + 1) * self.bs).min(off + l);
                    if !all_zero(&data[(p - off) as usize..(end - off) as usize]) && !self.alloc[b as usize] {
                        self.alloc[b as usize] = true;
                        newly += 1;
                    }
                    p = end;
                }
                prop_assert_eq!(self.img.header().blocks_allocated, before + newly, "write {}+{} allocated", off, l);
                if fill_is_zero(fill) || l == 0 {
                    prop_assert_eq!(newly, 0);
                }
            }
            Op::Read { pos, len } => {
                let (off, l) = resolve(pos, len, self.size(), self.bs);
                let mut buf = vec![0xEE; l as usize];
                self.img.read_at(off, &mut buf).map_err(|e| TestCaseError::fail(format!("read {off}+{l}: {e}")))?;
                prop_assert!(buf[..] == self.disk[off as usize..(off + l) as usize], "read {}+{} differs", off, l);
            }
            Op::Reopen => {
                let s = std::mem::replace(&mut self.img, placeholder()).into_storage();
                self.img = VdiImage::open(s).map_err(|e| TestCaseError::fail(format!("reopen: {e}")))?;
            }
            Op::Check => {
                let copy = self.img.storage().clone();
                let r = check(copy.clone(), &mut NoMonitor).map_err(|e| TestCaseError::fail(format!("check: {e}")))?;
                prop_assert!(r.is_clean(), "check on a clone: {:?}", r.findings);
                prop_assert_eq!(&copy, self.img.storage(), "check changed nothing");
            }
            Op::Export => {
                let mut c = Vec::new();
                let st = export_raw(&mut self.img, &mut c, &mut NoMonitor)
                    .map_err(|e| TestCaseError::fail(format!("export: {e}")))?;
                prop_assert_eq!(st.total_bytes, self.size());
                prop_assert_eq!(st.data_bytes + st.zero_bytes, self.size());
                prop_assert!(c == self.disk, "export differs from the model");
            }
            Op::Compact(zero_as_free) => {
                let r = self.img.compact(*zero_as_free, &mut NoMonitor);
                if self.fixed {
                    let e = r.err().ok_or_else(|| TestCaseError::fail("compacted a fixed image"))?;
                    prop_assert_eq!(e.kind(), "unsupported");
                } else {
                    r.map_err(|e| TestCaseError::fail(format!("compact: {e}")))?;
                    // All-zero blocks are no longer allocated.
                    for b in 0..self.alloc.len() {
                        let r = self.block_range(b as u64);
                        if all_zero(&self.disk[r]) {
                            self.alloc[b] = false;
                        }
                    }
                }
            }
            Op::Discard { pos, len } => {
                let (off, l) = resolve(pos, len, self.size(), self.bs);
                let r = self.img.discard(off, l, &mut NoMonitor);
                if self.fixed {
                    // A fixed image keeps every block allocated: discard is refused, as compact is.
                    let e = r.err().ok_or_else(|| TestCaseError::fail("discarded in a fixed image"))?;
                    prop_assert_eq!(e.kind(), "unsupported");
                } else {
                    r.map_err(|e| TestCaseError::fail(format!("discard {off}+{l}: {e}")))?;
                    self.disk[off as usize..(off + l) as usize].fill(0);
                    // Whole blocks in the range (the disk's last block counts as whole when
                    // the range runs to the end of the disk) are no longer allocated.
                    for b in 0..self.alloc.len() as u64 {
                        let r = self.block_range(b);
                        if l > 0 && off <= r.start as u64 && r.end as u64 <= off + l {
                            self.alloc[b as usize] = false;
                        }
                    }
                }
            }
            Op::Resize { blocks, bytes } => {
                let max = MAX_RESIZE_BLOCKS[self.bs_idx] * self.bs;
                let want = (self.size() as i64 + *blocks as i64 * self.bs as i64 + *bytes as i64).clamp(1, max as i64);
                let new_size = (want as u64).next_multiple_of(512);
                let new_blocks = new_size.div_ceil(self.bs) as usize;
                let h = self.img.header().clone();
                let map_moves = h.offset_bmap as u64 + new_blocks as u64 * 4 > h.offset_data as u64;
                let refused = if new_size < self.size() {
                    !all_zero(&self.disk[new_size as usize..])
                } else {
                    self.fixed && map_moves
                };
                let r = self.img.resize(want as u64, &mut NoMonitor);
                if refused {
                    let e = r.err().ok_or_else(|| TestCaseError::fail(format!("resize to {want} should fail")))?;
                    prop_assert_eq!(e.kind(), "unsupported", "{}", e);
                } else {
                    r.map_err(|e| TestCaseError::fail(format!("resize {} -> {want}: {e}", self.size())))?;
                    self.disk.resize(new_size as usize, 0);
                    self.alloc.resize(new_blocks, self.fixed);
                    prop_assert_eq!(self.img.virtual_size(), new_size);
                }
            }
        }
        self.invariants()
    }

    /// What must hold after every step.
    fn invariants(&mut self) -> Result<(), TestCaseError> {
        let h = self.img.header().clone();
        prop_assert_eq!(h.blocks_in_image as usize, self.alloc.len(), "blocks_in_image");
        prop_assert_eq!(self.img.virtual_size(), self.size(), "virtual size");
        // Entries agree with the model's allocation, and blocks_allocated counts them.
        let mut allocated = 0u32;
        for b in 0..h.blocks_in_image {
            let e = self.img.entry(b).map_err(|e| TestCaseError::fail(format!("entry {b}: {e}")))?;
            let is_data = matches!(e, Entry::Data(_));
            prop_assert_eq!(is_data, self.alloc[b as usize], "block {} entry {:?}", b, e);
            if self.fixed {
                prop_assert_eq!(e, Entry::Data(b), "fixed images map block i to slot i");
            }
            allocated += is_data as u32;
        }
        prop_assert_eq!(h.blocks_allocated, allocated, "blocks_allocated vs allocated entries");
        // The file ends right after the last slot (with no slot, a resize that moved the map
        // may leave it ending with the map, before offset_data).
        let file_len = self.img.storage().len().unwrap();
        let want = h.offset_data as u64 + h.blocks_allocated as u64 * self.bs;
        if h.blocks_allocated == 0 {
            let map_end = h.offset_bmap as u64 + h.map_bytes();
            prop_assert!(map_end <= file_len && file_len <= want, "file length {} with no blocks", file_len);
        } else {
            prop_assert_eq!(file_len, want, "file length");
        }
        prop_assert_eq!(self.img.file_len(), file_len, "the image's idea of the file length");
        // The whole disk reads as the model.
        let mut all = vec![0xEE; self.disk.len()];
        self.img.read_at(0, &mut all).map_err(|e| TestCaseError::fail(format!("read all: {e}")))?;
        prop_assert!(all == self.disk, "disk differs from the model");
        // Nothing to report.
        let r = check(self.img.storage(), &mut NoMonitor).map_err(|e| TestCaseError::fail(format!("check: {e}")))?;
        prop_assert!(r.is_clean(), "check: {:?}", r.findings);
        prop_assert_eq!(r.allocated_blocks, allocated as u64);
        prop_assert_eq!(r.image_end_offset, want);
        Ok(())
    }
}

fn fill_is_zero(f: &Fill) -> bool {
    matches!(f, Fill::Zeros)
}

/// A tiny image to hold the place of one being reopened.
fn placeholder() -> VdiImage<MemStorage> {
    let o = CreateOptions::new(512, Uuid::from_u128(1), Uuid::nil());
    create(MemStorage::new(), &o, &mut NoMonitor).unwrap()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn image_matches_model(cfg in config(), ops in proptest::collection::vec(op(), 1..40)) {
        let mut h = Harness::new(&cfg);
        h.invariants()?;
        for op in &ops {
            h.apply(op)?;
        }
        // End with a reopen and a full export, whatever the sequence did.
        h.apply(&Op::Reopen)?;
        h.apply(&Op::Export)?;
    }
}

/// The corners the random sequences should hit, spelled out once.
#[test]
fn fixed_corners() {
    for qemu in [false, true] {
        for fixed in [false, true] {
            for bs_idx in 0..3 {
                // A disk of 2 whole blocks, a partial block of 3 sectors, and disk_size 7
                // bytes short of that (odd).
                let cfg = Config { qemu, fixed, bs_idx, full_blocks: 2, tail_sectors: 3, odd_cut: 7 };
                let mut h = Harness::new(&cfg);
                let bs = h.bs as i32;
                let ops = [
                    // All zeros to FREE blocks, spanning a boundary: nothing allocated.
                    Op::Write { pos: Pos::Boundary { block: 1, delta: -100 }, len: Len::Bytes(200), fill: Fill::Zeros },
                    // One non-zero byte after the boundary: only block 1 is allocated.
                    Op::Write {
                        pos: Pos::Boundary { block: 1, delta: -100 },
                        len: Len::Bytes(200),
                        fill: Fill::OneByte { at: 150, val: 9 },
                    },
                    // The very last bytes of the (odd-sized) disk.
                    Op::Write { pos: Pos::End, len: Len::Bytes(1), fill: Fill::Byte(0x5A) },
                    Op::Write { pos: Pos::End, len: Len::Sectors(2), fill: Fill::Noise(3) },
                    // A whole-disk write, then partial overwrites.
                    Op::Write { pos: Pos::Frac(0), len: Len::Blocks { n: 3, extra: bs }, fill: Fill::Noise(7) },
                    Op::Reopen,
                    Op::Write { pos: Pos::Boundary { block: 0, delta: 1 }, len: Len::Bytes(3), fill: Fill::Zeros },
                    Op::Read { pos: Pos::Frac(1 << 31), len: Len::Blocks { n: 1, extra: 0 } },
                    Op::Check,
                    Op::Export,
                ];
                for op in &ops {
                    h.apply(op).unwrap_or_else(|e| panic!("{cfg:?} {op:?}: {e}"));
                }
            }
        }
    }
}
