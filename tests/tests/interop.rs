//! Interop with qemu-img, both ways, and the `vdi` command's behaviour on bad input.

use std::path::Path;

use vdi::{CreateOptions, Layout, NoMonitor, Uuid, VdiImage};
use vdi_cli::FileStorage;
use vdi_tests::*;

/// Writes spread over the disk: partial blocks, block-spanning, whole blocks, zeros.
fn writes(size: u64) -> Vec<(u64, Vec<u8>)> {
    let mb = 1u64 << 20;
    let mut w = vec![
        (0, pattern(1, 4096)),
        (mb - 100, pattern(2, 300)),         // spans blocks 0 and 1
        (3 * mb, pattern(3, mb as usize)),   // a whole block
        (5 * mb + 7, pattern(4, 3 * mb as usize + 11)), // several blocks, unaligned
        (9 * mb, vec![0u8; mb as usize]),    // a whole block of zeros: must not allocate
    ];
    w.push((size - 513, pattern(5, 513))); // the very end of the disk
    w.retain(|(o, d)| o + d.len() as u64 <= size);
    w
}

fn write_both(img: &mut VdiImage<FileStorage>, raw: &mut [u8], w: &[(u64, Vec<u8>)]) {
    for (o, d) in w {
        img.write_at(*o, d).unwrap();
        raw[*o as usize..*o as usize + d.len()].copy_from_slice(d);
    }
}

#[test]
fn images_we_write_pass_qemu_check_and_compare() {
    let dir = scratch();
    let cases = [
        (Layout::Vbox, false, 32u64 << 20),
        (Layout::Qemu, false, 32 << 20),
        (Layout::Vbox, true, 20 << 20),
        (Layout::Qemu, true, 20 << 20),
        (Layout::Vbox, false, (20 << 20) + 512 * 3), // not a multiple of the block size
        (Layout::Qemu, false, 17 * 1000 * 1000),     // odd: rounded up to 512
    ];
    for (i, (layout, fixed, size)) in cases.into_iter().enumerate() {
        let img_path = p(&dir, &format!("w{i}.vdi"));
        let raw_path = p(&dir, &format!("w{i}.raw"));
        let mut o = CreateOptions::new(size, Uuid::from_u128(0xabc + i as u128), Uuid::from_u128(7));
        o.layout = layout;
        o.fixed = fixed;
        o.comment = format!("case {i}");
        let f = FileStorage::create(Path::new(&img_path)).unwrap();
        let mut img = vdi::create(f, &o, &mut NoMonitor).unwrap();
        let vsize = img.virtual_size();
        assert_eq!(vsize, size.next_multiple_of(512));
        let mut raw = vec![0u8; vsize as usize];
        let w = writes(vsize);
        write_both(&mut img, &mut raw, &w);
        if !fixed {
            // The block of zeros was not allocated.
            let zero_block = (9u64 << 20) / (1 << 20);
            if zero_block < img.blocks_covering_disk() as u64 {
                assert_eq!(img.entry(zero_block as u32).unwrap(), vdi::Entry::Free, "case {i}");
            }
        }
        drop(img);
        std::fs::write(&raw_path, &raw).unwrap();
        let out = ok(&mut qemu_img(&["check", &img_path]));
        assert!(out.contains("No errors"), "case {i}: {out}");
        ok(&mut qemu_img(&["compare", "-f", "raw", "-F", "vdi", &raw_path, &img_path]));
        let info = json(&ok(&mut qemu_img(&["info", "--output=json", &img_path])));
        assert_eq!(info["virtual-size"].as_u64(), Some(vsize), "case {i}");
        assert_eq!(info["format"], "vdi");
        // Our own check agrees.
        let ours = json(&ok(&mut vdi(&["check", "--json", &img_path])));
        assert_eq!(ours["corruptions"], 0, "case {i}: {ours}");
        assert_eq!(ours["leaks"], 0, "case {i}: {ours}");
    }
}

#[test]
fn images_qemu_writes_read_back_identical() {
    let dir = scratch();
    // (raw length, static?) — odd sizes included; qemu rounds them up to 512.
    let cases = [(24u64 << 20, false), (24 << 20, true), (10_000_001, false), ((5 << 20) + 512, true)];
    for (i, (len, stat)) in cases.into_iter().enumerate() {
        let raw_path = p(&dir, &format!("q{i}.raw"));
        let img_path = p(&dir, &format!("q{i}.vdi"));
        let mut raw = vec![0u8; len as usize];
        for (o, d) in writes(len) {
            raw[o as usize..o as usize + d.len()].copy_from_slice(&d);
        }
        std::fs::write(&raw_path, &raw).unwrap();
        let mut args = vec!["convert", "-f", "raw", "-O", "vdi"];
        if stat {
            args.extend(["-o", "static=on"]);
        }
        args.extend([raw_path.as_str(), img_path.as_str()]);
        ok(&mut qemu_img(&args));
        // Through the engine.
        let mut img = VdiImage::open(FileStorage::open(Path::new(&img_path)).unwrap()).unwrap();
        let vsize = img.virtual_size();
        assert_eq!(vsize, len.next_multiple_of(512), "case {i}");
        let mut back = vec![0u8; vsize as usize];
        img.read_at(0, &mut back).unwrap();
        assert_same(&back[..len as usize], &raw[..], &format!("case {i}"));
        assert!(back[len as usize..].iter().all(|&b| b == 0));
        // Through the command: convert to raw equals qemu-img's own conversion.
        let ours = p(&dir, &format!("q{i}.ours.raw"));
        let theirs = p(&dir, &format!("q{i}.qemu.raw"));
        ok(&mut vdi(&["convert", "-O", "raw", &img_path, &ours]));
        ok(&mut qemu_img(&["convert", "-O", "raw", &img_path, &theirs]));
        assert_eq!(sha256(&ours), sha256(&theirs), "case {i}");
        let c = json(&ok(&mut vdi(&["check", "--json", &img_path])));
        assert_eq!(c["corruptions"], 0, "case {i}: {c}");
        // Header fields agree with qemu-img info.
        let qi = json(&ok(&mut qemu_img(&["info", "--output=json", &img_path])));
        let vi = json(&ok(&mut vdi(&["info", "--json", &img_path])));
        assert_eq!(vi["virtual-size"], qi["virtual-size"], "case {i}");
        assert_eq!(vi["cluster-size"], qi["cluster-size"], "case {i}");
        assert_eq!(vi["format-specific"]["data"]["header-size"], 0x180);
        assert_eq!(vi["format-specific"]["data"]["image-type"], if stat { "fixed" } else { "dynamic" });
    }
}

#[test]
fn map_agrees_with_qemu_img_map() {
    let dir = scratch();
    let img_path = p(&dir, "m.vdi");
    ok(&mut vdi(&["create", &img_path, "64M"]));
    // qemu-io writes out of order so the slots are not in disk order.
    ok(std::process::Command::new("qemu-io").args([
        "-f", "vdi", "-c", "write -P 1 40M 1M", "-c", "write -P 2 0 4k", "-c", "write -P 3 41M 2M",
        "-c", "write -P 4 10M 512", "-c", "write -P 5 63M 1M", &img_path,
    ]));
    let ours = json(&ok(&mut vdi(&["map", "--json", &img_path])));
    let theirs = json(&ok(&mut qemu_img(&["map", "--output=json", &img_path])));
    let d = data_ranges(&ours);
    assert_eq!(d, data_ranges(&theirs));
    // Slots in write order: 40M->0, 0->1, 41M..43M->2,3 (one run), 10M->4, 63M->5.
    assert_eq!(d.len(), 5, "{d:?}");
    // Every map entry covers the disk exactly once, in order.
    let mut pos = 0;
    for e in ours.as_array().unwrap() {
        assert_eq!(e["start"].as_u64().unwrap(), pos);
        pos += e["length"].as_u64().unwrap();
    }
    assert_eq!(pos, 64 << 20);
    // Human output lists the data runs.
    let h = ok(&mut vdi(&["map", &img_path]));
    assert_eq!(h.lines().count(), 1 + d.len(), "{h}");
}

#[test]
fn convert_to_a_stream_writes_every_byte() {
    let dir = scratch();
    let img_path = p(&dir, "s.vdi");
    ok(&mut vdi(&["create", "--layout", "qemu", &img_path, "9M"]));
    ok(std::process::Command::new("qemu-io").args(["-f", "vdi", "-c", "write -P 9 2M 1M", &img_path]));
    let sparse = p(&dir, "s.raw");
    ok(&mut vdi(&["convert", &img_path, &sparse]));
    let piped = ok(std::process::Command::new("sh").args([
        "-c",
        &format!("'{}' convert -O raw '{}' - | sha256sum", vdi_bin().display(), img_path),
    ]));
    assert_eq!(piped.split_whitespace().next().unwrap(), sha256(&sparse));
    assert_eq!(std::fs::metadata(&sparse).unwrap().len(), 9 << 20);
    // A sparse output really is sparse: 1 MiB of data, 9 MiB long.
    use std::os::unix::fs::MetadataExt;
    assert!(std::fs::metadata(&sparse).unwrap().blocks() * 512 <= 2 << 20);
    ok(&mut vdi(&["convert", "-O", "raw", &img_path, "/dev/null"]));
    // A reader that goes away (`| head -c 1`): the engine's output error keeps the broken
    // pipe's kind, so vdi stops quietly with 141, as a SIGPIPE would.
    let mut child = vdi(&["convert", "-O", "raw", &img_path, "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(141), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    // raw -> vdi leaves zero blocks unallocated and qemu-img agrees on the content.
    let back = p(&dir, "back.vdi");
    ok(&mut vdi(&["convert", "-O", "vdi", &sparse, &back]));
    let c = json(&ok(&mut vdi(&["check", "--json", &back])));
    assert_eq!(c["allocated-clusters"], 1, "{c}");
    ok(&mut qemu_img(&["compare", "-f", "raw", &sparse, &back]));
    ok(&mut qemu_img(&["check", &back]));
}

#[test]
fn check_exit_codes_match_qemu_img() {
    let dir = scratch();
    let img_path = p(&dir, "c.vdi");
    ok(&mut vdi(&["create", "--layout", "qemu", &img_path, "8M"]));
    ok(std::process::Command::new("qemu-io").args(["-f", "vdi", "-c", "write -P 1 0 3M", &img_path]));
    let code = |cmd: &mut std::process::Command| run(cmd).status.code();
    assert_eq!(code(&mut vdi(&["check", &img_path])), Some(0));
    // Duplicate entry: block 5 -> slot 0 (qemu-img: corruption, exit 2).
    let mut b = std::fs::read(&img_path).unwrap();
    b[0x200 + 5 * 4..0x200 + 6 * 4].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&img_path, &b).unwrap();
    assert_eq!(code(&mut qemu_img(&["check", &img_path])), Some(2));
    assert_eq!(code(&mut vdi(&["check", &img_path])), Some(2));
    let c = json(&run(&mut vdi(&["check", "--json", &img_path])).stdout.iter().map(|&c| c as char).collect::<String>());
    let kinds: Vec<&str> = c["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"duplicate-entry") && kinds.contains(&"allocated-mismatch"), "{kinds:?}");
    // Leak only: clear block 2's entry and fix blocks_allocated: qemu-img sees nothing, we see a leak.
    let mut b = std::fs::read(&img_path).unwrap();
    b[0x200 + 5 * 4..0x200 + 6 * 4].copy_from_slice(&u32::MAX.to_le_bytes());
    b[0x200 + 2 * 4..0x200 + 3 * 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&img_path, &b).unwrap();
    // blocks_allocated (3) now overcounts the 2 entries: qemu-img calls it an error, but
    // new blocks still go past every block in use, so for us it is a leak.
    assert_eq!(code(&mut qemu_img(&["check", &img_path])), Some(2));
    assert_eq!(code(&mut vdi(&["check", &img_path])), Some(3));
    b[0x184..0x188].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&img_path, &b).unwrap();
    assert_eq!(code(&mut qemu_img(&["check", &img_path])), Some(0));
    let out = run(&mut vdi(&["check", &img_path]));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(code(&mut vdi(&["check", &p(&dir, "missing.vdi")])), Some(1));
}

/// Issue 14, part 2: `vdi write` into a header that undercounts (blocks_allocated 0, three
/// blocks written by qemu-io) puts the new block after the last slot in use and stores the real
/// count, so qemu-img check passes and the next QEMU writer appends after it, over nothing.
#[test]
fn write_into_an_undercounting_header_passes_qemu_check() {
    let dir = scratch();
    let img_path = p(&dir, "u.vdi");
    let mb = 1usize << 20;
    ok(&mut qemu_img(&["create", "-f", "vdi", &img_path, "8M"]));
    ok(std::process::Command::new("qemu-io").args(["-f", "vdi", "-c", "write -P 0x11 0 3M", &img_path]));
    let mut raw = vec![0u8; 8 * mb];
    raw[..3 * mb].fill(0x11);
    let mut b = std::fs::read(&img_path).unwrap();
    assert_eq!(u32::from_le_bytes(b[0x184..0x188].try_into().unwrap()), 3);
    b[0x184..0x188].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&img_path, &b).unwrap();
    let code = |cmd: &mut std::process::Command| run(cmd).status.code();
    assert_eq!(code(&mut qemu_img(&["check", &img_path])), Some(2), "the damaged header");

    let data = p(&dir, "d.bin");
    std::fs::write(&data, pattern(7, 1000)).unwrap();
    ok(&mut vdi(&["write", "--offset", &(5 * mb + 10).to_string(), &img_path, &data]));
    raw[5 * mb + 10..][..1000].copy_from_slice(&pattern(7, 1000));
    let b = std::fs::read(&img_path).unwrap();
    assert_eq!(u32::from_le_bytes(b[0x184..0x188].try_into().unwrap()), 4, "the real count");
    assert_eq!(u32::from_le_bytes(b[0x200 + 5 * 4..0x200 + 6 * 4].try_into().unwrap()), 3, "slot after the last in use");
    ok(&mut qemu_img(&["check", &img_path]));
    ok(&mut vdi(&["check", &img_path]));

    // The next QEMU writer appends at slot blocks_allocated: over nothing.
    ok(std::process::Command::new("qemu-io").args(["-f", "vdi", "-c", "write -P 0x22 7M 1M", &img_path]));
    raw[7 * mb..].fill(0x22);
    let raw_path = p(&dir, "u.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    ok(&mut qemu_img(&["compare", "-f", "raw", "-F", "vdi", &raw_path, &img_path]));
    ok(&mut qemu_img(&["check", &img_path]));
}

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = scratch();
    let not_vdi = p(&dir, "x.txt");
    std::fs::write(&not_vdi, vec![b'x'; 1000]).unwrap();
    let short = p(&dir, "short.vdi");
    std::fs::write(&short, b"tiny").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["info".into(), p(&dir, "nope.vdi")], "No such file"),
        (vec!["info".into(), not_vdi.clone()], "not a VDI image"),
        (vec!["info".into(), short.clone()], "file too short"),
        (vec!["info".into(), dir.path().to_str().unwrap().into()], "is a directory"),
        (vec!["map".into(), not_vdi.clone()], "signature"),
        (vec!["create".into(), p(&dir, "a.vdi"), "12Q".into()], "invalid size"),
        (vec!["create".into(), p(&dir, "a.vdi"), "1P".into()], "blocks"),
        (vec!["create".into(), "--block-size".into(), "3M".into(), p(&dir, "a.vdi"), "1G".into()], "power of two"),
        (vec!["create".into(), "--layout".into(), "vmware".into(), p(&dir, "a.vdi"), "1G".into()], "layout"),
        (vec!["create".into(), "--uuid".into(), "zzz".into(), p(&dir, "a.vdi"), "1G".into()], "invalid --uuid"),
        (vec!["create".into(), "--comment".into(), "x".repeat(300), p(&dir, "a.vdi"), "1G".into()], "at most 255"),
        (vec!["convert".into(), not_vdi.clone(), p(&dir, "o.raw")], "not a VDI image"),
        (vec!["convert".into(), "-O".into(), "qcow3".into(), not_vdi.clone(), p(&dir, "o")], "unknown output format"),
    ];
    for (args, want) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&mut vdi(&a));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{a:?} succeeded");
        assert!(err.contains(want), "{a:?}: expected {want:?} in {err:?}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{a:?}: {err}");
        if !err.contains("For more information") {
            assert_eq!(err.trim().lines().count(), 1, "{a:?}: {err}");
        }
    }
    // A refused create does not leave a file behind.
    assert!(!dir.path().join("a.vdi").exists());
}
