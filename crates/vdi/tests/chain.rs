//! Differencing chains: base + two diffs with ZERO entries and partial blocks read back
//! equal to a model; ordering by UUID from any order; every broken-chain error; commit,
//! stream and compact of the top keep the chain's content; commit survives a stop after
//! any write.

mod common;
use common::pattern;
use std::cell::Cell;
use std::rc::Rc;

use vdi::error::ChainError;
use vdi::{
    create, export_disk, Chain, CreateOptions, Entry, MemStorage, NoMonitor, ReadAt, Storage,
    StorageError, Uuid, VdiError, VdiImage,
};

const BS: u32 = 64 * 1024;
const BLOCKS: u64 = 12;

fn base_image(id: u128) -> VdiImage<MemStorage> {
    let mut o = CreateOptions::new(BLOCKS * BS as u64 - 1536, Uuid::from_u128(id), Uuid::from_u128(id + 1000));
    o.block_size = BS;
    create(MemStorage::new(), &o, &mut NoMonitor).unwrap()
}

fn diff_of(parent: &VdiImage<MemStorage>, id: u128) -> VdiImage<MemStorage> {
    let mut o = CreateOptions::diff_of(parent.header(), Uuid::from_u128(id), Uuid::from_u128(id + 1000));
    o.block_size = BS;
    create(MemStorage::new(), &o, &mut NoMonitor).unwrap()
}

fn apply(chain: &mut Chain<MemStorage>, model: &mut [u8], writes: &[(u64, Vec<u8>)]) {
    for (o, d) in writes {
        chain.write_at(*o, d).unwrap();
        model[*o as usize..*o as usize + d.len()].copy_from_slice(d);
    }
}

fn read_all(chain: &mut Chain<MemStorage>) -> Vec<u8> {
    let mut b = vec![0u8; chain.virtual_size() as usize];
    chain.read_at(0, &mut b).unwrap();
    b
}

fn bs() -> u64 {
    BS as u64
}

/// base (blocks 0..6 data) <- d1 (partial writes, zeros over data) <- d2 (more of both).
fn three_layers() -> (Vec<VdiImage<MemStorage>>, Vec<u8>) {
    let base = base_image(1);
    let size = base.virtual_size() as usize;
    let mut model = vec![0u8; size];
    let mut chain = Chain::resolve(base, vec![]).unwrap();
    apply(&mut chain, &mut model, &[(0, pattern(1, 6 * BS as usize))]);
    let base = chain.into_layers().pop().unwrap();
    let d1 = diff_of(&base, 2);
    let mut chain = Chain::resolve(d1, vec![base]).unwrap();
    apply(
        &mut chain,
        &mut model,
        &[
            (bs() + 100, pattern(2, 300)),                  // partial block over parent data
            (2 * bs(), vec![0u8; BS as usize]),             // whole zero block over data: ZERO
            (8 * bs() + 7, pattern(3, 1000)),               // partial block over nothing
            (4 * bs() - 50, vec![0u8; 100]),                // zeros spanning two data blocks
        ],
    );
    let mut layers = chain.into_layers();
    let d2 = diff_of(layers.last().unwrap(), 3);
    layers.push(d2);
    let top = layers.pop().unwrap();
    let mut chain = Chain::resolve(top, layers).unwrap();
    apply(
        &mut chain,
        &mut model,
        &[
            (2 * bs() + 10, pattern(4, 20)),                 // partial over a ZERO entry below
            (bs(), pattern(5, BS as usize)),                 // whole block
            (5 * bs(), vec![0u8; BS as usize]),              // zeros over base data
            (size as u64 - 700, pattern(6, 700)),            // the very end
        ],
    );
    assert_eq!(read_all(&mut chain), model);
    (chain.into_layers(), model)
}

#[test]
fn chain_reads_equal_the_model() {
    let (layers, model) = three_layers();
    // ZERO entries exist where zeros covered data below.
    let mut d1 = VdiImage::open(layers[1].storage().clone()).unwrap();
    assert_eq!(d1.entry(2).unwrap(), Entry::Zero);
    assert_eq!(d1.entry(0).unwrap(), Entry::Free);
    // Reading a FREE block of a lone diff names the parent.
    let e = {
        let mut b = [0u8; 1];
        d1.read_at(0, &mut b).unwrap_err()
    };
    assert_eq!(e.kind(), "needs-parent");
    assert!(e.to_string().contains(&Uuid::from_u128(1).to_string()), "{e}");
    // Any order of the three files gives the same chain.
    for order in [[2, 0, 1], [1, 2, 0], [0, 1, 2]] {
        let imgs: Vec<_> = order.iter().map(|&i| VdiImage::open(layers[i].storage().clone()).unwrap()).collect();
        let mut c = Chain::from_set(imgs).unwrap();
        assert_eq!(c.layers().len(), 3);
        assert_eq!(c.top().header().uuid_create, Uuid::from_u128(3));
        assert_eq!(read_all(&mut c), model);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        // Block sources: block 1 from the top, block 2 from d2's data over d1's ZERO...
        assert!(matches!(c.source(1).unwrap(), vdi::Source::Data { layer: 2, .. }));
        assert!(matches!(c.source(0).unwrap(), vdi::Source::Data { layer: 0, .. }));
        assert_eq!(c.source(10).unwrap(), vdi::Source::Free);
        // Flattened export.
        let mut out = Vec::new();
        export_disk(&mut c, &mut out, &mut NoMonitor).unwrap();
        assert_eq!(out, model);
    }
}

fn open_all(layers: &[VdiImage<MemStorage>], which: &[usize]) -> Vec<VdiImage<MemStorage>> {
    which.iter().map(|&i| VdiImage::open(layers[i].storage().clone()).unwrap()).collect()
}

#[test]
fn broken_chains_are_named() {
    let (layers, _) = three_layers();
    // Missing parent: d2 and base without d1.
    let e = Chain::from_set(open_all(&layers, &[2, 0])).unwrap_err();
    assert_eq!(e.kind(), "missing-parent", "{e}");
    assert!(e.to_string().contains(&Uuid::from_u128(2).to_string()), "{e}");
    let e = Chain::resolve(open_all(&layers, &[2]).pop().unwrap(), vec![]).unwrap_err();
    assert_eq!(e.kind(), "missing-parent");
    // Two children of one parent.
    let other = diff_of(&VdiImage::open(layers[1].storage().clone()).unwrap(), 77);
    let mut set = open_all(&layers, &[0, 1, 2]);
    set.push(other);
    let e = Chain::from_set(set).unwrap_err();
    assert_eq!(chain_error(&e), &ChainError::Fork { parent: Uuid::from_u128(2), first: Uuid::from_u128(3), second: Uuid::from_u128(77) });
    assert!(e.to_string().contains("both claim"), "{e}");
    // Two images with one UUID.
    let e = Chain::from_set(open_all(&layers, &[0, 1, 1])).unwrap_err();
    assert_eq!(chain_error(&e), &ChainError::DuplicateUuid { uuid: Uuid::from_u128(2), count: 2, needed_by: None });
    assert!(e.to_string().contains("same image UUID"), "{e}");
    // Unrelated images.
    let mut set = open_all(&layers, &[0, 1, 2]);
    set.push(base_image(500));
    let e = Chain::from_set(set).unwrap_err();
    assert_eq!(chain_error(&e), &ChainError::SeparateChains { tops: vec![Uuid::from_u128(3), Uuid::from_u128(500)] });
    assert!(e.to_string().contains("separate chains"), "{e}");
    // A cycle: d1 made to name d2 as its parent.
    let mut s1 = layers[1].storage().clone();
    s1.write_at(0x1A8, &Uuid::from_u128(3).to_bytes_le()).unwrap();
    let imgs = vec![VdiImage::open(s1).unwrap(), VdiImage::open(layers[2].storage().clone()).unwrap()];
    let e = Chain::from_set(imgs).unwrap_err();
    assert_eq!(chain_error(&e).kind(), "cycle");
    assert!(e.to_string().contains("cycle"), "{e}");
    // The parent was written after the snapshot: a warning, not an error.
    let mut s0 = layers[0].storage().clone();
    s0.write_at(0x198, &Uuid::from_u128(4242).to_bytes_le()).unwrap();
    let mut imgs = open_all(&layers, &[1, 2]);
    imgs.push(VdiImage::open(s0).unwrap());
    let c = Chain::from_set(imgs).unwrap();
    assert_eq!(c.warnings().len(), 1);
    assert!(c.warnings()[0].contains("written after"), "{:?}", c.warnings());
    // Block size mismatch.
    let mut o = CreateOptions::diff_of(layers[0].header(), Uuid::from_u128(90), Uuid::from_u128(91));
    o.block_size = BS * 2;
    let odd = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    let e = Chain::resolve(odd, open_all(&layers, &[0])).unwrap_err();
    assert_eq!(
        chain_error(&e),
        &ChainError::BlockSizeMismatch {
            child: Uuid::from_u128(90),
            child_block_size: BS * 2,
            parent: Uuid::from_u128(1),
            parent_block_size: BS
        }
    );
    assert!(e.to_string().contains("byte blocks"), "{e}");
    // A null parent link.
    let mut s1 = layers[1].storage().clone();
    s1.write_at(0x1A8, &Uuid::nil().to_bytes_le()).unwrap();
    let e = Chain::resolve(VdiImage::open(s1).unwrap(), open_all(&layers, &[0])).unwrap_err();
    assert_eq!(chain_error(&e), &ChainError::NullParent { child: Uuid::from_u128(2) });
    assert!(e.to_string().contains("null parent UUID"), "{e}");
}

/// The chain error inside a [`VdiError::Chain`] (its kind is always "broken-chain").
fn chain_error(e: &VdiError) -> &ChainError {
    assert_eq!(e.kind(), "broken-chain", "{e}");
    match e {
        VdiError::Chain(c) => c,
        _ => panic!("not a chain error: {e:?}"),
    }
}

#[test]
fn commit_stream_and_compact_keep_the_content() {
    let (layers, model) = three_layers();
    // Commit the top into d1: [base, d1] now reads the model, the top is empty.
    let mut c = Chain::from_set(open_all(&layers, &[0, 1, 2])).unwrap();
    let st = c.commit(Uuid::from_u128(555), false, &mut NoMonitor).unwrap();
    assert!(st.blocks_merged >= 2 && st.blocks_zeroed >= 1, "{st:?}");
    assert_eq!(read_all(&mut c), model);
    let l = c.into_layers();
    let mut two = Chain::from_set(open_all(&l, &[0, 1])).unwrap();
    assert_eq!(read_all(&mut two), model);
    assert_eq!(l[2].header().blocks_allocated, 0);
    let mut again = Chain::from_set(open_all(&l, &[0, 1, 2])).unwrap();
    assert!(again.warnings().is_empty(), "{:?}", again.warnings());
    assert_eq!(read_all(&mut again), model);
    for (i, layer) in l.iter().enumerate().take(3) {
        let r = vdi::check(layer.storage().clone(), &mut NoMonitor).unwrap();
        assert!(r.is_clean(), "layer {i}: {:?}", r.findings);
    }
    // Stream d1 into d2 (d2 links to base), then base into d2: d2 stands alone.
    let mut c = Chain::from_set(open_all(&layers, &[0, 1, 2])).unwrap();
    c.stream(&mut NoMonitor).unwrap();
    assert_eq!(c.layers().len(), 2);
    assert_eq!(read_all(&mut c), model);
    c.stream(&mut NoMonitor).unwrap();
    let top = c.into_layers().pop().unwrap();
    let mut alone = VdiImage::open(top.into_storage()).unwrap();
    assert!(!alone.is_diff());
    let mut b = vec![0u8; model.len()];
    alone.read_at(0, &mut b).unwrap();
    assert_eq!(b, model);
    // Compact: a block rewritten with the parent's own data becomes FREE.
    let mut c = Chain::from_set(open_all(&layers, &[0, 1, 2])).unwrap();
    let base_block = model[3 * BS as usize..4 * BS as usize - 50].to_vec();
    c.write_at(3 * bs(), &base_block).unwrap();
    let st = c.compact_top(&mut NoMonitor).unwrap();
    assert!(st.blocks_zeroed >= 1, "{st:?}");
    assert_eq!(read_all(&mut c), model);
    let top = c.into_layers().pop().unwrap();
    assert_eq!(VdiImage::open(top.storage().clone()).unwrap().entry(3).unwrap(), Entry::Free);
}

/// MemStorage whose writes fail once a budget shared by every layer is spent.
struct Faulty {
    inner: MemStorage,
    left: Rc<Cell<usize>>,
}

impl ReadAt for Faulty {
    fn read_at(&self, o: u64, b: &mut [u8]) -> Result<(), StorageError> {
        self.inner.read_at(o, b)
    }
    fn len(&self) -> Result<u64, StorageError> {
        self.inner.len()
    }
}

impl Storage for Faulty {
    fn write_at(&mut self, o: u64, b: &[u8]) -> Result<(), StorageError> {
        if self.left.get() == 0 {
            return Err(StorageError::new("injected fault"));
        }
        self.left.set(self.left.get() - 1);
        self.inner.write_at(o, b)
    }
    fn set_len(&mut self, n: u64) -> Result<(), StorageError> {
        if self.left.get() == 0 {
            return Err(StorageError::new("injected fault"));
        }
        self.left.set(self.left.get() - 1);
        self.inner.set_len(n)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[test]
fn commit_and_stream_are_crash_safe() {
    let (layers, model) = three_layers();
    for op in ["commit", "stream"] {
        let mut n = 0usize;
        loop {
            let left = Rc::new(Cell::new(n));
            let imgs: Vec<_> = layers
                .iter()
                .map(|l| VdiImage::open(Faulty { inner: l.storage().clone(), left: left.clone() }).unwrap())
                .collect();
            let top = imgs.into_iter().rev().collect::<Vec<_>>();
            let mut it = top.into_iter();
            let t = it.next().unwrap();
            let mut c = Chain::resolve(t, it.collect()).unwrap();
            let done = match op {
                "commit" => c.commit(Uuid::from_u128(555), false, &mut NoMonitor).is_ok(),
                _ => c.stream(&mut NoMonitor).is_ok(),
            };
            let stores: Vec<MemStorage> = c.into_layers().into_iter().map(|l| l.into_storage().inner).collect();
            // Reopen what is left; for stream the top may already stand without d1.
            let imgs: Vec<_> = stores.iter().map(|s| VdiImage::open(s.clone()).unwrap()).collect();
            let top = imgs.into_iter().rev().collect::<Vec<_>>();
            let mut it = top.into_iter();
            let t = it.next().unwrap();
            let mut c = Chain::resolve(t, it.collect()).unwrap();
            assert_eq!(read_all(&mut c), model, "{op} stopped after write {n}");
            for (i, s) in stores.iter().enumerate() {
                let r = vdi::check(s.clone(), &mut NoMonitor).unwrap();
                assert_eq!(r.corruptions, 0, "{op} stopped after write {n}: layer {i}: {:?}", r.findings);
            }
            if done {
                break;
            }
            n += 1;
            assert!(n < 10_000);
        }
        assert!(n > 3, "{op} made only {n} writes");
    }
}

/// What a compaction tool leaves in `s`: block `block`'s data moved to slot
/// `blocks_in_image + 1` (the file grown to hold it), `blocks_allocated` set to `count`
/// (`blocks_in_image + 2` covers it; `blocks_in_image + 1` leaves it past the count).
fn move_past_blocks(s: &MemStorage, block: u32, count: u32) -> MemStorage {
    let mut img = VdiImage::open(s.clone()).unwrap();
    let h = img.header().clone();
    let Entry::Data(slot) = img.entry(block).unwrap() else { panic!("block {block} is stored") };
    let to = h.blocks_in_image + 1;
    let at = |s: u32| h.offset_data as u64 + s as u64 * bs();
    let mut s = s.clone();
    let mut data = vec![0u8; BS as usize];
    s.read_at(at(slot), &mut data).unwrap();
    s.set_len(at(to)).unwrap();
    s.write_at(at(to), &data).unwrap();
    s.write_at(h.offset_bmap as u64 + 4 * block as u64, &to.to_le_bytes()).unwrap();
    s.write_at(0x184, &count.to_le_bytes()).unwrap();
    s
}

/// A chain over `stores` (base first).
fn chain_of(stores: &[MemStorage]) -> Chain<MemStorage> {
    let mut imgs: Vec<_> = stores.iter().map(|s| VdiImage::open(s.clone()).unwrap()).collect();
    let top = imgs.pop().unwrap();
    Chain::resolve(top, imgs).unwrap()
}

#[test]
fn layers_with_slots_past_blocks_in_image() {
    let (layers, model) = three_layers();
    let stores: Vec<MemStorage> = layers.iter().map(|l| l.storage().clone()).collect();
    let nb = layers[2].header().blocks_in_image;
    // The top with slots past blocks_in_image: commit and stream refuse it before writing
    // anything (a new block would go past the map's range); so does commit for a parent.
    let top_past = [stores[0].clone(), stores[1].clone(), move_past_blocks(&stores[2], 1, nb + 2)];
    // (The top's first block is ZERO over the parent's data: a commit would write the
    // parent's map first, no new block needed.)
    let mut zero_first = stores[2].clone();
    zero_first.write_at(VdiImage::open(zero_first.clone()).unwrap().header().offset_bmap as u64, &vdi::BLOCK_ZERO.to_le_bytes()).unwrap();
    let mid_past = [stores[0].clone(), move_past_blocks(&stores[1], 8, nb + 2), zero_first];
    for (what, set) in [("top", &top_past), ("parent", &mid_past)] {
        let mut c = chain_of(set);
        let mut want = model.clone();
        if what == "parent" {
            want[..BS as usize].fill(0);
        }
        assert_eq!(read_all(&mut c), want, "{what}: reads as before");
        let e = c.commit(Uuid::from_u128(555), false, &mut NoMonitor).unwrap_err();
        assert!(e.kind() == "unsupported" && e.to_string().contains("past blocks_in_image"), "{what}: {e}");
        if what == "top" {
            let e = c.stream(&mut NoMonitor).unwrap_err();
            assert!(e.kind() == "unsupported" && e.to_string().contains("past blocks_in_image"), "{e}");
        }
        let left: Vec<MemStorage> = c.into_layers().into_iter().map(|l| l.into_storage()).collect();
        assert_eq!(&left[..], &set[..], "{what}: nothing written");
    }
    // Compact of the top moves such slots below blocks_in_image without loss ...
    let mut c = chain_of(&top_past);
    c.compact_top(&mut NoMonitor).unwrap();
    assert_eq!(read_all(&mut c), model);
    let top = c.into_layers().pop().unwrap();
    assert!(vdi::check(top.into_storage(), &mut NoMonitor).unwrap().is_clean());
    // ... and refuses a slot past the count (packing would cut it away).
    let uncounted = [stores[0].clone(), stores[1].clone(), move_past_blocks(&stores[2], 1, nb + 1)];
    let mut c = chain_of(&uncounted);
    assert_eq!(read_all(&mut c), model);
    let e = c.compact_top(&mut NoMonitor).unwrap_err();
    assert!(e.kind() == "unsupported" && e.to_string().contains("run repair first"), "{e}");
    let left: Vec<MemStorage> = c.into_layers().into_iter().map(|l| l.into_storage()).collect();
    assert_eq!(&left[..], &uncounted[..], "nothing written");
}
