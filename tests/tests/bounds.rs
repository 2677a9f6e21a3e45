//! Resource bounds: opening, checking and mapping any file of the damaged-image corpus reads
//! at most about the file's size and allocates nothing large, whatever its header claims
//! (a 3 MiB file claiming 512 TiB, the largest blocks_in_image in a 1 KiB file), and
//! finishes in milliseconds. One test in this binary: the allocator is global.

use std::alloc::System;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cap::Cap;
use vdi::{
    check, create, CreateOptions, Layout, MemStorage, NoMonitor, OpenOptions, ReadAt, StorageError, Uuid, VdiImage,
};
use vdi_tests::{ok, run, scratch, vdi};

/// Every allocation is counted; during the measured operations a cap makes any allocation
/// beyond [`HEADROOM`] fail (the process aborts with "memory allocation of N bytes failed").
#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Memory the engine may hold at once for open + check + map of any file: the block-map
/// page cache (4 MiB at most) and scan buffers, with room to spare.
const HEADROOM: usize = 16 << 20;

/// Bytes an operation may read beyond the file's length (the header is read twice).
const SLACK: u64 = 4096;

/// Storage over bytes that counts what is read from it.
struct Counting {
    data: MemStorage,
    bytes: Cell<u64>,
    largest: Cell<u64>,
}

impl Counting {
    fn take(&self) -> (u64, u64) {
        (self.bytes.replace(0), self.largest.replace(0))
    }
}

impl ReadAt for Counting {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.bytes.set(self.bytes.get() + buf.len() as u64);
        self.largest.set(self.largest.get().max(buf.len() as u64));
        self.data.read_at(offset, buf)
    }
    fn len(&self) -> Result<u64, StorageError> {
        self.data.len()
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "vdi") {
            out.push(p);
        }
    }
}

/// Open, check and map (extents) one file; returns the time taken.
fn judge(path: &Path) -> Duration {
    let bytes = std::fs::read(path).unwrap();
    let len = bytes.len() as u64;
    let s = Counting { data: MemStorage::from_vec(bytes), bytes: Cell::new(0), largest: Cell::new(0) };
    let name = path.file_name().unwrap().to_string_lossy();
    let base = ALLOC.allocated();
    ALLOC.set_limit(base + HEADROOM).unwrap();
    let t = Instant::now();
    let opened = VdiImage::open(&s).is_ok();
    let (open_bytes, _) = s.take();
    let r = check(&s, &mut NoMonitor);
    let (check_bytes, check_largest) = s.take();
    let mut map_bytes = 0;
    let mut map_largest = 0;
    if let Ok(mut img) = VdiImage::open_with(&s, OpenOptions { lenient: true }) {
        let mut extents = 0u64;
        let _ = img.extents(|_| {
            extents += 1;
            Ok(())
        });
        (map_bytes, map_largest) = s.take();
    }
    let took = t.elapsed();
    ALLOC.set_limit(usize::MAX).unwrap();
    assert!(open_bytes <= 0x200, "{name}: open read {open_bytes} bytes");
    assert!(check_bytes <= len + SLACK, "{name}: check read {check_bytes} bytes of a {len}-byte file");
    assert!(map_bytes <= len + SLACK, "{name}: map read {map_bytes} bytes of a {len}-byte file");
    let largest = check_largest.max(map_largest);
    assert!(largest <= len.max(0x200), "{name}: a single read of {largest} bytes from a {len}-byte file");
    assert!(opened || r.is_err() || !r.unwrap().is_clean(), "{name}: refused, yet checks clean");
    took
}

/// Surgery on a 1 KiB image whose header says 128 MiB blocks (none stored): no operation
/// allocates a block-sized buffer for blocks the file does not hold.
fn surgery_on_huge_blocks_allocates_little() {
    let mut o = CreateOptions::new(256 << 20, Uuid::from_u128(1), Uuid::from_u128(2));
    o.block_size = 128 << 20;
    o.layout = Layout::Qemu;
    let bytes = create(MemStorage::new(), &o, &mut NoMonitor).unwrap().into_storage().into_vec();
    assert_eq!(bytes.len(), 0x400);
    for op in ["compact", "shrink", "grow", "discard", "repair"] {
        let mut img = VdiImage::open(MemStorage::from_vec(bytes.clone())).unwrap();
        ALLOC.set_limit(ALLOC.allocated() + HEADROOM).unwrap();
        let r = match op {
            "compact" => img.compact(false, &mut NoMonitor).map(|_| ()),
            "shrink" => img.resize(128 << 20, &mut NoMonitor).map(|_| ()),
            "grow" => img.resize(512 << 20, &mut NoMonitor).map(|_| ()),
            "discard" => img.discard(0, 256 << 20, &mut NoMonitor).map(|_| ()),
            _ => vdi::repair(img.into_storage(), false, &mut NoMonitor).map(|_| ()),
        };
        ALLOC.set_limit(usize::MAX).unwrap();
        r.unwrap_or_else(|e| panic!("{op}: {e}"));
    }
}

/// A file of `len` bytes, sparse: `head` is stored, the rest reads as zeros.
struct Sparse {
    head: MemStorage,
    len: u64,
}

impl ReadAt for Sparse {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let stored = self.head.len()?;
        let n = stored.saturating_sub(offset).min(buf.len() as u64) as usize;
        if n > 0 {
            self.head.read_at(offset, &mut buf[..n])?;
        }
        buf[n..].fill(0);
        Ok(())
    }
    fn len(&self) -> Result<u64, StorageError> {
        Ok(self.len)
    }
}

impl vdi::Storage for Sparse {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        assert!(offset + buf.len() as u64 <= self.head.len()?, "a write past the stored head");
        self.head.write_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> Result<(), StorageError> {
        assert!(len <= self.head.len()?, "grown");
        self.head.set_len(len)?;
        self.len = len;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// An 8-block map (512-byte blocks, all stored) whose count says 2^27 slots, over a sparse
/// 64 GiB file holding them: check, repair and compact allocate by the map, not by the
/// count (2^27 slots would be 512 MiB of owners), and say how many slots leak.
fn surgery_on_a_huge_count_allocates_little() {
    let mut o = CreateOptions::new(8 * 512, Uuid::from_u128(1), Uuid::from_u128(2));
    o.block_size = 512;
    o.layout = Layout::Qemu;
    let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    img.write_at(0, &[0xA5; 8 * 512]).unwrap();
    let mut head = img.into_storage();
    let count = 1u32 << 27;
    vdi::Storage::write_at(&mut head, 0x184, &count.to_le_bytes()).unwrap();
    let sparse = || Sparse { head: head.clone(), len: 0x400 + ((count as u64) << 9) };
    for op in ["check", "compact", "repair"] {
        ALLOC.set_limit(ALLOC.allocated() + HEADROOM).unwrap();
        let left = match op {
            "check" => {
                let r = check(sparse(), &mut NoMonitor).unwrap();
                assert_eq!(r.leaks, count as u64 - 8, "{:?}", r.findings);
                assert_eq!(r.corruptions, r.past_blocks, "{:?}", r.findings);
                None
            }
            "compact" => {
                let mut img = VdiImage::open(sparse()).unwrap();
                img.compact(false, &mut NoMonitor).unwrap();
                Some(img.into_storage())
            }
            _ => Some(vdi::repair(sparse(), false, &mut NoMonitor).unwrap().1),
        };
        ALLOC.set_limit(usize::MAX).unwrap();
        if let Some(s) = left {
            assert_eq!(s.len, 0x400 + 8 * 512, "{op}");
            assert!(check(s.head, &mut NoMonitor).unwrap().is_clean(), "{op}");
        }
    }
}

#[test]
fn open_check_and_map_are_bounded_by_the_file() {
    surgery_on_huge_blocks_allocates_little();
    surgery_on_a_huge_count_allocates_little();
    let dir = scratch();
    ok(Command::new(env!("CARGO_BIN_EXE_vdi-corpus")).arg(dir.path()));
    let mut all = Vec::new();
    files(dir.path(), &mut all);
    all.sort();
    assert!(all.len() >= 60, "{} files", all.len());
    let mut slowest = (Duration::ZERO, PathBuf::new());
    for p in &all {
        let took = judge(p);
        assert!(took < Duration::from_secs(2), "{}: {took:?}", p.display());
        if took > slowest.0 {
            slowest = (took, p.clone());
        }
    }
    eprintln!("{} files judged; slowest {:?} ({})", all.len(), slowest.0, slowest.1.display());
    // The huge claims, by name: judged in milliseconds by the engine and by the command.
    for (file, check_exit) in [("e-claims-512-tib.vdi", 2), ("q-claims-max-blocks.vdi", 2)] {
        let p = dir.path().join(file);
        let took = judge(&p);
        assert!(took < Duration::from_millis(500), "{file}: {took:?}");
        let t = Instant::now();
        let c = run(&mut vdi(&["check", p.to_str().unwrap()]));
        let i = run(&mut vdi(&["info", p.to_str().unwrap()]));
        let m = run(&mut vdi(&["map", p.to_str().unwrap()]));
        let cli = t.elapsed();
        assert_eq!((c.status.code(), i.status.code(), m.status.code()), (Some(check_exit), Some(1), Some(1)), "{file}");
        assert!(cli < Duration::from_secs(2), "{file}: vdi check + info + map took {cli:?}");
        eprintln!("{file}: engine open + check + map {took:?}; vdi check + info + map {cli:?}");
    }
}
