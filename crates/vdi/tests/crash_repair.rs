//! Repair stopped anywhere (after any write, or by a power cut losing any of the writes
//! since its last barrier) on images that combine the damage repair keeps: shared slots,
//! entries past the end of the file, slots past blocks_in_image.

mod common;
use common::crash::*;

use vdi::{repair, FindingKind, Layout, MemStorage, NoMonitor, ReadAt, Severity, Storage};

/// Point block `block`'s entry at `slot` (a Qemu-layout map starts at 0x200).
fn point(s: &mut MemStorage, block: u64, slot: u32) {
    s.write_at(0x200 + 4 * block, &slot.to_le_bytes()).unwrap();
}

fn repair_op(j: &mut Journal) -> vdi::Result<()> {
    repair(j, false, &mut NoMonitor).map(|_| ())
}

/// The kinds of corruption check finds in `s`.
fn corruptions(s: &MemStorage) -> Vec<FindingKind> {
    let r = vdi::check(s.clone(), &mut NoMonitor).unwrap();
    r.findings.iter().filter(|f| f.severity == Severity::Corruption).map(|f| f.kind).collect()
}

#[test]
fn repair_of_a_shared_slot_and_an_entry_past_the_end_survives_power_cuts() {
    // Nine slots; block 9 shares block 7's slot 0, block 21 names slot 9, past the end of
    // the file: the copy for block 9 must not land in slot 9 while block 21's (cleared)
    // entry may still name it.
    let mut s = image(Layout::Qemu, false, 24 * BS as u64);
    point(&mut s, 9, 0);
    point(&mut s, 21, 9);
    assert_eq!(corruptions(&s), [FindingKind::DuplicateEntry, FindingKind::EntryPastEnd]);
    let before = blocks(&s);
    assert!(before[21].is_none() && before[9] == before[7]);
    let (w, f) = power_cut_on("repair a shared slot and an entry past the end", s, &repair_op);
    assert!(w >= 4 && f >= 4, "{w} writes, {f} flushes");
}

#[test]
fn repair_copies_shared_slots_into_holes_first() {
    // Eight blocks in use in nine slots (block 5's slot is a hole), sixteen more entries
    // share slot 0: 24 blocks, 24 slots. Copies past the count alone would need 25, past
    // blocks_in_image: a stopped repair would leave slot-past-blocks it did not start with.
    let mut s = image(Layout::Qemu, false, 24 * BS as u64);
    for b in [1, 4, 5, 6, 8, 9, 10, 12, 14, 15, 16, 17, 18, 20, 21, 22] {
        point(&mut s, b, 0);
    }
    assert!(!corruptions(&s).contains(&FindingKind::SlotPastBlocks));
    let before = blocks(&s);
    let found = vdi::check(s.clone(), &mut NoMonitor).unwrap();
    let mut n = 0;
    loop {
        let mut f = Faulty::new(s.clone(), n);
        let ok = repair(&mut f, false, &mut NoMonitor).is_ok();
        verify_left("repair into holes", &format!("stopped after write {n}"), f.inner.clone(), &before, &before, &found);
        let h = vdi::VdiImage::open(f.inner.clone()).unwrap().header().clone();
        assert!(h.blocks_allocated <= h.blocks_in_image, "stopped after write {n}: {h:?}");
        if ok {
            assert_eq!(h.blocks_allocated, 24);
            break;
        }
        n += 1;
    }
}

#[test]
fn repair_sets_blocks_sharing_a_slot_of_zeros_to_zero() {
    // Block 3 is stored all zeros; block 9 shares its slot: no copy (the file would grow
    // by a block for nothing), block 9 becomes ZERO. Block 12 shares block 7's slot (data):
    // a copy, and the dry run says by how much the file grows for it.
    let s = image(Layout::Qemu, false, 24 * BS as u64);
    let mut img = vdi::VdiImage::open(s.clone()).unwrap();
    let (vdi::Entry::Data(zero_slot), vdi::Entry::Data(data_slot)) = (img.entry(3).unwrap(), img.entry(7).unwrap()) else {
        panic!("blocks 3 and 7 are stored")
    };
    let mut s = s.clone();
    point(&mut s, 9, zero_slot);
    point(&mut s, 12, data_slot);
    let len = s.len().unwrap();
    let (dry, _) = repair(s.clone(), true, &mut NoMonitor).unwrap();
    let said = |m: &str| dry.actions.iter().any(|a| a.message.contains(m));
    assert!(said(&format!("block 9 shared slot {zero_slot}, which holds only zeros; set to ZERO")), "{:?}", dry.actions);
    assert!(said(&format!("grow the file by {BS} bytes while repairing (to {} bytes)", len + BS as u64)), "{:?}", dry.actions);
    let before = blocks(&s);
    let (rep, fixed) = repair(s.clone(), false, &mut NoMonitor).unwrap();
    assert!(rep.after.unwrap().is_clean());
    assert_eq!(blocks(&fixed), before);
    let mut img = vdi::VdiImage::open(fixed.clone()).unwrap();
    assert_eq!(img.entry(9).unwrap(), vdi::Entry::Zero);
    assert_eq!(fixed.len().unwrap(), len + BS as u64, "one copy, none for the slot of zeros");
    power_cut_on("repair a shared slot of zeros", s, &repair_op);
}

/// Compact packs slots past blocks_in_image below it, keeping only the slots check accounts
/// for: any other corruption beside them must make it refuse (packing would cut a block
/// away or share one slot between two blocks); repair keeps every block of each.
#[test]
fn compact_refuses_past_blocks_with_other_damage() {
    let base = past_blocks_image(Layout::Qemu); // blocks 1, 4, 13 in slots 24, 25, 26; count 27
    let mut past_the_count = base.clone();
    past_the_count.write_at(0x184, &26u32.to_le_bytes()).unwrap(); // slot 26 past the count
    let mut shared_below = base.clone();
    point(&mut shared_below, 9, 0); // block 7's slot
    let mut shared_past = base.clone();
    point(&mut shared_past, 9, 24); // block 1's slot, past blocks_in_image
    for (what, s, kind) in [
        ("a slot past the count", past_the_count, FindingKind::AllocatedMismatch),
        ("a shared slot", shared_below, FindingKind::DuplicateEntry),
        ("a shared slot past blocks_in_image", shared_past, FindingKind::DuplicateEntry),
    ] {
        assert!(corruptions(&s).contains(&kind), "{what}: {:?}", corruptions(&s));
        let mut img = vdi::VdiImage::open(s.clone()).unwrap();
        let e = img.compact(false, &mut NoMonitor).unwrap_err();
        assert!(e.kind() == "unsupported" && e.to_string().contains("run repair first"), "{what}: {e}");
        assert_eq!(img.into_storage(), s, "{what}: nothing written");
        let before = blocks(&s);
        let (rep, fixed) = repair(s, false, &mut NoMonitor).unwrap();
        assert!(rep.after.unwrap().is_clean(), "{what}");
        assert_eq!(blocks(&fixed), before, "{what}: repair keeps every block");
    }
}

#[test]
fn a_slot_past_blocks_in_image_cut_short_is_past_the_end() {
    // Block 13's slot 26 (past blocks_in_image, 24) is cut 1000 bytes in: check calls it
    // past the end with its stored bytes, as for any slot; repair keeps them (zeros after).
    let full = past_blocks_image(Layout::Qemu);
    let mut s = full.clone();
    s.set_len(0x400 + 26 * BS as u64 + 1000).unwrap();
    let r = vdi::check(s.clone(), &mut NoMonitor).unwrap();
    let f = r.findings.iter().find(|f| f.location == "block 13").expect("block 13 is reported");
    assert_eq!(f.kind, FindingKind::EntryPastEnd, "{f:?}");
    assert!(f.message.contains("its first 1000 bytes are stored"), "{f:?}");
    let (rep, fixed) = repair(s, false, &mut NoMonitor).unwrap();
    assert!(rep.actions.iter().all(|a| !a.data_lost), "{:?}", rep.actions);
    let mut want = blocks(&full);
    want[13].as_mut().unwrap()[1000..].fill(0);
    assert_eq!(blocks(&fixed), want);
}
