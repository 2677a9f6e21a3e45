//! The block map, summarised for drawing.
//!
//! An image can have up to 2^29 blocks; the page draws at most a few hundred thousand
//! cells. [`map_cells`] scans the map once, in the engine's chunks, and folds every `per`
//! consecutive blocks into one cell: how many are data and zero (the rest are free or
//! unreadable), and the mean physical slot of the data blocks (for the view coloured by
//! position). Memory is three numbers per cell, whatever the image size.

use serde_json::{json, Value};
use vdi::{Entry, VdiImage};
use wasm_bindgen::prelude::*;

use crate::storage::Backend;

/// Most cells one summary may have.
pub const MAX_CELLS: u32 = 1 << 20;

/// Per-cell counts of a block map (see the module docs).
#[wasm_bindgen]
#[derive(Debug, Clone)]
pub struct MapCells {
    per: u32,
    blocks: u32,
    readable: u32,
    data: Vec<u32>,
    zero: Vec<u32>,
    slot: Vec<f32>,
    summary: String,
}

#[wasm_bindgen]
impl MapCells {
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
    /// Entries in the block map (blocks_in_image).
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
    /// Mean physical slot of the data blocks per cell (NaN when there are none).
    pub fn slot(&self) -> js_sys::Float32Array {
        js_sys::Float32Array::from(&self.slot[..])
    }
    /// Totals (JSON): blocks, data, zero, free, unreadable, fragmented, max-slot.
    pub fn summary(&self) -> String {
        self.summary.clone()
    }
}

impl MapCells {
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
}

/// Entries of the map that lie inside the file (see [`VdiImage::readable_entries`]).
pub fn readable_entries(img: &VdiImage<Backend>) -> u32 {
    img.readable_entries()
}

/// Fold the block map into cells of `per` blocks.
pub fn map_cells(img: &mut VdiImage<Backend>, per: u32) -> vdi::Result<MapCells> {
    let blocks = img.header().blocks_in_image;
    if per == 0 {
        return Err(vdi::VdiError::InvalidArgument("blocks per cell must be at least 1".into()));
    }
    let cells = blocks.div_ceil(per);
    if cells > MAX_CELLS {
        return Err(vdi::VdiError::InvalidArgument(format!(
            "{blocks} blocks at {per} per cell make {cells} cells; at most {MAX_CELLS} are drawn"
        )));
    }
    let readable = readable_entries(img);
    let mut data = vec![0u32; cells as usize];
    let mut zero = vec![0u32; cells as usize];
    let mut slot_sum = vec![0f64; cells as usize];
    let (mut nd, mut nz, mut nf, mut frag) = (0u64, 0u64, 0u64, 0u64);
    let mut max_slot: Option<u32> = None;
    let mut prev: Option<u32> = None;
    let per_u = per as usize;
    img.block_map().scan(img.storage(), 0, readable, |first, entries| {
        for (k, &raw) in entries.iter().enumerate() {
            let c = (first as usize + k) / per_u;
            match Entry::from_raw(raw) {
                Entry::Data(s) => {
                    nd += 1;
                    data[c] += 1;
                    slot_sum[c] += s as f64;
                    if prev.is_some_and(|p| p.wrapping_add(1) != s) {
                        frag += 1;
                    }
                    prev = Some(s);
                    max_slot = Some(max_slot.map_or(s, |m| m.max(s)));
                }
                Entry::Zero => {
                    nz += 1;
                    zero[c] += 1;
                }
                Entry::Free => nf += 1,
            }
        }
        Ok(())
    })?;
    let slot = data
        .iter()
        .zip(&slot_sum)
        .map(|(&n, &s)| if n == 0 { f32::NAN } else { (s / n as f64) as f32 })
        .collect();
    let summary = json!({
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
    Ok(MapCells { per, blocks, readable, data, zero, slot, summary })
}

/// Everything about one block, as the hover box shows it.
pub fn block_info(img: &mut VdiImage<Backend>, block: u32) -> vdi::Result<Value> {
    let h = img.header().clone();
    if block >= h.blocks_in_image {
        return Err(vdi::VdiError::InvalidArgument(format!(
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
    if block >= readable_entries(img) {
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

/// Counts and host offset range of blocks `first..end`.
pub fn range_info(img: &mut VdiImage<Backend>, first: u32, end: u32) -> vdi::Result<Value> {
    let h = img.header().clone();
    let end = end.min(h.blocks_in_image);
    let readable = readable_entries(img);
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
