//! `vdi compact --fs-aware`: disks made with the reference tools (mkfs.ext4 -d, debugfs,
//! mkfs.vfat, mtools, mkntfs, ntfscp, sgdisk, sfdisk), files deleted with them; what the
//! filesystems call free comes back, and afterwards the reference checkers (e2fsck -fn,
//! fsck.vfat -n, ntfsfix -n, qemu-img check) are clean and every remaining file reads as before.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vdi_tests::*;

const MB: usize = 1 << 20;

fn sh(cmd: &str, args: &[&str]) -> String {
    ok(Command::new(cmd).args(args).env("MTOOLS_SKIP_CHECK", "1"))
}

/// Files to keep (name, bytes) and one to delete, in `dir/src`.
fn sources(dir: &Path) -> (PathBuf, Vec<(&'static str, Vec<u8>)>) {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    let keep = vec![("keep.bin", pattern(1, 3 * MB + 777)), ("small.txt", b"still here\n".to_vec())];
    for (n, b) in &keep {
        fs::write(src.join(n), b).unwrap();
    }
    fs::write(src.join("gone.bin"), pattern(2, 6 * MB)).unwrap();
    (src, keep)
}

/// An ext filesystem image made from `src` with `gone.bin` then deleted by debugfs.
fn ext_fs(dir: &Path, name: &str, src: &Path, mkfs: &str, extra: &[&str], size: &str) -> PathBuf {
    let f = dir.join(name);
    let mut args = vec!["-q", "-F", "-d", src.to_str().unwrap()];
    args.extend(extra);
    args.extend([f.to_str().unwrap(), size]);
    sh(mkfs, &args);
    sh("debugfs", &["-w", "-R", "rm gone.bin", f.to_str().unwrap()]);
    f
}

/// A FAT image (`kib` KiB) holding the files of `src`, with `gone.bin` then deleted by mdel.
fn fat_fs(dir: &Path, name: &str, src: &Path, kib: u64, extra: &[&str]) -> PathBuf {
    let f = dir.join(name);
    let fs_ = f.to_str().unwrap();
    let mut args = vec!["-C"];
    args.extend(extra);
    let k = kib.to_string();
    args.extend([fs_, k.as_str()]);
    sh("mkfs.vfat", &args);
    for n in ["keep.bin", "small.txt", "gone.bin"] {
        sh("mcopy", &["-i", fs_, src.join(n).to_str().unwrap(), &format!("::{n}")]);
    }
    sh("mdel", &["-i", fs_, "::gone.bin"]);
    f
}

/// Write `fs_img` into `raw` at byte `at`.
fn place(raw: &Path, fs_img: &Path, at: u64) {
    let mut data = fs::read(fs_img).unwrap();
    let mut disk = fs::read(raw).unwrap();
    disk.truncate(disk.len().max(at as usize + data.len()));
    disk[at as usize..at as usize + data.len()].swap_with_slice(&mut data);
    fs::write(raw, disk).unwrap();
}

fn compact(img: &str, extra: &[&str]) -> Value {
    let mut args = vec!["compact", "--fs-aware", "--json"];
    args.extend(extra);
    args.push(img);
    json(&ok(&mut vdi(&args)))
}

/// Export the disk, cut out the partition at `start`/`len`, and run `checker` on it.
fn fsck(work: &tempfile::TempDir, img: &str, start: u64, len: u64, checker: &[&str]) {
    let raw = p(work, "export.raw");
    ok(&mut vdi(&["convert", "-O", "raw", img, &raw]));
    let disk = fs::read(&raw).unwrap();
    let part = p(work, "part.img");
    fs::write(&part, &disk[start as usize..(start + len) as usize]).unwrap();
    let mut args = checker[1..].to_vec();
    args.push(&part);
    ok(Command::new(checker[0]).args(&args));
    fs::remove_file(&part).unwrap();
    fs::remove_file(&raw).unwrap();
}

fn cat(img: &str, part: u32, path: &str) -> Vec<u8> {
    let o = run(&mut vdi(&["cat", "-p", &part.to_string(), img, path]));
    assert!(o.status.success(), "vdi cat {path}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

fn qemu_check(img: &str) {
    if json(&ok(&mut vdi(&["info", "--json", img])))["format-specific"]["data"]["image-type"] != "diff" {
        ok(&mut qemu_img(&["check", "-f", "vdi", img])); // qemu-img reads no VDI snapshot
    }
    ok(&mut vdi(&["check", img]));
}

/// After a compaction: qemu-img and vdi check clean, each partition's checker clean on
/// its exported bytes, and every kept file reads as it was written.
fn verify(work: &tempfile::TempDir, img: &str, parts: &[(u32, u64, u64, &[&str])], keep: &[(&str, Vec<u8>)]) {
    qemu_check(img);
    for &(number, start, len, checker) in parts {
        fsck(work, img, start, len, checker);
        for (n, want) in keep {
            assert_same(&cat(img, number, &format!("/{n}")), want, n);
        }
    }
}

fn partition(v: &Value, n: u64) -> &Value {
    v["partitions"].as_array().unwrap().iter().find(|p| p["number"] == n).unwrap_or_else(|| panic!("no partition {n}: {v}"))
}

#[test]
fn gpt_ext4_and_fat16_give_back_what_was_deleted() {
    let work = scratch();
    let (src, keep) = sources(work.path());
    let raw = work.path().join("disk.raw");
    // 48 MiB: p1 ext4 at 1 MiB (20 MiB), p2 FAT16 at 21 MiB (20 MiB), then 6 MiB no
    // partition claims, holding bytes (a boot loader's, say) that must stay.
    let mut disk = vec![0u8; 48 * MB];
    disk[42 * MB..].copy_from_slice(&pattern(3, 6 * MB));
    fs::write(&raw, &disk).unwrap();
    sh("sgdisk", &["-n1:2048:+20M", "-n2:43008:+20M", "-t2:0700", raw.to_str().unwrap()]);
    place(&raw, &ext_fs(work.path(), "p1", &src, "mkfs.ext4", &[], "20M"), MB as u64);
    place(&raw, &fat_fs(work.path(), "p2", &src, 20 * 1024, &["-F", "16"]), 21 * MB as u64);
    let img = p(&work, "disk.vdi");
    ok(&mut vdi(&["convert", "-O", "vdi", raw.to_str().unwrap(), &img]));
    let tail = fs::read(&raw).unwrap()[42 * MB..].to_vec(); // with sgdisk's backup GPT
    fs::remove_file(&raw).unwrap();

    // Plain compact finds nothing: the deleted files' bytes are still there.
    let plain = p(&work, "plain.vdi");
    fs::copy(&img, &plain).unwrap();
    let pc = json(&ok(&mut vdi(&["compact", "--json", &plain])));
    fs::remove_file(&plain).unwrap();

    // The preview writes nothing and says what will come back.
    let before = sha256(&img);
    let dry = compact(&img, &["--dry-run"]);
    assert_eq!(sha256(&img), before, "--dry-run wrote");
    assert_eq!(dry["dry-run"], true);
    for (n, fs_) in [(1, "ext4"), (2, "vfat")] {
        let part = partition(&dry, n);
        assert_eq!(part["filesystem"], fs_, "{part}");
        assert_eq!(part["status"], "read", "{part}");
        // 6 MiB deleted in 1 MiB blocks: at least 5 whole blocks each.
        assert!(part["releasable-blocks"].as_u64().unwrap() >= 5, "{part}");
        assert!(part["free-bytes"].as_u64().unwrap() >= 6 * MB as u64, "{part}");
    }
    let releasable = dry["releasable-blocks"].as_u64().unwrap();

    let done = compact(&img, &[]);
    assert_eq!(done["blocks-released"].as_u64().unwrap(), releasable, "{done}");
    let gained = done["bytes-reclaimed"].as_u64().unwrap();
    assert_eq!(gained, done["file-length-before"].as_u64().unwrap() - done["file-length-after"].as_u64().unwrap());
    assert_eq!(fs::metadata(&img).unwrap().len(), done["file-length-after"].as_u64().unwrap());
    assert!(gained >= releasable * MB as u64, "{done}");
    assert!(gained > pc["bytes-reclaimed"].as_u64().unwrap() + 9 * MB as u64, "fs-aware {gained}, plain {pc}");
    // A second run finds nothing more to release.
    assert_eq!(compact(&img, &["--dry-run"])["releasable-blocks"], 0);

    let m = MB as u64;
    verify(&work, &img, &[(1, m, 20 * m, &["e2fsck", "-fn"]), (2, 21 * m, 20 * m, &["fsck.vfat", "-n"])], &keep);
    let out = p(&work, "after.raw");
    ok(&mut vdi(&["convert", "-O", "raw", &img, &out]));
    assert_same(&fs::read(&out).unwrap()[42 * MB..], &tail, "the space no partition claims");
}

#[test]
fn mbr_bigalloc_ext4_1k_ext2_and_ntfs_give_back_what_was_deleted() {
    let work = scratch();
    let (src, keep) = sources(work.path());
    let raw = work.path().join("disk.raw");
    fs::write(&raw, vec![0u8; 66 * MB]).unwrap();
    let table = "start=2048, size=49152, type=83\nstart=51200, size=40960, type=83\nstart=92160, size=32768, type=7\n";
    ok(Command::new("sfdisk").args(["-q", raw.to_str().unwrap()]).stdin(fs::File::open(write_tmp(&work, table)).unwrap()));
    place(&raw, &ext_fs(work.path(), "p1", &src, "mkfs.ext4", &["-O", "bigalloc", "-C", "16384"], "24M"), MB as u64);
    place(&raw, &ext_fs(work.path(), "p2", &src, "mkfs.ext2", &["-b", "1024"], "20M"), 25 * MB as u64);
    // NTFS: an 8 MiB file overwritten by a small one (ntfscp frees the old clusters).
    let ntfs = work.path().join("p3");
    let nt = ntfs.to_str().unwrap();
    fs::write(&ntfs, vec![0u8; 16 * MB]).unwrap();
    sh("mkntfs", &["-q", "-F", "-Q", nt]);
    let big = work.path().join("big.bin");
    fs::write(&big, pattern(4, 8 * MB)).unwrap();
    for (from, to) in [(src.join("keep.bin"), "keep.bin"), (src.join("small.txt"), "small.txt"), (big, "big.bin"), (src.join("small.txt"), "big.bin")] {
        sh("ntfscp", &["-f", nt, from.to_str().unwrap(), to]);
    }
    place(&raw, &ntfs, 45 * MB as u64);
    let img = p(&work, "disk.vdi");
    ok(&mut vdi(&["convert", "-O", "vdi", raw.to_str().unwrap(), &img]));
    fs::remove_file(&raw).unwrap();

    let done = compact(&img, &[]);
    for (n, kind) in [(1, "ext4"), (2, "ext2"), (3, "ntfs")] {
        let part = partition(&done, n);
        assert_eq!((part["filesystem"].as_str(), part["status"].as_str()), (Some(kind), Some("read")), "{part}");
        assert!(part["releasable-blocks"].as_u64().unwrap() >= 4, "{part}");
    }
    let m = MB as u64;
    let parts: [(u32, u64, u64, &[&str]); 3] =
        [(1, m, 24 * m, &["e2fsck", "-fn"]), (2, 25 * m, 20 * m, &["e2fsck", "-fn"]), (3, 45 * m, 16 * m, &["ntfsfix", "-n"])];
    verify(&work, &img, &parts, &keep);
    assert_eq!(cat(&img, 3, "/big.bin"), keep[1].1, "the overwritten NTFS file");
}

fn write_tmp(work: &tempfile::TempDir, text: &str) -> PathBuf {
    let f = work.path().join("table.txt");
    fs::write(&f, text).unwrap();
    f
}

/// `vdi compact --fs-aware` on `img` fails naming why; the file is unchanged, and the
/// preview reports the partition as not clean.
fn refused(img: &str, why: &str) {
    let before = sha256(img);
    let o = run(&mut vdi(&["compact", "--fs-aware", img]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{img}: not refused");
    assert!(err.contains("not clean") && err.contains(why), "{img}: {err}");
    assert!(err.contains("shut") || err.contains("fsck"), "{img}: no advice: {err}");
    assert_eq!(sha256(img), before, "{img}: written although refused");
    let dry = compact(img, &["--dry-run"]);
    assert_eq!(partition(&dry, 0)["status"], "not-clean", "{dry}");
}

#[test]
fn unclean_filesystems_are_refused_and_nothing_is_written() {
    let work = scratch();
    let (src, _) = sources(work.path());
    let recover = ext_fs(work.path(), "recover.img", &src, "mkfs.ext4", &[], "16M");
    sh("debugfs", &["-w", "-R", "feature needs_recovery", recover.to_str().unwrap()]);
    let unclean = ext_fs(work.path(), "unclean.img", &src, "mkfs.ext4", &[], "16M");
    sh("debugfs", &["-w", "-R", "ssv state 0", unclean.to_str().unwrap()]);
    let dirty = fat_fs(work.path(), "dirty.img", &src, 16 * 1024, &["-F", "16"]);
    // The dirty bit Linux sets in the boot sector while the volume is mounted.
    let mut b = fs::read(&dirty).unwrap();
    b[0x25] |= 1;
    fs::write(&dirty, b).unwrap();
    // ntfsresize marks the volume dirty so that Windows runs chkdsk at its next boot.
    let ntfs = work.path().join("ntfs.img");
    fs::write(&ntfs, vec![0u8; 16 * MB]).unwrap();
    sh("mkntfs", &["-q", "-F", "-Q", ntfs.to_str().unwrap()]);
    sh("ntfsresize", &["-f", "-f", "-s", "15M", ntfs.to_str().unwrap()]);
    // A hibernated Windows: hiberfil.sys starts with "HIBR".
    let hibernated = work.path().join("hibernated.img");
    fs::write(&hibernated, vec![0u8; 16 * MB]).unwrap();
    sh("mkntfs", &["-q", "-F", "-Q", hibernated.to_str().unwrap()]);
    let hib = work.path().join("hiberfil.sys");
    fs::write(&hib, [b"HIBR".as_slice(), &pattern(5, 4096)].concat()).unwrap();
    sh("ntfscp", &["-f", hibernated.to_str().unwrap(), hib.to_str().unwrap(), "hiberfil.sys"]);
    // A Windows left with fast startup: $LogFile's restart area has a client in use and no
    // "clean" flag (ntfs-3g: "metadata kept in Windows cache").
    let cached = work.path().join("cached.img");
    fs::write(&cached, vec![0u8; 16 * MB]).unwrap();
    sh("mkntfs", &["-q", "-F", "-Q", cached.to_str().unwrap()]);
    let info = sh("ntfsinfo", &["-f", "-i", "2", "-v", cached.to_str().unwrap()]);
    let runs = info.lines().skip_while(|l| !l.contains("Runlist:")).nth(1).expect("ntfsinfo shows $LogFile's runs");
    let lcn = u64::from_str_radix(runs.split_whitespace().nth(1).unwrap().trim_start_matches("0x"), 16).unwrap();
    let mut page = vec![0u8; 512];
    page[..4].copy_from_slice(b"RSTR");
    page[0x18] = 0x30; // restart area offset
    page[0x30] = 1; // current LSN
    page[0x38] = 1; // log clients
    page[0x3a..0x3c].copy_from_slice(&[0xff, 0xff]); // client free list: none
    // client in use list 0 (a client), flags 0 (not clean)
    let mut b = fs::read(&cached).unwrap();
    let at = (lcn * 4096) as usize;
    b[at..at + 512].copy_from_slice(&page);
    fs::write(&cached, b).unwrap();
    let exfat = exfat_fs(work.path(), "dirty-exfat.img");
    let mut b = fs::read(&exfat).unwrap();
    b[0x6a] |= 2; // VolumeDirty (outside the boot checksum)
    fs::write(&exfat, b).unwrap();
    let cases = [
        (exfat, "VolumeDirty"),
        (cached, "$LogFile is not clean"),
        (recover, "needs recovery"),
        (unclean, "not unmounted cleanly"),
        (dirty, "dirty bit"),
        (ntfs, "dirty flag"),
        (hibernated, "hibernated"),
    ];
    for (f, why) in cases {
        let img = p(&work, &format!("{}.vdi", f.file_name().unwrap().to_str().unwrap()));
        ok(&mut vdi(&["convert", "-O", "vdi", f.to_str().unwrap(), &img]));
        refused(&img, why);
    }
}

#[test]
fn fixture_3ext_preview_counts_what_its_filesystems_call_free() {
    let fixture = fixture("3ext");
    let img = fixture.to_str().unwrap();
    let mtime = fs::metadata(&fixture).unwrap().modified().unwrap();
    let dry = compact(img, &["--dry-run"]);
    assert_eq!(fs::metadata(&fixture).unwrap().modified().unwrap(), mtime);
    let fs_ = json(&ok(&mut vdi(&["fs", "--json", img])));
    for (n, kind) in [(1, "ext4"), (2, "ext4"), (3, "ext2")] {
        let part = partition(&dry, n);
        assert_eq!((part["filesystem"].as_str(), part["status"].as_str()), (Some(kind), Some("read")), "{part}");
        // What the bitmaps call free is what the superblock counts free.
        let sb = fs_["partitions"].as_array().unwrap().iter().find(|p| p["number"] == n).unwrap();
        assert_eq!(part["free-bytes"], sb["free"], "{part} / {sb}");
        let (free, rel) = (part["free-blocks"].as_u64().unwrap(), part["releasable-blocks"].as_u64().unwrap());
        assert!(rel > 0 && rel <= free, "{part}");
    }
}

#[test]
fn a_snapshot_hides_what_its_parent_held_with_zero_blocks() {
    let work = scratch();
    let (src, keep) = sources(work.path());
    // The base holds gone.bin; the snapshot deletes it and writes the whole disk again, so
    // its blocks hold the deleted file's bytes, and so do the base's below them.
    let fat = fat_fs(work.path(), "fat.img", &src, 24 * 1024, &["-F", "16"]);
    let f = fat.to_str().unwrap();
    sh("mdel", &["-i", f, "::keep.bin"]); // fat_fs deleted gone.bin: put it back, keep keep.bin
    for n in ["gone.bin", "keep.bin"] {
        sh("mcopy", &["-i", f, src.join(n).to_str().unwrap(), &format!("::{n}")]);
    }
    let base = p(&work, "base.vdi");
    ok(&mut vdi(&["convert", "-O", "vdi", f, &base]));
    sh("mdel", &["-i", f, "::gone.bin"]);
    let snap = p(&work, "snap.vdi");
    ok(&mut vdi(&["create", "--parent", &base, &snap]));
    ok(&mut vdi(&["write", &snap, f]));
    let now = fs::read(&fat).unwrap();
    let base_sha = sha256(&base);

    let done = compact(&snap, &[]);
    let released = done["blocks-released"].as_u64().unwrap();
    assert!(released >= 3, "{done}");
    let out = p(&work, "chain.raw");
    ok(&mut vdi(&["convert", "-O", "raw", &snap, &out]));
    let read = fs::read(&out).unwrap();
    let mut zeroed = 0;
    for (i, (a, b)) in read.chunks(MB).zip(now.chunks(MB)).enumerate() {
        if a != b {
            assert!(a.iter().all(|&x| x == 0), "block {i} reads neither the snapshot's bytes nor zeros");
            zeroed += 1;
        }
    }
    // FREE would have shown the base's copy of gone.bin: each released block reads zeros.
    assert_eq!(zeroed, released);
    verify(&work, &snap, &[(0, 0, 24 * MB as u64, &["fsck.vfat", "-n"])], &keep);
    assert_eq!(sha256(&base), base_sha, "the base was written");
}

/// A 24 MiB exFAT made over stale bytes (exfatprogs writes no files; its free clusters
/// hold what the disk held before, as a deleted file's clusters do).
fn exfat_fs(dir: &Path, name: &str) -> PathBuf {
    let f = dir.join(name);
    fs::write(&f, pattern(6, 24 * MB)).unwrap();
    sh("mkfs.exfat", &[f.to_str().unwrap()]);
    f
}

#[test]
fn exfat_stale_free_clusters_come_back() {
    let work = scratch();
    let f = exfat_fs(work.path(), "exfat.img");
    let img = p(&work, "exfat.vdi");
    ok(&mut vdi(&["convert", "-O", "vdi", f.to_str().unwrap(), &img]));
    let plain = p(&work, "plain.vdi");
    fs::copy(&img, &plain).unwrap();
    assert_eq!(json(&ok(&mut vdi(&["compact", "--json", &plain])))["bytes-reclaimed"], 0);
    let done = compact(&img, &[]);
    let part = partition(&done, 0);
    assert_eq!((part["filesystem"].as_str(), part["status"].as_str()), (Some("exfat"), Some("read")), "{part}");
    // All but the boot region, FAT, bitmap, up-case table and root directory is free.
    assert!(part["free-bytes"].as_u64().unwrap() > 21 * MB as u64, "{part}");
    assert!(done["blocks-released"].as_u64().unwrap() >= 20, "{done}");
    verify(&work, &img, &[(0, 0, 24 * MB as u64, &["fsck.exfat", "-n"])], &[]);
}

/// Damaged metadata never panics the free-space readers: each filesystem's first 1 MiB
/// (superblocks, descriptors, bitmaps, FATs, MFT, exFAT bitmap) gets bytes overwritten at
/// pseudo-random places, and the plan is read, or an error, or the partition is reported
/// not read. On ext, whose descriptors count each group's free clusters, a damaged bitmap
/// never makes a used block free (FAT, exFAT and NTFS keep no such count: a used entry
/// zeroed by damage is believed, as their checkers would).
#[test]
fn damaged_filesystems_are_read_without_panics_and_release_nothing_used() {
    use vdi::volume::FreePlan;
    use vdi::{create, CreateOptions, MemStorage, NoMonitor, Uuid, VdiImage};
    let work = scratch();
    let (src, _) = sources(work.path());
    let ntfs = work.path().join("ntfs.img");
    fs::write(&ntfs, vec![0u8; 8 * MB]).unwrap();
    sh("mkntfs", &["-q", "-F", "-Q", ntfs.to_str().unwrap()]);
    let images = [
        ext_fs(work.path(), "ext4.img", &src, "mkfs.ext4", &["-b", "1024"], "12M"),
        fat_fs(work.path(), "fat.img", &src, 12 * 1024, &["-F", "12"]),
        ntfs,
        exfat_fs(work.path(), "exfat.img"),
    ];
    for (k, f) in images.into_iter().enumerate() {
        let raw = fs::read(&f).unwrap();
        let mut o = CreateOptions::new(raw.len() as u64, Uuid::from_u128(1), Uuid::from_u128(2));
        o.block_size = 64 * 1024;
        let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        img.write_at(0, &raw).unwrap();
        let good = FreePlan::scan(&mut img).unwrap();
        let base = img.into_storage();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..40 {
            let mut img = VdiImage::open(base.clone()).unwrap();
            for _ in 0..4 {
                let at = next() % MB as u64;
                img.write_at(at, &next().to_le_bytes()[..(next() % 8 + 1) as usize]).unwrap();
            }
            let Ok(plan) = FreePlan::scan(&mut img) else { continue };
            if k != 0 {
                continue;
            }
            // Blocks of the first MiB (where the damage is) may be judged differently; the
            // rest must be free only where the undamaged filesystem says so.
            for b in (MB as u64 / o.block_size as u64)..raw.len() as u64 / o.block_size as u64 {
                assert!(!plan.is_free(b) || good.is_free(b), "{}: block {b} free only when damaged", f.display());
            }
        }
    }
}
