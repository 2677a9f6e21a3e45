//! A streaming `.zip` writer for "download a folder": entries are stored (no compression),
//! each file's CRC-32 is computed as its bytes go by, and a data descriptor after the data
//! carries the CRC and sizes, so nothing is ever sought back to. The writer only makes the
//! bytes around the data (headers, descriptors, the central directory); the caller writes
//! the file bytes themselves straight from where they were read, and calls [`ZipWriter::data`]
//! with them. What it keeps is the central directory (about 60 bytes and the name per
//! entry), never a file.
//!
//! ZIP64 (APPNOTE 6.3.10, 4.3.9, 4.5.3): an entry whose size is 4 GiB or more (declared
//! when it begins) gets a ZIP64 extra field and 8-byte sizes in its descriptor; an entry
//! starting at 4 GiB or later has its offset in a ZIP64 extra of the central directory; and
//! more than 65535 entries, or a directory at or past 4 GiB, end the archive with the ZIP64
//! end record and locator.

use std::fmt;

use vdi::crc32::Crc32;

const LOCAL: u32 = 0x0403_4b50;
const DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const END: u32 = 0x0605_4b50;
const END64: u32 = 0x0606_4b50;
const LOCATOR64: u32 = 0x0706_4b50;
/// Bit 3: sizes and CRC in a data descriptor; bit 11: the name is UTF-8.
const FLAGS_FILE: u16 = (1 << 3) | (1 << 11);
const FLAGS_DIR: u16 = 1 << 11;
/// 2.0 (stored, folders); 4.5 (ZIP64).
const VERSION: u16 = 20;
const VERSION64: u16 = 45;
/// Made by: Unix (3), spec 4.5 — so the external attributes carry Unix modes.
const MADE_BY: u16 = (3 << 8) | 45;
const MAX32: u64 = 0xFFFF_FFFF;
/// Most entries of one archive: the central directory is kept in memory until the end.
pub const MAX_ENTRIES: u64 = 4_000_000;

/// Why an entry cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipError(String);

impl fmt::Display for ZipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ZipError {}

impl ZipError {
    /// The stable kind the page sees.
    pub fn kind(&self) -> &'static str {
        "zip"
    }
}

fn err(m: impl Into<String>) -> ZipError {
    ZipError(m.into())
}

/// The file being written.
#[derive(Debug)]
struct Current {
    name: Vec<u8>,
    dos: (u16, u16),
    mtime: Option<u32>,
    offset: u64,
    zip64: bool,
    crc: Crc32,
    size: u64,
    declared: u64,
}

/// The writer (see the module docs).
#[derive(Debug, Default)]
pub struct ZipWriter {
    offset: u64,
    central: Vec<u8>,
    entries: u64,
    current: Option<Current>,
    finished: bool,
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// Seconds since 1970 (UTC) as an MS-DOS (time, date); before 1980 is 1980-01-01.
pub fn dos_time(secs: i64) -> (u16, u16) {
    let secs = secs.max(315_532_800); // 1980-01-01
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + i64::from(month <= 2)).min(2107);
    let time = ((rem / 3600) << 11) | (((rem % 3600) / 60) << 5) | ((rem % 60) / 2);
    let date = ((year - 1980) << 9) | (month << 5) | day;
    (time as u16, date as u16)
}

impl ZipWriter {
    /// An empty archive.
    pub fn new() -> ZipWriter {
        ZipWriter::default()
    }

    /// Bytes of the archive made so far (headers, data, descriptors).
    pub fn written(&self) -> u64 {
        self.offset
    }

    /// Entries added so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn check_name(&self, path: &str) -> Result<Vec<u8>, ZipError> {
        if self.current.is_some() {
            return Err(err("the previous file of the archive is not finished"));
        }
        if self.finished {
            return Err(err("the archive is finished already"));
        }
        if self.entries >= MAX_ENTRIES {
            return Err(err(format!("an archive holds at most {MAX_ENTRIES} entries")));
        }
        let bad = path.is_empty()
            || path.starts_with('/')
            || path.contains('\\')
            || path.contains('\0')
            || path.split('/').any(|c| c == ".." || c == ".");
        if bad {
            return Err(err(format!("{path:?} is not a relative path of the archive")));
        }
        if path.len() > 0xFFFF {
            return Err(err(format!("a name of {} bytes is longer than a zip entry's 65535", path.len())));
        }
        Ok(path.as_bytes().to_vec())
    }

    /// The extended-timestamp extra field (0x5455: modification time, Unix seconds).
    fn time_extra(v: &mut Vec<u8>, mtime: Option<u32>) {
        if let Some(t) = mtime {
            put16(v, 0x5455);
            put16(v, 5);
            v.push(1);
            put32(v, t);
        }
    }

    fn local_header(&mut self, name: &[u8], flags: u16, dos: (u16, u16), mtime: Option<u32>, zip64: bool) -> Vec<u8> {
        let mut v = Vec::with_capacity(30 + name.len() + 29);
        put32(&mut v, LOCAL);
        put16(&mut v, if zip64 { VERSION64 } else { VERSION });
        put16(&mut v, flags);
        put16(&mut v, 0); // stored
        put16(&mut v, dos.0);
        put16(&mut v, dos.1);
        put32(&mut v, 0); // CRC, sizes: in the descriptor (a folder's are zero)
        put32(&mut v, if zip64 { MAX32 as u32 } else { 0 });
        put32(&mut v, if zip64 { MAX32 as u32 } else { 0 });
        put16(&mut v, name.len() as u16);
        let extra = if zip64 { 20 } else { 0 } + if mtime.is_some() { 9 } else { 0 };
        put16(&mut v, extra);
        v.extend_from_slice(name);
        if zip64 {
            put16(&mut v, 0x0001);
            put16(&mut v, 16);
            put64(&mut v, 0);
            put64(&mut v, 0);
        }
        Self::time_extra(&mut v, mtime);
        self.offset += v.len() as u64;
        v
    }

    #[allow(clippy::too_many_arguments)]
    fn central_entry(&mut self, name: &[u8], flags: u16, dos: (u16, u16), mtime: Option<u32>, crc: u32, size: u64, offset: u64, attrs: u32, zip64: bool) {
        let big_size = zip64 || size >= MAX32;
        let big_off = offset >= MAX32;
        let mut z64 = Vec::new();
        if big_size {
            put64(&mut z64, size);
            put64(&mut z64, size);
        }
        if big_off {
            put64(&mut z64, offset);
        }
        let v = &mut self.central;
        put32(v, CENTRAL);
        put16(v, MADE_BY);
        put16(v, if big_size || big_off { VERSION64 } else { VERSION });
        put16(v, flags);
        put16(v, 0);
        put16(v, dos.0);
        put16(v, dos.1);
        put32(v, crc);
        let s = if big_size { MAX32 as u32 } else { size as u32 };
        put32(v, s);
        put32(v, s);
        put16(v, name.len() as u16);
        let extra = if z64.is_empty() { 0 } else { 4 + z64.len() } + if mtime.is_some() { 9 } else { 0 };
        put16(v, extra as u16);
        put16(v, 0); // comment
        put16(v, 0); // disk
        put16(v, 0); // internal attributes
        put32(v, attrs);
        put32(v, if big_off { MAX32 as u32 } else { offset as u32 });
        v.extend_from_slice(name);
        if !z64.is_empty() {
            put16(v, 0x0001);
            put16(v, z64.len() as u16);
            v.extend_from_slice(&z64);
        }
        Self::time_extra(v, mtime);
        self.entries += 1;
    }

    /// A folder `path` (written with a trailing '/'): its local header, the whole entry.
    pub fn directory(&mut self, path: &str, mtime: Option<i64>) -> Result<Vec<u8>, ZipError> {
        let mut name = self.check_name(path.trim_end_matches('/'))?;
        name.push(b'/');
        let dos = dos_time(mtime.unwrap_or(0));
        let mt = mtime.and_then(|t| u32::try_from(t).ok());
        let offset = self.offset;
        let head = self.local_header(&name, FLAGS_DIR, dos, mt, false);
        // drwxr-xr-x, and the MS-DOS directory bit.
        self.central_entry(&name, FLAGS_DIR, dos, mt, 0, 0, offset, (0o040_755 << 16) | 0x10, false);
        Ok(head)
    }

    /// Begin the file `path` of `size` bytes (as declared: 4 GiB or more makes it a ZIP64
    /// entry): returns its local header. Then [`ZipWriter::data`] for its bytes, and
    /// [`ZipWriter::end_file`].
    pub fn begin_file(&mut self, path: &str, size: u64, mtime: Option<i64>) -> Result<Vec<u8>, ZipError> {
        let name = self.check_name(path)?;
        let dos = dos_time(mtime.unwrap_or(0));
        let mt = mtime.and_then(|t| u32::try_from(t).ok());
        let zip64 = size >= MAX32;
        let offset = self.offset;
        let head = self.local_header(&name, FLAGS_FILE, dos, mt, zip64);
        self.current = Some(Current { name, dos, mtime: mt, offset, zip64, crc: Crc32::new(), size: 0, declared: size });
        Ok(head)
    }

    /// `bytes` of the current file, as they are written by the caller.
    pub fn data(&mut self, bytes: &[u8]) -> Result<(), ZipError> {
        let c = self.current.as_mut().ok_or_else(|| err("no file of the archive is open"))?;
        c.size += bytes.len() as u64;
        if !c.zip64 && c.size >= MAX32 {
            return Err(err(format!("the file was declared {} bytes long and grew past 4 GiB", c.declared)));
        }
        c.crc.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Count `n` bytes of the current file without having them: sizing an archive before
    /// writing it (its layout depends on the sizes, never on the CRCs).
    pub fn account(&mut self, n: u64) -> Result<(), ZipError> {
        let c = self.current.as_mut().ok_or_else(|| err("no file of the archive is open"))?;
        c.size += n;
        self.offset += n;
        Ok(())
    }

    /// End the current file: its data descriptor (the CRC and sizes).
    pub fn end_file(&mut self) -> Result<Vec<u8>, ZipError> {
        let c = self.current.take().ok_or_else(|| err("no file of the archive is open"))?;
        let crc = c.crc.finish();
        let mut v = Vec::with_capacity(24);
        put32(&mut v, DESCRIPTOR);
        put32(&mut v, crc);
        if c.zip64 {
            put64(&mut v, c.size);
            put64(&mut v, c.size);
        } else {
            put32(&mut v, c.size as u32);
            put32(&mut v, c.size as u32);
        }
        self.offset += v.len() as u64;
        // -rw-r--r--
        self.central_entry(&c.name, FLAGS_FILE, c.dos, c.mtime, crc, c.size, c.offset, 0o100_644 << 16, c.zip64);
        Ok(v)
    }

    /// The end of the archive: the central directory and the end records. Nothing can be
    /// added after it ([`ZipWriter::written`] is then the archive's size).
    pub fn finish(&mut self) -> Result<Vec<u8>, ZipError> {
        if self.current.is_some() {
            return Err(err("the last file of the archive is not finished"));
        }
        if self.finished {
            return Err(err("the archive is finished already"));
        }
        self.finished = true;
        let cd_offset = self.offset;
        let cd_size = self.central.len() as u64;
        let mut v = std::mem::take(&mut self.central);
        let zip64 = self.entries > 0xFFFF || cd_offset >= MAX32 || cd_size >= MAX32;
        if zip64 {
            let end64 = cd_offset + cd_size;
            put32(&mut v, END64);
            put64(&mut v, 44); // size of the rest of this record
            put16(&mut v, MADE_BY);
            put16(&mut v, VERSION64);
            put32(&mut v, 0);
            put32(&mut v, 0);
            put64(&mut v, self.entries);
            put64(&mut v, self.entries);
            put64(&mut v, cd_size);
            put64(&mut v, cd_offset);
            put32(&mut v, LOCATOR64);
            put32(&mut v, 0);
            put64(&mut v, end64);
            put32(&mut v, 1);
        }
        let n = if zip64 { 0xFFFF } else { self.entries as u16 };
        put32(&mut v, END);
        put16(&mut v, 0);
        put16(&mut v, 0);
        put16(&mut v, n);
        put16(&mut v, n);
        put32(&mut v, if zip64 { MAX32 as u32 } else { cd_size as u32 });
        put32(&mut v, if zip64 { MAX32 as u32 } else { cd_offset as u32 });
        put16(&mut v, 0);
        self.offset += v.len() as u64;
        Ok(v)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An archive of `files` (path, bytes; a path ending in '/' is a folder), each file's
    /// bytes fed in pieces of `piece`.
    #[cfg(not(target_arch = "wasm32"))]
    fn archive(files: &[(&str, Vec<u8>)], piece: usize, force64: bool) -> Vec<u8> {
        let mut z = ZipWriter::new();
        let mut out = Vec::new();
        for (path, data) in files {
            if path.ends_with('/') {
                out.extend(z.directory(path, Some(1_700_000_000)).unwrap());
                continue;
            }
            let declared = if force64 { MAX32 } else { data.len() as u64 };
            out.extend(z.begin_file(path, declared, Some(1_700_000_000)).unwrap());
            for p in data.chunks(piece.max(1)) {
                z.data(p).unwrap();
                out.extend_from_slice(p);
            }
            out.extend(z.end_file().unwrap());
        }
        assert_eq!(z.written(), out.len() as u64);
        out.extend(z.finish().unwrap());
        out
    }

    #[test]
    fn dos_times() {
        // 2023-11-14 22:13:20 UTC.
        assert_eq!(dos_time(1_700_000_000), ((22 << 11) | (13 << 5) | 10, ((2023 - 1980) << 9) | (11 << 5) | 14));
        assert_eq!(dos_time(0), (0, (1 << 5) | 1), "before 1980 is 1980-01-01");
        assert_eq!(dos_time(951_782_400).1, ((2000 - 1980) << 9) | (2 << 5) | 29, "2000-02-29");
    }

    #[test]
    fn refuses_bad_names_and_misuse() {
        let mut z = ZipWriter::new();
        for bad in ["", "/abs", "a/../b", "a\\b", "./x"] {
            assert!(z.begin_file(bad, 1, None).is_err(), "{bad:?}");
        }
        assert!(z.data(b"x").is_err(), "no file open");
        z.begin_file("a", 1, None).unwrap();
        assert!(z.begin_file("b", 1, None).is_err(), "one file at a time");
        z.data(b"x").unwrap();
        z.end_file().unwrap();
        assert_eq!(z.entries(), 1);
    }

    /// The archive checked by the reference readers: Python's zipfile (every entry's bytes
    /// and CRC) and `unzip -t`.
    #[cfg(not(target_arch = "wasm32"))]
    /// `dated`: every file is dated 2023-11-14 22:13:20 (the tests' `archive`).
    pub(crate) fn check_with_tools(bytes: &[u8], files: &[(&str, Vec<u8>)], tag: &str, dated: bool) {
        use std::process::Command;
        let dir = std::env::temp_dir().join(format!("vdi-zip-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let zip = dir.join("a.zip");
        std::fs::write(&zip, bytes).unwrap();
        let manifest: String = files
            .iter()
            .map(|(p, d)| format!("{p}\t{}\n", if p.ends_with('/') { "dir".into() } else { format!("{:08x}", vdi::crc32::crc32(d)) }))
            .collect();
        std::fs::write(dir.join("want.txt"), manifest).unwrap();
        let py = r#"
import sys, zipfile, zlib
want = [l.split('\t') for l in open(sys.argv[2]).read().splitlines()]
with zipfile.ZipFile(sys.argv[1]) as z:
    assert z.testzip() is None
    infos = z.infolist()
    assert sorted(i.filename for i in infos) == sorted(w[0] for w in want), (sorted(i.filename for i in infos)[:9], sorted(w[0] for w in want)[:9])
    by_name = {i.filename: i for i in infos}
    for name, crc in want:
        i = by_name[name]
        if crc == 'dir':
            assert i.is_dir(), name
        else:
            assert '%08x' % zlib.crc32(z.read(i)) == crc, name
            assert sys.argv[3] == '-' or i.date_time == (2023, 11, 14, 22, 13, 20), i.date_time
print(len(infos))
"#;
        let out = Command::new("python3").arg("-c").arg(py).arg(&zip).arg(dir.join("want.txt")).arg(if dated { "dated" } else { "-" }).output().expect("python3 runs");
        assert!(out.status.success(), "python zipfile: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), files.len().to_string());
        let out = Command::new("unzip").arg("-tqq").arg(&zip).output().expect("unzip runs");
        assert!(out.status.success(), "unzip -t: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn sample_files() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("docs/", vec![]),
            ("docs/readme.md", b"# hello\n".to_vec()),
            ("empty.txt", vec![]),
            ("data/big.bin", (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
            ("name with ünïcödé.txt", b"utf-8 names".to_vec()),
        ]
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn read_back_by_python_and_unzip() {
        let files = sample_files();
        check_with_tools(&archive(&files, 4096, false), &files, "plain", true);
        check_with_tools(&archive(&files, 7, false), &files, "small-pieces", true);
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn zip64_entries_read_back() {
        // Entries declared 4 GiB or more take ZIP64 extras and 8-byte descriptors.
        let files = sample_files();
        let bytes = archive(&files, 4096, true);
        check_with_tools(&bytes, &files, "zip64-entries", true);
        let at = bytes.windows(14).position(|w| w == b"docs/readme.md").unwrap() - 30;
        let head = &bytes[at..at + 30];
        assert_eq!(u16::from_le_bytes([head[4], head[5]]), VERSION64);
        assert_eq!(&head[18..26], &[0xFF; 8], "sizes in the ZIP64 extra");
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn more_than_65535_entries_end_with_zip64_records() {
        let names: Vec<String> = (0..70_000).map(|i| format!("f/{i}")).collect();
        let files: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (n.as_str(), vec![])).collect();
        let bytes = archive(&files, 1, false);
        let tail = &bytes[bytes.len() - 22 - 20 - 56..];
        assert_eq!(u32::from_le_bytes(tail[..4].try_into().unwrap()), END64);
        check_with_tools(&bytes, &files, "many", true);
    }
}
