//! Differencing chains through the `vdi` command, in a VirtualBox-style VM folder
//! (`base.vdi`, `Snapshots/*.vdi`): found by UUID, flattened exports equal to what
//! qemu-img reads from an equivalent plain image built from the same writes, commit,
//! stream, compact, and every error case.

use std::process::Command;

use vdi_tests::*;

const MB: usize = 1 << 20;

struct Vm {
    dir: tempfile::TempDir,
    base: String,
    s1: String,
    s2: String,
    /// A plain image that received the same writes, made and written by qemu-io.
    equivalent: String,
    model: Vec<u8>,
}

fn write(vm_img: &str, at: usize, data: &[u8], model: &mut [u8], eq: &str, dir: &tempfile::TempDir, tag: &str) {
    let f = p(dir, &format!("chunk-{tag}.bin"));
    std::fs::write(&f, data).unwrap();
    ok(&mut vdi(&["write", "--offset", &at.to_string(), vm_img, &f]));
    model[at..at + data.len()].copy_from_slice(data);
    // The same bytes into the equivalent image, through qemu-io.
    ok(Command::new("qemu-io").args([
        "-f",
        "vdi",
        "-c",
        &format!("write -s {f} {at} {}", data.len()),
        eq,
    ]));
}

fn make_vm() -> Vm {
    let dir = scratch();
    std::fs::create_dir(dir.path().join("Snapshots")).unwrap();
    let base = p(&dir, "base.vdi");
    let s1 = p(&dir, "Snapshots/{s1}.vdi");
    let s2 = p(&dir, "Snapshots/{s2}.vdi");
    let equivalent = p(&dir, "equivalent.vdi");
    let mut model = vec![0u8; 16 * MB];
    ok(&mut vdi(&["create", &base, "16M"]));
    ok(&mut qemu_img(&["create", "-f", "vdi", &equivalent, "16M"]));
    write(&base, 0, &pattern(1, 6 * MB), &mut model, &equivalent, &dir, "a");
    ok(&mut vdi(&["create", "--parent", &base, &s1]));
    write(&s1, MB + 100, &pattern(2, 300), &mut model, &equivalent, &dir, "b");
    write(&s1, 2 * MB, &vec![0u8; MB], &mut model, &equivalent, &dir, "c");
    write(&s1, 9 * MB + 5, &pattern(3, 2000), &mut model, &equivalent, &dir, "d");
    ok(&mut vdi(&["create", "--parent", &s1, &s2]));
    write(&s2, 2 * MB + 10, &pattern(4, 20), &mut model, &equivalent, &dir, "e");
    write(&s2, 4 * MB, &vec![0u8; MB], &mut model, &equivalent, &dir, "f");
    write(&s2, 16 * MB - 700, &pattern(6, 700), &mut model, &equivalent, &dir, "g");
    Vm { dir, base, s1, s2, equivalent, model }
}

fn flat(vm: &Vm, img: &str, extra: &[&str]) -> Vec<u8> {
    let out = p(&vm.dir, "flat.raw");
    let mut args = vec!["convert", "-O", "raw"];
    args.extend(extra);
    args.extend([img, out.as_str()]);
    ok(&mut vdi(&args));
    let b = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    b
}

#[test]
fn a_snapshot_chain_reads_flattened() {
    let vm = make_vm();
    // qemu-img cannot open a differencing image at all.
    let o = run(&mut qemu_img(&["info", &vm.s2]));
    assert!(!o.status.success());
    // We find both parents by UUID (the folder and the one above) and flatten.
    let raw = flat(&vm, &vm.s2, &[]);
    assert_same(&raw, &vm.model, "flattened s2");
    let rawp = p(&vm.dir, "model.raw");
    std::fs::write(&rawp, &vm.model).unwrap();
    ok(&mut qemu_img(&["compare", "-f", "raw", &rawp, &vm.equivalent]));
    // A flattened VDI: qemu-img reads it equal to the equivalent image, and checks it clean.
    let fv = p(&vm.dir, "flat.vdi");
    ok(&mut vdi(&["convert", "-O", "vdi", &vm.s2, &fv]));
    ok(&mut qemu_img(&["compare", &fv, &vm.equivalent]));
    ok(&mut qemu_img(&["check", &fv]));
    // info shows the chain, base first.
    let i = json(&ok(&mut vdi(&["info", "--json", &vm.s2])));
    let chain = i["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 3, "{i}");
    assert_eq!(chain[0]["filename"], vm.base.as_str());
    assert_eq!(chain[2]["image-type"], "diff");
    // The page's layer shape (vdi::report::chain_layer_json): each layer's whole info too.
    for (k, l) in chain.iter().enumerate() {
        assert_eq!(l["index"], k, "{l}");
        assert_eq!(l["info"]["format-specific"]["data"]["uuid"], l["uuid"], "{l}");
        assert_eq!(l["readable-entries"], l["info"]["format-specific"]["data"]["blocks-in-image"], "{l}");
        assert!(l["file-length"].as_u64().unwrap() > 0 && l["layout-error"].is_null(), "{l}");
    }
    assert_eq!(chain[1]["parent-uuid"], chain[0]["uuid"]);
    assert_eq!(i["backing-filename"], vm.s1.as_str());
    let h = ok(&mut vdi(&["info", &vm.s2]));
    assert!(h.contains("chain (base first)") && h.contains("base.vdi"), "{h}");
    // check covers every layer and the links.
    let c = json(&ok(&mut vdi(&["check", "--json", &vm.s2])));
    assert_eq!(c["layers"].as_array().unwrap().len(), 2, "{c}");
    assert_eq!(c["chain-warnings"].as_array().unwrap().len(), 0);
    // map: data from each layer, with its depth and file.
    let m = json(&ok(&mut vdi(&["map", "--json", &vm.s2])));
    let depths: Vec<u64> = m.as_array().unwrap().iter().filter(|e| e["data"] == true).map(|e| e["depth"].as_u64().unwrap()).collect();
    assert!(depths.contains(&0) && depths.contains(&1) && depths.contains(&2), "{m}");
    let mut pos = 0;
    for e in m.as_array().unwrap() {
        assert_eq!(e["start"].as_u64().unwrap(), pos);
        pos += e["length"].as_u64().unwrap();
    }
    assert_eq!(pos, 16 * MB as u64);
}

#[test]
fn missing_parents_and_explicit_layers() {
    let vm = make_vm();
    let away = p(&vm.dir, "elsewhere");
    std::fs::create_dir(&away).unwrap();
    let moved = format!("{away}/renamed-base.vdi");
    std::fs::rename(&vm.base, &moved).unwrap();
    let base_uuid = json(&ok(&mut vdi(&["info", "--json", &moved])))["format-specific"]["data"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    // Every command that needs the parent says which UUID is missing and how to name it.
    let o = run(&mut vdi(&["convert", &vm.s2, &p(&vm.dir, "x.raw")]));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&base_uuid) && err.contains("--chain"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let i = json(&ok(&mut vdi(&["info", "--json", &vm.s2])));
    assert!(i["chain-error"].as_str().unwrap().contains(&base_uuid), "{i}");
    assert_eq!(run(&mut vdi(&["check", &vm.s2])).status.code(), Some(1));
    // Named explicitly, it works from anywhere.
    let chain = format!("{moved},{}", vm.s1);
    let raw = flat(&vm, &vm.s2, &["--chain", &chain]);
    assert_same(&raw, &vm.model, "flattened with --chain");
    // A parent rewritten after the snapshot was taken: a warning.
    ok(&mut vdi(&["set", &moved, "--modify-uuid", "random"]));
    let i = json(&ok(&mut vdi(&["info", "--json", "--chain", &chain, &vm.s2])));
    assert!(i["chain-warnings"][0].as_str().unwrap().contains("written after"), "{i}");
}

#[test]
fn commit_stream_and_compact() {
    // commit s2 into s1: s1 over base now reads the whole model; s2 is empty and still valid.
    let vm = make_vm();
    let before = std::fs::metadata(&vm.s2).unwrap().len();
    ok(&mut vdi(&["commit", &vm.s2]));
    assert!(std::fs::metadata(&vm.s2).unwrap().len() < before);
    assert_same(&flat(&vm, &vm.s1, &[]), &vm.model, "s1 after commit");
    assert_same(&flat(&vm, &vm.s2, &[]), &vm.model, "s2 after commit");
    for img in [&vm.base, &vm.s1, &vm.s2] {
        let c = json(&ok(&mut vdi(&["check", "--json", img])));
        assert_eq!((c["corruptions"].as_u64(), c["leaks"].as_u64()), (Some(0), Some(0)), "{img}: {c}");
        assert!(c["chain-warnings"].as_array().map(|w| w.is_empty()).unwrap_or(true), "{img}: {c}");
    }
    // stream twice: s2 becomes a standalone image that qemu-img reads and checks.
    let vm = make_vm();
    let out = ok(&mut vdi(&["stream", &vm.s2]));
    assert!(out.contains("its parent is now"), "{out}");
    let out = ok(&mut vdi(&["stream", &vm.s2]));
    assert!(out.contains("standalone"), "{out}");
    ok(&mut qemu_img(&["check", &vm.s2]));
    ok(&mut qemu_img(&["compare", &vm.s2, &vm.equivalent]));
    // compact of a snapshot: a block rewritten with what the parent holds becomes FREE.
    let vm = make_vm();
    let same = p(&vm.dir, "same.bin");
    std::fs::write(&same, &vm.model[5 * MB..6 * MB]).unwrap();
    ok(&mut vdi(&["write", "--offset", &(5 * MB).to_string(), &vm.s2, &same]));
    let st = json(&ok(&mut vdi(&["compact", "--json", &vm.s2])));
    assert!(st["blocks-zeroed"].as_u64().unwrap() >= 1, "{st}");
    assert_same(&flat(&vm, &vm.s2, &[]), &vm.model, "s2 after compact");
}
