//! The filesystem readers over any bytes: the first byte picks ext4, vfat, ntfs, or detection;
//! the rest is the filesystem. Opening, walking the tree (bounded here), reading every file
//! and its extents never panics, never reads outside the filesystem, and every error is a
//! named one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdi::volume::{EntryKind, Filesystem, FsInfo, FsKind, Partition, PartitionTable};

fn allowed(e: &vdi::VdiError) {
    assert!(
        matches!(e.kind(), "damaged" | "limit" | "not-found" | "not-a-directory" | "unsupported-filesystem" | "no-filesystem" | "no-such-partition"),
        "{} ({e})",
        e.kind()
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let mut disk = rest.to_vec();
    let size = rest.len() as u64;
    let kind = match pick % 4 {
        0 => Some(FsKind::Ext4),
        1 => Some(FsKind::Vfat),
        2 => Some(FsKind::Ntfs),
        _ => None,
    };
    let part = match kind {
        Some(kind) => Partition::whole(
            size,
            FsInfo { kind, label: String::new(), uuid: String::new(), size, used: None, free: None, readable: true },
        ),
        None => match PartitionTable::read(&mut disk).unwrap().select(None) {
            Ok(p) => p.clone(),
            Err(_) => return,
        },
    };
    let mut fs = match Filesystem::open(&mut disk, &part) {
        Ok(fs) => fs,
        Err(e) => return allowed(&e),
    };
    let root = match fs.root(&mut disk) {
        Ok(r) => r,
        Err(e) => return allowed(&e),
    };
    let mut stack = vec![(root, 0)];
    let mut seen = 0;
    let mut buf = vec![0u8; 8192];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match fs.list(&mut disk, &dir) {
            Ok(v) => v,
            Err(e) => {
                allowed(&e);
                continue;
            }
        };
        for e in entries {
            seen += 1;
            if seen > 200 {
                return;
            }
            match e.kind {
                EntryKind::Dir if depth < 4 => stack.push((e, depth + 1)),
                EntryKind::File => {
                    match fs.read(&mut disk, &e, 0, &mut buf) {
                        Ok(n) => assert!(n as u64 <= e.size && n <= buf.len()),
                        Err(err) => allowed(&err),
                    }
                    match fs.extents(&mut disk, &e, 0, 16) {
                        Ok(x) => {
                            assert!(x.len() <= 16);
                            for ex in x {
                                assert!(ex.offset + ex.len <= e.size, "{ex:?} past the {}-byte file", e.size);
                                if let Some(d) = ex.disk_offset {
                                    assert!(d >= part.start && d.saturating_add(ex.len) <= part.start + part.size, "{ex:?}");
                                }
                            }
                        }
                        Err(err) => allowed(&err),
                    }
                }
                _ => {}
            }
        }
    }
});
