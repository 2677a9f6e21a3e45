//! An open VDI image: validated header, lazy block map, reads and writes at any offset.

use crate::block_map::{BlockMap, Entry};
use crate::error::{Result, VdiError};
use crate::header::{Geometry, ImageType, VdiHeader, HEADER_BYTES_MAX, VDI_VERSION_0_2};
use uuid::Uuid;
use crate::storage::{flush, read_exact, storage_len, write_all, ReadAt, Storage};

/// The state of a run of the virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockState {
    /// Never written (reads zeros in a base image; the parent's data in a diff).
    Free,
    /// Known zero.
    Zero,
    /// Stored in the data area.
    Data,
}

impl BlockState {
    /// Lowercase name: "free", "zero", "data".
    pub fn name(self) -> &'static str {
        match self {
            BlockState::Free => "free",
            BlockState::Zero => "zero",
            BlockState::Data => "data",
        }
    }
}

/// A run of the virtual disk with one state, as `qemu-img map` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Virtual byte offset.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// State of the whole run.
    pub state: BlockState,
    /// Host byte offset of the run's first byte, for [`BlockState::Data`].
    pub host_offset: Option<u64>,
}

/// How strictly to open an image.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Accept a layout that breaks the rules (overlapping regions, misaligned offsets) so
    /// that `check` can report it. Field rules (sizes, types) are always enforced.
    pub lenient: bool,
}

/// An open VDI image over storage `S`.
#[derive(Debug)]
pub struct VdiImage<S> {
    pub(crate) storage: S,
    pub(crate) header: VdiHeader,
    pub(crate) map: BlockMap,
    pub(crate) file_len: u64,
    pub(crate) next_slot: Option<u32>,
    pub(crate) layout_error: Option<String>,
}

/// Bytes read at open: enough for every header this engine knows.
const HEADER_READ: usize = 0x200;

/// Read and parse the header of `storage` without validating it.
pub fn read_header<S: ReadAt + ?Sized>(storage: &S) -> Result<VdiHeader> {
    let len = storage_len(storage)?;
    let n = (len.min(HEADER_READ as u64)) as usize;
    let mut buf = vec![0u8; n];
    read_exact(storage, 0, &mut buf)?;
    VdiHeader::parse(&buf).map_err(|e| match e {
        VdiError::Truncated { what, needed, .. } => VdiError::Truncated { what, needed, len },
        e => e,
    })
}

/// How many whole slots (prefix and data) the file holds after `offset_data`: the one
/// "slots in file" computation. Not capped at `blocks_in_image`; safe on a header not yet
/// validated (a zero stride counts as one byte).
pub(crate) fn slots_in_file(h: &VdiHeader, file_len: u64) -> u64 {
    file_len.saturating_sub(h.offset_data as u64) / h.block_stride().max(1)
}

/// True when `storage` starts with a VDI pre-header (signature check only).
pub fn probe<S: ReadAt + ?Sized>(storage: &S) -> bool {
    let mut b = [0u8; 0x44];
    storage.read_at(0, &mut b).is_ok() && VdiHeader::probe(&b)
}

impl<S: ReadAt> VdiImage<S> {
    /// Open an image, validating every rule of the format. Reads the header only.
    pub fn open(storage: S) -> Result<Self> {
        Self::open_with(storage, OpenOptions::default())
    }

    /// Open with options.
    pub fn open_with(storage: S, opts: OpenOptions) -> Result<Self> {
        let header = read_header(&storage)?;
        let file_len = storage_len(&storage)?;
        header.validate_fields()?;
        let mut layout_error = None;
        if let Err(e) = header.validate_layout(file_len) {
            if !opts.lenient {
                return Err(e);
            }
            layout_error = Some(e.to_string());
        }
        let map_end = header.offset_bmap as u64 + header.map_bytes();
        if header.blocks_in_image > 0 && map_end > file_len && !opts.lenient {
            return Err(VdiError::Truncated { what: "the block map", needed: map_end, len: file_len });
        }
        let map = BlockMap::new(header.offset_bmap as u64, header.blocks_in_image);
        Ok(VdiImage { storage, header, map, file_len, next_slot: None, layout_error })
    }

    /// An image over `storage` described by `header` (already validated by the caller),
    /// for repair, which fixes a header in memory before anything is written.
    pub(crate) fn with_header(storage: S, header: VdiHeader, file_len: u64) -> Result<Self> {
        header.validate_fields()?;
        header.validate_layout(file_len)?;
        let map = BlockMap::new(header.offset_bmap as u64, header.blocks_in_image);
        Ok(VdiImage { storage, header, map, file_len, next_slot: None, layout_error: None })
    }

    /// The header as read (and as updated by writes).
    pub fn header(&self) -> &VdiHeader {
        &self.header
    }
    /// Virtual disk size in bytes (disk_size rounded up to a sector).
    pub fn virtual_size(&self) -> u64 {
        self.header.virtual_size()
    }
    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.header.block_size as u64
    }
    /// Number of blocks covering the virtual disk (may be fewer than `blocks_in_image`).
    pub fn blocks_covering_disk(&self) -> u32 {
        self.virtual_size().div_ceil(self.block_size()) as u32
    }
    /// Length of the underlying file when opened (kept up to date by writes).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }
    /// How many whole slots the file holds after `offset_data` (not capped at
    /// `blocks_in_image`).
    pub fn slots_in_file(&self) -> u64 {
        slots_in_file(&self.header, self.file_len)
    }
    /// How many block-map entries lie inside the file: `blocks_in_image`, or fewer when the
    /// file ends inside the map (an image opened leniently).
    pub fn readable_entries(&self) -> u32 {
        let h = &self.header;
        let map_end = h.offset_bmap as u64 + h.map_bytes();
        if map_end > self.file_len {
            (self.file_len.saturating_sub(h.offset_bmap as u64) / 4).min(h.blocks_in_image as u64) as u32
        } else {
            h.blocks_in_image
        }
    }
    /// A layout rule broken by the header, when opened leniently.
    pub fn layout_error(&self) -> Option<&str> {
        self.layout_error.as_deref()
    }
    /// The underlying storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }
    /// Give the storage back.
    pub fn into_storage(self) -> S {
        self.storage
    }
    /// The block map (read-only use).
    pub fn block_map(&self) -> &BlockMap {
        &self.map
    }
    /// True for a differencing image.
    pub fn is_diff(&self) -> bool {
        self.header.kind() == Some(ImageType::Diff)
    }

    /// The entry of virtual block `block`.
    pub fn entry(&mut self, block: u32) -> Result<Entry> {
        Ok(Entry::from_raw(self.map.get(&self.storage, block)?))
    }

    /// Host byte range `[start, end)` of `slot`'s data.
    fn slot_range(&self, slot: u32) -> (u64, u64) {
        let start = self.header.slot_offset(slot);
        (start, start + self.block_size())
    }

    /// Host offset of `slot`'s data, refusing a slot whose data lies past the end of file.
    pub(crate) fn data_offset(&self, block: u32, slot: u32) -> Result<u64> {
        let (start, end) = self.slot_range(slot);
        if end > self.file_len {
            return Err(VdiError::BlockPastEnd { block: block as u64, slot, offset: start, len: self.file_len });
        }
        Ok(start)
    }

    pub(crate) fn check_range(&self, op: &'static str, offset: u64, len: u64) -> Result<()> {
        let size = self.virtual_size();
        if offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(VdiError::OutOfRange { op, offset, len, size });
        }
        Ok(())
    }

    /// Read `buf.len()` bytes of the virtual disk at `offset`.
    ///
    /// FREE and ZERO blocks read as zeros; runs of blocks adjacent both in the disk and in
    /// the file are read with one storage call. A block whose data lies past the end of the
    /// file is an error, never invented zeros.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range("read", offset, buf.len() as u64)?;
        let bs = self.block_size();
        // Pending run of contiguous data: (host offset, start in buf, length).
        let mut run: Option<(u64, usize, usize)> = None;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = (pos / bs) as u32;
            let in_block = pos % bs;
            let n = ((bs - in_block) as usize).min(buf.len() - done);
            match self.entry(block)? {
                Entry::Data(slot) => {
                    let host = self.data_offset(block, slot)? + in_block;
                    run = match run {
                        Some((h, b, l)) if h + l as u64 == host && b + l == done => Some((h, b, l + n)),
                        Some((h, b, l)) => {
                            read_exact(&self.storage, h, &mut buf[b..b + l])?;
                            Some((host, done, n))
                        }
                        None => Some((host, done, n)),
                    };
                }
                Entry::Free if self.is_diff() => {
                    return Err(VdiError::NeedsParent {
                        block: block as u64,
                        parent: self.header.uuid_link.to_string(),
                    })
                }
                Entry::Free | Entry::Zero => buf[done..done + n].fill(0),
            }
            done += n;
        }
        if let Some((h, b, l)) = run {
            read_exact(&self.storage, h, &mut buf[b..b + l])?;
        }
        Ok(())
    }

    /// Visit the disk as merged extents, in order: adjacent blocks with the same state (and,
    /// for data, contiguous host offsets) form one extent ([`crate::Runs::map`]).
    pub fn extents(&mut self, mut f: impl FnMut(Extent) -> Result<()>) -> Result<()> {
        let mut runs = crate::disk::Runs::map();
        while let Some(r) = runs.next(self)? {
            f(Extent { start: r.start, length: r.len, state: r.block.state(), host_offset: r.block.host() })?;
        }
        Ok(())
    }
}

/// A pending data write: host offset and where its bytes come from.
enum Segment {
    /// `data[start..end]` of the caller's buffer.
    Borrowed { host: u64, start: usize, end: usize },
    /// A padded block built here.
    Owned { host: u64, data: Vec<u8> },
}

/// True when every byte of `b` is zero (the fast check used by writes and import).
pub fn all_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(64);
    chunks.all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0) && chunks.remainder().iter().all(|&x| x == 0)
}

impl<S: Storage> VdiImage<S> {
    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_writable_layer()?;
        if self.is_diff() {
            return Err(VdiError::Unsupported(
                "writing to a differencing image without its parent attached".into(),
            ));
        }
        Ok(())
    }

    /// What any write needs, diff or not: a v1 header, a sound layout, and no slots past
    /// `blocks_in_image` (a new block would go at slot `blocks_allocated`, past the map's
    /// range; repair or compact moves those blocks first).
    pub(crate) fn check_writable_layer(&self) -> Result<()> {
        self.check_layout_writable()?;
        self.check_no_slots_past_blocks()
    }

    /// Refuse any write while slots past `blocks_in_image` are counted (the image is
    /// read-only until repair or compact moves them).
    fn check_no_slots_past_blocks(&self) -> Result<()> {
        if self.header.slots_past_blocks() {
            return Err(VdiError::Unsupported(format!(
                "writing to an image whose data area holds slots past blocks_in_image (blocks_allocated {} > {}); \
                 run repair or compact first (they move those blocks below it without loss)",
                self.header.blocks_allocated, self.header.blocks_in_image
            )));
        }
        Ok(())
    }

    /// A v1 header and a sound layout: what surgery that fixes slots past `blocks_in_image`
    /// (repair, compact) needs.
    pub(crate) fn check_layout_writable(&self) -> Result<()> {
        if self.header.version == VDI_VERSION_0_2 {
            return Err(VdiError::Unsupported("writing to a legacy v0.2 image".into()));
        }
        if let Some(e) = &self.layout_error {
            return Err(VdiError::Unsupported(format!("writing to an image whose layout is broken: {e}")));
        }
        Ok(())
    }

    /// The first slot free for a new block. Trusts `blocks_allocated` only when nothing in
    /// the file lies past the slots it counts; otherwise scans the map, so a header that
    /// undercounts its blocks never makes a new block land on existing data (and the first
    /// allocation after the scan stores the real count: see [`Self::alloc_slot`]).
    fn compute_next_slot(&mut self) -> Result<u32> {
        let ba = self.header.blocks_allocated;
        let counted_end = self.header.offset_data as u64 + ba as u64 * self.header.block_stride();
        if self.file_len <= counted_end {
            return Ok(ba);
        }
        let mut next = ba;
        let file_len = self.file_len;
        let header = &self.header;
        self.map.scan(&self.storage, 0, header.blocks_in_image, |_, entries| {
            for &raw in entries {
                if let Entry::Data(s) = Entry::from_raw(raw) {
                    if header.slot_offset(s) < file_len && s >= next {
                        next = s + 1;
                    }
                }
            }
            Ok(())
        })?;
        Ok(next)
    }

    fn alloc_slot(&mut self) -> Result<u32> {
        let slot = match self.next_slot {
            Some(s) => s,
            None => self.compute_next_slot()?,
        };
        if slot >= self.header.blocks_in_image {
            return Err(VdiError::Unsupported(format!(
                "no free slot for a new block: slot {slot} would exceed blocks_in_image ({}); repair the image first",
                self.header.blocks_in_image
            )));
        }
        self.next_slot = Some(slot + 1);
        // The count becomes the end of the slots in use, not the old count plus one: after a
        // scan past a header that undercounts, the new slot lies beyond the counted ones, and
        // a count short of it would let the next writer (QEMU, VirtualBox), which appends at
        // slot `blocks_allocated`, put a block on top of one. Without a scan, slot == count.
        self.header.blocks_allocated = self.header.blocks_allocated.max(slot + 1);
        Ok(slot)
    }

    /// Write `data` to the virtual disk at `offset`.
    ///
    /// New blocks are appended at the next free slot and padded with zeros. Order: data,
    /// then the header (its `blocks_allocated`), then the block-map entries (one write per
    /// contiguous run), so an interruption leaks a block at worst and `blocks_allocated`
    /// never undercounts the slots in use. (QEMU and VirtualBox write the header last; the
    /// window between their map and header writes leaves a header that undercounts.)
    /// Writing zeros to an unallocated block changes nothing and allocates nothing.
    ///
    /// A write that fails before its entries are recorded changes nothing the image reads:
    /// the slots it took and the entries it staged are forgotten.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.write_unchecked(offset, data)
    }

    /// [`VdiImage::write_at`] without refusing differencing images: the chain code fills
    /// new blocks of a diff from its parent before it calls this.
    pub(crate) fn write_unchecked(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range("write", offset, data.len() as u64)?;
        let allocated_before = self.header.blocks_allocated;
        if let Err(e) = self.write_data(offset, data) {
            self.map.reset(self.map.offset(), self.header.blocks_in_image);
            self.header.blocks_allocated = allocated_before;
            self.next_slot = None;
            return Err(e);
        }
        // The header's count goes before the entries: stopped in between, the image only
        // leaks the new slots; the other way round it would undercount blocks in use, and
        // the next writer (VirtualBox, QEMU) would put a new block on top of one.
        if self.header.blocks_allocated != allocated_before {
            if let Err(e) = self.write_header() {
                self.map.reset(self.map.offset(), self.header.blocks_in_image);
                self.header.blocks_allocated = allocated_before;
                self.next_slot = None;
                return Err(e);
            }
        }
        if let Err(e) = self.map.flush(&mut self.storage) {
            // Some runs may have been written: read the map from the storage again.
            self.map.reset(self.map.offset(), self.header.blocks_in_image);
            return Err(e);
        }
        Ok(())
    }

    /// First half of [`VdiImage::write_at`]: stage the entries of new blocks (in memory) and
    /// write the data.
    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let bs = self.block_size();
        let stride = self.header.block_stride();
        let extra = self.header.block_extra as usize;
        let mut segs: Vec<Segment> = Vec::new();
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let block = (pos / bs) as u32;
            let in_block = pos % bs;
            let n = ((bs - in_block) as usize).min(data.len() - done);
            let (start, end) = (done, done + n);
            let src = &data[start..end];
            done += n;
            match self.entry(block)? {
                Entry::Data(slot) => {
                    let host = self.data_offset(block, slot)? + in_block;
                    push_borrowed(&mut segs, host, start, end);
                }
                Entry::Free | Entry::Zero => {
                    if all_zero(src) {
                        continue;
                    }
                    let slot = self.alloc_slot()?;
                    let base = self.header.offset_data as u64 + slot as u64 * stride;
                    if n as u64 == bs {
                        push_borrowed(&mut segs, base + extra as u64, start, end);
                    } else {
                        let mut buf = vec![0u8; stride as usize];
                        buf[extra + in_block as usize..][..n].copy_from_slice(src);
                        segs.push(Segment::Owned { host: base, data: buf });
                    }
                    self.map.set(&self.storage, block, slot)?;
                }
            }
        }
        for s in &segs {
            let (host, bytes) = match s {
                Segment::Borrowed { host, start, end } => (*host, &data[*start..*end]),
                Segment::Owned { host, data } => (*host, data.as_slice()),
            };
            write_all(&mut self.storage, host, bytes)?;
            self.file_len = self.file_len.max(host + bytes.len() as u64);
        }
        Ok(())
    }

    /// Set block `block` to FREE or ZERO (or any raw entry) and write the map and header.
    /// Low-level: used by surgery operations; does not reclaim the slot.
    pub fn set_entry(&mut self, block: u32, entry: Entry) -> Result<()> {
        self.map.set(&self.storage, block, entry.raw())?;
        self.map.flush(&mut self.storage)?;
        Ok(())
    }

    /// Rewrite the header fields at the start of the file.
    pub fn write_header(&mut self) -> Result<()> {
        let bytes = self.header.to_bytes()?;
        debug_assert!(bytes.len() <= HEADER_BYTES_MAX);
        write_all(&mut self.storage, 0, &bytes)
    }

    /// Replace the header (e.g. to change a UUID or comment) and write it.
    /// Only fields that do not change the layout may differ.
    pub fn update_header(&mut self, f: impl FnOnce(&mut VdiHeader) -> Result<()>) -> Result<()> {
        if self.header.version == VDI_VERSION_0_2 {
            return Err(VdiError::Unsupported("writing to a legacy v0.2 image".into()));
        }
        self.check_no_slots_past_blocks()?;
        let mut h = self.header.clone();
        f(&mut h)?;
        let same_layout = h.offset_bmap == self.header.offset_bmap
            && h.offset_data == self.header.offset_data
            && h.block_size == self.header.block_size
            && h.block_extra == self.header.block_extra
            && h.blocks_in_image == self.header.blocks_in_image
            && h.blocks_allocated == self.header.blocks_allocated
            && h.disk_size == self.header.disk_size
            && h.header_size == self.header.header_size;
        if !same_layout {
            return Err(VdiError::InvalidArgument("update_header may not change the image layout".into()));
        }
        self.header = h;
        self.write_header()
    }

    /// Change the header fields named in `edit` (one header write). Refused: a null image
    /// UUID (VirtualBox identifies images by it), LCHS geometry on a 0x180 header (it has no
    /// such field), a comment longer than 255 bytes of UTF-8.
    pub fn edit_header(&mut self, edit: &HeaderEdit) -> Result<()> {
        if edit.is_empty() {
            return Err(VdiError::InvalidArgument("nothing to change in the header".into()));
        }
        if edit.uuid.is_some_and(|u| u.is_nil()) {
            return Err(VdiError::InvalidArgument(
                "the image UUID must not be null: VirtualBox identifies images by it".into(),
            ));
        }
        self.update_header(|h| {
            if let Some(c) = &edit.comment {
                h.set_comment(c)?;
            }
            if let Some(g) = edit.lchs {
                if h.lchs.is_none() {
                    return Err(VdiError::Unsupported(format!(
                        "this image's header (size {:#x}, as QEMU writes) has no LCHS field; only v1.1+ headers (0x190) do",
                        h.header_size
                    )));
                }
                h.lchs = Some(g);
            }
            let set = |field: &mut Uuid, v: Option<Uuid>| {
                if let Some(u) = v {
                    *field = u;
                }
            };
            set(&mut h.uuid_create, edit.uuid);
            set(&mut h.uuid_modify, edit.modify_uuid);
            set(&mut h.uuid_link, edit.parent_uuid);
            set(&mut h.uuid_parent_modify, edit.parent_modify_uuid);
            Ok(())
        })
    }

    /// Flush the storage.
    pub fn flush(&mut self) -> Result<()> {
        flush(&mut self.storage)
    }
}

fn push_borrowed(segs: &mut Vec<Segment>, host: u64, start: usize, end: usize) {
    if let Some(Segment::Borrowed { host: h, start: s, end: e }) = segs.last_mut() {
        if *e == start && *h + (*e - *s) as u64 == host {
            *e = end;
            return;
        }
    }
    segs.push(Segment::Borrowed { host, start, end });
}

/// Header fields to change with [`VdiImage::edit_header`]; `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdit {
    /// The image UUID (never null).
    pub uuid: Option<Uuid>,
    /// The modify UUID.
    pub modify_uuid: Option<Uuid>,
    /// The parent's image UUID (`uuid_link`; null for a standalone image).
    pub parent_uuid: Option<Uuid>,
    /// The parent's modify UUID when the diff was made.
    pub parent_modify_uuid: Option<Uuid>,
    /// The comment (at most 255 bytes of UTF-8; empty clears it).
    pub comment: Option<String>,
    /// The logical CHS geometry (v1.1+ headers only).
    pub lchs: Option<Geometry>,
}

impl HeaderEdit {
    /// True when no field is to change.
    pub fn is_empty(&self) -> bool {
        *self == HeaderEdit::default()
    }
}
