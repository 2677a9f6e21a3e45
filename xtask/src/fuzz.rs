//! `cargo xtask fuzz [SECONDS] [TARGET...]`: run each cargo-fuzz target in `fuzz/` for a set
//! time (default 60 s each), one after the other with one worker, and print the executions
//! and findings of each. `cargo xtask corpus DIR`: write the damaged-image corpus (and its
//! `manifest.json`) into DIR.
//!
//! Seeds: the small images in `fuzz/seeds/` (made by `fuzz/make-seeds.sh` with qemu-img,
//! qemu-io and our `vdi` command) are copied into the corpus of every target that takes a
//! file. The corpora grow in `fuzz/corpus/` and crashes land in `fuzz/artifacts/` (both
//! ignored by git); each crash found becomes a test in `crates/vdi/tests/regressions.rs`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{root, run_cmd};

/// Every target, and the seeds its corpus starts from (None: it builds its own inputs):
/// `seeds/` holds VDI images, `seeds-volume/` partition tables and filesystems.
pub const TARGETS: [(&str, Option<&str>); 8] = [
    ("header", Some("seeds")),
    ("open_read", Some("seeds")),
    ("check", Some("seeds")),
    ("repair", Some("seeds")),
    ("ops", None),
    ("volume_table", Some("seeds-volume")),
    ("volume_fs", Some("seeds-volume")),
    ("volume_free", Some("seeds-volume")),
];

/// Options every run gets: inputs up to 64 KiB, and a single allocation above 64 MiB, an RSS
/// above 1 GiB or an input taking over 10 s is a finding (whatever a header claims, the
/// engine must not allocate or work beyond what the file's size justifies).
const LIBFUZZER_OPTS: [&str; 5] =
    ["-max_len=65536", "-malloc_limit_mb=64", "-rss_limit_mb=1024", "-timeout=10", "-print_final_stats=1"];

pub fn fuzz(args: &[String]) -> Result<()> {
    let secs: u64 = match args.first() {
        Some(s) => s.parse().with_context(|| format!("SECONDS must be a number, not {s:?}"))?,
        None => 60,
    };
    let chosen: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    for c in &chosen {
        if !TARGETS.iter().any(|(t, _)| t == c) {
            bail!("unknown fuzz target {c:?}; targets: {}", TARGETS.map(|t| t.0).join(", "));
        }
    }
    ensure_cargo_fuzz()?;
    let fuzz_dir = root().join("fuzz");
    let mut summary = Vec::new();
    for (target, seeds) in TARGETS {
        if !chosen.is_empty() && !chosen.contains(&target) {
            continue;
        }
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        if let Some(seeds) = seeds {
            for e in std::fs::read_dir(fuzz_dir.join(seeds))? {
                let e = e?;
                std::fs::copy(e.path(), corpus.join(e.file_name()))?;
            }
        }
        let log = fuzz_dir.join(format!("target/fuzz-{target}.log"));
        std::fs::create_dir_all(log.parent().unwrap())?;
        let mut cmd = Command::new("cargo");
        cmd.args(["+nightly", "fuzz", "run", "-O"]);
        if seeds.is_none() {
            // ops builds its images itself, small: without AddressSanitizer it runs three
            // times faster (the engine has no unsafe code; RSS is still capped).
            cmd.args(["-s", "none"]);
        }
        cmd.arg(target)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .args(LIBFUZZER_OPTS)
            .current_dir(&fuzz_dir)
            .env("CARGO_BUILD_JOBS", "2")
            .stderr(std::fs::File::create(&log)?);
        eprintln!("xtask: fuzzing {target} for {secs} s (log: {})", log.display());
        let status = cmd.status().context("running cargo fuzz")?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let stat = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{name}:")).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| "?".into())
        };
        let crash = text.lines().find(|l| l.contains("Test unit written to")).map(str::to_string);
        summary.push((target, stat("number_of_executed_units"), stat("peak_rss_mb"), status.success(), crash));
    }
    println!("{:<10} {:>14} {:>10}  result", "target", "executions", "peak RSS");
    let mut failed = false;
    for (t, execs, rss, ok, crash) in &summary {
        let res = match (ok, crash) {
            (true, _) => "no findings".to_string(),
            (false, Some(c)) => format!("FINDING: {c}"),
            (false, None) => "FAILED (see the log)".to_string(),
        };
        failed |= !ok;
        println!("{t:<10} {execs:>14} {:>10}  {res}", format!("{rss} MB"));
    }
    if failed {
        bail!("a fuzz target failed; reproduce with `cd fuzz && cargo +nightly fuzz run TARGET ARTIFACT`");
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let nightly = Command::new("cargo").args(["+nightly", "--version"]).output();
    if !nightly.map(|o| o.status.success()).unwrap_or(false) {
        bail!("fuzzing needs a nightly toolchain: rustup toolchain install nightly");
    }
    let have = Command::new("cargo").args(["fuzz", "--version"]).output();
    if !have.map(|o| o.status.success()).unwrap_or(false) {
        run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Write the damaged-image corpus into DIR (see `tests/src/corpus.rs`).
pub fn corpus(args: &[String]) -> Result<()> {
    let Some(dir) = args.first() else { bail!("usage: cargo xtask corpus DIR") };
    let dir = Path::new(dir);
    let dir = if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir()?.join(dir) };
    run_cmd(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["run", "-q", "-p", "vdi-tests", "--bin", "vdi-corpus", "--"])
            .arg(&dir),
    )
}
