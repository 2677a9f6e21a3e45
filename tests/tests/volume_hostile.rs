//! Names an image may hold that would leave the extraction folder: an ext4 filesystem made
//! by mkfs.ext4 -d with placeholder names, its directory entries then patched to "../evil",
//! "a/b", "/abs", a NUL byte, a second "..". `vdi extract` refuses those (naming them, exit
//! non-zero), writes every other file, and writes nothing outside its destination; `vdi ls`
//! shows them escaped. Likewise FAT long names patched to "a/b" and "../ev".

use std::fs;
use std::path::Path;
use std::process::Command;

use vdi_tests::*;

/// Every path under `dir` (relative, sorted), `skip` left out.
fn listing(dir: &Path, skip: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path == skip {
                continue;
            }
            out.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Where the name of the one directory entry named `name` starts (an entry: inode, record
/// length, the name's length, the file type, the name).
fn entry_at(fs_img: &[u8], name: &str) -> usize {
    let hit = |i: usize| fs_img[i..].starts_with(name.as_bytes()) && fs_img[i - 2] as usize == name.len();
    let at: Vec<usize> = (8..fs_img.len() - name.len()).filter(|&i| hit(i)).collect();
    assert_eq!(at.len(), 1, "{name} is in one directory entry");
    at[0]
}

/// Each placeholder's directory entry renamed to a name of the same length.
fn rename(fs_img: &mut [u8], renames: &[(&str, &[u8])]) {
    for (from, to) in renames {
        assert_eq!(from.len(), to.len());
        let at = entry_at(fs_img, from);
        fs_img[at..at + to.len()].copy_from_slice(to);
    }
}

/// `vdi extract IMG / DEST`, DEST in a folder beside a marker folder ("../evil" would land
/// there): it must fail naming each of `named` on stderr and write nothing beside or above
/// DEST. Returns stderr.
fn extract_refusing(work: &Path, img: &str, named: &[&str]) -> String {
    let scene = work.join("scene");
    let dest = scene.join("dest");
    fs::create_dir_all(scene.join("marker")).unwrap();
    fs::write(scene.join("marker/keep"), b"marker").unwrap();
    let (before, top_before) = (listing(&scene, &dest), listing(work, &scene));
    let o = run(&mut vdi(&["extract", img, "/", dest.to_str().unwrap()]));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "refusals make the exit status non-zero: {err}");
    for n in named {
        assert!(err.contains(n), "{n} in: {err}");
    }
    assert_eq!(listing(&scene, &dest), before, "nothing written beside the destination");
    assert_eq!(listing(work, &scene), top_before, "nothing written above it");
    assert_eq!(fs::read_to_string(scene.join("marker/keep")).unwrap(), "marker");
    err
}

#[test]
fn extract_refuses_names_that_leave_the_destination() {
    let work = scratch();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::create_dir_all(src.join("GGGG")).unwrap();
    fs::create_dir_all(src.join("RRR")).unwrap();
    std::os::unix::fs::symlink("../marker", src.join("QQQ")).unwrap();
    for (name, data) in [
        ("ok.txt", "kept\n"),
        ("AAxevil", "evil 1\n"),
        ("BBBBBBBB", "evil 2\n"),
        ("CCC", "evil 3\n"),
        ("DD", "evil 4\n"),
        ("GGGG/deep.txt", "evil 5\n"),
        ("RRR/pwned", "through the link?\n"),
        ("SUB", "a file named like a folder\n"),
        ("sub/inner.txt", "inner\n"),
        ("sub/EEEEE", "backslash\n"),
    ] {
        fs::write(src.join(name), data).unwrap();
    }
    let raw = work.path().join("fs.img");
    ok(Command::new("mkfs.ext4").args(["-q", "-F", "-d", src.to_str().unwrap(), raw.to_str().unwrap(), "4M"]));
    let mut bytes = fs::read(&raw).unwrap();
    // The symlink QQQ -> ../marker first in the directory (entries swap inode and type if
    // not), then both named "zzz": the folder's "pwned" must not go through the link.
    let (link, dir) = (entry_at(&bytes, "QQQ"), entry_at(&bytes, "RRR"));
    if dir < link {
        for i in (link - 8..link - 4).chain([link - 1]) {
            bytes.swap(i, i + dir - link);
        }
    }
    rename(&mut bytes, &[("AAxevil", b"../evil"), ("BBBBBBBB", b"nul\0name"), ("CCC", b"a/b"), ("DD", b".."), ("GGGG", b"/abs"), ("EEEEE", b"..\\up"), ("SUB", b"sub"), ("QQQ", b"zzz"), ("RRR", b"zzz")]);
    fs::write(&raw, bytes).unwrap();
    let img = p(&work, "hostile.vdi");
    ok(&mut vdi(&["convert", "-O", "vdi", raw.to_str().unwrap(), &img]));

    let err = extract_refusing(work.path(), &img, &[r#""/../evil""#, r#""/nul\0name""#, r#""/a/b""#, r#""//abs""#, "6 entries were not extracted"]);
    let (scene, dest) = (work.path().join("scene"), work.path().join("scene/dest"));
    // Every other file, with its bytes; "..\up" is an ordinary name on Unix. The second ".."
    // is not listed by the reader at all (it skips every "." and ".." entry).
    // Names held twice ("sub" a folder and a file, "zzz" a symlink to ../marker and a folder
    // with a file): the first in directory order is written, the second refused.
    let root = json(&ok(&mut vdi(&["ls", "--json", &img, "/"])));
    let first = |name: &str| root["entries"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()["kind"].clone();
    let mut want = vec!["lost+found", "ok.txt", "sub", "zzz"];
    if first("sub") == "dir" {
        want.extend(["sub/..\\up", "sub/inner.txt"]);
    }
    assert_eq!(first("zzz"), "symlink");
    want.sort();
    assert_eq!(listing(&dest, Path::new("")), want);
    assert!(err.contains(r#""/sub": "#) && err.contains(r#""/zzz": "#), "{err}");
    assert_eq!(fs::read_to_string(scene.join("marker/keep")).unwrap(), "marker");
    assert_eq!(fs::read_to_string(dest.join("ok.txt")).unwrap(), "kept\n");

    // ls: the names as stored in JSON, escaped on the terminal; cat still reads.
    let names: Vec<String> = root["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    for n in ["../evil", "nul\0name", "a/b", "/abs", "ok.txt"] {
        assert!(names.iter().any(|x| x == n), "{n:?} in {names:?}");
    }
    let plain = ok(&mut vdi(&["ls", &img, "/"]));
    assert!(plain.lines().any(|l| l == r#""nul\0name""#), "escaped: {plain:?}");
    assert!(!plain.contains('\0'));
    assert_eq!(ok(&mut vdi(&["cat", &img, "/ok.txt"])), "kept\n");
    if first("sub") == "dir" {
        assert_eq!(ok(&mut vdi(&["cat", &img, "/sub/..\\up"])), "backslash\n");
    }
}

/// FAT long names (UTF-16 in the LFN entries, patched; the checksum covers the short name
/// only) holding "a/b" and "../ev".
#[test]
fn extract_refuses_fat_long_names_that_leave_the_destination() {
    let work = scratch();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for name in ["ok.txt", "xQz", "wQzVk"] {
        fs::write(src.join(name), name).unwrap();
    }
    let raw = work.path().join("fat.img");
    ok(Command::new("mkfs.vfat").args(["-C", raw.to_str().unwrap(), "2048"]));
    ok(Command::new("mcopy").args(["-s", "-m", "-i", raw.to_str().unwrap()]).args(["ok.txt", "xQz", "wQzVk"].map(|n| src.join(n))).arg("::/").env("MTOOLS_SKIP_CHECK", "1"));
    let mut bytes = fs::read(&raw).unwrap();
    let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    for (from, to) in [("xQz", "a/b"), ("wQzVk", "../ev")] {
        let (f, t) = (utf16(from), utf16(to));
        let at: Vec<usize> = (0..bytes.len() - f.len()).filter(|&i| bytes[i..].starts_with(&f)).collect();
        assert_eq!(at.len(), 1, "{from} is in one long-name entry");
        bytes[at[0]..at[0] + t.len()].copy_from_slice(&t);
    }
    fs::write(&raw, bytes).unwrap();
    let img = p(&work, "fat.vdi");
    ok(&mut vdi(&["convert", "-O", "vdi", raw.to_str().unwrap(), &img]));
    extract_refusing(work.path(), &img, &[r#""/a/b""#, r#""/../ev""#, "2 entries were not extracted"]);
    assert_eq!(listing(&work.path().join("scene/dest"), Path::new("")), ["ok.txt"]);
    assert_eq!(fs::read_to_string(work.path().join("scene/dest/ok.txt")).unwrap(), "ok.txt");
}
