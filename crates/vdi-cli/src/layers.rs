//! Finding and opening the layers of a differencing chain for the command line.
//!
//! VirtualBox keeps snapshots in `<VM folder>/Snapshots/`, so a diff's parent is searched by
//! UUID among the `.vdi` files of the diff's folder and of the folder above it; `--chain
//! FILE...` names the layers explicitly instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vdi::{Chain, DiskMut, Uuid, VdiError, VdiImage};
use vdi_cli::FileStorage;

/// A chain and the file of each layer (base first).
pub struct Layers {
    pub chain: Chain<FileStorage>,
    pub paths: Vec<PathBuf>,
}

/// Which layers to open for writing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Rw {
    None,
    Top,
    TopAndParent,
}

/// The folder of `top` and the folder above it.
fn search_dirs(top: &Path) -> [PathBuf; 2] {
    let dir = top.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let up = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() && dir.file_name().is_some() => p.to_path_buf(),
        Some(_) if dir.file_name().is_some() => PathBuf::from("."),
        _ => dir.join(".."),
    };
    [dir, up]
}

fn candidates(top: &Path, explicit: &[PathBuf]) -> Vec<(PathBuf, bool)> {
    if !explicit.is_empty() {
        return explicit.iter().map(|p| (p.clone(), true)).collect();
    }
    let me = std::fs::canonicalize(top).ok();
    let mut out = Vec::new();
    for d in search_dirs(top) {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("vdi")) && p.is_file())
            .filter(|p| std::fs::canonicalize(p).ok() != me)
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|p| (p, false)));
    }
    out
}

fn open_at(path: &Path, rw: bool) -> Result<VdiImage<FileStorage>> {
    let f = if rw { FileStorage::open_rw(path) } else { FileStorage::open(path) }
        .with_context(|| format!("could not open {}", path.display()))?;
    VdiImage::open(f).with_context(|| format!("could not open {}", path.display()))
}

/// Open `top` and, when it is a differencing image, its parents.
pub fn open(top: &Path, explicit: &[PathBuf], rw: Rw) -> Result<Layers> {
    let top_img = open_at(top, false)?;
    let mut by_uuid: HashMap<Uuid, PathBuf> = HashMap::new();
    let mut cands = Vec::new();
    let searched = candidates(top, explicit);
    if top_img.is_diff() {
        for (p, must) in &searched {
            match open_at(p, false) {
                Ok(img) => {
                    by_uuid.entry(img.header().uuid_create).or_insert_with(|| p.clone());
                    cands.push(img);
                }
                Err(e) if *must => return Err(e),
                Err(_) => {} // not a VDI image, or unreadable: not a candidate
            }
        }
    }
    let chain = Chain::resolve(top_img, cands).map_err(|e| match e {
        VdiError::MissingParent { child, parent, .. } => {
            let hint = if explicit.is_empty() {
                let [dir, up] = search_dirs(top);
                format!(
                    " (looked in {} and {}; name the layers with --chain FILE...)",
                    dir.display(),
                    up.display()
                )
            } else {
                " (not among the --chain files)".to_string()
            };
            anyhow::Error::new(VdiError::MissingParent { child, parent, hint })
        }
        e => anyhow::Error::new(e),
    })?;
    let n = chain.layers().len();
    let paths: Vec<PathBuf> = chain
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| if i + 1 == n { top.to_path_buf() } else { by_uuid[&l.header().uuid_create].clone() })
        .collect();
    if rw == Rw::None {
        return Ok(Layers { chain, paths });
    }
    // Reopen the layers that will be written.
    drop(chain);
    let mut imgs = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let write = i + 1 == n || (rw == Rw::TopAndParent && i + 2 == n);
        imgs.push(open_at(p, write)?);
    }
    let top_img = imgs.pop().expect("a layer");
    let chain = Chain::resolve(top_img, imgs)?;
    Ok(Layers { chain, paths })
}

/// The disk at `path`, as every command that reads or writes the disk takes it: the image,
/// or — for a differencing image — its chain, with the parents found as [`open`] finds
/// them; and the file of each layer, base first. With `write`, the image (or the chain's
/// top) is opened for writing.
pub fn open_disk(path: &Path, explicit: &[PathBuf], write: bool) -> Result<(Box<dyn DiskMut>, Vec<PathBuf>)> {
    let img = crate::open_image(path)?;
    if img.is_diff() {
        drop(img);
        let rw = if write { Rw::Top } else { Rw::None };
        let l = open(path, explicit, rw)?;
        return Ok((Box::new(l.chain), l.paths));
    }
    let img = if write {
        drop(img);
        let f = FileStorage::open_rw(path).with_context(|| format!("could not open {} for writing", path.display()))?;
        VdiImage::open(f).with_context(|| format!("could not open {}", path.display()))?
    } else {
        img
    };
    Ok((Box::new(img), vec![path.to_path_buf()]))
}
