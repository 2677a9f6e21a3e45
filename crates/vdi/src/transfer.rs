//! Streaming raw export and import, with progress and cancellation.
//!
//! Neither operation holds more than one chunk ([`CHUNK`] bytes) in memory.

use crate::disk::{Disk, Runs};
use crate::error::{Result, VdiError};
use crate::image::{all_zero, VdiImage};
use crate::monitor::Monitor;
use crate::storage::{next_data, read_exact, storage_len, write_all, ReadAt, Storage};

/// Bytes moved per storage call at most.
pub const CHUNK: usize = 8 * 1024 * 1024;

/// Data pieces a [`SparseSink`] asks for: small enough that the bytes read into the buffer
/// are still in the CPU cache when they are written out again (a buffer larger than the
/// cache makes both copies go to memory: twice the work for a file-to-file conversion).
pub const CACHE_PIECE: usize = 256 * 1024;

/// Bytes read per call by [`import_raw`] (rounded to whole blocks).
const IMPORT_CHUNK: usize = 1024 * 1024;

/// Where a raw export goes.
pub trait RawSink {
    /// Bytes of the disk at `offset`.
    fn data(&mut self, offset: u64, buf: &[u8]) -> Result<()>;
    /// `len` zero bytes at `offset`: a sparse sink skips them, a stream writes them.
    fn zeros(&mut self, offset: u64, len: u64) -> Result<()>;
    /// The most bytes the sink wants per [`RawSink::data`] call (capped at [`CHUNK`]): the
    /// export reads data in pieces of this size.
    fn piece_size(&self) -> usize {
        CHUNK
    }
}

/// A sink writing into positioned storage that starts empty: zero runs, and data pieces
/// that are all zeros, become holes (the storage is sized to the whole disk first).
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
        if all_zero(buf) {
            return Ok(());
        }
        write_all(&mut self.storage, offset, buf)
    }
    fn zeros(&mut self, _offset: u64, _len: u64) -> Result<()> {
        Ok(())
    }
    fn piece_size(&self) -> usize {
        CACHE_PIECE
    }
}

/// A small disk exported into memory: the pieces are appended in order (a piece that does
/// not start where the bytes so far end is an error). The zeros are stored too, so this is
/// for small disks only (tests, tools checking a few MiB).
impl RawSink for Vec<u8> {
    fn data(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        append_at(self, offset, buf.len() as u64)?;
        self.extend_from_slice(buf);
        Ok(())
    }
    fn zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        append_at(self, offset, len)?;
        self.resize(self.len() + len as usize, 0);
        Ok(())
    }
}

fn append_at(v: &[u8], offset: u64, len: u64) -> Result<()> {
    if offset != v.len() as u64 {
        return Err(VdiError::InvalidArgument(format!(
            "export out of order: {len} bytes at {offset}, but {} bytes came so far",
            v.len()
        )));
    }
    Ok(())
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

/// Export the whole virtual disk of `img` to `sink`: [`export_disk`] over one image.
pub fn export_raw<S: ReadAt>(
    img: &mut VdiImage<S>,
    sink: &mut dyn RawSink,
    monitor: &mut dyn Monitor,
) -> Result<TransferStats> {
    export_disk(img, sink, monitor)
}

/// Stream `disk` (an image or a chain) to `sink`, in order: [`Export::step`] until the
/// end. `monitor` sees progress in bytes of the virtual disk.
pub fn export_disk<D: Disk + ?Sized>(
    disk: &mut D,
    sink: &mut dyn RawSink,
    monitor: &mut dyn Monitor,
) -> Result<TransferStats> {
    let size = disk.virtual_size();
    // At most CHUNK bytes whatever the header says (a block may be 128 MiB).
    let piece = sink.piece_size().clamp(1, CHUNK) as u64;
    let mut buf = vec![0u8; piece.min(size.max(1)) as usize];
    let mut export = Export::new(size);
    loop {
        if monitor.cancelled() {
            return Err(VdiError::Cancelled);
        }
        let Some(done) = export.step(disk, sink, &mut buf)? else { break };
        monitor.progress(done, size);
    }
    Ok(export.stats)
}

/// An export in steps, walking [`Runs::export`]: each [`Export::step`] moves one run —
/// zeros to [`RawSink::zeros`], data (at most [`CHUNK`] bytes, blocks adjacent in the file
/// read together) read in pieces of the buffer's length into [`RawSink::data`]. The one
/// loop behind [`export_disk`], `vdi convert` and the page's flattened VDI, which steps it
/// between awaits.
#[derive(Debug)]
pub struct Export {
    runs: Runs,
    /// What was moved so far.
    pub stats: TransferStats,
}

impl Export {
    /// An export of a disk of `size` bytes, from its start.
    pub fn new(size: u64) -> Self {
        Export { runs: Runs::export(), stats: TransferStats { total_bytes: size, ..Default::default() } }
    }

    /// Move the next run of `disk` to `sink` through `buf` (at least one byte). Returns the
    /// bytes of the disk done so far, or None at the end.
    pub fn step<D: Disk + ?Sized>(&mut self, disk: &mut D, sink: &mut dyn RawSink, buf: &mut [u8]) -> Result<Option<u64>> {
        let Some(run) = self.runs.next(disk)? else { return Ok(None) };
        let piece = (buf.len() as u64).clamp(1, CHUNK as u64);
        if run.block.is_read() {
            let mut done = 0u64;
            while done < run.len {
                let part = &mut buf[..(run.len - done).min(piece) as usize];
                disk.read_at(run.start + done, part)?;
                sink.data(run.start + done, part)?;
                done += part.len() as u64;
            }
            self.stats.data_bytes += run.len;
        } else {
            sink.zeros(run.start, run.len)?;
            self.stats.zero_bytes += run.len;
        }
        Ok(Some(run.start + run.len))
    }
}

/// A sink writing a disk into an image from offset 0: data pieces that are all zeros are
/// not written (a new dynamic image leaves those blocks unallocated), zero runs are
/// skipped. What `vdi convert -O vdi` and the page's flattened VDI write through.
pub struct ImageSink<'a, S: Storage>(pub &'a mut VdiImage<S>);

impl<S: Storage> RawSink for ImageSink<'_, S> {
    fn data(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        if all_zero(buf) {
            return Ok(());
        }
        self.0.write_at(offset, buf)
    }
    fn zeros(&mut self, _offset: u64, _len: u64) -> Result<()> {
        Ok(())
    }
}

/// The next span of `source` at or after `pos` that may hold data, as the source knows its
/// holes ([`ReadAt::next_data`]; an answer that breaks its contract means "all data"),
/// rounded out to whole blocks of `block` bytes and kept within `[pos, len)`: what an
/// import reads. None when only holes remain.
pub fn data_span<R: ReadAt + ?Sized>(source: &R, pos: u64, len: u64, block: u64) -> Result<Option<(u64, u64)>> {
    let Some((start, end)) = next_data(source, pos, len)? else { return Ok(None) };
    Ok(Some(((start - start % block).max(pos), end.next_multiple_of(block).min(len))))
}

/// Write the raw disk in `source` into `img` from offset 0. Blocks that are all zeros are
/// not written (so a fresh dynamic image leaves them unallocated), and blocks that the source
/// knows to be holes ([`ReadAt::next_data`]) are not even read. `monitor` sees progress in
/// bytes of the source.
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
    // One block per read at the usual 1 MiB block size: the buffer stays in the CPU cache
    // between the read, the zero check and the write.
    let chunk = (IMPORT_CHUNK / bs).max(1) * bs;
    let mut buf = vec![0u8; chunk.min(len as usize).max(1)];
    let mut st = TransferStats { total_bytes: len, ..Default::default() };
    let mut pos = 0u64;
    while pos < len {
        if monitor.cancelled() {
            return Err(VdiError::Cancelled);
        }
        // Skip the blocks that the source knows to be holes; read up to the end of the data
        // (rounded up to a block), at most one chunk.
        let Some((skip_to, data_end)) = data_span(source, pos, len, bs as u64)? else {
            st.zero_bytes += len - pos;
            pos = len;
            monitor.progress(pos, len);
            break;
        };
        st.zero_bytes += skip_to - pos;
        pos = skip_to;
        let end = data_end.min(pos + chunk as u64);
        let n = (end - pos) as usize;
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
    fn a_vec_collects_an_export_in_order() {
        let mut v: Vec<u8> = Vec::new();
        v.data(0, b"ab").unwrap();
        v.zeros(2, 3).unwrap();
        assert_eq!(v, b"ab\0\0\0");
        let e = v.data(9, b"x").unwrap_err().to_string();
        assert!(e.contains("out of order") && e.contains("at 9"), "{e}");
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

    /// A raw source that knows its holes and records what is read.
    struct Holey {
        mem: MemStorage,
        data: Vec<(u64, u64)>,
        reads: std::cell::RefCell<Vec<(u64, u64)>>,
    }
    impl ReadAt for Holey {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), crate::StorageError> {
            self.reads.borrow_mut().push((offset, offset + buf.len() as u64));
            self.mem.read_at(offset, buf)
        }
        fn len(&self) -> Result<u64, crate::StorageError> {
            self.mem.len()
        }
        fn next_data(&self, offset: u64) -> Result<Option<(u64, u64)>, crate::StorageError> {
            Ok(self.data.iter().find(|r| r.1 > offset).map(|&(a, b)| (a.max(offset), b)))
        }
    }

    #[test]
    fn import_reads_only_the_blocks_holding_data() {
        let mb = 1u64 << 20;
        let mut raw = vec![0u8; (8 * mb) as usize];
        raw[(2 * mb + 4096) as usize] = 7; // block 2, data range inside the block
        raw[(6 * mb) as usize..(7 * mb + 8192) as usize].fill(9); // blocks 6 and 7
        let src = Holey {
            mem: MemStorage::from_vec(raw.clone()),
            data: vec![(2 * mb + 4096, 2 * mb + 8192), (6 * mb, 7 * mb + 8192)],
            reads: Default::default(),
        };
        let o = CreateOptions::new(raw.len() as u64, Uuid::from_u128(1), Uuid::from_u128(2));
        let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        let st = import_raw(&src, &mut img, &mut NoMonitor).unwrap();
        assert_eq!(img.header().blocks_allocated, 3);
        assert_eq!((st.data_bytes, st.zero_bytes, st.total_bytes), (3 * mb, 5 * mb, 8 * mb));
        for &(a, b) in src.reads.borrow().iter() {
            assert!((2 * mb..3 * mb).contains(&a) || (6 * mb..8 * mb).contains(&a), "read {a}..{b}");
            assert!(b <= 3 * mb || b <= 8 * mb && a >= 6 * mb, "read {a}..{b}");
        }
        let mut c = Collect(Vec::new(), 0);
        export_raw(&mut img, &mut c, &mut NoMonitor).unwrap();
        assert_eq!(c.0, raw);
    }

    #[test]
    fn a_data_range_that_breaks_the_contract_means_all_data() {
        let mut raw = vec![0u8; 3 << 20];
        raw[5] = 1;
        raw[(2 << 20) + 5] = 2;
        // A range ending past the end of the source: ignored, everything is read.
        let src = Holey { mem: MemStorage::from_vec(raw.clone()), data: vec![(0, 1 << 30)], reads: Default::default() };
        let o = CreateOptions::new(raw.len() as u64, Uuid::from_u128(1), Uuid::from_u128(2));
        let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        import_raw(&src, &mut img, &mut NoMonitor).unwrap();
        assert_eq!(img.header().blocks_allocated, 2);
        let mut c = Collect(Vec::new(), 0);
        export_raw(&mut img, &mut c, &mut NoMonitor).unwrap();
        assert_eq!(c.0, raw);
    }

    #[test]
    fn sparse_sink_leaves_zero_pieces_unwritten() {
        struct Counting(MemStorage, Vec<(u64, usize)>);
        impl ReadAt for Counting {
            fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), crate::StorageError> {
                self.0.read_at(offset, buf)
            }
            fn len(&self) -> Result<u64, crate::StorageError> {
                self.0.len()
            }
        }
        impl Storage for Counting {
            fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), crate::StorageError> {
                self.1.push((offset, buf.len()));
                self.0.write_at(offset, buf)
            }
            fn set_len(&mut self, len: u64) -> Result<(), crate::StorageError> {
                self.0.set_len(len)
            }
            fn flush(&mut self) -> Result<(), crate::StorageError> {
                Ok(())
            }
        }
        let mb = 1u64 << 20;
        let o = CreateOptions::new(4 * mb, Uuid::from_u128(1), Uuid::from_u128(2));
        let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        img.write_at(0, &vec![0xAB; mb as usize]).unwrap();
        // Block 2 allocated, then zeroed: data that reads as zeros.
        img.write_at(2 * mb, &[1]).unwrap();
        img.write_at(2 * mb, &[0]).unwrap();
        img.write_at(3 * mb + 300_000, &[5]).unwrap();
        let mut sink = SparseSink::new(Counting(MemStorage::new(), Vec::new()), 4 * mb).unwrap();
        export_raw(&mut img, &mut sink, &mut NoMonitor).unwrap();
        let writes = &sink.storage.1;
        assert!(writes.iter().all(|&(_, n)| n <= CACHE_PIECE), "{writes:?}");
        assert!(writes.iter().all(|&(o, _)| !(2 * mb..3 * mb).contains(&o)), "{writes:?}");
        // Block 3: only the piece holding the byte is written.
        assert_eq!(writes.iter().filter(|&&(o, _)| o >= 3 * mb).count(), 1, "{writes:?}");
        let mut want = vec![0u8; 4 * mb as usize];
        want[..mb as usize].fill(0xAB);
        want[(3 * mb + 300_000) as usize] = 5;
        assert_eq!(sink.storage.0.as_slice(), &want[..]);
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
