//! `vdi convert` between regular files runs on several reader threads (crates/vdi-cli/src/
//! pipeline.rs): whatever the number of readers, every conversion gives the same disk, the
//! zeros stay holes, and a failure part-way leaves no output.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use vdi_tests::*;

const MB: u64 = 1 << 20;

fn vdi_with(threads: &str, args: &[&str]) -> std::process::Command {
    let mut c = vdi(args);
    c.env("VDI_THREADS", threads);
    c
}

/// A 40 MiB disk (plus 3 sectors) written back to front, so that its blocks lie in the
/// file in the reverse of their disk order: data across block edges, a whole block, a
/// block overwritten with zeros (allocated, reads as zeros), and the last sector.
fn build(dir: &tempfile::TempDir, block: &str) -> (String, Vec<u8>) {
    let size = 40 * MB + 3 * 512;
    let img = p(dir, &format!("src-{block}.vdi"));
    ok(&mut vdi(&["create", "--block-size", block, &img, &size.to_string()]));
    let mut raw = vec![0u8; size as usize];
    let writes: Vec<(u64, Vec<u8>)> = vec![
        (size - 512, pattern(1, 512)),
        (30 * MB + 5, pattern(2, 3 * MB as usize)),
        (20 * MB, pattern(3, MB as usize)),
        (12 * MB, pattern(4, MB as usize)),
        (12 * MB, vec![0u8; MB as usize]), // allocated, then zeroed
        (MB - 100, pattern(5, 300)),
        (7, pattern(6, 4096)),
    ];
    for (i, (at, bytes)) in writes.iter().enumerate() {
        let f = p(dir, &format!("piece{i}"));
        std::fs::write(&f, bytes).unwrap();
        ok(&mut vdi(&["write", "--offset", &at.to_string(), &img, &f]));
        raw[*at as usize..][..bytes.len()].copy_from_slice(bytes);
    }
    (img, raw)
}

#[test]
fn every_reader_count_gives_the_same_disk() {
    let dir = scratch();
    for block in ["1M", "256K"] {
        let (img, raw) = build(&dir, block);
        let want = p(&dir, "want.raw");
        std::fs::write(&want, &raw).unwrap();
        // A sparse copy of the raw disk, the source of the imports.
        let sparse = p(&dir, "sparse.raw");
        ok(&mut qemu_img(&["convert", "-f", "raw", "-O", "raw", &want, &sparse]));
        for threads in ["1", "2", "7"] {
            let what = format!("{block} blocks, {threads} readers");
            // vdi -> raw: byte for byte, and the zeroed block is a hole.
            let out = p(&dir, "out.raw");
            ok(&mut vdi_with(threads, &["convert", "-O", "raw", &img, &out]));
            assert_same(&std::fs::read(&out).unwrap(), &raw, &what);
            let stored = std::fs::metadata(&out).unwrap().blocks() * 512;
            assert!(stored <= 7 * MB, "{what}: {stored} bytes stored, the zeros were written");
            // vdi -> vdi, raw -> vdi (at two block sizes): qemu-img finds them clean and equal.
            for (src, bs) in [(&img, "1M"), (&sparse, "1M"), (&sparse, "64K")] {
                let o = p(&dir, "out.vdi");
                ok(&mut vdi_with(threads, &["convert", "-O", "vdi", "--block-size", bs, src, &o]));
                let c = json(&ok(&mut vdi(&["check", "--json", &o])));
                assert_eq!((c["corruptions"].as_u64(), c["leaks"].as_u64()), (Some(0), Some(0)), "{what}: {c}");
                if bs == "1M" {
                    assert!(ok(&mut qemu_img(&["check", "-f", "vdi", &o])).contains("No errors"), "{what}");
                    ok(&mut qemu_img(&["compare", "-f", "vdi", "-F", "raw", &o, &want]));
                }
                let back = p(&dir, "back.raw");
                ok(&mut vdi(&["convert", "-O", "raw", &o, &back]));
                assert_same(&std::fs::read(&back).unwrap(), &raw, &format!("{what}, {src} to {bs} blocks"));
                // Only blocks holding data were allocated: the zeroed one was left out.
                let info = json(&ok(&mut vdi(&["info", "--json", &o])));
                let n = info["format-specific"]["data"]["blocks-allocated"].as_u64().expect("blocks-allocated");
                let bsz = vdi_cli::parse_size(bs).unwrap();
                let data = raw.chunks(bsz as usize).filter(|c| c.iter().any(|&b| b != 0)).count() as u64;
                assert_eq!(n, data, "{what}, {src} to {bs} blocks: {info}");
            }
        }
    }
}

#[test]
fn a_chain_flattens_the_same_on_every_reader_count() {
    let dir = scratch();
    let (base, mut raw) = build(&dir, "1M");
    let diff = p(&dir, "diff.vdi");
    ok(&mut vdi(&["create", "--parent", &base, &diff]));
    let top = pattern(9, (2 * MB) as usize);
    let f = p(&dir, "top");
    std::fs::write(&f, &top).unwrap();
    ok(&mut vdi(&["write", "--offset", &(19 * MB + 3).to_string(), &diff, &f]));
    raw[(19 * MB + 3) as usize..][..top.len()].copy_from_slice(&top);
    for threads in ["1", "3"] {
        let out = p(&dir, "flat.raw");
        ok(&mut vdi_with(threads, &["convert", "-O", "raw", &diff, &out]));
        assert_same(&std::fs::read(&out).unwrap(), &raw, &format!("flattened, {threads} readers"));
        let o = p(&dir, "flat.vdi");
        ok(&mut vdi_with(threads, &["convert", "-O", "vdi", &diff, &o]));
        std::fs::write(p(&dir, "want.raw"), &raw).unwrap();
        ok(&mut qemu_img(&["compare", "-f", "vdi", "-F", "raw", &o, &p(&dir, "want.raw")]));
    }
}

#[test]
fn a_failure_part_way_leaves_no_output() {
    let dir = scratch();
    let (img, _) = build(&dir, "1M");
    // The image cut off inside its last block (in file order, the first one written).
    let cut = p(&dir, "cut.vdi");
    let b = std::fs::read(&img).unwrap();
    std::fs::write(&cut, &b[..b.len() - 4096]).unwrap();
    for (fmt, out) in [("raw", p(&dir, "o.raw")), ("vdi", p(&dir, "o.vdi"))] {
        for threads in ["1", "2"] {
            let o = run(&mut vdi_with(threads, &["convert", "-O", fmt, &cut, &out]));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{fmt}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{fmt}: {err}");
            assert!(err.contains("past the end"), "{fmt}: {err}");
            assert!(!Path::new(&out).exists(), "{fmt}, {threads} readers: a partial output was left");
        }
    }
    // An output on a full disk.
    if Path::new("/dev/full").exists() {
        let o = run(&mut vdi(&["convert", "-O", "raw", &img, "/dev/full"]));
        assert!(!o.status.success());
        assert_eq!(String::from_utf8_lossy(&o.stderr).trim().lines().count(), 1);
    }
}
