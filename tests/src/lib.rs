//! Helpers for the cross-crate tests in `tests/tests/`: where the `vdi` binary is, running
//! `qemu-img`, scratch directories, and the VirtualBox fixtures (extracted once into
//! `target/fixtures/` and reused).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

pub mod corpus;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// The `vdi` binary: `$VDI_BIN`, else `target/release/vdi` (what `cargo xtask test` builds),
/// else `target/debug/vdi`.
pub fn vdi_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VDI_BIN") {
        return p.into();
    }
    let t = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    for p in [t.join("release/vdi"), t.join("debug/vdi")] {
        if p.exists() {
            return p;
        }
    }
    panic!("the vdi binary is not built: run `cargo build -p vdi-cli --release` (cargo xtask test does)");
}

/// Run a command and return its output; panics if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"))
}

/// Run a command that must succeed; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `vdi ARGS`.
pub fn vdi(args: &[&str]) -> Command {
    let mut c = Command::new(vdi_bin());
    c.args(args);
    c
}

/// `qemu-img ARGS`.
pub fn qemu_img(args: &[&str]) -> Command {
    let mut c = Command::new("qemu-img");
    c.args(args);
    c
}

/// Parse JSON output.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A scratch directory under `target/test-scratch/` (removed when dropped).
pub fn scratch() -> tempfile::TempDir {
    let base = root().join("target/test-scratch");
    std::fs::create_dir_all(&base).expect("create target/test-scratch");
    tempfile::TempDir::new_in(base).expect("create scratch dir")
}

/// Path of a file in a scratch dir, as &str for command lines.
pub fn p(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_str().expect("utf-8 path").to_string()
}

/// A deterministic pseudo-random byte stream (xorshift), for test data.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The shared folder beside the checkout (`../shared`).
pub fn shared() -> PathBuf {
    root().join("../shared")
}

/// A VirtualBox fixture (`3hfs` or `3ext`), extracted once into `target/fixtures/NAME.vdi`
/// and reused by every later run. Extraction goes to a temporary name first, so an
/// interrupted run never leaves a half-written fixture behind.
pub fn fixture(name: &str) -> PathBuf {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let _g = LOCK.get_or_init(|| Mutex::new(())).lock().unwrap_or_else(|e| e.into_inner());
    let dir = root().join("target/fixtures");
    let out = dir.join(format!("{name}.vdi"));
    let archive = shared().join(format!("fixtures/{name}.vdi.bz2"));
    let expected = match name {
        "3hfs" => 7_784_628_224,
        "3ext" => 8_113_881_088,
        _ => 0,
    };
    if out.metadata().map(|m| m.len() == expected).unwrap_or(false) {
        return out;
    }
    assert!(archive.exists(), "fixture archive {} is missing", archive.display());
    let tmp = dir.join(format!(".extract-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("create extraction dir");
    ok(Command::new("tar").arg("-xjf").arg(&archive).arg("-C").arg(&tmp));
    std::fs::rename(tmp.join(format!("{name}.vdi")), &out).expect("move fixture into place");
    let _ = std::fs::remove_dir_all(&tmp);
    out
}

/// SHA-256 of a file, by `sha256sum`.
pub fn sha256(path: &str) -> String {
    ok(Command::new("sha256sum").arg(path)).split_whitespace().next().expect("sha256sum output").to_string()
}

/// Data extents `(start, length, host offset)` from `qemu-img map`/`vdi map` JSON, with
/// adjacent ones (contiguous in both disk and file) merged.
pub fn data_ranges(map: &serde_json::Value) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for e in map.as_array().expect("map is an array") {
        if e["data"].as_bool() != Some(true) {
            continue;
        }
        let (s, l, o) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap(), e["offset"].as_u64().unwrap());
        if let Some(last) = out.last_mut() {
            if last.0 + last.1 == s && last.2 + last.1 == o {
                last.1 += l;
                continue;
            }
        }
        out.push((s, l, o));
    }
    out
}

/// Assert two buffers are equal, reporting the first differing offset (never dumping them).
#[track_caller]
pub fn assert_same(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at byte {i} (block {}): {:#04x} != {:#04x}", i >> 20, a[i], b[i]);
    }
}

/// A disk of bytes in memory for the `vdi::volume` readers, counting the bytes read (the
/// bounds and damage tests require reads proportional to what is asked).
pub struct Counted {
    /// The disk.
    pub bytes: Vec<u8>,
    /// Bytes read so far.
    pub read: std::cell::Cell<u64>,
}

impl Counted {
    /// A disk holding `bytes`, nothing read yet.
    pub fn new(bytes: Vec<u8>) -> Self {
        Counted { bytes, read: std::cell::Cell::new(0) }
    }
}

impl vdi::volume::ReadDisk for Counted {
    fn read_disk(&mut self, offset: u64, buf: &mut [u8]) -> vdi::Result<()> {
        self.read.set(self.read.get() + buf.len() as u64);
        self.bytes.read_disk(offset, buf)
    }
    fn disk_size(&self) -> u64 {
        self.bytes.len() as u64
    }
}
