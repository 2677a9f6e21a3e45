//! `vdi map` and `vdi convert`: the commands that walk the whole disk (the engine's
//! [`vdi::Runs`], through [`vdi::export_disk`] and the image's extents).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use vdi::report::{chain_extent_json, extent_json};
use vdi::{BlockState, ChainExtent, Extent, RawSink, SparseSink};
use uuid::Uuid;
use vdi_cli::FileStorage;

use crate::pipeline::{self, Cutter, Piece, Source};
use crate::{create_options, layers, open_file, Bar};
/// `vdi map`: the disk's extents as the engine's one walk ([`vdi::Runs::map`]) gives them,
/// for an image or a diff's chain alike; JSON entries as `qemu-img map` prints them (a
/// chain's with each extent's `depth` and `filename`), streamed: a maximum-size map has
/// millions of extents.
pub fn map(path: &Path, json: bool, chain: &[PathBuf]) -> Result<u8> {
    let (mut disk, paths) = layers::open_disk(path, chain, false)?;
    let is_chain = paths.len() > 1;
    let n = paths.len();
    let out = |e: io::Error| vdi::VdiError::output("writing the map", e);
    let mut o = io::BufWriter::new(io::stdout().lock());
    let mut runs = vdi::Runs::map();
    if json {
        write!(o, "[").map_err(out)?;
    } else {
        writeln!(o, "{:<16}{:<16}{:<16}File", "Offset", "Length", "Mapped to").map_err(out)?;
    }
    let mut first = true;
    while let Some(r) = runs.next(&mut *disk)? {
        let (state, layer, host_offset) = (r.block.state(), r.block.layer(), r.block.host());
        let file = paths[layer.unwrap_or(0).min(n - 1)].display().to_string();
        if json {
            let v = if is_chain {
                let e = ChainExtent { start: r.start, length: r.len, state, layer, host_offset };
                chain_extent_json(&e, n, layer.map(|_| file.as_str()))
            } else {
                extent_json(&Extent { start: r.start, length: r.len, state, host_offset })
            };
            write!(o, "{}{v}", if first { "" } else { ",\n" }).map_err(out)?;
            first = false;
        } else if state == BlockState::Data {
            let (start, len, host) = (r.start, r.len, host_offset.unwrap_or(0));
            writeln!(o, "{:<16}{:<16}{:<16}{file}", format!("{start:#x}"), format!("{len:#x}"), format!("{host:#x}")).map_err(out)?;
        }
    }
    if json {
        writeln!(o, "]").map_err(out)?;
    }
    o.flush().map_err(out)?;
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
    let other = vdi::Format::parse(format);
    if format != "raw" && format != "vdi" && other.is_none() {
        bail!("unknown output format {format:?}: expected raw, vdi, {}", vdi::Format::names());
    }
    let src = open_file(input)?;
    let is_vdi = vdi::probe(&src);
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(input), std::fs::canonicalize(output)) {
        if a == b {
            bail!("the output {} is the input", output.display());
        }
    }
    let mut bar = Bar::new("converting");
    // A regular file this command creates is removed when the conversion fails: nothing
    // partial is left looking complete.
    let created = output.as_os_str() != "-" && is_seekable_file(output);
    let r = match other {
        Some(f) => to_format(input, output, &src, is_vdi, f, chain, &mut bar),
        None => to_raw_or_vdi(input, output, src, is_vdi, format, (block_size, layout, fixed), chain, &mut bar),
    };
    if r.is_err() && created {
        let _ = std::fs::remove_file(output);
    }
    r
}

/// `-O FORMAT` for another hypervisor's format: the engine's [`vdi::FormatExport`] over
/// the disk (a VDI, a flattened chain, or a raw file), written in order into a sparse file
/// or a stream. What was done to fit the format is said on stderr.
fn to_format(input: &Path, output: &Path, src: &FileStorage, is_vdi: bool, format: vdi::Format, chain: &[PathBuf], bar: &mut Bar) -> Result<u8> {
    let mut disk: Box<dyn vdi::Disk> = if is_vdi {
        layers::open_disk(input, chain, false)?.0
    } else {
        let f = FileStorage::from_file(src.file().try_clone()?);
        Box::new(vdi::RawDisk::new(f)?)
    };
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "disk.vmdk".into());
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let opts = vdi::FormatOptions::new([Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()], time, &name);
    let mut e = vdi::FormatExport::begin(&mut *disk, format, &opts)?;
    for n in &e.plan().notes {
        eprintln!("vdi: note: {n}");
    }
    if output.as_os_str() == "-" || !is_seekable_file(output) {
        let mut sink = StreamSink { out: open_stream(output)?, zeros: vec![0u8; vdi::transfer::CHUNK] };
        e.run(&mut *disk, &mut sink, bar)?;
        sink.out.flush()?;
    } else {
        let f = FileStorage::create(output).with_context(|| format!("could not create {}", output.display()))?;
        let mut sink = SparseSink::new(f, e.plan().output_len.unwrap_or(0))?;
        let written = e.run(&mut *disk, &mut sink, bar)?;
        // A stream-optimized file's length is known only now (it may end in zeros).
        vdi::Storage::set_len(&mut sink.storage, written).map_err(|e| anyhow!("could not set the length of {}: {e}", output.display()))?;
    }
    Ok(0)
}

/// The output as a stream: standard output, or a pipe or device opened for writing.
fn open_stream(output: &Path) -> Result<Box<dyn Write>> {
    if output.as_os_str() == "-" {
        return Ok(Box::new(io::stdout().lock()));
    }
    let m = std::fs::metadata(output)?;
    if m.file_type().is_dir() {
        bail!("{} is a directory", output.display());
    }
    Ok(Box::new(File::options().write(true).open(output).with_context(|| format!("could not open {}", output.display()))?))
}

#[allow(clippy::too_many_arguments)]
fn to_raw_or_vdi(
    input: &Path,
    output: &Path,
    src: FileStorage,
    is_vdi: bool,
    format: &str,
    (block_size, layout, fixed): (u64, &str, bool),
    chain: &[PathBuf],
    bar: &mut Bar,
) -> Result<u8> {
    match (is_vdi, format) {
        (true, "raw") => {
            drop(src);
            let (mut disk, paths) = layers::open_disk(input, chain, false)?;
            let size = disk.virtual_size();
            if output.as_os_str() == "-" || !is_seekable_file(output) {
                let mut sink = StreamSink { out: open_stream(output)?, zeros: vec![0u8; vdi::transfer::CHUNK] };
                vdi::export_disk(&mut *disk, &mut sink, bar)?;
                sink.out.flush()?;
                return Ok(0);
            }
            let sources = open_sources(&paths)?;
            let out = FileStorage::create(output).with_context(|| format!("could not create {}", output.display()))?;
            let f = out.file();
            f.set_len(size).with_context(|| format!("could not size {} to {size} bytes", output.display()))?;
            let mut next = disk_pieces(&mut *disk, RAW_PIECE);
            let mut write = |at: u64, buf: &[u8]| -> Result<()> {
                f.write_all_at(buf, at).with_context(|| format!("could not write {} bytes to {} at offset {at}", buf.len(), output.display()))
            };
            pipeline::transfer(&sources, &mut next, RAW_PIECE, &mut write, size, bar)?;
        }
        (false, "raw") => bail!("{} is not a VDI image (no VDI signature at offset 0x40); raw to raw is a plain copy", input.display()),
        (_, "vdi") => {
            let mut from = if is_vdi { Some(layers::open_disk(input, chain, false)?) } else { None };
            let size = match &from {
                Some((f, _)) => f.virtual_size(),
                None => vdi::ReadAt::len(&src).map_err(|e| anyhow!("{e}"))?,
            };
            let opts = create_options(size, fixed, block_size, layout, String::new(), None)?;
            if !is_seekable_file(output) {
                bail!("a VDI output must be a regular file, not {}", output.display());
            }
            let f = FileStorage::create(output).with_context(|| format!("could not create {}", output.display()))?;
            let mut dst = vdi::create(f, &opts, &mut vdi::NoMonitor)?;
            // Whole blocks of the new image per piece (the engine skips all-zero blocks).
            let piece = (dst.block_size() as usize).clamp(RAW_PIECE, MAX_PIECE);
            let mut write = |at: u64, buf: &[u8]| -> Result<()> {
                dst.write_at(at, buf).with_context(|| format!("could not write {}", output.display()))
            };
            match from.as_mut() {
                Some((disk, paths)) => {
                    let sources = open_sources(paths)?;
                    let mut next = disk_pieces(&mut **disk, piece);
                    pipeline::transfer(&sources, &mut next, piece, &mut write, size, bar)?;
                }
                None => {
                    let sources = [Source { file: src.file().try_clone()?, path: input.to_path_buf() }];
                    let mut next = raw_pieces(&src, size, opts.block_size as u64, piece);
                    pipeline::transfer(&sources, &mut next, piece, &mut write, size, bar)?;
                }
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

/// Bytes per piece of a raw output: small enough to stay in the CPU cache between the
/// read and the write (see [`vdi::transfer::CACHE_PIECE`]).
const RAW_PIECE: usize = vdi::transfer::CACHE_PIECE;
/// The largest piece (a VDI output with larger blocks writes a block in several pieces).
const MAX_PIECE: usize = 4 << 20;

fn open_sources(paths: &[PathBuf]) -> Result<Vec<Source>> {
    paths
        .iter()
        .map(|p| Ok(Source { file: File::open(p).with_context(|| format!("could not open {}", p.display()))?, path: p.clone() }))
        .collect()
}

/// The data of `disk` as pieces for the pipeline, in disk order, from the engine's export
/// walk: each data run (checked to lie whole in its file) cut at multiples of `piece`. A
/// block of a missing parent ends the walk with the error reading it gives.
fn disk_pieces<'a>(disk: &'a mut dyn vdi::Disk, piece: usize) -> impl FnMut() -> Result<Option<Piece>> + 'a {
    let mut runs = vdi::Runs::export();
    let mut cut: Option<Cutter> = None;
    move || loop {
        if let Some(p) = cut.as_mut().and_then(Iterator::next) {
            return Ok(Some(p));
        }
        let Some(run) = runs.next(disk)? else { return Ok(None) };
        match run.block {
            vdi::Block::Data { layer, host } => {
                disk.check_run(&run)?;
                cut = Some(Cutter::new(layer, run.start, host, run.len, piece));
            }
            vdi::Block::Parent => {
                disk.read_at(run.start, &mut [0u8; 1])?;
                bail!("the bytes at {} are in a parent image that is not open", run.start);
            }
            vdi::Block::Zero { .. } | vdi::Block::Free => {}
        }
    }
}

/// The data of a raw file as pieces: the engine's [`vdi::transfer::data_span`]s (the holes
/// the file system knows skipped, rounded out to whole blocks of `block` bytes), cut at
/// multiples of `piece`.
fn raw_pieces(src: &FileStorage, len: u64, block: u64, piece: usize) -> impl FnMut() -> Result<Option<Piece>> + '_ {
    let mut pos = 0u64;
    let mut cut: Option<Cutter> = None;
    move || loop {
        if let Some(p) = cut.as_mut().and_then(Iterator::next) {
            return Ok(Some(p));
        }
        if pos >= len {
            return Ok(None);
        }
        let Some((from, to)) = vdi::transfer::data_span(src, pos, len, block)? else { return Ok(None) };
        cut = Some(Cutter::new(0, from, from, to - from, piece));
        pos = to;
    }
}
