//! Block maps summarised for drawing: one [`Cells`] type for an image's own map, each layer
//! of a chain, and the chain's combined disk.
//!
//! An image can have up to 2^29 blocks; the page draws at most [`MAX_CELLS`] cells (the
//! page reads the limit from [`crate::limits`]). The map is scanned once, in the engine's
//! chunks, and every `per` consecutive blocks fold into one cell: how many are data, ZERO
//! and unreadable (the rest are free), the mean physical slot of the data blocks (for the
//! view coloured by position) and the layer that supplies most of the cell's data.
//! Memory is a few numbers per cell, whatever the image size.

use serde_json::{json, Value};
use vdi::{Block, Chain, Disk, Entry, Runs, VdiError, VdiImage};
use wasm_bindgen::prelude::*;

use crate::storage::Backend;

/// Most cells one summary may have.
pub const MAX_CELLS: u32 = 1 << 20;

/// Layer index meaning "no layer" (a cell without data).
pub const NO_LAYER: u8 = 255;

/// A map folded into cells (see the module docs).
#[wasm_bindgen]
#[derive(Debug, Clone)]
pub struct Cells {
    per: u32,
    blocks: u32,
    readable: u32,
    data: Vec<u32>,
    zero: Vec<u32>,
    unreadable: Vec<u32>,
    slot: Vec<f32>,
    layer: Vec<u8>,
    summary: String,
}

#[wasm_bindgen]
impl Cells {
    /// Blocks per cell.
    #[wasm_bindgen(getter)]
    pub fn per(&self) -> u32 {
        self.per
    }
    /// Number of cells.
    #[wasm_bindgen(getter)]
    pub fn cells(&self) -> u32 {
        self.data.len() as u32
    }
    /// Blocks covered (a map's entries, or the blocks of a chain's disk).
    #[wasm_bindgen(getter)]
    pub fn blocks(&self) -> u32 {
        self.blocks
    }
    /// Entries that could be read (fewer than `blocks` when the file ends inside the map).
    #[wasm_bindgen(getter)]
    pub fn readable(&self) -> u32 {
        self.readable
    }
    /// Data blocks per cell (a fresh JS array, transferable).
    pub fn data(&self) -> js_sys::Uint32Array {
        js_sys::Uint32Array::from(&self.data[..])
    }
    /// ZERO blocks per cell.
    pub fn zero(&self) -> js_sys::Uint32Array {
        js_sys::Uint32Array::from(&self.zero[..])
    }
    /// Unreadable entries per cell (the file ends inside a block map).
    pub fn unreadable(&self) -> js_sys::Uint32Array {
        js_sys::Uint32Array::from(&self.unreadable[..])
    }
    /// Mean physical slot of the data blocks per cell (NaN when there are none; a chain's
    /// combined map has no single file, so NaN throughout).
    pub fn slot(&self) -> js_sys::Float32Array {
        js_sys::Float32Array::from(&self.slot[..])
    }
    /// Layer supplying most of the cell's data blocks (base = 0; 255 = none).
    pub fn layer(&self) -> js_sys::Uint8Array {
        js_sys::Uint8Array::from(&self.layer[..])
    }
    /// Totals (JSON).
    pub fn summary(&self) -> String {
        self.summary.clone()
    }
}

impl Cells {
    /// Data blocks per cell.
    pub fn data_counts(&self) -> &[u32] {
        &self.data
    }
    /// ZERO blocks per cell.
    pub fn zero_counts(&self) -> &[u32] {
        &self.zero
    }
    /// Mean slot per cell.
    pub fn mean_slots(&self) -> &[f32] {
        &self.slot
    }
    /// Dominant layer per cell.
    pub fn layers(&self) -> &[u8] {
        &self.layer
    }

    /// Empty cells for `blocks` blocks at `per` a cell, refusing more than [`MAX_CELLS`].
    fn new(blocks: u32, per: u32) -> vdi::Result<Self> {
        if per == 0 {
            return Err(VdiError::InvalidArgument("blocks per cell must be at least 1".into()));
        }
        let n = blocks.div_ceil(per);
        if n > MAX_CELLS {
            return Err(VdiError::InvalidArgument(format!(
                "{blocks} blocks at {per} per cell make {n} cells; at most {MAX_CELLS} are drawn"
            )));
        }
        let n = n as usize;
        Ok(Cells {
            per,
            blocks,
            readable: blocks,
            data: vec![0; n],
            zero: vec![0; n],
            unreadable: vec![0; n],
            slot: vec![f32::NAN; n],
            layer: vec![NO_LAYER; n],
            summary: String::new(),
        })
    }

    /// The cell of block `b`.
    fn cell(&self, b: u64) -> usize {
        (b / self.per as u64) as usize
    }
}

/// Image `img`'s own block map (every entry, `blocks_in_image` of them), as layer
/// `layer`: what the block map view of one image and each layer view of a chain draw.
pub fn layer_cells(img: &VdiImage<Backend>, layer: u8, per: u32) -> vdi::Result<Cells> {
    let blocks = img.header().blocks_in_image;
    let mut c = Cells::new(blocks, per)?;
    let readable = img.readable_entries();
    c.readable = readable;
    let mut slot_sum = vec![0f64; c.data.len()];
    let (mut nd, mut nz, mut nf, mut frag) = (0u64, 0u64, 0u64, 0u64);
    let mut max_slot: Option<u32> = None;
    let mut prev: Option<u32> = None;
    img.block_map().scan(img.storage(), 0, readable, |first, entries| {
        for (k, &raw) in entries.iter().enumerate() {
            let i = c.cell(first as u64 + k as u64);
            match Entry::from_raw(raw) {
                Entry::Data(s) => {
                    nd += 1;
                    c.data[i] += 1;
                    slot_sum[i] += s as f64;
                    if prev.is_some_and(|p| p.wrapping_add(1) != s) {
                        frag += 1;
                    }
                    prev = Some(s);
                    max_slot = Some(max_slot.map_or(s, |m| m.max(s)));
                }
                Entry::Zero => {
                    nz += 1;
                    c.zero[i] += 1;
                }
                Entry::Free => nf += 1,
            }
        }
        Ok(())
    })?;
    for b in readable..blocks {
        let i = c.cell(b as u64);
        c.unreadable[i] += 1;
    }
    for (i, sum) in slot_sum.iter().enumerate() {
        if c.data[i] > 0 {
            c.slot[i] = (sum / c.data[i] as f64) as f32;
            c.layer[i] = layer;
        }
    }
    c.summary = json!({
        "blocks": blocks,
        "data": nd,
        "zero": nz,
        "free": nf,
        "unreadable": blocks - readable,
        "fragmented": frag,
        "max-slot": max_slot,
        "blocks-covering-disk": img.blocks_covering_disk(),
    })
    .to_string();
    Ok(c)
}

/// A chain's disk: for every block the layer that decides it (the first DATA or ZERO entry
/// from the top down), folded into cells, walking the engine's [`Runs::map`]. Where a
/// layer's map is cut short by its file, the walk goes on block by block from there: a block
/// whose deciding entry lies past the end of its file is unreadable, the others count.
pub fn combined_cells(chain: &mut Chain<Backend>, per: u32) -> vdi::Result<Cells> {
    let nlayers = chain.layer_count();
    if nlayers >= NO_LAYER as usize {
        return Err(VdiError::InvalidArgument(format!("{nlayers} layers cannot be drawn (at most 254)")));
    }
    let blocks = u32::try_from(chain.block_count())
        .map_err(|_| VdiError::InvalidArgument("the disk has too many blocks".into()))?;
    let mut f = Fold::new(Cells::new(blocks, per)?, nlayers);
    let bs = chain.block_size();
    let mut runs = Runs::map();
    // Blocks folded so far.
    let mut at = 0u64;
    loop {
        match runs.next(chain) {
            Ok(Some(r)) => {
                let end = (r.start + r.len).div_ceil(bs);
                for b in at..end {
                    f.add(b, Some(r.block));
                }
                at = end;
            }
            Ok(None) => break,
            Err(e) if e.kind() == "truncated" => {
                for b in at..blocks as u64 {
                    match chain.block(b) {
                        Ok(k) => f.add(b, Some(k)),
                        Err(e) if e.kind() == "truncated" => f.add(b, None),
                        Err(e) => return Err(e),
                    }
                }
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(f.finish())
}

/// The combined map being folded: cells fill in order, block by block.
struct Fold {
    c: Cells,
    /// Blocks supplied by each layer (data) and hidden as zeros by each layer.
    by_layer_data: Vec<u64>,
    by_layer_zero: Vec<u64>,
    free: u64,
    unreadable: u64,
    /// Data blocks by layer in the cell being filled.
    counts: Vec<u32>,
    cur: usize,
}

impl Fold {
    fn new(c: Cells, nlayers: usize) -> Self {
        let v = || vec![0u64; nlayers];
        Fold { c, by_layer_data: v(), by_layer_zero: v(), free: 0, unreadable: 0, counts: vec![0; nlayers], cur: usize::MAX }
    }

    /// Block `b`: what it is, or None when its entry cannot be read.
    fn add(&mut self, b: u64, block: Option<Block>) {
        let i = self.c.cell(b);
        if i != self.cur {
            settle(self.cur, &mut self.counts, &mut self.c.layer);
            self.cur = i;
        }
        match block {
            Some(Block::Data { layer, .. }) => {
                self.c.data[i] += 1;
                self.counts[layer] += 1;
                self.by_layer_data[layer] += 1;
            }
            Some(Block::Zero { layer }) => {
                self.c.zero[i] += 1;
                self.by_layer_zero[layer] += 1;
            }
            Some(Block::Free | Block::Parent) => self.free += 1,
            None => {
                self.c.unreadable[i] += 1;
                self.unreadable += 1;
            }
        }
    }

    fn finish(mut self) -> Cells {
        settle(self.cur, &mut self.counts, &mut self.c.layer);
        self.c.summary = json!({
            "blocks": self.c.blocks,
            "data": self.by_layer_data.iter().sum::<u64>(),
            "zero": self.by_layer_zero.iter().sum::<u64>(),
            "free": self.free,
            "unreadable": self.unreadable,
            "data-by-layer": self.by_layer_data,
            "zero-by-layer": self.by_layer_zero,
        })
        .to_string();
        self.c
    }
}

/// Give cell `i` the layer with the most data blocks in it (ties to the upper layer, the
/// newer data), and reset the counts.
fn settle(i: usize, counts: &mut [u32], layer: &mut [u8]) {
    if i == usize::MAX {
        return;
    }
    let mut best = (0u32, NO_LAYER);
    for (l, &n) in counts.iter().enumerate() {
        if n > 0 && n >= best.0 {
            best = (n, l as u8);
        }
    }
    layer[i] = best.1;
    counts.fill(0);
}

/// Everything about one block of an image, as the hover box shows it.
pub fn block_info(img: &mut VdiImage<Backend>, block: u32) -> vdi::Result<Value> {
    let h = img.header().clone();
    if block >= h.blocks_in_image {
        return Err(VdiError::InvalidArgument(format!(
            "block {block} is outside the block map of {} entries",
            h.blocks_in_image
        )));
    }
    let bs = h.block_size as u64;
    let size = img.virtual_size();
    let start = block as u64 * bs;
    let vlen = if start < size { bs.min(size - start) } else { 0 };
    let mut v = json!({
        "block": block,
        "virtual-offset": start,
        "virtual-length": vlen,
        "entry-offset": h.offset_bmap as u64 + block as u64 * 4,
    });
    if block >= img.readable_entries() {
        v["state"] = json!("unreadable");
        return Ok(v);
    }
    let e = img.entry(block)?;
    v["raw-entry"] = json!(e.raw());
    match e {
        Entry::Free => v["state"] = json!("free"),
        Entry::Zero => v["state"] = json!("zero"),
        Entry::Data(s) => {
            let host = h.slot_offset(s);
            v["state"] = json!("data");
            v["slot"] = json!(s);
            v["host-offset"] = json!(host);
            v["host-end"] = json!(host + bs);
            v["in-file"] = json!(host + bs <= img.file_len());
        }
    }
    Ok(v)
}

/// Counts and host offset range of an image's blocks `first..end`.
pub fn range_info(img: &mut VdiImage<Backend>, first: u32, end: u32) -> vdi::Result<Value> {
    let h = img.header().clone();
    let end = end.min(h.blocks_in_image);
    let readable = img.readable_entries();
    let (mut nd, mut nz, mut nf) = (0u64, 0u64, 0u64);
    let (mut lo, mut hi): (Option<u32>, Option<u32>) = (None, None);
    img.block_map().scan(img.storage(), first, end.min(readable), |_, entries| {
        for &raw in entries {
            match Entry::from_raw(raw) {
                Entry::Data(s) => {
                    nd += 1;
                    lo = Some(lo.map_or(s, |m| m.min(s)));
                    hi = Some(hi.map_or(s, |m| m.max(s)));
                }
                Entry::Zero => nz += 1,
                Entry::Free => nf += 1,
            }
        }
        Ok(())
    })?;
    let bs = h.block_size as u64;
    let size = img.virtual_size();
    Ok(json!({
        "first": first,
        "end": end,
        "data": nd,
        "zero": nz,
        "free": nf,
        "unreadable": end.saturating_sub(readable.max(first)),
        "virtual-offset": (first as u64 * bs).min(size),
        "virtual-end": (end as u64 * bs).min(size),
        "host-min": lo.map(|s| h.slot_offset(s)),
        "host-max-end": hi.map(|s| h.slot_offset(s) + bs),
    }))
}
