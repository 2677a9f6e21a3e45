//! Streaming raw export and import, with progress and cancellation.
//!
//! Neither operation holds more than one chunk ([`CHUNK`] bytes) in memory.

use crate::block_map::Entry;
use crate::error::{Result, VdiError};
use crate::image::{all_zero, VdiImage};
use crate::monitor::Monitor;
use crate::storage::{read_exact, storage_len, write_all, ReadAt, Storage};

/// Bytes moved per storage call at most.
pub const CHUNK: usize = 8 * 1024 * 1024;

/// Where a raw export goes.
pub trait RawSink {
    /// Bytes of the disk at `offset`.
    fn data(&mut self, offset: u64, buf: &[u8]) -> Result<()>;
    /// `len` zero bytes at `offset`: a sparse sink skips them, a stream writes them.
    fn zeros(&mut self, offset: u64, len: u64) -> Result<()>;
}

/// A sink writing into positioned storage that starts empty: zero runs become holes
/// (the storage is sized to the whole disk first).
pub struct SparseSink<S: Storage> {
    /// The output.
    pub storage: S,
}

impl<S: Storage> SparseSink<S> {
    /// Wrap `storage`, truncating it to `size` bytes of zeros.
    pub fn new(mut storage: S, size: u64) -> Result<Self> {
        crate::storage::set_len(&mut storage, 0)?;
        crate::storage::set_len(&mut storage, size)?;
        Ok(SparseSink { storage })
    }
}

impl<S: Storage> RawSink for SparseSink<S> {
    fn data(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        write_all(&mut self.storage, offset, buf)
    }
    fn zeros(&mut self, _offset: u64, _len: u64) -> Result<()> {
        Ok(())
    }
}

/// What an export or import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Bytes of the virtual disk covered.
    pub total_bytes: u64,
    /// Bytes of stored data moved.
    pub data_bytes: u64,
    /// Bytes skipped as zero (holes on export; unallocated blocks on import).
    pub zero_bytes: u64,
}

/// Export the whole virtual disk to `sink`, in order. FREE and ZERO blocks go to
/// [`RawSink::zeros`]; runs of data blocks adjacent in the file are read in one call of up
/// to [`CHUNK`] bytes. `monitor` sees progress in bytes of the virtual disk.
pub fn export_raw<S: ReadAt>(
    img: &mut VdiImage<S>,
    sink: &mut dyn RawSink,
    monitor: &mut dyn Monitor,
) -> Result<TransferStats> {
    let size = img.virtual_size();
    let bs = img.block_size();
    let chunk_blocks = (CHUNK as u64 / bs).max(1);
    // At most CHUNK bytes whatever the header says (a block may be 128 MiB): a longer run is
    // read in pieces.
    let mut buf = vec![0u8; (CHUNK as u64).min(size.max(1)) as usize];
    let mut st = TransferStats { total_bytes: size, ..Default::default() };
    let nblocks = img.blocks_covering_disk() as u64;
    let mut b = 0u64;
    while b < nblocks {
        if monitor.cancelled() {
            return Err(VdiError::Cancelled);
        }
        let start = b * bs;
        let entry = img.entry(b as u32)?;
        // Extend the run over following blocks of the same kind.
        let mut n = 1u64;
        let data = matches!(entry, Entry::Data(_));
        while b + n < nblocks && n < chunk_blocks {
            let next = img.entry((b + n) as u32)?;
            let same = match (entry, next) {
                (Entry::Data(s), Entry::Data(t)) => s as u64 + n == t as u64 && img.header().block_extra == 0,
                (Entry::Data(_), _) | (_, Entry::Data(_)) => false,
                // In a diff, FREE reads the parent and ZERO does not: never merge them.
                _ => entry == next || !img.is_diff(),
            };
            if !same {
                break;
            }
            n += 1;
        }
        let len = (n * bs).min(size - start);
        if data || (img.is_diff() && entry == Entry::Free) {
            let mut done = 0u64;
            while done < len {
                let part = &mut buf[..(len - done).min(CHUNK as u64) as usize];
                img.read_at(start + done, part)?;
                sink.data(start + done, part)?;
                done += part.len() as u64;
            }
            st.data_bytes += len;
        } else {
            sink.zeros(start, len)?;
            st.zero_bytes += len;
        }
        b += n;
        monitor.progress(start + len, size);
    }
    Ok(st)
}

/// Write the raw disk in `source` into `img` from offset 0. Blocks that are all zeros are
/// not written (so a fresh dynamic image leaves them unallocated). `monitor` sees progress
/// in bytes of the source.
pub fn import_raw<R: ReadAt, S: Storage>(
    source: &R,
    img: &mut VdiImage<S>,
    monitor: &mut dyn Monitor,
) -> Result<TransferStats> {
    let len = storage_len(source)?;
    if len > img.virtual_size() {
        return Err(VdiError::InvalidArgument(format!(
            "the raw data is {len} bytes, larger than the virtual disk ({} bytes)",
            img.virtual_size()
        )));
    }
    let bs = img.block_size() as usize;
    let chunk = (CHUNK / bs).max(1) * bs;
    let mut buf = vec![0u8; chunk.min(len as usize).max(1)];
    let mut st = TransferStats { total_bytes: len, ..Default::default() };
    let mut pos = 0u64;
    while pos < len {
        if monitor.cancelled() {
            return Err(VdiError::Cancelled);
        }
        let n = (len - pos).min(chunk as u64) as usize;
        let part = &mut buf[..n];
        read_exact(source, pos, part)?;
        // Write runs of non-zero blocks; skip zero blocks.
        let mut i = 0;
        while i < n {
            let end = (i + bs).min(n);
            if all_zero(&part[i..end]) {
                st.zero_bytes += (end - i) as u64;
                i = end;
                continue;
            }
            let mut j = end;
            while j < n {
                let e = (j + bs).min(n);
                if all_zero(&part[j..e]) {
                    break;
                }
                j = e;
            }
            img.write_at(pos + i as u64, &part[i..j])?;
            st.data_bytes += (j - i) as u64;
            i = j;
        }
        pos += n as u64;
        monitor.progress(pos, len);
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create, CreateOptions};
    use crate::monitor::{FnMonitor, NoMonitor};
    use crate::storage::MemStorage;
    use uuid::Uuid;

    struct Collect(Vec<u8>, u64);
    impl RawSink for Collect {
        fn data(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
            assert_eq!(offset, self.0.len() as u64);
            self.0.extend_from_slice(buf);
            Ok(())
        }
        fn zeros(&mut self, offset: u64, len: u64) -> Result<()> {
            assert_eq!(offset, self.0.len() as u64);
            self.0.resize(self.0.len() + len as usize, 0);
            self.1 += 1;
            Ok(())
        }
    }

    #[test]
    fn import_then_export_round_trips_and_skips_zeros() {
        let mut raw = vec![0u8; (5 << 20) + 1024];
        raw[10] = 1;
        raw[(3 << 20) + 5] = 2; // block 3
        raw[(5 << 20) + 1000] = 3; // partial last block
        let o = CreateOptions::new(raw.len() as u64, Uuid::from_u128(1), Uuid::from_u128(2));
        let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        let st = import_raw(&MemStorage::from_vec(raw.clone()), &mut img, &mut NoMonitor).unwrap();
        assert_eq!(img.header().blocks_allocated, 3);
        assert_eq!(st.data_bytes, (2 << 20) + 1024);
        let mut c = Collect(Vec::new(), 0);
        let st = export_raw(&mut img, &mut c, &mut NoMonitor).unwrap();
        assert_eq!(c.0, raw);
        assert_eq!(st.zero_bytes, 3 << 20);
    }

    #[test]
    fn cancel_stops_between_blocks() {
        let o = CreateOptions::new(64 << 20, Uuid::from_u128(1), Uuid::from_u128(2));
        let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        let calls = std::cell::Cell::new(0);
        let mut m = FnMonitor { progress: |_, _| calls.set(calls.get() + 1), cancelled: || calls.get() >= 1 };
        let e = export_raw(&mut img, &mut Collect(Vec::new(), 0), &mut m).unwrap_err();
        assert_eq!(e.kind(), "cancelled");
    }
}
