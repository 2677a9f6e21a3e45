//! A raw disk file as a [`Disk`]: blocks the file's holes ([`ReadAt::next_data`]) say are
//! unwritten are free, the others are data. What `vdi convert` walks for a raw input.

use crate::disk::{Block, Disk};
use crate::error::{Result, VdiError};
use crate::storage::{next_data, read_exact, storage_len, ReadAt};

/// Block size of a raw disk: the smallest allocation unit of the formats written (a qcow2
/// cluster, a VMDK grain), so no unit is stored for a hole.
pub const RAW_BLOCK: u64 = 64 * 1024;

/// A raw file seen as a disk of [`RAW_BLOCK`] blocks (the last may be partial).
#[derive(Debug)]
pub struct RawDisk<R: ReadAt> {
    storage: R,
    len: u64,
    /// The last question asked of the file's holes and its answer: from `.0` on, the next
    /// data range (None: no data from there on).
    data: Option<(u64, Option<(u64, u64)>)>,
}

impl<R: ReadAt> RawDisk<R> {
    /// Wrap `storage` (its length is the disk's size).
    pub fn new(storage: R) -> Result<Self> {
        let len = storage_len(&storage)?;
        Ok(RawDisk { storage, len, data: None })
    }

    /// The storage.
    pub fn into_storage(self) -> R {
        self.storage
    }
}

impl<R: ReadAt> Disk for RawDisk<R> {
    fn virtual_size(&self) -> u64 {
        self.len
    }
    fn block_size(&self) -> u64 {
        RAW_BLOCK
    }
    fn block(&mut self, b: u64) -> Result<Block> {
        let (start, end) = (b * RAW_BLOCK, ((b + 1) * RAW_BLOCK).min(self.len));
        if start >= self.len {
            return Err(VdiError::InvalidArgument(format!("block {b} is past the end of the raw disk")));
        }
        let answer = match self.data {
            Some((q, d)) if q <= start && d.is_none_or(|(_, z)| start < z) => d,
            _ => {
                let d = next_data(&self.storage, start, self.len)?;
                self.data = Some((start, d));
                d
            }
        };
        Ok(if answer.is_some_and(|(a, z)| a < end && z > start) { Block::Data { layer: 0, host: start } } else { Block::Free })
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        read_exact(&self.storage, offset, buf)
    }
    fn read_host(&mut self, layer: usize, host: u64, buf: &mut [u8]) -> Result<()> {
        if layer != 0 {
            return Err(VdiError::InvalidArgument(format!("a raw disk has one layer, not layer {layer}")));
        }
        read_exact(&self.storage, host, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::Runs;
    use crate::error::StorageError;
    use crate::storage::MemStorage;

    /// Memory that reports holes outside `data`.
    struct Holey(MemStorage, Vec<(u64, u64)>);
    impl ReadAt for Holey {
        fn read_at(&self, o: u64, b: &mut [u8]) -> Result<(), StorageError> {
            self.0.read_at(o, b)
        }
        fn len(&self) -> Result<u64, StorageError> {
            self.0.len()
        }
        fn next_data(&self, o: u64) -> Result<Option<(u64, u64)>, StorageError> {
            Ok(self.1.iter().find(|r| r.1 > o).map(|&(a, b)| (a.max(o), b)))
        }
    }

    #[test]
    fn holes_are_free_blocks_and_data_is_read() {
        let mut v = vec![0u8; (10 * RAW_BLOCK + 100) as usize];
        v[(3 * RAW_BLOCK + 5) as usize] = 1;
        v[(10 * RAW_BLOCK + 99) as usize] = 2;
        let s = Holey(MemStorage::from_vec(v), vec![(3 * RAW_BLOCK, 3 * RAW_BLOCK + 4096), (10 * RAW_BLOCK, 10 * RAW_BLOCK + 100)]);
        let mut d = RawDisk::new(s).unwrap();
        let mut runs = Runs::map();
        let mut data = Vec::new();
        while let Some(r) = runs.next(&mut d).unwrap() {
            if r.block.is_read() {
                data.push((r.start, r.len));
            }
        }
        assert_eq!(data, vec![(3 * RAW_BLOCK, RAW_BLOCK), (10 * RAW_BLOCK, 100)]);
        let mut b = [0u8; 1];
        d.read_at(10 * RAW_BLOCK + 99, &mut b).unwrap();
        assert_eq!(b, [2]);
    }
}
