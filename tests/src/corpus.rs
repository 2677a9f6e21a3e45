//! The damaged-image corpus: good images made by `qemu-img` and by our engine, each damaged
//! in one way, with the exact verdict every reader must reach, as data.
//!
//! [`build`] makes the cases in memory; [`write`] writes them into a directory with a
//! `manifest.json` (the browser tests drop each file on the page and compare). A case's
//! verdict is one of: the image opens and reads correctly (check clean); it opens, check
//! reports the listed findings and the listed blocks fail to read (`block-past-end`, or
//! `needs-parent` in a diff image) rather than reading invented zeros; or open fails with the
//! named error kind and message. Chains (several files) sit in `chains/NAME/`.
//!
//! The expectations are written here by hand from the format (VDI-FORMAT.md) and the
//! damage, never computed by the engine.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use vdi::{create, CreateOptions, Layout, MemStorage, NoMonitor, Uuid};

// Header field offsets (v1.1 / v1.1+), as in VDI-FORMAT.md.
const SIGNATURE: usize = 0x40;
const VERSION: usize = 0x44;
const HEADER_SIZE: usize = 0x48;
const IMAGE_TYPE: usize = 0x4C;
const IMAGE_FLAGS: usize = 0x50;
const OFFSET_BMAP: usize = 0x154;
const OFFSET_DATA: usize = 0x158;
const SECTOR_SIZE: usize = 0x168;
const DISK_SIZE: usize = 0x170;
const BLOCK_SIZE: usize = 0x178;
const BLOCK_EXTRA: usize = 0x17C;
const BLOCKS_IN_IMAGE: usize = 0x180;
const BLOCKS_ALLOCATED: usize = 0x184;
const UUID_CREATE: usize = 0x188;
const UUID_MODIFY: usize = 0x198;
const UUID_LINK: usize = 0x1A8;
const LCHS_SECTOR_SIZE: usize = 0x1D4;
const V0_BLOCKS_IN_IMAGE: usize = 0x16C;

const MIB: u64 = 1 << 20;

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// What `check` must say about a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckVerdict {
    /// It cannot open the image either: the same error as open (`vdi check` exits 1).
    Fails,
    /// These findings (a multiset of kinds, sorted) and this `qemu-img check`-style exit code.
    Findings { exit: i32, kinds: Vec<&'static str> },
}

impl CheckVerdict {
    fn clean() -> Self {
        CheckVerdict::Findings { exit: 0, kinds: vec![] }
    }
    fn found(exit: i32, kinds: &[&'static str]) -> Self {
        let mut kinds = kinds.to_vec();
        kinds.sort_unstable();
        CheckVerdict::Findings { exit, kinds }
    }
}

/// The verdict on one file.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Open fails with error `kind`, its message holding every substring of `message`.
    Fails { kind: &'static str, message: Vec<&'static str>, check: CheckVerdict },
    /// Open succeeds; the disk reads as `disk` except the blocks in `past_end` (which fail
    /// with `block-past-end`) and `needs_parent` (`needs-parent`).
    Opens { disk: Vec<u8>, block_size: u64, check: CheckVerdict, past_end: Vec<u64>, needs_parent: Vec<u64> },
}

impl Verdict {
    /// "fails", "opens" or "opens-with-findings".
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Fails { .. } => "fails",
            Verdict::Opens { check, past_end, needs_parent, .. } => {
                if *check == CheckVerdict::clean() && past_end.is_empty() && needs_parent.is_empty() {
                    "opens"
                } else {
                    "opens-with-findings"
                }
            }
        }
    }
    /// The check verdict.
    pub fn check(&self) -> &CheckVerdict {
        match self {
            Verdict::Fails { check, .. } | Verdict::Opens { check, .. } => check,
        }
    }
}

/// One damaged (or good) file.
#[derive(Debug, Clone)]
pub struct Case {
    /// File name in the corpus directory.
    pub file: String,
    /// Which good image it was made from.
    pub base: &'static str,
    /// Who made the good image: "qemu-img", "engine" or "by hand".
    pub made_by: &'static str,
    /// What was damaged.
    pub damage: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The verdict.
    pub verdict: Verdict,
}

/// A set of files forming (or failing to form) a differencing chain.
#[derive(Debug, Clone)]
pub struct ChainCase {
    /// Directory name under `chains/`.
    pub name: &'static str,
    /// What is wrong with it.
    pub damage: String,
    /// The files (name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
    /// The image a user opens (the top).
    pub top: String,
    /// `Chain::resolve(top, the other files)`: the disk, or an error kind and substrings.
    pub resolve: Result<Vec<u8>, (&'static str, Vec<&'static str>)>,
    /// `Chain::from_set(all files)`: the same.
    pub from_set: Result<Vec<u8>, (&'static str, Vec<&'static str>)>,
}

/// Every case.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Single files.
    pub cases: Vec<Case>,
    /// Chains.
    pub chains: Vec<ChainCase>,
}

// ---------------------------------------------------------------------------------------
// Good images.

/// A good image: its bytes and the virtual disk it holds.
#[derive(Clone)]
struct Good {
    name: &'static str,
    made_by: &'static str,
    bytes: Vec<u8>,
    disk: Vec<u8>,
    bs: u64,
}

impl Good {
    fn v0(&self) -> bool {
        get32(&self.bytes, VERSION) == 2
    }
    fn bmap(&self) -> usize {
        if self.v0() {
            0x1A4 // v0.2 has no offsets
        } else {
            get32(&self.bytes, OFFSET_BMAP) as usize
        }
    }
    fn data(&self) -> usize {
        if self.v0() {
            0x1A4 + 4 * get32(&self.bytes, V0_BLOCKS_IN_IMAGE) as usize
        } else {
            get32(&self.bytes, OFFSET_DATA) as usize
        }
    }
    fn entry(&self, b: usize) -> u32 {
        get32(&self.bytes, self.bmap() + 4 * b)
    }
    fn with(&self, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = self.bytes.clone();
        f(&mut b);
        b
    }
    fn with_entry(&self, block: usize, v: u32) -> Vec<u8> {
        let at = self.bmap() + 4 * block;
        self.with(|b| put32(b, at, v))
    }
    fn cut(&self, len: usize) -> Vec<u8> {
        self.bytes[..len].to_vec()
    }
    fn block(&self, b: u64) -> std::ops::Range<usize> {
        (b * self.bs) as usize..(((b + 1) * self.bs) as usize).min(self.disk.len())
    }
    /// The disk with block `b` reading what slot `slot` holds.
    fn disk_with_block_from_slot(&self, b: u64, slot: usize) -> Vec<u8> {
        let mut d = self.disk.clone();
        let r = self.block(b);
        let at = self.data() + slot * self.bs as usize;
        let n = r.len();
        d[r].copy_from_slice(&self.bytes[at..at + n]);
        d
    }
    fn disk_with_zero_block(&self, b: u64) -> Vec<u8> {
        let mut d = self.disk.clone();
        let r = self.block(b);
        d[r].fill(0);
        d
    }
}

/// Deterministic non-zero test data.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    crate::pattern(seed, len).into_iter().map(|b| b | 1).collect()
}

fn qemu_img_ok(args: &[&str]) {
    let o = Command::new("qemu-img").args(args).output().expect("qemu-img is needed to build the corpus");
    assert!(o.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// qemu-img, dynamic: a 3 MiB + 1536-byte disk (4 blocks of 1 MiB, the last one partial)
/// with data in block 0 (its first 100 KiB) and block 3 (all of it). `qemu-img convert`
/// stores block 0 in slot 0 and block 3 in slot 1: map [0, FREE, FREE, 1], bmap at 0x200,
/// data at 0x400.
fn qemu_dynamic(work: &Path) -> Good {
    let mut disk = vec![0u8; (3 * MIB + 1536) as usize];
    disk[..100 << 10].copy_from_slice(&pattern(1, 100 << 10));
    let n = disk.len();
    disk[3 * MIB as usize..].copy_from_slice(&pattern(2, n - 3 * MIB as usize));
    let raw = work.join("qemu-dynamic.raw");
    let img = work.join("qemu-dynamic.vdi");
    std::fs::write(&raw, &disk).expect("write raw");
    qemu_img_ok(&["convert", "-f", "raw", "-O", "vdi", raw.to_str().unwrap(), img.to_str().unwrap()]);
    let g = Good { name: "qemu-dynamic", made_by: "qemu-img", bytes: std::fs::read(&img).unwrap(), disk, bs: MIB };
    assert_eq!((g.bmap(), g.data(), g.bytes.len()), (0x200, 0x400, 0x400 + 2 * MIB as usize), "qemu-img's layout");
    assert_eq!((0..4).map(|b| g.entry(b)).collect::<Vec<_>>(), [0, !0, !0, 1], "qemu-img's map");
    assert_eq!(get32(&g.bytes, HEADER_SIZE), 0x180);
    g
}

/// qemu-img, static (fixed): a 2 MiB disk with 8 KiB of data in block 1; map [0, 1].
fn qemu_static(work: &Path) -> Good {
    let mut disk = vec![0u8; 2 * MIB as usize];
    let at = (MIB + 4096) as usize;
    disk[at..at + 8192].copy_from_slice(&pattern(3, 8192));
    let raw = work.join("qemu-static.raw");
    let img = work.join("qemu-static.vdi");
    std::fs::write(&raw, &disk).expect("write raw");
    qemu_img_ok(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vdi",
        "-o",
        "static=on",
        raw.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let g = Good { name: "qemu-static", made_by: "qemu-img", bytes: std::fs::read(&img).unwrap(), disk, bs: MIB };
    assert_eq!(get32(&g.bytes, IMAGE_TYPE), 2, "static");
    assert_eq!((g.bmap(), g.data(), g.bytes.len()), (0x200, 0x400, 0x400 + 2 * MIB as usize));
    assert_eq!((g.entry(0), g.entry(1)), (0, 1));
    g
}

/// An image built by the engine, with a model of its disk.
fn engine(
    name: &'static str,
    layout: Layout,
    fixed: bool,
    bs: u32,
    size: u64,
    id: u128,
    writes: &[(u64, Vec<u8>)],
) -> Good {
    let mut o = CreateOptions::new(size, Uuid::from_u128(id), Uuid::from_u128(id + 1));
    o.layout = layout;
    o.fixed = fixed;
    o.block_size = bs;
    let mut img = create(MemStorage::new(), &o, &mut NoMonitor).expect("create");
    let mut disk = vec![0u8; img.virtual_size() as usize];
    for (at, d) in writes {
        img.write_at(*at, d).expect("write");
        disk[*at as usize..*at as usize + d.len()].copy_from_slice(d);
    }
    Good { name, made_by: "engine", bytes: img.into_storage().into_vec(), disk, bs: bs as u64 }
}

/// Engine, QEMU layout, 4 KiB blocks, 9 blocks (the last 1 KiB): map
/// [0, FREE, 1, 2, FREE, FREE, FREE, FREE, 3] (block 5 was written with zeros: stays FREE).
fn engine_qemu() -> Good {
    let size = 8 * 4096 + 1024;
    let g = engine(
        "engine-qemu-4k",
        Layout::Qemu,
        false,
        4096,
        size,
        0x1111,
        &[
            (100, pattern(0x10, 300)),
            (5 * 4096, vec![0; 4096]),
            (2 * 4096 + 4000, pattern(0x20, 200)),
            (size - 10, pattern(0x30, 10)),
        ],
    );
    assert_eq!((g.bmap(), g.data(), g.bytes.len()), (0x200, 0x400, 0x400 + 4 * 4096));
    assert_eq!((0..9).map(|b| g.entry(b)).collect::<Vec<_>>(), [0, !0, 1, 2, !0, !0, !0, !0, 3]);
    g
}

/// Engine, VirtualBox layout, 64 KiB blocks, 6 blocks: bmap at 1 MiB, data at 2 MiB; block 1
/// (whole) in slot 0, block 4 (partly written) in slot 1.
fn engine_vbox() -> Good {
    let bs = 64u64 << 10;
    let g = engine(
        "engine-vbox-64k",
        Layout::Vbox,
        false,
        bs as u32,
        6 * bs,
        0x2222,
        &[(bs, pattern(0x40, bs as usize)), (4 * bs + 12345, pattern(0x50, 777))],
    );
    assert_eq!((g.bmap(), g.data(), g.bytes.len()), (1 << 20, 2 << 20, (2 << 20) + 2 * bs as usize));
    g
}

/// Engine, fixed, QEMU layout, 4 blocks of 4 KiB, data in blocks 1 and 3.
fn engine_fixed() -> Good {
    engine(
        "engine-fixed-4k",
        Layout::Qemu,
        true,
        4096,
        4 * 4096,
        0x3333,
        &[(4096 + 5, pattern(0x60, 100)), (3 * 4096, pattern(0x70, 4096))],
    )
}

/// By hand: a v0.2 image (no offsets: map at 0x1A4, data right after it), 4 blocks of 4 KiB,
/// map [1, FREE, 0, ZERO].
fn v02() -> Good {
    let bs = 4096usize;
    let mut b = vec![0u8; 0x1A4];
    b[..34].copy_from_slice(b"<<< Sun VirtualBox Disk Image >>>\n"); // text
    b[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]); // signature
    b[0x44..0x48].copy_from_slice(&[0x02, 0x00, 0x00, 0x00]); // version 0.2
    b[0x48..0x4C].copy_from_slice(&[0x01, 0x00, 0x00, 0x00]); // image_type 1
    b[0x15C..0x160].copy_from_slice(&[0x00, 0x02, 0x00, 0x00]); // legacy sector_size 512
    b[0x160..0x168].copy_from_slice(&[0x00, 0x40, 0, 0, 0, 0, 0, 0]); // disk_size 16384
    b[0x168..0x16C].copy_from_slice(&[0x00, 0x10, 0x00, 0x00]); // block_size 4096
    b[0x16C..0x170].copy_from_slice(&[0x04, 0x00, 0x00, 0x00]); // blocks_in_image 4
    b[0x170..0x174].copy_from_slice(&[0x02, 0x00, 0x00, 0x00]); // blocks_allocated 2
    b[0x174..0x184].copy_from_slice(&[0xA5; 16]); // uuid_create
    b[0x184..0x194].copy_from_slice(&[0x5A; 16]); // uuid_modify
    for e in [1u32, !0, 0, !1] {
        b.extend_from_slice(&e.to_le_bytes()); // map
    }
    let (s0, s1) = (pattern(0x80, bs), pattern(0x90, bs));
    b.extend_from_slice(&s0);
    b.extend_from_slice(&s1);
    let mut disk = vec![0u8; 4 * bs];
    disk[..bs].copy_from_slice(&s1);
    disk[2 * bs..3 * bs].copy_from_slice(&s0);
    Good { name: "v0.2-by-hand", made_by: "by hand", bytes: b, disk, bs: bs as u64 }
}

// ---------------------------------------------------------------------------------------
// The cases.

struct Cases(Vec<Case>);

impl Cases {
    #[allow(clippy::too_many_arguments)]
    fn fails(
        &mut self,
        g: &Good,
        file: &str,
        damage: &str,
        bytes: Vec<u8>,
        kind: &'static str,
        message: &[&'static str],
        check: CheckVerdict,
    ) {
        self.push(g, file, damage, bytes, Verdict::Fails { kind, message: message.to_vec(), check });
    }
    fn reads(&mut self, g: &Good, file: &str, damage: &str, bytes: Vec<u8>, disk: Vec<u8>) {
        self.finds(g, file, damage, bytes, disk, CheckVerdict::clean(), &[]);
    }
    #[allow(clippy::too_many_arguments)]
    fn finds(
        &mut self,
        g: &Good,
        file: &str,
        damage: &str,
        bytes: Vec<u8>,
        disk: Vec<u8>,
        check: CheckVerdict,
        past_end: &[u64],
    ) {
        let v = Verdict::Opens { disk, block_size: g.bs, check, past_end: past_end.to_vec(), needs_parent: vec![] };
        self.push(g, file, damage, bytes, v);
    }
    fn push(&mut self, g: &Good, file: &str, damage: &str, bytes: Vec<u8>, verdict: Verdict) {
        assert!(!self.0.iter().any(|c| c.file == file), "two cases named {file}");
        self.0.push(Case {
            file: format!("{file}.vdi"),
            base: g.name,
            made_by: g.made_by,
            damage: damage.to_string(),
            bytes,
            verdict,
        });
    }
}

const EPE: &str = "entry-past-end";
const EOR: &str = "entry-out-of-range";
const PAST: &str = "slot-past-blocks";
const DUP: &str = "duplicate-entry";
const MISMATCH: &str = "allocated-mismatch";
const LEAK: &str = "leaked-slot";
const SHORT: &str = "file-too-short";
const TRAIL: &str = "trailing-bytes";
const LAYOUT: &str = "bad-layout";
const MAPCUT: &str = "map-truncated";
const FIXED_FREE: &str = "fixed-not-allocated";

fn found(exit: i32, kinds: &[&'static str]) -> CheckVerdict {
    CheckVerdict::found(exit, kinds)
}

/// Build every case. `work` is a scratch directory for qemu-img's files.
pub fn build(work: &Path) -> Corpus {
    let q = qemu_dynamic(work);
    let qs = qemu_static(work);
    let eq = engine_qemu();
    let ev = engine_vbox();
    let ef = engine_fixed();
    let v0 = v02();
    let mut c = Cases(Vec::new());
    let qlen = q.bytes.len();

    // --- Good images.
    for g in [&q, &qs, &eq, &ev, &ef, &v0] {
        c.reads(g, &format!("good-{}", g.name), "none (a good image)", g.bytes.clone(), g.disk.clone());
    }

    // --- Header fields out of range (qemu-img's dynamic image unless said).
    let fails_check = CheckVerdict::Fails;
    c.fails(
        &q,
        "q-signature",
        "signature 0xdeadbeef",
        q.with(|b| put32(b, SIGNATURE, 0xDEAD_BEEF)),
        "bad-signature",
        &["0xdeadbeef", "expected 0xbeda107f"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-version-2.1",
        "version 2.1",
        q.with(|b| put32(b, VERSION, 0x0002_0001)),
        "unsupported-version",
        &["version 2.1", "expected 1.1 or 0.2"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-version-0.1",
        "version 0.1",
        q.with(|b| put32(b, VERSION, 0x0000_0001)),
        "unsupported-version",
        &["version 0.1"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-header-size-0x17f",
        "header_size 0x17f (below 0x180)",
        q.with(|b| put32(b, HEADER_SIZE, 0x17F)),
        "invalid-field",
        &["header_size = 0x17f", "at least 0x180"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-header-size-huge",
        "header_size 0xfffffff0: the header runs over the block map",
        q.with(|b| put32(b, HEADER_SIZE, 0xFFFF_FFF0)),
        "invalid-field",
        &["offset_bmap = 512", "overlaps the header"],
        found(2, &[LAYOUT]),
    );
    c.fails(
        &q,
        "q-image-type-0",
        "image_type 0",
        q.with(|b| put32(b, IMAGE_TYPE, 0)),
        "invalid-field",
        &["image_type = 0", "1 (dynamic)"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-image-type-5",
        "image_type 5",
        q.with(|b| put32(b, IMAGE_TYPE, 5)),
        "invalid-field",
        &["image_type = 5"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-sector-size-4096",
        "legacy sector_size 4096",
        q.with(|b| put32(b, SECTOR_SIZE, 4096)),
        "invalid-field",
        &["sector_size = 4096", "expected 512"],
        fails_check.clone(),
    );
    c.fails(
        &ev,
        "e-lchs-sector-size-1024",
        "LCHS sector_size 1024 (v1.1+ header)",
        ev.with(|b| put32(b, LCHS_SECTOR_SIZE, 1024)),
        "invalid-field",
        &["lchs.sector_size = 1024"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-block-size-3m",
        "block_size 3 MiB (not a power of two)",
        q.with(|b| put32(b, BLOCK_SIZE, 3 << 20)),
        "invalid-field",
        &["block_size = 3145728", "power of two"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-block-size-0",
        "block_size 0",
        q.with(|b| put32(b, BLOCK_SIZE, 0)),
        "invalid-field",
        &["block_size = 0"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-block-size-256m",
        "block_size 256 MiB (over 128 MiB)",
        q.with(|b| put32(b, BLOCK_SIZE, 256 << 20)),
        "invalid-field",
        &["block_size = 268435456", "128 MiB"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-block-extra-3",
        "block_extra 3",
        q.with(|b| put32(b, BLOCK_EXTRA, 3)),
        "invalid-field",
        &["block_extra = 3", "0 or a power of two"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-blocks-in-image-over-max",
        "blocks_in_image 0x1fffff81 (over QEMU's limit)",
        q.with(|b| put32(b, BLOCKS_IN_IMAGE, 0x1FFF_FF81)),
        "invalid-field",
        &["blocks_in_image = 536870785", "at most 536870784"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-disk-size-over-capacity",
        "disk_size 4 MiB + 1, over blocks_in_image * block_size",
        q.with(|b| put64(b, DISK_SIZE, 4 * MIB + 1)),
        "invalid-field",
        &["disk_size = 4194305", "at most blocks_in_image * block_size = 4 * 1048576 = 4194304"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-disk-size-max",
        "disk_size u64::MAX",
        q.with(|b| put64(b, DISK_SIZE, u64::MAX)),
        "invalid-field",
        &["disk_size = 18446744073709551615"],
        fails_check.clone(),
    );
    // Opens read-only (see q-slots-past-blocks); the file holds 2 of the 5 slots counted.
    c.finds(
        &q,
        "q-blocks-allocated-over",
        "blocks_allocated 5, over blocks_in_image (4)",
        q.with(|b| put32(b, BLOCKS_ALLOCATED, 5)),
        q.disk.clone(),
        found(2, &[PAST, SHORT]),
        &[],
    );
    // The map read one byte on: entry 0 = 0xff000000 and entry 2 = 0x01ffffff (out of range),
    // entry 1 FREE, entry 3 = 0 (slot 0); slot 1 is then unreferenced.
    c.fails(
        &q,
        "q-offset-bmap-misaligned",
        "offset_bmap 0x201 (not a multiple of 512)",
        q.with(|b| put32(b, OFFSET_BMAP, 0x201)),
        "invalid-field",
        &["offset_bmap = 513", "a multiple of 512"],
        found(2, &[LAYOUT, EOR, EOR, MISMATCH, LEAK]),
    );
    c.fails(
        &q,
        "q-offset-data-misaligned",
        "offset_data 0x401 (not a multiple of 512)",
        q.with(|b| put32(b, OFFSET_DATA, 0x401)),
        "invalid-field",
        &["offset_data = 1025", "a multiple of 512"],
        // Slot 1 now ends one byte past the end of the file.
        found(2, &[LAYOUT, EPE, SHORT]),
    );

    // --- Overlapping regions.
    // The map read from the pre-header text "<<< QEMU VM Virtual Disk Image >>>": four huge
    // slot numbers, so slots 0 and 1 are unreferenced.
    c.fails(
        &q,
        "q-map-overlaps-header",
        "offset_bmap 0: the block map overlaps the header",
        q.with(|b| put32(b, OFFSET_BMAP, 0)),
        "invalid-field",
        &["offset_bmap = 0", "at least 456", "overlaps the header"],
        found(2, &[LAYOUT, EOR, EOR, EOR, EOR, MISMATCH, LEAK, LEAK]),
    );
    c.fails(
        &q,
        "q-data-overlaps-map",
        "offset_data 0x200 = offset_bmap: the data area overlaps the map",
        q.with(|b| put32(b, OFFSET_DATA, 0x200)),
        "invalid-field",
        &["offset_data = 512", "at least offset_bmap + 4 * blocks_in_image = 528", "overlaps the block map"],
        // Slots now start at 0x200: the two slots end 512 bytes before the file does.
        found(2, &[LAYOUT, TRAIL]),
    );
    c.fails(
        &ev,
        "e-data-overlaps-map",
        "offset_data 1 MiB = offset_bmap (VirtualBox layout)",
        ev.with(|b| put32(b, OFFSET_DATA, 1 << 20)),
        "invalid-field",
        &["offset_data = 1048576", "overlaps the block map"],
        found(2, &[LAYOUT, TRAIL]),
    );

    // --- Header fields that do not stop reading.
    c.reads(
        &q,
        "q-text-garbage",
        "header text overwritten (never used for detection)",
        q.with(|b| b[..64].fill(b'x')),
        q.disk.clone(),
    );
    c.reads(
        &q,
        "q-version-1.0",
        "version 1.0 (read as 1.1)",
        q.with(|b| put32(b, VERSION, 0x0001_0000)),
        q.disk.clone(),
    );
    c.reads(
        &q,
        "q-image-type-undo",
        "image_type 3 (undo: read as dynamic)",
        q.with(|b| put32(b, IMAGE_TYPE, 3)),
        q.disk.clone(),
    );
    c.reads(
        &q,
        "q-image-flags",
        "image_flags 0xffffffff (never acted on)",
        q.with(|b| put32(b, IMAGE_FLAGS, !0)),
        q.disk.clone(),
    );
    c.reads(
        &q,
        "q-uuid-null",
        "uuid_create null (VirtualBox would not register it)",
        q.with(|b| b[UUID_CREATE..UUID_CREATE + 16].fill(0)),
        q.disk.clone(),
    );
    c.reads(
        &ev,
        "e-header-size-0x200",
        "header_size 0x200, larger than any known header",
        ev.with(|b| put32(b, HEADER_SIZE, 0x200)),
        ev.disk.clone(),
    );
    // The comment is untrusted text: markup, no terminating NUL, bytes that are not UTF-8.
    let markup: Vec<u8> =
        b"<img src=x onerror=alert(1)><script>alert(2)</script>".iter().copied().cycle().take(256).collect();
    c.reads(
        &q,
        "q-comment-markup",
        "comment: 256 bytes of HTML markup, no terminating NUL",
        q.with(|b| b[0x54..0x154].copy_from_slice(&markup)),
        q.disk.clone(),
    );
    c.reads(
        &q,
        "q-comment-not-utf8",
        "comment: bytes that are not UTF-8 (0xff 0xfe, a lone continuation byte)",
        q.with(|b| b[0x54..0x5C].copy_from_slice(&[0xFF, 0xFE, b'a', 0x80, b'b', 0xC3, 0x28, 0])),
        q.disk.clone(),
    );
    c.reads(
        &ev,
        "e-header-size-0x188",
        "header_size 0x188: between v1.1 and v1.1+ (no LCHS geometry read)",
        ev.with(|b| put32(b, HEADER_SIZE, 0x188)),
        ev.disk.clone(),
    );
    let extra = with_block_extra();
    c.reads(
        &extra,
        "good-block-extra-512",
        "none (block_extra 512: a prefix before each block)",
        extra.bytes.clone(),
        extra.disk.clone(),
    );
    // disk_size 3147164 reads as 3147264 (rounded up to a sector, as QEMU does).
    c.reads(
        &q,
        "q-disk-size-odd",
        "disk_size not a multiple of 512 (100 bytes short of the good one)",
        q.with(|b| put64(b, DISK_SIZE, 3 * MIB + 1436)),
        q.disk.clone(),
    );
    c.reads(
        &q,
        "q-disk-size-smaller",
        "disk_size 1 MiB, smaller than the 4 blocks the map holds",
        q.with(|b| put64(b, DISK_SIZE, MIB)),
        q.disk[..MIB as usize].to_vec(),
    );
    c.reads(&q, "q-disk-size-0", "disk_size 0", q.with(|b| put64(b, DISK_SIZE, 0)), vec![]);

    // --- Data offset past the end of the file: both data blocks lie past the end.
    c.finds(
        &q,
        "q-offset-data-past-eof",
        "offset_data 4 MiB + 0x400, past the end of the file",
        q.with(|b| put32(b, OFFSET_DATA, (4 * MIB + 0x400) as u32)),
        q.disk.clone(),
        found(2, &[EPE, EPE, SHORT]),
        &[0, 3],
    );

    // --- Block map damage.
    c.finds(
        &q,
        "q-entry-past-eof",
        "block 1 -> slot 2 (below blocks_in_image, past the end of the file)",
        q.with_entry(1, 2),
        q.disk.clone(),
        found(2, &[EPE, MISMATCH]),
        &[1],
    );
    c.finds(
        &q,
        "q-entry-out-of-range",
        "block 2 -> slot 100 (not below blocks_in_image)",
        q.with_entry(2, 100),
        q.disk.clone(),
        found(2, &[EOR, MISMATCH]),
        &[2],
    );
    // What third-party compaction tools leave: blocks 1 and 2 stored in slots 4 and 5, past
    // blocks_in_image (4), inside the file (slots 2 and 3 are holes), blocks_allocated 6.
    // Every byte reads (as qemu-img reads it); repair and compact move them without loss.
    let mut past = q.clone();
    past.bytes.resize(q.data() + 4 * MIB as usize, 0x5A);
    past.bytes.extend(pattern(41, MIB as usize));
    past.bytes.extend(pattern(42, MIB as usize));
    put32(&mut past.bytes, q.bmap() + 4, 4);
    put32(&mut past.bytes, q.bmap() + 8, 5);
    put32(&mut past.bytes, BLOCKS_ALLOCATED, 6);
    past.disk = past.disk_with_block_from_slot(1, 4);
    past.disk = past.disk_with_block_from_slot(2, 5);
    c.finds(
        &q,
        "q-slots-past-blocks",
        "blocks 1 and 2 -> slots 4 and 5, past blocks_in_image (4) but in the file; blocks_allocated 6",
        past.bytes,
        past.disk,
        found(2, &[PAST, PAST, PAST, LEAK, LEAK]),
        &[],
    );
    c.finds(
        &q,
        "q-entry-huge",
        "block 1 -> slot 0x7fffffff",
        q.with_entry(1, 0x7FFF_FFFF),
        q.disk.clone(),
        found(2, &[EOR, MISMATCH]),
        &[1],
    );
    c.finds(
        &q,
        "q-entry-duplicate",
        "block 2 -> slot 0, which block 0 uses",
        q.with_entry(2, 0),
        q.disk_with_block_from_slot(2, 0),
        found(2, &[DUP, MISMATCH]),
        &[],
    );
    c.finds(
        &q,
        "q-entry-zero-leaks",
        "block 3 set to ZERO: slot 1 is leaked",
        q.with_entry(3, !1),
        q.disk_with_zero_block(3),
        found(3, &[LEAK, MISMATCH]),
        &[],
    );
    let all_free = q.with(|b| b[0x200..0x210].fill(0xFF));
    c.finds(
        &q,
        "q-map-all-free",
        "every entry FREE (blocks_allocated still 2)",
        all_free,
        vec![0; q.disk.len()],
        found(3, &[MISMATCH, LEAK, LEAK]),
        &[],
    );
    let mut slot0_everywhere = q.disk.clone();
    for b in 1..4 {
        slot0_everywhere = Good { disk: slot0_everywhere, ..q.clone() }.disk_with_block_from_slot(b, 0);
    }
    c.finds(
        &q,
        "q-map-all-slot-0",
        "every entry 0: all four blocks name slot 0",
        q.with(|b| b[0x200..0x210].fill(0)),
        slot0_everywhere,
        found(2, &[DUP, DUP, DUP, MISMATCH, LEAK]),
        &[],
    );
    c.finds(
        &q,
        "q-blocks-allocated-0",
        "blocks_allocated 0 with two blocks stored (a new block would overwrite one)",
        q.with(|b| put32(b, BLOCKS_ALLOCATED, 0)),
        q.disk.clone(),
        found(2, &[MISMATCH]),
        &[],
    );
    c.finds(
        &q,
        "q-blocks-allocated-high",
        "blocks_allocated 4 with two blocks stored",
        q.with(|b| put32(b, BLOCKS_ALLOCATED, 4)),
        q.disk.clone(),
        found(2, &[MISMATCH, SHORT]),
        &[],
    );
    let mut fixed_free_disk = qs.disk.clone();
    fixed_free_disk[qs.block(1)].fill(0);
    c.finds(
        &qs,
        "qs-entry-free",
        "fixed image with block 1 FREE",
        qs.with_entry(1, !0),
        fixed_free_disk,
        found(2, &[FIXED_FREE, MISMATCH, LEAK]),
        &[],
    );
    c.finds(
        &eq,
        "e-entry-duplicate",
        "block 6 -> slot 1, which block 2 uses (4 KiB blocks)",
        eq.with_entry(6, 1),
        eq.disk_with_block_from_slot(6, 1),
        found(2, &[DUP, MISMATCH]),
        &[],
    );

    // --- Truncation at each region.
    c.fails(
        &q,
        "q-cut-empty",
        "empty file",
        vec![],
        "truncated",
        &["pre-header", "needs 72 bytes", "has 0"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-cut-pre-header",
        "cut at 48 bytes, inside the pre-header text",
        q.cut(48),
        "truncated",
        &["pre-header", "has 48"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-cut-header-size",
        "cut at 74 bytes, inside header_size",
        q.cut(74),
        "truncated",
        &["the VDI header needs 456 bytes", "has 74"],
        fails_check.clone(),
    );
    c.fails(
        &q,
        "q-cut-header",
        "cut at 256 bytes, inside the header",
        q.cut(256),
        "truncated",
        &["the VDI header needs 456 bytes", "has 256"],
        fails_check.clone(),
    );
    c.fails(
        &ev,
        "e-cut-lchs",
        "cut at 464 bytes, inside the LCHS geometry (v1.1+)",
        ev.cut(464),
        "truncated",
        &["the VDI header needs 472 bytes", "has 464"],
        fails_check.clone(),
    );
    // Entries 0 and 1 are readable: slot 0 (past the end) and FREE.
    c.fails(
        &q,
        "q-cut-map",
        "cut at 0x208, inside the block map",
        q.cut(0x208),
        "truncated",
        &["the block map needs 528 bytes", "has 520"],
        found(2, &[MAPCUT, EPE, SHORT]),
    );
    c.finds(
        &ev,
        "e-cut-before-data",
        "cut between the block map and the data area (VirtualBox layout)",
        ev.cut((1 << 20) + 124),
        ev.disk.clone(),
        found(2, &[EPE, EPE, SHORT]),
        &[1, 4],
    );
    c.finds(
        &q,
        "q-cut-data-start",
        "cut at the start of the data area",
        q.cut(0x400),
        q.disk.clone(),
        found(2, &[EPE, EPE, SHORT]),
        &[0, 3],
    );
    c.finds(
        &q,
        "q-cut-mid-slot-1",
        "cut in the middle of slot 1 (block 3)",
        q.cut(0x400 + (3 << 19)),
        q.disk.clone(),
        found(2, &[EPE, SHORT]),
        &[3],
    );
    c.finds(
        &q,
        "q-cut-one-byte-short",
        "one byte short of the last slot",
        q.cut(qlen - 1),
        q.disk.clone(),
        found(2, &[EPE, SHORT]),
        &[3],
    );
    c.finds(
        &qs,
        "qs-cut-data",
        "static image cut inside block 1",
        qs.cut(0x400 + MIB as usize + 10),
        qs.disk.clone(),
        found(2, &[EPE, SHORT]),
        &[1],
    );
    c.finds(
        &qs,
        "qs-cut-header-and-map-only",
        "static image cut after its map (the data area is gone)",
        qs.cut(0x211),
        qs.disk.clone(),
        found(2, &[EPE, EPE, SHORT]),
        &[0, 1],
    );
    c.finds(
        &ef,
        "e-fixed-cut-mid-block",
        "fixed image cut inside block 2",
        ef.cut(ef.bytes.len() - 4096 - 100),
        ef.disk.clone(),
        found(2, &[EPE, EPE, SHORT]),
        &[2, 3],
    );

    // --- Trailing garbage.
    c.finds(
        &q,
        "q-trailing-garbage",
        "1000 bytes of garbage after the last slot",
        q.with(|b| b.extend_from_slice(&[0xCC; 1000])),
        q.disk.clone(),
        found(3, &[TRAIL]),
        &[],
    );

    // --- Huge claims in small files.
    c.fails(
        &ev,
        "e-claims-512-tib",
        "a 3 MiB file claiming a 512 TiB disk (1 GiB block map, 2 MiB blocks)",
        claims_512_tib(),
        "truncated",
        &["the block map needs 1074790400 bytes", "has 3145728"],
        found(2, &[MAPCUT]),
    );
    let max_blocks = 0x1FFF_FF80u32;
    let max_claim = q.with(|b| {
        put32(b, BLOCKS_IN_IMAGE, max_blocks);
        put64(b, DISK_SIZE, max_blocks as u64 * MIB);
        put32(b, OFFSET_DATA, 0x200 + 4 * max_blocks); // 0x80000000: the data after the whole map
        put32(b, BLOCKS_ALLOCATED, 0);
        b.truncate(0x400);
        b[0x200..0x400].fill(0xFF); // the 128 entries the file holds: FREE
    });
    c.fails(
        &q,
        "q-claims-max-blocks",
        "blocks_in_image 0x1fffff80 (the largest) in a 1 KiB file",
        max_claim,
        "truncated",
        &["the block map needs 2147483648 bytes", "has 1024"],
        found(2, &[MAPCUT]),
    );

    // --- Legacy v0.2.
    let v0ff = {
        let mut g = v0.clone();
        let n = g.bytes.len();
        g.bytes[0x1B4..n].fill(0xFF);
        g
    };
    c.fails(
        &v0,
        "v0-claims-max-blocks",
        "v0.2 header with blocks_in_image 0x1fffff80 (data bytes read as FREE entries)",
        v0ff.with(|b| put32(b, V0_BLOCKS_IN_IMAGE, 0x1FFF_FF80)),
        "truncated",
        &["the block map needs 2147483556 bytes", "has 8628"],
        found(2, &[MAPCUT, EPE, EPE, SHORT]),
    );
    c.finds(
        &v0,
        "v0-entry-out-of-range",
        "v0.2, block 0 -> slot 7",
        v0.with_entry(0, 7),
        v0.disk.clone(),
        found(2, &[EOR, LEAK]),
        &[0],
    );

    let mut cases = c.0;
    // --- A differencing image alone (its parent is not in the corpus).
    let mut diff_disk = q.disk.clone();
    diff_disk[q.block(1)].fill(0);
    diff_disk[q.block(2)].fill(0);
    cases.push(Case {
        file: "chains/diff-alone/q-diff-without-parent.vdi".into(),
        base: q.name,
        made_by: q.made_by,
        damage: "image_type 4 (diff) with a parent UUID that no file has".into(),
        bytes: q.with(|b| {
            put32(b, IMAGE_TYPE, 4);
            b[UUID_LINK..UUID_LINK + 16].copy_from_slice(&[0x42; 16]);
        }),
        verdict: Verdict::Opens {
            disk: diff_disk,
            block_size: MIB,
            check: CheckVerdict::clean(),
            past_end: vec![],
            needs_parent: vec![1, 2],
        },
    });
    Corpus { cases, chains: chains() }
}

/// By hand from an engine image: block_extra 512 (the engine never creates one), QEMU
/// layout, 4 blocks of 4 KiB, block 3 in slot 0 and block 0 in slot 1; each slot is a 512-byte
/// prefix, then the block's data.
fn with_block_extra() -> Good {
    let bs = 4096usize;
    let mut g = engine("engine-block-extra-512", Layout::Qemu, false, bs as u32, 4 * bs as u64, 0x5555, &[]);
    let b = &mut g.bytes;
    put32(b, BLOCK_EXTRA, 512);
    put32(b, BLOCKS_ALLOCATED, 2);
    put32(b, 0x200 + 3 * 4, 0); // block 3 -> slot 0
    put32(b, 0x200, 1); // block 0 -> slot 1
    let (d3, d0) = (pattern(0xA0, bs), pattern(0xB0, bs));
    for d in [&d3, &d0] {
        b.extend_from_slice(&[0xEE; 512]); // the prefix: never part of the disk
        b.extend_from_slice(d);
    }
    g.disk[..bs].copy_from_slice(&d0);
    g.disk[3 * bs..].copy_from_slice(&d3);
    g.made_by = "by hand";
    g
}

/// A 3 MiB file whose header claims a 512 TiB disk with a 1 GiB block map (2 MiB blocks,
/// 2^28 entries; bmap at 1 MiB, data at 1 GiB + 1 MiB). The file holds the first 2 MiB of the
/// map, all FREE.
fn claims_512_tib() -> Vec<u8> {
    let mut b = engine("claim", Layout::Vbox, false, 1 << 20, 1 << 20, 0x4444, &[]).bytes;
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
// Chains.

const CBS: u32 = 4096;
const CSIZE: u64 = 8 * CBS as u64;

fn chain_base(id: u128) -> (Vec<u8>, Vec<u8>) {
    let g = engine("chain-base", Layout::Qemu, false, CBS, CSIZE, id, &[(0, pattern(0xB0, 3 * CBS as usize))]);
    (g.bytes, g.disk)
}

/// A diff of `parent` (its image and modify UUIDs) with `writes` applied through the chain.
fn chain_diff(parent: &[u8], parent_disk: &[u8], id: u128, writes: &[(u64, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
    let p = vdi::VdiImage::open(MemStorage::from_vec(parent.to_vec())).expect("parent opens");
    let o = CreateOptions::diff_of(p.header(), Uuid::from_u128(id), Uuid::from_u128(id + 1));
    let d = create(MemStorage::new(), &o, &mut NoMonitor).expect("create diff");
    let mut chain = vdi::Chain::resolve(d, vec![p]).expect("resolves");
    let mut disk = parent_disk.to_vec();
    for (at, data) in writes {
        chain.write_at(*at, data).expect("write");
        disk[*at as usize..*at as usize + data.len()].copy_from_slice(data);
    }
    let top = chain.into_layers().pop().expect("top").into_storage().into_vec();
    (top, disk)
}

fn chains() -> Vec<ChainCase> {
    let mut v = Vec::new();
    let (base, base_disk) = chain_base(0xA000);
    let w = [(CBS as u64 + 10, pattern(0xC0, 500)), (5 * CBS as u64, pattern(0xC1, CBS as usize))];
    let (diff, disk) = chain_diff(&base, &base_disk, 0xA100, &w);
    let files = |a: &[(&str, &Vec<u8>)]| a.iter().map(|(n, b)| (n.to_string(), (*b).clone())).collect::<Vec<_>>();
    v.push(ChainCase {
        name: "good",
        damage: "none: a base and a diff made by the engine".into(),
        files: files(&[("base.vdi", &base), ("snapshot.vdi", &diff)]),
        top: "snapshot.vdi".into(),
        resolve: Ok(disk.clone()),
        from_set: Ok(disk.clone()),
    });
    v.push(ChainCase {
        name: "missing-parent",
        damage: "the diff's parent is not there".into(),
        files: files(&[("snapshot.vdi", &diff)]),
        top: "snapshot.vdi".into(),
        resolve: Err((
            "missing-parent",
            vec!["whose parent (image UUID 00000000-0000-0000-0000-00000000a000) is missing"],
        )),
        from_set: Err(("missing-parent", vec!["00000000-0000-0000-0000-00000000a000", "is missing"])),
    });
    let unrelated = chain_base(0xB000).0;
    v.push(ChainCase {
        name: "wrong-parent",
        damage: "the only other image is not the diff's parent (another UUID)".into(),
        files: files(&[("other-base.vdi", &unrelated), ("snapshot.vdi", &diff)]),
        top: "snapshot.vdi".into(),
        resolve: Err(("missing-parent", vec!["00000000-0000-0000-0000-00000000a000", "is missing"])),
        from_set: Err(("missing-parent", vec!["00000000-0000-0000-0000-00000000a000"])),
    });
    // Cycle: two diffs naming each other.
    let (d1, _) = chain_diff(&base, &base_disk, 0xC100, &[]);
    let (d2, _) = chain_diff(&base, &base_disk, 0xC200, &[]);
    let link = |mut b: Vec<u8>, to: u128| {
        b[UUID_LINK..UUID_LINK + 16].copy_from_slice(&Uuid::from_u128(to).to_bytes_le());
        b
    };
    let (c1, c2) = (link(d1, 0xC200), link(d2, 0xC100));
    v.push(ChainCase {
        name: "cycle",
        damage: "two diffs, each naming the other as its parent".into(),
        files: files(&[("a.vdi", &c1), ("b.vdi", &c2)]),
        top: "a.vdi".into(),
        resolve: Err(("broken-chain", vec!["cycle"])),
        from_set: Err(("broken-chain", vec!["cycle"])),
    });
    // Wrong block size: the diff's header says 8 KiB blocks (and half as many of them).
    let mut wrong_bs = diff.clone();
    put32(&mut wrong_bs, BLOCK_SIZE, 2 * CBS);
    put32(&mut wrong_bs, BLOCKS_IN_IMAGE, 4);
    put32(&mut wrong_bs, BLOCKS_ALLOCATED, 0);
    wrong_bs[0x200..0x210].fill(0xFF);
    wrong_bs.truncate(0x400);
    v.push(ChainCase {
        name: "wrong-block-size",
        damage: "the diff has 8 KiB blocks, its parent 4 KiB blocks".into(),
        files: files(&[("base.vdi", &base), ("snapshot.vdi", &wrong_bs)]),
        top: "snapshot.vdi".into(),
        resolve: Err(("broken-chain", vec!["8192-byte blocks", "4096-byte blocks"])),
        from_set: Err(("broken-chain", vec!["8192-byte blocks", "4096-byte blocks"])),
    });
    let (other_child, _) = chain_diff(&base, &base_disk, 0xA200, &[(0, pattern(0xC2, 100))]);
    v.push(ChainCase {
        name: "two-children",
        damage: "two diffs of the same base (two snapshots, not one chain)".into(),
        files: files(&[("base.vdi", &base), ("snapshot.vdi", &diff), ("snapshot2.vdi", &other_child)]),
        top: "snapshot.vdi".into(),
        resolve: Ok(disk.clone()),
        from_set: Err(("broken-chain", vec!["both claim 00000000-0000-0000-0000-00000000a000 as their parent"])),
    });
    let mut null_link = diff.clone();
    null_link[UUID_LINK..UUID_LINK + 16].fill(0);
    v.push(ChainCase {
        name: "null-link",
        damage: "a diff whose parent UUID is null".into(),
        files: files(&[("base.vdi", &base), ("snapshot.vdi", &null_link)]),
        top: "snapshot.vdi".into(),
        resolve: Err(("broken-chain", vec!["null parent UUID"])),
        // base is a separate chain top too: the set is two chains (or a broken link first).
        from_set: Err(("broken-chain", vec!["2 separate chains"])),
    });
    let mut same_uuid = unrelated.clone();
    same_uuid[UUID_CREATE..UUID_CREATE + 16].copy_from_slice(&Uuid::from_u128(0xA000).to_bytes_le());
    v.push(ChainCase {
        name: "duplicate-parent-uuid",
        damage: "two files carry the parent's image UUID".into(),
        files: files(&[("base.vdi", &base), ("impostor.vdi", &same_uuid), ("snapshot.vdi", &diff)]),
        top: "snapshot.vdi".into(),
        resolve: Err(("broken-chain", vec!["2 images have the image UUID 00000000-0000-0000-0000-00000000a000"])),
        from_set: Err(("broken-chain", vec!["two images have the same image UUID"])),
    });
    // The parent was written after the snapshot was taken: its modify UUID changed. It still
    // resolves (with a warning) and reads the parent as it is now.
    let mut modified = base.clone();
    modified[UUID_MODIFY..UUID_MODIFY + 16].copy_from_slice(&Uuid::from_u128(0xDEAD).to_bytes_le());
    v.push(ChainCase {
        name: "parent-modified",
        damage: "the parent's modify UUID differs from the one the diff recorded".into(),
        files: files(&[("base.vdi", &modified), ("snapshot.vdi", &diff)]),
        top: "snapshot.vdi".into(),
        resolve: Ok(disk.clone()),
        from_set: Ok(disk),
    });
    v
}

// ---------------------------------------------------------------------------------------
// Writing.

/// SHA-256 of `bytes`, by `sha256sum`.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child =
        Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("sha256sum is needed");
    child.stdin.take().expect("stdin").write_all(bytes).expect("feed sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("a digest").to_string()
}

fn check_json(c: &CheckVerdict) -> Value {
    match c {
        CheckVerdict::Fails => json!({ "exit": 1, "fails": true }),
        CheckVerdict::Findings { exit, kinds } => json!({ "exit": exit, "findings": kinds }),
    }
}

/// The manifest describing every case (see the module docs; the format is documented in
/// the project README's "Damaged-image corpus" section).
pub fn manifest(c: &Corpus) -> Value {
    let cases: Vec<Value> = c
        .cases
        .iter()
        .map(|k| {
            let mut v = json!({
                "file": k.file,
                "base": k.base,
                "made-by": k.made_by,
                "damage": k.damage,
                "verdict": k.verdict.name(),
                "file-size": k.bytes.len(),
                "check": check_json(k.verdict.check()),
            });
            match &k.verdict {
                Verdict::Fails { kind, message, .. } => {
                    v["error"] = json!({ "kind": kind, "message": message });
                }
                Verdict::Opens { disk, block_size, past_end, needs_parent, .. } => {
                    v["virtual-size"] = json!(disk.len());
                    v["block-size"] = json!(block_size);
                    v["past-end-blocks"] = json!(past_end);
                    v["needs-parent-blocks"] = json!(needs_parent);
                    // The whole disk's digest, when every block reads.
                    v["disk-sha256"] = if past_end.is_empty() && needs_parent.is_empty() {
                        json!(sha256_bytes(disk))
                    } else {
                        Value::Null
                    };
                }
            }
            v
        })
        .collect();
    let chains: Vec<Value> = c
        .chains
        .iter()
        .map(|k| {
            let r = |x: &Result<Vec<u8>, (&str, Vec<&str>)>| match x {
                Ok(d) => json!({ "ok": true, "virtual-size": d.len(), "disk-sha256": sha256_bytes(d) }),
                Err((kind, msg)) => json!({ "ok": false, "error": { "kind": kind, "message": msg } }),
            };
            json!({
                "dir": format!("chains/{}", k.name),
                "damage": k.damage,
                "files": k.files.iter().map(|f| &f.0).collect::<Vec<_>>(),
                "top": k.top,
                "verdict": if k.resolve.is_ok() && k.from_set.is_ok() { "opens" } else { "fails" },
                "resolve": r(&k.resolve),
                "from-set": r(&k.from_set),
            })
        })
        .collect();
    json!({
        "format": "vdi-damaged-corpus",
        "version": 1,
        "generated-by": "tests/src/corpus.rs (cargo xtask corpus DIR)",
        "cases": cases,
        "chains": chains,
    })
}

/// Build the corpus and write it into `dir` (created if needed): every file, and
/// `manifest.json`. Returns what was written.
pub fn write(dir: &Path) -> Corpus {
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    let work = tempfile::TempDir::new().expect("a scratch directory");
    let corpus = build(work.path());
    for k in &corpus.cases {
        let p = dir.join(&k.file);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("create dir");
        std::fs::write(&p, &k.bytes).expect("write a case");
    }
    for k in &corpus.chains {
        let d = dir.join("chains").join(k.name);
        std::fs::create_dir_all(&d).expect("create a chain dir");
        for (n, b) in &k.files {
            std::fs::write(d.join(n), b).expect("write a chain file");
        }
    }
    let m = serde_json::to_string_pretty(&manifest(&corpus)).expect("json");
    std::fs::write(dir.join("manifest.json"), m + "\n").expect("write the manifest");
    corpus
}
