//! `cargo xtask dist`: the workbench as a static site anyone can host (`target/dist/`).
//!
//! The site is `www/` as it is (every URL in it is relative, so it works under any sub-path)
//! plus the wasm build, with two stamps:
//! - `index.html`'s `<meta name="vdi-build" content="dev">` gets the build's version, which
//!   tells the page to register its service worker (the development server never does);
//! - `sw.js`'s `const BUILD = null;` gets `{version, csp, files}`: every file of the site
//!   with its SHA-256 in Subresource Integrity form, and the development server's
//!   Content-Security-Policy header, which the service worker adds to what it serves (a
//!   static host sends none: the page keeps its `<meta>` policy, and the engine's worker,
//!   which a meta cannot reach, gets the header's once the service worker serves it). The service worker caches exactly those bytes
//!   (a fetch whose bytes differ fails, and with it the install: a half-copied deploy never
//!   becomes a cached version) under a cache named after the version.
//!
//! The version is a hash of the site's sources, so the same sources give the same bytes (a
//! rebuild is no update), and any change gives a new `sw.js`, which browsers compare byte
//! for byte: that is how an open page learns of a new version.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::{root, web};

/// What `index.html` holds until a dist build stamps it.
const BUILD_META: &str = r#"<meta name="vdi-build" content="dev">"#;
/// What `sw.js` holds until a dist build stamps it.
const BUILD_CONST: &str = "const BUILD = null;";
/// Files of the wasm build that the site uses (wasm-bindgen also writes others).
const PKG_EXTENSIONS: [&str; 2] = ["js", "wasm"];

/// `cargo xtask dist [--out DIR] [--www DIR] [--no-build]`.
pub fn dist(args: &[String]) -> Result<()> {
    let mut out = web::target_dir().join("dist");
    let mut www = root().join("www");
    let mut build = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(it.next().context("--out needs a directory")?),
            "--www" => www = PathBuf::from(it.next().context("--www needs a directory")?),
            "--no-build" => build = false,
            "-h" | "--help" => {
                println!(
                    "usage: cargo xtask dist [--out DIR] [--www DIR] [--no-build]\n  writes the workbench as a static site (default target/dist/) and prints its path\n  --www: the sources (default www/, with the wasm build in www/pkg/)\n  --no-build: use the wasm build already in www/pkg/"
                );
                return Ok(());
            }
            other => bail!("unknown option {other:?} for dist; try --help"),
        }
    }
    if build {
        // npm's binaryen (with the e2e tests' packages) optimises the wasm.
        crate::setup::node()?;
        crate::setup::npm_ci(&root().join("tests/e2e"))?;
    }
    let optimised = if build { Some(web::build_wasm(true)?) } else { None };
    let version = write(&www, &out)?;
    match optimised {
        Some(true) => eprintln!("xtask: the wasm is optimised by wasm-opt"),
        Some(false) => eprintln!("xtask: note: the wasm is not optimised (see above); the site works the same, only larger"),
        None => {}
    }
    eprintln!("xtask: version {version}; copy the folder's contents to any static host (serve .wasm as application/wasm)");
    println!("{}", out.display());
    Ok(())
}

/// Write the site built from `www` (with its `pkg/`) into `out`, replacing what a previous
/// build left there. Returns the version.
pub fn write(www: &Path, out: &Path) -> Result<String> {
    ensure!(
        www.join("pkg/vdi_wasm_bg.wasm").is_file(),
        "{} has no wasm build: run `cargo xtask build-wasm` or drop --no-build",
        www.join("pkg").display()
    );
    let mut files = Vec::new();
    collect(www, "", &mut files)?;
    files.sort();
    let mut site = Vec::with_capacity(files.len());
    let mut sources = String::new();
    for rel in &files {
        let bytes = std::fs::read(www.join(rel)).with_context(|| format!("reading {}", www.join(rel).display()))?;
        let _ = writeln!(sources, "{rel}\t{}", hex(&sha256(&bytes)));
        site.push((rel.clone(), bytes));
    }
    let version = hex(&sha256(sources.as_bytes()))[..12].to_string();

    stamp(&mut site, "index.html", BUILD_META, &BUILD_META.replace("dev", &version))?;
    let mut manifest = format!("{{\"version\":\"{version}\",\"csp\":\"{}\",\"files\":{{", json_escape(web::CSP));
    for (i, (rel, bytes)) in site.iter().filter(|(rel, _)| rel != "sw.js").enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(manifest, "{sep}\"{}\":\"sha256-{}\"", json_escape(rel), base64(&sha256(bytes)));
    }
    manifest.push_str("}}");
    stamp(&mut site, "sw.js", BUILD_CONST, &format!("const BUILD = {manifest};"))?;

    // Write next to `out`, then swap it in: the old site stays whole until the new one is.
    let parent = out.parent().context("--out needs a parent directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = out.file_name().context("--out needs a directory name")?.to_string_lossy();
    let tmp = parent.join(format!(".{name}.new"));
    let old = parent.join(format!(".{name}.old"));
    for d in [&tmp, &old] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    for (rel, bytes) in &site {
        let path = tmp.join(rel);
        std::fs::create_dir_all(path.parent().expect("a file has a parent"))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    if out.exists() {
        ensure!(
            out.join("sw.js").is_file() || std::fs::read_dir(out)?.next().is_none(),
            "{} exists and is not a previous build (no sw.js): not replacing it",
            out.display()
        );
        std::fs::rename(out, &old).with_context(|| format!("moving {} aside", out.display()))?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("moving the new site to {}", out.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(version)
}

/// The site's files under `dir` (relative, `/`-separated): everything but dot files, and of
/// `pkg/` only what the page loads.
fn collect(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = format!("{rel}{name}");
        if entry.file_type()?.is_dir() {
            collect(&entry.path(), &format!("{path}/"), out)?;
        } else if rel != "pkg/" || PKG_EXTENSIONS.iter().any(|e| name.ends_with(&format!(".{e}"))) {
            out.push(path);
        }
    }
    Ok(())
}

/// Replace the one occurrence of `from` in file `rel` of `site` with `to`.
fn stamp(site: &mut [(String, Vec<u8>)], rel: &str, from: &str, to: &str) -> Result<()> {
    let (_, bytes) = site.iter_mut().find(|(r, _)| r == rel).with_context(|| format!("the site has no {rel}"))?;
    let text = std::str::from_utf8(bytes).with_context(|| format!("{rel} is not UTF-8"))?;
    let n = text.matches(from).count();
    ensure!(n == 1, "{rel} must hold `{from}` exactly once (found {n})");
    *bytes = text.replace(from, to).into_bytes();
    Ok(())
}

fn json_escape(s: &str) -> String {
    s.chars().flat_map(|c| match c {
        '"' | '\\' => vec!['\\', c],
        c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
        c => vec![c],
    }).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 with padding (what Subresource Integrity uses).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            s.push(if i <= c.len() { A[(n >> shift) as usize & 63] as char } else { '=' });
        }
    }
    s
}

/// SHA-256 (FIPS 180-4). The site is a megabyte or two: a plain implementation is enough,
/// and xtask keeps to std and anyhow.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ];
    let mut h: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes(word.try_into().expect("4 bytes"));
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7].wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [t1.wrapping_add(t2), v[0], v[1], v[2], v[3].wrapping_add(t1), v[4], v[5], v[6]];
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    let mut out = [0u8; 32];
    for (o, word) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_and_base64_match_the_standard_vectors() {
        assert_eq!(hex(&sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        // Two blocks (the padding spills over).
        assert_eq!(
            hex(&sha256(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // RFC 4648's vectors.
        for (raw, enc) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
        assert_eq!(json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
    }

    #[test]
    fn the_sources_hold_the_stamps_once() {
        let www = root().join("www");
        let index = std::fs::read_to_string(www.join("index.html")).unwrap();
        assert_eq!(index.matches(BUILD_META).count(), 1);
        let sw = std::fs::read_to_string(www.join("sw.js")).unwrap();
        assert_eq!(sw.matches(BUILD_CONST).count(), 1);
    }
}
