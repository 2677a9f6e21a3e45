//! Corrupted images: a table of good images damaged in one way each, with the exact verdict
//! for each: open fails with a named error, or the image opens and reads correctly, or it
//! opens and `check` reports the specific findings (and reads of the damaged blocks fail
//! with `block-past-end` rather than inventing zeros).
//!
//! Every case runs over a counting storage wrapper: no single read may be larger than the
//! file, and open + check together may read little more than the file holds, whatever size
//! the header claims.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use vdi::{
    all_zero, check, create, export_raw, CreateOptions, FindingKind, Layout, MemStorage, NoMonitor, OpenOptions,
    RawSink, ReadAt, StorageError, Uuid, VdiError, VdiImage, BLOCK_FREE, BLOCK_ZERO,
};

// ---------------------------------------------------------------------------------------
// Header field offsets (v1.1 / v1.1+), as in VDI-FORMAT.md.

const SIGNATURE: usize = 0x40;
const VERSION: usize = 0x44;
const HEADER_SIZE: usize = 0x48;
const IMAGE_TYPE: usize = 0x4C;
const OFFSET_BMAP: usize = 0x154;
const OFFSET_DATA: usize = 0x158;
const SECTOR_SIZE: usize = 0x168;
const DISK_SIZE: usize = 0x170;
const BLOCK_SIZE: usize = 0x178;
const BLOCK_EXTRA: usize = 0x17C;
const BLOCKS_IN_IMAGE: usize = 0x180;
const BLOCKS_ALLOCATED: usize = 0x184;
const UUID_LINK: usize = 0x1A8;
const LCHS_SECTOR_SIZE: usize = 0x1D4;

// v0.2 offsets.
const V0_BLOCK_SIZE: usize = 0x168;
const V0_BLOCKS_IN_IMAGE: usize = 0x16C;

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

// ---------------------------------------------------------------------------------------
// A storage that counts what is read from it.

/// Storage over bytes that records every read asked of it (including failed ones).
#[derive(Debug, Default)]
struct Counting {
    data: MemStorage,
    reads: Cell<u64>,
    bytes: Cell<u64>,
    largest: Cell<u64>,
}

impl Counting {
    fn new(bytes: Vec<u8>) -> Self {
        Counting { data: MemStorage::from_vec(bytes), ..Default::default() }
    }
    fn file_len(&self) -> u64 {
        self.data.as_slice().len() as u64
    }
    fn reset(&self) {
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

// ---------------------------------------------------------------------------------------
// Good images.

/// A good image: its bytes and the virtual disk they hold.
#[derive(Clone)]
struct Good {
    bytes: Vec<u8>,
    disk: Vec<u8>,
    bs: u64,
}

impl Good {
    fn offset_bmap(&self) -> usize {
        get32(&self.bytes, OFFSET_BMAP) as usize
    }
    fn offset_data(&self) -> usize {
        get32(&self.bytes, OFFSET_DATA) as usize
    }
    fn set_entry(&mut self, block: usize, v: u32) {
        let at = self.offset_bmap() + 4 * block;
        put32(&mut self.bytes, at, v);
    }
    fn entry(&self, block: usize) -> u32 {
        get32(&self.bytes, self.offset_bmap() + 4 * block)
    }
    fn block(&self, b: usize) -> std::ops::Range<usize> {
        let bs = self.bs as usize;
        b * bs..((b + 1) * bs).min(self.disk.len())
    }
    /// The disk with block `b` replaced by what slot `slot` holds.
    fn disk_with_block_from_slot(&self, b: usize, slot: usize) -> Vec<u8> {
        let mut d = self.disk.clone();
        let r = self.block(b);
        let at = self.offset_data() + slot * self.bs as usize;
        let n = r.len();
        d[r].copy_from_slice(&self.bytes[at..at + n]);
        d
    }
    fn with(&self, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = self.bytes.clone();
        f(&mut b);
        b
    }
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| seed.wrapping_add((i * 7 % 251) as u8) | 1).collect()
}

/// Build an image with the engine and apply `writes`, keeping a model of the disk.
fn build(layout: Layout, fixed: bool, bs: u32, size: u64, writes: &[(u64, Vec<u8>)]) -> Good {
    let mut o = CreateOptions::new(size, Uuid::from_u128(0x1111), Uuid::from_u128(0x2222));
    o.layout = layout;
    o.fixed = fixed;
    o.block_size = bs;
    let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    let mut disk = vec![0u8; img.virtual_size() as usize];
    for (at, data) in writes {
        img.write_at(*at, data).unwrap();
        disk[*at as usize..*at as usize + data.len()].copy_from_slice(data);
    }
    let bytes = img.into_storage().into_vec();
    let g = Good { bytes, disk, bs: bs as u64 };
    assert!(check(MemStorage::from_vec(g.bytes.clone()), &mut NoMonitor).unwrap().is_clean());
    g
}

/// QEMU layout, 4 KiB blocks, 9 blocks (the last one partial: 1 KiB), bmap at 0x200, data at
/// 0x400. Blocks 0 -> slot 0, 2 -> slot 1, 3 -> slot 2 (one write spanning both), 8 -> slot 3
/// (the very end of the disk); block 5 was written with zeros and stays FREE.
fn qemu() -> Good {
    let size = 8 * 4096 + 1024;
    let g = build(
        Layout::Qemu,
        false,
        4096,
        size,
        &[
            (100, pattern(0x10, 300)),
            (5 * 4096, vec![0; 4096]),
            (2 * 4096 + 4000, pattern(0x20, 200)),
            (size - 10, pattern(0x30, 10)),
        ],
    );
    assert_eq!((g.offset_bmap(), g.offset_data(), g.bytes.len()), (0x200, 0x400, 0x400 + 4 * 4096));
    assert_eq!((0..9).map(|b| g.entry(b)).collect::<Vec<_>>(), [0, !0, 1, 2, !0, !0, !0, !0, 3]);
    g
}

/// VirtualBox layout, 64 KiB blocks, 6 blocks: bmap at 1 MiB, data at 2 MiB; block 1 (whole)
/// -> slot 0, block 4 (partial) -> slot 1.
fn vbox() -> Good {
    let bs = 64 << 10;
    let g = build(
        Layout::Vbox,
        false,
        bs,
        6 * bs as u64,
        &[(bs as u64, pattern(0x40, bs as usize)), (4 * bs as u64 + 12345, pattern(0x50, 777))],
    );
    assert_eq!((g.offset_bmap(), g.offset_data()), (1 << 20, 2 << 20));
    assert_eq!(g.bytes.len(), (2 << 20) + 2 * (64 << 10));
    g
}

/// A fixed QEMU-layout image of 4 blocks of 4 KiB with data in blocks 1 and 3.
fn fixed() -> Good {
    build(Layout::Qemu, true, 4096, 4 * 4096, &[(4096 + 5, pattern(0x60, 100)), (3 * 4096, pattern(0x70, 4096))])
}

/// A v0.2 image laid out by hand: 4 blocks of 4 KiB; map [1, FREE, 0, ZERO] at 0x1A4, data
/// right after it at 0x1B4 (v0.2 has no offsets), slots filled with `slot_fill`.
fn v02_with(slot_fill: Option<u8>) -> Good {
    let bs = 4096usize;
    let mut b = vec![0u8; 0x1A4];
    b[..34].copy_from_slice(b"<<< Sun VirtualBox Disk Image >>>\n"); // text (informational)
    b[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]); // signature 0xBEDA107F
    b[0x44..0x48].copy_from_slice(&[0x02, 0x00, 0x00, 0x00]); // version 0.2
    b[0x48..0x4C].copy_from_slice(&[0x01, 0x00, 0x00, 0x00]); // image_type 1 (normal)
    b[0x4C..0x50].copy_from_slice(&[0x00, 0x00, 0x00, 0x00]); // image_flags
    b[0x50..0x56].copy_from_slice(b"old v0"); // comment (256 bytes, NUL-terminated)
    b[0x150..0x15C].copy_from_slice(&[0; 12]); // legacy geometry: cylinders, heads, sectors
    b[0x15C..0x160].copy_from_slice(&[0x00, 0x02, 0x00, 0x00]); // legacy sector_size 512
    b[0x160..0x168].copy_from_slice(&[0x00, 0x40, 0, 0, 0, 0, 0, 0]); // disk_size 16384
    b[0x168..0x16C].copy_from_slice(&[0x00, 0x10, 0x00, 0x00]); // block_size 4096
    b[0x16C..0x170].copy_from_slice(&[0x04, 0x00, 0x00, 0x00]); // blocks_in_image 4
    b[0x170..0x174].copy_from_slice(&[0x02, 0x00, 0x00, 0x00]); // blocks_allocated 2
    b[0x174..0x184].copy_from_slice(&[0xA5; 16]); // uuid_create
    b[0x184..0x194].copy_from_slice(&[0x5A; 16]); // uuid_modify
    b[0x194..0x1A4].copy_from_slice(&[0x00; 16]); // uuid_link (none: not a diff)
    b.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]); // map[0]: slot 1
    b.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]); // map[1]: FREE
    b.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]); // map[2]: slot 0
    b.extend_from_slice(&[0xFE, 0xFF, 0xFF, 0xFF]); // map[3]: ZERO
    assert_eq!(b.len(), 0x1B4);
    let slot0 = slot_fill.map_or_else(|| pattern(0x80, bs), |f| vec![f; bs]);
    let slot1 = slot_fill.map_or_else(|| pattern(0x90, bs), |f| vec![f; bs]);
    b.extend_from_slice(&slot0);
    b.extend_from_slice(&slot1);
    let mut disk = vec![0u8; 4 * bs];
    disk[..bs].copy_from_slice(&slot1);
    disk[2 * bs..3 * bs].copy_from_slice(&slot0);
    Good { bytes: b, disk, bs: bs as u64 }
}

fn v02() -> Good {
    v02_with(None)
}

/// A v1.1 image with `block_extra` = 512 laid out by hand (the engine never creates one):
/// QEMU layout, 4 blocks of 4 KiB, block 3 -> slot 0, block 0 -> slot 1; each slot is a
/// 512-byte prefix then the block's data.
fn with_block_extra() -> Good {
    let bs = 4096usize;
    let extra = 512usize;
    let empty = build(Layout::Qemu, false, bs as u32, 4 * bs as u64, &[]);
    let mut b = empty.bytes;
    put32(&mut b, BLOCK_EXTRA, extra as u32);
    put32(&mut b, BLOCKS_ALLOCATED, 2);
    put32(&mut b, 0x200 + 3 * 4, 0);
    put32(&mut b, 0x200, 1);
    assert_eq!(b.len(), 0x400);
    let d3 = pattern(0xA0, bs);
    let d0 = pattern(0xB0, bs);
    b.extend_from_slice(&[0xEE; 512]); // slot 0 prefix (never part of the disk)
    b.extend_from_slice(&d3);
    b.extend_from_slice(&[0xEE; 512]); // slot 1 prefix
    b.extend_from_slice(&d0);
    let mut disk = vec![0u8; 4 * bs];
    disk[..bs].copy_from_slice(&d0);
    disk[3 * bs..].copy_from_slice(&d3);
    Good { bytes: b, disk, bs: bs as u64 }
}

/// A 3 MiB file whose header claims a 512 TiB disk with a 1 GiB block map (2 MiB blocks,
/// 2^28 entries; offsets valid: bmap at 1 MiB, data at 1 GiB + 1 MiB). The file holds the
/// first 2 MiB of the map, all FREE.
fn claims_512_tib() -> Vec<u8> {
    let mut b = build(Layout::Vbox, false, 1 << 20, 1 << 20, &[]).bytes;
    let blocks = 1u32 << 28;
    put32(&mut b, BLOCK_SIZE, 2 << 20);
    put32(&mut b, BLOCKS_IN_IMAGE, blocks);
    put64(&mut b, DISK_SIZE, 512 << 40);
    put32(&mut b, OFFSET_DATA, (1 << 20) + blocks * 4);
    b.resize(1 << 20, 0);
    b.resize(3 << 20, 0xFF);
    b
}

// ---------------------------------------------------------------------------------------
// Verdicts.

/// What `check` must say.
#[derive(Debug, Clone)]
enum CheckSays {
    /// It cannot open the image either: the same error kind as open.
    Fails,
    /// These findings, as a multiset of kinds (empty: clean).
    Findings(Vec<FindingKind>),
}

#[derive(Debug, Clone)]
enum Expect {
    /// Open fails with this error kind, and its message holds every substring.
    Refused { kind: &'static str, msg: Vec<&'static str>, check: CheckSays },
    /// Open succeeds; reads equal `disk`, except whole blocks listed in `past_end`, which fail
    /// with `block-past-end`, and those in `needs_parent`. `check` reports `findings`.
    Opens { disk: Vec<u8>, bs: u64, findings: Vec<FindingKind>, past_end: Vec<u64>, needs_parent: Vec<u64> },
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

fn refused(name: &'static str, bytes: Vec<u8>, kind: &'static str, msg: &[&'static str], check: CheckSays) -> Case {
    Case { name, bytes, expect: Expect::Refused { kind, msg: msg.to_vec(), check } }
}

fn reads(name: &'static str, bytes: Vec<u8>, disk: Vec<u8>, bs: u64) -> Case {
    Case { name, bytes, expect: Expect::Opens { disk, bs, findings: vec![], past_end: vec![], needs_parent: vec![] } }
}

fn finds(
    name: &'static str,
    bytes: Vec<u8>,
    disk: Vec<u8>,
    bs: u64,
    findings: &[FindingKind],
    past_end: &[u64],
) -> Case {
    Case {
        name,
        bytes,
        expect: Expect::Opens {
            disk,
            bs,
            findings: findings.to_vec(),
            past_end: past_end.to_vec(),
            needs_parent: vec![],
        },
    }
}

use FindingKind::*;

// One push per case, each with its comment, reads better than one vec![] literal.
#[allow(clippy::vec_init_then_push)]
fn cases() -> Vec<Case> {
    let q = qemu();
    let v = vbox();
    let f = fixed();
    let v0 = v02();
    let qlen = q.bytes.len();
    let mut c = Vec::new();

    // --- Good images, as built: they read back and check clean.
    c.push(reads("good qemu layout", q.bytes.clone(), q.disk.clone(), q.bs));
    c.push(reads("good vbox layout", v.bytes.clone(), v.disk.clone(), v.bs));
    c.push(reads("good fixed image", f.bytes.clone(), f.disk.clone(), f.bs));
    c.push(reads("good v0.2 image laid out by hand", v0.bytes.clone(), v0.disk.clone(), v0.bs));
    c.push(reads(
        "good block_extra 512 image laid out by hand",
        with_block_extra().bytes,
        with_block_extra().disk,
        4096,
    ));

    // --- Pre-header.
    c.push(refused(
        "bad signature",
        q.with(|b| put32(b, SIGNATURE, 0xDEAD_BEEF)),
        "bad-signature",
        &["0xdeadbeef", "0xbeda107f"],
        CheckSays::Fails,
    ));
    c.push(reads(
        "header text is garbage (never used for detection)",
        q.with(|b| b[..64].fill(b'x')),
        q.disk.clone(),
        q.bs,
    ));
    c.push(refused(
        "version 2.1",
        q.with(|b| put32(b, VERSION, 0x0002_0001)),
        "unsupported-version",
        &["version 2.1", "expected 1.1 or 0.2"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "version 0.1",
        q.with(|b| put32(b, VERSION, 0x0000_0001)),
        "unsupported-version",
        &["version 0.1"],
        CheckSays::Fails,
    ));
    c.push(reads("version 1.0 (read as 1.1)", q.with(|b| put32(b, VERSION, 0x0001_0000)), q.disk.clone(), q.bs));

    // --- Header fields.
    c.push(refused(
        "header_size below 0x180",
        q.with(|b| put32(b, HEADER_SIZE, 0x17F)),
        "invalid-field",
        &["header_size = 0x17f", "at least 0x180"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "header_size 0",
        q.with(|b| put32(b, HEADER_SIZE, 0)),
        "invalid-field",
        &["header_size = 0x0"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "header_size runs past offset_bmap",
        q.with(|b| put32(b, HEADER_SIZE, 0x1C0)),
        "invalid-field",
        &["offset_bmap = 512", "at least 520", "overlaps the header"],
        CheckSays::Findings(vec![BadLayout]),
    ));
    c.push(refused(
        "header_size near u32::MAX",
        q.with(|b| put32(b, HEADER_SIZE, 0xFFFF_FFF0)),
        "invalid-field",
        &["offset_bmap = 512", "at least 4294967352", "overlaps the header"],
        CheckSays::Findings(vec![BadLayout]),
    ));
    c.push(reads(
        "header_size 0x200, larger than any known header",
        v.with(|b| put32(b, HEADER_SIZE, 0x200)),
        v.disk.clone(),
        v.bs,
    ));
    c.push(refused(
        "image_type 0",
        q.with(|b| put32(b, IMAGE_TYPE, 0)),
        "invalid-field",
        &["image_type = 0", "1 (dynamic)"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "image_type 5",
        q.with(|b| put32(b, IMAGE_TYPE, 5)),
        "invalid-field",
        &["image_type = 5"],
        CheckSays::Fails,
    ));
    c.push(reads("image_type 3 (undo, read as normal)", q.with(|b| put32(b, IMAGE_TYPE, 3)), q.disk.clone(), q.bs));
    c.push(refused(
        "sector_size 4096",
        q.with(|b| put32(b, SECTOR_SIZE, 4096)),
        "invalid-field",
        &["sector_size = 4096", "expected 512"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "lchs sector_size 1024 (vbox header)",
        v.with(|b| put32(b, LCHS_SECTOR_SIZE, 1024)),
        "invalid-field",
        &["lchs.sector_size = 1024"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "block_size not a power of two",
        q.with(|b| put32(b, BLOCK_SIZE, 3 * 4096)),
        "invalid-field",
        &["block_size = 12288", "power of two"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "block_size too big (256 MiB)",
        q.with(|b| put32(b, BLOCK_SIZE, 256 << 20)),
        "invalid-field",
        &["block_size = 268435456", "128 MiB"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "block_size too small (256)",
        q.with(|b| put32(b, BLOCK_SIZE, 256)),
        "invalid-field",
        &["block_size = 256", "between 512"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "block_size 0",
        q.with(|b| put32(b, BLOCK_SIZE, 0)),
        "invalid-field",
        &["block_size = 0"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "block_extra not a power of two",
        q.with(|b| put32(b, BLOCK_EXTRA, 3)),
        "invalid-field",
        &["block_extra = 3", "0 or a power of two"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "block_extra too big",
        q.with(|b| put32(b, BLOCK_EXTRA, 1 << 31)),
        "invalid-field",
        &["block_extra = 2147483648"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "blocks_in_image over 0x1FFFFF80",
        q.with(|b| put32(b, BLOCKS_IN_IMAGE, 0x1FFF_FF81)),
        "invalid-field",
        &["blocks_in_image = 536870785", "at most 536870784"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "blocks_in_image u32::MAX",
        q.with(|b| put32(b, BLOCKS_IN_IMAGE, u32::MAX)),
        "invalid-field",
        &["blocks_in_image = 4294967295"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "disk_size > blocks_in_image * block_size",
        q.with(|b| put64(b, DISK_SIZE, 9 * 4096 + 1)),
        "invalid-field",
        &["disk_size = 36865", "at most blocks_in_image * block_size = 9 * 4096 = 36864"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "disk_size u64::MAX",
        q.with(|b| put64(b, DISK_SIZE, u64::MAX)),
        "invalid-field",
        &["disk_size = 18446744073709551615"],
        CheckSays::Fails,
    ));
    // A count past blocks_in_image is no longer refused (compaction tools leave such images):
    // it opens read-only, reads as it is, and check names it; the file is 6 slots short.
    c.push(finds(
        "blocks_allocated > blocks_in_image",
        q.with(|b| put32(b, BLOCKS_ALLOCATED, 10)),
        q.disk.clone(),
        q.bs,
        &[SlotPastBlocks, FileTooShort],
        &[],
    ));
    // The map read one byte on: entry i is the top three bytes of entry i then the low byte
    // of entry i + 1. Five entries become huge slot numbers, blocks 4..6 stay FREE, and block
    // 8 reads slot 0 (its top bytes, then the zero padding): slots 1..3 are then unreferenced.
    c.push(refused(
        "offset_bmap misaligned",
        q.with(|b| put32(b, OFFSET_BMAP, 0x201)),
        "invalid-field",
        &["offset_bmap = 513", "a multiple of 512"],
        CheckSays::Findings(vec![
            BadLayout,
            EntryOutOfRange,
            EntryOutOfRange,
            EntryOutOfRange,
            EntryOutOfRange,
            EntryOutOfRange,
            AllocatedMismatch,
            LeakedSlot,
            LeakedSlot,
            LeakedSlot,
        ]),
    ));
    c.push(refused(
        "offset_bmap inside the pre-header",
        q.with(|b| put32(b, OFFSET_BMAP, 0)),
        "invalid-field",
        &["offset_bmap = 0", "at least 456", "overlaps the header"],
        // Entries read from the pre-header text "<<< QEMU VM Virtual Disk Image >>>\n": nine
        // huge slot numbers, so slots 0..3 are unreferenced.
        CheckSays::Findings(vec![
            BadLayout,
            EntryOutOfRange,
            EntryOutOfRange,
            EntryOutOfRange,
            EntryOutOfRange,
            EntryOutOfRange,
            EntryOutOfRange,
            EntryOutOfRange,
            EntryOutOfRange,
            EntryOutOfRange,
            AllocatedMismatch,
            LeakedSlot,
            LeakedSlot,
            LeakedSlot,
            LeakedSlot,
        ]),
    ));
    c.push(refused(
        "offset_data misaligned",
        q.with(|b| put32(b, OFFSET_DATA, 0x401)),
        "invalid-field",
        &["offset_data = 1025", "a multiple of 512"],
        // Every slot lies one byte on: the last one now ends past the file.
        CheckSays::Findings(vec![BadLayout, EntryPastEnd, FileTooShort]),
    ));
    c.push(refused(
        "offset_data overlaps the map (qemu)",
        q.with(|b| put32(b, OFFSET_DATA, 0x200)),
        "invalid-field",
        &["offset_data = 512", "at least offset_bmap + 4 * blocks_in_image = 548", "overlaps the block map"],
        // Slots now start at 0x200: the four slots end 512 bytes before the file does.
        CheckSays::Findings(vec![BadLayout, TrailingBytes]),
    ));
    c.push(refused(
        "offset_data == offset_bmap (vbox)",
        v.with(|b| put32(b, OFFSET_DATA, 1 << 20)),
        "invalid-field",
        &["offset_data = 1048576", "overlaps the block map"],
        CheckSays::Findings(vec![BadLayout, TrailingBytes]),
    ));

    // --- Block map damage.
    let mut dup = q.clone();
    dup.set_entry(6, 1); // block 6 -> slot 1, which block 2 already uses
    let dup_disk = dup.disk_with_block_from_slot(6, 1);
    c.push(finds("duplicate entry", dup.bytes, dup_disk, q.bs, &[DuplicateEntry, AllocatedMismatch], &[]));

    let mut oor = q.clone();
    oor.set_entry(6, 100); // >= blocks_in_image (9), and past the end of the file
    c.push(finds(
        "entry >= blocks_in_image",
        oor.bytes,
        q.disk.clone(),
        q.bs,
        &[EntryOutOfRange, AllocatedMismatch],
        &[6],
    ));

    let mut oor_in = q.clone();
    oor_in.set_entry(6, 9); // >= blocks_in_image, but the file holds a slot 9
    oor_in.bytes.resize(0x400 + 10 * 4096, 0x77);
    let oor_in_disk = oor_in.disk_with_block_from_slot(6, 9);
    c.push(finds(
        "entry >= blocks_in_image inside the file",
        oor_in.bytes,
        oor_in_disk,
        q.bs,
        &[SlotPastBlocks, AllocatedMismatch],
        &[],
    ));

    // What third-party compaction tools leave: blocks_allocated over blocks_in_image, entries
    // naming slots past it whose data is in the file. Slots 4..8 are holes (leaked), blocks 6
    // and 7 live in slots 9 and 10, past blocks_in_image (9): every byte reads.
    let mut past = q.clone();
    past.bytes.resize(0x400 + 9 * 4096, 0x77);
    past.bytes.extend(pattern(0x81, 4096));
    past.bytes.extend(pattern(0x82, 4096));
    past.set_entry(6, 9);
    past.set_entry(7, 10);
    put32(&mut past.bytes, BLOCKS_ALLOCATED, 11);
    let past_disk = past.disk_with_block_from_slot(6, 9);
    let past_disk = Good { disk: past_disk, ..past.clone() }.disk_with_block_from_slot(7, 10);
    c.push(finds(
        "slots past blocks_in_image (a compaction tool's image)",
        past.bytes,
        past_disk,
        q.bs,
        &[SlotPastBlocks, SlotPastBlocks, SlotPastBlocks, LeakedSlot, LeakedSlot, LeakedSlot, LeakedSlot, LeakedSlot],
        &[],
    ));

    let mut past = q.clone();
    past.set_entry(6, 5); // < blocks_in_image, but only 4 slots are in the file
    c.push(finds(
        "entry past the end of the file",
        past.bytes,
        q.disk.clone(),
        q.bs,
        &[EntryPastEnd, AllocatedMismatch],
        &[6],
    ));

    let mut zeroed = q.clone();
    zeroed.set_entry(2, BLOCK_ZERO); // slot 1 is leaked, block 2 reads zeros
    let mut zeroed_disk = q.disk.clone();
    zeroed_disk[q.block(2)].fill(0);
    c.push(finds(
        "entry set to ZERO leaks its slot",
        zeroed.bytes,
        zeroed_disk,
        q.bs,
        &[LeakedSlot, AllocatedMismatch],
        &[],
    ));

    c.push(finds(
        "blocks_allocated too low",
        q.with(|b| put32(b, BLOCKS_ALLOCATED, 2)),
        q.disk.clone(),
        q.bs,
        &[AllocatedMismatch],
        &[],
    ));
    c.push(finds(
        "blocks_allocated 0 with four blocks stored",
        q.with(|b| put32(b, BLOCKS_ALLOCATED, 0)),
        q.disk.clone(),
        q.bs,
        &[AllocatedMismatch],
        &[],
    ));
    c.push(finds(
        "blocks_allocated too high",
        q.with(|b| put32(b, BLOCKS_ALLOCATED, 6)),
        q.disk.clone(),
        q.bs,
        &[AllocatedMismatch, FileTooShort],
        &[],
    ));

    let mut fx = f.clone();
    fx.set_entry(1, BLOCK_FREE);
    let mut fx_disk = f.disk.clone();
    fx_disk[f.block(1)].fill(0);
    c.push(finds(
        "fixed image with a FREE entry",
        fx.bytes,
        fx_disk,
        f.bs,
        &[FixedNotAllocated, AllocatedMismatch, LeakedSlot],
        &[],
    ));

    // --- Truncation at each region.
    let cut = |g: &Good, len: usize| g.bytes[..len].to_vec();
    c.push(refused("empty file", vec![], "truncated", &["pre-header", "needs 72 bytes", "has 0"], CheckSays::Fails));
    c.push(refused(
        "truncated inside the pre-header text",
        cut(&q, 0x30),
        "truncated",
        &["pre-header", "has 48"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "truncated inside the version field",
        cut(&q, 0x46),
        "truncated",
        &["pre-header", "needs 72 bytes", "has 70"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "truncated inside the v1.1 header (qemu)",
        cut(&q, 0x100),
        "truncated",
        &["the VDI header needs 456 bytes", "has 256"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "truncated inside the v1.1+ LCHS (vbox)",
        cut(&v, 0x1D0),
        "truncated",
        &["the VDI header needs 472 bytes", "has 464"],
        CheckSays::Fails,
    ));
    c.push(refused(
        "truncated inside the v0.2 header",
        cut(&v0, 0x100),
        "truncated",
        &["the v0.2 header needs 420 bytes", "has 256"],
        CheckSays::Fails,
    ));
    // Entries 0..4 are readable: [slot 0, FREE, slot 1, slot 2], all past the end. Fewer
    // readable entries than blocks_allocated is no mismatch: the rest cannot be read.
    c.push(refused(
        "truncated inside the block map (qemu)",
        cut(&q, 0x210),
        "truncated",
        &["the block map needs 548 bytes", "has 528"],
        CheckSays::Findings(vec![MapTruncated, EntryPastEnd, EntryPastEnd, EntryPastEnd, FileTooShort]),
    ));
    c.push(refused(
        "truncated inside the block map (vbox)",
        cut(&v, (1 << 20) + 8),
        "truncated",
        &["the block map needs 1048600 bytes", "has 1048584"],
        CheckSays::Findings(vec![MapTruncated, EntryPastEnd, FileTooShort]),
    ));
    c.push(finds(
        "truncated between the map and the data (vbox)",
        cut(&v, (1 << 20) + 24 + 100),
        v.disk.clone(),
        v.bs,
        &[EntryPastEnd, EntryPastEnd, FileTooShort],
        &[1, 4],
    ));
    c.push(finds(
        "truncated at the start of the data area",
        cut(&q, 0x400),
        q.disk.clone(),
        q.bs,
        &[EntryPastEnd, EntryPastEnd, EntryPastEnd, EntryPastEnd, FileTooShort],
        &[0, 2, 3, 8],
    ));
    c.push(finds(
        "truncated in the middle of slot 1",
        cut(&q, 0x400 + 4096 + 2048),
        q.disk.clone(),
        q.bs,
        &[EntryPastEnd, EntryPastEnd, EntryPastEnd, FileTooShort],
        &[2, 3, 8],
    ));
    c.push(finds(
        "truncated one byte short of the last slot",
        cut(&q, qlen - 1),
        q.disk.clone(),
        q.bs,
        &[EntryPastEnd, FileTooShort],
        &[8],
    ));
    c.push(finds(
        "fixed image truncated mid-block",
        cut(&f, f.bytes.len() - 4096 - 100),
        f.disk.clone(),
        f.bs,
        &[EntryPastEnd, EntryPastEnd, FileTooShort],
        &[2, 3],
    ));
    c.push(finds(
        "vbox image truncated inside its last block",
        cut(&v, v.bytes.len() - 1000),
        v.disk.clone(),
        v.bs,
        &[EntryPastEnd, FileTooShort],
        &[4],
    ));

    // --- Trailing garbage.
    c.push(finds(
        "trailing garbage, less than a block",
        q.with(|b| b.extend_from_slice(&[0xCC; 1000])),
        q.disk.clone(),
        q.bs,
        &[TrailingBytes],
        &[],
    ));
    c.push(finds(
        "trailing garbage, three blocks",
        v.with(|b| b.extend_from_slice(&vec![0xCC; 3 * (64 << 10)])),
        v.disk.clone(),
        v.bs,
        &[TrailingBytes],
        &[],
    ));

    // --- Huge claims in small files.
    c.push(refused(
        "3 MiB file claiming 512 TiB",
        claims_512_tib(),
        "truncated",
        &["the block map needs 1074790400 bytes", "has 3145728"],
        CheckSays::Findings(vec![MapTruncated]),
    ));

    // --- Odd sizes.
    // disk_size 33492 reads as 33792 (rounded up to a sector, as QEMU does): the same disk.
    assert_eq!(q.disk.len(), 33_792);
    c.push(reads(
        "odd disk_size (not a multiple of 512)",
        q.with(|b| put64(b, DISK_SIZE, 33_492)),
        q.disk.clone(),
        q.bs,
    ));
    c.push(reads("disk_size 1", q.with(|b| put64(b, DISK_SIZE, 1)), q.disk[..512].to_vec(), q.bs));
    c.push(reads("disk_size 0", q.with(|b| put64(b, DISK_SIZE, 0)), vec![], q.bs));

    // --- v0.2 damage.
    c.push(refused(
        "v0.2 with block_size 1000",
        v0.with(|b| put32(b, V0_BLOCK_SIZE, 1000)),
        "invalid-field",
        &["block_size = 1000"],
        CheckSays::Fails,
    ));
    let mut v0_past = v0.clone();
    put32(&mut v0_past.bytes, 0x1A4, 7); // block 0 -> slot 7 (>= blocks_in_image, past the end)
    c.push(finds(
        "v0.2 entry past the end",
        v0_past.bytes,
        v0.disk.clone(),
        v0.bs,
        &[EntryOutOfRange, LeakedSlot],
        &[0],
    ));
    // Data of 0xFF: the slots read as FREE entries of the huge map.
    let v0ff = v02_with(Some(0xFF));
    c.push(refused(
        "v0.2 claiming the largest map",
        v0ff.with(|b| {
            put32(b, V0_BLOCKS_IN_IMAGE, 0x1FFF_FF80);
        }),
        "truncated",
        &["the block map needs 2147483556 bytes", "has 8628"],
        CheckSays::Findings(vec![MapTruncated, EntryPastEnd, EntryPastEnd, FileTooShort]),
    ));

    // --- Differencing image without its parent.
    let diff = q.with(|b| {
        put32(b, IMAGE_TYPE, 4);
        b[UUID_LINK..UUID_LINK + 16].copy_from_slice(&[0x42; 16]);
    });
    c.push(Case {
        name: "diff image without its parent",
        bytes: diff,
        expect: Expect::Opens {
            disk: q.disk.clone(),
            bs: q.bs,
            findings: vec![],
            past_end: vec![],
            needs_parent: vec![1, 4, 5, 6, 7],
        },
    });
    c
}

// ---------------------------------------------------------------------------------------
// Running a case.

fn sorted(mut k: Vec<FindingKind>) -> Vec<&'static str> {
    k.sort_by_key(|k| k.name());
    k.into_iter().map(|k| k.name()).collect()
}

/// Bound what open + check may read: the file once (header twice, map once).
fn assert_bounded(s: &Counting, what: &str) {
    let len = s.file_len();
    assert!(s.largest.get() <= len, "{what}: a single read of {} bytes from a {len}-byte file", s.largest.get());
    assert!(s.bytes.get() <= len + 2048, "{what}: read {} bytes in all from a {len}-byte file", s.bytes.get());
}

fn run(case: &Case) {
    let s = Counting::new(case.bytes.clone());
    let len = s.file_len();
    let opened = VdiImage::open(&s);
    assert!(s.largest.get() <= 0x200, "open reads only the header, read {}", s.largest.get());
    match &case.expect {
        Expect::Refused { kind, msg, check: says } => {
            let e = match opened {
                Ok(_) => panic!("opened, expected {kind} error"),
                Err(e) => e,
            };
            assert_eq!(e.kind(), *kind, "open error: {e}");
            let text = e.to_string();
            for m in msg {
                assert!(text.contains(m), "open error {text:?} lacks {m:?}");
            }
            s.reset();
            let r = check(&s, &mut NoMonitor);
            match says {
                CheckSays::Fails => {
                    let ce = r.expect_err("check should not open it either");
                    assert_eq!(ce.kind(), *kind, "check error: {ce}");
                }
                CheckSays::Findings(want) => {
                    let r = r.unwrap_or_else(|e| panic!("check failed: {e}"));
                    let got: Vec<_> = r.findings.iter().map(|f| f.kind).collect();
                    assert_eq!(sorted(got), sorted(want.clone()), "findings: {:#?}", r.findings);
                    assert_eq!(r.corruptions + r.leaks, want.len() as u64, "{r:?}");
                    // A layout error is reported in the first finding, naming the field.
                    if want.contains(&BadLayout) {
                        assert_eq!(r.findings[0].kind, BadLayout);
                        assert!(text.contains(&r.findings[0].message), "{} vs {text}", r.findings[0].message);
                        // And a lenient open refuses to write to it.
                        let mut img = VdiImage::open_with(
                            MemStorage::from_vec(case.bytes.clone()),
                            OpenOptions { lenient: true },
                        )
                        .unwrap();
                        let e = img.write_at(0, &[1]).unwrap_err();
                        assert_eq!(e.kind(), "unsupported", "{e}");
                    }
                }
            }
            assert_bounded(&s, "check");
        }
        Expect::Opens { disk, bs, findings, past_end, needs_parent } => {
            let mut img = opened.unwrap_or_else(|e| panic!("open failed: {e}"));
            assert_eq!(img.virtual_size(), disk.len() as u64, "virtual size");
            // Block by block.
            let nblocks = (disk.len() as u64).div_ceil(*bs);
            for b in 0..nblocks {
                let r = (b * bs) as usize..((b + 1) * bs).min(disk.len() as u64) as usize;
                let mut buf = vec![0xEE; r.len()];
                s.reset();
                let got = img.read_at(r.start as u64, &mut buf);
                assert!(s.largest.get() <= len, "read of block {b}: {} bytes at once", s.largest.get());
                if past_end.contains(&b) {
                    let e = got.expect_err(&format!("block {b} must not read"));
                    assert_eq!(e.kind(), "block-past-end", "block {b}: {e}");
                    assert!(
                        matches!(e, VdiError::BlockPastEnd { block, len: l, .. } if block == b && l == len),
                        "{e:?}"
                    );
                } else if needs_parent.contains(&b) {
                    let e = got.expect_err(&format!("block {b} must not read"));
                    assert_eq!(e.kind(), "needs-parent", "block {b}: {e}");
                    assert!(e.to_string().contains("42424242-4242-4242-4242-424242424242"), "{e}");
                } else {
                    got.unwrap_or_else(|e| panic!("read block {b}: {e}"));
                    assert!(buf[..] == disk[r], "block {b} reads wrong");
                }
            }
            // The whole disk, and a raw export: equal to the model, or the first bad block's error.
            let mut all = vec![0xEE; disk.len()];
            s.reset();
            let whole = img.read_at(0, &mut all);
            let mut sink = Vec::new();
            let exported = export_raw(&mut img, &mut sink, &mut NoMonitor);
            assert!(s.largest.get() <= len, "whole-disk read: {} bytes at once from {len}", s.largest.get());
            let first_bad = (0..nblocks).find(|b| past_end.contains(b) || needs_parent.contains(b));
            match first_bad {
                None => {
                    whole.unwrap_or_else(|e| panic!("read all: {e}"));
                    assert!(all == *disk, "whole disk reads wrong");
                    exported.unwrap_or_else(|e| panic!("export: {e}"));
                    assert!(sink == *disk, "export differs");
                }
                Some(b) => {
                    let want = if past_end.contains(&b) { "block-past-end" } else { "needs-parent" };
                    assert_eq!(whole.unwrap_err().kind(), want);
                    assert_eq!(exported.unwrap_err().kind(), want);
                }
            }
            s.reset();
            let r = check(&s, &mut NoMonitor).unwrap_or_else(|e| panic!("check failed: {e}"));
            let got: Vec<_> = r.findings.iter().map(|f| f.kind).collect();
            assert_eq!(sorted(got), sorted(findings.clone()), "findings: {:#?}", r.findings);
            assert_eq!(r.corruptions + r.leaks, findings.len() as u64, "{r:?}");
            assert_bounded(&s, "check");
        }
    }
}

#[test]
fn corrupted_image_table() {
    let cases = cases();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    // Collect every failing case (with the panic's place and message) rather than stop at the
    // first; an engine panic counts as a failure like any other.
    thread_local!(static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| LAST_PANIC.with(|p| *p.borrow_mut() = info.to_string())));
    let mut failed = Vec::new();
    for case in &cases {
        if catch_unwind(AssertUnwindSafe(|| run(case))).is_err() {
            failed.push(format!("{}: {}", case.name, LAST_PANIC.with(|p| p.borrow().clone())));
        }
    }
    std::panic::set_hook(prev);
    assert!(failed.is_empty(), "{} of {} cases failed:\n{}", failed.len(), cases.len(), failed.join("\n\n"));
}

// ---------------------------------------------------------------------------------------
// Beyond open / read / check: what writes and lenient opens do with damaged images.

/// A 3 MiB file claiming 512 TiB, opened leniently: reads inside the readable part of the map
/// work, reads beyond it fail as truncated, and nothing reads more than the file holds.
#[test]
fn huge_claim_opened_leniently_stays_bounded() {
    let s = Counting::new(claims_512_tib());
    let len = s.file_len();
    let mut img = VdiImage::open_with(&s, OpenOptions { lenient: true }).unwrap();
    assert_eq!(img.virtual_size(), 512 << 40);
    assert_eq!(img.layout_error(), None, "the layout itself is valid");
    let mut buf = vec![0xEE; 8192];
    img.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    let e = img.read_at((511 << 40) + 12345, &mut buf).unwrap_err();
    assert_eq!(e.kind(), "truncated", "{e}");
    assert!(e.to_string().contains("the block map needs 1074790400 bytes"), "{e}");
    let e = img.extents(|_| Ok(())).unwrap_err();
    assert_eq!(e.kind(), "truncated", "{e}");
    struct Discard(u64);
    impl RawSink for Discard {
        fn data(&mut self, _: u64, buf: &[u8]) -> vdi::Result<()> {
            self.0 += buf.len() as u64;
            Ok(())
        }
        fn zeros(&mut self, _: u64, _: u64) -> vdi::Result<()> {
            Ok(())
        }
    }
    let e = export_raw(&mut img, &mut Discard(0), &mut NoMonitor).unwrap_err();
    assert_eq!(e.kind(), "truncated", "{e}");
    assert!(s.largest.get() <= len, "largest read {}", s.largest.get());
    assert!(s.bytes.get() <= 4 * len, "read {} bytes from a {len}-byte file", s.bytes.get());
}

/// blocks_allocated lower than the slots in use: a new block goes after the last slot in use,
/// never over existing data.
#[test]
fn write_after_blocks_allocated_too_low_keeps_data() {
    let q = qemu();
    for ba in [0u32, 2] {
        let s = MemStorage::from_vec(q.with(|b| put32(b, BLOCKS_ALLOCATED, ba)));
        let mut img = VdiImage::open(s).unwrap();
        let mut disk = q.disk.clone();
        let data = pattern(0xC0, 4096);
        img.write_at(6 * 4096, &data).unwrap();
        disk[6 * 4096..7 * 4096].copy_from_slice(&data);
        assert_eq!(img.entry(6).unwrap(), vdi::Entry::Data(4), "after the last slot in use");
        let mut img = VdiImage::open(img.into_storage()).unwrap();
        let mut all = vec![0; disk.len()];
        img.read_at(0, &mut all).unwrap();
        assert!(all == disk, "blocks_allocated {ba}: data overwritten");
    }
}

/// A header that undercounts (blocks_allocated 0, three blocks in use): the first new block
/// goes after the last slot in use and the count stored with it is the real one (4), not the
/// old count plus one, so the image checks clean and the next QEMU or VirtualBox writer
/// appends after it. Issue 14, part 2.
#[test]
fn write_into_an_undercounting_header_stores_the_real_count() {
    let g = build(
        Layout::Qemu,
        false,
        4096,
        8 * 4096,
        &[(0, pattern(0x61, 4096)), (3 * 4096 + 5, pattern(0x62, 100)), (6 * 4096, pattern(0x63, 4096))],
    );
    assert_eq!((g.offset_bmap(), g.offset_data(), g.bytes.len()), (0x200, 0x400, 0x400 + 3 * 4096));
    assert_eq!(get32(&g.bytes, BLOCKS_ALLOCATED), 3);
    let bytes = g.with(|b| put32(b, BLOCKS_ALLOCATED, 0));
    let before = check(MemStorage::from_vec(bytes.clone()), &mut NoMonitor).unwrap();
    assert!(before.findings.iter().any(|f| f.kind == FindingKind::AllocatedMismatch), "{:?}", before.findings);

    let mut img = VdiImage::open(MemStorage::from_vec(bytes)).unwrap();
    let data = pattern(0x64, 50);
    img.write_at(4 * 4096 + 10, &data).unwrap();
    assert_eq!(img.entry(4).unwrap(), vdi::Entry::Data(3), "after the last slot in use");
    assert_eq!(img.header().blocks_allocated, 4);
    // A second new block in the same session counts on from there.
    img.write_at(7 * 4096, &[9]).unwrap();
    assert_eq!(img.entry(7).unwrap(), vdi::Entry::Data(4));
    assert_eq!(img.header().blocks_allocated, 5);

    let s = img.into_storage();
    let mut img = VdiImage::open(s.clone()).unwrap();
    assert_eq!(img.header().blocks_allocated, 5, "the count on disk");
    let mut disk = g.disk.clone();
    disk[4 * 4096 + 10..][..50].copy_from_slice(&data);
    disk[7 * 4096] = 9;
    let mut all = vec![0; disk.len()];
    img.read_at(0, &mut all).unwrap();
    assert!(all == disk, "data overwritten");
    let r = check(s, &mut NoMonitor).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
    assert_eq!(r.allocated_blocks, 5);

    // One write only: reopened, the count is 4.
    let bytes = g.with(|b| put32(b, BLOCKS_ALLOCATED, 0));
    let mut img = VdiImage::open(MemStorage::from_vec(bytes)).unwrap();
    img.write_at(4 * 4096, &[1]).unwrap();
    let s = img.into_storage();
    assert_eq!(VdiImage::open(s.clone()).unwrap().header().blocks_allocated, 4);
    let r = check(s, &mut NoMonitor).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
}

/// Trailing garbage is overwritten by the next new block, after which the image is clean.
#[test]
fn write_after_trailing_garbage_is_clean() {
    let q = qemu();
    let mut img = VdiImage::open(MemStorage::from_vec(q.with(|b| b.extend_from_slice(&[0xCC; 1000])))).unwrap();
    img.write_at(5 * 4096 + 1, &[7]).unwrap();
    assert_eq!(img.entry(5).unwrap(), vdi::Entry::Data(4));
    let mut disk = q.disk.clone();
    disk[5 * 4096 + 1] = 7;
    let mut all = vec![0; disk.len()];
    img.read_at(0, &mut all).unwrap();
    assert!(all == disk);
    let r = check(img.into_storage(), &mut NoMonitor).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
}

/// Images that open but must not be written say why.
#[test]
fn writes_refused_where_they_must_be() {
    let mut img = VdiImage::open(MemStorage::from_vec(v02().bytes)).unwrap();
    let e = img.write_at(0, &[1]).unwrap_err();
    assert_eq!(e.kind(), "unsupported");
    assert!(e.to_string().contains("v0.2"), "{e}");

    let q = qemu();
    let diff = q.with(|b| {
        put32(b, IMAGE_TYPE, 4);
        b[UUID_LINK..UUID_LINK + 16].copy_from_slice(&[0x42; 16]);
    });
    let mut img = VdiImage::open(MemStorage::from_vec(diff)).unwrap();
    let e = img.write_at(0, &[1]).unwrap_err();
    assert_eq!(e.kind(), "unsupported");
    assert!(e.to_string().contains("differencing"), "{e}");

    // A block whose data lies past the end is not written (nor silently moved).
    let mut past = q.clone();
    past.set_entry(6, 5);
    let mut img = VdiImage::open(MemStorage::from_vec(past.bytes.clone())).unwrap();
    let e = img.write_at(6 * 4096 + 10, &[1, 2, 3]).unwrap_err();
    assert_eq!(e.kind(), "block-past-end", "{e}");
    assert_eq!(img.into_storage().into_vec(), past.bytes, "nothing written");

    // Slots past blocks_in_image: a count over it refuses every write (even into a block
    // already stored); an entry past it with the count below still never lets a new block
    // land on it (the next slot would be past the map's range).
    let over = q.with(|b| put32(b, BLOCKS_ALLOCATED, 10));
    let mut img = VdiImage::open(MemStorage::from_vec(over.clone())).unwrap();
    for at in [0, 4096] {
        let e = img.write_at(at, &[1]).unwrap_err();
        assert!(e.kind() == "unsupported" && e.to_string().contains("repair or compact"), "{e}");
    }
    assert_eq!(img.into_storage().into_vec(), over, "nothing written");
    let mut beyond = q.clone();
    beyond.set_entry(6, 9);
    beyond.bytes.resize(0x400 + 10 * 4096, 0x77);
    let mut img = VdiImage::open(MemStorage::from_vec(beyond.bytes.clone())).unwrap();
    let e = img.write_at(4096, &[1]).unwrap_err();
    assert!(e.kind() == "unsupported" && e.to_string().contains("repair the image first"), "{e}");
    assert_eq!(img.into_storage().into_vec(), beyond.bytes, "nothing written");
}

/// A block_extra image is written like any other: data after each slot's prefix.
#[test]
fn block_extra_image_writes_and_checks_clean() {
    let g = with_block_extra();
    let mut img = VdiImage::open(MemStorage::from_vec(g.bytes.clone())).unwrap();
    let mut disk = g.disk.clone();
    let writes: [(u64, Vec<u8>); 3] =
        [(4096 + 100, pattern(0xD0, 50)), (2 * 4096, pattern(0xD1, 4096)), (3 * 4096 - 5, pattern(0xD2, 10))];
    for (at, data) in &writes {
        img.write_at(*at, data).unwrap();
        disk[*at as usize..*at as usize + data.len()].copy_from_slice(data);
    }
    let len = img.storage().len().unwrap();
    assert_eq!(len, 0x400 + 4 * (4096 + 512));
    let mut img = VdiImage::open(img.into_storage()).unwrap();
    let mut all = vec![0; disk.len()];
    img.read_at(0, &mut all).unwrap();
    assert!(all == disk);
    let r = check(img.into_storage(), &mut NoMonitor).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
}

/// A write that fails part-way leaves no trace in what the image reads: blocks it was about
/// to allocate still read as before (not as data past the end of the file), and the next
/// successful write does not record them.
#[test]
fn failed_write_leaves_reads_unchanged() {
    // Damage: block 6 -> slot 5, past the end. A write over blocks 5..=6 allocates block 5
    // first, then fails on block 6.
    let q = qemu();
    let mut past = q.clone();
    past.set_entry(6, 5);
    let mut img = VdiImage::open(MemStorage::from_vec(past.bytes.clone())).unwrap();
    let e = img.write_at(5 * 4096 + 4000, &[9; 200]).unwrap_err();
    assert_eq!(e.kind(), "block-past-end", "{e}");
    assert_eq!(img.header().blocks_allocated, 4);
    assert_eq!(img.entry(5).unwrap(), vdi::Entry::Free);
    let mut b5 = vec![0xEE; 4096];
    img.read_at(5 * 4096, &mut b5).unwrap();
    assert!(all_zero(&b5));
    img.write_at(7 * 4096, &[1]).unwrap();
    assert_eq!(img.entry(5).unwrap(), vdi::Entry::Free);
    assert_eq!(img.entry(7).unwrap(), vdi::Entry::Data(4));
    assert_eq!(img.header().blocks_allocated, 5);
}

/// Storage whose `n`-th write (counting from 0) fails.
struct Flaky {
    inner: MemStorage,
    writes: usize,
    fail_at: Cell<Option<usize>>,
}

impl ReadAt for Flaky {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.inner.read_at(offset, buf)
    }
    fn len(&self) -> Result<u64, StorageError> {
        self.inner.len()
    }
}

impl vdi::Storage for Flaky {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        let n = self.writes;
        self.writes += 1;
        if self.fail_at.get() == Some(n) {
            return Err(StorageError::new("quota exceeded"));
        }
        self.inner.write_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        self.inner.set_len(len)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[test]
fn write_failing_at_each_storage_call_is_torn_at_worst() {
    let q = qemu();
    // The last 96 bytes of allocated block 3, new blocks 4..=6 (whole) and 7 (7 bytes): three
    // data writes (block 3; blocks 4..=6 in one; block 7 padded), one map run, the header.
    let (at, data) = (3 * 4096 + 4000, pattern(0xE0, 96 + 3 * 4096 + 7));
    const CALLS: usize = 5;
    let mut new_disk = q.disk.clone();
    new_disk[at..at + data.len()].copy_from_slice(&data);
    for fail_at in 0..=CALLS {
        let mut img = VdiImage::open(Flaky {
            inner: MemStorage::from_vec(q.bytes.clone()),
            writes: 0,
            fail_at: Cell::new(Some(fail_at)),
        })
        .unwrap();
        let res = img.write_at(at as u64, &data);
        let calls = img.storage().writes;
        if fail_at == CALLS {
            res.unwrap();
            assert_eq!(calls, CALLS);
            continue;
        }
        assert_eq!(res.unwrap_err().kind(), "io");
        // Each block reads either as before or as written.
        let check_blocks = |img: &mut VdiImage<Flaky>, when: &str| {
            for b in 3..=7 {
                let r = q.block(b);
                let mut buf = vec![0xEE; r.len()];
                img.read_at(r.start as u64, &mut buf)
                    .unwrap_or_else(|e| panic!("fail_at {fail_at} {when}: block {b}: {e}"));
                assert!(
                    buf[..] == q.disk[r.clone()] || buf[..] == new_disk[r.clone()],
                    "fail_at {fail_at} {when}: block {b} is neither old nor new"
                );
            }
        };
        check_blocks(&mut img, "after the failure");
        // The storage recovers; a later write to another block succeeds.
        img.storage().fail_at.set(None);
        img.write_at(4096 + 7, &[5; 10]).unwrap();
        check_blocks(&mut img, "after the next write");
        let mut img = VdiImage::open(img.into_storage()).unwrap();
        check_blocks(&mut img, "after reopening");
        // At worst space is wasted: no entry points at a slot that is missing or shared, and
        // blocks_allocated never falls below the slots in use (peers append at that slot).
        let ba = img.header().blocks_allocated as u64;
        let r = check(img.into_storage().inner, &mut NoMonitor).unwrap();
        for f in &r.findings {
            assert!(matches!(f.kind, LeakedSlot | TrailingBytes | AllocatedMismatch), "fail_at {fail_at}: {f:?}");
        }
        assert!(ba >= r.allocated_blocks, "fail_at {fail_at}: blocks_allocated {ba} < {}", r.allocated_blocks);
        assert_eq!(r.image_end_offset, 0x400 + ba * 4096, "fail_at {fail_at}: a slot in use past blocks_allocated");
    }
}

/// Storage synthesising a huge image without holding it: the first bytes from `head`, the
/// rest computed from the offset. Records the largest read.
struct Synthetic {
    head: Vec<u8>,
    len: u64,
    largest: Cell<u64>,
}

fn synthetic_byte(host: u64) -> u8 {
    (host / 4096) as u8 ^ (host % 251) as u8
}

impl ReadAt for Synthetic {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.largest.set(self.largest.get().max(buf.len() as u64));
        if offset + buf.len() as u64 > self.len {
            return Err(StorageError::past_end(offset, buf.len() as u64, self.len));
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = self.head.get(at as usize).copied().unwrap_or_else(|| synthetic_byte(at));
        }
        Ok(())
    }
    fn len(&self) -> Result<u64, StorageError> {
        Ok(self.len)
    }
}

/// 128 MiB blocks (the largest allowed): a raw export reads and hands out at most
/// `transfer::CHUNK` bytes at a time, so its memory does not follow the header's block size.
#[test]
fn export_of_128_mib_blocks_reads_in_bounded_pieces() {
    const BS: u64 = 128 << 20;
    let mut head = build(Layout::Qemu, false, BS as u32, 3 * BS, &[]).bytes;
    assert_eq!(head.len(), 0x400);
    put32(&mut head, 0x200, 1); // block 0 -> slot 1
    put32(&mut head, 0x208, 0); // block 2 -> slot 0
    put32(&mut head, BLOCKS_ALLOCATED, 2);
    let s = Synthetic { head, len: 0x400 + 2 * BS, largest: Cell::new(0) };
    let mut img = VdiImage::open(&s).unwrap();
    struct Verify {
        largest: u64,
        checked: u64,
    }
    impl RawSink for Verify {
        fn data(&mut self, offset: u64, buf: &[u8]) -> vdi::Result<()> {
            self.largest = self.largest.max(buf.len() as u64);
            let (block, slot) = match offset / BS {
                0 => (0, 1),
                2 => (2, 0),
                b => panic!("data for block {b}"),
            };
            for i in (0..buf.len()).step_by(4093) {
                let v = offset + i as u64;
                let host = 0x400 + slot * BS + (v - block * BS);
                assert_eq!(buf[i], synthetic_byte(host), "virtual {v}");
                self.checked += 1;
            }
            Ok(())
        }
        fn zeros(&mut self, offset: u64, len: u64) -> vdi::Result<()> {
            assert_eq!((offset, len), (BS, BS));
            Ok(())
        }
    }
    let mut sink = Verify { largest: 0, checked: 0 };
    let st = export_raw(&mut img, &mut sink, &mut NoMonitor).unwrap();
    assert_eq!((st.data_bytes, st.zero_bytes), (2 * BS, BS));
    assert!(sink.checked > 60_000);
    let chunk = vdi::transfer::CHUNK as u64;
    assert!(sink.largest <= chunk, "handed out {} bytes at once", sink.largest);
    assert!(s.largest.get() <= chunk, "read {} bytes at once", s.largest.get());
}

// ---------------------------------------------------------------------------------------
// Random damage: whatever bytes of the header and map are changed, nothing panics and no
// read is larger than the file.

mod random_damage {
    use super::*;
    use proptest::prelude::*;

    fn base(i: u8) -> Vec<u8> {
        match i % 5 {
            0 => qemu().bytes,
            1 => vbox().bytes,
            2 => fixed().bytes,
            3 => v02().bytes,
            _ => with_block_extra().bytes,
        }
    }

    /// Offsets worth damaging: the header fields and the start of each map.
    fn offset() -> impl Strategy<Value = usize> {
        prop_oneof![
            3 => 0x40usize..0x1D8,
            1 => 0x1A4usize..0x1C0,
            1 => 0x200usize..0x230,
            1 => (1usize << 20)..(1 << 20) + 24,
        ]
    }

    fn damage() -> impl Strategy<Value = (u8, Vec<(usize, u8)>, Option<usize>)> {
        (
            any::<u8>(),
            proptest::collection::vec((offset(), any::<u8>()), 1..6),
            proptest::option::weighted(0.2, 0usize..(3 << 20)),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn no_panic_and_bounded_reads((which, edits, cut) in damage()) {
            let mut bytes = base(which);
            for (at, v) in edits {
                if at < bytes.len() {
                    bytes[at] = v;
                }
            }
            if let Some(c) = cut {
                bytes.truncate(c);
            }
            let s = Counting::new(bytes);
            let len = s.file_len();
            if let Ok(mut img) = VdiImage::open(&s) {
                let size = img.virtual_size();
                let mut buf = vec![0u8; size.min(64 << 10) as usize];
                let _ = img.read_at(0, &mut buf);
                let _ = img.read_at(size - buf.len() as u64, &mut buf);
                let _ = img.extents(|_| Ok(()));
            }
            if let Ok(mut img) = VdiImage::open_with(&s, OpenOptions { lenient: true }) {
                let size = img.virtual_size();
                let mut buf = vec![0u8; size.min(4096) as usize];
                let _ = img.read_at(size / 2 - size / 2 % 512, &mut buf[..size.min(512) as usize]);
                let _ = img.read_at(size - buf.len() as u64, &mut buf);
            }
            prop_assert!(s.largest.get() <= len, "a read of {} bytes from a {}-byte file", s.largest.get(), len);
            s.reset();
            let _ = check(&s, &mut NoMonitor);
            prop_assert!(s.largest.get() <= len, "check: a read of {} bytes from {}", s.largest.get(), len);
            prop_assert!(s.bytes.get() <= len + 2048, "check read {} bytes from {}", s.bytes.get(), len);
        }
    }
}
