//! Partitions, filesystems and files inside a disk, against the reference tools: disks
//! partitioned by sfdisk/sgdisk, filesystems made by mkfs.ext4 -d, mkfs.vfat + mcopy, read
//! back through `vdi fs`, `vdi ls`, `vdi cat`, `vdi extract` (and the engine's extents),
//! and the VirtualBox-made 3ext fixture read as debugfs reads it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vdi::volume::{DiskReader, EntryKind, Filesystem, PartitionTable};
use vdi_tests::*;

const MB: usize = 1 << 20;
/// The mtime every source file gets (mkfs.ext4 -d keeps it).
const MTIME: i64 = 1_600_000_000;

fn sh(cmd: &str, args: &[&str]) -> String {
    ok(Command::new(cmd).args(args).env("MTOOLS_SKIP_CHECK", "1"))
}

/// The source tree: spaces and non-ASCII names, an empty file, nested directories, a file
/// spanning several 1 MiB VDI blocks, and (not for FAT) a symlink.
fn make_tree(dir: &Path, symlink: bool) -> PathBuf {
    let src = dir.join(if symlink { "src" } else { "src-fat" });
    fs::create_dir_all(src.join("docs/deep/er")).unwrap();
    fs::create_dir_all(src.join("with space")).unwrap();
    fs::write(src.join("hello.txt"), b"hello, world\n").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::write(src.join("with space/naïve café.txt"), "crème brûlée\n").unwrap();
    fs::write(src.join("docs/deep/er/nested.txt"), b"deep\n").unwrap();
    fs::write(src.join("docs/big.bin"), pattern(7, 3 * MB + 12345)).unwrap();
    if symlink {
        std::os::unix::fs::symlink("docs/big.bin", src.join("link")).unwrap();
        std::os::unix::fs::symlink("../with space/../docs/deep/er/nested.txt", src.join("docs/up")).unwrap();
        std::os::unix::fs::symlink("loop", src.join("loop")).unwrap();
    }
    sh("find", &[src.to_str().unwrap(), "-exec", "touch", "-h", "-d", &format!("@{MTIME}"), "{}", "+"]);
    src
}

/// The tree under `dir` as path -> (kind, size, symlink target).
fn host_tree(dir: &Path) -> BTreeMap<String, (&'static str, u64, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let path = format!("{rel}/{name}");
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.file_type().is_symlink() {
                let t = fs::read_link(e.path()).unwrap().to_str().unwrap().to_string();
                out.insert(path, ("symlink", m.len(), Some(t)));
            } else if m.is_dir() {
                out.insert(path.clone(), ("dir", 0, None));
                stack.push((e.path(), path));
            } else {
                out.insert(path, ("file", m.len(), None));
            }
        }
    }
    out
}

/// The tree inside partition `part` of `img`, walked with `vdi ls --json` (lost+found left out).
fn image_tree(img: &str, part: &str) -> BTreeMap<String, (&'static str, u64, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let path = if dir.is_empty() { "/".to_string() } else { dir.clone() };
        let v = json(&ok(&mut vdi(&["ls", "--json", "-p", part, img, &path])));
        for e in v["entries"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            if name == "lost+found" {
                continue;
            }
            let p = format!("{dir}/{name}");
            let kind = match e["kind"].as_str().unwrap() {
                "dir" => "dir",
                "file" => "file",
                "symlink" => "symlink",
                k => panic!("unexpected kind {k}"),
            };
            let size = if kind == "dir" { 0 } else { e["size"].as_u64().unwrap() };
            out.insert(p.clone(), (kind, size, e["target"].as_str().map(String::from)));
            if kind == "dir" {
                stack.push(p);
            }
        }
    }
    out
}

/// Everything `vdi` shows of partition `part` equals the source: the listing, every file's
/// bytes through `vdi cat`, and an extraction (bytes, symlinks, and mtimes when `mtimes`).
fn check_partition(work: &tempfile::TempDir, img: &str, part: &str, src: &Path, mtimes: bool) {
    let want = host_tree(src);
    assert_eq!(image_tree(img, part), want, "listing of partition {part}");
    for (path, (kind, _, _)) in &want {
        if *kind == "file" {
            let o = run(&mut vdi(&["cat", "-p", part, img, path]));
            assert!(o.status.success(), "cat {path}: {}", String::from_utf8_lossy(&o.stderr));
            assert_same(&o.stdout, &fs::read(src.join(&path[1..])).unwrap(), &format!("partition {part} {path}"));
        }
    }
    let dest = work.path().join(format!("out-{part}"));
    fs::create_dir(&dest).unwrap();
    ok(&mut vdi(&["extract", "-p", part, img, "/", dest.to_str().unwrap()]));
    let mut got = host_tree(&dest);
    got.remove("/lost+found");
    assert_eq!(got, want, "extracted tree of partition {part}");
    for (path, (kind, _, _)) in &want {
        let (a, b) = (src.join(&path[1..]), dest.join(&path[1..]));
        if *kind == "file" {
            assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "extracted {path}");
        }
        if mtimes {
            assert_eq!(fs::symlink_metadata(&b).unwrap().mtime(), MTIME, "mtime of extracted {path}");
        }
    }
    // A directory extracts under its own name, like cp -r.
    let dest2 = work.path().join(format!("docs-{part}"));
    fs::create_dir(&dest2).unwrap();
    ok(&mut vdi(&["extract", "-p", part, img, "/docs", dest2.to_str().unwrap()]));
    assert_eq!(fs::read(dest2.join("docs/deep/er/nested.txt")).unwrap(), b"deep\n");
}

/// A filesystem image file made by `mkfs` and its arguments, written into `raw` at `sector`.
fn place(raw: &Path, fs_img: &Path, sector: u64) {
    let (r, f) = (raw.to_str().unwrap(), fs_img.to_str().unwrap());
    sh("dd", &[&format!("if={f}"), &format!("of={r}"), "bs=512", &format!("seek={sector}"), "conv=notrunc", "status=none"]);
    fs::remove_file(fs_img).unwrap();
}

fn ext_fs(work: &Path, name: &str, src: &Path, mkfs: &str, extra: &[&str], size: &str) -> PathBuf {
    let f = work.join(name);
    let mut args = vec!["-q", "-F", "-d", src.to_str().unwrap()];
    args.extend(extra);
    args.extend([f.to_str().unwrap(), size]);
    sh(mkfs, &args);
    f
}

fn fat_fs(work: &Path, name: &str, src: &Path, kib: u64, extra: &[&str]) -> PathBuf {
    let f = work.join(name);
    let mut args = vec!["-C"];
    args.extend(extra);
    let k = kib.to_string();
    args.extend([f.to_str().unwrap(), k.as_str()]);
    sh("mkfs.vfat", &args);
    let mut copy = vec!["-s", "-m", "-i", f.to_str().unwrap()];
    let items: Vec<String> = fs::read_dir(src).unwrap().map(|e| e.unwrap().path().to_str().unwrap().to_string()).collect();
    copy.extend(items.iter().map(String::as_str));
    copy.push("::/");
    sh("mcopy", &copy);
    f
}

fn to_vdi(work: &tempfile::TempDir, raw: &Path, name: &str) -> String {
    let img = p(work, name);
    ok(&mut vdi(&["convert", "-O", "vdi", raw.to_str().unwrap(), &img]));
    img
}

fn partitions(img: &str) -> Value {
    json(&ok(&mut vdi(&["fs", "--json", img])))
}

/// A file's extents from the engine, read straight off the virtual disk, give its bytes.
fn extents_read_back(img: &str, number: u32, path: &str, want: &[u8]) {
    let storage = vdi_cli::FileStorage::open(Path::new(img)).unwrap();
    let mut disk = vdi::VdiImage::open(storage).unwrap();
    let table = PartitionTable::read(&mut DiskReader(&mut disk)).unwrap();
    let part = table.partition(number).unwrap().clone();
    let mut fs = Filesystem::open(&mut DiskReader(&mut disk), &part).unwrap();
    let file = fs.lookup(&mut DiskReader(&mut disk), path).unwrap();
    assert_eq!(file.kind, EntryKind::File);
    let mut got = vec![];
    let mut from = 0;
    loop {
        let x = fs.extents(&mut DiskReader(&mut disk), &file, from, 2).unwrap();
        if x.is_empty() {
            break;
        }
        for e in &x {
            assert_eq!(e.offset, got.len() as u64, "extents follow each other");
            let mut b = vec![0u8; e.len as usize];
            if let Some(at) = e.disk_offset {
                assert!(at >= part.start && at + e.len <= part.start + part.size, "extent inside the partition");
                disk.read_at(at, &mut b).unwrap();
            }
            got.extend(b);
        }
        from = got.len() as u64;
    }
    assert_same(&got, want, &format!("{path} read through its extents"));
}

#[test]
fn mbr_with_logical_partitions_ext4_vfat_ext2() {
    let (work, src, fat_src, raw) = source_and_disk("disk.raw", 64);
    let w = work.path();
    sfdisk(
        &raw,
        "label: dos\nstart=2048, size=30720, type=83\nstart=34816, size=95232, type=5\n\
         start=36864, size=40960, type=e\nstart=79872, size=40960, type=83\n",
    );
    place(&raw, &ext_fs(w, "p1", &src, "mkfs.ext4", &["-L", "linux root", "-b", "4096"], "15M"), 2048);
    place(&raw, &fat_fs(w, "p5", &fat_src, 20480, &["-n", "FATVOL"]), 36864);
    place(&raw, &ext_fs(w, "p6", &src, "mkfs.ext2", &["-L", "old", "-b", "1024"], "20M"), 79872);
    let img = to_vdi(&work, &raw, "mbr.vdi");
    fs::remove_file(&raw).unwrap();

    let t = partitions(&img);
    assert_eq!(t["scheme"], "mbr");
    let parts = t["partitions"].as_array().unwrap();
    let summary: Vec<(u64, u64, Value, Value, Value)> = parts
        .iter()
        .map(|p| (p["number"].as_u64().unwrap(), p["start"].as_u64().unwrap(), p["type"].clone(), p["filesystem"].clone(), p["label"].clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 2048 * 512, "0x83".into(), "ext4".into(), "linux root".into()),
            (2, 34816 * 512, "0x05".into(), Value::Null, Value::Null),
            (5, 36864 * 512, "0x0e".into(), "vfat".into(), "FATVOL".into()),
            (6, 79872 * 512, "0x83".into(), "ext2".into(), "old".into()),
        ]
    );
    assert_eq!(t["findings"], serde_json::json!([]));
    check_partition(&work, &img, "1", &src, true);
    check_partition(&work, &img, "5", &fat_src, false);
    check_partition(&work, &img, "6", &src, true);
    let big = fs::read(src.join("docs/big.bin")).unwrap();
    for n in [1, 5, 6] {
        extents_read_back(&img, n, "/docs/big.bin", &big);
    }
    // Several filesystems: a partition must be named; a wrong one is refused by number.
    let o = run(&mut vdi(&["ls", &img]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("partitions 1, 5, 6"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&mut vdi(&["cat", "-p", "2", &img, "/hello.txt"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("partition 2 holds no recognised filesystem"));
    let o = run(&mut vdi(&["cat", "-p", "1", &img, "/docs"]));
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "vdi: docs: not a regular file");
    let o = run(&mut vdi(&["cat", "-p", "1", &img, "/nope/x"]));
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "vdi: /nope/x: no such file or directory");
}

/// A scratch folder with the two source trees (with and without a symlink) and an empty
/// raw disk of `mib` MiB.
fn source_and_disk(name: &str, mib: u64) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let work = scratch();
    let (src, fat_src) = (make_tree(work.path(), true), make_tree(work.path(), false));
    let raw = work.path().join(name);
    fs::File::create(&raw).unwrap().set_len(mib << 20).unwrap();
    (work, src, fat_src, raw)
}

/// Partition `raw` with an sfdisk script.
fn sfdisk(raw: &Path, script: &str) {
    let mut child = Command::new("sfdisk").args(["-q", raw.to_str().unwrap()]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

fn sgdisk(raw: &Path, args: &[&str]) {
    let mut a: Vec<&str> = args.to_vec();
    a.push(raw.to_str().unwrap());
    sh("sgdisk", &a);
}

#[test]
fn gpt_with_names_fat32_ext4_and_a_damaged_header() {
    let (work, src, fat_src, raw) = source_and_disk("gpt.raw", 56);
    let w = work.path();
    sgdisk(&raw, &["-o", "-n", "1:2048:+38M", "-t", "1:ef00", "-c", "1:EFI système", "-n", "2:0:0", "-t", "2:8302", "-c", "2:home"]);
    place(&raw, &fat_fs(w, "p1", &fat_src, 38 * 1024, &["-F", "32", "-s", "1", "-n", "ESP"]), 2048);
    let start2: u64 = 2048 + 38 * 2048;
    let size2 = (56 * MB as u64) / 512 - 34 - start2;
    place(&raw, &ext_fs(w, "p2", &src, "mkfs.ext4", &["-L", "home"], &format!("{}k", size2 / 2)), start2);
    let img = to_vdi(&work, &raw, "gpt.vdi");
    let t = partitions(&img);
    assert_eq!(t["scheme"], "gpt");
    assert_eq!(t["findings"], serde_json::json!([]));
    let p = &t["partitions"];
    assert_eq!((p[0]["number"].as_u64(), p[0]["name"].as_str(), p[0]["type_name"].as_str()), (Some(1), Some("EFI système"), Some("EFI system partition")));
    assert_eq!(p[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!((p[1]["number"].as_u64(), p[1]["name"].as_str(), p[1]["type_name"].as_str()), (Some(2), Some("home"), Some("Linux /home")));
    assert_eq!((p[0]["filesystem"].as_str(), p[1]["filesystem"].as_str()), (Some("vfat"), Some("ext4")));
    check_partition(&work, &img, "1", &fat_src, false);
    check_partition(&work, &img, "2", &src, true);

    // A hybrid MBR (sgdisk -h 1: partition 1 also in the MBR): the GPT is read.
    let hybrid = w.join("hybrid.raw");
    fs::copy(&raw, &hybrid).unwrap();
    sgdisk(&hybrid, &["-h", "1"]);
    let t = partitions(&to_vdi(&work, &hybrid, "hybrid.vdi"));
    fs::remove_file(&hybrid).unwrap();
    assert_eq!((t["scheme"].as_str(), t["partitions"].as_array().unwrap().len()), (Some("hybrid"), 2));
    assert_eq!(t["findings"], serde_json::json!([]));

    // The backup header wiped: a finding, the partitions still read.
    let damaged = w.join("damaged.raw");
    fs::copy(&raw, &damaged).unwrap();
    let last = (56 * MB as u64) / 512 - 1;
    sh("dd", &["if=/dev/zero", &format!("of={}", damaged.display()), "bs=512", &format!("seek={last}"), "count=1", "conv=notrunc", "status=none"]);
    let t = partitions(&to_vdi(&work, &damaged, "nobackup.vdi"));
    assert_eq!(t["partitions"].as_array().unwrap().len(), 2);
    let f = t["findings"].as_array().unwrap();
    assert!(f.len() == 1 && f[0].as_str().unwrap().starts_with("the backup GPT is damaged"), "{f:?}");
    // The primary wiped instead: read from the backup, with a finding.
    fs::copy(&raw, &damaged).unwrap();
    sh("dd", &["if=/dev/zero", &format!("of={}", damaged.display()), "bs=512", "seek=1", "count=1", "conv=notrunc", "status=none"]);
    let img2 = to_vdi(&work, &damaged, "noprimary.vdi");
    let t = partitions(&img2);
    assert_eq!(t["partitions"][1]["name"], "home");
    assert!(t["findings"][0].as_str().unwrap().starts_with("the primary GPT is damaged"), "{t}");
    assert_eq!(ok(&mut vdi(&["cat", "-p", "2", &img2, "/hello.txt"])), "hello, world\n");
}

#[test]
fn a_bare_filesystem_and_a_snapshot_that_rewrote_a_file() {
    let work = scratch();
    let w = work.path();
    let src = make_tree(w, true);
    let f = ext_fs(w, "bare.raw", &src, "mkfs.ext4", &["-b", "4096"], "16M");
    // Where /hello.txt's first block is, as debugfs says.
    let block: u64 = sh("debugfs", &["-R", "bmap /hello.txt 0", f.to_str().unwrap()]).trim().parse().unwrap();
    let base = to_vdi(&work, &f, "base.vdi");
    fs::remove_file(&f).unwrap();
    let t = partitions(&base);
    assert_eq!((t["scheme"].as_str(), t["partitions"][0]["number"].as_u64()), (Some("none"), Some(0)));
    assert_eq!(t["partitions"][0]["filesystem"], "ext4");
    // One filesystem: no --partition needed.
    assert_eq!(ok(&mut vdi(&["cat", &base, "/hello.txt"])), "hello, world\n");
    let child = p(&work, "child.vdi");
    ok(&mut vdi(&["create", "--parent", &base, &child]));
    let data = p(&work, "new.bin");
    fs::write(&data, b"HELLO, WORLD\n").unwrap();
    ok(&mut vdi(&["write", "--offset", &(block * 4096).to_string(), &child, &data]));
    assert_eq!(ok(&mut vdi(&["cat", &child, "/hello.txt"])), "HELLO, WORLD\n");
    // cat follows symlinks (relative, through ".."), and stops a loop.
    assert_eq!(ok(&mut vdi(&["cat", &child, "/docs/up"])), "deep\n");
    assert_eq!(run(&mut vdi(&["cat", &child, "/link"])).stdout, fs::read(src.join("docs/big.bin")).unwrap());
    let o = run(&mut vdi(&["cat", &child, "/loop"]));
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "vdi: symlinks followed is 41, more than the 40 this engine reads");
    assert_eq!(ok(&mut vdi(&["cat", &base, "/hello.txt"])), "hello, world\n");
    let ls = ok(&mut vdi(&["ls", "-l", &child, "/"]));
    assert!(ls.lines().any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("link -> docs/big.bin")), "{ls}");
}

/// Every file of the 3ext fixture's partitions 2 (ext4 with bigalloc, 1 KiB blocks) and 3
/// (ext2, 4 KiB blocks) reads as debugfs reads it from the partition's bytes, and the
/// directories list the same names; partition 1 (ext4, 1 KiB blocks) holds only lost+found.
#[test]
fn fixture_3ext_reads_as_debugfs_reads_it() {
    let img = fixture("3ext");
    let img = img.to_str().unwrap();
    let t = partitions(img);
    let kinds: Vec<&str> = t["partitions"].as_array().unwrap().iter().map(|p| p["filesystem"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ext4", "ext4", "ext2"]);
    let root1 = json(&ok(&mut vdi(&["ls", "--json", "-p", "1", img])));
    assert_eq!(root1["entries"].as_array().unwrap().len(), 1);
    let work = scratch();
    for (n, part) in t["partitions"].as_array().unwrap().iter().enumerate().skip(1) {
        let number = (n + 1).to_string();
        let raw = p(&work, "part.raw");
        let spec = format!(
            r#"json:{{"driver":"raw","offset":{},"size":{},"file":{{"driver":"vdi","file":{{"driver":"file","filename":"{img}"}}}}}}"#,
            part["start"], part["size"]
        );
        ok(&mut qemu_img(&["convert", "-O", "raw", &spec, &raw]));
        let tree = image_tree(img, &number);
        assert!(tree.len() >= 10, "{tree:?}");
        for (path, (kind, size, _)) in &tree {
            if *kind == "file" {
                let o = run(Command::new("debugfs").args(["-c", "-R", &format!("cat \"{path}\""), &raw]));
                let ours = run(&mut vdi(&["cat", "-p", &number, img, path]));
                assert_eq!(ours.stdout.len() as u64, *size);
                assert_same(&ours.stdout, &o.stdout, &format!("partition {number} {path}"));
            } else if *kind == "dir" {
                let ls = run(Command::new("debugfs").args(["-c", "-R", &format!("ls -p \"{path}\""), &raw]));
                let mut theirs: Vec<String> = String::from_utf8_lossy(&ls.stdout)
                    .lines()
                    .filter_map(|l| l.split('/').nth(5).map(String::from))
                    .filter(|n| n != "." && n != ".." && !n.is_empty())
                    .collect();
                let mut ours: Vec<String> = json(&ok(&mut vdi(&["ls", "--json", "-p", &number, img, path])))["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["name"].as_str().unwrap().to_string())
                    .collect();
                theirs.sort();
                ours.sort();
                assert_eq!(ours, theirs, "partition {number} {path}");
            }
        }
        fs::remove_file(&raw).unwrap();
    }
}

#[test]
fn fixture_3hfs_is_detected() {
    let img = fixture("3hfs");
    let t = partitions(img.to_str().unwrap());
    assert_eq!(t["scheme"], "gpt");
    let kinds: Vec<&str> = t["partitions"].as_array().unwrap().iter().map(|p| p["filesystem"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["vfat", "hfsplus", "hfsplus", "hfsplus"]);
    let names: Vec<&str> = t["partitions"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["EFI System Partition", "vol1", "vol2", "vol3"]);
    assert_eq!(t["partitions"][1]["readable"], false);
    let o = run(&mut vdi(&["ls", "-p", "2", img.to_str().unwrap()]));
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "vdi: partition 2 holds hfsplus, whose files are not read (detection only)");
}

#[test]
fn ntfs_files_read_as_written_by_ntfscp() {
    let work = scratch();
    let w = work.path();
    let raw = w.join("ntfs.raw");
    fs::File::create(&raw).unwrap().set_len(40 * MB as u64).unwrap();
    sfdisk(&raw, "label: dos\nstart=2048, type=7\n");
    let part = w.join("p1");
    fs::File::create(&part).unwrap().set_len(40 * MB as u64 - MB as u64).unwrap();
    sh("mkntfs", &["-q", "-F", "-Q", "-L", "WINVOL", part.to_str().unwrap()]);
    // Files: one spanning several VDI blocks, an empty one, non-ASCII names, and enough
    // names that the root's index needs index records ($INDEX_ALLOCATION).
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("big.bin".into(), pattern(11, 3 * MB + 777)),
        ("empty".into(), vec![]),
        ("naïve café.txt".into(), "crème\n".into()),
    ];
    for i in 0..40 {
        files.push((format!("many file {i}.txt"), format!("file {i}\n").into_bytes()));
    }
    for (name, bytes) in &files {
        let f = w.join("one");
        fs::write(&f, bytes).unwrap();
        sh("ntfscp", &["-q", part.to_str().unwrap(), f.to_str().unwrap(), name]);
    }
    let theirs = sh("ntfsls", &[part.to_str().unwrap()]);
    place(&raw, &part, 2048);
    let img = to_vdi(&work, &raw, "ntfs.vdi");
    fs::remove_file(&raw).unwrap();
    let t = partitions(&img);
    let p0 = &t["partitions"][0];
    assert_eq!((p0["filesystem"].as_str(), p0["readable"].as_bool(), p0["label"].as_str()), (Some("ntfs"), Some(true), Some("WINVOL")));
    let listed = json(&ok(&mut vdi(&["ls", "--json", &img, "/"])));
    let mut ours: Vec<&str> = listed["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = theirs.lines().filter(|l| !l.starts_with('$') && !l.is_empty()).collect();
    ours.sort();
    want.sort();
    assert_eq!(ours, want, "the root as ntfsls lists it");
    assert_eq!(ours.len(), files.len());
    for (name, bytes) in &files {
        let o = run(&mut vdi(&["cat", &img, &format!("/{name}")]));
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        assert_same(&o.stdout, bytes, name);
    }
    extents_read_back(&img, 1, "/big.bin", &files[0].1);
}

/// What `vdi fs` says of bare filesystems equals what `blkid -p` says: TYPE, LABEL, UUID.
#[test]
fn detection_agrees_with_blkid() {
    let work = scratch();
    let w = work.path();
    let cases: [(&str, &str, &[&str]); 6] = [
        ("ext2", "mkfs.ext2", &["-q", "-F", "-L", "two"]),
        ("ext3", "mkfs.ext3", &["-q", "-F", "-L", "three"]),
        ("ext4", "mkfs.ext4", &["-q", "-F", "-L", "four é"]),
        ("vfat", "mkfs.vfat", &["-n", "FATLABEL"]),
        ("ntfs", "mkntfs", &["-q", "-F", "-Q", "-L", "NT label"]),
        ("swap", "mkswap", &["-q", "-L", "swaplabel"]),
    ];
    for (kind, mkfs, args) in cases {
        let raw = w.join(format!("{kind}.raw"));
        fs::File::create(&raw).unwrap().set_len(8 * MB as u64).unwrap();
        let mut a = args.to_vec();
        a.push(raw.to_str().unwrap());
        sh(mkfs, &a);
        let tag = |t: &str| sh("blkid", &["-p", "-o", "value", "-s", t, raw.to_str().unwrap()]).trim_end_matches('\n').to_string();
        let theirs = (tag("TYPE"), tag("LABEL"), tag("UUID"));
        let t = partitions(&to_vdi(&work, &raw, &format!("{kind}.vdi")));
        fs::remove_file(&raw).unwrap();
        let p = &t["partitions"][0];
        let ours = (p["filesystem"].as_str().unwrap(), p["label"].as_str().unwrap(), p["uuid"].as_str().unwrap());
        assert_eq!(ours, (theirs.0.as_str(), theirs.1.as_str(), theirs.2.as_str()), "{kind}");
    }
}

/// A directory of 400 names, indexed by `e2fsck -D` (a hashed directory, dir_index): every
/// name is listed once and found by lookup.
#[test]
fn a_hashed_ext4_directory_lists_every_name() {
    let work = scratch();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("many")).unwrap();
    let names: Vec<String> = (0..400).map(|i| format!("a fairly long file name number {i:04}.txt")).collect();
    for n in &names {
        fs::write(src.join("many").join(n), n.as_bytes()).unwrap();
    }
    let raw = ext_fs(work.path(), "h.raw", &src, "mkfs.ext4", &["-b", "1024"], "8M");
    let r = run(Command::new("e2fsck").args(["-fyD", raw.to_str().unwrap()]));
    assert!(r.status.code().is_some_and(|c| c <= 1), "e2fsck: {}", String::from_utf8_lossy(&r.stdout));
    let stat = sh("debugfs", &["-R", "stat /many", raw.to_str().unwrap()]);
    let flags = u32::from_str_radix(stat.split("Flags: 0x").nth(1).unwrap().split_whitespace().next().unwrap(), 16).unwrap();
    assert!(flags & 0x1000 != 0, "the directory is indexed (EXT4_INDEX_FL): {stat}");
    let img = to_vdi(&work, &raw, "h.vdi");
    let listed = json(&ok(&mut vdi(&["ls", "--json", &img, "/many"])));
    let mut ours: Vec<&str> = listed["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    ours.sort();
    assert_eq!(ours, names.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(ok(&mut vdi(&["cat", &img, &format!("/many/{}", names[399])])), names[399]);
}

/// ext4 with inline_data: small files and directories live in the inode (i_block and the
/// system.data attribute); all of it lists, reads and extracts like the source.
#[test]
fn ext4_inline_data_reads_like_the_source() {
    let work = scratch();
    let src = make_tree(work.path(), true);
    fs::write(src.join("with space/hundred.txt"), [b'x'; 100]).unwrap();
    sh("touch", &["-h", "-d", &format!("@{MTIME}"), src.join("with space/hundred.txt").to_str().unwrap(), src.join("with space").to_str().unwrap()]);
    let raw = ext_fs(work.path(), "inline.raw", &src, "mkfs.ext4", &["-O", "inline_data"], "16M");
    let stat = sh("debugfs", &["-R", "stat \"/with space/hundred.txt\"", raw.to_str().unwrap()]);
    assert!(stat.contains("Size of inline data: 100"), "{stat}");
    let img = to_vdi(&work, &raw, "inline.vdi");
    fs::remove_file(&raw).unwrap();
    check_partition(&work, &img, "0", &src, true);
}
