//! Export a disk (an image or a flattened chain) as another hypervisor's image: qcow2 v3,
//! VMDK (monolithicSparse, streamOptimized), VHD (dynamic, fixed) and VHDX (dynamic).
//!
//! Every writer has one shape, and the output is built in one pass, in order, so it can go
//! to a stream (a pipe, a browser's writable file stream):
//!
//! ```text
//! metadata, computed from the block map up front   (FormatWriter::meta, in bounded pieces)
//! data: the engine's one export loop (transfer::Export over Runs::export), each run placed
//!       through a data sink (Slots: allocation units in disk order; Grains: compressed)
//! trailer                                          (footer, or GT/GD/footer/EOS markers)
//! ```
//!
//! **What is allocated.** An allocation unit of the output (a qcow2 cluster, a VMDK grain, a
//! VHD/VHDX block) is stored when a block of the disk that the export reads (stored data)
//! overlaps it; the others are left unallocated (they read as zeros). This is decided from
//! the map before any data is read, because these formats put their tables first. A stored
//! block that reads as zeros is therefore written (as zeros: the content is right, only
//! space is spent; `vdi compact` the VDI first to drop such blocks). streamOptimized VMDK puts
//! its tables after the grains, so it scans instead: an all-zero grain is not written.
//!
//! **Sizes.** A format may not hold the disk's exact size: VHD's size follows its CHS
//! geometry, a fixed VHD for Azure must be a whole number of MiB, every format counts
//! 512-byte sectors. The output's virtual size is then the next size the format holds — never
//! smaller than the disk, the added bytes reading as zeros — and [`Plan::notes`] says so.
//!
//! Memory: one metadata piece (at most [`crate::transfer::CHUNK`] bytes), one grain, the
//! export's buffer; tables are generated entry by entry from the map, never held whole.

use crate::disk::{Disk, Runs};
use crate::error::{Result, VdiError};
use crate::monitor::Monitor;
use crate::transfer::{Export, RawSink};
use uuid::Uuid;

mod qcow2;
mod raw;
mod vhd;
mod vhdx;
mod vmdk;

pub use raw::RawDisk;

/// An output format of [`FormatExport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// qcow2 version 3, 64 KiB clusters (QEMU/KVM, Proxmox, UTM).
    Qcow2,
    /// VMDK monolithicSparse, 64 KiB grains (VMware Workstation/Fusion).
    Vmdk,
    /// VMDK streamOptimized: deflated grains with markers (OVA, ESXi imports).
    VmdkStream,
    /// VHD dynamic, 2 MiB blocks (Hyper-V, Virtual PC).
    Vhd,
    /// VHD fixed: the raw disk and a footer, a whole number of MiB (Azure).
    VhdFixed,
    /// VHDX dynamic, 1 MiB blocks (Hyper-V).
    Vhdx,
}

impl Format {
    /// Every format, in the order the CLI and the page list them.
    pub const ALL: [Format; 6] = [Format::Qcow2, Format::Vmdk, Format::VmdkStream, Format::Vhd, Format::VhdFixed, Format::Vhdx];

    /// The format named `name` (`qcow2`, `vmdk`, `vmdk-stream`, `vhd`, `vhd-fixed`, `vhdx`).
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::VmdkStream => "vmdk-stream",
            Format::Vhd => "vhd",
            Format::VhdFixed => "vhd-fixed",
            Format::Vhdx => "vhdx",
        }
    }

    /// The usual file extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Vmdk | Format::VmdkStream => "vmdk",
            Format::Vhd | Format::VhdFixed => "vhd",
            Format::Vhdx => "vhdx",
        }
    }

    /// What `qemu-img` calls the format (`-f`).
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Vmdk | Format::VmdkStream => "vmdk",
            Format::Vhd | Format::VhdFixed => "vpc",
            Format::Vhdx => "vhdx",
        }
    }

    /// The names, for messages ("qcow2, vmdk, ...").
    pub fn names() -> String {
        Format::ALL.map(Format::name).join(", ")
    }
}

/// What the engine cannot compute itself: identifiers, the time, the output's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// Identifiers: the disk's (VHD unique id, VHDX page 83 id, VMDK CID), then VHDX's file
    /// and data write GUIDs.
    pub ids: [Uuid; 3],
    /// Seconds since 1970-01-01 UTC (VHD's time stamp).
    pub unix_time: u64,
    /// The output file's name (a VMDK's descriptor names its extent file).
    pub file_name: String,
}

impl FormatOptions {
    /// Options with the given identifiers (callers pass random ones), time and file name.
    pub fn new(ids: [Uuid; 3], unix_time: u64, file_name: &str) -> Self {
        FormatOptions { ids, unix_time, file_name: file_name.to_string() }
    }
}

/// What an export to a format will write, decided before the first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The output format.
    pub format: Format,
    /// The disk's size.
    pub disk_size: u64,
    /// The output's virtual size (at least the disk's).
    pub virtual_size: u64,
    /// Allocation units stored.
    pub units: u64,
    /// Bytes per allocation unit.
    pub unit: u64,
    /// Bytes of the output file, when known up front (all but streamOptimized VMDK).
    pub output_len: Option<u64>,
    /// What was done to fit the format (a size rounded up), for the user.
    pub notes: Vec<String>,
}

/// The virtual size a format holds for a disk of `size` bytes: `size` rounded up to whole
/// 512-byte sectors, with a note when that changed it.
pub(crate) fn sector_size(size: u64, notes: &mut Vec<String>, format: Format) -> u64 {
    let v = size.next_multiple_of(512);
    if v != size {
        notes.push(format!(
            "{} counts 512-byte sectors: the virtual size is {v} bytes, {} more than the disk's {size} (zeros)",
            format.name(),
            v - size
        ));
    }
    v
}

/// One writer per format: metadata up front, in pieces; the data sink; the trailer.
pub(crate) trait FormatWriter {
    /// Write the next piece of metadata (about [`crate::transfer::CHUNK`] bytes at most) to `out`; false
    /// once the metadata is complete (the data starts where `out` is then).
    fn meta(&mut self, disk: &mut dyn Disk, out: &mut Out<'_>) -> Result<bool>;
    /// Where the data goes.
    fn data(&self) -> Placement;
    /// Bytes after the data (a sink of kind [`Placement::Grains`] writes its own).
    fn trailer(&mut self, out: &mut Out<'_>) -> Result<()>;
}

/// How the disk's data is laid out in the output.
#[derive(Debug)]
pub(crate) enum Placement {
    /// Every byte of the disk at `start + offset` (a fixed VHD).
    Linear { start: u64 },
    /// Allocated units of `unit` bytes in disk order, unit `k` at `start + k * stride`,
    /// each preceded by `prefix` (VHD's sector bitmap).
    Slots { unit: u64, start: u64, stride: u64, prefix: Vec<u8> },
    /// streamOptimized VMDK's compressed grains (see `vmdk.rs`).
    Grains(Box<vmdk::Grains>),
}

/// The output as the writers see it: a [`RawSink`] and the position reached (the output is
/// written in order).
pub(crate) struct Out<'a> {
    pub(crate) sink: &'a mut dyn RawSink,
    pub(crate) pos: u64,
}

impl Out<'_> {
    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result<()> {
        if !b.is_empty() {
            self.sink.data(self.pos, b)?;
            self.pos += b.len() as u64;
        }
        Ok(())
    }
    pub(crate) fn zeros(&mut self, n: u64) -> Result<()> {
        if n > 0 {
            self.sink.zeros(self.pos, n)?;
            self.pos += n;
        }
        Ok(())
    }
    /// Zeros up to `at` (an error if the output is already past it: a layout bug).
    pub(crate) fn zeros_to(&mut self, at: u64) -> Result<()> {
        if at < self.pos {
            return Err(VdiError::InvalidArgument(format!("format layout: output at {} is past {at}", self.pos)));
        }
        self.zeros(at - self.pos)
    }
}

/// The units of `unit` bytes that a disk stores (overlapping a block the export reads), as
/// ranges `[first, end)` in order, merged: from the map (nothing is read).
#[derive(Debug)]
pub(crate) struct Alloc {
    runs: Runs,
    unit: u64,
    held: Option<(u64, u64)>,
}

impl Alloc {
    pub(crate) fn new(unit: u64) -> Self {
        Alloc { runs: Runs::map(), unit, held: None }
    }

    pub(crate) fn next(&mut self, disk: &mut dyn Disk) -> Result<Option<(u64, u64)>> {
        loop {
            let Some(r) = self.runs.next(disk)? else { return Ok(self.held.take()) };
            if !r.block.is_read() || r.len == 0 {
                continue;
            }
            let (a, b) = (r.start / self.unit, (r.start + r.len).div_ceil(self.unit));
            match self.held {
                Some((x, y)) if a <= y => self.held = Some((x, y.max(b))),
                Some(h) => {
                    self.held = Some((a, b));
                    return Ok(Some(h));
                }
                None => self.held = Some((a, b)),
            }
        }
    }

    /// Units of `unit` bytes a disk stores.
    pub(crate) fn count(disk: &mut dyn Disk, unit: u64) -> Result<u64> {
        let mut a = Alloc::new(unit);
        let mut n = 0;
        while let Some((x, y)) = a.next(disk)? {
            n += y - x;
        }
        Ok(n)
    }
}

/// Which slot unit `u` has (its rank among the stored units), asked in increasing `u`.
#[derive(Debug)]
pub(crate) struct Cursor {
    alloc: Alloc,
    cur: Option<(u64, u64)>,
    /// Slot of `cur`'s first unit.
    base: u64,
    started: bool,
}

impl Cursor {
    pub(crate) fn new(unit: u64) -> Self {
        Cursor { alloc: Alloc::new(unit), cur: None, base: 0, started: false }
    }

    pub(crate) fn slot(&mut self, disk: &mut dyn Disk, u: u64) -> Result<Option<u64>> {
        if !self.started {
            self.started = true;
            self.cur = self.alloc.next(disk)?;
        }
        while let Some((a, b)) = self.cur {
            if u < b {
                return Ok((u >= a).then(|| self.base + u - a));
            }
            self.base += b - a;
            self.cur = self.alloc.next(disk)?;
        }
        Ok(None)
    }
}

/// The data sink of [`Placement::Slots`] and [`Placement::Linear`]: places the runs of the
/// export (in disk order) into the output, opening a slot at the first data of a unit.
struct Slots<'a, 'b> {
    out: &'a mut Out<'b>,
    place: &'a Placement,
    /// The unit open and the bytes of it written so far.
    open: Option<(u64, u64)>,
    next_slot: u64,
}

impl<'a> Slots<'a, '_> {
    fn unit_params(&self) -> (u64, u64, u64, &'a [u8]) {
        let place: &'a Placement = self.place;
        match place {
            Placement::Slots { unit, start, stride, prefix } => (*unit, *start, *stride, prefix),
            _ => (1, 0, 1, &[]),
        }
    }

    /// Close the open unit: zeros to its end.
    fn close(&mut self) -> Result<()> {
        if let Some((_, filled)) = self.open.take() {
            let (unit, ..) = self.unit_params();
            self.out.zeros(unit - filled)?;
        }
        Ok(())
    }

    fn put(&mut self, offset: u64, len: u64, data: Option<&[u8]>) -> Result<()> {
        if let Placement::Linear { start, .. } = self.place {
            self.out.zeros_to(start + offset)?;
            return match data {
                Some(b) => self.out.bytes(b),
                None => self.out.zeros(len),
            };
        }
        let (unit, start, stride, prefix) = self.unit_params();
        let mut done = 0u64;
        while done < len {
            let at = offset + done;
            let u = at / unit;
            let within = at % unit;
            let n = (len - done).min(unit - within);
            let open_here = matches!(self.open, Some((o, _)) if o == u);
            if !open_here {
                if data.is_none() {
                    // Zeros in a unit not (yet) stored: nothing to write. Data later in the
                    // same unit writes them as the unit's start.
                    self.close()?;
                    done += n;
                    continue;
                }
                self.close()?;
                let slot = self.next_slot;
                self.next_slot += 1;
                self.out.zeros_to(start + slot * stride)?;
                self.out.bytes(prefix)?;
                self.out.zeros(within)?;
                self.open = Some((u, within));
            }
            let Some((_, filled)) = self.open.as_mut() else { unreachable!("opened above") };
            if *filled != within {
                return Err(VdiError::InvalidArgument(format!("format export out of order at disk offset {at}")));
            }
            *filled += n;
            match data {
                Some(b) => self.out.bytes(&b[done as usize..(done + n) as usize])?,
                None => self.out.zeros(n)?,
            }
            done += n;
        }
        Ok(())
    }
}

impl RawSink for Slots<'_, '_> {
    fn data(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        self.put(offset, buf.len() as u64, Some(buf))
    }
    fn zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        self.put(offset, len, None)
    }
    fn piece_size(&self) -> usize {
        crate::transfer::CACHE_PIECE
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Meta,
    Data,
    Trailer,
    Done,
}

/// An export to a format in steps (see the module docs): [`FormatExport::step`] writes the
/// next piece of metadata, run of data or the trailer to a [`RawSink`] holding the output
/// file's bytes in order (a sparse file, a stream, the page's save target).
pub struct FormatExport {
    plan: Plan,
    writer: Box<dyn FormatWriter>,
    place: Placement,
    phase: Phase,
    export: Export,
    pos: u64,
    next_slot: u64,
    open: Option<(u64, u64)>,
}

impl std::fmt::Debug for FormatExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormatExport").field("plan", &self.plan).field("phase", &self.phase).field("pos", &self.pos).finish()
    }
}

impl FormatExport {
    /// Plan the export of `disk` to `format` (walks the map; reads no data).
    pub fn begin(disk: &mut dyn Disk, format: Format, opts: &FormatOptions) -> Result<Self> {
        let (plan, writer): (Plan, Box<dyn FormatWriter>) = match format {
            Format::Qcow2 => qcow2::plan(disk)?,
            Format::Vmdk | Format::VmdkStream => vmdk::plan(disk, format, opts)?,
            Format::Vhd | Format::VhdFixed => vhd::plan(disk, format, opts)?,
            Format::Vhdx => vhdx::plan(disk, opts)?,
        };
        let place = writer.data();
        Ok(FormatExport { export: Export::new(disk.virtual_size()), plan, writer, place, phase: Phase::Meta, pos: 0, next_slot: 0, open: None })
    }

    /// What will be written.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Bytes of the output written so far.
    pub fn written(&self) -> u64 {
        self.pos
    }

    /// Write the next piece to `out` through `buf` (the export's read buffer). Returns the
    /// bytes of the disk done so far, or None once the output is complete.
    pub fn step(&mut self, disk: &mut dyn Disk, out: &mut dyn RawSink, buf: &mut [u8]) -> Result<Option<u64>> {
        let mut o = Out { sink: out, pos: self.pos };
        let r = match self.phase {
            Phase::Meta => {
                if !self.writer.meta(disk, &mut o)? {
                    self.phase = Phase::Data;
                }
                Some(0)
            }
            Phase::Data => {
                let done = match &mut self.place {
                    Placement::Grains(g) => self.export.step(disk, &mut g.sink(&mut o), buf)?,
                    place => {
                        let mut s = Slots { out: &mut o, place, open: self.open, next_slot: self.next_slot };
                        let r = self.export.step(disk, &mut s, buf)?;
                        if r.is_none() {
                            s.close()?;
                        }
                        (self.open, self.next_slot) = (s.open, s.next_slot);
                        r
                    }
                };
                if done.is_none() {
                    self.phase = Phase::Trailer;
                }
                Some(done.unwrap_or(self.plan.disk_size))
            }
            Phase::Trailer => {
                match &mut self.place {
                    Placement::Grains(g) => g.finish(&mut o)?,
                    Placement::Slots { .. } if self.next_slot != self.plan.units => {
                        return Err(VdiError::InvalidArgument(format!(
                            "the disk changed during the export: {} units were planned from its map, {} were written",
                            self.plan.units, self.next_slot
                        )))
                    }
                    _ => {}
                }
                self.writer.trailer(&mut o)?;
                self.phase = Phase::Done;
                if let Some(len) = self.plan.output_len {
                    if o.pos != len {
                        return Err(VdiError::InvalidArgument(format!("format layout: wrote {} bytes, planned {len}", o.pos)));
                    }
                }
                Some(self.plan.disk_size)
            }
            Phase::Done => None,
        };
        self.pos = o.pos;
        Ok(r)
    }
}

/// Export `disk` to `format` into `out` (the output file's bytes, in order):
/// [`FormatExport::begin`], then [`FormatExport::run`]. Returns the plan and the bytes written.
pub fn export_format(
    disk: &mut dyn Disk,
    format: Format,
    opts: &FormatOptions,
    out: &mut dyn RawSink,
    monitor: &mut dyn Monitor,
) -> Result<(Plan, u64)> {
    let mut e = FormatExport::begin(disk, format, opts)?;
    let written = e.run(disk, out, monitor)?;
    Ok((e.plan, written))
}

impl FormatExport {
    /// [`FormatExport::step`] to the end; `monitor` sees progress in bytes of the disk and
    /// may cancel between steps. Returns the bytes written.
    pub fn run(&mut self, disk: &mut dyn Disk, out: &mut dyn RawSink, monitor: &mut dyn Monitor) -> Result<u64> {
        let size = disk.virtual_size();
        let piece = out.piece_size().clamp(1, crate::transfer::CACHE_PIECE);
        let mut buf = vec![0u8; piece];
        while let Some(done) = self.step(disk, out, &mut buf)? {
            if monitor.cancelled() {
                return Err(VdiError::Cancelled);
            }
            monitor.progress(done, size);
        }
        Ok(self.pos)
    }
}

/// Big-endian and little-endian field writers for the fixed layouts.
pub(crate) fn put_be(b: &mut [u8], at: usize, v: u64, n: usize) {
    b[at..at + n].copy_from_slice(&v.to_be_bytes()[8 - n..]);
}

pub(crate) fn put_le(b: &mut [u8], at: usize, v: u64, n: usize) {
    b[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
}

/// Entries per call of [`table_piece`] (a few hundred KiB of table).
const TABLE_PIECE: u64 = 64 * 1024;

/// Write the next entries of a table of `count` entries of `size` bytes (big-endian when
/// `be`), entry `i` being `entry(i)`, from `*next` on; true once the table is complete.
pub(crate) fn table_piece(
    out: &mut Out<'_>,
    next: &mut u64,
    count: u64,
    size: usize,
    be: bool,
    mut entry: impl FnMut(u64) -> Result<u64>,
) -> Result<bool> {
    let end = count.min(*next + TABLE_PIECE);
    let mut b = vec![0u8; ((end - *next) as usize) * size];
    for (k, i) in (*next..end).enumerate() {
        let v = entry(i)?;
        if be {
            put_be(&mut b, k * size, v, size);
        } else {
            put_le(&mut b, k * size, v, size);
        }
    }
    out.bytes(&b)?;
    *next = end;
    Ok(end == count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create, CreateOptions};
    use crate::monitor::NoMonitor;
    use crate::storage::MemStorage;

    /// Every format writes its output strictly in order (a `Vec` sink refuses anything
    /// else), exactly as long as planned, in bounded steps.
    #[test]
    fn every_format_is_written_in_one_pass_in_order() {
        let o = CreateOptions::new((9 << 20) + 512, Uuid::from_u128(1), Uuid::from_u128(2));
        let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        img.write_at(5, b"first").unwrap();
        img.write_at((9 << 20) + 100, b"last").unwrap();
        let opts = FormatOptions::new([Uuid::from_u128(3), Uuid::from_u128(4), Uuid::from_u128(5)], 1_800_000_000, "t");
        for f in Format::ALL {
            let mut out: Vec<u8> = Vec::new();
            let (plan, written) = export_format(&mut img, f, &opts, &mut out, &mut NoMonitor).unwrap();
            assert_eq!(written, out.len() as u64, "{f:?}");
            if let Some(len) = plan.output_len {
                assert_eq!(len, written, "{f:?}");
            }
            assert!(plan.virtual_size >= img.virtual_size(), "{f:?}");
            assert_eq!(Format::parse(f.name()), Some(f));
        }
        assert_eq!(Format::parse("qcow"), None);
    }

    #[test]
    fn a_cancelled_export_stops() {
        let o = CreateOptions::new(8 << 20, Uuid::from_u128(1), Uuid::from_u128(2));
        let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        let opts = FormatOptions::new([Uuid::nil(); 3], 0, "t");
        let mut m = crate::monitor::FnMonitor { progress: |_, _| {}, cancelled: || true };
        let e = export_format(&mut img, Format::Qcow2, &opts, &mut Vec::new(), &mut m).unwrap_err();
        assert_eq!(e.kind(), "cancelled");
    }
}
