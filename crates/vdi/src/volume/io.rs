//! Reading inside a disk: a byte range of it (a partition) read through any [`Disk`],
//! little helpers for on-disk integers, and CRC-32 (GPT).

use crate::disk::Disk;
use crate::error::Result;
use crate::volume::VolumeError;

/// What the readers need of a disk: positioned reads and its size. Implemented for every
/// [`Disk`] (through [`DiskReader`]), and by tests and fuzz targets over plain bytes.
pub trait ReadDisk {
    /// Read `buf.len()` bytes at `offset` of the disk.
    fn read_disk(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Bytes of the disk.
    fn disk_size(&self) -> u64;
}

/// Any [`Disk`] (sized or not, e.g. `dyn DiskMut`) as a [`ReadDisk`].
pub struct DiskReader<'a, D: Disk + ?Sized>(pub &'a mut D);

impl<D: Disk + ?Sized> ReadDisk for DiskReader<'_, D> {
    fn read_disk(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.0.read_at(offset, buf)
    }
    fn disk_size(&self) -> u64 {
        self.0.virtual_size()
    }
}

/// Plain bytes as a disk (tests, fuzzing, a raw image held in memory).
impl ReadDisk for [u8] {
    fn read_disk(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let size = self.len() as u64;
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= size);
        match end {
            Some(end) => {
                buf.copy_from_slice(&self[offset as usize..end as usize]);
                Ok(())
            }
            None => Err(crate::VdiError::OutOfRange { op: "read", offset, len: buf.len() as u64, size }),
        }
    }
    fn disk_size(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadDisk for Vec<u8> {
    fn read_disk(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.as_mut_slice().read_disk(offset, buf)
    }
    fn disk_size(&self) -> u64 {
        self.len() as u64
    }
}

/// A byte range of the disk (a partition, or the whole disk): reads are checked against
/// its end, and a read past it is a damaged structure of `fs` (an on-disk pointer led
/// there), never a read of the neighbouring partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: u64,
    pub size: u64,
    pub fs: &'static str,
}

impl Span {
    pub fn read(&self, disk: &mut dyn ReadDisk, offset: u64, buf: &mut [u8], what: &dyn Fn() -> String) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(VolumeError::damaged(
                self.fs,
                what(),
                format!("{} bytes at offset {offset} lie past the end of the {}-byte filesystem", buf.len(), self.size),
            )
            .into());
        }
        disk.read_disk(self.start + offset, buf)
    }

    /// A zero-filled buffer of `len` bytes read at `offset` (`len` already bounded).
    pub fn vec(&self, disk: &mut dyn ReadDisk, offset: u64, len: usize, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read(disk, offset, &mut v, what)?;
        Ok(v)
    }
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Text of a fixed-size, NUL- or space-padded field (labels).
pub(crate) fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim_end().to_string()
}

/// UTF-16LE text up to the first NUL (GPT names, exFAT and NTFS names).
pub(crate) fn utf16le(b: &[u8]) -> String {
    let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_refuses_reads_past_its_end() {
        let mut disk = vec![7u8; 100];
        let span = Span { start: 10, size: 50, fs: "ext4" };
        let mut buf = [0u8; 8];
        span.read(&mut disk, 42, &mut buf, &|| "here".into()).unwrap();
        let e = span.read(&mut disk, 43, &mut buf, &|| "inode 5".into()).unwrap_err();
        assert_eq!(e.kind(), "damaged");
        assert!(e.to_string().contains("inode 5"), "{e}");
    }
}
