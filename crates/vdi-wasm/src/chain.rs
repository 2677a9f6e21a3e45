//! Snapshot chains in the browser: several dropped files linked by UUID.
//!
//! A [`ChainBench`] opens every dropped `File` read-only (leniently, as the single-image
//! workbench does), orders them with [`vdi::Chain::from_set`] and then:
//!
//! - describes the chain (each layer's header, the engine's warnings), with the engine's
//!   errors made specific to the files: the engine's message, kept verbatim, is followed by
//!   the name of the file that has each image UUID it mentions;
//! - summarises each layer's block map, and the combined disk coloured by the layer that
//!   supplies each block, into at most [`MAX_CELLS`] cells, scanning the maps in windows of
//!   [`WINDOW`] blocks (memory: a few bytes per cell and per window block, whatever the size);
//! - exports the flattened raw disk as pieces the worker writes at their offsets, and builds
//!   a flattened dynamic VDI through an OPFS sync access handle, a step of at most
//!   [`CHUNK`] bytes at a time so the worker can report progress and honour a cancel.
//!
//! Nothing here holds an image whole.

use std::collections::HashMap;

use serde_json::{json, Value};
use uuid::Uuid;
use vdi::error::ChainError;
use vdi::report::{chain_layer_json, info_json};
use vdi::{all_zero, create, Chain, CreateOptions, Entry, Layout, OpenOptions, Source, VdiError, VdiImage};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{File, FileSystemSyncAccessHandle};

use crate::export::{PieceKind, CHUNK};
use crate::map::readable_entries;
use crate::storage::{Backend, FileStorage, OpfsStorage};
use crate::js_error;

/// Most files one chain may be opened from.
pub const MAX_FILES: u32 = 64;

/// Most cells one map summary may have.
pub const MAX_CELLS: u32 = 1 << 20;

/// Blocks resolved per window when the combined map is computed.
pub const WINDOW: u32 = 1 << 16;

/// Layer index meaning "no layer" (a cell without data, or a FREE block everywhere).
pub const NO_LAYER: u8 = 255;

const UNDECIDED: u8 = 0;
const ST_DATA: u8 = 1;
const ST_ZERO: u8 = 2;
const ST_UNREADABLE: u8 = 3;
const ST_FREE: u8 = 4;

/// A map folded into cells: per cell the data, ZERO and unreadable block counts and the
/// layer that supplies most of its data blocks.
#[wasm_bindgen]
#[derive(Debug, Clone)]
pub struct ChainCells {
    per: u32,
    blocks: u32,
    data: Vec<u32>,
    zero: Vec<u32>,
    unreadable: Vec<u32>,
    layer: Vec<u8>,
    summary: String,
}

#[wasm_bindgen]
impl ChainCells {
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
    /// Blocks covered.
    #[wasm_bindgen(getter)]
    pub fn blocks(&self) -> u32 {
        self.blocks
    }
    /// Data blocks per cell.
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
    /// Layer supplying most of the cell's data blocks (base = 0; 255 = none).
    pub fn layer(&self) -> js_sys::Uint8Array {
        js_sys::Uint8Array::from(&self.layer[..])
    }
    /// Totals (JSON).
    pub fn summary(&self) -> String {
        self.summary.clone()
    }
}

impl ChainCells {
    /// Data blocks per cell.
    pub fn data_counts(&self) -> &[u32] {
        &self.data
    }
    /// ZERO blocks per cell.
    pub fn zero_counts(&self) -> &[u32] {
        &self.zero
    }
    /// Dominant layer per cell.
    pub fn layers(&self) -> &[u8] {
        &self.layer
    }
}

#[derive(Debug)]
struct Flatten {
    img: VdiImage<Backend>,
    pos: u64,
}

/// An open chain (see the module docs).
#[wasm_bindgen]
#[derive(Debug, Default)]
pub struct ChainBench {
    chain: Option<Chain<Backend>>,
    /// File name of each layer, base first.
    names: Vec<String>,
    /// Position of each layer's file in the list given to `open`, base first.
    indices: Vec<usize>,
    /// Image UUID -> file names (for messages).
    by_uuid: Vec<(String, String)>,
    buf: Vec<u8>,
    export_pos: Option<u64>,
    piece: (u64, u64),
    flat: Option<Flatten>,
}

fn vdi_err(e: VdiError) -> JsValue {
    js_error(e.kind(), e.to_string())
}

/// `msg` kept verbatim (so the engine's wording can still be searched for), followed by the
/// file name(s) of every known UUID it mentions, in the order they first appear:
/// "… — 1234… is “base.vdi”; 5678… is “snap.vdi”".
fn decorate(msg: &str, by_uuid: &[(String, String)]) -> String {
    let mut found: Vec<(usize, &str, &str)> =
        by_uuid.iter().filter_map(|(u, names)| msg.find(u.as_str()).map(|at| (at, u.as_str(), names.as_str()))).collect();
    if found.is_empty() {
        return msg.to_string();
    }
    found.sort();
    let which: Vec<String> = found.iter().map(|(_, u, names)| format!("{u} is {names}")).collect();
    format!("{msg} \u{2014} {}", which.join("; "))
}

fn quoted(name: &str) -> String {
    format!("\u{201c}{name}\u{201d}")
}

/// The separate chains in a set of headers, as file names base first ("a.vdi → b.vdi").
fn groups(heads: &[(String, vdi::VdiHeader)]) -> Vec<String> {
    let claimed: std::collections::HashSet<Uuid> =
        heads.iter().filter(|(_, h)| h.kind() == Some(vdi::ImageType::Diff)).map(|(_, h)| h.uuid_link).collect();
    let idx: HashMap<Uuid, usize> = heads.iter().enumerate().map(|(i, (_, h))| (h.uuid_create, i)).collect();
    let mut out = Vec::new();
    for (name, h) in heads {
        if claimed.contains(&h.uuid_create) {
            continue;
        }
        let mut names = vec![quoted(name)];
        let mut cur = h;
        let mut steps = 0;
        while cur.kind() == Some(vdi::ImageType::Diff) && steps < heads.len() {
            match idx.get(&cur.uuid_link) {
                Some(&i) => {
                    names.push(quoted(&heads[i].0));
                    cur = &heads[i].1;
                }
                None if cur.uuid_link.is_nil() => {
                    names.push("(null parent UUID)".to_string());
                    break;
                }
                None => {
                    names.push(format!("(missing parent {})", cur.uuid_link));
                    break;
                }
            }
            steps += 1;
        }
        names.reverse();
        out.push(names.join(" \u{2192} "));
    }
    out
}

#[wasm_bindgen]
impl ChainBench {
    /// An empty bench.
    #[wasm_bindgen(constructor)]
    pub fn new() -> ChainBench {
        ChainBench::default()
    }

    /// Open `files` (an array of `File`) as one chain. Returns the chain's description
    /// (JSON); on failure the chain open before (if any) stays open.
    pub fn open(&mut self, files: &js_sys::Array) -> Result<String, JsValue> {
        let n = files.length();
        if n == 0 {
            return Err(js_error("invalid-argument", "no files were given"));
        }
        if n > MAX_FILES {
            return Err(js_error(
                "invalid-argument",
                format!("{n} files were given; a chain is opened from at most {MAX_FILES}"),
            ));
        }
        let mut imgs = Vec::with_capacity(n as usize);
        let mut heads = Vec::with_capacity(n as usize);
        let mut names_of: HashMap<String, Vec<String>> = HashMap::new();
        for v in files.iter() {
            let file: File = v.dyn_into().map_err(|_| js_error("invalid-argument", "every item must be a File"))?;
            let name = file.name();
            let s = FileStorage::new(&file).map_err(|e| js_error("io", format!("{}: {}", quoted(&name), e.message)))?;
            let img = VdiImage::open_with(Backend::File(s), OpenOptions { lenient: true })
                .map_err(|e| js_error(e.kind(), format!("{} could not be opened: {e}", quoted(&name))))?;
            let u = img.header().uuid_create;
            names_of.entry(u.to_string()).or_default().push(quoted(&name));
            heads.push((name, img.header().clone()));
            imgs.push(img);
        }
        let by_uuid: Vec<(String, String)> = names_of.into_iter().map(|(u, v)| (u, v.join(" and "))).collect();
        let chain = match Chain::from_set(imgs) {
            Ok(c) => c,
            Err(e @ VdiError::MissingParent { .. }) => {
                let needer = heads
                    .iter()
                    .find(|(_, h)| {
                        h.kind() == Some(vdi::ImageType::Diff) && !heads.iter().any(|(_, p)| p.uuid_create == h.uuid_link)
                    })
                    .map(|(n, h)| (n.clone(), h.uuid_link));
                let msg = match needer {
                    Some((name, link)) => format!(
                        "the parent of {} is missing: it needs the image with UUID {link}, which is not among the {n} file(s) dropped; drop that image together with the others",
                        quoted(&name)
                    ),
                    None => decorate(&e.to_string(), &by_uuid),
                };
                return Err(js_error(e.kind(), msg));
            }
            Err(e) => {
                let apart = matches!(
                    e,
                    VdiError::Chain(ChainError::SeparateChains { .. } | ChainError::NotInChain { .. })
                );
                let msg = if apart {
                    let g = groups(&heads);
                    format!(
                        "the {n} files do not form one chain but {} separate chains: {}. Drop the files of one chain at a time",
                        g.len(),
                        g.join("; ")
                    )
                } else {
                    decorate(&e.to_string(), &by_uuid)
                };
                return Err(js_error(e.kind(), msg));
            }
        };
        // Names in chain order.
        let mut names = Vec::with_capacity(chain.layers().len());
        let mut indices = Vec::with_capacity(chain.layers().len());
        for l in chain.layers() {
            let u = l.header().uuid_create;
            // UUIDs are unique in a chain (from_set refuses duplicates).
            let i = heads.iter().position(|(_, h)| h.uuid_create == u).unwrap_or(0);
            names.push(heads[i].0.clone());
            indices.push(i);
        }
        self.close();
        self.chain = Some(chain);
        self.names = names;
        self.indices = indices;
        self.by_uuid = by_uuid;
        self.info()
    }

    /// Close the chain (and a flattened VDI in progress).
    pub fn close(&mut self) {
        self.flat_cancel();
        self.chain = None;
        self.names.clear();
        self.indices.clear();
        self.by_uuid.clear();
        self.export_pos = None;
    }

    /// True when a chain is open.
    pub fn is_open(&self) -> bool {
        self.chain.is_some()
    }

    fn chain(&mut self) -> Result<&mut Chain<Backend>, JsValue> {
        self.chain.as_mut().ok_or_else(|| js_error("no-image", "no chain is open"))
    }

    /// The chain: `{layers, warnings, virtual-size, block-size, blocks}`, layers base first
    /// as [`vdi::report::chain_layer_json`] (`index`: where the file was among those given).
    pub fn info(&mut self) -> Result<String, JsValue> {
        let names = self.names.clone();
        let indices = self.indices.clone();
        let by_uuid = self.by_uuid.clone();
        let chain = self.chain()?;
        let layers: Vec<Value> = chain
            .layers()
            .iter()
            .zip(names.iter().zip(&indices))
            .map(|(l, (name, index))| chain_layer_json(l, name, *index))
            .collect();
        let warnings: Vec<String> = chain.warnings().iter().map(|w| decorate(w, &by_uuid)).collect();
        let v = json!({
            "layers": layers,
            "warnings": warnings,
            "virtual-size": chain.virtual_size(),
            "block-size": chain.block_size(),
            "blocks": chain.virtual_size().div_ceil(chain.block_size()),
        });
        Ok(v.to_string())
    }

    /// Layer `layer`'s own block map in cells of `per` blocks.
    pub fn layer_cells(&mut self, layer: u32, per: u32) -> Result<ChainCells, JsValue> {
        let chain = self.chain()?;
        let n = chain.layers().len();
        let img = chain
            .layers()
            .get(layer as usize)
            .ok_or_else(|| js_error("invalid-argument", format!("layer {layer} does not exist (the chain has {n})")))?;
        layer_cells(img, layer as u8, per).map_err(vdi_err)
    }

    /// The chain's disk in cells of `per` blocks, each coloured by the layer that supplies
    /// its data.
    pub fn combined_cells(&mut self, per: u32) -> Result<ChainCells, JsValue> {
        let chain = self.chain()?;
        combined_cells(chain, per).map_err(vdi_err)
    }

    /// Where the transfer buffer starts in wasm memory.
    pub fn buffer_ptr(&self) -> usize {
        self.buf.as_ptr() as usize
    }

    /// Start a flattened raw export. Returns the disk size.
    pub fn export_begin(&mut self) -> Result<f64, JsValue> {
        let size = self.chain()?.virtual_size();
        if self.buf.len() < CHUNK {
            self.buf = vec![0u8; CHUNK];
        }
        self.export_pos = Some(0);
        Ok(size as f64)
    }

    /// The next piece of the flattened disk: data (in the transfer buffer at 0, `piece_len`
    /// bytes, for `piece_offset`), zeros (nothing to write), or the end.
    pub fn export_next(&mut self) -> Result<PieceKind, JsValue> {
        let pos = self.export_pos.ok_or_else(|| js_error("invalid-argument", "no export in progress"))?;
        let chain = self.chain.as_mut().ok_or_else(|| js_error("no-image", "no chain is open"))?;
        let Some((data, len)) = next_run(chain, pos).map_err(vdi_err)? else {
            self.export_pos = None;
            return Ok(PieceKind::End);
        };
        self.piece = (pos, len);
        self.export_pos = Some(pos + len);
        if !data {
            return Ok(PieceKind::Zeros);
        }
        let buf = &mut self.buf[..len as usize];
        chain.read_at(pos, buf).map_err(vdi_err)?;
        Ok(if all_zero(buf) { PieceKind::Zeros } else { PieceKind::Data })
    }

    /// Disk offset of the last piece.
    pub fn piece_offset(&self) -> f64 {
        self.piece.0 as f64
    }

    /// Length of the last piece.
    pub fn piece_len(&self) -> f64 {
        self.piece.1 as f64
    }

    /// Bytes of the disk exported so far.
    pub fn export_done(&self) -> f64 {
        self.export_pos.map_or(0.0, |p| p as f64)
    }

    /// Abandon a raw export.
    pub fn export_cancel(&mut self) {
        self.export_pos = None;
    }

    /// Start building the flattened VDI into `handle` (an empty OPFS file): a dynamic image
    /// of the chain's disk size and block size, VirtualBox layout, fresh UUIDs. Returns the
    /// disk size. The handle is closed by [`ChainBench::flat_finish`] or
    /// [`ChainBench::flat_cancel`] (or here, on failure).
    pub fn flat_begin(&mut self, handle: FileSystemSyncAccessHandle) -> Result<f64, JsValue> {
        self.flat_cancel();
        let (size, bs) = match self.chain.as_ref() {
            Some(c) => (c.virtual_size(), c.block_size()),
            None => {
                handle.close();
                return Err(js_error("no-image", "no chain is open"));
            }
        };
        let mut o = CreateOptions::new(size, Uuid::new_v4(), Uuid::new_v4());
        o.block_size = bs as u32;
        o.layout = Layout::Vbox;
        o.comment = "flattened snapshot chain (VDI workbench)".into();
        let img = match create(Backend::Opfs(OpfsStorage::new(handle.clone())), &o, &mut vdi::NoMonitor) {
            Ok(i) => i,
            Err(e) => {
                handle.close();
                return Err(vdi_err(e));
            }
        };
        if self.buf.len() < CHUNK {
            self.buf = vec![0u8; CHUNK];
        }
        self.flat = Some(Flatten { img, pos: 0 });
        Ok(size as f64)
    }

    /// Copy the next run (at most [`CHUNK`] bytes) of the flattened disk into the new
    /// image; all-zero data is not stored. Returns the bytes of the disk done (equal to the
    /// disk size at the end).
    pub fn flat_step(&mut self) -> Result<f64, JsValue> {
        let chain = self.chain.as_mut().ok_or_else(|| js_error("no-image", "no chain is open"))?;
        let f = self.flat.as_mut().ok_or_else(|| js_error("invalid-argument", "no flattened image in progress"))?;
        let r = (|| -> vdi::Result<()> {
            let Some((data, len)) = next_run(chain, f.pos)? else { return Ok(()) };
            if data {
                let buf = &mut self.buf[..len as usize];
                chain.read_at(f.pos, buf)?;
                if !all_zero(buf) {
                    f.img.write_at(f.pos, buf)?;
                }
            }
            f.pos += len;
            Ok(())
        })();
        if let Err(e) = r {
            self.flat_cancel();
            return Err(vdi_err(e));
        }
        Ok(f.pos as f64)
    }

    /// Flush and close the flattened image. Returns its info report (`vdi info --json`).
    pub fn flat_finish(&mut self) -> Result<String, JsValue> {
        let mut f = self.flat.take().ok_or_else(|| js_error("invalid-argument", "no flattened image in progress"))?;
        let size = f.img.virtual_size();
        if f.pos < size {
            let done = f.pos;
            self.flat = Some(f);
            self.flat_cancel();
            return Err(js_error("invalid-argument", format!("the flattened image is incomplete ({done} of {size} bytes)")));
        }
        let r = f.img.flush();
        let info = info_json(f.img.header(), "flattened.vdi", None);
        let len = f.img.file_len();
        if let Backend::Opfs(o) = f.img.into_storage() {
            o.close();
        }
        r.map_err(vdi_err)?;
        Ok(json!({ "info": info, "file-length": len }).to_string())
    }

    /// Abandon the flattened image (closing its handle; the caller removes the file).
    pub fn flat_cancel(&mut self) {
        if let Some(f) = self.flat.take() {
            if let Backend::Opfs(o) = f.img.into_storage() {
                o.close();
            }
        }
    }
}

/// Longest run of blocks without data reported at once (nothing is read for it; the limit
/// only keeps progress reports coming on a huge empty disk).
const ZERO_RUN: u64 = 1 << 30;

/// The run of the chain's disk starting at `pos`: `(is data, length)`, blocks of one kind
/// (data somewhere in the chain, or not), at most [`CHUNK`] bytes of data or [`ZERO_RUN`]
/// bytes without; None at the end.
fn next_run(chain: &mut Chain<Backend>, pos: u64) -> vdi::Result<Option<(bool, u64)>> {
    let size = chain.virtual_size();
    if pos >= size {
        return Ok(None);
    }
    let bs = chain.block_size();
    let mut block = pos / bs;
    let data = matches!(chain.source(block as u32)?, Source::Data { .. });
    let limit = (pos + if data { CHUNK as u64 } else { ZERO_RUN }).min(size);
    let mut end = ((block + 1) * bs).min(limit);
    while end < limit {
        block += 1;
        if matches!(chain.source(block as u32)?, Source::Data { .. }) != data {
            break;
        }
        end = ((block + 1) * bs).min(limit);
    }
    Ok(Some((data, end - pos)))
}

fn check_per(blocks: u32, per: u32) -> vdi::Result<u32> {
    if per == 0 {
        return Err(VdiError::InvalidArgument("blocks per cell must be at least 1".into()));
    }
    let cells = blocks.div_ceil(per);
    if cells > MAX_CELLS {
        return Err(VdiError::InvalidArgument(format!(
            "{blocks} blocks at {per} per cell make {cells} cells; at most {MAX_CELLS} are drawn"
        )));
    }
    Ok(cells)
}

/// One layer's own map: data/ZERO/unreadable counts per cell; `layer` marks cells with data.
pub fn layer_cells(img: &VdiImage<Backend>, layer: u8, per: u32) -> vdi::Result<ChainCells> {
    let blocks = img.header().blocks_in_image;
    let cells = check_per(blocks, per)? as usize;
    let readable = readable_entries(img);
    let mut data = vec![0u32; cells];
    let mut zero = vec![0u32; cells];
    let mut unreadable = vec![0u32; cells];
    let (mut nd, mut nz, mut nf) = (0u64, 0u64, 0u64);
    let per_u = per as usize;
    img.block_map().scan(img.storage(), 0, readable, |first, entries| {
        for (k, &raw) in entries.iter().enumerate() {
            let c = (first as usize + k) / per_u;
            match Entry::from_raw(raw) {
                Entry::Data(_) => {
                    nd += 1;
                    data[c] += 1;
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
    for b in readable..blocks {
        unreadable[(b / per) as usize] += 1;
    }
    let layer_v = data.iter().map(|&d| if d > 0 { layer } else { NO_LAYER }).collect();
    let summary = json!({
        "blocks": blocks, "data": nd, "zero": nz, "free": nf, "unreadable": blocks - readable,
    })
    .to_string();
    Ok(ChainCells { per, blocks, data, zero, unreadable, layer: layer_v, summary })
}

/// The chain's disk: for every block the layer that decides it (top down: the first DATA or
/// ZERO entry), folded into cells; resolved a window of blocks at a time.
pub fn combined_cells(chain: &mut Chain<Backend>, per: u32) -> vdi::Result<ChainCells> {
    let nlayers = chain.layers().len();
    if nlayers > NO_LAYER as usize {
        return Err(VdiError::InvalidArgument(format!("{nlayers} layers cannot be drawn (at most 254)")));
    }
    let blocks = u32::try_from(chain.virtual_size().div_ceil(chain.block_size()))
        .map_err(|_| VdiError::InvalidArgument("the disk has too many blocks".into()))?;
    let cells = check_per(blocks, per)? as usize;
    let mut data = vec![0u32; cells];
    let mut zero = vec![0u32; cells];
    let mut unreadable = vec![0u32; cells];
    let mut layer = vec![NO_LAYER; cells];
    // Blocks supplied by each layer (data) and hidden as zeros by each layer.
    let mut by_layer_data = vec![0u64; nlayers];
    let mut by_layer_zero = vec![0u64; nlayers];
    let (mut nfree, mut nunread) = (0u64, 0u64);
    // Per-cell data counts by layer, for the cell being filled (cells are filled in order).
    let mut counts = vec![0u32; nlayers];
    let mut cur_cell = usize::MAX;
    let flush_cell = |c: usize, counts: &mut [u32], layer: &mut [u8]| {
        if c == usize::MAX {
            return;
        }
        let mut best = (0u32, NO_LAYER);
        for (i, &n) in counts.iter().enumerate() {
            // Ties go to the upper layer (the newer data).
            if n > 0 && n >= best.0 {
                best = (n, i as u8);
            }
        }
        layer[c] = best.1;
        counts.fill(0);
    };
    let win = WINDOW.min(blocks.max(1)) as usize;
    let mut state = vec![UNDECIDED; win];
    let mut src = vec![NO_LAYER; win];
    let mut a = 0u32;
    while a < blocks {
        let b = a.saturating_add(WINDOW).min(blocks);
        let w = (b - a) as usize;
        state[..w].fill(UNDECIDED);
        src[..w].fill(NO_LAYER);
        for li in (0..nlayers).rev() {
            let img = &chain.layers()[li];
            let bii = img.header().blocks_in_image;
            if bii <= a {
                continue;
            }
            let readable = readable_entries(img);
            let end = b.min(bii);
            img.block_map().scan(img.storage(), a, end.min(readable), |first, entries| {
                for (k, &raw) in entries.iter().enumerate() {
                    let i = (first - a) as usize + k;
                    if state[i] != UNDECIDED {
                        continue;
                    }
                    match Entry::from_raw(raw) {
                        Entry::Data(_) => {
                            state[i] = ST_DATA;
                            src[i] = li as u8;
                        }
                        Entry::Zero => {
                            state[i] = ST_ZERO;
                            src[i] = li as u8;
                        }
                        Entry::Free => {}
                    }
                }
                Ok(())
            })?;
            for blk in readable.max(a)..end {
                let i = (blk - a) as usize;
                if state[i] == UNDECIDED {
                    state[i] = ST_UNREADABLE;
                    src[i] = li as u8;
                }
            }
        }
        for i in 0..w {
            let blk = a as usize + i;
            let c = blk / per as usize;
            if c != cur_cell {
                flush_cell(cur_cell, &mut counts, &mut layer);
                cur_cell = c;
            }
            match state[i] {
                ST_DATA => {
                    data[c] += 1;
                    counts[src[i] as usize] += 1;
                    by_layer_data[src[i] as usize] += 1;
                }
                ST_ZERO => {
                    zero[c] += 1;
                    by_layer_zero[src[i] as usize] += 1;
                }
                ST_UNREADABLE => {
                    unreadable[c] += 1;
                    nunread += 1;
                }
                _ => {
                    state[i] = ST_FREE;
                    nfree += 1;
                }
            }
        }
        a = b;
    }
    flush_cell(cur_cell, &mut counts, &mut layer);
    let summary = json!({
        "blocks": blocks,
        "data": by_layer_data.iter().sum::<u64>(),
        "zero": by_layer_zero.iter().sum::<u64>(),
        "free": nfree,
        "unreadable": nunread,
        "data-by-layer": by_layer_data,
        "zero-by-layer": by_layer_zero,
    })
    .to_string();
    Ok(ChainCells { per, blocks, data, zero, unreadable, layer, summary })
}
