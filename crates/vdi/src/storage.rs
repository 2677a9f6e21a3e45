//! Positioned storage: the only way the engine touches bytes.
//!
//! [`ReadAt`] is the read-only half (a dropped browser `File` implements only this);
//! [`Storage`] adds writing. The engine never assumes a file system, a clock or threads.

use crate::error::{Result, StorageError, VdiError};

/// Read-only positioned storage.
pub trait ReadAt {
    /// Fill `buf` with the bytes at `offset`. Reading past the end is an error
    /// ([`StorageError::past_end`]); a backend never invents bytes.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError>;
    /// Current length in bytes.
    fn len(&self) -> Result<u64, StorageError>;
    /// True when the storage holds no bytes.
    fn is_empty(&self) -> Result<bool, StorageError> {
        Ok(self.len()? == 0)
    }
    /// The next range at or after `offset` that may hold non-zero bytes, as `(start, end)`
    /// with `offset <= start < end <= len`, or `None` when everything from `offset` on reads
    /// as zeros. A sparse file answers from its holes (`SEEK_DATA`/`SEEK_HOLE`), so an import
    /// need not read gigabytes of zeros; the default claims everything may be data. Only a
    /// hint: bytes outside the answer must read as zeros, bytes inside may be zeros too.
    fn next_data(&self, offset: u64) -> Result<Option<(u64, u64)>, StorageError> {
        let len = self.len()?;
        Ok((offset < len).then_some((offset, len)))
    }
}

/// Read-write positioned storage.
pub trait Storage: ReadAt {
    /// Write all of `buf` at `offset`, growing the storage if needed (a gap reads as zeros).
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError>;
    /// Truncate or extend (with zeros) to `len` bytes.
    fn set_len(&mut self, len: u64) -> Result<(), StorageError>;
    /// Make written data durable.
    fn flush(&mut self) -> Result<(), StorageError>;
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        (**self).read_at(offset, buf)
    }
    fn len(&self) -> Result<u64, StorageError> {
        (**self).len()
    }
    fn next_data(&self, offset: u64) -> Result<Option<(u64, u64)>, StorageError> {
        (**self).next_data(offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &mut T {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        (**self).read_at(offset, buf)
    }
    fn len(&self) -> Result<u64, StorageError> {
        (**self).len()
    }
    fn next_data(&self, offset: u64) -> Result<Option<(u64, u64)>, StorageError> {
        (**self).next_data(offset)
    }
}

impl<T: Storage + ?Sized> Storage for &mut T {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        (**self).write_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        (**self).set_len(len)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        (**self).flush()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        (**self).read_at(offset, buf)
    }
    fn len(&self) -> Result<u64, StorageError> {
        (**self).len()
    }
    fn next_data(&self, offset: u64) -> Result<Option<(u64, u64)>, StorageError> {
        (**self).next_data(offset)
    }
}

impl<T: Storage + ?Sized> Storage for Box<T> {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        (**self).write_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        (**self).set_len(len)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        (**self).flush()
    }
}

/// In-memory storage over a `Vec<u8>`: what unit tests, fuzzing and small browser images use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemStorage {
    data: Vec<u8>,
}

impl MemStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }
    /// Storage holding `data`.
    pub fn from_vec(data: Vec<u8>) -> Self {
        MemStorage { data }
    }
    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }
    /// Give the bytes back.
    pub fn into_vec(self) -> Vec<u8> {
        self.data
    }
}

impl ReadAt for MemStorage {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let size = self.data.len() as u64;
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= size);
        match end {
            Some(end) => {
                buf.copy_from_slice(&self.data[offset as usize..end as usize]);
                Ok(())
            }
            None => Err(StorageError::past_end(offset, buf.len() as u64, size)),
        }
    }
    fn len(&self) -> Result<u64, StorageError> {
        Ok(self.data.len() as u64)
    }
}

impl Storage for MemStorage {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .and_then(|e| usize::try_from(e).ok())
            .ok_or_else(|| StorageError::new(format!("write at {offset} does not fit in memory")))?;
        if end > self.data.len() {
            self.data.resize(end, 0);
        }
        self.data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        let len = usize::try_from(len).map_err(|_| StorageError::new(format!("length {len} does not fit in memory")))?;
        self.data.resize(len, 0);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Read `buf.len()` bytes at `offset`, wrapping a failure with its position.
pub(crate) fn read_exact<S: ReadAt + ?Sized>(s: &S, offset: u64, buf: &mut [u8]) -> Result<()> {
    s.read_at(offset, buf)
        .map_err(|source| VdiError::Io { op: "read", offset, len: buf.len() as u64, source })
}

/// Write all of `buf` at `offset`, wrapping a failure with its position.
pub(crate) fn write_all<S: Storage + ?Sized>(s: &mut S, offset: u64, buf: &[u8]) -> Result<()> {
    s.write_at(offset, buf)
        .map_err(|source| VdiError::Io { op: "write", offset, len: buf.len() as u64, source })
}

/// The storage's length, wrapping a failure.
pub(crate) fn storage_len<S: ReadAt + ?Sized>(s: &S) -> Result<u64> {
    s.len().map_err(|source| VdiError::Io { op: "len", offset: 0, len: 0, source })
}

/// Set the storage's length, wrapping a failure.
pub(crate) fn set_len<S: Storage + ?Sized>(s: &mut S, len: u64) -> Result<()> {
    s.set_len(len).map_err(|source| VdiError::Io { op: "set_len", offset: len, len: 0, source })
}

/// The next data range of the storage at or after `offset` (see [`ReadAt::next_data`]),
/// wrapping a failure; an answer that breaks the contract is replaced by "all data".
pub(crate) fn next_data<S: ReadAt + ?Sized>(s: &S, offset: u64, len: u64) -> Result<Option<(u64, u64)>> {
    let r = s.next_data(offset).map_err(|source| VdiError::Io { op: "find data", offset, len: 0, source })?;
    Ok(match r {
        None => None,
        Some((a, b)) if offset <= a && a < b && b <= len => Some((a, b)),
        Some(_) => (offset < len).then_some((offset, len)),
    })
}

/// Flush, wrapping a failure.
pub(crate) fn flush<S: Storage + ?Sized>(s: &mut S) -> Result<()> {
    s.flush().map_err(|source| VdiError::Io { op: "flush", offset: 0, len: 0, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_reads_exactly_or_fails() {
        let mut m = MemStorage::new();
        m.write_at(4, b"abcd").unwrap();
        assert_eq!(m.len().unwrap(), 8);
        let mut b = [0u8; 4];
        m.read_at(0, &mut b).unwrap();
        assert_eq!(b, [0, 0, 0, 0]);
        m.read_at(4, &mut b).unwrap();
        assert_eq!(&b, b"abcd");
        let e = m.read_at(6, &mut b).unwrap_err();
        assert!(e.past_end);
        let e = m.read_at(u64::MAX - 1, &mut b).unwrap_err();
        assert!(e.past_end);
        m.set_len(2).unwrap();
        assert_eq!(m.as_slice(), &[0, 0]);
    }
}
