//! Repair, then surgery, on any file. A dry run writes nothing. A repair that succeeds
//! leaves an image that opens strictly and checks clean, no longer than it was or than its
//! blocks in use need (a shared slot is copied), in which every block whose data was in the
//! file reads the same (shared slots and slots past blocks_in_image too); FREE and ZERO
//! blocks stay so. Then compact, discard and resize on the repaired image keep its content (or
//! refuse), stay clean, and allocate nothing the file's size does not justify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdi::{check, repair, Entry, MemStorage, NoMonitor, ReadAt, VdiImage};
use vdi_fuzz::{ref_block, Capped, RefBlock, Rng};

/// Blocks compared at most (each is read whole).
const MAX_BLOCKS: u64 = 2048;

/// What each block holds: `Some(bytes)` for data, `None` for FREE/ZERO.
fn snapshot<S: ReadAt>(img: &mut VdiImage<S>, blocks: u64) -> Vec<Option<Vec<u8>>> {
    let bs = img.block_size();
    let size = img.virtual_size();
    (0..blocks)
        .map(|b| match img.entry(b as u32).expect("map in the file") {
            Entry::Data(_) => {
                let n = bs.min(size - b * bs) as usize;
                let mut buf = vec![0u8; n];
                img.read_at(b * bs, &mut buf).expect("a clean image reads");
                Some(buf)
            }
            Entry::Free | Entry::Zero => None,
        })
        .collect()
}

fn same_reads(before: &[Option<Vec<u8>>], after: &[Option<Vec<u8>>], what: &str) {
    for (b, (x, y)) in before.iter().zip(after).enumerate() {
        let zx = x.as_ref().is_none_or(|d| d.iter().all(|&c| c == 0));
        let zy = y.as_ref().is_none_or(|d| d.iter().all(|&c| c == 0));
        match (x, y) {
            (Some(x), Some(y)) => assert!(x == y, "{what}: block {b} changed"),
            _ => assert_eq!(zx, zy, "{what}: block {b} changed"),
        }
    }
}

fn clean(bytes: &[u8], what: &str) {
    let r = check(MemStorage::from_vec(bytes.to_vec()), &mut NoMonitor).expect("opens");
    assert_eq!(r.corruptions, 0, "{what}: {:?}", r.findings);
}

fuzz_target!(|data: &[u8]| {
    // Repair may grow the file (a copy per shared slot, up to 128 MiB each): on a storage
    // with a 64 MiB quota, as the fuzzer's memory is not the engine's bound.
    let capped = || Capped { inner: MemStorage::from_vec(data.to_vec()), cap: 64 << 20 };
    let (_, out) = match repair(capped(), true, &mut NoMonitor) {
        Ok(x) => x,
        Err(_) => return,
    };
    assert!(out.inner.as_slice() == data, "a dry run wrote");
    let before = vdi::read_header(&MemStorage::from_vec(data.to_vec())).ok();
    let (rep, out) = match repair(capped(), false, &mut NoMonitor) {
        Ok((rep, out)) => (rep, out.inner),
        // Only the quota may stop it after its dry run succeeded.
        Err(e) if e.kind() == "no-space" => return,
        Err(e) => panic!("repair failed after its dry run succeeded: {e}"),
    };
    let after = rep.after.as_ref().expect("not a dry run");
    assert!(after.is_clean(), "repaired image is not clean: {:?}", after.findings);
    let bytes = out.into_vec();
    let header = vdi::read_header(&MemStorage::from_vec(bytes.clone())).expect("a repaired header reads");
    let needed = header.offset_data as u64 + after.allocated_blocks * header.block_stride();
    assert!(
        bytes.len() as u64 <= needed.max(data.len() as u64),
        "repair grew the file from {} to {} (its blocks need {needed})",
        data.len(),
        bytes.len()
    );
    // A header may put the data area anywhere (near 4 GiB in a tiny file) and growing a fixed
    // image allocates there: surgery writes to a storage with a 64 MiB quota.
    let storage = Capped { inner: MemStorage::from_vec(bytes.clone()), cap: 64 << 20 };
    let mut img = VdiImage::open(storage).expect("a repaired image opens");
    let h = img.header().clone();
    // Blocks that read unambiguously before still read the same.
    if let Some(hb) = before.filter(|hb| hb.block_size == h.block_size && hb.offset_data == h.offset_data) {
        let blocks = (img.blocks_covering_disk() as u64).min(hb.blocks_in_image as u64).min(MAX_BLOCKS);
        for b in 0..blocks {
            match ref_block(data, &hb, b) {
                Ok(RefBlock::Data { host, .. }) => {
                    let n = h.block_size.min((h.virtual_size() - b * h.block_size as u64) as u32) as usize;
                    let mut got = vec![0u8; n];
                    img.read_at(b * h.block_size as u64, &mut got).expect("kept block reads");
                    assert!(got[..] == data[host as usize..host as usize + n], "block {b} changed in repair");
                }
                Ok(RefBlock::Zeros) => {
                    assert!(matches!(img.entry(b as u32).unwrap(), Entry::Free | Entry::Zero), "block {b}")
                }
                _ => {}
            }
        }
    }
    // Surgery on the repaired image.
    if img.is_diff() || h.version == vdi::header::VDI_VERSION_0_2 {
        return;
    }
    let blocks = (img.blocks_covering_disk() as u64).min(MAX_BLOCKS);
    let base = snapshot(&mut img, blocks);
    let mut rng = Rng::from_bytes(data);
    let size = img.virtual_size();
    let bs = img.block_size();
    match rng.below(3) {
        0 => {
            if img.compact(rng.below(2) == 0, &mut NoMonitor).is_ok() {
                let b = img.into_storage().inner.into_vec();
                clean(&b, "compact");
                let mut img = VdiImage::open(MemStorage::from_vec(b)).unwrap();
                same_reads(&base, &snapshot(&mut img, blocks), "compact");
            }
        }
        1 => {
            let off = rng.below(size + 1);
            let len = rng.below(size - off + 1).min(4 * bs);
            if img.discard(off, len, &mut NoMonitor).is_ok() {
                let b = img.into_storage().inner.into_vec();
                clean(&b, "discard");
                let mut img = VdiImage::open(MemStorage::from_vec(b)).unwrap();
                let mut want = base.clone();
                for (k, blk) in want.iter_mut().enumerate() {
                    let (s, e) = (k as u64 * bs, (k as u64 * bs + bs).min(size));
                    let (a, z) = (off.max(s), (off + len).min(e));
                    if a < z {
                        if let Some(d) = blk.as_mut() {
                            d[(a - s) as usize..(z - s) as usize].fill(0);
                        }
                    }
                }
                same_reads(&want, &snapshot(&mut img, blocks), "discard");
            }
        }
        _ => {
            // Growing a fixed image allocates its new blocks (whole ones: 128 MiB each at
            // most), so it grows only when its blocks are small; at most 16 MiB in any case.
            let fixed = img.header().kind() == Some(vdi::ImageType::Fixed);
            let cap = if fixed && bs > 1 << 20 { 0 } else { 16 << 20 };
            let grow = rng.below(8 * bs + 1).min(cap);
            let new = if rng.below(2) == 0 { size + grow } else { rng.below(size + 1) };
            if img.resize(new, &mut NoMonitor).is_ok() {
                let b = img.into_storage().inner.into_vec();
                clean(&b, "resize");
                let mut img = VdiImage::open(MemStorage::from_vec(b)).unwrap();
                let n = (img.blocks_covering_disk() as u64).min(blocks);
                let mut after = snapshot(&mut img, n);
                // The part of the old last block beyond the old end reads as zeros after a grow.
                let mut want: Vec<_> = base[..n as usize].to_vec();
                for (k, w) in want.iter_mut().enumerate() {
                    let end = (k as u64 * bs + bs).min(img.virtual_size()).min(size);
                    if let Some(d) = w.as_mut() {
                        d.truncate((end - k as u64 * bs) as usize);
                    }
                }
                for (k, a) in after.iter_mut().enumerate() {
                    let end = (k as u64 * bs + bs).min(img.virtual_size()).min(size);
                    if let Some(d) = a.as_mut() {
                        assert!(d[(end - k as u64 * bs) as usize..].iter().all(|&c| c == 0), "grown tail");
                        d.truncate((end - k as u64 * bs) as usize);
                    }
                }
                same_reads(&want, &after, "resize");
            }
        }
    }
});
