//! Resource bounds inside the disk: for every seed of the volume fuzz targets (tiny MBR,
//! GPT, ext2, ext4, FAT12 and NTFS images made by the reference tools) and thousands of
//! variants with one field set to all ones, reading the partition table, opening the
//! filesystem, walking its tree, reading its files and mapping them allocates at most
//! [`HEADROOM`] at any moment and reads at most [`READ_BUDGET`] bytes, whatever the
//! damaged fields claim. One test in this binary: the allocator is global.

use std::alloc::System;

use cap::Cap;
use vdi::volume::{EntryKind, Filesystem, PartitionTable};
use vdi_tests::{root, Counted};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Memory the readers may hold at once: a 64 KiB disk, a directory listing, a 1 MiB read
/// buffer, with room to spare. A claim believed (2^31 GPT entries, a 2^40-byte directory)
/// would exceed it and abort the test.
const HEADROOM: usize = 8 << 20;
/// Bytes read per image: detection probes (68 KiB each), the tree walk and the file reads
/// below, for a 64 KiB image.
const READ_BUDGET: u64 = 48 << 20;


/// Everything a reader of this disk may be asked, errors allowed; returns the bytes read.
fn exercise(bytes: Vec<u8>) -> u64 {
    let mut disk = Counted::new(bytes);
    let Ok(table) = PartitionTable::read(&mut disk) else { return disk.read.get() };
    let mut buf = vec![0u8; 1 << 20];
    for part in table.partitions.iter().filter(|p| p.filesystem.is_some()) {
        let Ok(mut fs) = Filesystem::open(&mut disk, part) else { continue };
        let Ok(root) = fs.root(&mut disk) else { continue };
        let mut todo = vec![(root, 0)];
        while let Some((dir, depth)) = todo.pop() {
            for e in fs.list(&mut disk, &dir).unwrap_or_default().into_iter().take(64) {
                if e.kind == EntryKind::Dir && depth < 3 {
                    todo.push((e, depth + 1));
                } else if e.kind == EntryKind::File {
                    let _ = fs.read(&mut disk, &e, 0, &mut buf);
                    let _ = fs.extents(&mut disk, &e, 0, 64);
                }
            }
        }
    }
    disk.read.get()
}

#[test]
fn damaged_tables_and_filesystems_stay_within_memory_and_read_budgets() {
    let seeds = root().join("fuzz/seeds-volume");
    let mut names: Vec<_> = std::fs::read_dir(&seeds).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    let mut runs = 0;
    for path in &names {
        let seed = std::fs::read(path).unwrap();
        // The seed itself, then one 4-byte field at a time set to all ones.
        let variants = std::iter::once(None).chain((0..seed.len()).step_by(16).map(Some));
        for at in variants {
            let mut b = seed.clone();
            if let Some(at) = at {
                b[at..(at + 4).min(seed.len())].fill(0xff);
            }
            ALLOC.set_limit(ALLOC.allocated() + HEADROOM).unwrap();
            let read = exercise(b);
            ALLOC.set_limit(usize::MAX).unwrap();
            assert!(read <= READ_BUDGET, "{} with ones at {at:?}: read {read} bytes", path.display());
            runs += 1;
        }
    }
    assert!(runs > 24_000, "{runs} images");
}
