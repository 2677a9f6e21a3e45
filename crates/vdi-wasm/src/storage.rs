//! Browser storage backends for the engine.
//!
//! - [`FileStorage`]: a dropped or picked `File`, read with `FileReaderSync` over
//!   `file.slice(a, b)` (workers only). Read-only; the file is never copied whole.
//! - [`OpfsStorage`]: an OPFS `FileSystemSyncAccessHandle` (workers only), read-write, with
//!   64-bit offsets passed as `f64` (exact up to 2^53), so files over 4 GiB work.
//! - [`SparseMem`]: bytes in wasm memory plus a logical length past them that reads as
//!   zeros. Used for small images (the sample) and to build a new image's metadata before it
//!   is streamed to a save target.
//!
//! [`Backend`] unifies them so one [`vdi::VdiImage`] type serves every source. Each backend
//! counts the bytes it reads, so the page (and its tests) can show that opening a large
//! image reads only the header and the block map.

use std::cell::Cell;
use std::io::ErrorKind;

use js_sys::Uint8Array;
use vdi::{ReadAt, Storage, StorageError};
use wasm_bindgen::JsValue;
use web_sys::{Blob, File, FileReaderSync, FileSystemReadWriteOptions, FileSystemSyncAccessHandle};

/// Largest offset a JS number carries exactly (2^53).
const MAX_SAFE: u64 = 1 << 53;

/// Text of a JS exception: `Name: message` for DOMExceptions and Errors, else its string.
pub fn js_error_text(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    let get = |k: &str| js_sys::Reflect::get(e, &JsValue::from_str(k)).ok().and_then(|v| v.as_string());
    match (get("name"), get("message")) {
        (Some(n), Some(m)) if !m.is_empty() => format!("{n}: {m}"),
        (Some(n), _) => n,
        (None, Some(m)) => m,
        _ => format!("{e:?}"),
    }
}

/// The I/O kind of a JS exception, from its `name` (a DOMException's): an exceeded storage
/// quota is a full disk ([`ErrorKind::StorageFull`], which the engine reports as
/// "no-space"); anything unknown is [`ErrorKind::Other`].
pub fn js_error_kind(e: &JsValue) -> ErrorKind {
    let name = js_sys::Reflect::get(e, &JsValue::from_str("name")).ok().and_then(|v| v.as_string());
    dom_error_kind(name.as_deref().unwrap_or(""))
}

/// The I/O kind for a DOMException name.
pub fn dom_error_kind(name: &str) -> ErrorKind {
    match name {
        "QuotaExceededError" => ErrorKind::StorageFull,
        "NotFoundError" => ErrorKind::NotFound,
        "NotAllowedError" | "SecurityError" => ErrorKind::PermissionDenied,
        "NoModificationAllowedError" => ErrorKind::ResourceBusy,
        _ => ErrorKind::Other,
    }
}

fn js_err(what: &str, e: JsValue) -> StorageError {
    StorageError::with_kind(js_error_kind(&e), format!("{what}: {}", js_error_text(&e)))
}

fn check_end(offset: u64, len: usize, size: u64) -> Result<u64, StorageError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(end),
        _ => Err(StorageError::past_end(offset, len as u64, size)),
    }
}

/// Counters of what a backend read (for diagnostics and tests).
#[derive(Debug, Default, Clone)]
pub struct ReadStats {
    /// Bytes returned by reads.
    pub bytes: Cell<u64>,
    /// Read calls made.
    pub calls: Cell<u64>,
}

impl ReadStats {
    fn add(&self, n: usize) {
        self.bytes.set(self.bytes.get() + n as u64);
        self.calls.set(self.calls.get() + 1);
    }
}

/// A browser `File` (or any `Blob`), read-only.
#[derive(Debug)]
pub struct FileStorage {
    file: Blob,
    reader: FileReaderSync,
    len: u64,
    stats: ReadStats,
}

impl FileStorage {
    /// Wrap a `File`. Fails outside a worker (`FileReaderSync` exists only there).
    pub fn new(file: &File) -> Result<Self, StorageError> {
        Self::from_blob(file)
    }

    /// Wrap any `Blob`.
    pub fn from_blob(blob: &Blob) -> Result<Self, StorageError> {
        let reader = FileReaderSync::new().map_err(|e| js_err("FileReaderSync is not available (not in a worker?)", e))?;
        let len = blob.size();
        if !(0.0..=MAX_SAFE as f64).contains(&len) {
            return Err(StorageError::new(format!("file size {len} is not a usable byte count")));
        }
        Ok(FileStorage { file: blob.clone(), reader, len: len as u64, stats: ReadStats::default() })
    }

    /// What was read so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// The underlying blob.
    pub fn blob(&self) -> &Blob {
        &self.file
    }
}

impl ReadAt for FileStorage {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let end = check_end(offset, buf.len(), self.len)?;
        if buf.is_empty() {
            return Ok(());
        }
        let part = self
            .file
            .slice_with_f64_and_f64(offset as f64, end as f64)
            .map_err(|e| js_err("slicing the file failed", e))?;
        let ab = self
            .reader
            .read_as_array_buffer(&part)
            .map_err(|e| js_err("reading the file failed (was it changed or removed since it was opened?)", e))?;
        let got = ab.byte_length() as usize;
        if got != buf.len() {
            return Err(StorageError::new(format!(
                "reading {} bytes at offset {offset} returned {got} bytes (was the file changed since it was opened?)",
                buf.len()
            )));
        }
        Uint8Array::new(&ab).copy_to(buf);
        self.stats.add(buf.len());
        Ok(())
    }

    fn len(&self) -> Result<u64, StorageError> {
        Ok(self.len)
    }
}

impl Storage for FileStorage {
    fn write_at(&mut self, _offset: u64, _buf: &[u8]) -> Result<(), StorageError> {
        Err(StorageError::new("a dropped or picked file is read-only"))
    }
    fn set_len(&mut self, _len: u64) -> Result<(), StorageError> {
        Err(StorageError::new("a dropped or picked file is read-only"))
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// An OPFS file through its synchronous access handle (dedicated workers only), read-write.
#[derive(Debug)]
pub struct OpfsStorage {
    handle: FileSystemSyncAccessHandle,
    stats: ReadStats,
}

fn at(offset: u64) -> Result<FileSystemReadWriteOptions, StorageError> {
    if offset > MAX_SAFE {
        return Err(StorageError::new(format!("offset {offset} is beyond 2^53, the largest a browser file takes")));
    }
    let o = FileSystemReadWriteOptions::new();
    o.set_at_f64(offset as f64);
    Ok(o)
}

impl OpfsStorage {
    /// Wrap an open handle; the storage owns it from now on: dropping the storage releases
    /// it (see the `Drop` impl).
    pub fn new(handle: FileSystemSyncAccessHandle) -> Self {
        OpfsStorage { handle, stats: ReadStats::default() }
    }
    /// The handle.
    pub fn handle(&self) -> &FileSystemSyncAccessHandle {
        &self.handle
    }
    /// What was read so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }
    /// Flush and close the handle (releasing the file's lock). Closing twice is harmless.
    pub fn close(&self) {
        let _ = self.handle.flush();
        self.handle.close();
    }
}

/// Dropping the storage releases the handle and the file's lock: whatever drops an image
/// opened on OPFS (a close, a failed open or create, an operation that took the storage
/// and failed) lets the file be opened again, with no hand-written close on each path.
impl Drop for OpfsStorage {
    fn drop(&mut self) {
        self.close();
    }
}

impl ReadAt for OpfsStorage {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let size = ReadAt::len(self)?;
        check_end(offset, buf.len(), size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let n = self
                .handle
                .read_with_u8_array_and_options(&mut buf[done..], &at(offset + done as u64)?)
                .map_err(|e| js_err("reading the OPFS file failed", e))? as usize;
            if n == 0 {
                return Err(StorageError::past_end(offset, buf.len() as u64, size));
            }
            done += n;
        }
        self.stats.add(buf.len());
        Ok(())
    }

    fn len(&self) -> Result<u64, StorageError> {
        let s = self.handle.get_size().map_err(|e| js_err("getting the OPFS file's size failed", e))?;
        Ok(s as u64)
    }
}

impl Storage for OpfsStorage {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        let mut done = 0usize;
        while done < buf.len() {
            let n = self
                .handle
                .write_with_u8_array_and_options(&buf[done..], &at(offset + done as u64)?)
                .map_err(|e| js_err("writing the OPFS file failed", e))? as usize;
            if n == 0 {
                // As the worker reads a write of nothing: the browser's storage is full.
                return Err(StorageError::no_space(format!(
                    "writing {} bytes at offset {} of the OPFS file wrote nothing (out of space?)",
                    buf.len() - done,
                    offset + done as u64
                )));
            }
            done += n;
        }
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        if len > MAX_SAFE {
            return Err(StorageError::new(format!("length {len} is beyond 2^53")));
        }
        self.handle.truncate_with_f64(len as f64).map_err(|e| js_err("resizing the OPFS file failed", e))
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        self.handle.flush().map_err(|e| js_err("flushing the OPFS file failed", e))
    }
}

/// Bytes in wasm memory followed by a run of zeros up to a logical length.
///
/// Writing is allowed up to [`SparseMem::limit`] bytes of stored data; a larger length
/// (`set_len`) costs nothing. A new fixed image's metadata is built here and then streamed
/// out, the zeros never materialised.
#[derive(Debug, Clone, Default)]
pub struct SparseMem {
    data: Vec<u8>,
    len: u64,
    limit: usize,
    stats: ReadStats,
}

impl SparseMem {
    /// Empty storage that stores at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        SparseMem { data: Vec::new(), len: 0, limit, stats: ReadStats::default() }
    }
    /// Empty storage built in `spare` (its contents dropped, its capacity kept), so memory
    /// given back by an earlier image is reused instead of fragmenting the heap.
    pub fn in_spare(mut spare: Vec<u8>, limit: usize, capacity: usize) -> Self {
        spare.clear();
        if spare.capacity() < capacity {
            spare = Vec::with_capacity(capacity.min(limit));
        }
        SparseMem { data: spare, len: 0, limit, stats: ReadStats::default() }
    }
    /// Give the stored bytes back (for reuse).
    pub fn into_vec(self) -> Vec<u8> {
        self.data
    }
    /// Storage holding `data` (its limit is its length, or `limit` if larger).
    pub fn from_vec(data: Vec<u8>, limit: usize) -> Self {
        let len = data.len() as u64;
        let limit = limit.max(data.len());
        SparseMem { data, len, limit, stats: ReadStats::default() }
    }
    /// The stored bytes (the logical content continues with zeros up to `len`).
    pub fn stored(&self) -> &[u8] {
        &self.data[..(self.data.len() as u64).min(self.len) as usize]
    }
    /// The most bytes this storage will hold.
    pub fn limit(&self) -> usize {
        self.limit
    }
    /// What was read so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }
}

impl ReadAt for SparseMem {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        check_end(offset, buf.len(), self.len)?;
        let stored = self.stored();
        let s = (offset.min(stored.len() as u64)) as usize;
        let e = ((offset + buf.len() as u64).min(stored.len() as u64)) as usize;
        let n = e.saturating_sub(s);
        buf[..n].copy_from_slice(&stored[s..e.max(s)]);
        buf[n..].fill(0);
        self.stats.add(buf.len());
        Ok(())
    }
    fn len(&self) -> Result<u64, StorageError> {
        Ok(self.len)
    }
}

impl Storage for SparseMem {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.limit as u64)
            .ok_or_else(|| {
                StorageError::with_kind(ErrorKind::OutOfMemory, format!(
                    "writing {} bytes at offset {offset} would exceed the {} MiB kept in memory",
                    buf.len(),
                    self.limit >> 20
                ))
            })? as usize;
        if end > self.data.len() {
            // Bytes between the stored end and the logical end are zeros already.
            self.data.resize(end, 0);
        }
        self.data[offset as usize..end].copy_from_slice(buf);
        self.len = self.len.max(end as u64);
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        if len < self.data.len() as u64 {
            self.data.truncate(len as usize);
        }
        self.len = len;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Any of the browser backends.
#[derive(Debug)]
pub enum Backend {
    /// A dropped or picked file (read-only).
    File(FileStorage),
    /// An OPFS file (read-write).
    Opfs(OpfsStorage),
    /// Bytes in wasm memory (read-write).
    Mem(SparseMem),
}

impl Backend {
    /// "file", "opfs" or "memory".
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::File(_) => "file",
            Backend::Opfs(_) => "opfs",
            Backend::Mem(_) => "memory",
        }
    }
    /// True when writes are possible.
    pub fn writable(&self) -> bool {
        !matches!(self, Backend::File(_))
    }
    /// (bytes read, read calls) so far.
    pub fn read_stats(&self) -> (u64, u64) {
        match self {
            Backend::File(f) => (f.stats.bytes.get(), f.stats.calls.get()),
            Backend::Opfs(o) => (o.stats.bytes.get(), o.stats.calls.get()),
            Backend::Mem(m) => (m.stats.bytes.get(), m.stats.calls.get()),
        }
    }
}

impl ReadAt for Backend {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        match self {
            Backend::File(f) => f.read_at(offset, buf),
            Backend::Opfs(o) => o.read_at(offset, buf),
            Backend::Mem(m) => m.read_at(offset, buf),
        }
    }
    fn len(&self) -> Result<u64, StorageError> {
        match self {
            Backend::File(f) => f.len(),
            Backend::Opfs(o) => o.len(),
            Backend::Mem(m) => m.len(),
        }
    }
}

impl Storage for Backend {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        match self {
            Backend::File(f) => f.write_at(offset, buf),
            Backend::Opfs(o) => o.write_at(offset, buf),
            Backend::Mem(m) => m.write_at(offset, buf),
        }
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        match self {
            Backend::File(f) => f.set_len(len),
            Backend::Opfs(o) => o.set_len(len),
            Backend::Mem(m) => m.set_len(len),
        }
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        match self {
            Backend::File(f) => f.flush(),
            Backend::Opfs(o) => o.flush(),
            Backend::Mem(m) => m.flush(),
        }
    }
}
