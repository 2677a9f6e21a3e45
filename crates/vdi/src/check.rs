//! Consistency check: everything `qemu-img check` reports for VDI, and what it misses.
//!
//! The check reads the header and scans the block map once, in chunks; memory is one bit
//! per data slot that fits in the file (so it is bounded by the file's real size, not by
//! header claims) plus the first [`MAX_LISTED`] findings.

use crate::block_map::{run_len, Entry, EntryClass, EntryClassifier, BLOCK_FREE, BLOCK_ZERO};
use crate::error::{Result, VdiError};
use crate::header::{ImageType, VdiHeader};
use crate::image::{OpenOptions, VdiImage};
use crate::monitor::Monitor;
use crate::storage::ReadAt;

/// Findings listed in a report; further ones are only counted.
pub const MAX_LISTED: usize = 100;

/// How bad a finding is, in `qemu-img check` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Data may be read wrongly or lost.
    Corruption,
    /// Space is wasted; no data is at risk.
    Leak,
}

impl Severity {
    /// "corruption" or "leak".
    pub fn name(self) -> &'static str {
        match self {
            Severity::Corruption => "corruption",
            Severity::Leak => "leak",
        }
    }
}

/// What kind of problem a finding is (stable names for UIs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// The header's layout breaks a rule (regions overlap, offsets misaligned).
    BadLayout,
    /// The file ends inside the block map.
    MapTruncated,
    /// An entry names a slot >= blocks_in_image that the file does not hold.
    EntryOutOfRange,
    /// Slots past blocks_in_image hold data (an entry names one, or `blocks_allocated`
    /// counts them), as some compaction tools leave an image: every byte reads, VirtualBox
    /// refuses the image, repair and compact move the blocks below blocks_in_image.
    SlotPastBlocks,
    /// An entry names a slot whose data lies (partly) past the end of the file.
    EntryPastEnd,
    /// Two entries name the same slot.
    DuplicateEntry,
    /// blocks_allocated differs from the number of allocated entries.
    AllocatedMismatch,
    /// A slot in the data area that no entry references.
    LeakedSlot,
    /// The file is shorter than its allocated blocks need.
    FileTooShort,
    /// The file holds bytes past the last slot in use.
    TrailingBytes,
    /// A fixed image has a block that is not allocated.
    FixedNotAllocated,
}

impl FindingKind {
    /// Stable kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::BadLayout => "bad-layout",
            FindingKind::MapTruncated => "map-truncated",
            FindingKind::EntryOutOfRange => "entry-out-of-range",
            FindingKind::SlotPastBlocks => "slot-past-blocks",
            FindingKind::EntryPastEnd => "entry-past-end",
            FindingKind::DuplicateEntry => "duplicate-entry",
            FindingKind::AllocatedMismatch => "allocated-mismatch",
            FindingKind::LeakedSlot => "leaked-slot",
            FindingKind::FileTooShort => "file-too-short",
            FindingKind::TrailingBytes => "trailing-bytes",
            FindingKind::FixedNotAllocated => "fixed-not-allocated",
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Corruption or leak.
    pub severity: Severity,
    /// What kind of problem.
    pub kind: FindingKind,
    /// Where: "header", "block 12", "slot 7", "file".
    pub location: String,
    /// A sentence for people.
    pub message: String,
}

/// The result of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The first [`MAX_LISTED`] findings.
    pub findings: Vec<Finding>,
    /// Corruptions found (all, listed or not).
    pub corruptions: u64,
    /// Leaks found (all, listed or not).
    pub leaks: u64,
    /// Of the corruptions, those of kind [`FindingKind::SlotPastBlocks`] (all, listed or
    /// not): the ones repair and compact fix without loss.
    pub past_blocks: u64,
    /// Entries in the block map (blocks_in_image).
    pub total_blocks: u64,
    /// Entries naming a data slot.
    pub allocated_blocks: u64,
    /// ZERO entries.
    pub zero_blocks: u64,
    /// FREE entries.
    pub free_blocks: u64,
    /// Entries that could not be read (map truncated).
    pub unreadable_entries: u64,
    /// Allocated blocks whose slot is not the one after the previous block's.
    pub fragmented_blocks: u64,
    /// End of the last slot in use (what the file needs), in bytes.
    pub image_end_offset: u64,
    /// The file's length.
    pub file_len: u64,
}

impl CheckReport {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.corruptions == 0 && self.leaks == 0
    }
    /// Findings not listed because of [`MAX_LISTED`].
    pub fn unlisted(&self) -> u64 {
        self.corruptions + self.leaks - self.findings.len() as u64
    }
    /// `qemu-img check` exit code: 0 clean, 2 corruption, 3 leaks only.
    pub fn exit_code(&self) -> i32 {
        if self.corruptions > 0 {
            2
        } else if self.leaks > 0 {
            3
        } else {
            0
        }
    }

    fn add(&mut self, severity: Severity, kind: FindingKind, location: impl Into<String>, message: impl Into<String>) {
        match severity {
            Severity::Corruption => self.corruptions += 1,
            Severity::Leak => self.leaks += 1,
        }
        if kind == FindingKind::SlotPastBlocks {
            self.past_blocks += 1;
        }
        if self.findings.len() < MAX_LISTED {
            self.findings.push(Finding { severity, kind, location: location.into(), message: message.into() });
        }
    }
}

/// Check the image on `storage`. Fails only when the header cannot be read at all (the
/// `qemu-img check` "could not open" case); everything else becomes a finding.
/// `monitor` sees progress in block-map entries.
pub fn check<S: ReadAt>(storage: S, monitor: &mut dyn Monitor) -> Result<CheckReport> {
    let mut img = VdiImage::open_with(storage, OpenOptions { lenient: true })?;
    check_image(&mut img, monitor)
}

/// Check an image already open (see [`check`]).
pub fn check_image<S: ReadAt>(img: &mut VdiImage<S>, monitor: &mut dyn Monitor) -> Result<CheckReport> {
    let h = img.header().clone();
    let file_len = img.file_len();
    let mut r = CheckReport { total_blocks: h.blocks_in_image as u64, file_len, ..Default::default() };
    if let Some(e) = img.layout_error() {
        r.add(Severity::Corruption, FindingKind::BadLayout, "header", e.to_string());
    }
    let readable = check_map_in_file(img, &mut r);
    let mut slots = EntryClassifier::new(h.blocks_in_image, img.slots_in_file());
    scan_entries(img, readable, &mut slots, &mut r, monitor)?;
    check_allocated_count(&h, &slots, &mut r);
    check_leaked_slots(&h, &slots, &mut r);
    check_file_end(&h, &slots, &mut r);
    Ok(r)
}

/// Where the file ends inside the block map, a finding; returns the entries it holds.
fn check_map_in_file<S: ReadAt>(img: &VdiImage<S>, r: &mut CheckReport) -> u32 {
    let h = img.header();
    let readable = img.readable_entries();
    // (An empty map needs no bytes, wherever offset_bmap points.)
    if readable < h.blocks_in_image {
        r.unreadable_entries = (h.blocks_in_image - readable) as u64;
        r.add(
            Severity::Corruption,
            FindingKind::MapTruncated,
            format!("block {readable}"),
            format!(
                "the block map needs {} bytes but the file ends at {}: entries {readable}..{} cannot be read",
                h.offset_bmap as u64 + h.map_bytes(),
                img.file_len(),
                h.blocks_in_image
            ),
        );
    }
    readable
}

/// Count and judge the first `readable` entries (one scan of the map, in chunks): the
/// totals of `r`, and a finding for each entry `slots` classifies as bad.
fn scan_entries<S: ReadAt>(
    img: &VdiImage<S>,
    readable: u32,
    slots: &mut EntryClassifier,
    r: &mut CheckReport,
    monitor: &mut dyn Monitor,
) -> Result<()> {
    let h = img.header();
    let (file_len, stride) = (img.file_len(), h.block_stride());
    let mut prev_slot: Option<u32> = None;
    let total = h.blocks_in_image as u64;
    let fixed = h.kind() == Some(ImageType::Fixed);
    let mut report_every = 0u32;
    img.block_map().scan(img.storage(), 0, readable, |first, entries| {
        if monitor.cancelled() {
            return Err(VdiError::Cancelled);
        }
        let mut k = 0;
        while k < entries.len() {
            let raw = entries[k];
            let block = first + k as u32;
            k += 1;
            // Runs of FREE (not in a fixed image, where each is a finding) and ZERO entries
            // are counted at once: a maximum-size map is 512 Mi entries, nearly all FREE.
            if raw == BLOCK_ZERO || (raw == BLOCK_FREE && !fixed) {
                let run = 1 + run_len(&entries[k..], raw);
                k += run - 1;
                if raw == BLOCK_ZERO {
                    r.zero_blocks += run as u64;
                } else {
                    r.free_blocks += run as u64;
                }
                continue;
            }
            if let Entry::Data(slot) = Entry::from_raw(raw) {
                r.allocated_blocks += 1;
                if prev_slot.is_some_and(|p| p.wrapping_add(1) != slot) {
                    r.fragmented_blocks += 1;
                }
                prev_slot = Some(slot);
            }
            let (kind, message) = match slots.classify(block, raw) {
                EntryClass::Free => {
                    r.free_blocks += 1;
                    // (Only a fixed image's FREE entries come here.)
                    (FindingKind::FixedNotAllocated, format!("block {block} of a fixed image is FREE"))
                }
                EntryClass::Zero => {
                    r.zero_blocks += 1;
                    continue;
                }
                EntryClass::InUse(_) => continue,
                EntryClass::PastBlocks(slot) => (
                    FindingKind::SlotPastBlocks,
                    format!(
                        "block {block} maps to slot {slot}, not below blocks_in_image ({}); its data is in the file and reads, \
                         but VirtualBox refuses the image: repair or compact moves it below blocks_in_image without loss",
                        h.blocks_in_image
                    ),
                ),
                // (The slot the end of the file cuts short is past the end whatever its
                // number: repair keeps its stored bytes.)
                EntryClass::OutOfRange(slot) if file_len <= h.slot_offset(slot) => (
                    FindingKind::EntryOutOfRange,
                    format!("block {block} maps to slot {slot}, which is not below blocks_in_image ({})", h.blocks_in_image),
                ),
                EntryClass::PastEnd(slot) | EntryClass::OutOfRange(slot) => {
                    let off = h.offset_data as u64 + slot as u64 * stride;
                    let stored = file_len.saturating_sub(h.slot_offset(slot));
                    let kept = if stored > 0 {
                        format!("; its first {stored} bytes are stored (repair keeps them, zeros after, as qemu-img reads it)")
                    } else {
                        String::new()
                    };
                    (
                        FindingKind::EntryPastEnd,
                        format!(
                            "block {block} maps to slot {slot} at {off}..{}, past the end of the file ({file_len} bytes){kept}",
                            off + stride
                        ),
                    )
                }
                EntryClass::Duplicate { slot, .. } => (
                    FindingKind::DuplicateEntry,
                    format!(
                        "block {block} maps to slot {slot}, which an earlier block already uses (repair gives it a copy: both keep what they read)"
                    ),
                ),
            };
            r.add(Severity::Corruption, kind, format!("block {block}"), message);
        }
        report_every += 1;
        if report_every % 16 == 0 {
            monitor.progress(first as u64 + entries.len() as u64, total);
        }
        Ok(())
    })?;
    monitor.progress(total, total);
    Ok(())
}

/// blocks_allocated is where the next block goes (VirtualBox and QEMU append at that
/// slot). Below the highest slot in use it is dangerous; above the count it only wastes.
fn check_allocated_count(h: &VdiHeader, slots: &EntryClassifier, r: &mut CheckReport) {
    let ba = h.blocks_allocated as u64;
    let max_end = slots.end();
    if h.slots_past_blocks() && max_end <= ba {
        // (The count then differs from the entries too; this says what it means.)
        r.add(
            Severity::Corruption,
            FindingKind::SlotPastBlocks,
            "header",
            format!(
                "blocks_allocated {ba} exceeds blocks_in_image ({}): VirtualBox refuses the image; \
                 repair or compact moves the {} block(s) stored past it below it without loss",
                h.blocks_in_image,
                slots.past_blocks()
            ),
        );
    } else if max_end > ba {
        r.add(
            Severity::Corruption,
            FindingKind::AllocatedMismatch,
            "header",
            format!(
                "blocks_allocated is {ba} but slot {} is in use ({} entries allocated): a new block would be written over existing data",
                max_end - 1,
                r.allocated_blocks
            ),
        );
    } else if r.allocated_blocks != ba && (r.unreadable_entries == 0 || r.allocated_blocks > ba) {
        // (With part of the map unreadable, fewer entries than counted proves nothing.)
        r.add(
            Severity::Leak,
            FindingKind::AllocatedMismatch,
            "header",
            format!(
                "blocks_allocated is {ba} but {} entries are allocated (qemu-img check calls this an error; the extra slots are only wasted space)",
                r.allocated_blocks
            ),
        );
    }
}

/// Slots inside the counted data area that nobody references: counted as the slots counted
/// less those taken (the count may reach 2^32 slots in a sparse file; the map names at most
/// `blocks_in_image`), the first [`MAX_LISTED`] listed.
fn check_leaked_slots(h: &VdiHeader, slots: &EntryClassifier, r: &mut CheckReport) {
    let counted = (h.blocks_allocated as u64).min(slots.slots());
    let leaked = counted - slots.taken_below(counted);
    // Each slot skipped here is taken: at most MAX_LISTED + blocks_in_image steps.
    let mut listed = 0u64;
    for s in (0..counted).filter(|&s| !slots.is_taken(s)).take(MAX_LISTED.min(leaked as usize)) {
        listed += 1;
        r.add(
            Severity::Leak,
            FindingKind::LeakedSlot,
            format!("slot {s}"),
            format!(
                "slot {s} (at {}) is inside the data area but no block maps to it",
                h.offset_data as u64 + s * h.block_stride()
            ),
        );
    }
    r.leaks += leaked - listed;
}

/// The file against what its blocks need: too short (a corruption) or with bytes past the
/// last slot in use (a leak). Sets `image_end_offset`.
fn check_file_end(h: &VdiHeader, slots: &EntryClassifier, r: &mut CheckReport) {
    let file_len = r.file_len;
    let stride = h.block_stride();
    let needed = h.offset_data as u64 + h.blocks_allocated as u64 * stride;
    if file_len < needed && h.blocks_allocated > 0 {
        r.add(
            Severity::Corruption,
            FindingKind::FileTooShort,
            "file",
            format!(
                "the file is {file_len} bytes but its {} allocated blocks need {needed}",
                h.blocks_allocated
            ),
        );
    }
    let slots_end = h.offset_data as u64 + slots.end() * stride;
    let map_end = h.offset_bmap as u64 + h.map_bytes();
    let end = needed.max(slots_end).max(map_end.min(file_len));
    r.image_end_offset = end;
    if file_len > end {
        r.add(
            Severity::Leak,
            FindingKind::TrailingBytes,
            "file",
            format!("the file has {} bytes past the end of its last block (at {end})", file_len - end),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create, CreateOptions};
    use crate::monitor::NoMonitor;
    use crate::storage::{MemStorage, Storage};
    use uuid::Uuid;

    fn image_with_blocks(n: u64) -> MemStorage {
        let o = CreateOptions::new(8 << 20, Uuid::from_u128(1), Uuid::from_u128(2));
        let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        for b in 0..n {
            img.write_at(b * (1 << 20), &[0xAB; 512]).unwrap();
        }
        img.into_storage()
    }

    fn set_entry(s: &mut MemStorage, block: u64, v: u32) {
        s.write_at((1 << 20) + block * 4, &v.to_le_bytes()).unwrap();
    }

    #[test]
    fn clean_image_checks_clean() {
        let r = check(image_with_blocks(3), &mut NoMonitor).unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.allocated_blocks, r.free_blocks, r.total_blocks), (3, 5, 8));
    }

    #[test]
    fn duplicate_and_out_of_range_and_mismatch() {
        let mut s = image_with_blocks(3);
        set_entry(&mut s, 5, 1); // duplicate of block 1's slot
        set_entry(&mut s, 6, 100); // >= blocks_in_image
        let r = check(s, &mut NoMonitor).unwrap();
        let kinds: Vec<_> = r.findings.iter().map(|f| f.kind).collect();
        assert!(kinds.contains(&FindingKind::DuplicateEntry), "{kinds:?}");
        assert!(kinds.contains(&FindingKind::EntryOutOfRange), "{kinds:?}");
        assert!(kinds.contains(&FindingKind::AllocatedMismatch), "{kinds:?}");
        assert_eq!(r.exit_code(), 2);
    }

    #[test]
    fn past_end_leak_and_trailing() {
        let mut s = image_with_blocks(3);
        set_entry(&mut s, 7, 5); // slot 5 lies past the end (3 slots in the file)
        let r = check(s.clone(), &mut NoMonitor).unwrap();
        assert!(r.findings.iter().any(|f| f.kind == FindingKind::EntryPastEnd), "{r:?}");
        // Leak: clear block 1's entry but keep blocks_allocated.
        let mut s = image_with_blocks(3);
        set_entry(&mut s, 1, crate::BLOCK_FREE);
        s.write_at((1 << 20) + 8 * 4, &[]).unwrap();
        let r = check(s, &mut NoMonitor).unwrap();
        assert!(r.findings.iter().any(|f| f.kind == FindingKind::LeakedSlot && f.location == "slot 1"), "{r:?}");
        // Trailing bytes only: a leak.
        let mut s = image_with_blocks(2);
        let len = s.len().unwrap();
        s.set_len(len + 4096).unwrap();
        let r = check(s, &mut NoMonitor).unwrap();
        assert_eq!(r.exit_code(), 3, "{r:?}");
    }

    #[test]
    fn truncated_map_is_a_finding_and_bounded() {
        // A 3 MiB file claiming the largest map: judged without reading 2 GiB.
        let mut s = image_with_blocks(1);
        s.write_at(0x180, &crate::header::MAX_BLOCKS_IN_IMAGE.to_le_bytes()).unwrap();
        s.write_at(0x170, &((crate::header::MAX_BLOCKS_IN_IMAGE as u64) << 20).to_le_bytes()).unwrap();
        let r = check(s, &mut NoMonitor).unwrap();
        assert!(r.findings.iter().any(|f| f.kind == FindingKind::MapTruncated), "{r:?}");
        assert!(r.findings.iter().any(|f| f.kind == FindingKind::BadLayout), "{r:?}");
    }

    #[test]
    fn findings_list_is_capped() {
        let mut s = image_with_blocks(1);
        for b in 1..8 {
            set_entry(&mut s, b, 0); // all duplicates of slot 0
        }
        let mut r = check(s, &mut NoMonitor).unwrap();
        assert_eq!(r.corruptions, 7); // 7 duplicates
        assert_eq!(r.leaks, 1); // blocks_allocated (1) != 8 entries, but nothing lies past slot 0
        r.findings.truncate(2);
        assert_eq!(r.unlisted(), 6);
    }
}
