//! `vdi map` and `vdi convert`: the commands that walk the whole disk (the engine's
//! [`vdi::Runs`], through [`vdi::export_disk`] and the image's extents).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use vdi::report::extent_json;
use vdi::{BlockState, RawSink, SparseSink};
use vdi_cli::FileStorage;

use crate::{chains, create_options, layers, open_file, open_image, Bar};


pub fn map(path: &Path, json: bool, chain: &[PathBuf]) -> Result<u8> {
    let mut img = open_image(path)?;
    if img.is_diff() {
        drop(img);
        let mut l = layers::open(path, chain, layers::Rw::None)?;
        return chains::map(&mut l, json);
    }
    let mut o = io::BufWriter::new(io::stdout().lock());
    let name = path.display().to_string();
    if json {
        let mut first = true;
        write!(o, "[")?;
        img.extents(|e| {
            let sep = if first { "" } else { ",\n" };
            first = false;
            write!(o, "{sep}{}", extent_json(&e)).map_err(|e| vdi::VdiError::output("the map", e))
        })?;
        writeln!(o, "]")?;
    } else {
        writeln!(o, "{:<16}{:<16}{:<16}File", "Offset", "Length", "Mapped to")?;
        img.extents(|e| {
            if e.state == BlockState::Data {
                writeln!(
                    o,
                    "{:<16}{:<16}{:<16}{name}",
                    format!("{:#x}", e.start),
                    format!("{:#x}", e.length),
                    format!("{:#x}", e.host_offset.unwrap_or(0))
                )
                .map_err(|e| vdi::VdiError::output("the map", e))?;
            }
            Ok(())
        })?;
    }
    o.flush()?;
    Ok(0)
}


/// Writes every byte in order (pipes, devices, stdout).
struct StreamSink<W: Write> {
    out: W,
    zeros: Vec<u8>,
}

impl<W: Write> RawSink for StreamSink<W> {
    fn data(&mut self, _offset: u64, buf: &[u8]) -> vdi::Result<()> {
        self.out.write_all(buf).map_err(|e| vdi::VdiError::output("the output", e))
    }
    fn zeros(&mut self, _offset: u64, mut len: u64) -> vdi::Result<()> {
        while len > 0 {
            let n = len.min(self.zeros.len() as u64) as usize;
            self.out
                .write_all(&self.zeros[..n])
                .map_err(|e| vdi::VdiError::output("the output", e))?;
            len -= n as u64;
        }
        Ok(())
    }
}

fn is_seekable_file(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(m) => m.is_file(),
        Err(_) => true, // does not exist yet: we create a regular file
    }
}

#[allow(clippy::too_many_arguments)]
pub fn convert(input: &Path, output: &Path, format: &str, block_size: u64, layout: &str, fixed: bool, chain: &[PathBuf]) -> Result<u8> {
    if format != "raw" && format != "vdi" {
        bail!("unknown output format {format:?}: expected raw or vdi");
    }
    let src = open_file(input)?;
    let is_vdi = vdi::probe(&src);
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(input), std::fs::canonicalize(output)) {
        if a == b {
            bail!("the output {} is the input", output.display());
        }
    }
    let mut bar = Bar::new("converting");
    match (is_vdi, format) {
        (true, "raw") => {
            drop(src);
            let mut disk = layers::open_disk(input, chain, false)?;
            let size = disk.virtual_size();
            let stream = output.as_os_str() == "-" || !is_seekable_file(output);
            if stream {
                let out: Box<dyn Write> = if output.as_os_str() == "-" {
                    Box::new(io::stdout().lock())
                } else {
                    let m = std::fs::metadata(output)?;
                    if m.file_type().is_dir() {
                        bail!("{} is a directory", output.display());
                    }
                    Box::new(File::options().write(true).open(output).with_context(|| format!("could not open {}", output.display()))?)
                };
                let mut sink = StreamSink { out, zeros: vec![0u8; vdi::transfer::CHUNK] };
                vdi::export_disk(&mut *disk, &mut sink, &mut bar)?;
                sink.out.flush()?;
            } else {
                let f = FileStorage::create(output).with_context(|| format!("could not create {}", output.display()))?;
                let mut sink = SparseSink::new(f, size)?;
                vdi::export_disk(&mut *disk, &mut sink, &mut bar)?;
            }
        }
        (false, "raw") => bail!("{} is not a VDI image (no VDI signature at offset 0x40); raw to raw is a plain copy", input.display()),
        (_, "vdi") => {
            let mut from = if is_vdi { Some(layers::open_disk(input, chain, false)?) } else { None };
            let size = if let Some(f) = &from {
                f.virtual_size()
            } else {
                vdi::ReadAt::len(&src).map_err(|e| anyhow!("{e}"))?
            };
            let opts = create_options(size, fixed, block_size, layout, String::new(), None)?;
            if !is_seekable_file(output) {
                bail!("a VDI output must be a regular file, not {}", output.display());
            }
            let f = FileStorage::create(output).with_context(|| format!("could not create {}", output.display()))?;
            let mut dst = vdi::create(f, &opts, &mut vdi::NoMonitor)?;
            if let Some(f) = from.as_mut() {
                vdi::export_disk(&mut **f, &mut vdi::ImageSink(&mut dst), &mut bar)?;
            } else {
                vdi::import_raw(&src, &mut dst, &mut bar)?;
            }
            // No fsync: a new output is left to the page cache, as for a raw output and as
            // `qemu-img convert` does by default (cache=unsafe). Syncing gigabytes here made
            // an import wait on the disk for many seconds.
            drop(dst);
        }
        _ => unreachable!("format checked above"),
    }
    Ok(0)
}
