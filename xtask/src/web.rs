//! The browser side: building the wasm, serving `www/`, browser tests.
//!
//! - [`build_wasm`]: `cargo build --target wasm32-unknown-unknown` of `vdi-wasm`, then
//!   `wasm-bindgen --target web` (the CLI at exactly the version in Cargo.lock) into
//!   `www/pkg/`, then `wasm-opt` when one that understands the output is on the PATH.
//! - [`serve`]: a small static server on 127.0.0.1 (std only) with the right MIME types.
//!   The end-to-end tests use the very same server ([`start_server`]).
//! - [`test`]: wasm-bindgen-test in headless Chromium, then the playwright-core tests (the
//!   static build of `cargo xtask dist` is written first: one of them serves it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{cargo, root, run_cmd, setup};

/// The directory the wasm build writes into (served as `/pkg/`).
fn pkg_dir() -> PathBuf {
    root().join("www/pkg")
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Build the wasm bindings into `www/pkg/`. Returns whether `wasm-opt` optimised them.
pub fn build_wasm(release: bool) -> Result<bool> {
    setup::wasm_tools()?;
    let mut args = vec!["build", "-p", "vdi-wasm", "--lib", "--target", "wasm32-unknown-unknown"];
    if release {
        args.push("--release");
    }
    cargo(&args)?;
    let profile = if release { "release" } else { "debug" };
    let wasm = target_dir().join("wasm32-unknown-unknown").join(profile).join("vdi_wasm.wasm");
    let out = pkg_dir();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    run_cmd(
        Command::new("wasm-bindgen")
            .args(["--target", "web", "--no-typescript", "--out-dir"])
            .arg(&out)
            .arg(&wasm),
    )?;
    let bg = out.join("vdi_wasm_bg.wasm");
    let optimised = release && wasm_opt(&bg);
    let size = std::fs::metadata(&bg).map(|m| m.len()).unwrap_or(0);
    eprintln!("xtask: built {} ({} KiB)", bg.display(), size / 1024);
    Ok(optimised)
}

/// Optimise with `wasm-opt` when one that reads the output is at hand; returns whether it
/// did. Tried in order: `wasm-opt` on the PATH, then npm's `binaryen` (a devDependency of
/// the e2e tests, so `cargo xtask test` and `cargo xtask dist` have it). Old native builds
/// reject current wasm-bindgen output (Debian 12's binaryen 108 cannot parse `table.fill`,
/// which wasm-bindgen's externref table uses, and wasm-bindgen 0.2.130 refuses a build
/// without reference types); when nothing reads it, the unoptimised file is kept, with a
/// note, and the build goes on.
fn wasm_opt(file: &Path) -> bool {
    let npm = root().join("tests/e2e/node_modules/binaryen/bin/wasm-opt");
    let mut candidates: Vec<(String, Vec<String>)> = vec![("wasm-opt".into(), vec![])];
    if npm.is_file() {
        candidates.push(("node".into(), vec![npm.to_string_lossy().into_owned()]));
    }
    let tmp = file.with_extension("opt.wasm");
    let before = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    for (program, prefix) in candidates {
        let Ok(v) = Command::new(&program).args(&prefix).arg("--version").output() else {
            eprintln!("xtask: note: {program} {} not found", prefix.join(" "));
            continue;
        };
        let version = String::from_utf8_lossy(&v.stdout).trim().to_string();
        let out = Command::new(&program)
            .args(&prefix)
            .args(["-O3", "--enable-bulk-memory", "--enable-nontrapping-float-to-int", "--enable-sign-ext"])
            .args(["--enable-reference-types", "--enable-mutable-globals", "--enable-multivalue", "-o"])
            .arg(&tmp)
            .arg(file)
            .output();
        match out {
            Ok(o) if o.status.success() => match std::fs::rename(&tmp, file) {
                Ok(()) => {
                    let after = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
                    eprintln!("xtask: {version} optimised the wasm: {} KiB -> {} KiB", before / 1024, after / 1024);
                    return true;
                }
                Err(e) => {
                    eprintln!("xtask: note: could not replace {} with the optimised file: {e}", file.display());
                    return false;
                }
            },
            other => {
                let _ = std::fs::remove_file(&tmp);
                let why = match &other {
                    Ok(o) => String::from_utf8_lossy(&o.stdout).lines().chain(String::from_utf8_lossy(&o.stderr).lines()).find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string(),
                    Err(e) => e.to_string(),
                };
                eprintln!("xtask: note: {version} could not optimise the wasm: {why}");
            }
        }
    }
    eprintln!("xtask: note: keeping the unoptimised wasm (optional step; a binaryen newer than 108 reads it)");
    false
}

/// `cargo xtask serve [--port N] [--no-build]`.
pub fn serve(args: &[String]) -> Result<()> {
    let mut port: u16 = 8080;
    let mut build = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" | "-p" => {
                let v = it.next().context("--port needs a number")?;
                port = v.parse().with_context(|| format!("--port {v:?} is not a port number"))?;
            }
            s if s.starts_with("--port=") => {
                port = s[7..].parse().with_context(|| format!("{s:?} is not a port number"))?;
            }
            "--no-build" => build = false,
            "-h" | "--help" => {
                println!("usage: cargo xtask serve [--port N] [--no-build]\n  serves www/ on 127.0.0.1 (port 0 picks a free one)");
                return Ok(());
            }
            other => bail!("unknown option {other:?} for serve; try --help"),
        }
    }
    if build {
        build_wasm(true)?;
    } else if !pkg_dir().join("vdi_wasm_bg.wasm").exists() {
        bail!("www/pkg/ has no build; run `cargo xtask build-wasm` or drop --no-build");
    }
    let (listener, addr) = bind(port)?;
    println!("VDI workbench: http://{addr}/");
    println!("(serving {} — press Ctrl-C to stop)", root().join("www").display());
    std::io::stdout().flush().ok();
    accept_loop(listener, root().join("www"));
    Ok(())
}

fn bind(port: u16) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", port)).with_context(|| {
        format!("could not listen on 127.0.0.1:{port} (in use? try `cargo xtask serve --port 0` for a free port)")
    })?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Start the static server on a free port in a background thread; returns its base URL.
pub fn start_server(dir: PathBuf) -> Result<String> {
    let (listener, addr) = bind(0)?;
    std::thread::spawn(move || accept_loop(listener, dir));
    Ok(format!("http://{addr}/"))
}

fn accept_loop(listener: TcpListener, dir: PathBuf) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let dir = dir.clone();
        std::thread::spawn(move || {
            if let Err(e) = handle(stream, &dir) {
                if std::env::var_os("XTASK_SERVE_DEBUG").is_some() {
                    eprintln!("serve: {e:#}");
                }
            }
        });
    }
}

/// MIME type by extension.
fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Decode `%XX` escapes; `None` for a malformed escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Map a request path to a file under `dir`, refusing anything that could leave it.
fn resolve(dir: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let path = percent_decode(path)?;
    let rel = Path::new(path.trim_start_matches('/'));
    let mut out = dir.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(p) if !p.to_string_lossy().starts_with('.') => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.is_dir() {
        out.push("index.html");
    }
    out.is_file().then_some(out)
}

/// The Content-Security-Policy of every response. The page's `<meta>` policy does not
/// govern the worker: a worker runs under the policy of its script's response, so this
/// header is what lets the worker (and only same-origin scripts) compile the wasm
/// (`'wasm-unsafe-eval'`, never `'unsafe-eval'`), and what keeps the page's own policy
/// when it is served without the meta. No `'unsafe-inline'` anywhere. Trusted Types are
/// required for every script sink (`innerHTML` and the like take no strings); the one policy
/// allowed, `vdi-worker` (www/core/trusted.js), only vouches for the two worker scripts of the
/// site (the engine's `worker.js`, and `sw.js`, the static build's service worker).
macro_rules! csp {
    () => {
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; font-src 'self'; media-src 'none'; object-src 'none'; frame-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
trusted-types vdi-worker"
    };
}

/// The policy, for the static build: its service worker adds it to what it serves
/// (xtask/src/dist.rs), so a plain static host's page and worker get it too.
pub const CSP: &str = csp!();

const SECURITY_HEADERS: &str = concat!(
    "X-Content-Type-Options: nosniff\r\n",
    "Referrer-Policy: no-referrer\r\n",
    "Cross-Origin-Resource-Policy: same-origin\r\n",
    // Cross-origin isolated: the page may share memory with its worker (SharedArrayBuffer),
    // which is how Cancel reaches the engine while it runs (www/core/bridge.js).
    "Cross-Origin-Opener-Policy: same-origin\r\n",
    "Cross-Origin-Embedder-Policy: require-corp\r\n",
    "Content-Security-Policy: ",
    csp!(),
    "\r\n",
    "Cache-Control: no-cache\r\n",
);

fn respond_status(mut s: TcpStream, code: u16, reason: &str) -> Result<()> {
    let body = format!("{code} {reason}\n");
    write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{SECURITY_HEADERS}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

fn handle(stream: TcpStream, dir: &Path) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.by_ref().take(8192).read_line(&mut line)?;
    // Drain the headers (bounded).
    let mut total = 0usize;
    loop {
        let mut h = String::new();
        let n = reader.by_ref().take(8192).read_line(&mut h)?;
        total += n;
        if n == 0 || h == "\r\n" || h == "\n" || total > 64 * 1024 {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond_status(stream, 405, "Method Not Allowed");
    }
    let Some(path) = resolve(dir, target) else {
        return respond_status(stream, 404, "Not Found");
    };
    let mut file = std::fs::File::open(&path)?;
    let len = file.metadata()?.len();
    let mut s = stream;
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {len}\r\n{SECURITY_HEADERS}Connection: close\r\n\r\n",
        mime(&path)
    )?;
    if method == "GET" {
        std::io::copy(&mut file, &mut s)?;
    }
    s.flush()?;
    Ok(())
}

/// Browser tests: wasm-bindgen-test in headless Chromium (a dedicated worker, each
/// backend), then the end-to-end tests against the served workbench.
pub fn test() -> Result<()> {
    setup::wasm_tools()?;
    setup::chromium()?;
    let e2e = root().join("tests/e2e");
    // npm first: its binaryen optimises the wasm build.
    setup::node()?;
    setup::npm_ci(&e2e)?;
    build_wasm(true)?;
    // No -q: wasm-bindgen-test-runner rejects --quiet. The runner gives each test 20 s by
    // default; the OPFS tests move gigabytes through the browser's storage, which on a
    // loaded 2-core machine can take longer. A hang still fails, after 180 s.
    run_cmd(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["test", "-p", "vdi-wasm", "--target", "wasm32-unknown-unknown", "--tests"])
            .env("WASM_BINDGEN_TEST_TIMEOUT", "180"),
    )?;
    let url = start_server(root().join("www"))?;
    eprintln!("xtask: serving the workbench for the browser tests at {url}");
    // The static build (tests/e2e/dist.test.mjs serves it with python3's http.server).
    let dist = target_dir().join("dist");
    let version = crate::dist::write(&root().join("www"), &dist)?;
    eprintln!("xtask: wrote the static build {version} to {}", dist.display());
    setup::python()?;
    let vdi = target_dir().join("release/vdi");
    run_cmd(
        Command::new("node")
            .args(["--test", "--test-concurrency=1", "tests/e2e/"])
            .env("VDI_WORKBENCH_URL", &url)
            .env("VDI_DIST_DIR", &dist)
            .env("VDI_BIN", &vdi),
    )
    .context("browser end-to-end tests failed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_inside() {
        let dir = root().join("www");
        assert!(resolve(&dir, "/../Cargo.toml").is_none());
        assert!(resolve(&dir, "/%2e%2e/Cargo.toml").is_none());
        assert!(resolve(&dir, "/.git/config").is_none());
        assert!(resolve(&dir, "/pkg/../../Cargo.toml").is_none());
        assert_eq!(mime(Path::new("a/b.wasm")), "application/wasm");
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("a%2"), None);
    }

    #[test]
    fn csp_is_strict() {
        let csp = csp!();
        assert!(!csp.contains("unsafe-inline") && !csp.contains("'unsafe-eval'") && !csp.contains('*'));
        assert!(csp.contains("script-src 'self' 'wasm-unsafe-eval';"));
        // Trusted Types: enforced, and only the worker's policy may be created (no
        // 'allow-duplicates', no wildcard, no default policy).
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        assert!(directives.contains(&"require-trusted-types-for 'script'"), "{csp}");
        assert!(directives.contains(&"trusted-types vdi-worker"), "{csp}");
        assert!(SECURITY_HEADERS.contains(&format!("Content-Security-Policy: {csp}\r\n")));
    }
}
