//! Native file storage for the engine.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use vdi::{ReadAt, Storage, StorageError};

/// A native file as engine storage (positioned I/O, no shared cursor).
#[derive(Debug)]
pub struct FileStorage {
    file: File,
}

/// The error with its kind kept; a disk quota exceeded (EDQUOT, which std names only from
/// Rust 1.85) is a full disk too.
fn err(e: io::Error) -> StorageError {
    let quota = rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::DQUOT);
    let mut s = StorageError::from(e);
    if quota {
        s.kind = io::ErrorKind::StorageFull;
    }
    s
}

impl FileStorage {
    /// Open read-only.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(FileStorage { file: File::open(path)? })
    }
    /// Open for reading and writing.
    pub fn open_rw(path: &Path) -> io::Result<Self> {
        Ok(FileStorage { file: OpenOptions::new().read(true).write(true).open(path)? })
    }
    /// Create (or truncate) for reading and writing.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(FileStorage { file: OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)? })
    }
    /// Wrap an open file.
    pub fn from_file(file: File) -> Self {
        FileStorage { file }
    }
    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl ReadAt for FileStorage {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.file.read_exact_at(buf, offset).map_err(err)
    }
    fn len(&self) -> Result<u64, StorageError> {
        self.file.metadata().map(|m| m.len()).map_err(err)
    }
    /// From the file's holes (`SEEK_DATA`, then `SEEK_HOLE`). Moves the file cursor, which
    /// nothing here uses (all I/O is positioned). A file system that cannot tell answers
    /// "all data".
    fn next_data(&self, offset: u64) -> Result<Option<(u64, u64)>, StorageError> {
        use rustix::fs::{seek, SeekFrom};
        let len = self.len()?;
        if offset >= len {
            return Ok(None);
        }
        let start = match seek(&self.file, SeekFrom::Data(offset)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => return Ok(None), // only a hole from here on
            Err(_) => return Ok(Some((offset, len))),
        };
        match seek(&self.file, SeekFrom::Hole(start)) {
            Ok(end) if start < end => Ok(Some((start, end.min(len)))),
            _ => Ok(Some((offset, len))),
        }
    }
}

impl Storage for FileStorage {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        self.file.write_all_at(buf, offset).map_err(err)
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        self.file.set_len(len).map_err(err)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_data_skips_holes_where_the_file_system_knows_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.raw");
        let mut f = FileStorage::create(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_at(3 << 20, &[1u8; 4096]).unwrap();
        let (start, end) = f.next_data(0).unwrap().expect("the written bytes are data");
        assert!(start <= 3 << 20 && ((3 << 20) + 4096..=8 << 20).contains(&end), "{start}..{end}");
        let (s2, _) = f.next_data((3 << 20) + 100).unwrap().unwrap();
        assert!(s2 <= (3 << 20) + 100);
        // Past the last data: nothing (or, where holes are unknown, the rest of the file).
        if let Some((a, b)) = f.next_data((6 << 20) + 1).unwrap() {
            assert!(a > (6 << 20) && b <= 8 << 20, "{a}..{b}");
        }
        assert_eq!(f.next_data(8 << 20).unwrap(), None);
    }

    #[test]
    fn errors_keep_their_io_kind() {
        let e = err(io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()));
        assert!(e.is_no_space() && !e.past_end, "{e:?}");
        let e = err(io::Error::from_raw_os_error(rustix::io::Errno::DQUOT.raw_os_error()));
        assert!(e.is_no_space(), "{e:?}");
        let e = err(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(e.past_end && e.kind == io::ErrorKind::UnexpectedEof, "{e:?}");
        let e = err(io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error()));
        assert_eq!(e.kind, io::ErrorKind::PermissionDenied);
        // A read past the end of a real file.
        let dir = tempfile::tempdir().unwrap();
        let f = FileStorage::create(&dir.path().join("short")).unwrap();
        let e = f.read_at(0, &mut [0u8; 4]).unwrap_err();
        assert!(e.past_end, "{e:?}");
    }
}
