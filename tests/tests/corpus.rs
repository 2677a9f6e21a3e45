//! The damaged-image corpus (`vdi_tests::corpus`): every verdict asserted through the engine
//! and through the `vdi` command (`info --json`, `check --json`, `convert`), and `qemu-img`
//! run on every file to record (not assert) where it returns wrong data or exit code 0.
//! Needs `cargo build -p vdi-cli --release` first (cargo xtask test does it).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use vdi::{check, export_raw, Chain, MemStorage, NoMonitor, VdiImage};
use vdi_tests::corpus::{self, CheckVerdict, Corpus, Verdict};
use vdi_tests::{json, root, run, vdi};

/// The corpus, written once per test binary into `target/test-scratch/corpus-<pid>`.
fn corpus() -> &'static (Corpus, std::path::PathBuf) {
    static C: OnceLock<(Corpus, std::path::PathBuf)> = OnceLock::new();
    C.get_or_init(|| {
        let base = root().join("target/test-scratch");
        // Corpora of earlier runs whose process is gone (about 100 MiB each).
        for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("corpus-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("corpus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = corpus::write(&dir);
        (c, dir)
    })
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The verdict through the engine, on the bytes.
fn engine_verdict(c: &corpus::Case) -> Result<(), String> {
    let fail = |m: String| Err(format!("{}: engine: {m}", c.file));
    let opened = VdiImage::open(MemStorage::from_vec(c.bytes.clone()));
    let checked = check(MemStorage::from_vec(c.bytes.clone()), &mut NoMonitor);
    match (&c.verdict.check(), &checked) {
        (CheckVerdict::Fails, Ok(r)) => return fail(format!("check opened it: {:?}", r.findings)),
        (CheckVerdict::Findings { exit, kinds }, Ok(r)) => {
            let got = sorted(r.findings.iter().map(|f| f.kind.name().to_string()).collect());
            if got != *kinds || r.exit_code() != *exit || r.corruptions + r.leaks != kinds.len() as u64 {
                return fail(format!("check found {got:?} (exit {}), expected {kinds:?} (exit {exit})", r.exit_code()));
            }
        }
        (CheckVerdict::Findings { .. }, Err(e)) => return fail(format!("check failed: {e}")),
        (CheckVerdict::Fails, Err(_)) => {}
    }
    match (&c.verdict, opened) {
        (Verdict::Fails { kind, message, .. }, Ok(_)) => fail(format!("opened, expected {kind}: {message:?}")),
        (Verdict::Fails { kind, message, check }, Err(e)) => {
            let text = e.to_string();
            if e.kind() != *kind || message.iter().any(|m| !text.contains(m)) {
                return fail(format!("open error {} {text:?}, expected {kind} with {message:?}", e.kind()));
            }
            if *check == CheckVerdict::Fails && checked.as_ref().err().map(|e| e.kind()) != Some(*kind) {
                return fail(format!("check error {:?}, expected {kind}", checked.err().map(|e| e.to_string())));
            }
            Ok(())
        }
        (Verdict::Opens { .. }, Err(e)) => fail(format!("open failed: {e}")),
        (Verdict::Opens { disk, block_size, past_end, needs_parent, .. }, Ok(mut img)) => {
            if img.virtual_size() != disk.len() as u64 {
                return fail(format!("virtual size {} != {}", img.virtual_size(), disk.len()));
            }
            let bs = *block_size;
            for b in 0..(disk.len() as u64).div_ceil(bs) {
                let r = (b * bs) as usize..((b + 1) * bs).min(disk.len() as u64) as usize;
                let mut buf = vec![0xEE; r.len()];
                let got = img.read_at(r.start as u64, &mut buf);
                let want = if past_end.contains(&b) {
                    Some("block-past-end")
                } else if needs_parent.contains(&b) {
                    Some("needs-parent")
                } else {
                    None
                };
                match (want, got) {
                    (None, Ok(())) if buf[..] == disk[r.clone()] => {}
                    (None, Ok(())) => return fail(format!("block {b} reads wrong data")),
                    (None, Err(e)) => return fail(format!("block {b}: {e}")),
                    (Some(k), Ok(())) => return fail(format!("block {b} read, expected {k}")),
                    (Some(k), Err(e)) if e.kind() == k => {}
                    (Some(k), Err(e)) => return fail(format!("block {b}: {e}, expected {k}")),
                }
            }
            let mut sink = Vec::new();
            let exported = export_raw(&mut img, &mut sink, &mut NoMonitor);
            match (past_end.is_empty() && needs_parent.is_empty(), exported) {
                (true, Ok(_)) if sink == *disk => Ok(()),
                (true, Ok(_)) => fail("export differs".into()),
                (true, Err(e)) => fail(format!("export: {e}")),
                (false, Ok(_)) => fail("export of an image with unreadable blocks succeeded".into()),
                (false, Err(_)) => Ok(()),
            }
        }
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The verdict through the `vdi` command.
fn cli_verdict(dir: &Path, c: &corpus::Case, out: &Path) -> Result<(), String> {
    let path = dir.join(&c.file);
    let p = path.to_str().unwrap();
    let fail = |m: String| Err(format!("{}: vdi: {m}", c.file));
    let info = run(&mut vdi(&["info", "--json", p]));
    let chk = run(&mut vdi(&["check", "--json", p]));
    let _ = std::fs::remove_file(out);
    let conv = run(&mut vdi(&["convert", "-O", "raw", p, out.to_str().unwrap()]));
    match &c.verdict {
        Verdict::Fails { message, check, .. } => {
            for (what, o) in [("info", &info), ("convert", &conv)] {
                let e = stderr(o);
                // convert tells VDI from raw by the signature: without one, it says so.
                let no_signature = what == "convert" && !vdi::probe(&MemStorage::from_vec(c.bytes.clone()));
                let said = if no_signature {
                    e.contains("is not a VDI image (no VDI signature at offset 0x40)")
                } else {
                    message.iter().all(|m| e.contains(m))
                };
                if o.status.code() != Some(1) || !said {
                    return fail(format!("{what} exit {:?} stderr {e:?}, expected 1 and {message:?}", o.status.code()));
                }
            }
            if *check == CheckVerdict::Fails && chk.status.code() != Some(1) {
                return fail(format!("check exit {:?}, expected 1", chk.status.code()));
            }
        }
        Verdict::Opens { disk, past_end, needs_parent, .. } => {
            if !info.status.success() {
                return fail(format!("info failed: {}", stderr(&info)));
            }
            let v = json(&String::from_utf8_lossy(&info.stdout));
            if v["virtual-size"].as_u64() != Some(disk.len() as u64) {
                return fail(format!("info virtual-size {}", v["virtual-size"]));
            }
            if !needs_parent.is_empty() && v.get("chain-error").is_none() {
                return fail("info of a diff without its parent has no chain-error".into());
            }
            if past_end.is_empty() && needs_parent.is_empty() {
                if !conv.status.success() {
                    return fail(format!("convert failed: {}", stderr(&conv)));
                }
                if std::fs::read(out).map_err(|e| e.to_string())? != *disk {
                    return fail("convert wrote wrong data".into());
                }
            } else {
                // Loudly: a non-zero exit naming the block, never a file of invented zeros.
                let e = stderr(&conv);
                let named =
                    if past_end.is_empty() { e.contains("parent") } else { e.contains("past the end of the file") };
                if conv.status.success() || !named {
                    return fail(format!("convert exit {:?} stderr {e:?}", conv.status.code()));
                }
            }
        }
    }
    if let CheckVerdict::Findings { exit, kinds } = c.verdict.check() {
        let v = json(&String::from_utf8_lossy(&chk.stdout));
        let got =
            sorted(v["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_string()).collect());
        // A diff whose parent cannot be found: the chain is broken (exit 1), the file itself clean.
        let want_exit = if matches!(&c.verdict, Verdict::Opens { needs_parent, .. } if !needs_parent.is_empty()) {
            1
        } else {
            *exit
        };
        if got != *kinds || chk.status.code() != Some(want_exit) {
            return fail(format!(
                "check exit {:?} findings {got:?}, expected {want_exit} {kinds:?}",
                chk.status.code()
            ));
        }
    }
    Ok(())
}

#[test]
fn corpus_has_every_kind_of_damage() {
    let (c, dir) = corpus();
    assert!(c.cases.len() >= 40, "{} cases", c.cases.len());
    let m = json(&std::fs::read_to_string(dir.join("manifest.json")).unwrap());
    assert_eq!(m["cases"].as_array().unwrap().len(), c.cases.len());
    for k in m["cases"].as_array().unwrap() {
        let f = dir.join(k["file"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&f).unwrap().len(), k["file-size"].as_u64().unwrap(), "{f:?}");
    }
    let verdicts = |name: &str| c.cases.iter().filter(|k| k.verdict.name() == name).count();
    assert!(verdicts("fails") >= 15 && verdicts("opens") >= 10 && verdicts("opens-with-findings") >= 15);
    assert!(c.cases.iter().any(|k| k.made_by == "qemu-img") && c.cases.iter().any(|k| k.made_by == "engine"));
    assert!(c.chains.len() >= 5);
}

#[test]
fn every_verdict_through_the_engine() {
    let (c, _) = corpus();
    let failed: Vec<String> = c.cases.iter().filter_map(|k| engine_verdict(k).err()).collect();
    assert!(failed.is_empty(), "{} of {} cases failed:\n{}", failed.len(), c.cases.len(), failed.join("\n"));
}

#[test]
fn every_verdict_through_the_cli() {
    let (c, dir) = corpus();
    let out = vdi_tests::scratch();
    let raw = out.path().join("out.raw");
    let failed: Vec<String> = c.cases.iter().filter_map(|k| cli_verdict(dir, k, &raw).err()).collect();
    assert!(failed.is_empty(), "{} of {} cases failed:\n{}", failed.len(), c.cases.len(), failed.join("\n"));
}

fn open_all(files: &[(String, Vec<u8>)]) -> Vec<(String, VdiImage<MemStorage>)> {
    files.iter().map(|(n, b)| (n.clone(), VdiImage::open(MemStorage::from_vec(b.clone())).unwrap())).collect()
}

fn chain_outcome(r: vdi::Result<Chain<MemStorage>>, want: &Result<Vec<u8>, (&str, Vec<&str>)>, what: &str) {
    match (r, want) {
        (Ok(mut ch), Ok(disk)) => {
            let mut buf = vec![0u8; ch.virtual_size() as usize];
            ch.read_at(0, &mut buf).unwrap_or_else(|e| panic!("{what}: read: {e}"));
            assert!(buf == *disk, "{what}: wrong data");
        }
        (Err(e), Err((kind, msg))) => {
            assert_eq!(e.kind(), *kind, "{what}: {e}");
            for m in msg {
                assert!(e.to_string().contains(m), "{what}: {e} lacks {m:?}");
            }
        }
        (Ok(_), Err(k)) => panic!("{what}: resolved, expected {k:?}"),
        (Err(e), Ok(_)) => panic!("{what}: {e}"),
    }
}

#[test]
fn chains_through_the_engine_and_the_cli() {
    let (c, dir) = corpus();
    let out = vdi_tests::scratch();
    for k in &c.chains {
        let what = format!("chains/{}", k.name);
        let mut imgs = open_all(&k.files);
        let top = imgs.iter().position(|(n, _)| *n == k.top).unwrap();
        let (_, t) = imgs.remove(top);
        chain_outcome(Chain::resolve(t, imgs.into_iter().map(|x| x.1).collect()), &k.resolve, &what);
        let all = open_all(&k.files).into_iter().map(|x| x.1).collect();
        chain_outcome(Chain::from_set(all), &k.from_set, &format!("{what} (as a set)"));
        // The command finds parents in the image's folder: it agrees with resolve.
        let top = dir.join(&what).join(&k.top);
        let raw = out.path().join(format!("{}.raw", k.name));
        let o = run(&mut vdi(&["convert", "-O", "raw", top.to_str().unwrap(), raw.to_str().unwrap()]));
        match &k.resolve {
            Ok(disk) => {
                assert!(o.status.success(), "{what}: vdi convert: {}", stderr(&o));
                assert!(std::fs::read(&raw).unwrap() == *disk, "{what}: vdi convert wrote wrong data");
            }
            Err((_, msg)) => {
                let e = stderr(&o);
                assert_eq!(o.status.code(), Some(1), "{what}: vdi convert: {e}");
                for m in msg {
                    assert!(e.contains(m), "{what}: vdi convert: {e} lacks {m:?}");
                }
            }
        }
        let chk = run(&mut vdi(&["check", "--json", top.to_str().unwrap()]));
        let want = if k.resolve.is_ok() { 0 } else { 1 };
        assert_eq!(chk.status.code(), Some(want), "{what}: vdi check: {}", String::from_utf8_lossy(&chk.stdout));
    }
}

// ---------------------------------------------------------------------------------------
// qemu-img on the same files: recorded, not asserted.

fn qemu(args: &[&str]) -> (Option<i32>, String) {
    let o = run(Command::new("timeout").arg("20").arg("qemu-img").args(args));
    (o.status.code(), String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("").to_string())
}

/// `qemu-img info`, `check` and `convert` on every case, classified against our verdict;
/// written to `target/corpus-vs-qemu-img.md`.
#[test]
fn qemu_img_on_the_corpus_is_recorded() {
    if Command::new("qemu-img").arg("--version").output().is_err() {
        eprintln!("qemu-img not installed: nothing to record");
        return;
    }
    let (c, dir) = corpus();
    let out = vdi_tests::scratch();
    let raw = out.path().join("q.raw");
    let mut rows = vec![
        "| file | our verdict | qemu-img info | qemu-img check | qemu-img convert | what qemu-img did |".to_string(),
        "|---|---|---|---|---|---|".to_string(),
    ];
    let (mut wrong, mut invented, mut opened_refused) = (0, 0, 0);
    for k in &c.cases {
        let p = dir.join(&k.file);
        let p = p.to_str().unwrap();
        let (info, _) = qemu(&["info", "-f", "vdi", p]);
        let (chk, _) = qemu(&["check", "-f", "vdi", p]);
        let _ = std::fs::remove_file(&raw);
        let (conv, err) = qemu(&["convert", "-f", "vdi", "-O", "raw", p, raw.to_str().unwrap()]);
        let ours = match &k.verdict {
            Verdict::Fails { kind, .. } => format!("fails: {kind}"),
            Verdict::Opens { check, past_end, needs_parent, .. } => {
                let mut s = k.verdict.name().to_string();
                if let CheckVerdict::Findings { kinds, .. } = check {
                    if !kinds.is_empty() {
                        s += &format!(" ({})", kinds.join(", "));
                    }
                }
                if !past_end.is_empty() {
                    s += &format!("; blocks {past_end:?} fail to read");
                }
                if !needs_parent.is_empty() {
                    s += &format!("; blocks {needs_parent:?} need the parent");
                }
                s
            }
        };
        let what = match (&k.verdict, conv) {
            (_, Some(0)) => {
                let data = std::fs::read(&raw).unwrap_or_default();
                match &k.verdict {
                    Verdict::Fails { .. } => {
                        opened_refused += 1;
                        // Compared with the undamaged image it was made from.
                        let good = c.cases.iter().find(|g| g.file == format!("good-{}.vdi", k.base));
                        match good.map(|g| &g.verdict) {
                            Some(Verdict::Opens { disk, .. }) if data == *disk => {
                                "**opens what we refuse**, exit 0 (the undamaged image's data)".to_string()
                            }
                            _ => {
                                wrong += 1;
                                format!(
                                    "**opens what we refuse and returns other data than the undamaged image's**, exit 0 ({} bytes)",
                                    data.len()
                                )
                            }
                        }
                    }
                    Verdict::Opens { past_end, needs_parent, .. }
                        if !past_end.is_empty() || !needs_parent.is_empty() =>
                    {
                        invented += 1;
                        "**returns invented zeros for unreadable blocks, exit 0**".to_string()
                    }
                    Verdict::Opens { disk, .. } if data == *disk => "same data".to_string(),
                    Verdict::Opens { disk, .. } => {
                        wrong += 1;
                        let at = data.iter().zip(disk.iter()).position(|(a, b)| a != b);
                        format!(
                            "**wrong data, exit 0** ({} bytes vs {}, first difference at {at:?})",
                            data.len(),
                            disk.len()
                        )
                    }
                }
            }
            (_, Some(124)) => "convert timed out (20 s)".to_string(),
            (_, code) => format!("refuses (exit {code:?}): {}", err.replace('|', "/")),
        };
        let code =
            |c: Option<i32>| c.map_or("killed".into(), |c| if c == 124 { "timeout".into() } else { c.to_string() });
        rows.push(format!("| {} | {ours} | {} | {} | {} | {what} |", k.file, code(info), code(chk), code(conv)));
    }
    rows.push(String::new());
    rows.push(format!(
        "qemu-img returned other data than the undamaged image's with exit 0 on {wrong} files, invented zeros for \
         unreadable blocks with exit 0 on {invented}, and opened {opened_refused} files we refuse."
    ));
    let table = rows.join("\n") + "\n";
    std::fs::write(root().join("target/corpus-vs-qemu-img.md"), &table).unwrap();
    eprintln!("{table}");
}
