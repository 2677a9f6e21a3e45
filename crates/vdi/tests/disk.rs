//! The disk seam's conformance test: the same checks run against a single image, a chain of
//! three layers, a differencing image opened alone and an image whose blocks are larger
//! than the export chunk. Whatever implements [`Disk`] must pass them:
//! - the runs of every walk tile the disk in order, and each run's bytes read equal to a
//!   model of the disk (data runs read, the others all zeros);
//! - every block's [`Disk::block`] agrees with the run that covers it;
//! - a map walk never leaves two adjacent runs that continue each other (merged once);
//! - export runs holding data are at most `CHUNK` bytes, even inside one larger block;
//! - host order covers exactly the data, sorted by layer and host offset, and what
//!   `read_host` returns there is the disk's bytes;
//! - the bulk view (`block_runs`) agrees with the default one built on `block`.

mod common;
use common::pattern;
use vdi::transfer::CHUNK;
use vdi::{create, Block, Chain, CreateOptions, Disk, MemStorage, NoMonitor, Run, Runs, Uuid, VdiImage};

fn image(size: u64, bs: u32, id: u128) -> VdiImage<MemStorage> {
    let mut o = CreateOptions::new(size, Uuid::from_u128(id), Uuid::from_u128(id + 1000));
    o.block_size = bs;
    create(MemStorage::new(), &o, &mut NoMonitor).unwrap()
}

fn diff_of(parent: &VdiImage<MemStorage>, id: u128) -> VdiImage<MemStorage> {
    let mut o = CreateOptions::diff_of(parent.header(), Uuid::from_u128(id), Uuid::from_u128(id + 1000));
    o.block_size = parent.header().block_size;
    create(MemStorage::new(), &o, &mut NoMonitor).unwrap()
}

/// Write `data` at `at` into both the image and the model.
fn put(img: &mut VdiImage<MemStorage>, model: &mut [u8], at: u64, data: &[u8]) {
    img.write_at(at, data).unwrap();
    model[at as usize..at as usize + data.len()].copy_from_slice(data);
}

/// Every walk the seam offers, checked against `model` (the disk's bytes).
fn conform<D: Disk>(disk: &mut D, model: &[u8]) {
    let size = disk.virtual_size();
    let bs = disk.block_size();
    assert_eq!(model.len() as u64, size);
    // Export order: tiling, bytes, bounds, agreement with block().
    let export = walk(disk, Runs::export());
    check_tiling(&export, size);
    for r in &export {
        if r.block.is_read() {
            assert!(r.len <= CHUNK as u64, "{r:?}");
        }
        check_bytes(disk, r, model);
        check_blocks(disk, r);
    }
    // Map order: tiling, merged once.
    let map = walk(disk, Runs::map());
    check_tiling(&map, size);
    for w in map.windows(2) {
        assert!(!continues(&w[0], &w[1]), "map left {:?} and {:?} apart", w[0], w[1]);
    }
    for r in &map {
        check_blocks(disk, r);
    }
    // Small bounds split runs inside blocks; the bytes still tile and match.
    let small = walk(disk, Runs::disk_order(bs / 2 + 512, bs + 4096));
    check_tiling(&small, size);
    for r in &small {
        assert!(r.len <= if r.block.is_read() { bs / 2 + 512 } else { bs + 4096 }, "{r:?}");
        check_bytes(disk, r, model);
        check_blocks(disk, r);
    }
    // The default bulk view (one block() per block) gives the same map.
    let default_map = walk(&mut PerBlock(disk), Runs::map());
    assert_eq!(default_map, map);
    // Host order: exactly the data blocks, sorted, read through read_host.
    if map.iter().any(|r| r.block == Block::Parent) {
        assert!(Runs::host_order(disk).unwrap().is_none(), "a disk with a missing parent has no host order");
        return;
    }
    let mut host = Runs::host_order(disk).unwrap().expect("host order");
    let total = host.host_data_bytes(disk).unwrap();
    let runs = walk_from(disk, &mut host);
    let data: u64 = map.iter().filter(|r| r.block.is_read()).map(|r| r.len).sum();
    assert_eq!(total, data);
    assert_eq!(runs.iter().map(|r| r.len).sum::<u64>(), data);
    let mut last = (0usize, 0u64);
    for r in &runs {
        let Block::Data { layer, host } = r.block else { panic!("host order gave {r:?}") };
        assert!((layer, host) >= last, "host order out of order at {r:?}");
        last = (layer, host + r.len);
        assert!(r.len <= CHUNK as u64);
        let mut got = vec![0u8; r.len as usize];
        disk.read_host(layer, host, &mut got).unwrap();
        assert!(got == model[r.start as usize..(r.start + r.len) as usize], "host bytes of {r:?}");
    }
}

fn walk<D: Disk + ?Sized>(disk: &mut D, mut runs: Runs) -> Vec<Run> {
    walk_from(disk, &mut runs)
}

fn walk_from<D: Disk + ?Sized>(disk: &mut D, runs: &mut Runs) -> Vec<Run> {
    let mut out = Vec::new();
    while let Some(r) = runs.next(disk).unwrap() {
        assert!(r.len > 0, "empty run {r:?}");
        out.push(r);
        assert!(out.len() < 1_000_000, "runs do not end");
    }
    out
}

fn check_tiling(runs: &[Run], size: u64) {
    let mut at = 0;
    for r in runs {
        assert_eq!(r.start, at, "runs leave a gap or overlap at {r:?}");
        at += r.len;
    }
    assert_eq!(at, size);
}

fn check_bytes<D: Disk + ?Sized>(disk: &mut D, r: &Run, model: &[u8]) {
    let want = &model[r.start as usize..(r.start + r.len) as usize];
    if r.block.is_read() {
        let mut got = vec![0u8; r.len as usize];
        disk.read_at(r.start, &mut got).unwrap();
        assert!(got == want, "bytes of {r:?}");
    } else {
        assert!(want.iter().all(|&b| b == 0), "{r:?} is not data but the disk holds bytes there");
    }
}

/// Every block the run covers is what `block()` says, moved to its place in the run.
fn check_blocks<D: Disk + ?Sized>(disk: &mut D, r: &Run) {
    let bs = disk.block_size();
    let mut b = r.start / bs;
    while b * bs < r.start + r.len {
        let got = disk.block(b).unwrap();
        match (r.block, got) {
            // Host offsets differ by the distance between the run's start and the block's.
            (Block::Data { layer: l, host: h }, Block::Data { layer: m, host: g }) => {
                assert_eq!(l, m, "{r:?} block {b}");
                assert_eq!(h as i128 - r.start as i128, g as i128 - (b * bs) as i128, "{r:?} block {b}");
            }
            (want, got) => assert_eq!(got, want, "{r:?} block {b}"),
        }
        b += 1;
    }
}

fn continues(a: &Run, b: &Run) -> bool {
    match (a.block, b.block) {
        (Block::Data { layer: l, host: h }, Block::Data { layer: m, host: g }) => l == m && h + a.len == g,
        (x, y) => x == y,
    }
}

/// A disk that only has the required methods (the trait's default `block_runs`).
struct PerBlock<'a, D: ?Sized>(&'a mut D);

impl<D: Disk + ?Sized> Disk for PerBlock<'_, D> {
    fn virtual_size(&self) -> u64 {
        self.0.virtual_size()
    }
    fn block_size(&self) -> u64 {
        self.0.block_size()
    }
    fn block(&mut self, b: u64) -> vdi::Result<Block> {
        self.0.block(b)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> vdi::Result<()> {
        self.0.read_at(offset, buf)
    }
    fn read_host(&mut self, layer: usize, host: u64, buf: &mut [u8]) -> vdi::Result<()> {
        self.0.read_host(layer, host, buf)
    }
}

const BS: u32 = 64 * 1024;

/// 40 blocks (the last partial): data written out of order (so slots are not in disk
/// order), a block zeroed after being written, ZERO entries, runs of FREE.
fn scattered() -> (VdiImage<MemStorage>, Vec<u8>) {
    let bs = BS as u64;
    let size = 40 * bs - 3 * 512;
    let mut img = image(size, BS, 1);
    let mut model = vec![0u8; size as usize];
    for (i, b) in [7u64, 3, 4, 5, 20, 21, 39, 0, 22, 6].iter().enumerate() {
        let len = if *b == 39 { (size - 39 * bs) as usize } else { bs as usize };
        put(&mut img, &mut model, b * bs, &pattern(i as u64 + 1, len));
    }
    put(&mut img, &mut model, 30 * bs + 100, &pattern(99, 10));
    put(&mut img, &mut model, 30 * bs + 100, &[0; 10]);
    img.discard(10 * bs, 4 * bs, &mut NoMonitor).unwrap();
    img.discard(21 * bs, bs, &mut NoMonitor).unwrap();
    model[(21 * bs) as usize..(22 * bs) as usize].fill(0);
    (img, model)
}

#[test]
fn an_image_conforms() {
    let (mut img, model) = scattered();
    conform(&mut img, &model);
    // The map shows the ZERO entries and the FREE runs as separate runs.
    let map = walk(&mut img, Runs::map());
    assert!(map.iter().any(|r| r.block == Block::Zero { layer: 0 }), "{map:?}");
    assert!(map.iter().any(|r| r.block == Block::Free), "{map:?}");
}

#[test]
fn an_empty_image_and_a_full_one_conform() {
    let mut img = image(5 * BS as u64, BS, 7);
    conform(&mut img, &vec![0u8; 5 * BS as usize]);
    assert_eq!(walk(&mut img, Runs::map()).len(), 1);
    let mut model = vec![0u8; 5 * BS as usize];
    let mut img = image(5 * BS as u64, BS, 8);
    put(&mut img, &mut model, 0, &pattern(5, 5 * BS as usize));
    conform(&mut img, &model);
    // Written front to back: one data run, one host read.
    assert_eq!(walk(&mut img, Runs::map()).len(), 1);
}

#[test]
fn a_chain_conforms() {
    let bs = BS as u64;
    let (mut base, mut model) = scattered();
    let mut d1 = diff_of(&base, 2);
    // d1: a partial write over base data, a new block, zeros over base data (ZERO entry).
    for (at, data) in [(3 * bs + 5, pattern(30, 100)), (15 * bs, pattern(31, bs as usize)), (25 * bs, pattern(32, 3))] {
        // A diff's new block is filled from the parent: write through a chain of two.
        let mut c = Chain::from_set(vec![base, d1]).unwrap();
        c.write_at(at, &data).unwrap();
        model[at as usize..at as usize + data.len()].copy_from_slice(&data);
        let mut l = c.into_layers();
        d1 = l.pop().unwrap();
        base = l.pop().unwrap();
    }
    let d2 = diff_of(&d1, 3);
    let mut c = Chain::from_set(vec![base, d1, d2]).unwrap();
    for (at, data) in [(4 * bs, vec![0u8; bs as usize]), (16 * bs + 9, pattern(40, 5000)), (39 * bs, pattern(41, 7))] {
        c.write_at(at, &data).unwrap();
        model[at as usize..at as usize + data.len()].copy_from_slice(&data);
    }
    assert_eq!(c.layer_count(), 3);
    conform(&mut c, &model);
    let map = walk(&mut c, Runs::map());
    let layers: std::collections::BTreeSet<_> = map.iter().filter_map(|r| r.block.layer()).collect();
    assert_eq!(layers.into_iter().collect::<Vec<_>>(), [0, 1, 2], "{map:?}");
}

#[test]
fn a_diff_alone_has_parent_blocks_that_fail_to_read() {
    let (base, _) = scattered();
    let d = diff_of(&base, 2);
    let mut c = Chain::from_set(vec![base, d]).unwrap();
    c.write_at(2 * BS as u64, &pattern(9, 100)).unwrap();
    let mut d = c.into_layers().pop().unwrap();
    let map = walk(&mut d, Runs::map());
    assert!(map.iter().any(|r| r.block == Block::Parent), "{map:?}");
    assert!(Runs::host_order(&mut d).unwrap().is_none());
    let e = vdi::export_disk(&mut d, &mut Vec::new(), &mut NoMonitor).unwrap_err();
    assert_eq!(e.kind(), "needs-parent", "{e}");
}

#[test]
fn blocks_larger_than_the_chunk_are_read_in_chunks() {
    let bs: u32 = 16 << 20;
    let size = 2 * bs as u64 + 4096;
    let mut img = image(size, bs, 11);
    let mut model = vec![0u8; size as usize];
    put(&mut img, &mut model, bs as u64 - 10, &pattern(1, 20));
    put(&mut img, &mut model, 2 * bs as u64, &pattern(2, 4096));
    let runs = walk(&mut img, Runs::export());
    assert!(runs.iter().filter(|r| r.block.is_read()).all(|r| r.len <= CHUNK as u64), "{runs:?}");
    assert!(runs.iter().filter(|r| r.block.is_read()).count() >= 4, "{runs:?}");
    let mut out = Vec::new();
    vdi::export_disk(&mut img, &mut out, &mut NoMonitor).unwrap();
    assert!(out == model);
}

#[test]
fn host_order_refuses_a_block_past_the_end_of_the_file() {
    let (img, model) = scattered();
    let mut bytes = img.into_storage().into_vec();
    bytes.truncate(bytes.len() - 1);
    let mut img = VdiImage::open_with(MemStorage::from_vec(bytes), vdi::OpenOptions { lenient: true }).unwrap();
    let mut host = Runs::host_order(&mut img).unwrap().unwrap();
    let e = loop {
        match host.next(&mut img) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a block past the end must fail the walk"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.kind(), "block-past-end", "{e}");
    // The same error a read of the disk gives.
    let mut buf = vec![0u8; model.len()];
    assert_eq!(img.read_at(0, &mut buf).unwrap_err().to_string(), e.to_string());
}

#[test]
fn a_disk_copied_into_a_new_image_reads_the_same() {
    use vdi::{export_disk, DiskMut, ImageSink};
    let (mut img, model) = scattered();
    let mut dst = image(img.virtual_size(), BS, 50);
    export_disk(&mut img, &mut ImageSink(&mut dst), &mut NoMonitor).unwrap();
    DiskMut::flush(&mut dst).unwrap();
    let mut got = vec![0u8; model.len()];
    dst.read_at(0, &mut got).unwrap();
    assert!(got == model);
    // Zero blocks stay unallocated: only the blocks holding bytes are stored.
    let data_blocks = model.chunks(BS as usize).filter(|c| c.iter().any(|&b| b != 0)).count();
    assert_eq!(dst.header().blocks_allocated as usize, data_blocks);
}

/// More runs than one call of the bulk view gathers (`RUNS_PER_CALL`): alternating ZERO and
/// FREE entries, and a few data blocks among them, still tile and match.
#[test]
fn a_map_more_fragmented_than_one_read_ahead_conforms() {
    let n = 3 * vdi::disk::RUNS_PER_CALL as u64 + 17;
    let bs = BS as u64;
    let mut img = image(n * bs, BS, 60);
    let mut model = vec![0u8; (n * bs) as usize];
    for b in (0..n).step_by(2) {
        img.set_entry(b as u32, vdi::Entry::Zero).unwrap();
    }
    for b in [1u64, 4097, 8191, n - 2] {
        put(&mut img, &mut model, b * bs + 7, &pattern(b, 100));
    }
    img.flush().unwrap();
    conform(&mut img, &model);
    assert!(walk(&mut img, Runs::map()).len() as u64 >= n - 8);
}
