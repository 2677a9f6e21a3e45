//! Snapshot chains in the browser: several dropped files linked by UUID.
//!
//! [`open`] opens every dropped `File` read-only (leniently, as a single image is opened)
//! and orders them with [`vdi::Chain::from_set`], with the engine's errors made specific to
//! the files: the engine's message, kept verbatim, is followed by the name of the file that
//! has each image UUID it mentions. [`describe`] is the chain's description. Everything
//! else (maps, export, flattening) is the session's, over the chain as a [`vdi::Disk`].

use std::collections::HashMap;

use serde_json::{json, Value};
use uuid::Uuid;
use vdi::error::ChainError;
use vdi::report::chain_layer_json;
use vdi::{Chain, OpenOptions, VdiError, VdiImage};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::File;

use crate::js_error;
use crate::storage::{Backend, FileStorage};

/// Most files one chain may be opened from.
pub const MAX_FILES: u32 = 64;

/// A chain just opened, with what the session keeps about its files.
#[derive(Debug)]
pub struct OpenedChain {
    /// The chain.
    pub chain: Chain<Backend>,
    /// File name of each layer, base first.
    pub names: Vec<String>,
    /// Position of each layer's file in the list given, base first.
    pub indices: Vec<usize>,
    /// Image UUID -> file names (for messages).
    pub by_uuid: Vec<(String, String)>,
}

/// `msg` kept verbatim (so the engine's wording can still be searched for), followed by the
/// file name(s) of every known UUID it mentions, in the order they first appear:
/// "… — 1234… is “base.vdi”; 5678… is “snap.vdi”".
fn decorate(msg: &str, by_uuid: &[(String, String)]) -> String {
    let mut found: Vec<(usize, &str, &str)> =
        by_uuid.iter().filter_map(|(u, names)| msg.find(u.as_str()).map(|at| (at, u.as_str(), names.as_str()))).collect();
    if found.is_empty() {
        return msg.to_string();
    }
    found.sort();
    let which: Vec<String> = found.iter().map(|(_, u, names)| format!("{u} is {names}")).collect();
    format!("{msg} \u{2014} {}", which.join("; "))
}

fn quoted(name: &str) -> String {
    format!("\u{201c}{name}\u{201d}")
}

/// The separate chains in a set of headers, as file names base first ("a.vdi → b.vdi").
fn groups(heads: &[(String, vdi::VdiHeader)]) -> Vec<String> {
    let claimed: std::collections::HashSet<Uuid> =
        heads.iter().filter(|(_, h)| h.kind() == Some(vdi::ImageType::Diff)).map(|(_, h)| h.uuid_link).collect();
    let idx: HashMap<Uuid, usize> = heads.iter().enumerate().map(|(i, (_, h))| (h.uuid_create, i)).collect();
    let mut out = Vec::new();
    for (name, h) in heads {
        if claimed.contains(&h.uuid_create) {
            continue;
        }
        let mut names = vec![quoted(name)];
        let mut cur = h;
        let mut steps = 0;
        while cur.kind() == Some(vdi::ImageType::Diff) && steps < heads.len() {
            match idx.get(&cur.uuid_link) {
                Some(&i) => {
                    names.push(quoted(&heads[i].0));
                    cur = &heads[i].1;
                }
                None if cur.uuid_link.is_nil() => {
                    names.push("(null parent UUID)".to_string());
                    break;
                }
                None => {
                    names.push(format!("(missing parent {})", cur.uuid_link));
                    break;
                }
            }
            steps += 1;
        }
        names.reverse();
        out.push(names.join(" \u{2192} "));
    }
    out
}

pub fn open(files: &js_sys::Array) -> Result<OpenedChain, JsValue> {
    let n = files.length();
    if n == 0 {
        return Err(js_error("invalid-argument", "no files were given"));
    }
    if n > MAX_FILES {
        return Err(js_error(
            "invalid-argument",
            format!("{n} files were given; a chain is opened from at most {MAX_FILES}"),
        ));
    }
    let mut imgs = Vec::with_capacity(n as usize);
    let mut heads = Vec::with_capacity(n as usize);
    let mut names_of: HashMap<String, Vec<String>> = HashMap::new();
    for v in files.iter() {
        let file: File = v.dyn_into().map_err(|_| js_error("invalid-argument", "every item must be a File"))?;
        let name = file.name();
        let s = FileStorage::new(&file).map_err(|e| js_error("io", format!("{}: {}", quoted(&name), e.message)))?;
        let img = VdiImage::open_with(Backend::File(s), OpenOptions { lenient: true })
            .map_err(|e| js_error(e.kind(), format!("{} could not be opened: {e}", quoted(&name))))?;
        let u = img.header().uuid_create;
        names_of.entry(u.to_string()).or_default().push(quoted(&name));
        heads.push((name, img.header().clone()));
        imgs.push(img);
    }
    let by_uuid: Vec<(String, String)> = names_of.into_iter().map(|(u, v)| (u, v.join(" and "))).collect();
    let chain = match Chain::from_set(imgs) {
        Ok(c) => c,
        Err(e @ VdiError::MissingParent { .. }) => {
            let needer = heads
                .iter()
                .find(|(_, h)| {
                    h.kind() == Some(vdi::ImageType::Diff) && !heads.iter().any(|(_, p)| p.uuid_create == h.uuid_link)
                })
                .map(|(n, h)| (n.clone(), h.uuid_link));
            let msg = match needer {
                Some((name, link)) => format!(
                    "the parent of {} is missing: it needs the image with UUID {link}, which is not among the {n} file(s) dropped; drop that image together with the others",
                    quoted(&name)
                ),
                None => decorate(&e.to_string(), &by_uuid),
            };
            return Err(js_error(e.kind(), msg));
        }
        Err(e) => {
            let apart = matches!(e, VdiError::Chain(ChainError::SeparateChains { .. } | ChainError::NotInChain { .. }));
            let msg = if apart {
                let g = groups(&heads);
                format!(
                    "the {n} files do not form one chain but {} separate chains: {}. Drop the files of one chain at a time",
                    g.len(),
                    g.join("; ")
                )
            } else {
                decorate(&e.to_string(), &by_uuid)
            };
            return Err(js_error(e.kind(), msg));
        }
    };
    // Names in chain order.
    let mut names = Vec::with_capacity(chain.layers().len());
    let mut indices = Vec::with_capacity(chain.layers().len());
    for l in chain.layers() {
        let u = l.header().uuid_create;
        // UUIDs are unique in a chain (from_set refuses duplicates).
        let i = heads.iter().position(|(_, h)| h.uuid_create == u).unwrap_or(0);
        names.push(heads[i].0.clone());
        indices.push(i);
    }
    Ok(OpenedChain { chain, names, indices, by_uuid })
}

/// The chain: `{layers, warnings, virtual-size, block-size, blocks}`, layers base first as
/// [`vdi::report::chain_layer_json`] (`index`: where the file was among those given).
pub fn describe(chain: &Chain<Backend>, names: &[String], indices: &[usize], by_uuid: &[(String, String)]) -> Value {
    let layers: Vec<Value> =
        chain.layers().iter().zip(names.iter().zip(indices)).map(|(l, (name, index))| chain_layer_json(l, name, *index)).collect();
    let warnings: Vec<String> = chain.warnings().iter().map(|w| decorate(w, by_uuid)).collect();
    json!({
        "layers": layers,
        "warnings": warnings,
        "virtual-size": chain.virtual_size(),
        "block-size": chain.block_size(),
        "blocks": chain.virtual_size().div_ceil(chain.block_size()),
    })
}
