//! `vdi fs`, `vdi ls`, `vdi cat`, `vdi extract`: partitions, filesystems and files inside a
//! disk (an image or a chain's newest view), read through the engine's `vdi::volume`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use serde_json::json;

use vdi::volume::json::{entry_json, table_json};
use vdi::volume::{DiskReader, Entry, EntryKind, Filesystem, PartitionTable};
use vdi::DiskMut;

use crate::layers;
use crate::{human, print_json};

/// Bytes copied per read when extracting or printing a file.
const CHUNK: usize = 1 << 20;

struct Opened {
    disk: Box<dyn DiskMut>,
    table: PartitionTable,
}

fn open(image: &Path, chain: &[PathBuf]) -> Result<Opened> {
    let (mut disk, _) = layers::open_disk(image, chain, false)?;
    let table = PartitionTable::read(&mut DiskReader(&mut *disk)).with_context(|| format!("could not read the partitions of {}", image.display()))?;
    Ok(Opened { disk, table })
}

fn open_fs(image: &Path, chain: &[PathBuf], partition: Option<u32>) -> Result<(Opened, Filesystem)> {
    let mut o = open(image, chain)?;
    let part = o.table.select(partition)?.clone();
    let fs = Filesystem::open(&mut DiskReader(&mut *o.disk), &part)?;
    Ok((o, fs))
}

/// `vdi fs`: the partition table and what each partition holds.
pub fn table(image: &Path, chain: &[PathBuf], json: bool) -> Result<u8> {
    let o = open(image, chain)?;
    if json {
        return print_json(&table_json(&o.table));
    }
    let mut out = io::stdout().lock();
    writeln!(out, "scheme: {}{}", o.table.scheme.name(), if o.table.disk_id.is_empty() { String::new() } else { format!(" ({})", o.table.disk_id) })?;
    writeln!(out, "{:>3}  {:>14}  {:>10}  {:<24}  {:<11}  {:<16}  uuid", "#", "start", "size", "type", "filesystem", "label")?;
    for p in &o.table.partitions {
        let fs = p.filesystem.as_ref();
        let ty = if p.type_name.is_empty() { p.type_id.to_string() } else { p.type_name.clone() };
        let ty = if p.name.is_empty() { ty } else { format!("{ty} \"{}\"", p.name) };
        writeln!(
            out,
            "{:>3}  {:>14}  {:>10}  {:<24}  {:<11}  {:<16}  {}",
            p.number,
            p.start,
            human(p.size),
            ty,
            fs.map_or("-", |f| f.kind.name()),
            fs.map_or("", |f| f.label.as_str()),
            fs.map_or("", |f| f.uuid.as_str())
        )?;
    }
    for f in &o.table.findings {
        writeln!(out, "finding: {f}")?;
    }
    Ok(0)
}

/// `vdi ls`: a directory's entries (or the one entry a file path names).
pub fn ls(image: &Path, chain: &[PathBuf], partition: Option<u32>, path: &str, long: bool, json: bool) -> Result<u8> {
    let (mut o, mut fs) = open_fs(image, chain, partition)?;
    let disk = &mut DiskReader(&mut *o.disk);
    let entry = fs.lookup(disk, path)?;
    let entries = if entry.kind == EntryKind::Dir { fs.list(disk, &entry)? } else { vec![entry] };
    if json {
        return print_json(&json!({ "path": path, "entries": entries.iter().map(entry_json).collect::<Vec<_>>() }));
    }
    let mut out = io::stdout().lock();
    for e in &entries {
        if long {
            let link = e.target.as_ref().map(|t| format!(" -> {}", printable(t))).unwrap_or_default();
            writeln!(out, "{} {:>12} {} {}{link}", mode_text(e), e.size, date(e.mtime), printable(&e.name))?;
        } else {
            writeln!(out, "{}", printable(&e.name))?;
        }
    }
    Ok(0)
}

/// A name from an image as one line of a terminal: quoted and escaped (Rust's `{:?}`) when
/// it holds a control character (NUL, newline, an escape sequence), as it is otherwise.
fn printable(name: &str) -> std::borrow::Cow<'_, str> {
    if name.chars().any(char::is_control) { format!("{name:?}").into() } else { name.into() }
}

/// `vdi cat`: a file's bytes on standard output, a chunk at a time (symlinks followed).
pub fn cat(image: &Path, chain: &[PathBuf], partition: Option<u32>, path: &str) -> Result<u8> {
    let (mut o, mut fs) = open_fs(image, chain, partition)?;
    let disk = &mut DiskReader(&mut *o.disk);
    let entry = fs.resolve(disk, path)?;
    let mut out = io::stdout().lock();
    copy(&mut fs, disk, &entry, &mut out)?;
    out.flush()?;
    Ok(0)
}

fn copy(fs: &mut Filesystem, disk: &mut DiskReader<'_, dyn DiskMut>, entry: &Entry, out: &mut dyn Write) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < entry.size {
        let n = fs.read(disk, entry, pos, &mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}

/// `vdi extract`: a file or directory tree copied out, like `cp -r PATH DEST` (DEST/name);
/// the root's contents go into DEST itself.
pub fn extract(image: &Path, chain: &[PathBuf], partition: Option<u32>, path: &str, dest: &Path) -> Result<u8> {
    let (mut o, mut fs) = open_fs(image, chain, partition)?;
    let disk = &mut DiskReader(&mut *o.disk);
    let entry = fs.lookup(disk, path)?;
    let mut x = Extractor { fs, refused: 0, ancestors: HashSet::new() };
    if entry.name == "/" {
        fs::create_dir_all(dest).with_context(|| format!("could not create {}", dest.display()))?;
        x.children(disk, &entry, "", dest)?;
    } else {
        x.entry(disk, &entry, "", dest)?;
    }
    if x.refused > 0 {
        bail!("{} entries were not extracted (see above)", x.refused);
    }
    Ok(0)
}

struct Extractor {
    fs: Filesystem,
    refused: usize,
    /// Directory ids on the way down: one met again is a loop in a damaged filesystem.
    ancestors: HashSet<u64>,
}

/// Why a name from an image cannot be a host file name, if it cannot.
fn bad_name(name: &str) -> Option<&'static str> {
    match name {
        "" => Some("it is empty"),
        "." | ".." => Some("it would leave the destination"),
        _ if name.contains('/') => Some("it contains '/'"),
        _ if name.contains('\0') => Some("it contains a NUL byte"),
        _ => None,
    }
}

impl Extractor {
    fn refuse(&mut self, what: &str, why: &str) {
        eprintln!("vdi: not extracting {what}: {why}");
        self.refused += 1;
    }

    fn entry(&mut self, disk: &mut DiskReader<'_, dyn DiskMut>, e: &Entry, parent: &str, dir: &Path) -> Result<()> {
        let shown = format!("{parent}/{}", e.name);
        if let Some(why) = bad_name(&e.name) {
            self.refuse(&format!("{shown:?}"), why);
            return Ok(());
        }
        let target = dir.join(&e.name);
        if let Ok(m) = fs::symlink_metadata(&target) {
            // Only a file over a file or a folder into a folder: anything else is a name the
            // image holds twice (or a clash with the destination), refused, not an abort.
            let clash = match e.kind {
                _ if m.file_type().is_symlink() => Some("a symlink"),
                EntryKind::File if !m.is_file() => Some("something that is not a file"),
                EntryKind::Dir if !m.is_dir() => Some("something that is not a folder"),
                EntryKind::Symlink => Some("something else"),
                _ => None,
            };
            if let Some(what) = clash {
                self.refuse(&format!("{shown:?}"), &format!("{} already exists as {what}", target.display()));
                return Ok(());
            }
        }
        match e.kind {
            EntryKind::File => {
                let mut f = File::create(&target).with_context(|| format!("could not create {}", target.display()))?;
                copy(&mut self.fs, disk, e, &mut f).with_context(|| format!("extracting {shown}"))?;
                set_meta(&f, e)?;
            }
            EntryKind::Dir => {
                if !self.ancestors.insert(e.id) {
                    self.refuse(&shown, "the directory contains itself (a loop in the filesystem)");
                    return Ok(());
                }
                fs::create_dir_all(&target).with_context(|| format!("could not create {}", target.display()))?;
                self.children(disk, e, &shown, &target)?;
                self.ancestors.remove(&e.id);
                set_meta(&File::open(&target)?, e)?;
            }
            EntryKind::Symlink => {
                let link = e.target.clone().unwrap_or_default();
                std::os::unix::fs::symlink(&link, &target).with_context(|| format!("could not create the symlink {}", target.display()))?;
                let t = rustix::fs::Timestamps { last_access: ts(e.mtime), last_modification: ts(e.mtime) };
                rustix::fs::utimensat(rustix::fs::CWD, &target, &t, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .with_context(|| format!("could not set the time of {}", target.display()))?;
            }
            EntryKind::Other => self.refuse(&shown, "it is a device, FIFO or socket"),
        }
        Ok(())
    }

    fn children(&mut self, disk: &mut DiskReader<'_, dyn DiskMut>, e: &Entry, shown: &str, target: &Path) -> Result<()> {
        self.ancestors.insert(e.id);
        for child in self.fs.list(disk, e)? {
            self.entry(disk, &child, shown, target)?;
        }
        Ok(())
    }
}

fn ts(secs: i64) -> rustix::fs::Timespec {
    rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 }
}

fn set_meta(f: &File, e: &Entry) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let t = if e.mtime >= 0 { SystemTime::UNIX_EPOCH + Duration::from_secs(e.mtime as u64) } else { SystemTime::UNIX_EPOCH };
    f.set_modified(t)?;
    let perm = e.mode & 0o777;
    if perm != 0 {
        f.set_permissions(fs::Permissions::from_mode(perm | if e.kind == EntryKind::Dir { 0o700 } else { 0o600 }))?;
    }
    Ok(())
}

/// `drwxr-xr-x` from a mode.
fn mode_text(e: &Entry) -> String {
    let t = match e.kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::File => '-',
        EntryKind::Other => '?',
    };
    let bits = "rwxrwxrwx";
    let rest: String = bits.chars().enumerate().map(|(i, c)| if e.mode & (0o400 >> i) != 0 { c } else { '-' }).collect();
    format!("{t}{rest}")
}

/// `YYYY-MM-DD HH:MM` (UTC) from seconds since 1970.
fn date(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rem / 3600, rem % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(date(0), "1970-01-01 00:00");
        assert_eq!(date(951_782_400), "2000-02-29 00:00");
        assert_eq!(date(1_700_000_000), "2023-11-14 22:13");
    }

    #[test]
    fn names_that_would_escape_are_refused() {
        for n in ["", ".", "..", "a/b", "a\0b"] {
            assert!(bad_name(n).is_some(), "{n:?}");
        }
        assert!(bad_name("ok name é").is_none());
        assert_eq!(printable("a\0b\n\u{1b}[31m"), r#""a\0b\n\u{1b}[31m""#);
        assert_eq!(printable("naïve a/b"), "naïve a/b");
    }
}
