//! Repair: rebuild what check finds broken and can be inferred, keep every block whose data
//! is in the file, clear only entries that name no stored byte.

use crate::block_map::{EntryClass, EntryClassifier, BLOCK_FREE, BLOCK_ZERO};
use crate::check::{check_image, CheckReport, MAX_LISTED};
use crate::error::{Result, VdiError};
use crate::header::{ImageType, VdiHeader, MAX_BLOCKS_IN_IMAGE, SECTOR_SIZE, VDI_SIGNATURE, VDI_VERSION_0_2};
use crate::image::{read_header, VdiImage};
use crate::monitor::{Monitor, NoMonitor};
use crate::storage::{flush, read_exact, set_len, storage_len, write_all, ReadAt, Storage};

/// One change [`repair`] makes (or would make, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairAction {
    /// What is done, for people.
    pub message: String,
    /// True when data that was reachable before is lost (it was already unreliable).
    pub data_lost: bool,
}

/// The result of [`repair`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// True when nothing was written.
    pub dry_run: bool,
    /// The changes, in order (the first [`crate::check::MAX_LISTED`] per kind are listed).
    pub actions: Vec<RepairAction>,
    /// Header values that could not be read and were guessed.
    pub guessed: Vec<String>,
    /// The check before repairing.
    pub before: CheckReport,
    /// The check after repairing (None in a dry run).
    pub after: Option<CheckReport>,
}

/// Repair what check finds and can be fixed, never discarding a block whose data is in the
/// file and readable (each rule keeps what QEMU reads):
/// - a slot past `blocks_in_image` inside the file: kept, moved below it by the packing;
/// - a slot two blocks share: the later block gets its own copy (both read as before);
/// - the slot the end of the file cuts short: kept, the file grows to it (zeros past the
///   old end, as QEMU reads them);
/// - an entry naming no stored byte (wholly past the end of the file): cleared, reported
///   lost (it could not be read before either);
/// - `blocks_allocated` recomputed, leaked slots reclaimed, trailing bytes cut, an odd
///   `disk_size` rounded up to a sector, a fixed image that lost blocks made dynamic.
///
/// Header fields that break a rule but can be inferred are rebuilt and listed in `guessed`.
/// With `dry_run` nothing is written.
pub fn repair<S: Storage>(storage: S, dry_run: bool, monitor: &mut dyn Monitor) -> Result<(RepairReport, S)> {
    let mut rep = RepairReport { dry_run, ..Default::default() };
    let mut img = open_for_repair(storage, dry_run, &mut rep.guessed)?;
    let file_len = img.file_len;
    rep.before = check_image(&mut img, &mut NoMonitor)?;
    let plan = EntryFixes::plan(&mut img)?;
    plan.describe(&img, file_len, &mut rep.actions);
    if dry_run {
        return Ok((rep, img.storage));
    }
    plan.apply(&mut img, monitor)?;
    flush(&mut img.storage)?;
    rep.after = Some(check_image(&mut img, &mut NoMonitor)?);
    Ok((rep, img.storage))
}

/// Read the header (restoring a damaged signature), rebuild the fields that can be inferred
/// (written back unless `dry_run`) and open the image on it.
fn open_for_repair<S: Storage>(mut storage: S, dry_run: bool, guessed: &mut Vec<String>) -> Result<VdiImage<S>> {
    let mut header = read_header(&storage).or_else(|e| match e {
        VdiError::BadSignature { .. } => {
            let h = restore_signature(&storage)?;
            guessed.push("signature at 0x40 was damaged; restored from the header text and version".into());
            Ok(h)
        }
        e => Err(e),
    })?;
    if header.version == VDI_VERSION_0_2 {
        // Refused in a dry run too: it would list changes that cannot be written.
        return Err(VdiError::Unsupported("repairing a legacy v0.2 image (v0.2 images are read-only)".into()));
    }
    let file_len = storage_len(&storage)?;
    guess_fields(&mut header, guessed)?;
    header.validate_fields()?;
    header.validate_layout(file_len)?;
    if !guessed.is_empty() && !dry_run {
        let b = header.to_bytes()?;
        write_all(&mut storage, 0, &b)?;
    }
    VdiImage::with_header(storage, header, file_len)
}

/// What repair does to the block map, worked out from one scan of it.
struct EntryFixes {
    /// Entries to clear (block, why).
    clear: Vec<(u32, String)>,
    /// FREE entries.
    free: u64,
    /// Entries that keep their slot.
    in_use: u64,
    /// Blocks that shared a slot with an earlier block (block, slot, the earlier block when
    /// known): each gets a copy of it, so both read what they read before.
    copies: Vec<(u32, u32, Option<u32>)>,
    /// Blocks that shared a slot whose stored bytes are all zeros (block, slot): set ZERO
    /// instead of copied (they read zeros as before, and the file does not grow for them).
    zeroed: Vec<(u32, u32)>,
    /// Where each copy goes: the slots no kept entry names, lowest first (holes below the
    /// highest slot in use, then past it), so the count never grows past what the blocks
    /// need (cleared entries only name slots past the end of the file: see `apply`).
    targets: Vec<u32>,
    /// The end of the slot the end of the file cuts short, when an entry names it: the file
    /// grows to it (zeros), so the block keeps its stored bytes, as QEMU reads them.
    grow_to: Option<u64>,
    /// The highest slot kept + 1.
    max_end: u64,
    /// Whole slots in the file.
    slots: u64,
    /// Blocks kept in slots past blocks_in_image (moved below it by the packing).
    past_blocks: u64,
    /// A fixed image that loses blocks becomes a dynamic one.
    to_dynamic: bool,
}

impl EntryFixes {
    /// Classify every entry: what is readable is kept (see the rules in the module docs of
    /// this file), what names no stored byte is cleared.
    fn plan<S: Storage>(img: &mut VdiImage<S>) -> Result<Self> {
        let h = img.header.clone();
        // The slot the end of the file falls in, when some of its data bytes are stored, is
        // classified as if whole: the file grows to it before anything else is written.
        let cut = img.slots_in_file();
        let cut_start = img.slot_base(cut) + h.block_extra as u64;
        let partial = cut_start < img.file_len;
        let mut slots = EntryClassifier::with_owners(h.blocks_in_image, cut + partial as u64);
        let mut clear: Vec<(u32, String)> = Vec::new();
        let mut copies: Vec<(u32, u32, Option<u32>)> = Vec::new();
        let mut free = 0u64;
        img.map.scan(&img.storage, 0, h.blocks_in_image, |first, entries| {
            for (k, &raw) in entries.iter().enumerate() {
                let b = first + k as u32;
                let off = || h.virtual_size().min(b as u64 * h.block_size as u64);
                let why = match slots.classify(b, raw) {
                    EntryClass::Free => {
                        free += 1;
                        continue;
                    }
                    EntryClass::Zero | EntryClass::InUse(_) => continue,
                    // Kept: packing moves it below blocks_in_image (see `apply`).
                    EntryClass::PastBlocks(_) => continue,
                    EntryClass::OutOfRange(s) => format!(
                        "block {b} (disk offset {}) named slot {s}, not below blocks_in_image; cleared, its data is lost",
                        off()
                    ),
                    EntryClass::PastEnd(s) => format!(
                        "block {b} (disk offset {}) named slot {s}, past the end of the file; cleared, its data was never stored",
                        off()
                    ),
                    EntryClass::Duplicate { slot: s, first } => {
                        copies.push((b, s, first));
                        continue;
                    }
                };
                clear.push((b, why));
            }
            Ok(())
        })?;
        // A fixed image has every block allocated; one that has lost blocks (entries cleared
        // here, or FREE already: a truncated fixed image) can only be a dynamic one. Growing
        // the file back to the size its header claims could take any amount of space.
        let to_dynamic = h.kind() == Some(ImageType::Fixed) && free + clear.len() as u64 > 0;
        let grow_to = (partial && slots.is_taken(cut)).then(|| img.slot_base(cut + 1));
        // A shared slot of zeros (as stored: zeros past the end of the file too) needs no
        // copy: the later block becomes ZERO. Each slot is read once.
        let mut zero_slots = std::collections::BTreeMap::new();
        let mut buf = Vec::new();
        let mut zeroed = Vec::new();
        let mut kept = Vec::with_capacity(copies.len());
        for (b, s, first) in copies {
            let zero = match zero_slots.get(&s) {
                Some(&z) => z,
                None => {
                    let at = img.slot_base(s as u64) + h.block_extra as u64;
                    let stored = (at + h.block_size as u64).min(img.file_len).saturating_sub(at);
                    let z = img.zeros_at(at, stored, &mut buf)?;
                    zero_slots.insert(s, z);
                    z
                }
            };
            if zero {
                zeroed.push((b, s));
            } else {
                kept.push((b, s, first));
            }
        }
        let copies = kept;
        // Each skipped slot is one in use: at most in_use + copies steps.
        let mut targets = Vec::with_capacity(copies.len());
        let mut s = 0u64;
        while targets.len() < copies.len() {
            if s >= slots.end() || !slots.is_taken(s) {
                targets.push(
                    u32::try_from(s)
                        .ok()
                        .filter(|&t| t < BLOCK_ZERO)
                        .ok_or_else(|| VdiError::Unsupported("more slots than a block-map entry can name".into()))?,
                );
            }
            s += 1;
        }
        Ok(EntryFixes {
            clear,
            free,
            in_use: slots.in_use(),
            copies,
            zeroed,
            targets,
            grow_to,
            max_end: slots.end(),
            slots: slots.slots(),
            past_blocks: slots.past_blocks(),
            to_dynamic,
        })
    }

    /// The actions, for people, in the order they are done.
    fn describe<S: Storage>(&self, img: &VdiImage<S>, file_len: u64, actions: &mut Vec<RepairAction>) {
        let mut say = |message: String, data_lost: bool| actions.push(RepairAction { message, data_lost });
        if let Some(end) = self.grow_to {
            say(
                format!(
                    "the end of the file cuts slot {} short: the file grows by {} zero bytes, so the data stored in it is kept \
                     (as qemu-img reads it: zeros past the end of the file)",
                    self.slots - 1,
                    end - file_len
                ),
                false,
            );
        }
        for (_, m) in self.clear.iter().take(MAX_LISTED) {
            say(m.clone(), true);
        }
        if self.clear.len() > MAX_LISTED {
            say(format!("... and {} more entries cleared", self.clear.len() - MAX_LISTED), true);
        }
        let bs = img.header.block_size as u64;
        for (b, s, first) in self.copies.iter().take(MAX_LISTED) {
            let message = format!(
                "block {b} (disk offset {}) shared slot {s} with {}; given its own copy of that slot, so both \
                 read what they read before (one of them likely holds the other's data)",
                img.header.virtual_size().min(*b as u64 * bs),
                first.map_or("an earlier block".to_string(), |f| format!("block {f}"))
            );
            say(message, false);
        }
        if self.copies.len() > MAX_LISTED {
            say(format!("... and {} more shared slots copied", self.copies.len() - MAX_LISTED), false);
        }
        for (b, s) in self.zeroed.iter().take(MAX_LISTED) {
            say(format!("block {b} shared slot {s}, which holds only zeros; set to ZERO (it reads zeros, as before)"), false);
        }
        if self.zeroed.len() > MAX_LISTED {
            say(format!("... and {} more blocks sharing a slot of zeros set to ZERO", self.zeroed.len() - MAX_LISTED), false);
        }
        let file_len = file_len.max(self.grow_to.unwrap_or(0));
        let peak = self.targets.iter().map(|&t| img.slot_base(t as u64 + 1)).max().unwrap_or(0);
        if peak > file_len {
            say(
                format!(
                    "the copies of shared slots grow the file by {} bytes while repairing (to {peak} bytes)",
                    peak - file_len
                ),
                false,
            );
        }
        if self.to_dynamic {
            say(
                format!(
                    "image_type set from 2 (fixed) to 1 (dynamic): {} block(s) are no longer allocated and read as zeros",
                    self.free + self.clear.len() as u64
                ),
                false,
            );
        }
        let used = self.in_use + self.copies.len() as u64;
        let ba = img.header.blocks_allocated;
        if ba as u64 != used {
            say(format!("blocks_allocated set from {ba} to {used}"), false);
        }
        if self.past_blocks > 0 {
            say(
                format!(
                    "{} block(s) stored in slots past blocks_in_image ({}) moved below it; nothing is lost",
                    self.past_blocks, img.header.blocks_in_image
                ),
                false,
            );
        }
        let leaked = self.max_end - self.in_use;
        if leaked > 0 {
            say(format!("{leaked} leaked slot(s) reclaimed by moving blocks from the end of the file"), false);
        }
        let end = img.slot_base(used);
        let file_len = file_len.max(peak);
        if file_len > end {
            say(format!("file truncated to {end} bytes (from {file_len})"), false);
        }
    }

    /// Write the fixes, in a crash-safe order.
    fn apply<S: Storage>(&self, img: &mut VdiImage<S>, monitor: &mut dyn Monitor) -> Result<()> {
        // 0. The slot the end of the file cuts short becomes whole (zeros past the old end):
        // only bytes past the end of the file change.
        if let Some(end) = self.grow_to {
            set_len(&mut img.storage, end)?;
            img.file_len = end;
            flush(&mut img.storage)?;
        }
        // 1. The header count covers every slot still in use (never below: crash-safe).
        let ba = img.header.blocks_allocated as u64;
        let recount = ba < self.max_end || ba > self.slots;
        if recount {
            img.header.blocks_allocated = self.max_end as u32;
        }
        if self.to_dynamic {
            img.header.image_type = ImageType::Normal.raw();
        }
        if recount || self.to_dynamic {
            img.write_header()?;
        }
        // 2. Clear the bad entries; blocks that share a slot of zeros become ZERO.
        for (b, _) in &self.clear {
            img.map.set(&img.storage, *b, BLOCK_FREE)?;
        }
        for (b, _) in &self.zeroed {
            img.map.set(&img.storage, *b, BLOCK_ZERO)?;
        }
        img.map.flush(&mut img.storage)?;
        // 3. Each block that shared a slot gets a copy of it in a slot no kept entry names
        // (see `targets`), then the count covers the copies, then the entries point at them;
        // a barrier before each (a cleared entry may name a slot past the end of the file
        // that a copy goes to: it is FREE on the disk before the copy lands there; a copy
        // lands before anything names it).
        if !self.copies.is_empty() {
            img.barrier()?;
            let mut buf = Vec::new();
            for ((_, slot, _), &to) in self.copies.iter().zip(&self.targets) {
                img.copy_slot(*slot as u64, to as u64, &mut buf)?;
            }
            img.barrier()?;
            let end = self.targets.iter().map(|&t| t + 1).max().unwrap_or(0);
            if end > img.header.blocks_allocated {
                img.header.blocks_allocated = end;
                img.write_header()?;
                img.barrier()?;
            }
            for ((b, _, _), &to) in self.copies.iter().zip(&self.targets) {
                img.map.set(&img.storage, *b, to)?;
            }
            img.barrier()?;
        }
        // 4. Fill holes, set the count, truncate.
        img.reclaim_unchecked(monitor)?;
        Ok(())
    }
}

/// Rebuild a header whose signature was damaged, when the rest still reads as a v1.1 header.
fn restore_signature<S: ReadAt>(storage: &S) -> Result<VdiHeader> {
    let len = storage_len(storage)?;
    let mut buf = vec![0u8; len.min(0x200) as usize];
    read_exact(storage, 0, &mut buf)?;
    if buf.len() < 0x1D8 || !buf.starts_with(b"<<< ") || !buf[..64].windows(10).any(|w| w == b"Disk Image") {
        return Err(VdiError::BadSignature { found: u32::from_le_bytes([buf[0x40], buf[0x41], buf[0x42], buf[0x43]]) });
    }
    buf[0x40..0x44].copy_from_slice(&VDI_SIGNATURE.to_le_bytes());
    VdiHeader::parse(&buf)
}

/// Fix header fields that break a rule but can be inferred; say what was guessed.
fn guess_fields(h: &mut VdiHeader, guessed: &mut Vec<String>) -> Result<()> {
    if h.kind().is_none() {
        guessed.push(format!("image_type {} is invalid; set to 1 (dynamic)", h.image_type));
        h.image_type = 1;
    }
    if h.legacy_geometry.sector_size != SECTOR_SIZE && h.version != VDI_VERSION_0_2 {
        guessed.push(format!("sector_size {} set to 512", h.legacy_geometry.sector_size));
        h.legacy_geometry.sector_size = SECTOR_SIZE;
    }
    if let Some(l) = h.lchs.as_mut() {
        if l.sector_size != SECTOR_SIZE && l.sector_size != 0 {
            guessed.push(format!("LCHS sector_size {} set to 512", l.sector_size));
            l.sector_size = SECTOR_SIZE;
        }
    }
    if h.block_size.is_power_of_two() && h.blocks_in_image <= MAX_BLOCKS_IN_IMAGE {
        let cap = h.blocks_in_image as u64 * h.block_size as u64;
        if h.disk_size > cap {
            guessed.push(format!("disk_size {} exceeds blocks_in_image * block_size; set to {cap}", h.disk_size));
            h.disk_size = cap;
        }
    }
    if h.disk_size % SECTOR_SIZE as u64 != 0 {
        let r = h.virtual_size();
        guessed.push(format!("disk_size {} rounded up to {r} (a whole sector)", h.disk_size));
        h.disk_size = r;
    }
    // (blocks_allocated > blocks_in_image is no guess to make: the entries say which slots
    // hold data, and the packing in `EntryFixes::apply` sets the count.)
    Ok(())
}
