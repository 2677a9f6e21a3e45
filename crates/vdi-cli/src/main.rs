//! `vdi`: inspect, check, create, map and convert VirtualBox disk images.
//! Output and JSON shapes follow `qemu-img` so the two can be compared.

use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use uuid::Uuid;

use vdi::report::{check_json, info_json};
use vdi::{CreateOptions, Layout, Monitor, VdiImage};
use vdi_cli::{parse_size, FileStorage};

mod chains;
mod convert;
mod fs;
mod fs_compact;
mod layers;
mod pipeline;
mod surgery;

#[derive(Parser)]
#[command(name = "vdi", version, about = "Inspect, check, create, map and convert VirtualBox VDI disk images")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Human,
    Json,
}

#[derive(clap::Args)]
struct Output {
    /// Print JSON (same as --output=json).
    #[arg(long)]
    json: bool,
    /// Output format, as qemu-img's --output.
    #[arg(long, value_enum, default_value = "human")]
    output: OutputFormat,
}

impl Output {
    fn json(&self) -> bool {
        self.json || self.output == OutputFormat::Json
    }
}

#[derive(clap::Args, Default)]
struct ChainArg {
    /// The layers of a differencing chain, named explicitly (comma-separated or repeated),
    /// instead of searching the image's folder and the folder above for its parents.
    #[arg(long, value_name = "FILE", value_delimiter = ',')]
    chain: Vec<PathBuf>,
}

/// Which filesystem of which disk: `vdi ls`, `cat`, `extract`.
#[derive(clap::Args)]
struct FsArg {
    /// The partition (as `vdi fs` numbers them); optional when one holds a filesystem.
    #[arg(long, short = 'p')]
    partition: Option<u32>,
    #[command(flatten)]
    chain: ChainArg,
    /// The image (a chain's top reads the newest snapshot).
    image: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show every header field of an image.
    Info {
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        chain: ChainArg,
        /// The image.
        image: PathBuf,
    },
    /// Check an image's consistency (exit 0 clean, 2 corruption, 3 leaks only, 1 could not open).
    Check {
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        chain: ChainArg,
        /// The image.
        image: PathBuf,
    },
    /// Create a new image.
    Create {
        /// Allocate every block now (a "static"/fixed image).
        #[arg(long)]
        fixed: bool,
        /// Block size (a power of two; default 1M).
        #[arg(long, default_value = "1M", value_parser = parse_size)]
        block_size: u64,
        /// Layout: vbox (header 0x190, 1 MiB aligned) or qemu (header 0x180, map at 0x200).
        #[arg(long, default_value = "vbox")]
        layout: String,
        /// Image comment (at most 255 bytes of UTF-8).
        #[arg(long, default_value = "")]
        comment: String,
        /// Image UUID (default: a random one).
        #[arg(long)]
        uuid: Option<String>,
        /// Make a differencing image (snapshot) on top of this parent: same size and block
        /// size, linked to the parent's UUIDs.
        #[arg(long, value_name = "PARENT")]
        parent: Option<PathBuf>,
        /// The image to write (replaced if it exists).
        image: PathBuf,
        /// Virtual size: bytes or 64M, 8G, 1T (rounded up to 512 bytes); not with --parent.
        #[arg(value_parser = parse_size)]
        size: Option<u64>,
    },
    /// Merge a differencing image into its parent (then empty it, unless --keep).
    Commit {
        /// Leave the differencing image's blocks in place after merging.
        #[arg(long, short = 'd')]
        keep: bool,
        #[command(flatten)]
        chain: ChainArg,
        /// The differencing image.
        image: PathBuf,
    },
    /// Pull a differencing image's parent into it, so it no longer needs that parent (it
    /// becomes standalone when the parent is the base), like `qemu-img rebase -b ""`.
    Stream {
        #[command(flatten)]
        chain: ChainArg,
        /// The differencing image (modified in place; its parent is not).
        image: PathBuf,
    },
    /// Show how the virtual disk maps onto the file.
    Map {
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        chain: ChainArg,
        /// The image.
        image: PathBuf,
    },
    /// Compact in place: all-zero blocks become ZERO (or FREE), holes are filled from the
    /// end of the file, the file is truncated. Dynamic images only.
    Compact {
        /// Mark all-zero blocks FREE instead of ZERO.
        #[arg(long)]
        free: bool,
        /// Also release the blocks the guest's filesystems (ext2/3/4, FAT, exFAT, NTFS) call
        /// free, without zero-filling them first. Refused when a filesystem is not clean.
        #[arg(long, conflicts_with = "free")]
        fs_aware: bool,
        /// With --fs-aware: say per partition what would be released; write nothing.
        #[arg(long, requires = "fs_aware")]
        dry_run: bool,
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        chain: ChainArg,
        /// The image (modified in place).
        image: PathBuf,
    },
    /// Change the virtual size in place (grow; shrink only when the cut part is all zeros).
    Resize {
        #[command(flatten)]
        out: Output,
        /// The image (modified in place).
        image: PathBuf,
        /// New virtual size: bytes or 64M, 8G, 1T; "+N" / "-N" relative to the current size.
        size: String,
    },
    /// Discard a byte range in place: whole blocks become ZERO and their space is reclaimed.
    Discard {
        #[command(flatten)]
        out: Output,
        /// Start of the range (bytes or 1M, ...).
        #[arg(long, value_parser = parse_size)]
        offset: u64,
        /// Length of the range (bytes or 1M, ...).
        #[arg(long, value_parser = parse_size)]
        length: u64,
        /// The image (modified in place).
        image: PathBuf,
    },
    /// Repair what check finds (clears bad entries, recomputes counts, reclaims leaks).
    Repair {
        /// Only print what would be done.
        #[arg(long, short = 'n')]
        dry_run: bool,
        #[command(flatten)]
        out: Output,
        /// The image (modified in place unless --dry-run).
        image: PathBuf,
    },
    /// Set header fields in place: UUIDs, comment, LCHS geometry.
    Set {
        /// The image (modified in place).
        image: PathBuf,
        /// New image UUID ("random" for a new random one).
        #[arg(long)]
        uuid: Option<String>,
        /// New modify UUID ("random" for a new random one).
        #[arg(long)]
        modify_uuid: Option<String>,
        /// Parent's image UUID (uuid_link; "null" to clear).
        #[arg(long, visible_alias = "link-uuid")]
        parent_uuid: Option<String>,
        /// Parent's modify UUID (uuid_parent_modify; "null" to clear).
        #[arg(long)]
        parent_modify_uuid: Option<String>,
        /// New comment (at most 255 bytes of UTF-8).
        #[arg(long, conflicts_with = "clear_comment")]
        comment: Option<String>,
        /// Clear the comment.
        #[arg(long)]
        clear_comment: bool,
        /// LCHS geometry as C/H/S (v1.1+ headers only).
        #[arg(long)]
        lchs: Option<String>,
    },
    /// Write the bytes of a file into the image's virtual disk at an offset (in place).
    Write {
        /// Where in the virtual disk (bytes or 1M, ...).
        #[arg(long, value_parser = parse_size, default_value = "0")]
        offset: u64,
        #[command(flatten)]
        chain: ChainArg,
        /// The image (modified in place).
        image: PathBuf,
        /// The file whose bytes are written.
        data: PathBuf,
    },
    /// Show the partition table and the filesystem on each partition.
    Fs {
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        chain: ChainArg,
        /// The image (a chain's top reads the newest snapshot).
        image: PathBuf,
    },
    /// List a directory inside the disk (ext2/3/4, FAT, NTFS).
    Ls {
        #[command(flatten)]
        out: Output,
        /// Long listing: mode, size, modification time (UTC), name, symlink target.
        #[arg(short = 'l')]
        long: bool,
        #[command(flatten)]
        fs: FsArg,
        /// The directory (default: the root).
        #[arg(default_value = "/")]
        path: String,
    },
    /// Print a file inside the disk on standard output (symlinks followed).
    Cat {
        #[command(flatten)]
        fs: FsArg,
        /// The file.
        path: String,
    },
    /// Copy a file or directory tree out of the disk, like `cp -r PATH DEST` (DEST/name;
    /// modification times kept, symlinks as symlinks).
    Extract {
        #[command(flatten)]
        fs: FsArg,
        /// The file or directory inside the disk ("/" extracts everything into DEST).
        path: String,
        /// The host directory to extract into.
        dest: PathBuf,
    },
    /// Convert a VDI (a chain, flattened) or a raw disk to raw, VDI, or another hypervisor's
    /// format: qcow2, vmdk, vmdk-stream, vhd, vhd-fixed, vhdx (input detected by signature).
    Convert {
        /// Output format: raw, vdi, qcow2, vmdk, vmdk-stream, vhd, vhd-fixed or vhdx.
        #[arg(short = 'O', long = "output-format", default_value = "raw")]
        format: String,
        /// Block size of a VDI output.
        #[arg(long, default_value = "1M", value_parser = parse_size)]
        block_size: u64,
        /// Layout of a VDI output.
        #[arg(long, default_value = "vbox")]
        layout: String,
        /// Make a VDI output fixed.
        #[arg(long)]
        fixed: bool,
        #[command(flatten)]
        chain: ChainArg,
        /// Input file (VDI or raw).
        input: PathBuf,
        /// Output file; "-" or a pipe/device gets every byte as a stream.
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if broken_pipe(&e) => {
            // The reader went away (`vdi map | head`): stop quietly, as a SIGPIPE would.
            ExitCode::from(141)
        }
        Err(e) => {
            eprintln!("vdi: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// True when the error is a write to a reader that went away (an `io::Error` of ours, or
/// the engine's output error, which keeps the I/O kind).
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<vdi::VdiError>()
                .is_some_and(|e| matches!(e, vdi::VdiError::Output { .. }) && e.io_kind() == Some(io::ErrorKind::BrokenPipe))
    })
}

/// The error and its causes on one line, without repeating a cause already in the message.
fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for c in e.chain().skip(1) {
        let c = c.to_string();
        if !s.contains(&c) {
            s = format!("{s}: {c}");
        }
    }
    s
}

fn run(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Cmd::Info { out, chain, image } => info(&image, out.json(), &chain.chain),
        Cmd::Check { out, chain, image } => check(&image, out.json(), &chain.chain),
        Cmd::Create { fixed, block_size, layout, comment, uuid, parent, image, size } => match (parent, size) {
            (Some(parent), None) => chains::create_diff(&parent, &image, &comment, uuid.as_deref()),
            (Some(_), Some(_)) => bail!("a differencing image has its parent's size: give --parent or SIZE, not both"),
            (None, None) => bail!("missing SIZE (e.g. 8G), or --parent PARENT for a differencing image"),
            (None, Some(size)) => {
                let opts = create_options(size, fixed, block_size, &layout, comment, uuid.as_deref())?;
                create(&image, &opts)
            }
        },
        Cmd::Map { out, chain, image } => convert::map(&image, out.json(), &chain.chain),
        Cmd::Convert { format, block_size, layout, fixed, chain, input, output } => {
            convert::convert(&input, &output, &format, block_size, &layout, fixed, &chain.chain)
        }
        Cmd::Compact { fs_aware: true, dry_run, out, chain, image, .. } => fs_compact::compact(&image, dry_run, out.json(), &chain.chain),
        Cmd::Compact { free, out, chain, image, .. } => surgery::compact(&image, free, out.json(), &chain.chain),
        Cmd::Resize { out, image, size } => surgery::resize(&image, &size, out.json()),
        Cmd::Discard { out, offset, length, image } => surgery::discard(&image, offset, length, out.json()),
        Cmd::Repair { dry_run, out, image } => surgery::repair(&image, dry_run, out.json()),
        Cmd::Set { image, uuid, modify_uuid, parent_uuid, parent_modify_uuid, comment, clear_comment, lchs } => {
            let comment = if clear_comment { Some(String::new()) } else { comment };
            surgery::set(&image, surgery::SetArgs { uuid, modify_uuid, parent_uuid, parent_modify_uuid, comment, lchs })
        }
        Cmd::Write { offset, chain, image, data } => surgery::write(&image, &data, offset, &chain.chain),
        Cmd::Commit { keep, chain, image } => chains::commit(&image, keep, &chain.chain),
        Cmd::Stream { chain, image } => chains::stream(&image, &chain.chain),
        Cmd::Fs { out, chain, image } => fs::table(&image, &chain.chain, out.json()),
        Cmd::Ls { out, long, fs: f, path } => fs::ls(&f.image, &f.chain.chain, f.partition, &path, long, out.json()),
        Cmd::Cat { fs: f, path } => fs::cat(&f.image, &f.chain.chain, f.partition, &path),
        Cmd::Extract { fs: f, path, dest } => fs::extract(&f.image, &f.chain.chain, f.partition, &path, &dest),
    }
}

pub(crate) fn open_file(path: &Path) -> Result<FileStorage> {
    let meta = std::fs::metadata(path).with_context(|| format!("could not open {}", path.display()))?;
    if meta.is_dir() {
        bail!("could not open {}: it is a directory", path.display());
    }
    FileStorage::open(path).with_context(|| format!("could not open {}", path.display()))
}

pub(crate) fn open_image(path: &Path) -> Result<VdiImage<FileStorage>> {
    let f = open_file(path)?;
    VdiImage::open(f).with_context(|| format!("could not open {}", path.display()))
}

pub(crate) fn print_json(v: &Value) -> Result<u8> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(0)
}

/// Bytes with binary units, as qemu-img prints them ("10 MiB", "1.5 GiB").
pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v.fract() == 0.0 {
        format!("{v} {}", UNITS[u])
    } else {
        format!("{:.3} {}", v, UNITS[u]).replace(".000", "")
    }
}

fn info(path: &Path, json: bool, chain: &[PathBuf]) -> Result<u8> {
    let img = open_image(path)?;
    let actual = std::fs::metadata(path).map(|m| m.blocks() * 512).ok();
    let h = img.header();
    let name = path.display().to_string();
    let links = img.is_diff().then(|| layers::open(path, chain, layers::Rw::None));
    if json {
        let mut v = info_json(h, &name, actual);
        match &links {
            Some(Ok(l)) => chains::describe_json(l, &mut v),
            Some(Err(e)) => v["chain-error"] = serde_json::json!(one_line(e)),
            None => {}
        }
        return print_json(&v);
    }
    let mut o = io::stdout().lock();
    writeln!(o, "image: {name}")?;
    writeln!(o, "file format: vdi")?;
    writeln!(o, "virtual size: {} ({} bytes)", human(h.virtual_size()), h.virtual_size())?;
    if let Some(a) = actual {
        writeln!(o, "disk size: {}", human(a))?;
    }
    writeln!(o, "cluster_size: {}", h.block_size)?;
    writeln!(o, "Format specific information:")?;
    let g = |g: &vdi::Geometry| format!("{}/{}/{} ({}-byte sectors)", g.cylinders, g.heads, g.sectors, g.sector_size);
    let rows: Vec<(&str, String)> = vec![
        ("text", format!("{:?}", h.text_str())),
        ("version", format!("{}.{} ({:#010x})", h.version_major(), h.version_minor(), h.version)),
        ("header size", format!("{:#x}", h.header_size)),
        ("type", format!("{} ({})", h.kind().map(|k| k.name()).unwrap_or("unknown"), h.image_type)),
        ("flags", format!("{:#x}", h.image_flags)),
        ("comment", format!("{:?}", h.comment_str())),
        ("block map offset", format!("{} ({:#x})", h.offset_bmap, h.offset_bmap)),
        ("data offset", format!("{} ({:#x})", h.offset_data, h.offset_data)),
        ("geometry", g(&h.legacy_geometry)),
        ("LCHS geometry", h.lchs.as_ref().map(g).unwrap_or_else(|| "none (v1.1 header)".into())),
        ("disk size", format!("{} ({} bytes)", human(h.disk_size), h.disk_size)),
        ("block size", format!("{} ({} bytes)", human(h.block_size as u64), h.block_size)),
        ("block extra", h.block_extra.to_string()),
        ("blocks", format!("{} allocated of {}", h.blocks_allocated, h.blocks_in_image)),
        ("uuid", h.uuid_create.to_string()),
        ("modify uuid", h.uuid_modify.to_string()),
        ("parent uuid", h.uuid_link.to_string()),
        ("parent modify uuid", h.uuid_parent_modify.to_string()),
    ];
    for (k, v) in rows {
        writeln!(o, "    {k}: {v}")?;
    }
    for n in h.notes() {
        writeln!(o, "note: {n}")?;
    }
    match &links {
        Some(Ok(l)) => chains::describe(l, &mut o)?,
        Some(Err(e)) => writeln!(o, "chain: {}", one_line(e))?,
        None => {}
    }
    Ok(0)
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub(crate) struct Bar(ProgressBar);

impl Bar {
    pub(crate) fn new(what: &str) -> Self {
        let target =
            if io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let pb = ProgressBar::with_draw_target(Some(0), target);
        pb.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {percent:>3}% {elapsed_precise} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        Bar(pb)
    }
}

impl Monitor for Bar {
    fn progress(&mut self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn check(path: &Path, json: bool, chain: &[PathBuf]) -> Result<u8> {
    let f = open_file(path)?;
    let r = {
        let mut bar = Bar::new("checking");
        vdi::check(f, &mut bar).with_context(|| format!("could not open {}", path.display()))?
    };
    let mut code = r.exit_code() as u8;
    // A differencing image: check its parents and the links too.
    let diff = vdi::read_header(&open_file(path)?).map(|h| h.kind() == Some(vdi::ImageType::Diff)).unwrap_or(false);
    let parents = diff.then(|| chains::check_parents(path, chain));
    if let Some(Ok(p)) = &parents {
        code = chains::worst(code, p.code);
    } else if let Some(Err(_)) = &parents {
        code = code.max(1);
    }
    if json {
        let mut v = check_json(&r, &path.display().to_string());
        match &parents {
            Some(Ok(p)) => {
                v["layers"] = serde_json::json!(p.reports);
                v["chain-warnings"] = serde_json::json!(p.warnings);
            }
            Some(Err(e)) => v["chain-error"] = serde_json::json!(one_line(e)),
            None => {}
        }
        print_json(&v)?;
        return Ok(code);
    }
    let mut o = io::stdout().lock();
    match &parents {
        Some(Ok(p)) => chains::print_parents(p, &mut o)?,
        Some(Err(e)) => writeln!(o, "chain: {}", one_line(e))?,
        None => {}
    }
    for f in &r.findings {
        let tag = match f.severity {
            vdi::Severity::Corruption => "ERROR",
            vdi::Severity::Leak => "Leaked",
        };
        writeln!(o, "{tag} {}: {} [{}]", f.location, f.message, f.kind.name())?;
    }
    if r.unlisted() > 0 {
        writeln!(o, "... and {} more findings not listed", r.unlisted())?;
    }
    if r.is_clean() {
        writeln!(o, "No errors were found on the image.")?;
    } else {
        if r.corruptions > 0 {
            writeln!(o, "\n{} errors were found on the image.", r.corruptions)?;
            writeln!(o, "Data may be corrupted, or further writes to the image may corrupt it.")?;
        }
        if r.leaks > 0 {
            writeln!(o, "\n{} leaked clusters were found on the image.", r.leaks)?;
            writeln!(o, "This means waste of disk space, but no harm to data.")?;
        }
    }
    if r.total_blocks > 0 {
        writeln!(
            o,
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {} zero, {} free",
            r.allocated_blocks,
            r.total_blocks,
            r.allocated_blocks as f64 * 100.0 / r.total_blocks as f64,
            if r.allocated_blocks > 0 { r.fragmented_blocks as f64 * 100.0 / r.allocated_blocks as f64 } else { 0.0 },
            r.zero_blocks,
            r.free_blocks
        )?;
    }
    writeln!(o, "Image end offset: {}", r.image_end_offset)?;
    Ok(code)
}

fn create_options(
    size: u64,
    fixed: bool,
    block_size: u64,
    layout: &str,
    comment: String,
    uuid: Option<&str>,
) -> Result<CreateOptions> {
    let uuid = match uuid {
        Some(u) => Uuid::parse_str(u).map_err(|e| anyhow!("invalid --uuid {u:?}: {e}"))?,
        None => Uuid::new_v4(),
    };
    let block_size = u32::try_from(block_size).map_err(|_| anyhow!("block size {block_size} is too large"))?;
    let mut o = CreateOptions::new(size, uuid, Uuid::new_v4());
    o.fixed = fixed;
    o.block_size = block_size;
    o.layout = Layout::parse(layout)?;
    o.comment = comment;
    o.header()?; // validate before touching the output file
    Ok(o)
}

fn create(path: &Path, opts: &CreateOptions) -> Result<u8> {
    let f = FileStorage::create(path).with_context(|| format!("could not create {}", path.display()))?;
    let img = {
        let mut bar = Bar::new("creating");
        vdi::create(f, opts, &mut bar)?
    };
    let h = img.header();
    println!(
        "Formatting '{}', fmt=vdi size={} static={} block_size={} layout={} uuid={}",
        path.display(),
        h.disk_size,
        if opts.fixed { "on" } else { "off" },
        h.block_size,
        if opts.layout == Layout::Qemu { "qemu" } else { "vbox" },
        h.uuid_create
    );
    Ok(0)
}
