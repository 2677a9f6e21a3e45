//! Edits of the open image: compact, resize, discard, repair, header fields, raw writes.
//!
//! Only writable backends are edited: an OPFS working copy (the page copies a dropped file
//! there first, so the user's file is never touched) or an image built in wasm memory. Every
//! operation is the engine's crash-safe one; a cancelled operation stops at a safe point
//! between blocks, and an operation that never returns (the worker is killed) leaves an
//! image that opens and checks clean at worst with leaks.
//!
//! Long operations take two JavaScript callbacks: `progress(done, total)` and `cancelled()`
//! (which the worker answers from a shared flag the page sets).

use js_sys::Function;
use serde_json::{json, Value};
use uuid::Uuid;
use vdi::header::UuidArg;
use vdi::report::{compact_json, discard_json, repair_json, resize_json};
use vdi::{FnMonitor, Geometry, HeaderEdit, Monitor, OpenOptions, VdiImage};
use wasm_bindgen::prelude::*;
use web_sys::{File, FileSystemSyncAccessHandle};

use crate::storage::{Backend, FileStorage, OpfsStorage};
use crate::{js_error, vdi_err, Session, CHUNK};

/// A monitor over the page's callbacks (without `cancelled`, never cancelled).
pub(crate) fn monitor<'a>(progress: &'a Function, cancelled: Option<&'a Function>) -> impl Monitor + 'a {
    FnMonitor {
        progress: move |d: u64, t: u64| {
            let _ = progress.call2(&JsValue::NULL, &(d as f64).into(), &(t as f64).into());
        },
        cancelled: move || {
            cancelled.is_some_and(|c| c.call0(&JsValue::NULL).map(|v| v.is_truthy()).unwrap_or(false))
        },
    }
}

/// A JavaScript number that must be a whole number of bytes.
fn bytes_arg(what: &str, v: f64) -> Result<u64, JsValue> {
    if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0) {
        return Err(js_error("invalid-argument", format!("{what} {v} is not a whole number of bytes")));
    }
    Ok(v as u64)
}

/// A UUID field of `set_fields`: a UUID or a word ([`UuidArg`]).
fn uuid_field(v: &Value, key: &str) -> Result<Option<Uuid>, JsValue> {
    let Some(s) = v.get(key).and_then(Value::as_str) else { return Ok(None) };
    let arg = UuidArg::parse(s).map_err(|e| js_error(e.kind(), format!("{key}: {e}")))?;
    Ok(Some(arg.resolve(Uuid::new_v4)))
}

#[wasm_bindgen]
impl Session {
    pub(crate) fn writable_img(&mut self) -> Result<&mut VdiImage<Backend>, JsValue> {
        // What was read of the disk's insides may change.
        self.volume = None;
        let img = self.image_for("editing")?;
        if !img.storage().writable() {
            return Err(js_error(
                "read-only",
                "the image is open read-only, straight from your file; make an editable copy first (your file is never modified)",
            ));
        }
        Ok(img)
    }

    /// Compact the open image (all-zero blocks become ZERO, or FREE with `free`; holes are
    /// filled from the end; the file shrinks). Returns [`vdi::report::compact_json`] as JSON
    /// text.
    pub fn compact(&mut self, free: bool, progress: &Function, cancelled: &Function) -> Result<String, JsValue> {
        let img = self.writable_img()?;
        let mut mon = monitor(progress, Some(cancelled));
        let r = img.compact(free, &mut mon);
        img.flush().map_err(vdi_err)?;
        let st = r.map_err(vdi_err)?;
        Ok(compact_json(&st, &self.name(), Some(free)).to_string())
    }

    /// Resize the virtual disk to `new_size` bytes (grow; shrink only over zeros). Returns
    /// [`vdi::report::resize_json`].
    pub fn resize(&mut self, new_size: f64, progress: &Function, cancelled: &Function) -> Result<String, JsValue> {
        let new_size = bytes_arg("size", new_size)?;
        let name = self.name();
        let img = self.writable_img()?;
        let mut mon = monitor(progress, Some(cancelled));
        let r = img.resize(new_size, &mut mon);
        img.flush().map_err(vdi_err)?;
        let st = r.map_err(vdi_err)?;
        Ok(resize_json(&st, img.header(), &name).to_string())
    }

    /// Discard `length` bytes at `offset`. Returns [`vdi::report::discard_json`].
    pub fn discard(&mut self, offset: f64, length: f64, progress: &Function, cancelled: &Function) -> Result<String, JsValue> {
        let (offset, length) = (bytes_arg("offset", offset)?, bytes_arg("length", length)?);
        let img = self.writable_img()?;
        let mut mon = monitor(progress, Some(cancelled));
        let r = img.discard(offset, length, &mut mon);
        img.flush().map_err(vdi_err)?;
        let (blocks, reclaimed) = r.map_err(vdi_err)?;
        Ok(discard_json(blocks, reclaimed, &self.name()).to_string())
    }

    /// Write `data` at `offset` of the virtual disk (the page feeds a file in chunks of at
    /// most [`CHUNK`] bytes; all-zero pieces of unallocated blocks allocate nothing).
    pub fn write_disk(&mut self, offset: f64, data: &[u8]) -> Result<(), JsValue> {
        let offset = bytes_arg("offset", offset)?;
        if data.len() > CHUNK {
            return Err(js_error("invalid-argument", format!("a write of {} bytes is larger than {CHUNK}", data.len())));
        }
        self.writable_img()?.write_at(offset, data).map_err(vdi_err)
    }

    /// Flush the open image's storage (metadata first, then the storage itself).
    pub fn flush(&mut self) -> Result<(), JsValue> {
        self.image_for("flushing")?.flush().map_err(vdi_err)
    }

    /// Set header fields from JSON `{uuid?, modify_uuid?, parent_uuid?, parent_modify_uuid?,
    /// comment?, lchs?}`. UUIDs take a UUID or a word of [`UuidArg`] (`"random"`, `"null"`,
    /// `""`...); `lchs` is `"C/H/S"`; an empty
    /// comment clears it. Returns the info report.
    pub fn set_fields(&mut self, fields: &str) -> Result<String, JsValue> {
        let v: Value = serde_json::from_str(fields)
            .map_err(|e| js_error("invalid-argument", format!("fields are not JSON: {e}")))?;
        let edit = HeaderEdit {
            uuid: uuid_field(&v, "uuid")?,
            modify_uuid: uuid_field(&v, "modify_uuid")?,
            parent_uuid: uuid_field(&v, "parent_uuid")?,
            parent_modify_uuid: uuid_field(&v, "parent_modify_uuid")?,
            comment: v.get("comment").and_then(Value::as_str).map(str::to_owned),
            lchs: v.get("lchs").and_then(Value::as_str).map(Geometry::parse_chs).transpose().map_err(vdi_err)?,
        };
        let img = self.writable_img()?;
        img.edit_header(&edit).map_err(vdi_err)?;
        img.flush().map_err(vdi_err)?;
        self.info()
    }

    /// Repair the open (writable) image, or with `dry_run` list what would be done (any
    /// image). The image is reopened afterwards. Returns [`vdi::report::repair_json`] (the
    /// shape of `vdi repair --json`).
    pub fn repair(&mut self, dry_run: bool, progress: &Function, cancelled: &Function) -> Result<String, JsValue> {
        if !dry_run {
            self.writable_img()?;
        }
        let name = self.name();
        let storage = self.take_image("repair")?.into_storage();
        let mut mon = monitor(progress, Some(cancelled));
        // On failure the storage goes with the call (an OPFS handle is released as it
        // drops, so the file can be opened again; the page reopens it).
        let (rep, storage) = vdi::repair(storage, dry_run, &mut mon).map_err(vdi_err)?;
        // Reopen on the same storage: the repaired image, or the unchanged one.
        let img = VdiImage::open_with(storage, OpenOptions { lenient: true }).map_err(vdi_err)?;
        self.set_image(img, &name);
        Ok(repair_json(&rep, &name).to_string())
    }

    /// Create a new image in the OPFS file behind `handle` (options as for
    /// [`Session::create_image`], JSON) holding the raw disk `file`: all-zero blocks are not
    /// written, so a dynamic image stores only the data. The new image stays open. Returns
    /// `{info, import: {data-bytes, zero-bytes}}`; on failure the handle is closed.
    pub fn import_raw(
        &mut self,
        file: &File,
        opts: &str,
        handle: FileSystemSyncAccessHandle,
        progress: &Function,
        cancelled: &Function,
    ) -> Result<String, JsValue> {
        // On failure the handle is released as the storage drops.
        let target = Backend::Opfs(OpfsStorage::new(handle));
        let o = crate::parse_create_options(opts)?;
        let src = FileStorage::new(file).map_err(|e| js_error(crate::storage_kind(&e), e.message))?;
        let mut mon = monitor(progress, Some(cancelled));
        let mut img = vdi::create(target, &o, &mut vdi::NoMonitor).map_err(vdi_err)?;
        let st = vdi::import_raw(&src, &mut img, &mut mon).map_err(vdi_err)?;
        img.flush().map_err(vdi_err)?;
        self.close();
        self.set_image(img, &file.name());
        Ok(json!({
            "info": self.info_value()?,
            "import": { "data-bytes": st.data_bytes, "zero-bytes": st.zero_bytes },
        })
        .to_string())
    }

    /// What repair would do to `file` (read-only: a dry run), for files that do not open.
    pub fn repair_plan(&mut self, file: &File) -> Result<String, JsValue> {
        let s = FileStorage::new(file).map_err(|e| js_error(crate::storage_kind(&e), e.message))?;
        let (rep, _) = vdi::repair(Backend::File(s), true, &mut vdi::NoMonitor).map_err(vdi_err)?;
        Ok(repair_json(&rep, &file.name()).to_string())
    }

    /// Repair the OPFS file behind `handle` (a copy the page made of a file that may not
    /// open at all), then open it. Returns the repair report; the handle is closed on failure.
    pub fn repair_opfs(
        &mut self,
        handle: FileSystemSyncAccessHandle,
        name: &str,
        progress: &Function,
        cancelled: &Function,
    ) -> Result<String, JsValue> {
        // On failure the handle is released as the storage drops.
        let mut mon = monitor(progress, Some(cancelled));
        let (rep, storage) = vdi::repair(Backend::Opfs(OpfsStorage::new(handle)), false, &mut mon).map_err(vdi_err)?;
        let img = VdiImage::open_with(storage, OpenOptions { lenient: true }).map_err(vdi_err)?;
        self.close();
        self.set_image(img, name);
        Ok(repair_json(&rep, name).to_string())
    }
}
