//! `vdi convert -O FORMAT` to the other hypervisors' formats, judged by qemu-img: `compare`
//! against the source disk is identical and `check` is clean (qcow2, vmdk, vhdx; vpc has
//! no check), for an empty disk, data in the last block, a size that is not a whole MiB,
//! a raw input, a flattened three-layer chain; and the bad-input cases.

use std::path::Path;

use vdi_tests::*;

const MB: usize = 1 << 20;
const FORMATS: [&str; 6] = ["qcow2", "vmdk", "vmdk-stream", "vhd", "vhd-fixed", "vhdx"];

fn qemu_fmt(f: &str) -> &'static str {
    vdi::Format::parse(f).expect("a format").qemu_name()
}

/// Convert `src` (of qemu format `src_fmt`) to every format; each output must compare
/// identical with the source, pass `qemu-img check`, and hold a virtual size at least the
/// source's. Returns the outputs' paths by format.
fn convert_all(dir: &tempfile::TempDir, src: &str, src_fmt: &str, tag: &str) -> Vec<(String, String)> {
    let src_size = json(&ok(&mut qemu_img(&["info", "--output=json", "-f", src_fmt, src])))["virtual-size"].as_u64().unwrap();
    let mut outs = Vec::new();
    for f in FORMATS {
        let out = p(dir, &format!("{tag}.{f}"));
        let o = run(&mut vdi(&["convert", "-O", f, src, &out]));
        assert!(o.status.success(), "{tag} {f}: {}", String::from_utf8_lossy(&o.stderr));
        let q = qemu_fmt(f);
        let cmp = run(&mut qemu_img(&["compare", "-f", src_fmt, "-F", q, src, &out]));
        assert!(
            cmp.status.success(),
            "{tag} {f}: qemu-img compare: {}{}",
            String::from_utf8_lossy(&cmp.stdout),
            String::from_utf8_lossy(&cmp.stderr)
        );
        if q != "vpc" {
            let c = run(&mut qemu_img(&["check", "-f", q, &out]));
            assert!(c.status.success(), "{tag} {f}: qemu-img check: {}", String::from_utf8_lossy(&c.stdout));
        }
        let info = json(&ok(&mut qemu_img(&["info", "--output=json", "-f", q, &out])));
        let vsize = info["virtual-size"].as_u64().unwrap();
        assert!(vsize >= src_size && vsize - src_size < 2 * MB as u64, "{tag} {f}: virtual size {vsize} for {src_size}");
        // Any rounding is said on stderr.
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(vsize == src_size || err.contains("note:"), "{tag} {f}: {err}");
        outs.push((f.to_string(), out));
    }
    outs
}

#[test]
fn an_empty_disk_converts_to_every_format() {
    let dir = scratch();
    let img = p(&dir, "empty.vdi");
    ok(&mut vdi(&["create", &img, "16M"]));
    for (f, out) in convert_all(&dir, &img, "vdi", "empty") {
        let len = std::fs::metadata(&out).unwrap().len();
        // Nothing stored but metadata (a fixed VHD holds the whole disk, as holes).
        if f != "vhd-fixed" {
            assert!(len <= 4 * MB as u64, "{f}: {len} bytes for an empty disk");
        }
    }
}

#[test]
fn data_in_the_last_block_and_an_odd_size_survive() {
    let dir = scratch();
    // 20 MiB + 3 sectors: not a whole MiB, nor a whole grain, nor a VHD geometry.
    let img = p(&dir, "odd.vdi");
    ok(&mut vdi(&["create", &img, &((20 * MB + 1536).to_string())]));
    let size = 20 * MB + 1536;
    let writes: [(usize, Vec<u8>); 4] = [
        (0, pattern(1, 4096)),
        (3 * MB - 100, pattern(2, 300)), // across a block boundary
        (9 * MB, vec![0u8; MB]),         // zeros written: a stored block reading as zeros
        (size - 700, pattern(3, 700)),   // the last bytes of the last, partial block
    ];
    for (i, (at, d)) in writes.iter().enumerate() {
        let f = p(&dir, &format!("w{i}.bin"));
        std::fs::write(&f, d).unwrap();
        ok(&mut vdi(&["write", "--offset", &at.to_string(), &img, &f]));
    }
    let outs = convert_all(&dir, &img, "vdi", "odd");
    // streamOptimized: VirtualBox reads the embedded descriptor from sector 1.
    let (_, stream) = outs.iter().find(|(f, _)| f == "vmdk-stream").unwrap();
    let b = std::fs::read(stream).unwrap();
    assert_eq!(&b[..4], b"KDMV");
    assert!(b[512..].starts_with(b"# Disk DescriptorFile\n"), "{:?}", String::from_utf8_lossy(&b[512..600]));
    assert!(String::from_utf8_lossy(&b[512..1024]).contains("createType=\"streamOptimized\""));
    let info = json(&ok(&mut qemu_img(&["info", "--output=json", stream])));
    assert_eq!(info["format-specific"]["data"]["create-type"], "streamOptimized", "{info}");
    // Grains are compressed: the pattern is not, but the zeros are skipped.
    assert!(b.len() < 2 * MB, "{} bytes", b.len());
}

#[test]
fn a_sparse_raw_file_converts_and_its_holes_stay_unallocated() {
    let dir = scratch();
    let raw = p(&dir, "d.raw");
    // Not a multiple of 512: the formats round up to a sector (and say so).
    let len = 12 * MB + 1000;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(len as u64).unwrap();
        f.write_all_at(&pattern(7, 70_000), 5 * MB as u64).unwrap();
        f.write_all_at(&pattern(8, 1000), (len - 1000) as u64).unwrap();
    }
    for (f, out) in convert_all(&dir, &raw, "raw", "raw") {
        // Space used: the two data areas in units of the format, and the metadata (its
        // zeros are holes). VHD's units are 2 MiB, VHDX's 1 MiB, the others' 64 KiB.
        use std::os::unix::fs::MetadataExt;
        let used = std::fs::metadata(&out).unwrap().blocks() * 512;
        let most = match f.as_str() {
            "vhd" => 4 * MB + MB / 2,
            "vhdx" => 2 * MB + MB / 2,
            _ => MB,
        } as u64;
        assert!(used <= most, "{f}: {used} bytes used");

    }
}

#[test]
fn a_three_layer_chain_is_flattened_into_every_format() {
    let dir = scratch();
    std::fs::create_dir(dir.path().join("Snapshots")).unwrap();
    let base = p(&dir, "base.vdi");
    let s1 = p(&dir, "Snapshots/s1.vdi");
    let s2 = p(&dir, "Snapshots/s2.vdi");
    let mut model = vec![0u8; 24 * MB];
    let mut put = |img: &str, at: usize, d: Vec<u8>, tag: &str| {
        let f = p(&dir, &format!("{tag}.bin"));
        std::fs::write(&f, &d).unwrap();
        ok(&mut vdi(&["write", "--offset", &at.to_string(), img, &f]));
        model[at..at + d.len()].copy_from_slice(&d);
    };
    ok(&mut vdi(&["create", &base, "24M"]));
    put(&base, 0, pattern(1, 5 * MB), "a");
    ok(&mut vdi(&["create", "--parent", &base, &s1]));
    put(&s1, MB + 7, pattern(2, 3000), "b");
    put(&s1, 12 * MB, pattern(3, MB), "c");
    ok(&mut vdi(&["create", "--parent", &s1, &s2]));
    put(&s2, 2 * MB, vec![0u8; MB], "d"); // hides the base's data
    put(&s2, 24 * MB - 10, pattern(4, 10), "e");
    let raw = p(&dir, "model.raw");
    std::fs::write(&raw, &model).unwrap();
    for f in FORMATS {
        let out = p(&dir, &format!("chain.{f}"));
        ok(&mut vdi(&["convert", "-O", f, &s2, &out]));
        let q = qemu_fmt(f);
        ok(&mut qemu_img(&["compare", "-f", "raw", "-F", q, &raw, &out]));
        if q != "vpc" {
            ok(&mut qemu_img(&["check", "-f", q, &out]));
        }
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn bad_input_gets_one_clear_line_and_leaves_no_output() {
    let dir = scratch();
    let img = p(&dir, "b.vdi");
    ok(&mut vdi(&["create", &img, "8M"]));
    let f = p(&dir, "x.bin");
    std::fs::write(&f, pattern(1, 3 * MB)).unwrap();
    ok(&mut vdi(&["write", &img, &f]));
    let one_line = |args: &[&str], want: &str| {
        let o = run(&mut vdi(args));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err:?}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("vdi: note:")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
    };
    let out = p(&dir, "o.qcow2");
    one_line(&["convert", "-O", "qcow3", &img, &out], "unknown output format \"qcow3\": expected raw, vdi, qcow2, vmdk");
    assert!(!Path::new(&out).exists());
    one_line(&["convert", "-O", "vhdx", &img, &p(&dir, "no/such/dir/o.vhdx")], "could not create");
    // A full disk: /dev/full takes the stream path and fails on the first write.
    one_line(&["convert", "-O", "vmdk-stream", &img, "/dev/full"], "No space left");
    // Failing half-way (the image's last data block is cut off): the output is removed.
    let cut = p(&dir, "cut.vdi");
    let b = std::fs::read(&img).unwrap();
    std::fs::write(&cut, &b[..b.len() - 4096]).unwrap();
    for f in FORMATS {
        let out = p(&dir, &format!("cut.{f}"));
        one_line(&["convert", "-O", f, &cut, &out], "past the end");
        assert!(!Path::new(&out).exists(), "{f}: a partial output was left");
    }
}

#[test]
fn other_block_sizes_and_a_pipe_give_the_same_disk() {
    let dir = scratch();
    let data = p(&dir, "d.bin");
    std::fs::write(&data, pattern(9, 3 * MB + 77)).unwrap();
    for bs in ["128K", "4M"] {
        let img = p(&dir, &format!("b{bs}.vdi"));
        ok(&mut vdi(&["create", "--block-size", bs, &img, "20M"]));
        ok(&mut vdi(&["write", "--offset", "100000", &img, &data]));
        ok(&mut vdi(&["write", "--offset", &(20 * MB - (3 * MB + 77)).to_string(), &img, &data]));
        // qemu-img reads VDI blocks of 1 MiB only: the reference is our raw export.
        let raw = p(&dir, &format!("b{bs}.raw"));
        ok(&mut vdi(&["convert", "-O", "raw", &img, &raw]));
        for f in FORMATS {
            // Written to a pipe: every format is one pass, in order.
            let out = p(&dir, &format!("b{bs}.{f}"));
            let sh = format!("'{}' convert -O {f} '{img}' - > '{out}'", vdi_bin().display());
            ok(std::process::Command::new("sh").args(["-c", &sh]));
            ok(&mut qemu_img(&["compare", "-f", "raw", "-F", qemu_fmt(f), &raw, &out]));
            std::fs::remove_file(&out).unwrap();
        }
    }
}
