//! The parallel transfer behind `vdi convert` between regular files: the engine plans
//! (which bytes of the disk are data, and where each lies in which file) and stays
//! single-threaded; here worker threads read those bytes with positioned reads, each into
//! a buffer of a fixed pool, and check them for zeros, while the calling thread writes the
//! pieces that are not all zeros, in disk order, through a callback (a raw file's
//! positioned write, or the engine writing a VDI, whose blocks are allocated in that
//! order).
//!
//! One writer, not several: on Linux a buffered write holds the file's inode lock, so
//! writers of one file wait for each other — measured with `perf`, two writers spent a
//! third of their cycles spinning on that lock (`rwsem_spin_on_owner`) and finished later
//! than one writer fed by two readers (docs/benchmarks.md, "Native conversions").
//!
//! At most [`DEPTH_PER_THREAD`] × threads buffers are in flight: memory stays a few MiB
//! whatever the disk.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use vdi::Monitor;

/// Buffers in flight per worker thread.
pub const DEPTH_PER_THREAD: usize = 4;

/// Bytes of the disk to move: `len` bytes at `dst`, read from source `src` at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Byte offset in the disk (and in a raw output).
    pub dst: u64,
    /// Index into the sources.
    pub src: usize,
    /// Byte offset in that source file.
    pub at: u64,
    /// Length in bytes (at most the piece size).
    pub len: usize,
}

/// A file the pieces are read from, with its name for errors.
pub struct Source {
    pub file: File,
    pub path: PathBuf,
}

/// What a transfer moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Bytes read from the sources.
    pub read: u64,
    /// Bytes written (pieces that were not all zeros).
    pub written: u64,
}

/// Reader threads for a transfer: every core, at most 8 (`VDI_THREADS=N` overrides it, for
/// benchmarks).
pub fn threads() -> usize {
    std::env::var("VDI_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, 8)
}

struct Job {
    seq: u64,
    piece: Piece,
    buf: Vec<u8>,
}

struct Done {
    seq: u64,
    piece: Piece,
    buf: Vec<u8>,
    /// Whether the piece held a non-zero byte; or why it failed.
    result: Result<bool>,
}

/// Move every piece `next` yields (each at most `piece_size` bytes) from `sources` to
/// `write`, read on [`threads`] workers and written on this thread in disk order (pieces
/// that are all zeros are left out). `monitor` sees progress as the end of the last piece
/// done in disk order, out of `total`; cancelling stops the dispatch and returns
/// [`vdi::VdiError::Cancelled`]. The first error stops the dispatch too; pieces in flight
/// finish, and that error is returned.
pub fn transfer(
    sources: &[Source],
    next: &mut dyn FnMut() -> Result<Option<Piece>>,
    piece_size: usize,
    write: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    total: u64,
    monitor: &mut dyn Monitor,
) -> Result<Moved> {
    let threads = threads();
    let depth = threads * DEPTH_PER_THREAD;
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(depth);
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        for _ in 0..threads {
            let (job_rx, done_tx) = (&job_rx, done_tx.clone());
            s.spawn(move || loop {
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(Job { seq, piece, mut buf }) = job else { return };
                let result = read_piece(sources, &piece, &mut buf);
                if done_tx.send(Done { seq, piece, buf, result }).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let mut pool: Vec<Vec<u8>> = Vec::with_capacity(depth);
        let mut made = 0usize;
        let (mut seq, mut want) = (0u64, 0u64);
        let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
        let (mut in_flight, mut exhausted) = (0usize, false);
        let mut failed: Option<anyhow::Error> = None;
        let mut moved = Moved::default();
        loop {
            // Dispatch while a buffer is free.
            while !exhausted && failed.is_none() {
                let buf = match pool.pop() {
                    Some(b) => b,
                    None if made < depth => {
                        made += 1;
                        vec![0u8; piece_size]
                    }
                    None => break,
                };
                if monitor.cancelled() {
                    failed = Some(vdi::VdiError::Cancelled.into());
                    pool.push(buf);
                    break;
                }
                match next() {
                    Ok(Some(piece)) => {
                        debug_assert!(piece.len <= piece_size);
                        if job_tx.send(Job { seq, piece, buf }).is_err() {
                            failed = Some(anyhow!("the transfer's workers stopped"));
                            break;
                        }
                        seq += 1;
                        in_flight += 1;
                    }
                    Ok(None) => {
                        exhausted = true;
                        pool.push(buf);
                    }
                    Err(e) => {
                        failed = Some(e);
                        pool.push(buf);
                    }
                }
            }
            if in_flight == 0 {
                break;
            }
            let Ok(done) = done_rx.recv() else {
                failed.get_or_insert_with(|| anyhow!("the transfer's workers stopped"));
                break;
            };
            in_flight -= 1;
            waiting.insert(done.seq, done);
            // Hand on, in disk order, what is done.
            while let Some(d) = waiting.remove(&want) {
                want += 1;
                match &d.result {
                    Err(_) => {}
                    Ok(nonzero) => {
                        moved.read += d.piece.len as u64;
                        if *nonzero {
                            moved.written += d.piece.len as u64;
                            if failed.is_none() {
                                if let Err(e) = write(d.piece.dst, &d.buf[..d.piece.len]) {
                                    failed = Some(e);
                                }
                            }
                        }
                        monitor.progress(d.piece.dst + d.piece.len as u64, total);
                    }
                }
                if let Err(e) = d.result {
                    failed.get_or_insert(e);
                }
                pool.push(d.buf);
            }
        }
        drop(job_tx);
        match failed {
            Some(e) => Err(e),
            None => {
                monitor.progress(total, total);
                Ok(moved)
            }
        }
    })
}

/// One piece on a worker: read it; whether it holds a non-zero byte.
fn read_piece(sources: &[Source], p: &Piece, buf: &mut [u8]) -> Result<bool> {
    let src = &sources[p.src];
    let part = &mut buf[..p.len];
    src.file
        .read_exact_at(part, p.at)
        .with_context(|| format!("could not read {} bytes of {} at offset {}", p.len, src.path.display(), p.at))?;
    Ok(!vdi::all_zero(part))
}

/// Cut `[start, start + len)` (at `at` in the source) into pieces that end on multiples of
/// `piece_size` in the disk, so that each piece of a VDI output is a whole block.
pub struct Cutter {
    dst: u64,
    at: u64,
    left: u64,
    src: usize,
    piece_size: u64,
}

impl Cutter {
    pub fn new(src: usize, dst: u64, at: u64, len: u64, piece_size: usize) -> Self {
        Cutter { dst, at, left: len, src, piece_size: piece_size as u64 }
    }
}

impl Iterator for Cutter {
    type Item = Piece;
    fn next(&mut self) -> Option<Piece> {
        if self.left == 0 {
            return None;
        }
        let to_boundary = self.piece_size - self.dst % self.piece_size;
        let n = to_boundary.min(self.left);
        let p = Piece { dst: self.dst, src: self.src, at: self.at, len: n as usize };
        self.dst += n;
        self.at += n;
        self.left -= n;
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn source(dir: &std::path::Path, bytes: &[u8]) -> Source {
        let path = dir.join("src");
        std::fs::write(&path, bytes).unwrap();
        Source { file: File::open(&path).unwrap(), path }
    }

    #[test]
    fn pieces_end_on_boundaries() {
        let v: Vec<Piece> = Cutter::new(1, 100, 5000, 300, 128).collect();
        let dst: Vec<(u64, usize)> = v.iter().map(|p| (p.dst, p.len)).collect();
        assert_eq!(dst, [(100, 28), (128, 128), (256, 128), (384, 16)]);
        assert_eq!(v[1].at, 5028);
        assert!(v.iter().all(|p| p.src == 1));
    }

    /// Every byte of pieces given out of order lands where it goes, zero pieces are left
    /// out, and the writer sees the pieces in the order given.
    #[test]
    fn every_piece_is_read_and_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8 + 1).collect();
        bytes[4096..8192].fill(0); // one all-zero piece
        let srcs = [source(dir.path(), &bytes)];
        for threads in ["1", "3"] {
            std::env::set_var("VDI_THREADS", threads);
            // The source reversed, in 4 KiB pieces.
            let n = bytes.len() / 4096;
            let mut i = 0;
            let mut next = || -> Result<Option<Piece>> {
                i += 1;
                Ok((i <= n).then(|| Piece { dst: ((n - i) * 4096) as u64, src: 0, at: ((i - 1) * 4096) as u64, len: 4096 }))
            };
            let mut seen: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut write = |dst: u64, b: &[u8]| -> Result<()> {
                seen.push((dst, b.to_vec()));
                Ok(())
            };
            let m = transfer(&srcs, &mut next, 4096, &mut write, bytes.len() as u64, &mut vdi::NoMonitor).unwrap();
            assert_eq!((m.read, m.written), (bytes.len() as u64, bytes.len() as u64 - 4096));
            assert_eq!(seen.len(), n - 1);
            assert!(seen.windows(2).all(|w| w[0].0 > w[1].0), "in the order given");
            for (dst, b) in &seen {
                let k = n - 1 - (*dst as usize / 4096);
                assert_eq!(&b[..], &bytes[k * 4096..][..4096], "piece at {dst}");
            }
            // In pieces of 1000 bytes, cut at multiples of 1000.
            let mut rebuilt = vec![0u8; bytes.len()];
            let mut cut = Cutter::new(0, 0, 0, bytes.len() as u64, 1000);
            let mut next = || -> Result<Option<Piece>> { Ok(cut.next()) };
            let mut write = |dst: u64, b: &[u8]| -> Result<()> {
                assert!(b.iter().any(|&x| x != 0) && b.len() <= 1000);
                rebuilt[dst as usize..][..b.len()].copy_from_slice(b);
                Ok(())
            };
            transfer(&srcs, &mut next, 1000, &mut write, bytes.len() as u64, &mut vdi::NoMonitor).unwrap();
            assert_eq!(rebuilt, bytes);
        }
        std::env::remove_var("VDI_THREADS");
    }

    #[test]
    fn the_first_error_is_returned_and_nothing_hangs() {
        let dir = tempfile::tempdir().unwrap();
        let srcs = [source(dir.path(), &[7u8; 8192])];
        // A piece past the end of the source, among good ones.
        let mut i = 0u64;
        let mut next = || -> Result<Option<Piece>> {
            i += 1;
            Ok((i <= 50).then(|| Piece { dst: i * 100, src: 0, at: if i == 20 { 9000 } else { 0 }, len: 100 }))
        };
        let mut write = |_: u64, _: &[u8]| -> Result<()> { Ok(()) };
        let e = transfer(&srcs, &mut next, 100, &mut write, 6000, &mut vdi::NoMonitor).unwrap_err();
        assert!(format!("{e:#}").contains("at offset 9000"), "{e:#}");
        // A failing writer.
        let mut cut = Cutter::new(0, 0, 0, 8192, 512);
        let mut next = || -> Result<Option<Piece>> { Ok(cut.next()) };
        let calls = std::cell::Cell::new(0);
        let mut write = |_: u64, _: &[u8]| -> Result<()> {
            calls.set(calls.get() + 1);
            if calls.get() == 3 {
                anyhow::bail!("disk full")
            }
            Ok(())
        };
        let e = transfer(&srcs, &mut next, 512, &mut write, 8192, &mut vdi::NoMonitor).unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(calls.get(), 3, "nothing is written after the first failure");
        // A planner error.
        let mut next = || -> Result<Option<Piece>> { anyhow::bail!("bad map") };
        let e = transfer(&srcs, &mut next, 512, &mut write, 8192, &mut vdi::NoMonitor).unwrap_err();
        assert_eq!(e.to_string(), "bad map");
    }
}
