//! The VirtualBox-made images in `../shared/fixtures`: open, info, check clean, and a raw
//! export byte-identical to `qemu-img convert -O raw`. Each 8 GiB image is extracted once
//! into `target/fixtures/` and reused; the raw exports are deleted after each comparison.

use std::sync::Mutex;

use vdi_tests::*;

/// The two fixtures are exported one at a time (each raw export is up to 8 GiB on disk).
static DISK: Mutex<()> = Mutex::new(());

fn fixture_case(name: &str, blocks_allocated: u64, file_len: u64) {
    let img = fixture(name);
    let img = img.to_str().unwrap();
    // info: our fields, and agreement with qemu-img.
    let vi = json(&ok(&mut vdi(&["info", "--json", img])));
    let qi = json(&ok(&mut qemu_img(&["info", "--output=json", img])));
    assert_eq!(vi["virtual-size"], qi["virtual-size"]);
    assert_eq!(vi["cluster-size"], qi["cluster-size"]);
    let d = &vi["format-specific"]["data"];
    assert_eq!(d["text"], "<<< Oracle VM VirtualBox Disk Image >>>\n");
    assert_eq!(d["version"], "1.1");
    assert_eq!(d["header-size"], 0x190);
    assert_eq!(d["image-type"], "dynamic");
    assert_eq!(d["offset-bmap"], 1 << 20);
    assert_eq!(d["offset-data"], 2 << 20);
    assert_eq!(d["disk-size"], 8u64 << 30);
    assert_eq!(d["blocks-in-image"], 8192);
    assert_eq!(d["blocks-allocated"], blocks_allocated);
    assert_eq!(d["lchs-geometry"]["sector-size"], 512);
    assert_ne!(d["uuid"], "00000000-0000-0000-0000-000000000000");
    // check: clean for both tools.
    let c = json(&ok(&mut vdi(&["check", "--json", img])));
    assert_eq!((c["corruptions"].as_u64(), c["leaks"].as_u64()), (Some(0), Some(0)), "{c}");
    assert_eq!(c["allocated-clusters"], blocks_allocated);
    assert_eq!(c["image-end-offset"], file_len);
    assert!(ok(&mut qemu_img(&["check", img])).contains("No errors"));
    // map: the same data ranges as qemu-img.
    let ours = json(&ok(&mut vdi(&["map", "--json", img])));
    let theirs = json(&ok(&mut qemu_img(&["map", "--output=json", img])));
    assert_eq!(data_ranges(&ours), data_ranges(&theirs));
    // Raw export: byte-identical to qemu-img's. Ours is hashed as it streams out of a
    // pipe (the file form is covered by the interop tests); qemu-img needs a seekable file.
    let _g = DISK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch();
    let b = p(&dir, "qemu.raw");
    let (ha, hb) = std::thread::scope(|s| {
        let ta = s.spawn(|| {
            let out = ok(std::process::Command::new("bash").args([
                "-c",
                &format!("set -o pipefail; '{}' convert -O raw '{img}' - | sha256sum", vdi_bin().display()),
            ]));
            out.split_whitespace().next().expect("sha256sum output").to_string()
        });
        let tb = s.spawn(|| {
            ok(&mut qemu_img(&["convert", "-O", "raw", img, &b]));
            assert_eq!(std::fs::metadata(&b).unwrap().len(), 8 << 30);
            sha256(&b)
        });
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(ha, hb, "{name}: raw export differs from qemu-img's");
}

#[test]
fn virtualbox_3hfs() {
    fixture_case("3hfs", 7422, 7_784_628_224);
}

#[test]
fn virtualbox_3ext() {
    fixture_case("3ext", 7736, 8_113_881_088);
}
