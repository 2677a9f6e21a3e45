//! Open + read of random ranges: the input is the whole file. Open reads only the header;
//! every read either returns exactly what the reference reader says the blocks hold, or
//! fails with the kind of error the reference gives for the first unreadable block (never
//! invented zeros); no single storage read is larger than the file; `extents` agrees with
//! the reference; a small disk's raw export equals the reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdi::{export_raw, BlockState, NoMonitor, OpenOptions, VdiImage};
use vdi_fuzz::{ranges, ref_block, ref_read, Counting, RefBlock, Rng, Unreadable};

fn exercise(data: &[u8], s: &Counting, mut img: VdiImage<&Counting>, strict: bool) {
    let len = data.len() as u64;
    let h = img.header().clone();
    let size = img.virtual_size();
    let bs = img.block_size();
    if strict {
        // A strict open has checked that the whole map is in the file (an empty one needs none).
        assert!(h.blocks_in_image == 0 || h.offset_bmap as u64 + h.map_bytes() <= len);
        assert!(img.layout_error().is_none());
    }
    let mut rng = Rng::from_bytes(data);
    for (off, n) in ranges(&mut rng, size, bs, 8, 256 * 1024) {
        let mut buf = vec![0xA5u8; n];
        s.reset();
        let got = img.read_at(off, &mut buf);
        assert!(s.largest.get() <= len, "a read of {} bytes from a {len}-byte file", s.largest.get());
        match (got, ref_read(data, &h, off, n)) {
            (Ok(()), Ok(want)) => assert!(buf == want, "read {off}+{n} returned wrong data"),
            (Err(e), Err(why)) => assert_eq!(e.kind(), why.kind(), "read {off}+{n}: {e}"),
            (Ok(()), Err(why)) => panic!("read {off}+{n} succeeded, the reference says {why:?}"),
            (Err(e), Ok(_)) => panic!("read {off}+{n} failed ({e}), the reference reads it"),
        }
    }
    // Extents: each run's state and host offset are the reference's, and they tile the disk.
    let mut next = 0u64;
    let mut bad = None;
    let r = img.extents(|e| {
        assert_eq!(e.start, next, "extents tile the disk");
        assert!(e.length > 0);
        next += e.length;
        let first = e.start / bs;
        match ref_block(data, &h, first) {
            Ok(RefBlock::Data { host, .. }) => {
                assert_eq!(e.state, BlockState::Data);
                assert_eq!(e.host_offset, Some(host));
            }
            Ok(RefBlock::Zeros) | Err(Unreadable::NeedsParent) => assert_ne!(e.state, BlockState::Data),
            // Extents report where data is mapped even when it is not all in the file.
            Err(Unreadable::PastEnd) => assert_eq!(e.state, BlockState::Data),
            Err(Unreadable::MapTruncated) => bad = Some(first),
        }
        Ok(())
    });
    match r {
        Ok(()) => {
            assert_eq!(next, size, "extents cover the disk");
            assert!(bad.is_none());
        }
        Err(e) => assert_eq!(e.kind(), "truncated", "{e}"),
    }
    // A raw export of a small disk equals the reference, or fails like one of the bad blocks
    // (it looks ahead to merge runs, so a later block's truncated map entry may come first).
    if size <= 4 << 20 {
        let mut sink = Vec::new();
        let got = export_raw(&mut img, &mut sink, &mut NoMonitor);
        let want = ref_read(data, &h, 0, size as usize);
        match (got, want) {
            (Ok(_), Ok(want)) => assert!(sink == want, "export differs"),
            (Err(e), Err(_)) => {
                let bad: Vec<&str> =
                    (0..size.div_ceil(bs)).filter_map(|b| ref_block(data, &h, b).err()).map(|w| w.kind()).collect();
                assert!(bad.contains(&e.kind()), "export: {e}; unreadable blocks: {bad:?}");
            }
            (got, want) => panic!("export {:?} vs reference {:?}", got.map(|_| ()), want.map(|_| ())),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let s = Counting::new(data);
    let strict = VdiImage::open(&s);
    assert!(s.largest.get() <= 0x200, "open reads only the header");
    let ok = strict.is_ok();
    match strict {
        Ok(img) => exercise(data, &s, img, true),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    s.reset();
    match VdiImage::open_with(&s, OpenOptions { lenient: true }) {
        Ok(img) => exercise(data, &s, img, false),
        Err(e) => assert!(!ok, "lenient open refused what strict open accepted: {e}"),
    }
});
