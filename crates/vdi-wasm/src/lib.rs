//! Browser bindings for the `vdi` engine: what the workbench's Web Worker calls.
//!
//! One [`Session`] holds what is open — one image or a snapshot chain, both a
//! [`vdi::Disk`] — over the browser backends in [`storage`] (a dropped `File`, an OPFS sync
//! access handle, or bytes in wasm memory), and one reusable transfer buffer in wasm
//! memory: the worker reads exported bytes straight out of that buffer
//! (`new Uint8Array(memory.buffer, buffer_ptr(), len)`) instead of receiving a fresh copy
//! per chunk.
//!
//! Reports are the engine's own JSON (`vdi::report`), so the page shows exactly what
//! `vdi info --json` and `vdi check --json` print. Errors are thrown as `{kind, message}`
//! objects carrying the engine's stable kind and specific message. The limits the page
//! needs are read from [`limits`], never retyped in JavaScript.
//!
//! Nothing here loads an image whole: opening reads the header, the block map is scanned in
//! chunks, exports move at most [`CHUNK`] bytes at a time.

pub mod cells;
pub mod chain;
pub mod edit;
pub mod export;
mod formats;
pub mod labels;
pub mod readcache;
pub mod fs_compact;
mod sample;
pub mod session;
pub mod storage;
pub mod volume;
pub mod zip;

use serde_json::{json, Value};
use uuid::Uuid;
use vdi::{CreateOptions, Layout, StorageError, VdiError};
use wasm_bindgen::prelude::*;

pub use cells::{Cells, MAX_CELLS};
pub use chain::MAX_FILES;
pub use export::{Piece, PieceKind, CHUNK};
pub use session::Session;

/// Most bytes of metadata a new image may have when built in memory before being streamed
/// to a save target (a 64 MiB block map describes a 16 TiB disk of 1 MiB blocks).
pub const MEM_CREATE_LIMIT: usize = 64 << 20;

/// Largest image accepted by the in-memory backend.
pub const MEM_OPEN_LIMIT: usize = 64 << 20;

/// The limits the page needs, defined once here: `{max-cells, max-files, chunk,
/// mem-open-limit, mem-create-limit}` (JSON text).
#[wasm_bindgen]
pub fn limits() -> String {
    json!({
        "max-cells": MAX_CELLS,
        "max-files": MAX_FILES,
        "chunk": CHUNK,
        "mem-open-limit": MEM_OPEN_LIMIT,
        "mem-create-limit": MEM_CREATE_LIMIT,
    })
    .to_string()
}

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

/// The kind the page sees for a storage failure outside an engine call.
pub(crate) fn storage_kind(e: &StorageError) -> &'static str {
    if e.is_no_space() {
        "no-space"
    } else {
        "io"
    }
}

fn no_image() -> JsValue {
    js_error("no-image", "nothing is open")
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

