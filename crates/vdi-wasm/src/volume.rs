//! Inside the open disk, for the Files and Hex views: the partition table (read once per
//! disk and kept), one open filesystem kept between calls (listing a folder now, reading a
//! file later parses nothing again), a file read in pieces into the transfer buffer, a
//! file's extents, and a folder streamed out as a `.zip` ([`FolderZip`]).
//!
//! The disk is the session's (an image, or a chain's newest view): everything above the
//! disk seam is written once. Paths are absolute ("/docs/readme.md").

use serde_json::{json, Value};
use vdi::volume::json::{entry_json, extents_json, table_json};
use vdi::volume::{Entry, EntryKind, FileExtent, Filesystem, PartitionTable, ReadDisk, MAX_PATH_DEPTH};
use vdi::Disk;
use wasm_bindgen::prelude::*;

use crate::export::CHUNK;
use crate::readcache::{Cached, PageCache};
use crate::session::Session;
use crate::zip::{ZipError, ZipWriter};
use crate::{js_error, no_image, vdi_err};

/// Most extents returned for one file (the page folds them into blocks).
pub const MAX_EXTENTS: usize = 1 << 20;
/// Bytes of a file read at once for a preview.
pub const MAX_PREVIEW: u32 = 1 << 20;

/// What the session knows of the open disk's insides.
#[derive(Debug, Default)]
pub(crate) struct Volume {
    table: Option<PartitionTable>,
    fs: Option<Filesystem>,
    /// The file being read out, by path.
    file: Option<(String, Entry)>,
    zip: Option<FolderZip>,
    /// Pages of the disk read by the filesystem readers.
    cache: PageCache,
}

fn zip_err(e: ZipError) -> JsValue {
    js_error(e.kind(), e.to_string())
}

/// The table of `disk`, read on first use and kept.
fn table<'a>(v: &'a mut Volume, disk: &mut dyn Disk) -> Result<&'a PartitionTable, JsValue> {
    if v.table.is_none() {
        v.table = Some(PartitionTable::read(&mut Cached { disk, cache: &mut v.cache }).map_err(vdi_err)?);
    }
    Ok(v.table.as_ref().expect("just read"))
}

/// The filesystem of partition `number`, opened when another (or none) is open, and the
/// disk read through the page cache.
fn fs_and_reader<'a>(v: &'a mut Volume, disk: &'a mut dyn Disk, number: u32) -> Result<(&'a mut Filesystem, Cached<'a>), JsValue> {
    if v.fs.as_ref().is_none_or(|f| f.partition() != number) {
        let part = table(v, disk)?.partition(number).map_err(vdi_err)?.clone();
        v.file = None;
        v.zip = None;
        v.fs = Some(Filesystem::open(&mut Cached { disk, cache: &mut v.cache }, &part).map_err(vdi_err)?);
    }
    Ok((v.fs.as_mut().expect("just opened"), Cached { disk, cache: &mut v.cache }))
}

/// Join a folder path and a name.
fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// A folder being written as a `.zip`, one piece at a time: the folders still to list (a
/// stack: the archive is depth first), the file being copied, the writer.
#[derive(Debug)]
pub struct FolderZip {
    writer: ZipWriter,
    /// (path on the filesystem, path in the archive, entries still to visit, reversed).
    stack: Vec<(String, String, Vec<Entry>)>,
    /// The file being copied: its entry, its path, bytes copied.
    current: Option<(Entry, u64)>,
    /// The central directory has been handed out.
    done: bool,
    /// Entries left out (links, devices, names that are not one safe path component: see
    /// [`unsafe_name`]), by archive path.
    pub skipped: Vec<String>,
    /// Bytes of file data copied so far.
    pub data_done: u64,
}

/// One piece of the archive, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum ZipPiece {
    /// Bytes made by the writer (a header, a descriptor, the central directory).
    Meta(Vec<u8>),
    /// `n` bytes of a file, in the buffer given to [`FolderZip::next`].
    Data(usize),
    /// The archive is complete.
    End,
}

impl FolderZip {
    /// Start the archive of folder `path` of `fs`; its entries sit under `root` in the archive
    /// (the folder's own name, so it unzips into one folder).
    pub fn begin(fs: &mut Filesystem, disk: &mut dyn ReadDisk, path: &str, root: &str) -> vdi::Result<FolderZip> {
        let mut entries = fs.list_path(disk, path)?;
        entries.reverse();
        Ok(FolderZip {
            writer: ZipWriter::new(),
            stack: vec![(path.to_string(), root.trim_matches('/').to_string(), entries)],
            current: None,
            done: false,
            skipped: Vec::new(),
            data_done: 0,
        })
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.writer.entries()
    }

    /// Bytes of the archive so far.
    pub fn written(&self) -> u64 {
        self.writer.written()
    }

    /// The next piece; file data is read into `buf`.
    pub fn next(&mut self, fs: &mut Filesystem, disk: &mut dyn ReadDisk, buf: &mut [u8]) -> Result<ZipPiece, JsValue> {
        if let Some((entry, at)) = self.current.as_mut() {
            let n = fs.read(disk, entry, *at, buf).map_err(vdi_err)?;
            if n > 0 {
                *at += n as u64;
                self.data_done += n as u64;
                self.writer.data(&buf[..n]).map_err(zip_err)?;
                return Ok(ZipPiece::Data(n));
            }
            if *at != entry.size {
                return Err(js_error("damaged", format!("{} ended after {at} of its {} bytes", entry.name, entry.size)));
            }
            self.current = None;
            return self.writer.end_file().map(ZipPiece::Meta).map_err(zip_err);
        }
        loop {
            let Some((dir, arch, pending)) = self.stack.last_mut() else {
                if self.done {
                    return Ok(ZipPiece::End);
                }
                self.done = true;
                return self.writer.finish().map(ZipPiece::Meta).map_err(zip_err);
            };
            let Some(e) = pending.pop() else {
                self.stack.pop();
                continue;
            };
            let (fs_path, zip_path) = (join(dir, &e.name), if arch.is_empty() { e.name.clone() } else { format!("{arch}/{}", e.name) });
            if unsafe_name(&e.name) {
                // A zip-slip for the user's unzip ("..", "/", "\\"), or a name no unzip keeps.
                self.skipped.push(format!("{arch}/{:?}", e.name).trim_start_matches('/').to_string());
                continue;
            }
            match e.kind {
                EntryKind::Dir => {
                    if self.stack.len() >= MAX_PATH_DEPTH {
                        return Err(js_error("limit", format!("{fs_path} lies more than {MAX_PATH_DEPTH} folders deep")));
                    }
                    let head = self.writer.directory(&zip_path, Some(e.mtime)).map_err(zip_err)?;
                    let mut inner = fs.list(disk, &e).map_err(vdi_err)?;
                    inner.reverse();
                    self.stack.push((fs_path, zip_path, inner));
                    return Ok(ZipPiece::Meta(head));
                }
                EntryKind::File => {
                    let head = self.writer.begin_file(&zip_path, e.size, Some(e.mtime)).map_err(zip_err)?;
                    self.current = Some((e, 0));
                    return Ok(ZipPiece::Meta(head));
                }
                EntryKind::Symlink | EntryKind::Other => self.skipped.push(zip_path),
            }
        }
    }
}

/// A name from an image that cannot be one component of an archive path: empty, "." or
/// "..", or holding '/', '\\' (a separator to Windows unzips) or NUL.
fn unsafe_name(name: &str) -> bool {
    matches!(name, "" | "." | "..") || name.contains(['/', '\\', '\0'])
}

/// A folder's size as a zip: walks it once, listing only (no file data is read), with the
/// writer accounting for every header. Returns (archive bytes, file data bytes, entries).
pub fn zip_plan(fs: &mut Filesystem, disk: &mut dyn ReadDisk, path: &str, root: &str) -> Result<(u64, u64, u64), JsValue> {
    let mut z = FolderZip::begin(fs, disk, path, root).map_err(vdi_err)?;
    let mut data = 0u64;
    loop {
        if let Some((e, at)) = z.current.as_mut() {
            // Account for the data without reading it: the sizes, not the CRCs, decide the layout.
            z.writer.account(e.size).map_err(zip_err)?;
            data += e.size;
            *at = e.size;
        }
        match z.next(fs, disk, &mut [])? {
            ZipPiece::End => return Ok((z.written(), data, z.entries())),
            ZipPiece::Meta(_) | ZipPiece::Data(_) => {}
        }
    }
}

#[wasm_bindgen]
impl Session {
    /// The partition table of the open disk and what each partition holds (JSON:
    /// `vdi fs --json`'s shape plus `disk-size`).
    pub fn partitions(&mut self) -> Result<String, JsValue> {
        let (disk, v) = self.disk_and_volume()?;
        let size = disk.virtual_size();
        let mut t = table_json(table(v, disk)?);
        t["disk-size"] = json!(size);
        Ok(t.to_string())
    }

    /// The entries of folder `path` of partition `number` (JSON `{path, entries}`). Opens the
    /// partition's filesystem when another is open.
    pub fn fs_list(&mut self, number: u32, path: &str) -> Result<String, JsValue> {
        let (disk, v) = self.disk_and_volume()?;
        let (fs, mut r) = fs_and_reader(v, disk, number)?;
        let entries = fs.list_path(&mut r, path).map_err(vdi_err)?;
        Ok(json!({ "path": path, "entries": entries.iter().map(entry_json).collect::<Vec<Value>>() }).to_string())
    }

    /// Open file `path` of partition `number` for reading; returns its entry (JSON).
    pub fn fs_file(&mut self, number: u32, path: &str) -> Result<String, JsValue> {
        let (disk, v) = self.disk_and_volume()?;
        let (fs, mut r) = fs_and_reader(v, disk, number)?;
        let e = fs.lookup(&mut r, path).map_err(vdi_err)?;
        if e.kind != EntryKind::File {
            return Err(js_error("not-a-file", format!("{path}: not a regular file")));
        }
        let out = entry_json(&e).to_string();
        v.file = Some((path.to_string(), e));
        Ok(out)
    }

    /// Read at most `len` bytes ([`CHUNK`]) of the file opened by [`Session::fs_file`] at
    /// `offset` into the transfer buffer; returns how many (0 at the end).
    pub fn fs_read(&mut self, offset: f64, len: u32) -> Result<u32, JsValue> {
        let len = (len as usize).min(CHUNK);
        self.ensure_transfer(len);
        let (disk, v, buf) = self.parts()?;
        let Volume { fs, file, cache, .. } = v;
        let (Some(fs), Some((_, e))) = (fs.as_mut(), file.as_ref()) else {
            return Err(js_error("invalid-argument", "no file is open for reading"));
        };
        let n = fs.read(&mut Cached { disk, cache }, e, offset as u64, &mut buf[..len]).map_err(vdi_err)?;
        Ok(n as u32)
    }

    /// Up to `len` bytes ([`MAX_PREVIEW`]) from the start of file `path`, as a copy.
    pub fn fs_head(&mut self, number: u32, path: &str, len: u32) -> Result<Vec<u8>, JsValue> {
        let (disk, v) = self.disk_and_volume()?;
        let (fs, mut r) = fs_and_reader(v, disk, number)?;
        let e = fs.lookup(&mut r, path).map_err(vdi_err)?;
        let mut out = vec![0u8; len.min(MAX_PREVIEW).min(u32::try_from(e.size).unwrap_or(u32::MAX)) as usize];
        let n = fs.read(&mut r, &e, 0, &mut out).map_err(vdi_err)?;
        out.truncate(n);
        Ok(out)
    }

    /// Where the bytes of `path` lie on the virtual disk: JSON `{entry, extents, complete}`
    /// (`complete` false when there were more than [`MAX_EXTENTS`]).
    pub fn fs_extents(&mut self, number: u32, path: &str) -> Result<String, JsValue> {
        let (disk, v) = self.disk_and_volume()?;
        let (fs, mut r) = fs_and_reader(v, disk, number)?;
        let r = &mut r;
        let e = fs.lookup(r, path).map_err(vdi_err)?;
        const ASK: usize = 4096;
        let mut all: Vec<FileExtent> = Vec::new();
        let mut from = 0u64;
        loop {
            let some = fs.extents(r, &e, from, ASK).map_err(vdi_err)?;
            let full = some.len() >= ASK;
            // An extent that began before `from` was given last time already.
            let first = all.is_empty();
            all.extend(some.into_iter().filter(|x| first || x.offset >= from));
            let end = all.last().map_or(from, |x| x.offset + x.len);
            if !full || end <= from || all.len() >= MAX_EXTENTS {
                break;
            }
            from = end;
        }
        let complete = all.len() < MAX_EXTENTS;
        Ok(json!({ "entry": entry_json(&e), "extents": extents_json(&all), "complete": complete }).to_string())
    }

    /// Start a `.zip` of folder `path` of partition `number` (its entries under `root` in
    /// the archive). Returns `{size, data, entries}`: the archive's exact size, the bytes of
    /// file data and the entries, from a walk that lists every folder once.
    pub fn zip_begin(&mut self, number: u32, path: &str, root: &str) -> Result<String, JsValue> {
        let (disk, v) = self.disk_and_volume()?;
        v.zip = None;
        let (fs, mut r) = fs_and_reader(v, disk, number)?;
        let (size, data, entries) = zip_plan(fs, &mut r, path, root)?;
        let z = FolderZip::begin(fs, &mut r, path, root).map_err(vdi_err)?;
        v.zip = Some(z);
        Ok(json!({ "size": size, "data": data, "entries": entries }).to_string())
    }

    /// The next piece of the archive, in the transfer buffer: its length (0 at the end).
    pub fn zip_next(&mut self) -> Result<u32, JsValue> {
        self.ensure_transfer(CHUNK);
        let (disk, v, buf) = self.parts()?;
        let Volume { fs, zip, cache, .. } = v;
        let (Some(fs), Some(z)) = (fs.as_mut(), zip.as_mut()) else {
            return Err(js_error("invalid-argument", "no archive is being written"));
        };
        match z.next(fs, &mut Cached { disk, cache }, &mut buf[..CHUNK])? {
            ZipPiece::Data(n) => Ok(n as u32),
            ZipPiece::Meta(m) => {
                buf[..m.len()].copy_from_slice(&m);
                Ok(m.len() as u32)
            }
            ZipPiece::End => Ok(0),
        }
    }

    /// `{written, data, entries, skipped}` of the archive being written.
    pub fn zip_status(&self) -> String {
        match self.volume.as_ref().and_then(|v| v.zip.as_ref()) {
            Some(z) => json!({ "written": z.written(), "data": z.data_done, "entries": z.entries(), "skipped": z.skipped }).to_string(),
            None => "null".into(),
        }
    }

    /// Drop the archive (finished or abandoned).
    pub fn zip_end(&mut self) {
        if let Some(v) = self.volume.as_mut() {
            v.zip = None;
        }
    }
}

impl Session {
    /// The open disk and the volume state kept beside it.
    fn disk_and_volume(&mut self) -> Result<(&mut dyn Disk, &mut Volume), JsValue> {
        let (disk, v, _) = self.parts()?;
        Ok((disk, v))
    }

    /// The open disk and its partition table (None when the table cannot be read: the
    /// hex view then labels the structures without naming the partition types).
    pub(crate) fn disk_and_table(&mut self) -> Result<(&mut dyn Disk, Option<&PartitionTable>), JsValue> {
        let (disk, v) = self.disk_and_volume()?;
        let ok = table(v, disk).is_ok();
        Ok((disk, if ok { v.table.as_ref() } else { None }))
    }

    /// The open disk, the volume state and the transfer buffer, borrowed together.
    fn parts(&mut self) -> Result<(&mut dyn Disk, &mut Volume, &mut [u8]), JsValue> {
        let opened = self.open.as_mut().ok_or_else(no_image)?;
        let v = self.volume.get_or_insert_with(Volume::default);
        Ok((opened.disk(), v, &mut self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ext4 filesystem made by mkfs.ext4 -d from `files` (folders end in '/'), then each
    /// (placeholder, name) of `renames` patched into its directory entry (same length).
    #[cfg(not(target_arch = "wasm32"))]
    fn ext4_of(tag: &str, files: &[(&str, Vec<u8>)], renames: &[(&str, &str)]) -> Vec<u8> {
        use std::process::Command;
        let dir = std::env::temp_dir().join(format!("vdi-volume-{tag}-{}", std::process::id()));
        let src = dir.join("src");
        for (p, d) in files {
            let at = src.join(p);
            if p.ends_with('/') {
                std::fs::create_dir_all(at).unwrap();
            } else {
                std::fs::write(at, d).unwrap();
            }
        }
        let img = dir.join("fs.img");
        std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
        let ok = Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(&img).status().expect("mkfs.ext4 runs");
        assert!(ok.success());
        let mut disk = std::fs::read(&img).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for (from, to) in renames {
            assert_eq!(from.len(), to.len());
            // A directory entry: the name's length, the file type, the name.
            let hit = |i: usize| disk[i..].starts_with(from.as_bytes()) && disk[i - 2] as usize == from.len();
            let at: Vec<usize> = (2..disk.len() - from.len()).filter(|&i| hit(i)).collect();
            assert_eq!(at.len(), 1, "{from} is in one directory entry");
            disk[at[0]..at[0] + to.len()].copy_from_slice(to.as_bytes());
        }
        disk
    }

    /// Folder `path` of the bare filesystem `disk` zipped piece by piece as the worker does,
    /// after the plan; checks the plan was the archive.
    #[cfg(not(target_arch = "wasm32"))]
    fn zip_folder(mut disk: Vec<u8>, path: &str, root: &str) -> (Vec<u8>, u64, FolderZip) {
        let disk = &mut disk;
        let table = PartitionTable::read(disk).unwrap();
        let part = table.select(None).unwrap().clone();
        let mut fs = Filesystem::open(disk, &part).unwrap();
        let (size, data, entries) = zip_plan(&mut fs, disk, path, root).unwrap();
        let mut z = FolderZip::begin(&mut fs, disk, path, root).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match z.next(&mut fs, disk, &mut buf).unwrap() {
                ZipPiece::Meta(m) => out.extend(m),
                ZipPiece::Data(n) => out.extend_from_slice(&buf[..n]),
                ZipPiece::End => break,
            }
        }
        assert_eq!(out.len() as u64, size, "the planned size is the archive's");
        assert_eq!(entries, z.entries());
        (out, data, z)
    }

    /// A folder of an ext4 filesystem made by mkfs.ext4 -d, zipped piece by piece as the
    /// worker does, then read back by Python's zipfile and unzip -t.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn a_folder_of_ext4_as_a_zip() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("docs/", vec![]),
            ("docs/a.txt", b"first file\n".to_vec()),
            ("docs/deeper/", vec![]),
            ("docs/deeper/big.bin", big),
            ("docs/deeper/empty", vec![]),
            ("docs/z.txt", b"last".to_vec()),
            ("outside.txt", b"not in the zip".to_vec()),
        ];
        let disk = ext4_of("ext4", &files, &[]);
        let (out, data, z) = zip_folder(disk, "/docs", "docs");
        assert_eq!(data, 200_000 + 11 + 4);
        assert_eq!(z.entries(), 5, "everything under /docs but the folder itself");
        crate::zip::tests::check_with_tools(&out, &files[1..6], "ext4", false);
    }

    /// Names an image may hold that would leave the user's unzip folder ("../evil", "/abs",
    /// "a\\b" for Windows) or that no unzip keeps (NUL) are left out and reported, the rest
    /// zipped; ".." entries beyond the real one are not listed by the reader at all.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn hostile_names_are_left_out_of_the_zip() {
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("docs/", vec![]),
            ("docs/ok.txt", b"kept".to_vec()),
            ("docs/AAxevil", b"1".to_vec()),
            ("docs/BBBBBBBB", b"2".to_vec()),
            ("docs/CCC", b"3".to_vec()),
            ("docs/DD", b"4".to_vec()),
            ("docs/EEEE/", vec![]),
            ("docs/EEEE/inner", b"5".to_vec()),
            ("docs/sub/", vec![]),
            ("docs/sub/FFFFF", b"6".to_vec()),
        ];
        let renames = [("AAxevil", "../evil"), ("BBBBBBBB", "nul\0name"), ("CCC", "a\\b"), ("DD", ".."), ("EEEE", "/abs"), ("FFFFF", "..\\up")];
        let disk = ext4_of("hostile", &files, &renames);
        let (out, data, z) = zip_folder(disk, "/docs", "docs");
        let mut skipped = z.skipped.clone();
        skipped.sort();
        assert_eq!(skipped, [r#"docs/"../evil""#, r#"docs/"/abs""#, r#"docs/"a\\b""#, r#"docs/"nul\0name""#, r#"docs/sub/"..\\up""#]);
        assert_eq!(data, 4, "only ok.txt's bytes");
        let want: Vec<(&str, Vec<u8>)> = vec![("docs/ok.txt", b"kept".to_vec()), ("docs/sub/", vec![])];
        crate::zip::tests::check_with_tools(&out, &want, "hostile", false);
    }

    #[test]
    fn join_paths() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/docs", "a"), "/docs/a");
        assert_eq!(join("/docs/", "a"), "/docs/a");
    }
}
