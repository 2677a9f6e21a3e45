//! Check on any file: never panics, reads the file about once (whatever its header claims),
//! and never calls an image clean that cannot be read: when check finds no corruption, every
//! block of the disk reads (per the reference reader) except a diff image's FREE blocks; and
//! every block the reference cannot read is reported.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdi::{check, FindingKind, NoMonitor, Severity, VdiImage};
use vdi_fuzz::{ref_block, Counting, Unreadable, SLACK};

fuzz_target!(|data: &[u8]| {
    let s = Counting::new(data);
    let len = data.len() as u64;
    let r = check(&s, &mut NoMonitor);
    assert!(s.largest.get() <= len.max(0x200), "check: a read of {} bytes from {len}", s.largest.get());
    assert!(s.bytes.get() <= len + SLACK, "check read {} bytes from a {len}-byte file", s.bytes.get());
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            assert!(VdiImage::open(&s).is_err(), "check failed ({e}) on an image that opens");
            return;
        }
    };
    assert_eq!(r.allocated_blocks + r.zero_blocks + r.free_blocks + r.unreadable_entries, r.total_blocks);
    assert_eq!(r.file_len, len);
    assert!(r.findings.len() <= vdi::check::MAX_LISTED);
    let listed_corruptions = r.findings.iter().filter(|f| f.severity == Severity::Corruption).count() as u64;
    assert!(listed_corruptions <= r.corruptions);
    assert!(r.findings.len() as u64 <= r.corruptions + r.leaks);
    let img = VdiImage::open_with(&s, vdi::OpenOptions { lenient: true }).expect("check opened it");
    let h = img.header().clone();
    // Blocks of the virtual disk only: entries past it are never read.
    let blocks = img.blocks_covering_disk() as u64;
    let mut unreadable = None;
    for b in 0..blocks {
        match ref_block(data, &h, b) {
            Ok(_) | Err(Unreadable::NeedsParent) => {}
            Err(why) => {
                unreadable = Some((b, why));
                break;
            }
        }
    }
    if let Some((b, why)) = unreadable {
        assert!(r.corruptions > 0, "block {b} cannot be read ({why:?}) but check found no corruption");
        let kinds: Vec<_> = r.findings.iter().map(|f| f.kind).collect();
        let named = match why {
            Unreadable::MapTruncated => kinds.contains(&FindingKind::MapTruncated),
            _ => {
                kinds.iter().any(|k| {
                    matches!(k, FindingKind::EntryPastEnd | FindingKind::EntryOutOfRange | FindingKind::BadLayout)
                }) || r.findings.len() == vdi::check::MAX_LISTED
            }
        };
        assert!(named, "block {b} unreadable ({why:?}); findings {kinds:?}");
    }
    if r.corruptions == 0 {
        assert!(unreadable.is_none());
        assert!(img.layout_error().is_none(), "a broken layout is a corruption");
    }
});
