//! Browser bindings for the `vdi` engine: what the workbench's Web Worker calls.
//!
//! One [`Workbench`] holds the open image over one of the browser backends in
//! [`storage`] (a dropped `File`, an OPFS sync access handle, or bytes in wasm memory) and
//! one reusable transfer buffer in wasm memory: the worker reads exported bytes straight out
//! of that buffer (`new Uint8Array(memory.buffer, buffer_ptr(), len)`) instead of receiving a
//! fresh copy per chunk.
//!
//! Reports are the engine's own JSON (`vdi::report`), so the page shows exactly what
//! `vdi info --json` and `vdi check --json` print. Errors are thrown as `{kind, message}`
//! objects carrying the engine's stable kind and specific message.
//!
//! Nothing here loads an image whole: opening reads the header, the block map is scanned in
//! chunks, exports move at most [`CHUNK`] bytes at a time.

pub mod chain;
pub mod edit;
pub mod export;
pub mod map;
pub mod storage;

use serde_json::{json, Value};
use uuid::Uuid;
use vdi::report::{check_json, info_json};
use vdi::{
    check_image, create, CreateOptions, Entry, Layout, OpenOptions, ReadAt, VdiError, VdiImage,
};
use wasm_bindgen::prelude::*;
use web_sys::{File, FileSystemSyncAccessHandle};

pub use export::{Piece, PieceKind, CHUNK};
pub use map::MapCells;
use export::Export;
use storage::{Backend, FileStorage, OpfsStorage, SparseMem};

/// Most bytes of metadata a new image may have when built in memory before being streamed
/// to a save target (a 64 MiB block map describes a 16 TiB disk of 1 MiB blocks).
pub const MEM_CREATE_LIMIT: usize = 64 << 20;

/// Largest image accepted by the in-memory backend.
pub const MEM_OPEN_LIMIT: usize = 64 << 20;

/// The error thrown to JavaScript: `{kind, message}`.
pub fn js_error(kind: &str, message: impl AsRef<str>) -> JsValue {
    let o = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&o, &"kind".into(), &kind.into());
    let _ = js_sys::Reflect::set(&o, &"message".into(), &message.as_ref().into());
    o.into()
}

fn vdi_err(e: VdiError) -> JsValue {
    js_error(e.kind(), e.to_string())
}

fn no_image() -> JsValue {
    js_error("no-image", "no image is open")
}

/// The open image and the transfer buffer.
#[wasm_bindgen]
#[derive(Debug, Default)]
pub struct Workbench {
    img: Option<VdiImage<Backend>>,
    name: String,
    buf: Vec<u8>,
    export: Option<Export>,
    piece: Option<Piece>,
    /// The memory of the last in-memory image closed, reused by the next one.
    spare: Vec<u8>,
}

#[wasm_bindgen]
impl Workbench {
    /// An empty workbench.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Workbench {
        Workbench::default()
    }

    /// Open a dropped or picked `File` (read-only). Returns the info report (JSON text).
    /// On failure the previously open image (if any) stays open.
    pub fn open_file(&mut self, file: &File) -> Result<String, JsValue> {
        let s = FileStorage::new(file).map_err(|e| js_error("io", e.message))?;
        self.open_backend(Backend::File(s), &file.name())
    }

    /// Open an OPFS file through its sync access handle (read-write). The workbench closes
    /// the handle when the image is closed.
    pub fn open_opfs(&mut self, handle: FileSystemSyncAccessHandle, name: &str) -> Result<String, JsValue> {
        let keep = handle.clone();
        let r = self.open_backend(Backend::Opfs(OpfsStorage::new(handle)), name);
        if r.is_err() {
            keep.close();
        }
        r
    }

    /// Open an image held in wasm memory (small images only, see [`MEM_OPEN_LIMIT`]).
    pub fn open_bytes(&mut self, bytes: Vec<u8>, name: &str) -> Result<String, JsValue> {
        if bytes.len() > MEM_OPEN_LIMIT {
            return Err(js_error(
                "invalid-argument",
                format!("{} bytes is too large to hold in memory (limit {MEM_OPEN_LIMIT})", bytes.len()),
            ));
        }
        self.open_backend(Backend::Mem(SparseMem::from_vec(bytes, MEM_OPEN_LIMIT)), name)
    }

    /// Build the demo image in memory and open it: a 128 MiB dynamic disk with a partition
    /// table, text, patterned blocks written out of order (so the physical view shows
    /// fragmentation) and a few ZERO blocks.
    pub fn open_sample(&mut self) -> Result<String, JsValue> {
        // The open image goes first: two samples (or a sample beside a large in-memory
        // image) would double the memory held.
        self.close();
        let img = build_sample(std::mem::take(&mut self.spare)).map_err(vdi_err)?;
        self.img = Some(img);
        self.name = "sample.vdi".into();
        self.info()
    }

    /// Open `backend`; the image open before stays open if this fails.
    fn open_backend(&mut self, backend: Backend, name: &str) -> Result<String, JsValue> {
        let img = VdiImage::open_with(backend, OpenOptions { lenient: true }).map_err(vdi_err)?;
        self.close();
        self.img = Some(img);
        self.name = name.to_string();
        self.info()
    }

    /// Close the image (and its OPFS handle, if any).
    pub fn close(&mut self) {
        self.export = None;
        if let Some(img) = self.img.take() {
            match img.into_storage() {
                Backend::Opfs(o) => o.close(),
                Backend::Mem(m) => self.spare = m.into_vec(),
                Backend::File(_) => {}
            }
        }
    }

    /// True when an image is open.
    pub fn is_open(&self) -> bool {
        self.img.is_some()
    }

    fn img(&mut self) -> Result<&mut VdiImage<Backend>, JsValue> {
        self.img.as_mut().ok_or_else(no_image)
    }

    /// The open image's report: `{info, file}` where `info` is exactly `vdi info --json`
    /// (without `actual-size`, which a browser cannot know) and `file` describes the
    /// source (backend, length, layout problems found at open).
    pub fn info(&mut self) -> Result<String, JsValue> {
        self.info_value().map(|v| v.to_string())
    }

    /// Run the engine's check; `progress(done, total)` is called as the map is scanned.
    /// Returns `vdi check --json` (JSON text).
    pub fn check(&mut self, progress: &js_sys::Function) -> Result<String, JsValue> {
        let name = self.name.clone();
        let img = self.img()?;
        let r = check_image(img, &mut edit::monitor(progress, None)).map_err(vdi_err)?;
        Ok(check_json(&r, &name).to_string())
    }

    /// `{bytes, calls}` read from the storage since the image was opened.
    pub fn read_stats(&self) -> Result<String, JsValue> {
        let img = self.img.as_ref().ok_or_else(no_image)?;
        let (bytes, calls) = img.storage().read_stats();
        Ok(json!({ "bytes": bytes, "calls": calls }).to_string())
    }

    /// Aggregate the block map into cells of `per` consecutive blocks (see [`MapCells`]).
    pub fn map_cells(&mut self, per: u32) -> Result<MapCells, JsValue> {
        let img = self.img()?;
        map::map_cells(img, per).map_err(vdi_err)
    }

    /// Everything about block `block`: entry, state, virtual and host offsets (JSON).
    pub fn block_info(&mut self, block: u32) -> Result<String, JsValue> {
        let img = self.img()?;
        map::block_info(img, block).map(|v| v.to_string()).map_err(vdi_err)
    }

    /// Summary of blocks `first..end` (counts, host offset range) as JSON.
    pub fn range_info(&mut self, first: u32, end: u32) -> Result<String, JsValue> {
        let img = self.img()?;
        map::range_info(img, first, end).map(|v| v.to_string()).map_err(vdi_err)
    }

    /// Read `len` bytes of the virtual disk at `offset` into the transfer buffer.
    pub fn read_disk(&mut self, offset: f64, len: u32) -> Result<(), JsValue> {
        let len = len as usize;
        if len > CHUNK {
            return Err(js_error("invalid-argument", format!("read of {len} bytes is larger than {CHUNK}")));
        }
        self.ensure_buf(len);
        let img = self.img.as_mut().ok_or_else(no_image)?;
        img.read_at(offset as u64, &mut self.buf[..len]).map_err(vdi_err)
    }

    /// Read `len` bytes of the image file itself at `offset` into the transfer buffer
    /// (to save the image back out).
    pub fn read_image(&mut self, offset: f64, len: u32) -> Result<(), JsValue> {
        let len = len as usize;
        if len > CHUNK {
            return Err(js_error("invalid-argument", format!("read of {len} bytes is larger than {CHUNK}")));
        }
        self.ensure_buf(len);
        let img = self.img.as_ref().ok_or_else(no_image)?;
        img.storage()
            .read_at(offset as u64, &mut self.buf[..len])
            .map_err(|e| js_error("io", format!("reading the image at {offset} ({len} bytes) failed: {e}")))
    }

    /// Where the transfer buffer starts in wasm memory (valid until the next call that
    /// may grow memory).
    pub fn buffer_ptr(&self) -> usize {
        self.buf.as_ptr() as usize
    }

    /// Start a raw export. Returns the virtual disk size (the size to give the target
    /// before writing pieces at their offsets).
    pub fn export_begin(&mut self) -> Result<f64, JsValue> {
        let img = self.img()?;
        // An image opened leniently (so Check can name the damage) is for inspection only:
        // what its broken layout would read is not the disk (`vdi convert` refuses to open it).
        if let Some(layout) = img.layout_error() {
            return Err(js_error(
                "broken-layout",
                format!("the image was opened for inspection only, its disk cannot be read: {layout}"),
            ));
        }
        let size = img.virtual_size();
        let e = Export::begin(img).map_err(vdi_err)?;
        self.export = Some(e);
        self.piece = None;
        Ok(size as f64)
    }

    /// The next piece of the raw export (see [`export`]): its kind; its place through
    /// `piece_offset`, `piece_len` and `piece_buffer_offset`. Data pieces are in the
    /// transfer buffer until the next call.
    pub fn export_next(&mut self) -> Result<PieceKind, JsValue> {
        let p = self.next_piece()?;
        self.piece = Some(p);
        Ok(p.kind)
    }

    /// Virtual offset of the last piece.
    pub fn piece_offset(&self) -> f64 {
        self.piece.map_or(0.0, |p| p.offset as f64)
    }

    /// Length of the last piece.
    pub fn piece_len(&self) -> f64 {
        self.piece.map_or(0.0, |p| p.len as f64)
    }

    /// Where the last data piece starts in the transfer buffer (add to `buffer_ptr`).
    pub fn piece_buffer_offset(&self) -> usize {
        self.piece.map_or(0, |p| p.buf_off)
    }

    /// Bytes of work of the export (data bytes in host order, disk bytes in disk order).
    pub fn export_total(&self) -> f64 {
        self.export.as_ref().map_or(0.0, |e| e.total as f64)
    }

    /// Bytes of work done so far.
    pub fn export_done(&self) -> f64 {
        self.export.as_ref().map_or(0.0, |e| e.done as f64)
    }

    /// True when the export reads the file front to back (pieces out of disk order).
    pub fn export_host_order(&self) -> bool {
        self.export.as_ref().is_some_and(|e| e.host_order())
    }

    /// Host order only: the next run to copy, without reading it (see
    /// [`export::Export::plan_next`]): `[host offset, length, (disk offset, length, offset
    /// in the run) × pieces]`, empty at the end. The caller reads the host range from the
    /// image file itself and writes each piece at its disk offset.
    pub fn export_plan_next(&mut self) -> Result<Vec<f64>, JsValue> {
        let img = self.img.as_mut().ok_or_else(no_image)?;
        let e = self.export.as_mut().ok_or_else(|| js_error("invalid-argument", "no export in progress"))?;
        e.plan_next(img).map_err(vdi_err)
    }

    /// Abandon an export in progress.
    pub fn export_cancel(&mut self) {
        self.export = None;
        self.piece = None;
    }

    /// Create an image from `opts` (JSON: `size`, `fixed`, `block_size`, `layout`,
    /// `comment`) with fresh random UUIDs, and make it the open image.
    ///
    /// With `handle`, the image is written into that OPFS file (and stays open on it).
    /// Without, its metadata is built in memory with the zeros left implicit; the caller
    /// then writes [`Workbench::created_meta_len`] bytes from [`Workbench::created_meta_ptr`]
    /// and sizes the target to the image's length. Returns the info report.
    pub fn create_image(&mut self, opts: &str, handle: Option<FileSystemSyncAccessHandle>) -> Result<String, JsValue> {
        let o = parse_create_options(opts)?;
        let name = format!("new-{}.vdi", &o.uuid.to_string()[..8]);
        let backend = match &handle {
            Some(h) => Backend::Opfs(OpfsStorage::new(h.clone())),
            None => {
                let h = o.header().map_err(vdi_err)?;
                if h.offset_data as usize > MEM_CREATE_LIMIT {
                    return Err(js_error(
                        "invalid-argument",
                        format!(
                            "the block map of {} bytes is too large to build in memory; use a larger block size",
                            h.map_bytes()
                        ),
                    ));
                }
                Backend::Mem(SparseMem::in_spare(std::mem::take(&mut self.spare), MEM_CREATE_LIMIT, h.offset_data as usize))
            }
        };
        let img = create(backend, &o, &mut vdi::NoMonitor).map_err(|e| {
            if let Some(h) = &handle {
                h.close();
            }
            vdi_err(e)
        })?;
        self.close();
        self.img = Some(img);
        self.name = name;
        self.info()
    }

    /// Start of the stored bytes of an in-memory image (its metadata; the rest up to the
    /// image's length is zeros).
    pub fn created_meta_ptr(&self) -> Result<usize, JsValue> {
        match self.img.as_ref().map(|i| i.storage()) {
            Some(Backend::Mem(m)) => Ok(m.stored().as_ptr() as usize),
            _ => Err(js_error("invalid-argument", "the open image is not in memory")),
        }
    }

    /// Number of stored bytes of an in-memory image.
    pub fn created_meta_len(&self) -> Result<usize, JsValue> {
        match self.img.as_ref().map(|i| i.storage()) {
            Some(Backend::Mem(m)) => Ok(m.stored().len()),
            _ => Err(js_error("invalid-argument", "the open image is not in memory")),
        }
    }

    fn ensure_buf(&mut self, len: usize) {
        if self.buf.len() < len {
            // Grow once to the full chunk: later calls reuse the same memory.
            self.buf = vec![0u8; len.max(CHUNK)];
        }
    }
}

/// Rust-side access (tests, other Rust callers).
impl Workbench {
    /// The report [`Workbench::info`] returns, as a JSON value.
    pub fn info_value(&mut self) -> Result<Value, JsValue> {
        let name = self.name.clone();
        let img = self.img()?;
        let h = img.header();
        let file_len = img.file_len();
        let map_end = h.offset_bmap as u64 + h.map_bytes();
        let readable = if map_end > file_len {
            (file_len.saturating_sub(h.offset_bmap as u64) / 4).min(h.blocks_in_image as u64)
        } else {
            h.blocks_in_image as u64
        };
        let v = json!({
            "info": info_json(h, &name, None),
            "file": {
                "name": name,
                "backend": img.storage().kind(),
                "writable": img.storage().writable(),
                "length": file_len,
                "layout-error": img.layout_error(),
                "map-end": map_end,
                "readable-entries": readable,
                "blocks-covering-disk": img.blocks_covering_disk(),
                "block-stride": h.block_stride(),
            },
        });
        Ok(v)
    }

    /// The open image.
    pub fn image(&mut self) -> Option<&mut VdiImage<Backend>> {
        self.img.as_mut()
    }

    /// The transfer buffer (data pieces, `read_disk`, `read_image` land here).
    pub fn transfer_buffer(&self) -> &[u8] {
        &self.buf
    }

    /// The next piece of the raw export (see [`Workbench::export_next`]); data pieces are
    /// in [`Workbench::transfer_buffer`] at `buf_off`.
    pub fn next_piece(&mut self) -> Result<Piece, JsValue> {
        self.ensure_buf(CHUNK);
        let img = self.img.as_mut().ok_or_else(no_image)?;
        let e = self.export.as_mut().ok_or_else(|| js_error("invalid-argument", "no export in progress"))?;
        e.next(img, &mut self.buf).map_err(vdi_err)
    }
}

fn parse_create_options(opts: &str) -> Result<CreateOptions, JsValue> {
    let bad = |m: String| js_error("invalid-argument", m);
    let v: Value = serde_json::from_str(opts).map_err(|e| bad(format!("create options are not JSON: {e}")))?;
    let size = v["size"]
        .as_u64()
        .or_else(|| v["size"].as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
        .ok_or_else(|| bad(format!("size {} is not a whole number of bytes", v["size"])))?;
    if size == 0 {
        return Err(bad("size must be larger than 0".into()));
    }
    let mut o = CreateOptions::new(size, Uuid::new_v4(), Uuid::new_v4());
    o.fixed = v["fixed"].as_bool().unwrap_or(false);
    if let Some(bs) = v.get("block_size").filter(|b| !b.is_null()) {
        o.block_size = bs
            .as_u64()
            .and_then(|b| u32::try_from(b).ok())
            .ok_or_else(|| bad(format!("block size {bs} is not a 32-bit whole number")))?;
    }
    if let Some(l) = v["layout"].as_str() {
        o.layout = Layout::parse(l).map_err(vdi_err)?;
    }
    if let Some(c) = v["comment"].as_str() {
        o.comment = c.to_string();
    }
    // Validate now so a bad option never leaves a half-made target behind.
    let mut h = o.header().map_err(vdi_err)?;
    h.set_comment(&o.comment).map_err(vdi_err)?;
    Ok(o)
}

/// The demo image: 128 MiB dynamic, 1 MiB blocks, written out of order, built in `spare`.
fn build_sample(spare: Vec<u8>) -> vdi::Result<VdiImage<Backend>> {
    const MIB: u64 = 1 << 20;
    let mut o = CreateOptions::new(128 * MIB, Uuid::new_v4(), Uuid::new_v4());
    o.comment = "Sample image built in your browser by the VDI workbench".into();
    // 2 MiB of metadata and 23 data blocks: reserved at once, so building it never holds
    // two copies while the vector grows.
    let storage = SparseMem::in_spare(spare, MEM_OPEN_LIMIT, (2 + 23) * MIB as usize);
    let mut img = create(Backend::Mem(storage), &o, &mut vdi::NoMonitor)?;
    // Block 0: an MBR with one Linux partition from sector 2048, and a greeting.
    let mut mbr = vec![0u8; 512];
    mbr[..40].copy_from_slice(b"VDI workbench sample disk - hello there!");
    let part = &mut mbr[446..462];
    part[4] = 0x83;
    part[8..12].copy_from_slice(&2048u32.to_le_bytes());
    part[12..16].copy_from_slice(&((128 * MIB / 512) as u32 - 2048).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    img.write_at(0, &mbr)?;
    // Data blocks written in a scrambled order: slots follow write order, so the physical
    // view shows fragmentation.
    let blocks: [u64; 22] = [1, 2, 3, 40, 41, 42, 43, 8, 9, 100, 101, 102, 60, 61, 20, 21, 22, 23, 90, 127, 70, 71];
    let mut buf = vec![0u8; MIB as usize];
    debug_assert_eq!(blocks.len() + 1, 23);
    for &b in &blocks {
        for (i, x) in buf.iter_mut().enumerate() {
            *x = (b as u8).wrapping_mul(31).wrapping_add((i / 4096) as u8) | 1;
        }
        // A partial last write in one block keeps its tail zero.
        let n = if b == 127 { 4096 } else { buf.len() };
        img.write_at(b * MIB, &buf[..n])?;
    }
    // Discarded blocks, as VirtualBox marks them after compacting.
    for b in [10u32, 11, 12, 13, 50, 51, 52] {
        img.set_entry(b, Entry::Zero)?;
    }
    img.flush()?;
    Ok(img)
}
