//! The crash and power-cut harness the crash tests share: storages that stop after N
//! writes or log every write and barrier, and the checks on what a stopped operation
//! leaves.

use super::pattern;
use std::cell::Cell;
use vdi::{
    create, CheckReport, CreateOptions, Finding, Layout, MemStorage, NoMonitor, ReadAt, Severity, Storage, StorageError,
    Uuid, VdiImage,
};

/// MemStorage that fails every write after the first `budget`.
pub struct Faulty {
    pub inner: MemStorage,
    budget: usize,
    pub writes: Cell<usize>,
}

impl Faulty {
    pub fn new(inner: MemStorage, budget: usize) -> Self {
        Faulty { inner, budget, writes: Cell::new(0) }
    }
    fn spend(&self) -> Result<(), StorageError> {
        if self.writes.get() >= self.budget {
            return Err(StorageError::new("injected fault: the machine stopped here"));
        }
        self.writes.set(self.writes.get() + 1);
        Ok(())
    }
}

impl ReadAt for Faulty {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.inner.read_at(offset, buf)
    }
    fn len(&self) -> Result<u64, StorageError> {
        self.inner.len()
    }
}

impl Storage for Faulty {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        self.spend()?;
        self.inner.write_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        self.spend()?;
        self.inner.set_len(len)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

pub const BS: u32 = 64 * 1024;

/// A 24-block image with data, all-zero data blocks, holes, out of order slots.
pub fn image(layout: Layout, fixed: bool, size: u64) -> MemStorage {
    let mut o = CreateOptions::new(size, Uuid::from_u128(1), Uuid::from_u128(2));
    o.block_size = BS;
    o.layout = layout;
    o.fixed = fixed;
    let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    let bs = BS as u64;
    for (i, b) in [7u64, 2, 3, 11, 0, 19, 5, 23, 13].into_iter().enumerate() {
        if b * bs < img.virtual_size() {
            let n = (bs as usize).min((img.virtual_size() - b * bs) as usize);
            img.write_at(b * bs, &pattern(i as u64 + 1, n)).unwrap();
        }
    }
    // Blocks 3 and 19 become all zeros (allocated): compact's prey.
    for b in [3u64, 19] {
        if b * bs < img.virtual_size() {
            img.write_at(b * bs, &vec![0u8; BS as usize]).unwrap();
        }
    }
    // A partial write at the end of the disk.
    let end = img.virtual_size();
    img.write_at(end - 700, &pattern(99, 700)).unwrap();
    img.into_storage()
}

pub fn disk(s: &MemStorage) -> Vec<u8> {
    let mut img = VdiImage::open(s.clone()).expect("opens");
    let mut b = vec![0u8; img.virtual_size() as usize];
    img.read_at(0, &mut b).expect("reads");
    b
}

pub type Op = dyn Fn(&mut VdiImage<Faulty>) -> vdi::Result<()>;

/// Run `op` stopping after every possible write count; returns the number of writes the
/// whole operation makes.
pub fn crash_everywhere(name: &str, base: MemStorage, op: &Op) -> usize {
    let before = blocks(&base);
    let found = vdi::check(base.clone(), &mut NoMonitor).unwrap();
    // Uninterrupted run.
    let mut img = VdiImage::open(Faulty::new(base.clone(), usize::MAX)).unwrap();
    op(&mut img).unwrap_or_else(|e| panic!("{name}: {e}"));
    let total = img.storage().writes.get();
    let done = img.into_storage().inner;
    let after = blocks(&done);
    let r = vdi::check(done.clone(), &mut NoMonitor).unwrap();
    assert!(r.is_clean(), "{name}: not clean after the operation: {:?}", r.findings);
    assert!(total > 0, "{name}: the operation wrote nothing");
    for n in 0..total {
        let mut img = VdiImage::open(Faulty::new(base.clone(), n)).unwrap();
        let res = op(&mut img);
        assert!(res.is_err(), "{name}: stopping after write {n} of {total} went unnoticed");
        let left = img.into_storage().inner;
        verify_left(name, &format!("stopped after write {n}/{total}"), left, &before, &after, &found);
    }
    total
}

/// Every block of the disk `s` holds, `None` for one that does not read (an entry past the
/// end of the file, say).
pub fn blocks(s: &MemStorage) -> Vec<Option<Vec<u8>>> {
    let mut img = VdiImage::open(s.clone()).expect("opens");
    let size = img.virtual_size();
    (0..size.div_ceil(BS as u64))
        .map(|b| {
            let mut v = vec![0u8; (size - b * BS as u64).min(BS as u64) as usize];
            img.read_at(b * BS as u64, &mut v).ok().map(|_| v)
        })
        .collect()
}

/// The image `left` by an interrupted operation opens; each corruption check finds in it is
/// one `found` (the check of the image before the operation) has, at the same place (no
/// new kind of corruption, none in a new place), and no more of them; and it reads every
/// block as `before` or as `after` the operation (a block that did not read before may
/// fail to read still).
pub fn verify_left(
    name: &str,
    what: &str,
    left: MemStorage,
    before: &[Option<Vec<u8>>],
    after: &[Option<Vec<u8>>],
    found: &CheckReport,
) {
    VdiImage::open(left.clone()).unwrap_or_else(|e| panic!("{name}: {what}: does not open: {e}"));
    let r = vdi::check(left.clone(), &mut NoMonitor).unwrap();
    let had = |f: &Finding| found.findings.iter().any(|g| g.severity == f.severity && g.kind == f.kind && g.location == f.location);
    let new = r.findings.iter().find(|f| f.severity == Severity::Corruption && !had(f));
    assert!(new.is_none() && r.corruptions <= found.corruptions, "{name}: {what}: new corruption {new:?}: {:?}", r.findings);
    // (Past the end of a disk, or of its last block, it reads zeros: a resize.)
    let reads = |now: &Option<Vec<u8>>, then: Option<&Option<Vec<u8>>>| match (now, then) {
        (None, Some(None)) => true,
        (Some(n), Some(Some(t))) => {
            let k = n.len().min(t.len());
            n[..k] == t[..k] && n[k..].iter().all(|&x| x == 0)
        }
        (Some(n), None) => n.iter().all(|&x| x == 0),
        _ => false,
    };
    for (bi, b) in blocks(&left).iter().enumerate() {
        assert!(
            reads(b, before.get(bi)) || reads(b, after.get(bi)),
            "{name}: {what}: block {bi} is neither the old nor the new data"
        );
    }
}
/// One storage operation, as a disk sees it.
#[derive(Clone, Debug)]
pub enum DiskOp {
    Write(u64, Vec<u8>),
    SetLen(u64),
    Flush,
}

/// MemStorage that logs every write, truncation and flush.
pub struct Journal {
    pub inner: MemStorage,
    pub log: Vec<DiskOp>,
}

impl ReadAt for Journal {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.inner.read_at(offset, buf)
    }
    fn len(&self) -> Result<u64, StorageError> {
        self.inner.len()
    }
}

impl Storage for Journal {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        self.log.push(DiskOp::Write(offset, buf.to_vec()));
        self.inner.write_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        self.log.push(DiskOp::SetLen(len));
        self.inner.set_len(len)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        self.log.push(DiskOp::Flush);
        Ok(())
    }
}

pub fn apply(s: &mut MemStorage, op: &DiskOp) {
    match op {
        DiskOp::Write(o, b) => s.write_at(*o, b).unwrap(),
        DiskOp::SetLen(l) => s.set_len(*l).unwrap(),
        DiskOp::Flush => {}
    }
}

pub type JournalOp = dyn Fn(&mut VdiImage<&mut Journal>) -> vdi::Result<()>;

/// A power cut after every write of `op`: what was written before the last flush is on the
/// disk; of the writes since, any may be lost. Checked for each cut point with none, all,
/// each one alone, and all but each one of the unflushed writes landed. Returns (writes,
/// flushes) of the whole operation.
pub fn power_cut_everywhere(name: &str, base: MemStorage, op: &JournalOp) -> (usize, usize) {
    power_cut_on(name, base, &|j| op(&mut VdiImage::open(j)?))
}

/// [`power_cut_everywhere`] for an operation on the storage (repair opens it itself).
/// Stopped states may keep the image's own corruptions (a repair's starting point; see
/// [`verify_left`]).
pub fn power_cut_on(name: &str, base: MemStorage, op: &dyn Fn(&mut Journal) -> vdi::Result<()>) -> (usize, usize) {
    let before = blocks(&base);
    let found = vdi::check(base.clone(), &mut NoMonitor).unwrap();
    let mut j = Journal { inner: base.clone(), log: Vec::new() };
    op(&mut j).unwrap_or_else(|e| panic!("{name}: {e}"));
    let after = blocks(&j.inner);
    let log = j.log;
    let flushes = log.iter().filter(|o| matches!(o, DiskOp::Flush)).count();
    let writes = log.len() - flushes;
    for end in 1..=log.len() {
        if matches!(log[end - 1], DiskOp::Flush) {
            continue; // the same state as the cut before it
        }
        let last_flush = log[..end].iter().rposition(|o| matches!(o, DiskOp::Flush)).map_or(0, |i| i + 1);
        let pending: Vec<&DiskOp> = log[last_flush..end].iter().collect();
        let m = pending.len();
        let mut subsets: Vec<Vec<bool>> = vec![vec![false; m], vec![true; m]];
        for i in 0..m {
            subsets.push((0..m).map(|k| k == i).collect());
            subsets.push((0..m).map(|k| k != i).collect());
        }
        let mut durable = base.clone();
        for o in &log[..last_flush] {
            apply(&mut durable, o);
        }
        for keep in subsets {
            let mut left = durable.clone();
            for (o, &k) in pending.iter().zip(&keep) {
                if k {
                    apply(&mut left, o);
                }
            }
            let landed: Vec<usize> = keep.iter().enumerate().filter(|(_, &k)| k).map(|(i, _)| i).collect();
            let what = format!("power cut after op {end}/{}, of the {m} unflushed writes {landed:?} landed", log.len());
            verify_left(name, &what, left, &before, &after, &found);
        }
    }
    (writes, flushes)
}

/// The data of `blocks` (each must read) of the disk `s` holds.
pub fn disk_blocks(s: &MemStorage, blocks: &[u64]) -> Vec<Vec<u8>> {
    let mut img = VdiImage::open(s.clone()).expect("opens");
    blocks
        .iter()
        .map(|&b| {
            let mut v = vec![0u8; BS as usize];
            img.read_at(b * BS as u64, &mut v).expect("reads");
            v
        })
        .collect()
}

/// What third-party compaction tools leave: `blocks_allocated` over `blocks_in_image`, and
/// entries naming slots past it whose data is in the file. From [`image`]: the data area is
/// padded with holes to `blocks_in_image` (24) slots, blocks 1 and 4 (FREE) get slots 24
/// and 25, block 13's data moves to slot 26 (its old slot becomes a hole); the count is 27.
pub fn past_blocks_image(layout: Layout) -> MemStorage {
    let mut s = image(layout, false, 24 * BS as u64);
    let mut img = VdiImage::open(s.clone()).unwrap();
    let (bmap, data) = (img.header().offset_bmap as u64, img.header().offset_data as u64);
    let vdi::Entry::Data(slot13) = img.entry(13).unwrap() else { panic!("block 13 is stored") };
    let at = |slot: u64| data + slot * BS as u64;
    let len = s.len().unwrap();
    s.write_at(len, &vec![0x5A; (at(24) - len) as usize]).unwrap();
    s.write_at(at(24), &pattern(41, BS as usize)).unwrap();
    s.write_at(at(25), &pattern(42, BS as usize)).unwrap();
    let mut b13 = vec![0u8; BS as usize];
    s.read_at(at(slot13 as u64), &mut b13).unwrap();
    s.write_at(at(26), &b13).unwrap();
    for (block, slot) in [(1u64, 24u32), (4, 25), (13, 26)] {
        s.write_at(bmap + 4 * block, &slot.to_le_bytes()).unwrap();
    }
    s.write_at(0x184, &27u32.to_le_bytes()).unwrap();
    s
}
