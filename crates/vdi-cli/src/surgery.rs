//! The in-place subcommands: compact, resize, discard, repair, set, write.
//! Each opens the image read-write only because the user named the operation.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use uuid::Uuid;
use vdi::header::UuidArg;
use vdi::report::{compact_json, discard_json, repair_json, resize_json};
use vdi::VdiImage;
use vdi_cli::{parse_size, FileStorage};

use crate::layers::{self, Rw};
use crate::{human, print_json, Bar};

fn open_rw(path: &Path) -> Result<VdiImage<FileStorage>> {
    crate::open_file(path)?; // the same clear errors as the read-only commands
    let f = FileStorage::open_rw(path).with_context(|| format!("could not open {} for writing", path.display()))?;
    VdiImage::open(f).with_context(|| format!("could not open {}", path.display()))
}

fn is_diff(path: &Path) -> Result<bool> {
    let h = vdi::read_header(&crate::open_file(path)?).with_context(|| format!("could not open {}", path.display()))?;
    Ok(h.kind() == Some(vdi::ImageType::Diff))
}

pub fn compact(path: &Path, free: bool, json: bool, chain: &[PathBuf]) -> Result<u8> {
    let diff = is_diff(path)?;
    let st = if diff {
        // A snapshot: blocks equal to what its parents read become FREE.
        let mut l = layers::open(path, chain, Rw::Top)?;
        l.chain.compact_top(&mut Bar::new("compacting"))?
    } else {
        let mut img = open_rw(path)?;
        let st = {
            let mut bar = Bar::new("compacting");
            img.compact(free, &mut bar)?
        };
        img.flush()?;
        st
    };
    if json {
        return print_json(&compact_json(&st, &path.display().to_string(), (!diff).then_some(free)));
    }
    println!(
        "{}: {} zero block(s) marked {}, {} block(s) moved, {} reclaimed ({} -> {} bytes)",
        path.display(),
        st.blocks_zeroed,
        if free { "FREE" } else { "ZERO" },
        st.blocks_moved,
        human(st.bytes_reclaimed),
        st.file_len_before,
        st.file_len_after
    );
    Ok(0)
}

pub fn resize(path: &Path, size: &str, json: bool) -> Result<u8> {
    let mut img = open_rw(path)?;
    let cur = img.virtual_size();
    let new = if let Some(d) = size.strip_prefix('+') {
        cur.checked_add(parse_size(d).map_err(|e| anyhow!(e))?).ok_or_else(|| anyhow!("size overflows"))?
    } else if let Some(d) = size.strip_prefix('-') {
        cur.checked_sub(parse_size(d).map_err(|e| anyhow!(e))?)
            .ok_or_else(|| anyhow!("cannot shrink {cur} bytes by {d}"))?
    } else {
        parse_size(size).map_err(|e| anyhow!(e))?
    };
    let st = {
        let mut bar = Bar::new("resizing");
        img.resize(new, &mut bar)?
    };
    img.flush()?;
    if json {
        return print_json(&resize_json(&st, img.header(), &path.display().to_string()));
    }
    let verb = if st.new_size >= st.old_size { "grown" } else { "shrunk (everything cut was zeros)" };
    println!("{}: {verb} from {} to {} bytes", path.display(), st.old_size, st.new_size);
    if st.map_moved {
        println!(
            "the block map needed more room: {} data block(s) moved to the end of the file, the map now starts at {}",
            st.blocks_relocated,
            img.header().offset_bmap
        );
    }
    Ok(0)
}

pub fn discard(path: &Path, offset: u64, length: u64, json: bool) -> Result<u8> {
    let mut img = open_rw(path)?;
    let (blocks, reclaimed) = img.discard(offset, length, &mut Bar::new("discarding"))?;
    img.flush()?;
    if json {
        return print_json(&discard_json(blocks, reclaimed, &path.display().to_string()));
    }
    println!("{}: {blocks} whole block(s) discarded, {} reclaimed", path.display(), human(reclaimed));
    Ok(0)
}

pub fn repair(path: &Path, dry_run: bool, json: bool) -> Result<u8> {
    crate::open_file(path)?;
    let f = if dry_run { FileStorage::open(path) } else { FileStorage::open_rw(path) }
        .with_context(|| format!("could not open {}", path.display()))?;
    let (rep, _) = vdi::repair(f, dry_run, &mut Bar::new("repairing"))
        .with_context(|| format!("could not repair {}", path.display()))?;
    let clean = rep.after.as_ref().map(|a| a.is_clean());
    if json {
        print_json(&repair_json(&rep, &path.display().to_string()))?;
    } else {
        let would = if dry_run { "would " } else { "" };
        for g in &rep.guessed {
            println!("guessed: {g}");
        }
        for a in &rep.actions {
            println!("{}{would}{}", if a.data_lost { "DATA LOST: " } else { "" }, a.message);
        }
        if rep.actions.is_empty() && rep.guessed.is_empty() {
            println!("nothing to repair");
        } else if dry_run {
            println!("dry run: nothing was written");
        } else if clean == Some(true) {
            println!("the image now checks clean");
        }
    }
    Ok(if clean == Some(false) { 2 } else { 0 })
}

pub struct SetArgs {
    pub uuid: Option<String>,
    pub modify_uuid: Option<String>,
    pub parent_uuid: Option<String>,
    pub parent_modify_uuid: Option<String>,
    pub comment: Option<String>,
    pub lchs: Option<String>,
}

fn uuid_arg(flag: &str, v: &str) -> Result<Uuid> {
    let arg = UuidArg::parse(v).with_context(|| format!("invalid {flag}"))?;
    Ok(arg.resolve(Uuid::new_v4))
}

pub fn set(path: &Path, a: SetArgs) -> Result<u8> {
    let uuid = |flag: &str, v: &Option<String>| v.as_deref().map(|v| uuid_arg(flag, v)).transpose();
    let edit = vdi::HeaderEdit {
        uuid: uuid("--uuid", &a.uuid)?,
        modify_uuid: uuid("--modify-uuid", &a.modify_uuid)?,
        parent_uuid: uuid("--parent-uuid", &a.parent_uuid)?,
        parent_modify_uuid: uuid("--parent-modify-uuid", &a.parent_modify_uuid)?,
        comment: a.comment,
        lchs: a.lchs.as_deref().map(vdi::Geometry::parse_chs).transpose().context("--lchs")?,
    };
    if edit.is_empty() {
        bail!("nothing to set: give --uuid, --modify-uuid, --parent-uuid, --parent-modify-uuid, --comment, --clear-comment or --lchs");
    }
    let mut img = open_rw(path)?;
    img.edit_header(&edit)?;
    img.flush()?;
    let h = img.header();
    println!(
        "{}: uuid {} modify-uuid {} parent-uuid {} parent-modify-uuid {} comment {:?}",
        path.display(),
        h.uuid_create,
        h.uuid_modify,
        h.uuid_link,
        h.uuid_parent_modify,
        h.comment_str()
    );
    Ok(0)
}

pub fn write(path: &Path, data: &Path, offset: u64, chain: &[PathBuf]) -> Result<u8> {
    let mut src = std::fs::File::open(data).with_context(|| format!("could not open {}", data.display()))?;
    let len = src.metadata()?.len();
    let (mut img, _) = layers::open_disk(path, chain, true)?;
    let size = img.virtual_size();
    if offset.checked_add(len).is_none_or(|e| e > size) {
        bail!(
            "{} ({len} bytes) does not fit at offset {offset}: the virtual disk is {size} bytes",
            data.display()
        );
    }
    let mut buf = vec![0u8; vdi::transfer::CHUNK];
    let mut pos = 0u64;
    let mut bar = Bar::new("writing");
    while pos < len {
        let n = ((len - pos) as usize).min(buf.len());
        src.read_exact(&mut buf[..n]).with_context(|| format!("reading {}", data.display()))?;
        img.write_at(offset + pos, &buf[..n])?;
        pos += n as u64;
        vdi::Monitor::progress(&mut bar, pos, len);
    }
    img.flush()?;
    println!("{}: wrote {len} bytes at offset {offset}", path.display());
    Ok(0)
}
