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

fn err(e: io::Error) -> StorageError {
    StorageError { past_end: e.kind() == io::ErrorKind::UnexpectedEof, message: e.to_string() }
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
