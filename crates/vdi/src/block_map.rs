//! The block map, read lazily in pages with a bounded cache.
//!
//! A maximum-size image has a 2 GiB block map; opening it reads none of it. Lookups load
//! 4 KiB pages on demand and keep at most [`CACHE_PAGES`] of them. Changes are kept in a
//! dirty set until [`BlockMap::flush`] writes them, one storage write per contiguous run.

use std::collections::{BTreeMap, HashMap, VecDeque};

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::error::{Result, VdiError};
use crate::storage::{read_exact, storage_len, write_all, ReadAt, Storage};

/// Entry value of a block never written (reads as zeros, or from the parent in a diff).
pub const BLOCK_FREE: u32 = 0xFFFF_FFFF;
/// Entry value of a block known to be zero (does not fall through to a parent).
pub const BLOCK_ZERO: u32 = 0xFFFF_FFFE;

/// Entries per cached page (4 KiB).
pub const PAGE_ENTRIES: usize = 1024;
/// Most pages kept in the cache (4 MiB).
pub const CACHE_PAGES: usize = 1024;
/// Entries read per storage call when scanning the whole map (256 KiB).
pub const SCAN_ENTRIES: usize = 64 * 1024;

/// How many entries at the start of `entries` equal `value`. Compares 64 entries at a time
/// (a loop the compiler vectorizes), so skipping the FREE runs of a 2 GiB map costs about
/// what reading it does.
pub(crate) fn run_len(entries: &[u32], value: u32) -> usize {
    let mut n = 0;
    for c in entries.chunks_exact(64) {
        if c.iter().fold(0, |a, &e| a | (e ^ value)) != 0 {
            break;
        }
        n += 64;
    }
    n + entries[n..].iter().take_while(|&&e| e == value).count()
}

/// The decoded meaning of one block-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entry {
    /// Never written.
    Free,
    /// Known to be zero.
    Zero,
    /// Stored in physical slot `n` of the data area.
    Data(u32),
}

impl Entry {
    /// Decode a raw entry.
    pub fn from_raw(v: u32) -> Self {
        match v {
            BLOCK_FREE => Entry::Free,
            BLOCK_ZERO => Entry::Zero,
            s => Entry::Data(s),
        }
    }
    /// Encode to the raw value.
    pub fn raw(self) -> u32 {
        match self {
            Entry::Free => BLOCK_FREE,
            Entry::Zero => BLOCK_ZERO,
            Entry::Data(s) => s,
        }
    }
}

/// What one block-map entry means for the image's consistency, judged in map order
/// against the file by an [`EntryClassifier`]: the one judgement that [`crate::check()`]
/// reports and [`crate::repair`] acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryClass {
    /// FREE.
    Free,
    /// ZERO.
    Zero,
    /// A slot inside the file that no earlier entry names: the block's data.
    InUse(u32),
    /// A slot not below `blocks_in_image` whose data is not (wholly) in the file.
    OutOfRange(u32),
    /// A slot not below `blocks_in_image` whose data lies wholly inside the file and that no
    /// earlier entry names, as some compaction tools leave it: the block's data, readable
    /// (QEMU reads it), though VirtualBox refuses the image. Repair and compact move it
    /// below `blocks_in_image`.
    PastBlocks(u32),
    /// A slot whose data lies (partly) past the end of the file.
    PastEnd(u32),
    /// A slot an earlier entry already names; `first` is that entry's block when the
    /// classifier keeps owners ([`EntryClassifier::with_owners`]).
    Duplicate {
        /// The slot named twice.
        slot: u32,
        /// The block that named it first.
        first: Option<u32>,
    },
}

/// No block owns the slot.
const NO_OWNER: u32 = u32::MAX;

/// The slots taken so far: one bit each, or the block that took each.
#[derive(Debug, Clone)]
enum Taken {
    Bits(Vec<u64>),
    Owners(Vec<u32>),
}

/// Classifies block-map entries visited in map order (see [`EntryClass`]) and remembers
/// which slots they take. Memory is bounded by the slots the file really holds, never by
/// what a header claims: one bit per slot ([`EntryClassifier::new`]), or the owning block
/// per slot ([`EntryClassifier::with_owners`]).
#[derive(Debug, Clone)]
pub struct EntryClassifier {
    blocks_in_image: u32,
    /// Slots below `blocks_in_image` in the file (those `taken` covers).
    below: u64,
    /// Whole slots in the file, past `blocks_in_image` too.
    slots: u64,
    taken: Taken,
    /// Slots past `blocks_in_image` taken so far, and the block that took each: at most one
    /// per entry read, so bounded by the map's bytes in the file.
    past: BTreeMap<u32, u32>,
    in_use: u64,
    end: u64,
}

impl EntryClassifier {
    /// A classifier for a map of `blocks_in_image` entries over a file holding
    /// `slots_in_file` whole slots (see [`crate::VdiImage::slots_in_file`]).
    pub fn new(blocks_in_image: u32, slots_in_file: u64) -> Self {
        let slots = slots_in_file.min(blocks_in_image as u64);
        Self::with(blocks_in_image, slots_in_file, Taken::Bits(vec![0; slots.div_ceil(64) as usize]))
    }

    /// Like [`EntryClassifier::new`], remembering which block took each slot, so that a
    /// duplicate names the block it collides with (4 bytes per slot instead of one bit).
    pub fn with_owners(blocks_in_image: u32, slots_in_file: u64) -> Self {
        let slots = slots_in_file.min(blocks_in_image as u64);
        Self::with(blocks_in_image, slots_in_file, Taken::Owners(vec![NO_OWNER; slots as usize]))
    }

    fn with(blocks_in_image: u32, slots: u64, taken: Taken) -> Self {
        let below = slots.min(blocks_in_image as u64);
        EntryClassifier { blocks_in_image, below, slots, taken, past: BTreeMap::new(), in_use: 0, end: 0 }
    }

    /// Slots whose data lies wholly inside the file (past `blocks_in_image` too: see
    /// [`EntryClass::PastBlocks`]).
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// Entries classified [`EntryClass::PastBlocks`] so far.
    pub fn past_blocks(&self) -> u64 {
        self.past.len() as u64
    }

    /// Classify the raw entry `raw` of block `block`; entries must come in map order (the
    /// first entry naming a slot takes it).
    pub fn classify(&mut self, block: u32, raw: u32) -> EntryClass {
        let slot = match Entry::from_raw(raw) {
            Entry::Free => return EntryClass::Free,
            Entry::Zero => return EntryClass::Zero,
            Entry::Data(s) if s >= self.blocks_in_image && s as u64 >= self.slots => {
                return EntryClass::OutOfRange(s)
            }
            Entry::Data(s) if s >= self.blocks_in_image => return self.classify_past_blocks(block, s),
            Entry::Data(s) if s as u64 >= self.below => return EntryClass::PastEnd(s),
            Entry::Data(s) => s,
        };
        let i = slot as usize;
        let first = match &mut self.taken {
            Taken::Bits(bits) => {
                let (w, b) = (i / 64, i % 64);
                let was = bits[w] & (1 << b) != 0;
                bits[w] |= 1 << b;
                was.then_some(None)
            }
            Taken::Owners(owners) => {
                let was = owners[i];
                if was == NO_OWNER {
                    owners[i] = block;
                }
                (was != NO_OWNER).then_some(Some(was))
            }
        };
        if let Some(first) = first {
            return EntryClass::Duplicate { slot, first };
        }
        self.in_use += 1;
        self.end = self.end.max(slot as u64 + 1);
        EntryClass::InUse(slot)
    }

    /// A slot past `blocks_in_image` but inside the file.
    fn classify_past_blocks(&mut self, block: u32, slot: u32) -> EntryClass {
        if let Some(&first) = self.past.get(&slot) {
            let first = matches!(self.taken, Taken::Owners(_)).then_some(first);
            return EntryClass::Duplicate { slot, first };
        }
        self.past.insert(slot, block);
        self.in_use += 1;
        self.end = self.end.max(slot as u64 + 1);
        EntryClass::PastBlocks(slot)
    }

    /// True when an entry classified so far took `slot`.
    pub fn is_taken(&self, slot: u64) -> bool {
        if slot >= self.below {
            return u32::try_from(slot).is_ok_and(|s| self.past.contains_key(&s));
        }
        match &self.taken {
            Taken::Bits(bits) => bits[(slot / 64) as usize] & (1 << (slot % 64)) != 0,
            Taken::Owners(owners) => owners[slot as usize] != NO_OWNER,
        }
    }

    /// Slots below `end` taken so far: counted from what was taken (at most one per
    /// entry), never by walking the slots.
    pub fn taken_below(&self, end: u64) -> u64 {
        let dense = match &self.taken {
            Taken::Bits(bits) => {
                let n = end.min(self.below);
                let whole = (n / 64) as usize;
                let mut t: u64 = bits[..whole].iter().map(|w| w.count_ones() as u64).sum();
                if n % 64 != 0 {
                    t += (bits[whole] & ((1u64 << (n % 64)) - 1)).count_ones() as u64;
                }
                t
            }
            Taken::Owners(owners) => owners[..end.min(self.below) as usize].iter().filter(|&&o| o != NO_OWNER).count() as u64,
        };
        dense + self.past.keys().take_while(|&&s| (s as u64) < end).count() as u64
    }

    /// Entries classified [`EntryClass::InUse`] so far.
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    /// The highest slot in use + 1 (0 when none is): where the data in use ends, in slots.
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// A lazily-read block map.
#[derive(Debug)]
pub struct BlockMap {
    offset: u64,
    entries: u32,
    pages: HashMap<u32, Box<[u32]>>,
    order: VecDeque<u32>,
    dirty: BTreeMap<u32, u32>,
}

impl BlockMap {
    /// A map of `entries` entries at byte `offset` of the storage. Reads nothing.
    pub fn new(offset: u64, entries: u32) -> Self {
        BlockMap { offset, entries, pages: HashMap::new(), order: VecDeque::new(), dirty: BTreeMap::new() }
    }

    /// Number of entries.
    pub fn len(&self) -> u32 {
        self.entries
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Byte offset of the map in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of pages currently cached (for tests and diagnostics).
    pub fn cached_pages(&self) -> usize {
        self.pages.len()
    }

    fn check_index(&self, index: u32) -> Result<()> {
        if index >= self.entries {
            return Err(VdiError::InvalidArgument(format!(
                "block {index} is outside the block map of {} entries",
                self.entries
            )));
        }
        Ok(())
    }

    /// The raw entry of block `index`.
    pub fn get<S: ReadAt + ?Sized>(&mut self, storage: &S, index: u32) -> Result<u32> {
        self.check_index(index)?;
        if let Some(v) = self.dirty.get(&index) {
            return Ok(*v);
        }
        let page = index / PAGE_ENTRIES as u32;
        if !self.pages.contains_key(&page) {
            self.load_page(storage, page)?;
        }
        // A page the file cuts short holds only the entries the file has.
        match self.pages[&page].get(index as usize % PAGE_ENTRIES) {
            Some(v) => Ok(*v),
            None => Err(self.truncated(storage)),
        }
    }

    fn truncated<S: ReadAt + ?Sized>(&self, storage: &S) -> VdiError {
        VdiError::Truncated {
            what: "the block map",
            needed: self.offset + self.entries as u64 * 4,
            len: storage_len(storage).unwrap_or(0),
        }
    }

    fn load_page<S: ReadAt + ?Sized>(&mut self, storage: &S, page: u32) -> Result<()> {
        let first = page as u64 * PAGE_ENTRIES as u64;
        let at = self.offset + first * 4;
        // Where the file ends inside this page (an image opened leniently), keep the entries
        // it holds, so they read as they are; the rest fail as truncated. Never ask for bytes
        // past the end.
        let in_file = storage_len(storage)?.saturating_sub(at) / 4;
        let n = (self.entries as u64 - first).min(PAGE_ENTRIES as u64).min(in_file) as usize;
        if n == 0 {
            return Err(self.truncated(storage));
        }
        let mut raw = vec![0u8; n * 4];
        self.read_raw(storage, at, &mut raw)?;
        let mut vals = vec![0u32; n].into_boxed_slice();
        LE::read_u32_into(&raw, &mut vals);
        if self.pages.len() >= CACHE_PAGES {
            if let Some(old) = self.order.pop_front() {
                self.pages.remove(&old);
            }
        }
        self.pages.insert(page, vals);
        self.order.push_back(page);
        Ok(())
    }

    fn read_raw<S: ReadAt + ?Sized>(&self, storage: &S, at: u64, raw: &mut [u8]) -> Result<()> {
        read_exact(storage, at, raw).map_err(|e| match e {
            VdiError::Io { ref source, .. } if source.past_end => self.truncated(storage),
            e => e,
        })
    }

    /// Set block `index` to `value`; kept in memory until [`BlockMap::flush`].
    pub fn set<S: ReadAt + ?Sized>(&mut self, storage: &S, index: u32, value: u32) -> Result<()> {
        self.check_index(index)?;
        let page = index / PAGE_ENTRIES as u32;
        if !self.pages.contains_key(&page) {
            // Load so later lookups are served from the cache; the dirty set stays the truth.
            self.load_page(storage, page)?;
        }
        match self.pages.get_mut(&page).and_then(|p| p.get_mut(index as usize % PAGE_ENTRIES)) {
            Some(v) => *v = value,
            None => return Err(self.truncated(storage)),
        }
        self.dirty.insert(index, value);
        Ok(())
    }

    /// True when changes are waiting to be written.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Write every changed entry: one storage write per run of consecutive entries.
    /// Returns the number of storage writes made.
    pub fn flush<S: Storage + ?Sized>(&mut self, storage: &mut S) -> Result<usize> {
        let mut writes = 0;
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u32;
        let mut prev: Option<u32> = None;
        let dirty = std::mem::take(&mut self.dirty);
        for (&i, &v) in &dirty {
            if prev.is_some_and(|p| p + 1 != i) {
                write_all(storage, self.offset + run_start as u64 * 4, &run)?;
                writes += 1;
                run.clear();
            }
            if run.is_empty() {
                run_start = i;
            }
            run.extend_from_slice(&v.to_le_bytes());
            prev = Some(i);
        }
        if !run.is_empty() {
            write_all(storage, self.offset + run_start as u64 * 4, &run)?;
            writes += 1;
        }
        Ok(writes)
    }

    /// Drop all cached pages and pending changes (after the map moved or was rewritten).
    pub fn reset(&mut self, offset: u64, entries: u32) {
        *self = BlockMap::new(offset, entries);
    }

    /// Visit the entries `start..end` in chunks of up to [`SCAN_ENTRIES`], without caching
    /// them: `f(first_index, entries)`. Pending changes are applied to what `f` sees.
    /// Where the file ends inside the map, visits the entries it holds, then stops with
    /// [`VdiError::Truncated`] (never asking storage for bytes past the end).
    pub fn scan<S: ReadAt + ?Sized>(
        &self,
        storage: &S,
        start: u32,
        end: u32,
        mut f: impl FnMut(u32, &[u32]) -> Result<()>,
    ) -> Result<()> {
        self.scan_while(storage, start, end, |i, v| f(i, v).map(|()| true)).map(|_| ())
    }

    /// [`BlockMap::scan`] that stops after the chunk for which `f` returns false. Returns
    /// the index after the last entry visited (one buffer for the whole scan, however far
    /// it goes: a caller that wants a bounded amount of output stops it, instead of asking
    /// for small ranges one call each).
    pub fn scan_while<S: ReadAt + ?Sized>(
        &self,
        storage: &S,
        start: u32,
        end: u32,
        mut f: impl FnMut(u32, &[u32]) -> Result<bool>,
    ) -> Result<u32> {
        let wanted = end.min(self.entries);
        let in_file = storage_len(storage)?.saturating_sub(self.offset) / 4;
        let end = wanted.min(u32::try_from(in_file).unwrap_or(u32::MAX));
        let mut raw = vec![0u8; SCAN_ENTRIES.min(end.saturating_sub(start) as usize) * 4];
        let mut vals = vec![0u32; raw.len() / 4];
        let mut i = start;
        while i < end {
            let n = ((end - i) as usize).min(SCAN_ENTRIES);
            self.read_raw(storage, self.offset + i as u64 * 4, &mut raw[..n * 4])?;
            LE::read_u32_into(&raw[..n * 4], &mut vals[..n]);
            for (&k, &v) in self.dirty.range(i..i + n as u32) {
                vals[(k - i) as usize] = v;
            }
            let go_on = f(i, &vals[..n])?;
            i += n as u32;
            if !go_on {
                return Ok(i);
            }
        }
        if end < wanted {
            return Err(self.truncated(storage));
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn map_storage(n: u32) -> MemStorage {
        let mut raw = vec![0u8; 512];
        for i in 0..n {
            raw.extend_from_slice(&(if i % 3 == 0 { BLOCK_FREE } else { i }).to_le_bytes());
        }
        MemStorage::from_vec(raw)
    }

    #[test]
    fn run_len_counts_equal_leading_entries() {
        for n in [0usize, 1, 63, 64, 65, 200] {
            let mut v = vec![BLOCK_FREE; n];
            assert_eq!(run_len(&v, BLOCK_FREE), n);
            v.push(7);
            v.push(BLOCK_FREE);
            assert_eq!(run_len(&v, BLOCK_FREE), n);
            assert_eq!(run_len(&v[n..], BLOCK_FREE), 0);
            assert_eq!(run_len(&v, BLOCK_ZERO), 0);
        }
    }

    #[test]
    fn lazy_pages_are_bounded() {
        let n = (PAGE_ENTRIES * (CACHE_PAGES + 10)) as u32;
        let s = map_storage(n);
        let mut m = BlockMap::new(512, n);
        assert_eq!(m.cached_pages(), 0);
        for i in (0..n).step_by(PAGE_ENTRIES) {
            let want = if i % 3 == 0 { BLOCK_FREE } else { i };
            assert_eq!(m.get(&s, i).unwrap(), want);
        }
        assert_eq!(m.cached_pages(), CACHE_PAGES);
        assert!(m.get(&s, n).is_err());
    }

    #[test]
    fn flush_writes_one_run_per_contiguous_range() {
        let mut s = map_storage(5000);
        let mut m = BlockMap::new(512, 5000);
        for i in [10, 11, 12, 4000, 4001, 20] {
            m.set(&s, i, BLOCK_ZERO).unwrap();
        }
        assert_eq!(m.flush(&mut s).unwrap(), 3);
        let mut fresh = BlockMap::new(512, 5000);
        for i in [10, 11, 12, 20, 4000, 4001] {
            assert_eq!(fresh.get(&s, i).unwrap(), BLOCK_ZERO);
        }
        assert_eq!(fresh.get(&s, 13).unwrap(), 13);
    }

    #[test]
    fn classifier_judges_in_order() {
        for owners in [false, true] {
            // 8 entries, 4 whole slots in the file.
            let mut c = if owners { EntryClassifier::with_owners(8, 4) } else { EntryClassifier::new(8, 4) };
            assert_eq!(c.classify(0, BLOCK_FREE), EntryClass::Free);
            assert_eq!(c.classify(1, BLOCK_ZERO), EntryClass::Zero);
            assert_eq!(c.classify(2, 2), EntryClass::InUse(2));
            assert_eq!(c.classify(3, 8), EntryClass::OutOfRange(8));
            assert_eq!(c.classify(4, 5), EntryClass::PastEnd(5));
            assert_eq!(c.classify(5, 2), EntryClass::Duplicate { slot: 2, first: owners.then_some(2) });
            assert_eq!(c.classify(6, 0), EntryClass::InUse(0));
            assert_eq!((c.in_use(), c.end(), c.slots()), (2, 3, 4));
            assert!(c.is_taken(0) && !c.is_taken(1) && c.is_taken(2) && !c.is_taken(3));
        }
        // Slots past blocks_in_image but inside the file hold data too (a compaction tool's
        // leftovers); a second entry naming one is a duplicate.
        for owners in [false, true] {
            let mut c = if owners { EntryClassifier::with_owners(4, 7) } else { EntryClassifier::new(4, 7) };
            assert_eq!(c.classify(0, 5), EntryClass::PastBlocks(5));
            assert_eq!(c.classify(1, 7), EntryClass::OutOfRange(7));
            assert_eq!(c.classify(2, 5), EntryClass::Duplicate { slot: 5, first: owners.then_some(0) });
            assert_eq!(c.classify(3, 1), EntryClass::InUse(1));
            assert_eq!((c.in_use(), c.end(), c.slots(), c.past_blocks()), (2, 6, 7, 1));
            assert!(c.is_taken(5) && !c.is_taken(4) && !c.is_taken(6) && c.is_taken(1));
        }
    }

    #[test]
    fn truncated_map_is_reported() {
        let s = map_storage(100);
        let mut m = BlockMap::new(512, 2000);
        let e = m.get(&s, 1500).unwrap_err();
        assert_eq!(e.kind(), "truncated", "{e}");
        let e = m.scan(&s, 0, 2000, |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("block map"), "{e}");
    }
}
