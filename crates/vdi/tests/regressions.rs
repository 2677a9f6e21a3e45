//! One test per fuzzer finding (targets in `fuzz/`), named after what went wrong, with the
//! crashing input as a byte literal (a header, field by field; the rest of the file is zeros
//! unless said otherwise). Each failed before its fix.

use std::cell::Cell;

use vdi::{check, repair, FindingKind, MemStorage, NoMonitor, OpenOptions, ReadAt, StorageError, VdiHeader, VdiImage};

/// `len` zero bytes with `parts` copied in at their offsets.
fn bytes(len: usize, parts: &[(usize, &[u8])]) -> Vec<u8> {
    let mut b = vec![0u8; len];
    for (at, p) in parts {
        b[*at..*at + p.len()].copy_from_slice(p);
    }
    b
}

/// Storage that records the largest read asked of it.
#[derive(Debug)]
struct Counting {
    data: MemStorage,
    largest: Cell<u64>,
}

impl ReadAt for Counting {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.largest.set(self.largest.get().max(buf.len() as u64));
        self.data.read_at(offset, buf)
    }
    fn len(&self) -> Result<u64, StorageError> {
        self.data.len()
    }
}

/// fuzz target `header`: a file of 72 to 75 bytes (signature and version 1.1, but not all of
/// header_size) made `VdiHeader::parse` index past the buffer: `vdi info` panicked.
#[test]
fn header_of_72_to_75_bytes_is_truncated_not_a_panic() {
    // The crashing input: 75 bytes.
    let crash = bytes(
        75,
        &[
            (0x00, b"<<< QEM"),                // text, cut short
            (0x40, &[0x7f, 0x10, 0xda, 0xbe]), // signature 0xBEDA107F
            (0x44, &[0x01, 0x00, 0x01, 0x00]), // version 1.1
            (0x48, &[0x00, 0x00, 0x00]),       // three bytes of header_size
        ],
    );
    for len in 0x48..=0x4B {
        let e = VdiHeader::parse(&crash[..len]).unwrap_err();
        assert_eq!(e.kind(), "truncated", "{len} bytes: {e}");
        assert!(e.to_string().contains("the VDI header needs 456 bytes"), "{e}");
        let e = VdiImage::open(MemStorage::from_vec(crash[..len].to_vec())).unwrap_err();
        assert_eq!(e.to_string(), format!("file too short: the VDI header needs 456 bytes, the file has {len}"));
        assert_eq!(check(MemStorage::from_vec(crash[..len].to_vec()), &mut NoMonitor).unwrap_err().kind(), "truncated");
    }
}

/// fuzz target `open_read`: an image opened leniently whose block map the file cuts short
/// (blocks_in_image 65535 in a 999-byte file) asked storage for a whole 4 KiB map page past
/// the end of the file, so even block 0, whose entry the file holds, failed to read.
#[test]
fn lenient_open_reads_the_map_entries_the_file_holds() {
    let crash = bytes(
        999,
        &[
            (0x00, b"<<< QEMU VM Virtual Disk Image >>>\n"), // text
            (0x40, &[0x7f, 0x10, 0xda, 0xbe]),               // signature
            (0x44, &[0x01, 0x00, 0x01, 0x00]),               // version 1.1
            (0x48, &[0x80, 0x01, 0x00, 0x00]),               // header_size 0x180
            (0x4C, &[0x01, 0x00, 0x00, 0x00]),               // image_type 1 (dynamic)
            (0x154, &[0x00, 0x02, 0x00, 0x00]),              // offset_bmap 0x200
            (0x158, &[0x00, 0x04, 0x00, 0x00]),              // offset_data 0x400 (overlaps the map)
            (0x168, &[0x00, 0x02, 0x00, 0x00]),              // sector_size 512
            (0x170, &[0, 0, 0x40, 0, 0, 0, 0, 0]),           // disk_size 4 MiB
            (0x178, &[0x00, 0x00, 0x10, 0x00]),              // block_size 1 MiB
            (0x180, &[0xff, 0xff, 0x00, 0x00]),              // blocks_in_image 65535
            (0x184, &[0x00, 0x00, 0x00, 0x00]),              // blocks_allocated 0
            (0x188, &[0x76, 0x97, 0x7f, 0x0b, 0xac, 0x25, 0xf6, 0x48, 0x9b, 0x62, 0x4b, 0x17, 0xf2, 0xd9, 0x36, 0xcf]), // uuid_create
            (0x198, &[0x83, 0x6b, 0x1d, 0x0d, 0x14, 0x66, 0x8e, 0x42, 0x80, 0x03, 0xb7, 0x6e, 0x1a, 0xb7, 0x10, 0xe4]), // uuid_modify
            (0x1F1, &[0xe9]),     // padding garbage
            (0x201, &[0xff; 16]), // map bytes 1..17
        ],
    );
    let s = Counting { data: MemStorage::from_vec(crash.clone()), largest: Cell::new(0) };
    assert_eq!(VdiImage::open(&s).unwrap_err().kind(), "invalid-field");
    let mut img = VdiImage::open_with(&s, OpenOptions { lenient: true }).unwrap();
    assert!(img.layout_error().unwrap().contains("overlaps the block map"));
    // Entries 0..121 are in the file: entry 0 is 0xFFFFFF00 (slot 4294967040, far past the
    // end), entries 1..4 are FREE (bytes 0x201..0x211 are 0xFF) and so read zeros.
    let mut buf = vec![0xEE; 4096];
    assert_eq!(img.read_at(0, &mut buf).unwrap_err().kind(), "block-past-end");
    img.read_at(1 << 20, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert!(s.largest.get() <= crash.len() as u64, "a read of {} bytes", s.largest.get());
    // Block 2000's entry lies past the end of the file.
    let mut img = VdiImage::open_with(&s, OpenOptions { lenient: true }).unwrap();
    let e = img.entry(2000).unwrap_err();
    assert_eq!(e.kind(), "truncated", "{e}");
    assert!(s.largest.get() <= crash.len() as u64, "a read of {} bytes", s.largest.get());
}

/// fuzz target `repair`: a fixed (static) image cut off before its data (529 bytes: header
/// and map only). Repair cleared the entry pointing past the end, leaving a fixed image with
/// a FREE block, which its own check after repair called corrupt. Such an image can only be
/// a dynamic one now (growing the file back could take any amount of space).
#[test]
fn repair_of_a_truncated_fixed_image_makes_it_dynamic() {
    let crash = bytes(
        529,
        &[
            (0x00, b"<<< QEMU VM Virtual Disk Image >>>\n"), // text
            (0x40, &[0x7f, 0x10, 0xda, 0xbe]),               // signature
            (0x44, &[0x01, 0x00, 0x01, 0x00]),               // version 1.1
            (0x48, &[0x80, 0x01, 0x00, 0x00]),               // header_size 0x180
            (0x4C, &[0x02, 0x00, 0x00, 0x00]),               // image_type 2 (fixed)
            (0x154, &[0x00, 0x02, 0x00, 0x00]),              // offset_bmap 0x200
            (0x158, &[0x00, 0x04, 0x00, 0x00]),              // offset_data 0x400 (past the end)
            (0x168, &[0x00, 0x02, 0x00, 0x00]),              // sector_size 512
            (0x170, &[0, 0, 0x10, 0, 0, 0, 0, 0]),           // disk_size 1 MiB
            (0x178, &[0x00, 0x00, 0x10, 0x00]),              // block_size 1 MiB
            (0x180, &[0x01, 0x00, 0x00, 0x00]),              // blocks_in_image 1
            (0x184, &[0x01, 0x00, 0x00, 0x00]),              // blocks_allocated 1
            (0x188, &[0x00, 0x00, 0x62, 0xc6, 0x8d, 0x4e, 0xdd, 0x4e, 0xba, 0x70, 0x87, 0x9c, 0x09, 0x69, 0xbf, 0xa5]), // uuid_create
            (0x198, &[0xc1, 0x24, 0xdc, 0xe9, 0x91]), // uuid_modify
                                                      // map[0] at 0x200 = 0: slot 0, whose data would start at 0x400.
        ],
    );
    let r = check(MemStorage::from_vec(crash.clone()), &mut NoMonitor).unwrap();
    let kinds: Vec<_> = r.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::EntryPastEnd, FindingKind::FileTooShort]);
    let (rep, out) = repair(MemStorage::from_vec(crash), false, &mut NoMonitor).unwrap();
    assert!(rep.after.as_ref().unwrap().is_clean(), "{:?}", rep.after);
    assert!(
        rep.actions.iter().any(|a| a.message.contains("image_type set from 2 (fixed) to 1 (dynamic)")),
        "{:?}",
        rep.actions
    );
    let mut img = VdiImage::open(out).unwrap();
    assert_eq!(img.header().image_type, 1);
    assert_eq!(img.header().blocks_allocated, 0);
    let mut buf = vec![0xEE; 512];
    img.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert!(img.storage().len().unwrap() <= 529);
}

/// Found with the same counting storage (resource bounds, not a fuzzer crash): `extents` on
/// a leniently opened image whose map the file cuts short asked for a 256 KiB chunk of map
/// past the end of a 1 KiB file. It now visits the entries the file holds, then fails as
/// truncated, never asking for bytes past the end.
#[test]
fn map_scan_never_reads_past_the_end_of_the_file() {
    let mut b = bytes(
        0x400,
        &[
            (0x40, &[0x7f, 0x10, 0xda, 0xbe]),              // signature
            (0x44, &[0x01, 0x00, 0x01, 0x00]),              // version 1.1
            (0x48, &[0x80, 0x01, 0x00, 0x00]),              // header_size 0x180
            (0x4C, &[0x01, 0x00, 0x00, 0x00]),              // image_type 1
            (0x154, &[0x00, 0x02, 0x00, 0x00]),             // offset_bmap 0x200
            (0x158, &[0x00, 0x00, 0x00, 0x80]),             // offset_data 0x80000000 (after the whole map)
            (0x168, &[0x00, 0x02, 0x00, 0x00]),             // sector_size 512
            (0x170, &[0, 0, 0, 0xF8, 0xFF, 0xFF, 0x01, 0]), // disk_size 0x1fffff80 MiB
            (0x178, &[0x00, 0x00, 0x10, 0x00]),             // block_size 1 MiB
            (0x180, &[0x80, 0xFF, 0xFF, 0x1F]),             // blocks_in_image 0x1fffff80 (the largest)
            (0x188, &[0x11; 16]),                           // uuid_create
        ],
    );
    b[0x200..].fill(0xFF); // the 128 entries the file holds: FREE
    let s = Counting { data: MemStorage::from_vec(b), largest: Cell::new(0) };
    let mut img = VdiImage::open_with(&s, OpenOptions { lenient: true }).unwrap();
    let mut runs = Vec::new();
    let e = img.extents(|e| {
        let _: () = runs.push((e.start, e.length));
        Ok(())
    }).unwrap_err();
    assert_eq!(e.kind(), "truncated", "{e}");
    assert!(s.largest.get() <= 0x400, "a read of {} bytes from a 1 KiB file", s.largest.get());
    let r = check(&s, &mut NoMonitor).unwrap();
    assert_eq!(r.findings.iter().map(|f| f.kind).collect::<Vec<_>>(), [FindingKind::MapTruncated]);
    assert_eq!((r.free_blocks, r.unreadable_entries), (128, 0x1FFF_FF80 - 128));
}

/// fuzz target `repair`: a v0.2 image whose image_type is invalid (0x180). A dry run of repair
/// listed a rebuilt header; the real run then failed writing it (v0.2 headers are never
/// written). Repair now refuses v0.2 images in both, before planning anything.
#[test]
fn repair_refuses_a_v02_image_in_a_dry_run_too() {
    let mut b = bytes(
        0x1A4 + 8 + 2 * 4096,
        &[
            (0x00, b"<<< QEMU VM Virtual Disk Image >>>\n"), // text
            (0x40, &[0x7f, 0x10, 0xda, 0xbe]),               // signature
            (0x44, &[0x02, 0x00, 0x00, 0x00]),               // version 0.2
            (0x48, &[0x80, 0x01, 0x00, 0x00]),               // image_type 0x180 (invalid)
            (0x15C, &[0x00, 0x02, 0x00, 0x00]),              // legacy sector_size 512
            (0x160, &[0x00, 0x20, 0, 0, 0, 0, 0, 0]),        // disk_size 8192
            (0x168, &[0x00, 0x10, 0x00, 0x00]),              // block_size 4096
            (0x16C, &[0x02, 0x00, 0x00, 0x00]),              // blocks_in_image 2
            (0x170, &[0x02, 0x00, 0x00, 0x00]),              // blocks_allocated 2
            (0x174, &[0x6a; 16]),                            // uuid_create
            (0x1A4, &[0, 0, 0, 0, 1, 0, 0, 0]),              // map [0, 1]
        ],
    );
    b[0x1AC..].fill(0x52);
    for dry_run in [true, false] {
        let e = repair(MemStorage::from_vec(b.clone()), dry_run, &mut NoMonitor).unwrap_err();
        assert_eq!(e.kind(), "unsupported", "{e}");
        assert!(e.to_string().contains("v0.2"), "{e}");
    }
}

/// fuzz target `repair`: a 485-byte fixed image with no blocks (blocks_in_image 0; repair set
/// its disk_size 6144 to 0) and offset_bmap 0x200, past the end. An empty block map needs no
/// bytes, yet check reported it truncated (so repair could never make the image clean) and a
/// strict open refused it.
#[test]
fn an_empty_block_map_past_the_end_is_not_truncated() {
    let crash = bytes(
        485,
        &[
            (0x00, b"<<< QEMU VM Virtual Disk Image >>>\n"),            // text
            (0x40, &[0x7f, 0x10, 0xda, 0xbe]),                          // signature
            (0x44, &[0x01, 0x00, 0x01, 0x00]),                          // version 1.1
            (0x48, &[0x80, 0x01, 0x00, 0x00]),                          // header_size 0x180
            (0x4C, &[0x02, 0x00, 0x00, 0x00]),                          // image_type 2 (fixed)
            (0x55, &[0x25]),                                            // comment "%"
            (0x89, &[0x01, 0x00, 0x00, 0x08]),                          // comment bytes past its NUL
            (0x132, &[0x34, 0x01]),                                     // more comment bytes
            (0x154, &[0x00, 0x02, 0x00, 0x00]),                         // offset_bmap 0x200 (the file has 485 bytes)
            (0x158, &[0x00, 0x04, 0x00, 0x00]),                         // offset_data 0x400
            (0x168, &[0x00, 0x02, 0x00, 0x00]),                         // sector_size 512
            (0x170, &[0x00, 0x18, 0, 0, 0, 0, 0, 0]),                   // disk_size 6144 (over 0 * 1024)
            (0x178, &[0x00, 0x04, 0x00, 0x00]),                         // block_size 1024
            (0x17C, &[0x00, 0x04, 0x00, 0x00]),                         // block_extra 1024
            (0x180, &[0x00, 0x00, 0x00, 0x00]),                         // blocks_in_image 0
            (0x184, &[0x06, 0x00, 0x00, 0x00]),                         // blocks_allocated 6 (over 0)
            (0x188, &[0x06, 0x00, 0x00, 0x00, 0x02, 0x96, 0x79, 0xa6]), // uuid_create (start)
        ],
    );
    assert_eq!(VdiImage::open(MemStorage::from_vec(crash.clone())).unwrap_err().kind(), "invalid-field");
    let (rep, out) = repair(MemStorage::from_vec(crash), false, &mut NoMonitor).unwrap();
    assert!(rep.guessed.iter().any(|g| g.contains("disk_size 6144")), "{:?}", rep.guessed);
    assert!(rep.after.as_ref().unwrap().is_clean(), "{:?}", rep.after);
    let img = VdiImage::open(out).unwrap();
    assert_eq!((img.virtual_size(), img.header().blocks_in_image), (0, 0));
    let r = check(img.into_storage(), &mut NoMonitor).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
}

/// A fixed image whose map holds more blocks than its disk_size needs: here 6 blocks of
/// 1 KiB and disk_size 0, every slot stored, all zeros but block 5.
fn fixed_with_blocks_past_the_disk(disk_size: u64) -> Vec<u8> {
    let mut o = vdi::CreateOptions::new(6 * 1024, vdi::Uuid::from_u128(7), vdi::Uuid::from_u128(8));
    o.block_size = 1024;
    o.layout = vdi::Layout::Qemu;
    o.fixed = true;
    let mut img = vdi::create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    img.write_at(5 * 1024 + 100, &[0xAB; 300]).unwrap();
    let mut b = img.into_storage().into_vec();
    b[0x170..0x178].copy_from_slice(&disk_size.to_le_bytes()); // disk_size
    b
}

/// fuzz target `repair` (then resize): growing an image whose blocks_in_image exceeds what
/// its disk_size needs (fixed, 6 blocks, disk_size 0) to 2 KiB computed `new_blocks -
/// old_blocks` = 2 - 6 in u32: it wrapped and the fixed image asked storage for 4 TiB (in a
/// debug build, an overflow panic). Growing now keeps every block of the map, and what lies
/// past the old end reads as zeros.
#[test]
fn growing_an_image_whose_map_exceeds_its_disk_keeps_the_map_and_reads_zeros() {
    let b = fixed_with_blocks_past_the_disk(0);
    assert!(check(MemStorage::from_vec(b.clone()), &mut NoMonitor).unwrap().is_clean());
    let mut img = VdiImage::open(MemStorage::from_vec(b.clone())).unwrap();
    img.resize(2048, &mut NoMonitor).unwrap();
    assert_eq!((img.virtual_size(), img.header().blocks_in_image), (2048, 6));
    assert_eq!(img.storage().len().unwrap(), b.len() as u64, "nothing allocated");
    // Block 5 (0xAB bytes, past the old end) becomes visible only when the disk grows to it:
    // zeros, not the bytes that were hidden there.
    img.resize(6 * 1024, &mut NoMonitor).unwrap();
    let mut all = vec![0xEE; 6 * 1024];
    img.read_at(0, &mut all).unwrap();
    assert!(all.iter().all(|&x| x == 0), "hidden bytes became visible");
    let r = check(img.into_storage(), &mut NoMonitor).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);

    // The same for a dynamic image: the block past the old end is forgotten (a leak at worst).
    let mut o = vdi::CreateOptions::new(4 * 1024, vdi::Uuid::from_u128(9), vdi::Uuid::from_u128(10));
    o.block_size = 1024;
    o.layout = vdi::Layout::Qemu;
    let mut img = vdi::create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    img.write_at(0, &[0x11; 1024]).unwrap();
    img.write_at(3 * 1024, &[0x33; 1024]).unwrap();
    let mut b = img.into_storage().into_vec();
    b[0x170..0x178].copy_from_slice(&1536u64.to_le_bytes()); // disk_size: 1.5 blocks
    let mut img = VdiImage::open(MemStorage::from_vec(b)).unwrap();
    img.resize(4 * 1024, &mut NoMonitor).unwrap();
    let mut all = vec![0xEE; 4 * 1024];
    img.read_at(0, &mut all).unwrap();
    assert!(all[..1024].iter().all(|&x| x == 0x11));
    assert!(all[1024..].iter().all(|&x| x == 0), "hidden bytes became visible");
    assert_eq!(check(img.into_storage(), &mut NoMonitor).unwrap().corruptions, 0);
}
