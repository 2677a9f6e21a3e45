//! Crash safety of every in-place operation, proven with a fault-injecting storage: the
//! operation is stopped after write N, for every N, and the image left behind must open,
//! read for every block either the data from before or the data from after the operation,
//! and check clean (at worst with leaks).

mod common;
use common::crash::*;
use common::pattern;

use vdi::{create, repair, CreateOptions, Layout, MemStorage, NoMonitor, ReadAt, Storage, Uuid, VdiImage};

#[test]
fn surgery_survives_power_cuts() {
    // Writes since the last barrier may land in any order: the barriers must separate every
    // write from those it depends on.
    for layout in [Layout::Vbox, Layout::Qemu] {
        let base = image(layout, false, 24 * BS as u64);
        let (w, f) = power_cut_everywhere("compact", base.clone(), &|img| img.compact(false, &mut NoMonitor).map(|_| ()));
        assert!(w > 4 && f >= 2, "compact: {w} writes, {f} flushes");
        power_cut_everywhere("compact --free", base.clone(), &|img| img.compact(true, &mut NoMonitor).map(|_| ()));
        power_cut_everywhere("discard", base, &|img| img.discard(BS as u64 + 100, 12 * BS as u64, &mut NoMonitor).map(|_| ()));
    }
    let base = image(Layout::Qemu, false, 24 * BS as u64);
    power_cut_everywhere("grow relocating", base, &|img| {
        let st = img.resize(2_000 * BS as u64, &mut NoMonitor)?;
        assert!(st.map_moved && st.blocks_relocated > 0, "{st:?}");
        Ok(())
    });
}

#[test]
fn compact_is_crash_safe() {
    for layout in [Layout::Vbox, Layout::Qemu] {
        let base = image(layout, false, 24 * BS as u64);
        let n = crash_everywhere("compact", base.clone(), &|img| img.compact(false, &mut NoMonitor).map(|_| ()));
        assert!(n >= 4, "compact made only {n} writes");
        crash_everywhere("compact --free", base, &|img| img.compact(true, &mut NoMonitor).map(|_| ()));
    }
}

#[test]
fn compact_results() {
    let base = image(Layout::Vbox, false, 24 * BS as u64);
    let before = disk(&base);
    let mut img = VdiImage::open(base.clone()).unwrap();
    let len0 = img.file_len();
    let st = img.compact(false, &mut NoMonitor).unwrap();
    assert_eq!(st.blocks_zeroed, 2);
    assert_eq!(st.bytes_reclaimed, 2 * BS as u64);
    assert_eq!(img.file_len(), len0 - 2 * BS as u64);
    assert_eq!(img.entry(3).unwrap(), vdi::Entry::Zero);
    let s = img.into_storage();
    assert_eq!(disk(&s), before);
    // Fixed images are refused with a reason.
    let mut f = VdiImage::open(image(Layout::Vbox, true, 8 * BS as u64)).unwrap();
    let e = f.compact(false, &mut NoMonitor).unwrap_err().to_string();
    assert!(e.contains("fixed"), "{e}");
}

/// Cancels at the `at`-th question.
struct CancelAt {
    asked: std::cell::Cell<u32>,
    at: u32,
}

impl vdi::Monitor for CancelAt {
    fn cancelled(&self) -> bool {
        self.asked.set(self.asked.get() + 1);
        self.asked.get() >= self.at
    }
}

#[test]
fn cancelled_compact_leaves_no_leak() {
    // Cancelled at every point of the scan: the blocks already marked are packed, so
    // blocks_allocated equals the entries in use (what qemu-img check demands) and the
    // disk reads the same.
    let base = image(Layout::Qemu, false, 24 * BS as u64);
    let before = disk(&base);
    for at in 1..=24 {
        let mut img = VdiImage::open(base.clone()).unwrap();
        let r = img.compact(false, &mut CancelAt { asked: 0.into(), at });
        assert!(matches!(r, Err(vdi::VdiError::Cancelled)), "cancel at {at}: {r:?}");
        let s = img.into_storage();
        let rep = vdi::check(s.clone(), &mut NoMonitor).unwrap();
        assert!(rep.is_clean(), "cancel at {at}: {rep:?}");
        let mut img = VdiImage::open(s.clone()).unwrap();
        let mut in_use = 0;
        for b in 0..img.header().blocks_in_image {
            if matches!(img.entry(b).unwrap(), vdi::Entry::Data(_)) {
                in_use += 1;
            }
        }
        assert_eq!(img.header().blocks_allocated, in_use, "cancel at {at}");
        assert_eq!(disk(&s), before, "cancel at {at}");
    }
}

#[test]
fn resize_is_crash_safe() {
    // Grow in place (the vbox layout has room for the larger map).
    let base = image(Layout::Vbox, false, 24 * BS as u64 - 512);
    crash_everywhere("grow in place", base, &|img| img.resize(40 * BS as u64 + 1000, &mut NoMonitor).map(|_| ()));
    // Grow with relocation (qemu layout: the data follows the map directly).
    let base = image(Layout::Qemu, false, 24 * BS as u64);
    let n = crash_everywhere("grow relocating", base.clone(), &|img| {
        let st = img.resize(2_000 * BS as u64, &mut NoMonitor)?;
        assert!(st.map_moved && st.blocks_relocated > 0, "{st:?}");
        Ok(())
    });
    assert!(n > 3);
    // Shrink: allowed when the cut part is zero, refused otherwise.
    let base = image(Layout::Vbox, false, 24 * BS as u64);
    crash_everywhere("shrink", base.clone(), &|img| {
        img.discard(20 * BS as u64, 4 * BS as u64, &mut NoMonitor)?;
        img.resize(20 * BS as u64, &mut NoMonitor).map(|_| ())
    });
    let mut img = VdiImage::open(base).unwrap();
    let e = img.resize(10 * BS as u64, &mut NoMonitor).unwrap_err().to_string();
    assert!(e.contains("block 11") && e.contains("non-zero"), "{e}");
    // Fixed images grow too, in place and relocating.
    let base = image(Layout::Vbox, true, 6 * BS as u64);
    crash_everywhere("grow fixed", base, &|img| img.resize(9 * BS as u64, &mut NoMonitor).map(|_| ()));
    // ... but not when the map must move: no order of writes is crash-safe there.
    let mut img = VdiImage::open(image(Layout::Qemu, true, 6 * BS as u64)).unwrap();
    let e = img.resize(20_000 * BS as u64, &mut NoMonitor).unwrap_err().to_string();
    assert!(e.contains("fixed image") && e.contains("convert it to a dynamic image"), "{e}");
}

#[test]
fn resize_keeps_data_and_zeroes_the_new_part() {
    let base = image(Layout::Qemu, false, 24 * BS as u64 - 512);
    let before = disk(&base);
    let mut img = VdiImage::open(base).unwrap();
    let st = img.resize(300_000 * BS as u64, &mut NoMonitor).unwrap();
    assert!(st.map_moved);
    let s = img.into_storage();
    let mut img = VdiImage::open(s.clone()).unwrap();
    assert_eq!(img.virtual_size(), 300_000 * BS as u64);
    let mut b = vec![0u8; before.len() + 4096];
    img.read_at(0, &mut b).unwrap();
    assert_eq!(&b[..before.len()], &before[..]);
    assert!(b[before.len()..].iter().all(|&x| x == 0));
    assert!(vdi::check(s, &mut NoMonitor).unwrap().is_clean());
}

#[test]
fn discard_is_crash_safe() {
    let base = image(Layout::Vbox, false, 24 * BS as u64);
    crash_everywhere("discard", base, &|img| {
        let (n, _) = img.discard(BS as u64 + 100, 12 * BS as u64, &mut NoMonitor)?;
        assert!(n >= 3);
        Ok(())
    });
}

#[test]
fn plain_writes_are_crash_safe() {
    let base = image(Layout::Qemu, false, 24 * BS as u64);
    crash_everywhere("write", base, &|img| img.write_at(6 * BS as u64 - 10, &pattern(5, 5 * BS as usize)));
}

/// A header that undercounts (blocks_allocated 0, nine slots in use, as a peer's interrupted
/// write or a careless tool leaves it): the write stores the real count with its first new
/// block, in the same order (data, count, entries), so it ends clean, and stopped anywhere it
/// leaves nothing worse than the one finding it started with. Issue 14, part 2.
#[test]
fn writes_into_an_undercounting_header_are_crash_safe() {
    let mut base = image(Layout::Qemu, false, 24 * BS as u64);
    base.write_at(0x184, &0u32.to_le_bytes()).unwrap();
    let r = vdi::check(base.clone(), &mut NoMonitor).unwrap();
    assert_eq!(r.corruptions, 1, "{:?}", r.findings);
    let n = crash_everywhere("write past an undercounting header", base.clone(), &|img| {
        img.write_at(6 * BS as u64 - 10, &pattern(5, 5 * BS as usize))?;
        assert_eq!(img.header().blocks_allocated, 13, "nine slots in use and four new blocks");
        Ok(())
    });
    assert!(n >= 3, "data, count and entries: only {n} writes");
}

/// Damage: a duplicate entry, an entry past the end of the file, a leaked slot.
fn damaged() -> MemStorage {
    let mut s = image(Layout::Qemu, false, 24 * BS as u64);
    let bmap = 0x200u64;
    s.write_at(bmap + 9 * 4, &0u32.to_le_bytes()).unwrap(); // block 9 -> slot 0 (dup of block 7)
    s.write_at(bmap + 21 * 4, &23u32.to_le_bytes()).unwrap(); // slot 23: past the end
    s.write_at(bmap + 5 * 4, &u32::MAX.to_le_bytes()).unwrap(); // block 5 freed: its slot leaks
    s
}

#[test]
fn repair_fixes_and_is_crash_safe() {
    let (rep, fixed) = repair(damaged(), false, &mut NoMonitor).unwrap();
    let after = rep.after.as_ref().unwrap();
    assert!(after.is_clean(), "{:?}", after.findings);
    assert!(rep.before.corruptions >= 2);
    // Block 9 shared block 7's slot: it keeps what it read (a copy), nothing is lost.
    assert!(rep.actions.iter().any(|a| !a.data_lost && a.message.contains("block 9")), "{:?}", rep.actions);
    assert!(rep.actions.iter().any(|a| a.message.contains("past the end")), "{:?}", rep.actions);
    // Dry run: same plan, nothing written.
    let d = damaged();
    let (dry, untouched) = repair(d.clone(), true, &mut NoMonitor).unwrap();
    assert_eq!(untouched, d);
    assert_eq!(dry.actions, rep.actions);
    assert!(dry.after.is_none());
    // The repaired image reads the undamaged blocks as before.
    let mut img = VdiImage::open(fixed).unwrap();
    let mut b = vec![0u8; BS as usize];
    img.read_at(7 * BS as u64, &mut b).unwrap();
    assert_eq!(b, pattern(1, BS as usize));
    img.read_at(9 * BS as u64, &mut b).unwrap();
    assert_eq!(b, pattern(1, BS as usize), "block 9 reads what it read before");
    // Stopped after any write: it opens, reads every intact block as before, and has no
    // more corruption than it started with.
    let before = rep.before.corruptions;
    let base = damaged();
    let intact = disk_blocks(&base, &[7, 2, 11, 0, 23, 13, 9]);
    // A power cut anywhere in the copy of a shared slot: every block reads as before.
    let mut dup = image(Layout::Qemu, false, 24 * BS as u64);
    dup.write_at(0x200 + 9 * 4, &0u32.to_le_bytes()).unwrap(); // block 9 -> slot 0 (block 7's)
    let (w, f) = power_cut_on("repair a shared slot", dup, &|j| repair(j, false, &mut NoMonitor).map(|_| ()));
    assert!(w >= 3 && f >= 3, "repair of a shared slot: {w} writes, {f} flushes");
    let mut n = 0;
    loop {
        let mut f = Faulty::new(base.clone(), n);
        let ok = repair(&mut f, false, &mut NoMonitor).is_ok();
        let left = f.inner;
        let r = vdi::check(left.clone(), &mut NoMonitor).unwrap();
        assert!(r.corruptions <= before, "repair stopped after write {n}: {:?}", r.findings);
        assert_eq!(disk_blocks(&left, &[7, 2, 11, 0, 23, 13, 9]), intact, "repair stopped after write {n}");
        if ok {
            assert!(r.is_clean());
            break;
        }
        n += 1;
        assert!(n < 1000, "repair never finishes");
    }
    assert!(n >= 3, "repair made only {n} writes");
}

#[test]
fn repair_rebuilds_guessable_header_fields() {
    let mut s = image(Layout::Vbox, false, 8 * BS as u64);
    s.write_at(0x40, &[0, 0, 0, 0]).unwrap(); // signature wiped
    s.write_at(0x4C, &9u32.to_le_bytes()).unwrap(); // image_type 9
    s.write_at(0x184, &1000u32.to_le_bytes()).unwrap(); // blocks_allocated > blocks_in_image
    assert!(VdiImage::open(s.clone()).is_err());
    let (rep, fixed) = repair(s, false, &mut NoMonitor).unwrap();
    assert_eq!(rep.guessed.len(), 2, "{:?}", rep.guessed);
    // The count over blocks_in_image is no guess: the entries say which slots hold data.
    assert!(rep.actions.iter().any(|a| a.message == "blocks_allocated set from 1000 to 5"), "{:?}", rep.actions);
    assert!(rep.after.unwrap().is_clean());
    VdiImage::open(fixed).unwrap();
}

#[test]
fn compact_reads_past_a_zero_head() {
    // 1 MiB blocks: compact reads the first 64 KiB, and the rest only when those are zero.
    let mut o = CreateOptions::new(4 << 20, Uuid::from_u128(1), Uuid::from_u128(2));
    o.block_size = 1 << 20;
    let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    img.write_at(0, &pattern(1, 4 << 20)).unwrap();
    img.write_at(0, &vec![0u8; 1 << 20]).unwrap(); // block 0: all zeros
    let mut tail = vec![0u8; 1 << 20];
    *tail.last_mut().unwrap() = 7; // block 1: zeros but its very last byte
    img.write_at(1 << 20, &tail).unwrap();
    let mut head = vec![0u8; 64 << 10];
    head[0] = 9; // block 2: non-zero first byte, then the pattern
    img.write_at(2 << 20, &head).unwrap();
    let before = disk(&img.storage().clone());
    let st = img.compact(false, &mut NoMonitor).unwrap();
    assert_eq!(st.blocks_zeroed, 1, "{st:?}");
    assert_eq!(img.entry(0).unwrap(), vdi::Entry::Zero);
    assert!(matches!(img.entry(1).unwrap(), vdi::Entry::Data(_)));
    assert_eq!(disk(&img.into_storage()), before);
}

#[test]
fn slots_past_blocks_in_image_move_without_loss() {
    for layout in [Layout::Vbox, Layout::Qemu] {
        let base = past_blocks_image(layout);
        let before = disk(&base);
        assert_eq!(disk_blocks(&base, &[1, 4]), [pattern(41, BS as usize), pattern(42, BS as usize)]);
        let r = vdi::check(base.clone(), &mut NoMonitor).unwrap();
        assert_eq!((r.corruptions, r.past_blocks), (4, 4), "three entries and the count: {:?}", r.findings);
        // Read-only until fixed: a write would allocate slot 27, past the map's range.
        let mut img = VdiImage::open(base.clone()).unwrap();
        assert!(img.header().slots_past_blocks());
        let e = img.write_at(BS as u64, &[1]).unwrap_err();
        assert!(e.kind() == "unsupported" && e.to_string().contains("repair or compact"), "{e}");
        // So is the header (vdi set): the same refusal.
        let edit = vdi::HeaderEdit { comment: Some("x".into()), ..Default::default() };
        let e = img.edit_header(&edit).unwrap_err();
        assert!(e.kind() == "unsupported" && e.to_string().contains("repair or compact"), "{e}");
        assert_eq!(img.storage(), &base, "nothing written");
        // Other surgery asks for repair first.
        assert_eq!(img.reclaim(&mut NoMonitor).unwrap_err().kind(), "unsupported");
        // Repair and compact keep every block, stopped anywhere or not.
        let (dry, _) = repair(base.clone(), true, &mut NoMonitor).unwrap();
        assert!(dry.actions.iter().all(|a| !a.data_lost), "{:?}", dry.actions);
        assert!(dry.actions.iter().any(|a| a.message.starts_with("3 block(s) stored in slots past")), "{:?}", dry.actions);
        let compact = |img: &mut VdiImage<Faulty>| img.compact(false, &mut NoMonitor).map(|_| ());
        crash_everywhere("compact past blocks", base.clone(), &compact);
        power_cut_everywhere("compact past blocks", base.clone(), &|img| img.compact(false, &mut NoMonitor).map(|_| ()));
        let (w, f) = power_cut_on("repair past blocks", base.clone(), &|j| repair(j, false, &mut NoMonitor).map(|_| ()));
        assert!(w >= 5 && f >= 2, "repair: {w} writes, {f} flushes");
        let mut n = 0;
        let fixed = loop {
            let mut f = Faulty::new(base.clone(), n);
            let ok = repair(&mut f, false, &mut NoMonitor).is_ok();
            let what = format!("stopped after write {n}");
            verify_left("repair past blocks", &what, f.inner.clone(), &blocks(&base), &blocks(&base), &r);
            if ok {
                break f.inner;
            }
            n += 1;
        };
        // Eleven blocks in use, packed below blocks_in_image, the file cut after them.
        let img = VdiImage::open(fixed.clone()).unwrap();
        let h = img.header();
        assert_eq!(h.blocks_allocated, 11);
        assert_eq!(fixed.len().unwrap(), h.offset_data as u64 + 11 * BS as u64);
        assert!(vdi::check(fixed.clone(), &mut NoMonitor).unwrap().is_clean());
        assert_eq!(disk(&fixed), before);
    }
}

#[test]
fn repair_keeps_a_slot_cut_short_by_the_end_of_the_file() {
    // The file ends 1000 bytes into the last slot: those bytes are the block's stored data
    // (qemu-img reads them, then zeros); repair grows the file to the whole slot.
    let full = image(Layout::Vbox, false, 24 * BS as u64);
    let mut img = VdiImage::open(full.clone()).unwrap();
    let last = (0..24).find(|&b| img.entry(b).unwrap() == vdi::Entry::Data(8)).expect("a block in slot 8");
    let mut s = full.clone();
    let cut = img.header().offset_data as u64 + 8 * BS as u64 + 1000;
    s.set_len(cut).unwrap();
    assert_eq!(VdiImage::open(s.clone()).unwrap().read_at(last as u64 * BS as u64, &mut [0u8; 1]).unwrap_err().kind(), "block-past-end");
    let (rep, _) = repair(s.clone(), true, &mut NoMonitor).unwrap();
    assert!(rep.actions.iter().all(|a| !a.data_lost), "{:?}", rep.actions);
    let mut want = disk_blocks(&full, &[last as u64]).remove(0);
    want[1000..].fill(0);
    let mut n = 0;
    loop {
        let mut f = Faulty::new(s.clone(), n);
        let ok = repair(&mut f, false, &mut NoMonitor).is_ok();
        let r = vdi::check(f.inner.clone(), &mut NoMonitor).unwrap();
        assert!(r.corruptions <= rep.before.corruptions, "stopped after write {n}: {:?}", r.findings);
        if ok {
            assert!(r.is_clean(), "{:?}", r.findings);
            assert_eq!(disk_blocks(&f.inner, &[last as u64]), [want.clone()]);
            let mut whole = disk(&full);
            whole[last as usize * BS as usize + 1000..][..BS as usize - 1000].fill(0);
            assert!(disk(&f.inner) == whole, "every other block reads as before");
            break;
        }
        n += 1;
    }
}

/// A 2 MiB disk holding a bare FAT12 (2 KiB clusters, data from byte 19968): a file in
/// clusters 2..=101, everything else free in the FAT, yet the whole data area holds bytes
/// (a deleted file's). Blocks 4..=30 lie wholly in free clusters (block 31 holds the slack
/// after the last cluster).
fn fat12_with_a_deleted_file() -> MemStorage {
    let mut o = CreateOptions::new(2 << 20, Uuid::from_u128(1), Uuid::from_u128(2));
    o.block_size = BS;
    let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    let mut d = pattern(9, 2 << 20);
    d[..19968].fill(0);
    let b = &mut d[..512];
    b[..3].copy_from_slice(&[0xeb, 0x3c, 0x90]);
    b[3..11].copy_from_slice(b"MSDOS5.0");
    b[11..13].copy_from_slice(&512u16.to_le_bytes()); // bytes per sector
    b[13] = 4; // sectors per cluster
    b[14..16].copy_from_slice(&1u16.to_le_bytes()); // reserved sectors
    b[16] = 2; // FATs
    b[17..19].copy_from_slice(&512u16.to_le_bytes()); // root entries
    b[19..21].copy_from_slice(&4096u16.to_le_bytes()); // total sectors
    b[21] = 0xf8; // media
    b[22..24].copy_from_slice(&3u16.to_le_bytes()); // sectors per FAT
    b[38] = 0x29; // extended boot signature
    b[54..62].copy_from_slice(b"FAT12   ");
    b[510..512].copy_from_slice(&[0x55, 0xaa]);
    for fat in [512usize, 512 + 3 * 512] {
        let mut set = |c: usize, v: u16| {
            let at = fat + c * 3 / 2;
            let x = u16::from_le_bytes([d[at], d[at + 1]]);
            let x = if c % 2 == 0 { (x & 0xf000) | v } else { (x & 0x000f) | (v << 4) };
            d[at..at + 2].copy_from_slice(&x.to_le_bytes());
        };
        set(0, 0xff8);
        set(1, 0xfff);
        for c in 2..101 {
            set(c, c as u16 + 1);
        }
        set(101, 0xfff);
    }
    let root = 7 * 512;
    d[root..root + 11].copy_from_slice(b"A       BIN");
    d[root + 11] = 0x20;
    d[root + 26..root + 28].copy_from_slice(&2u16.to_le_bytes());
    d[root + 28..root + 32].copy_from_slice(&(100 * 2048u32).to_le_bytes());
    img.write_at(0, &d).unwrap();
    img.into_storage()
}

#[test]
fn fs_aware_compact_survives_crashes_and_power_cuts() {
    let base = fat12_with_a_deleted_file();
    let mut img = VdiImage::open(base.clone()).unwrap();
    let st = img.compact_fs_aware(&mut NoMonitor).unwrap();
    assert_eq!(st.blocks_released, 27, "{st:?}");
    assert_eq!(st.compact.bytes_reclaimed, 27 * BS as u64);
    let after = disk(img.storage());
    let before = disk(&base);
    for b in 0..32usize {
        let r = b * BS as usize..(b + 1) * BS as usize;
        let want: &[u8] = if (4..=30).contains(&b) { &[0u8; BS as usize] } else { &before[r.clone()] };
        assert!(after[r] == *want, "block {b}");
    }
    let op = |img: &mut VdiImage<Faulty>| img.compact_fs_aware(&mut NoMonitor).map(|_| ());
    let n = crash_everywhere("compact --fs-aware", base.clone(), &op);
    assert!(n >= 4, "compact --fs-aware made only {n} writes");
    power_cut_everywhere("compact --fs-aware", base, &|img| img.compact_fs_aware(&mut NoMonitor).map(|_| ()));
}

#[test]
fn fs_aware_compact_refuses_a_dirty_fat_and_writes_nothing() {
    let base = fat12_with_a_deleted_file();
    let mut img = VdiImage::open(base.clone()).unwrap();
    img.write_at(0x25, &[1]).unwrap(); // the boot sector's dirty bit, as Linux sets it
    let dirty = img.into_storage();
    let mut img = VdiImage::open(Faulty::new(dirty, 0)).unwrap();
    let e = img.compact_fs_aware(&mut NoMonitor).unwrap_err();
    assert_eq!(e.kind(), "filesystem-not-clean", "{e}");
    assert!(e.to_string().contains("dirty bit"), "{e}");
}
