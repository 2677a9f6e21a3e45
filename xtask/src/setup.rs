//! Idempotent installation of what the tests and the server need on a fresh machine.
//! Each step checks first and does nothing when the tool is already there.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{output, root, run_cmd};

/// What native tests need: qemu-img (interop oracle), the filesystem tools, the VirtualBox fixtures.
pub fn native() -> Result<()> {
    if Command::new("qemu-img").arg("--version").output().is_err() {
        apt_install(&["qemu-utils"])?;
    }
    // The reference tools tests/tests/volume.rs makes its disks with (e2fsprogs is part of
    // the base system: mkfs.ext4, debugfs), and unzip, which checks the page's zips.
    let tools = [("mkfs.vfat", "dosfstools"), ("mcopy", "mtools"), ("mkntfs", "ntfs-3g"), ("mkfs.exfat", "exfatprogs"), ("sgdisk", "gdisk"), ("sfdisk", "fdisk"), ("unzip", "unzip")];
    let missing: Vec<&str> = tools.iter().filter(|(t, _)| Command::new(t).arg("--version").output().is_err()).map(|(_, p)| *p).collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    let fixtures = root().join("../shared/fixtures");
    if !fixtures.is_dir() {
        eprintln!("xtask: warning: {} is missing; fixture tests will fail", fixtures.display());
    }
    Ok(())
}

/// `apt-get install` the packages (updating the lists once first).
pub fn apt_install(pkgs: &[&str]) -> Result<()> {
    eprintln!("xtask: installing {pkgs:?} with apt-get");
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(Command::new("apt-get").args(["install", "-y", "-qq"]).args(pkgs).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The wasm32 target and wasm-bindgen-cli at exactly the version in Cargo.lock.
pub fn wasm_tools() -> Result<()> {
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !targets.lines().any(|l| l.trim() == "wasm32-unknown-unknown") {
        run_cmd(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    let want = locked_version("wasm-bindgen")?;
    let have = Command::new("wasm-bindgen").arg("--version").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if have.as_deref().map(|h| h.split_whitespace().nth(1) == Some(want.as_str())) != Some(true) {
        // No --locked: 0.2.130's own lockfile pins a yanked crate (see shared/TOOLCHAIN.md).
        run_cmd(Command::new("cargo").args(["install", "wasm-bindgen-cli", "--version", &want, "-j", "2"]))?;
    }
    Ok(())
}

/// Debian's chromium and chromium-driver (never a downloaded browser).
pub fn chromium() -> Result<()> {
    if !Path::new("/usr/bin/chromium").exists() || !Path::new("/usr/bin/chromedriver").exists() {
        apt_install(&["chromium", "chromium-driver"])?;
    }
    Ok(())
}

/// `npm ci` in `dir` when its node_modules is missing or older than its lockfile.
pub fn npm_ci(dir: &Path) -> Result<()> {
    let lock = dir.join("package-lock.json");
    let stamp = dir.join("node_modules/.package-lock.json");
    let fresh = match (lock.metadata().and_then(|m| m.modified()), stamp.metadata().and_then(|m| m.modified())) {
        (Ok(l), Ok(s)) => s >= l,
        _ => false,
    };
    if !fresh {
        run_cmd(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(dir))
            .with_context(|| format!("npm ci in {}", dir.display()))?;
    }
    Ok(())
}

/// The version of `name` recorded in Cargo.lock.
pub fn locked_version(name: &str) -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == format!("name = \"{name}\"") {
            if let Some(v) = lines.next().and_then(|v| v.trim().strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_string());
            }
        }
    }
    bail!("{name} is not in Cargo.lock")
}

/// Node.js and npm for the browser end-to-end tests (Debian's packages when missing).
pub fn node() -> Result<()> {
    let ok = |cmd: &str| Command::new(cmd).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok("node") || !ok("npm") {
        apt_install(&["nodejs", "npm"])?;
    }
    Ok(())
}

/// python3, whose `http.server` stands for a plain static host in the e2e tests.
pub fn python() -> Result<()> {
    if !Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success()) {
        apt_install(&["python3"])?;
    }
    Ok(())
}
