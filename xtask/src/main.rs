//! `cargo xtask <task>`: the README's commands live here.
//!
//! - `serve [--port N]`: install what is missing, build the wasm, serve `www/` on 127.0.0.1.
//! - `test`: install what is missing, then run every test (native, qemu-img interop,
//!   fixtures, wasm in headless Chromium, browser end-to-end).
//! - `bench [--compact]`: side-by-side benchmarks against qemu-img (not a test); `--compact`
//!   runs the compact benchmark (tests/bench/compact.sh) instead of the main one.
//! - `dist [--out DIR] [--no-build]`: the workbench as a static site for any host
//!   (`target/dist/`: offline copy, installable app; see docs/workbench.md).
//! - `build-wasm`: build the wasm bindings into `www/pkg/`.
//! - `fuzz [SECONDS] [TARGET...]`: run the cargo-fuzz targets in `fuzz/` (nightly).
//! - `corpus DIR`: write the damaged-image corpus and its manifest into DIR.

mod dist;
mod fuzz;
mod setup;
mod web;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    match task {
        "serve" => web::serve(rest),
        "test" => test(rest),
        "dist" => dist::dist(rest),
        "build-wasm" => web::build_wasm(true).map(|_| ()),
        "bench" => bench(rest),
        "fuzz" => fuzz::fuzz(rest),
        "corpus" => fuzz::corpus(rest),
        "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <serve [--port N] | dist [--out DIR] | test | bench [--compact | --files] | build-wasm | fuzz [SECONDS] [TARGET...] | corpus DIR>");
            Ok(())
        }
        other => bail!("unknown task {other:?}; try `cargo xtask help`"),
    }
}

/// Every test the project has, in one command (what `.ci/run` calls).
fn test(_args: &[String]) -> Result<()> {
    setup::native()?;
    // The CLI binary is used by the interop tests in tests/.
    cargo(&["build", "-p", "vdi-cli", "--release"])?;
    cargo(&["test", "--workspace", "--exclude", "xtask"])?;
    web::test()?;
    println!("xtask: all tests passed");
    Ok(())
}

/// `bench [ARGS]` runs tests/bench/bench.sh; `bench --compact [ARGS]` runs the compact
/// benchmark, tests/bench/compact.sh, instead; `bench --files [ARGS]` the Files view's,
/// tests/bench/files-bench.mjs (after building the wasm).
fn bench(args: &[String]) -> Result<()> {
    setup::native()?;
    cargo(&["build", "-p", "vdi-cli", "--release"])?;
    let (script, args) = match args.split_first() {
        Some((first, rest)) if first == "--compact" => ("tests/bench/compact.sh", rest),
        Some((first, rest)) if first == "--files" => {
            web::build_wasm(true)?;
            ("tests/bench/files-bench.mjs", rest)
        }
        _ => ("tests/bench/bench.sh", args),
    };
    let status = Command::new(root().join(script))
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("running {script}"))?;
    if !status.success() {
        bail!("benchmark failed");
    }
    Ok(())
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Run cargo with `args` in the workspace root.
pub fn cargo(args: &[&str]) -> Result<()> {
    run_cmd(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(args))
}

/// Run a command, failing when it fails.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(root());
    }
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Run a command and return its standard output.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
