//! The differencing-chain subcommands and the chain parts of info, check and map.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use uuid::Uuid;
use vdi::report::{chain_layer_json, check_json};
use vdi::CreateOptions;
use vdi_cli::FileStorage;

use crate::layers::{self, Layers, Rw};
use crate::Bar;

/// `vdi create --parent PARENT IMG`.
pub fn create_diff(parent: &Path, image: &Path, comment: &str, uuid: Option<&str>) -> Result<u8> {
    let p = crate::open_image(parent)?;
    let uuid = match uuid {
        Some(u) => Uuid::parse_str(u).map_err(|e| anyhow::anyhow!("invalid --uuid {u:?}: {e}"))?,
        None => Uuid::new_v4(),
    };
    let mut o = CreateOptions::diff_of(p.header(), uuid, Uuid::new_v4());
    o.comment = comment.to_string();
    o.header()?;
    let f = FileStorage::create(image).with_context(|| format!("could not create {}", image.display()))?;
    let img = vdi::create(f, &o, &mut vdi::NoMonitor)?;
    let h = img.header();
    println!(
        "Formatting '{}', fmt=vdi size={} type=diff parent={} (uuid {}) uuid={}",
        image.display(),
        h.disk_size,
        parent.display(),
        h.uuid_link,
        h.uuid_create
    );
    Ok(0)
}

/// `vdi commit DIFF`.
pub fn commit(image: &Path, keep: bool, chain: &[PathBuf]) -> Result<u8> {
    let mut l = layers::open(image, chain, Rw::TopAndParent)?;
    let n = l.paths.len();
    if n < 2 {
        anyhow::bail!("{} is not a differencing image: there is nothing to commit", image.display());
    }
    for w in l.chain.warnings() {
        eprintln!("vdi: warning: {w}");
    }
    let st = l.chain.commit(Uuid::new_v4(), keep, &mut Bar::new("committing"))?;
    println!(
        "{} committed into {}: {} block(s) merged, {} block(s) zeroed{}",
        image.display(),
        l.paths[n - 2].display(),
        st.blocks_merged,
        st.blocks_zeroed,
        if keep { "" } else { "; the differencing image is now empty" }
    );
    Ok(0)
}

/// `vdi stream DIFF`.
pub fn stream(image: &Path, chain: &[PathBuf]) -> Result<u8> {
    let mut l = layers::open(image, chain, Rw::Top)?;
    let n = l.paths.len();
    if n < 2 {
        anyhow::bail!("{} is not a differencing image: it has no parent to merge", image.display());
    }
    let copied = l.chain.stream(&mut Bar::new("streaming"))?;
    let standalone = !l.chain.top().is_diff();
    println!(
        "{}: {copied} block(s) copied from {}; {}",
        image.display(),
        l.paths[n - 2].display(),
        if standalone { "it is now a standalone image".to_string() } else { format!("its parent is now {}", l.paths[n - 3].display()) }
    );
    Ok(0)
}

/// The layers, base first (`index` is the place in the chain).
fn layer_json(l: &Layers) -> Vec<Value> {
    l.chain
        .layers()
        .iter()
        .zip(&l.paths)
        .enumerate()
        .map(|(i, (img, p))| chain_layer_json(img, &p.display().to_string(), i))
        .collect()
}

/// The chain part of `vdi info --json`: `backing-filename` (as qemu-img) and the layers.
pub fn describe_json(l: &Layers, v: &mut Value) {
    let n = l.paths.len();
    if n >= 2 {
        v["backing-filename"] = json!(l.paths[n - 2].display().to_string());
    }
    v["chain"] = json!(layer_json(l));
    v["chain-warnings"] = json!(l.chain.warnings());
}

/// The chain part of `vdi info`.
pub fn describe(l: &Layers, o: &mut dyn Write) -> io::Result<()> {
    let n = l.paths.len();
    if n >= 2 {
        writeln!(o, "backing file: {}", l.paths[n - 2].display())?;
    }
    writeln!(o, "chain (base first):")?;
    for (i, (img, p)) in l.chain.layers().iter().zip(&l.paths).enumerate() {
        let h = img.header();
        writeln!(
            o,
            "    {i}: {} ({}, uuid {}, {} blocks allocated)",
            p.display(),
            h.kind().map(|k| k.name()).unwrap_or("unknown"),
            h.uuid_create,
            h.blocks_allocated
        )?;
    }
    for w in l.chain.warnings() {
        writeln!(o, "warning: {w}")?;
    }
    Ok(())
}

/// Checks of a diff's parents.
pub struct Parents {
    pub reports: Vec<Value>,
    pub warnings: Vec<String>,
    pub code: u8,
    lines: Vec<String>,
}

/// Combine `qemu-img check` exit codes: corruption (2) over leaks (3) over clean (0).
pub fn worst(a: u8, b: u8) -> u8 {
    let rank = |c: u8| match c {
        2 => 3,
        1 => 2,
        3 => 1,
        _ => 0,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

/// Check every parent of the diff at `path` and the links between them.
pub fn check_parents(path: &Path, chain: &[PathBuf]) -> Result<Parents> {
    let l = layers::open(path, chain, Rw::None)?;
    let n = l.paths.len();
    let mut out = Parents { reports: Vec::new(), warnings: l.chain.warnings().to_vec(), code: 0, lines: Vec::new() };
    for p in &l.paths[..n - 1] {
        let r = vdi::check(crate::open_file(p)?, &mut vdi::NoMonitor).with_context(|| format!("could not check {}", p.display()))?;
        out.code = worst(out.code, r.exit_code() as u8);
        let name = p.display().to_string();
        out.lines.push(if r.is_clean() {
            format!("parent {name}: no errors")
        } else {
            format!("parent {name}: {} corruption(s), {} leak(s) (run vdi check on it for details)", r.corruptions, r.leaks)
        });
        out.reports.push(check_json(&r, &name));
    }
    Ok(out)
}

/// Print what [`check_parents`] found.
pub fn print_parents(p: &Parents, o: &mut dyn Write) -> io::Result<()> {
    for l in &p.lines {
        writeln!(o, "{l}")?;
    }
    for w in &p.warnings {
        writeln!(o, "warning: {w}")?;
    }
    Ok(())
}

