//! One session: what the worker has open — one image or a snapshot chain, each a
//! [`vdi::Disk`] — with one transfer buffer, one export state and one cell map.
//!
//! Everything about the disk (its description, maps, raw export, flattening into a new
//! VDI, reads) is written once, over the disk; what only an image has (its check, block
//! tips, edits, the file itself) asks for the image and says so when a chain is open.

use serde_json::{json, Value};
use uuid::Uuid;
use vdi::report::{check_json, info_json};
use vdi::{check_image, create, Chain, CreateOptions, Disk, ImageSink, Layout, OpenOptions, ReadAt, VdiImage};
use wasm_bindgen::prelude::*;
use web_sys::{File, FileSystemSyncAccessHandle};

use crate::cells::{self, Cells};
use crate::export::{Export, Piece, PieceKind, CHUNK};
use crate::storage::{Backend, FileStorage, OpfsStorage, SparseMem};
use crate::{js_error, no_image, vdi_err, MEM_CREATE_LIMIT, MEM_OPEN_LIMIT};

/// What is open.
#[derive(Debug)]
pub(crate) enum Opened {
    /// One image (a differencing image opened alone included; boxed: the image holds its
    /// header and map cache inline, a chain is one vector).
    Image(Box<VdiImage<Backend>>),
    /// A chain of differencing images, base first.
    Chain(Chain<Backend>),
}

impl Opened {
    pub(crate) fn disk(&mut self) -> &mut dyn Disk {
        match self {
            Opened::Image(i) => &mut **i,
            Opened::Chain(c) => c,
        }
    }
}

/// A flattened VDI being built from the open disk.
#[derive(Debug)]
struct Flatten {
    img: VdiImage<Backend>,
    export: vdi::Export,
}

/// The worker's session (see the module docs).
#[wasm_bindgen]
#[derive(Debug, Default)]
pub struct Session {
    pub(crate) open: Option<Opened>,
    /// File name of each layer, base first (one for an image).
    pub(crate) names: Vec<String>,
    /// Position of each layer's file in the list given to `open_files`, base first.
    indices: Vec<usize>,
    /// Image UUID -> file names (for messages about a chain).
    by_uuid: Vec<(String, String)>,
    pub(crate) buf: Vec<u8>,
    /// The partition table, open filesystem and archive of the open disk (crate::volume).
    pub(crate) volume: Option<crate::volume::Volume>,
    export: Option<Export>,
    piece: Option<Piece>,
    flat: Option<Flatten>,
    /// An export to another format (see [`crate::formats`]).
    pub(crate) format: Option<crate::formats::FormatJob>,
    /// The memory of the last in-memory image closed, reused by the next one.
    spare: Vec<u8>,
}

#[wasm_bindgen]
impl Session {
    /// An empty session.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Session {
        Session::default()
    }

    /// Open a dropped or picked `File` (read-only). Returns the info report (JSON text).
    /// On failure what was open before stays open.
    pub fn open_file(&mut self, file: &File) -> Result<String, JsValue> {
        let s = FileStorage::new(file).map_err(|e| js_error(crate::storage_kind(&e), e.message))?;
        self.open_backend(Backend::File(s), &file.name())
    }

    /// Open an OPFS file through its sync access handle (read-write). The handle is
    /// released when the image is closed (or here, if it does not open).
    pub fn open_opfs(&mut self, handle: FileSystemSyncAccessHandle, name: &str) -> Result<String, JsValue> {
        self.open_backend(Backend::Opfs(OpfsStorage::new(handle)), name)
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

    /// Build the demo image in memory and open it (see [`crate::sample`]).
    pub fn open_sample(&mut self) -> Result<String, JsValue> {
        // What is open goes first: two samples (or a sample beside a large in-memory
        // image) would double the memory held.
        self.close();
        let img = crate::sample::build(std::mem::take(&mut self.spare)).map_err(vdi_err)?;
        self.set_image(img, "sample.vdi");
        self.info()
    }

    /// Open `files` (an array of `File`) as one snapshot chain. Returns the chain's
    /// description (JSON); on failure what was open before stays open.
    pub fn open_files(&mut self, files: &js_sys::Array) -> Result<String, JsValue> {
        let opened = crate::chain::open(files)?;
        self.close();
        self.open = Some(Opened::Chain(opened.chain));
        self.names = opened.names;
        self.indices = opened.indices;
        self.by_uuid = opened.by_uuid;
        self.info()
    }

    /// Open `backend`; what was open before stays open if this fails.
    fn open_backend(&mut self, backend: Backend, name: &str) -> Result<String, JsValue> {
        let img = VdiImage::open_with(backend, OpenOptions { lenient: true }).map_err(vdi_err)?;
        self.close();
        self.set_image(img, name);
        self.info()
    }

    /// Close what is open (OPFS handles are released as the storage drops).
    pub fn close(&mut self) {
        self.volume = None;
        self.export = None;
        self.piece = None;
        self.flat = None;
        self.format = None;
        self.names.clear();
        self.indices.clear();
        self.by_uuid.clear();
        if let Some(Opened::Image(img)) = self.open.take() {
            if let Backend::Mem(m) = img.into_storage() {
                self.spare = m.into_vec();
            }
        }
    }

    /// True when an image or a chain is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// True when a chain is open.
    pub fn is_chain(&self) -> bool {
        matches!(self.open, Some(Opened::Chain(_)))
    }

    /// The description of what is open (JSON text): for an image `{info, file}` (`info` is
    /// exactly `vdi info --json` without `actual-size`, which a browser cannot know); for a
    /// chain `{layers, warnings, virtual-size, block-size, blocks}`.
    pub fn info(&mut self) -> Result<String, JsValue> {
        self.info_value().map(|v| v.to_string())
    }

    /// Run the engine's check of the image; `progress(done, total)` is called as the map is
    /// scanned. Returns `vdi check --json` (JSON text).
    pub fn check(&mut self, progress: &js_sys::Function) -> Result<String, JsValue> {
        let name = self.name();
        let img = self.image_for("checking")?;
        let r = check_image(img, &mut crate::edit::monitor(progress, None)).map_err(vdi_err)?;
        Ok(check_json(&r, &name).to_string())
    }

    /// `{bytes, calls}` read from the image's storage since it was opened.
    pub fn read_stats(&mut self) -> Result<String, JsValue> {
        let img = self.image_for("read statistics")?;
        let (bytes, calls) = img.storage().read_stats();
        Ok(json!({ "bytes": bytes, "calls": calls }).to_string())
    }

    /// The block map in cells of `per` blocks: an image's own map, or a chain's disk
    /// coloured by the layer that supplies each block.
    pub fn map_cells(&mut self, per: u32) -> Result<Cells, JsValue> {
        match self.open.as_mut().ok_or_else(no_image)? {
            Opened::Image(img) => cells::layer_cells(img, 0, per),
            Opened::Chain(c) => cells::combined_cells(c, per),
        }
        .map_err(vdi_err)
    }

    /// Layer `layer`'s own block map in cells of `per` blocks (an image is layer 0).
    pub fn layer_cells(&mut self, layer: u32, per: u32) -> Result<Cells, JsValue> {
        let img = match self.open.as_ref().ok_or_else(no_image)? {
            Opened::Image(img) if layer == 0 => img,
            Opened::Chain(c) if (layer as usize) < c.layers().len() => &c.layers()[layer as usize],
            Opened::Image(_) => return Err(js_error("invalid-argument", format!("layer {layer} does not exist (an image has one)"))),
            Opened::Chain(c) => {
                return Err(js_error("invalid-argument", format!("layer {layer} does not exist (the chain has {})", c.layers().len())))
            }
        };
        cells::layer_cells(img, layer as u8, per).map_err(vdi_err)
    }

    /// Everything about block `block` of the image: entry, state, virtual and host offsets.
    pub fn block_info(&mut self, block: u32) -> Result<String, JsValue> {
        let img = self.image_for("block details")?;
        cells::block_info(img, block).map(|v| v.to_string()).map_err(vdi_err)
    }

    /// Summary of the image's blocks `first..end` (counts, host offset range) as JSON.
    pub fn range_info(&mut self, first: u32, end: u32) -> Result<String, JsValue> {
        let img = self.image_for("block details")?;
        cells::range_info(img, first, end).map(|v| v.to_string()).map_err(vdi_err)
    }

    /// Read `len` bytes of the virtual disk at `offset` into the transfer buffer.
    pub fn read_disk(&mut self, offset: f64, len: u32) -> Result<(), JsValue> {
        let len = read_len(len)?;
        self.ensure_transfer(len);
        let disk = self.open.as_mut().ok_or_else(no_image)?.disk();
        disk.read_at(offset as u64, &mut self.buf[..len]).map_err(vdi_err)
    }

    /// `len` bytes (at most [`crate::labels::MAX_LABEL_WINDOW`]) of the virtual disk at
    /// `offset`, as a copy of their own: the hex view reads beside a running export, whose
    /// pieces stay in the transfer buffer.
    pub fn read_copy(&mut self, offset: f64, len: u32) -> Result<Vec<u8>, JsValue> {
        if u64::from(len) > crate::labels::MAX_LABEL_WINDOW {
            return Err(js_error("invalid-argument", format!("a window of {len} bytes is larger than {}", crate::labels::MAX_LABEL_WINDOW)));
        }
        let disk = self.open.as_mut().ok_or_else(no_image)?.disk();
        let mut out = vec![0u8; len as usize];
        disk.read_at(offset as u64, &mut out).map_err(vdi_err)?;
        Ok(out)
    }

    /// The labelled fields of known structures (MBR, GPT) overlapping `len` bytes of the
    /// disk at `offset` (see [`crate::labels`]): JSON `[{start, len, group, name, value}]`.
    pub fn structure_labels(&mut self, offset: f64, len: u32) -> Result<String, JsValue> {
        let (disk, table) = self.disk_and_table()?;
        let labels = crate::labels::structure_labels(disk, table, offset as u64, u64::from(len)).map_err(vdi_err)?;
        Ok(Value::Array(labels.iter().map(crate::labels::Label::to_json).collect()).to_string())
    }

    /// Read `len` bytes of the image file itself at `offset` into the transfer buffer
    /// (to save the image back out).
    pub fn read_image(&mut self, offset: f64, len: u32) -> Result<(), JsValue> {
        let len = read_len(len)?;
        self.ensure_transfer(len);
        let Some(Opened::Image(img)) = self.open.as_ref() else {
            return Err(self.not_image("saving the image file"));
        };
        img.storage()
            .read_at(offset as u64, &mut self.buf[..len])
            .map_err(|e| js_error(crate::storage_kind(&e), format!("reading the image at {offset} ({len} bytes) failed: {e}")))
    }

    /// Where the transfer buffer starts in wasm memory (valid until the next call that
    /// may grow memory).
    pub fn buffer_ptr(&self) -> usize {
        self.buf.as_ptr() as usize
    }

    /// Start a raw export of the disk (flattened, for a chain). Returns the virtual disk
    /// size (the size to give the target before writing pieces at their offsets).
    pub fn export_begin(&mut self) -> Result<f64, JsValue> {
        self.refuse_broken_layout()?;
        let opened = self.open.as_mut().ok_or_else(no_image)?;
        let host_order = matches!(opened, Opened::Image(_));
        let disk = opened.disk();
        let size = disk.virtual_size();
        self.export = Some(Export::begin(disk, host_order).map_err(vdi_err)?);
        self.piece = None;
        Ok(size as f64)
    }

    /// The next piece of the raw export (see [`crate::export`]): its kind; its place
    /// through `piece_offset`, `piece_len` and `piece_buffer_offset`. Data pieces are in the
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

    /// True when the export reads the files front to back (pieces out of disk order).
    pub fn export_host_order(&self) -> bool {
        self.export.as_ref().is_some_and(|e| e.host_order())
    }

    /// Host order of an image only: the next read to make, without making it (see
    /// [`Export::plan_next`]): `[host offset, length, (disk offset, length, offset in the
    /// read) × pieces]`, empty at the end. The caller reads the host range from the image
    /// file itself and writes each piece at its disk offset.
    pub fn export_plan_next(&mut self) -> Result<Vec<f64>, JsValue> {
        let Some(Opened::Image(img)) = self.open.as_mut() else {
            return Err(js_error("invalid-argument", "only a single image's export is planned (a chain is read through export_next)"));
        };
        let e = self.export.as_mut().ok_or_else(|| js_error("invalid-argument", "no export in progress"))?;
        e.plan_next(&mut **img).map_err(vdi_err)
    }

    /// Abandon an export in progress.
    pub fn export_cancel(&mut self) {
        self.export = None;
        self.piece = None;
    }

    /// Start building a flattened VDI of the disk into `handle` (an empty OPFS file): a
    /// dynamic image of the disk's size and block size, VirtualBox layout, fresh UUIDs.
    /// Returns the disk size. The handle is released by [`Session::flat_finish`] or
    /// [`Session::flat_cancel`] (or here, on failure).
    pub fn flat_begin(&mut self, handle: FileSystemSyncAccessHandle) -> Result<f64, JsValue> {
        self.flat = None;
        let target = Backend::Opfs(OpfsStorage::new(handle));
        self.refuse_broken_layout()?;
        let disk = self.open.as_mut().ok_or_else(no_image)?.disk();
        let (size, bs) = (disk.virtual_size(), disk.block_size());
        let mut o = CreateOptions::new(size, Uuid::new_v4(), Uuid::new_v4());
        o.block_size = bs as u32;
        o.layout = Layout::Vbox;
        o.comment = "flattened snapshot chain (VDI workbench)".into();
        let img = create(target, &o, &mut vdi::NoMonitor).map_err(vdi_err)?;
        self.ensure_transfer(CHUNK);
        self.flat = Some(Flatten { img, export: vdi::Export::new(size) });
        Ok(size as f64)
    }

    /// Copy the next run (at most [`CHUNK`] bytes) of the disk into the new image; data
    /// that reads as zeros is not stored. Returns the bytes of the disk done (equal to the
    /// disk size at the end).
    pub fn flat_step(&mut self) -> Result<f64, JsValue> {
        let disk = self.open.as_mut().ok_or_else(no_image)?.disk();
        let f = self.flat.as_mut().ok_or_else(|| js_error("invalid-argument", "no flattened image in progress"))?;
        match f.export.step(disk, &mut ImageSink(&mut f.img), &mut self.buf[..CHUNK]) {
            Ok(Some(done)) => Ok(done as f64),
            Ok(None) => Ok(disk.virtual_size() as f64),
            Err(e) => {
                self.flat = None;
                Err(vdi_err(e))
            }
        }
    }

    /// Flush and close the flattened image. Returns `{info, file-length}` (`info` is
    /// `vdi info --json`).
    pub fn flat_finish(&mut self) -> Result<String, JsValue> {
        let mut f = self.flat.take().ok_or_else(|| js_error("invalid-argument", "no flattened image in progress"))?;
        let size = f.img.virtual_size();
        let done = f.export.stats.data_bytes + f.export.stats.zero_bytes;
        if done < size {
            return Err(js_error("invalid-argument", format!("the flattened image is incomplete ({done} of {size} bytes)")));
        }
        f.img.flush().map_err(vdi_err)?;
        let info = info_json(f.img.header(), "flattened.vdi", None);
        Ok(json!({ "info": info, "file-length": f.img.file_len() }).to_string())
    }

    /// Abandon the flattened image (its handle is released; the caller removes the file).
    pub fn flat_cancel(&mut self) {
        self.flat = None;
    }

    /// Create an image from `opts` (JSON: `size`, `fixed`, `block_size`, `layout`,
    /// `comment`) with fresh random UUIDs, and make it the open image.
    ///
    /// With `handle`, the image is written into that OPFS file (and stays open on it).
    /// Without, its metadata is built in memory with the zeros left implicit; the caller
    /// then writes [`Session::created_meta_len`] bytes from [`Session::created_meta_ptr`]
    /// and sizes the target to the image's length. Returns the info report.
    pub fn create_image(&mut self, opts: &str, handle: Option<FileSystemSyncAccessHandle>) -> Result<String, JsValue> {
        let o = crate::parse_create_options(opts)?;
        let name = format!("new-{}.vdi", &o.uuid.to_string()[..8]);
        let backend = match handle {
            Some(h) => Backend::Opfs(OpfsStorage::new(h)),
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
        let img = create(backend, &o, &mut vdi::NoMonitor).map_err(vdi_err)?;
        self.close();
        self.set_image(img, &name);
        self.info()
    }

    /// Start of the stored bytes of an in-memory image (its metadata; the rest up to the
    /// image's length is zeros).
    pub fn created_meta_ptr(&self) -> Result<usize, JsValue> {
        self.mem_stored().map(|s| s.as_ptr() as usize)
    }

    /// Number of stored bytes of an in-memory image.
    pub fn created_meta_len(&self) -> Result<usize, JsValue> {
        self.mem_stored().map(|s| s.len())
    }
}

/// Rust-side access (the edits, tests, other Rust callers).
impl Session {
    /// Make `img` the open image, named `name`.
    pub(crate) fn set_image(&mut self, img: VdiImage<Backend>, name: &str) {
        self.volume = None;
        self.open = Some(Opened::Image(Box::new(img)));
        self.names = vec![name.to_string()];
        self.indices = vec![0];
    }

    /// The report [`Session::info`] returns, as a JSON value.
    pub fn info_value(&mut self) -> Result<Value, JsValue> {
        let name = self.name();
        match self.open.as_mut().ok_or_else(no_image)? {
            Opened::Image(img) => {
                let h = img.header();
                let file_len = img.file_len();
                Ok(json!({
                    "info": info_json(h, &name, None),
                    "file": {
                        "name": name,
                        "backend": img.storage().kind(),
                        "writable": img.storage().writable(),
                        "length": file_len,
                        "layout-error": img.layout_error(),
                        "map-end": h.offset_bmap as u64 + h.map_bytes(),
                        "readable-entries": img.readable_entries(),
                        "blocks-covering-disk": img.blocks_covering_disk(),
                        "block-stride": h.block_stride(),
                    },
                }))
            }
            Opened::Chain(chain) => Ok(crate::chain::describe(chain, &self.names, &self.indices, &self.by_uuid)),
        }
    }

    /// An image or layer opened leniently (so Check can name the damage) is for inspection
    /// only: what its broken layout would read is not the disk (`vdi convert` refuses to open
    /// it), so its disk is neither exported nor flattened.
    pub(crate) fn refuse_broken_layout(&self) -> Result<(), JsValue> {
        let layers: Vec<&VdiImage<Backend>> = match self.open.as_ref().ok_or_else(no_image)? {
            Opened::Image(img) => vec![img],
            Opened::Chain(c) => c.layers().iter().collect(),
        };
        for (img, name) in layers.into_iter().zip(&self.names) {
            if let Some(layout) = img.layout_error() {
                let what = if self.names.len() > 1 { format!("layer \u{201c}{name}\u{201d} was") } else { "the image was".into() };
                return Err(js_error("broken-layout", format!("{what} opened for inspection only, its disk cannot be read: {layout}")));
            }
        }
        Ok(())
    }

    /// The open image (None when nothing or a chain is open).
    pub fn image(&mut self) -> Option<&mut VdiImage<Backend>> {
        match self.open.as_mut() {
            Some(Opened::Image(img)) => Some(img),
            _ => None,
        }
    }

    /// The open image, or an error saying `what` cannot be done on a chain.
    pub fn image_for(&mut self, what: &str) -> Result<&mut VdiImage<Backend>, JsValue> {
        if self.is_chain() {
            return Err(self.not_image(what));
        }
        match self.open.as_mut() {
            Some(Opened::Image(img)) => Ok(img),
            _ => Err(no_image()),
        }
    }

    /// Take the open image out of the session (to hand its storage to an operation that
    /// reopens it); a chain stays open and is refused.
    pub(crate) fn take_image(&mut self, what: &str) -> Result<VdiImage<Backend>, JsValue> {
        self.volume = None;
        match self.open.take() {
            Some(Opened::Image(img)) => Ok(*img),
            other => {
                self.open = other;
                Err(if self.open.is_some() { self.not_image(what) } else { no_image() })
            }
        }
    }

    fn not_image(&self, what: &str) -> JsValue {
        js_error(
            "unsupported",
            format!("{what} works on one image, and a chain of {} images is open", self.names.len()),
        )
    }

    /// The name of the open image (of a chain's top).
    pub(crate) fn name(&self) -> String {
        self.names.last().cloned().unwrap_or_default()
    }

    /// The open disk (an image or a chain).
    pub fn disk(&mut self) -> Option<&mut dyn Disk> {
        self.open.as_mut().map(Opened::disk)
    }

    /// The transfer buffer (data pieces, `read_disk`, `read_image` land here).
    pub fn transfer_buffer(&self) -> &[u8] {
        &self.buf
    }

    /// The next piece of the raw export (see [`Session::export_next`]); data pieces are
    /// in [`Session::transfer_buffer`] at `buf_off`.
    pub fn next_piece(&mut self) -> Result<Piece, JsValue> {
        self.ensure_transfer(CHUNK);
        let disk = self.open.as_mut().ok_or_else(no_image)?.disk();
        let e = self.export.as_mut().ok_or_else(|| js_error("invalid-argument", "no export in progress"))?;
        e.next(disk, &mut self.buf).map_err(vdi_err)
    }

    fn mem_stored(&self) -> Result<&[u8], JsValue> {
        match &self.open {
            Some(Opened::Image(img)) => match img.storage() {
                Backend::Mem(m) => Ok(m.stored()),
                _ => Err(js_error("invalid-argument", "the open image is not in memory")),
            },
            _ => Err(js_error("invalid-argument", "the open image is not in memory")),
        }
    }

    pub(crate) fn ensure_transfer(&mut self, len: usize) {
        if self.buf.len() < len {
            // Grow once to the full chunk: later calls reuse the same memory.
            self.buf = vec![0u8; len.max(CHUNK)];
        }
    }
}

fn read_len(len: u32) -> Result<usize, JsValue> {
    let len = len as usize;
    if len > CHUNK {
        return Err(js_error("invalid-argument", format!("read of {len} bytes is larger than {CHUNK}")));
    }
    Ok(len)
}
