//! VMDK sparse extents (VMware's Virtual Disk Format 5.0), 64 KiB grains, the descriptor
//! embedded: monolithicSparse and streamOptimized.
//!
//! ```text
//! monolithicSparse: header | descriptor | redundant GD + GTs | GD + GTs | grains in disk order
//! streamOptimized:  header (GD at end) | descriptor | per stored grain: marker (LBA, size)
//!                   + zlib data, sector aligned | after each 32 MiB: GT marker + GT |
//!                   GD marker + GD | footer marker + footer | end-of-stream marker
//! ```
//! Both keep every grain table of the disk (an unused table only in streamOptimized, whose
//! directory then says 0). The capacity is a whole number of grains (the specification asks
//! it), rounded up from the disk's size.

use super::{put_le, table_piece, Cursor, Format, FormatOptions, FormatWriter, Out, Placement, Plan};
use crate::disk::Disk;
use crate::error::{Result, VdiError};
use crate::image::all_zero;
use crate::transfer::RawSink;
use miniz_oxide::deflate::core::{compress, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush, TDEFLStatus};

const SECTOR: u64 = 512;
/// Grain size in sectors (64 KiB).
const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// Entries per grain table (32 MiB of disk each).
const GT_ENTRIES: u64 = 512;
/// Sectors of a grain table.
const GT_SECTORS: u64 = GT_ENTRIES * 4 / SECTOR;
const DESC_AT: u64 = 1;
const DESC_SECTORS: u64 = 20;
/// Grain offsets are 32-bit sector numbers: the file stays under 2 TiB.
const MAX_SECTORS: u64 = 1 << 32;
/// zlib level of streamOptimized grains: fast (the output is a transport format).
const LEVEL: u8 = 1;

const FLAG_NEWLINE_TEST: u64 = 1;
const FLAG_REDUNDANT_GT: u64 = 1 << 1;
const FLAG_COMPRESSED: u64 = 1 << 16;
const FLAG_MARKERS: u64 = 1 << 17;
const GD_AT_END: u64 = u64::MAX;

/// The layout shared by both kinds.
#[derive(Debug, Clone)]
struct Layout {
    stream: bool,
    capacity: u64,
    gts: u64,
    gd_sectors: u64,
    rgd_at: u64,
    gd_at: u64,
    grains_at: u64,
    descriptor: Vec<u8>,
}

impl Layout {
    /// The sparse header (sector 0; the stream's footer is the same with the GD's place).
    fn header(&self, gd_at: u64) -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        h[..4].copy_from_slice(b"KDMV");
        let flags = if self.stream { FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS } else { FLAG_NEWLINE_TEST | FLAG_REDUNDANT_GT };
        put_le(&mut h, 4, if self.stream { 3 } else { 1 }, 4);
        put_le(&mut h, 8, flags, 4);
        put_le(&mut h, 12, self.capacity, 8);
        put_le(&mut h, 20, GRAIN_SECTORS, 8);
        put_le(&mut h, 28, DESC_AT, 8);
        put_le(&mut h, 36, DESC_SECTORS, 8);
        put_le(&mut h, 44, GT_ENTRIES, 4);
        put_le(&mut h, 48, self.rgd_at, 8);
        put_le(&mut h, 56, gd_at, 8);
        put_le(&mut h, 64, self.grains_at, 8);
        h[73..77].copy_from_slice(b"\n \r\n");
        put_le(&mut h, 77, self.stream as u64, 2); // compression: deflate
        h
    }
}

fn descriptor(stream: bool, capacity: u64, opts: &FormatOptions) -> Result<Vec<u8>> {
    let cid = u32::from_le_bytes(opts.ids[0].as_bytes()[..4].try_into().expect("4 bytes")) & 0x7fff_ffff;
    let name: String = opts.file_name.chars().map(|c| if c == '"' || c.is_control() { '_' } else { c }).collect();
    let cylinders = (capacity / (16 * 63)).min(16383);
    let d = format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\ncreateType=\"{}\"\n\n\
         # Extent description\nRW {capacity} SPARSE \"{name}\"\n\n\
         # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n",
        if stream { "streamOptimized" } else { "monolithicSparse" }
    );
    if d.len() as u64 > DESC_SECTORS * SECTOR {
        return Err(VdiError::InvalidArgument(format!("the output name is too long for a VMDK descriptor ({} bytes)", name.len())));
    }
    Ok(d.into_bytes())
}

struct Vmdk {
    layout: Layout,
    step: usize,
    next: u64,
    cursor: Cursor,
}

pub(super) fn plan(disk: &mut dyn Disk, format: Format, opts: &FormatOptions) -> Result<(Plan, Box<dyn FormatWriter>)> {
    let stream = format == Format::VmdkStream;
    let disk_size = disk.virtual_size();
    let size = disk_size.next_multiple_of(GRAIN);
    let mut notes = Vec::new();
    if size != disk_size {
        notes.push(format!(
            "{} holds whole 64 KiB grains: the virtual size is {size} bytes, {} more than the disk's {disk_size} (zeros)",
            format.name(),
            size - disk_size
        ));
    }
    let capacity = size / SECTOR;
    let grains = capacity / GRAIN_SECTORS;
    let gts = grains.div_ceil(GT_ENTRIES);
    let gd_sectors = (gts * 4).div_ceil(SECTOR);
    let (rgd_at, gd_at, meta_end) = if stream {
        (0, GD_AT_END, DESC_AT + DESC_SECTORS)
    } else {
        let rgd = DESC_AT + DESC_SECTORS;
        let gd = rgd + gd_sectors + gts * GT_SECTORS;
        (rgd, gd, gd + gd_sectors + gts * GT_SECTORS)
    };
    let grains_at = meta_end.next_multiple_of(GRAIN_SECTORS);
    let units = if stream { 0 } else { super::Alloc::count(disk, GRAIN)? };
    let end = grains_at + units * GRAIN_SECTORS;
    if capacity + grains_at > MAX_SECTORS || end > MAX_SECTORS {
        return Err(VdiError::Unsupported(format!(
            "a sparse VMDK holds at most 2 TiB (its offsets are 32-bit sector numbers); the disk is {disk_size} bytes (use qcow2 or vhdx)"
        )));
    }
    let layout = Layout { stream, capacity, gts, gd_sectors, rgd_at, gd_at, grains_at, descriptor: descriptor(stream, capacity, opts)? };
    let plan = Plan {
        format,
        disk_size,
        virtual_size: size,
        units,
        unit: GRAIN,
        output_len: (!stream).then_some(end * SECTOR),
        notes,
    };
    Ok((plan, Box::new(Vmdk { layout, step: 0, next: 0, cursor: Cursor::new(GRAIN) })))
}

impl FormatWriter for Vmdk {
    fn meta(&mut self, disk: &mut dyn Disk, out: &mut Out<'_>) -> Result<bool> {
        let l = &self.layout;
        match self.step {
            0 => {
                out.bytes(&l.header(l.gd_at))?;
                out.bytes(&l.descriptor)?;
                out.zeros_to((DESC_AT + DESC_SECTORS) * SECTOR)?;
                self.step = if l.stream { 5 } else { 1 };
            }
            // Redundant then primary: a directory, then every grain table.
            1 | 3 => {
                let gt_at = if self.step == 1 { l.rgd_at } else { l.gd_at } + l.gd_sectors;
                out.zeros_to((gt_at - l.gd_sectors) * SECTOR)?;
                table_piece(out, &mut 0, l.gts, 4, false, |i| Ok(gt_at + i * GT_SECTORS))?;
                out.zeros_to(gt_at * SECTOR)?;
                self.step += 1;
            }
            2 | 4 => {
                let (cursor, grains_at, grains) = (&mut self.cursor, l.grains_at, l.capacity / GRAIN_SECTORS);
                if table_piece(out, &mut self.next, l.gts * GT_ENTRIES, 4, false, |g| {
                    Ok(if g < grains { cursor.slot(disk, g)?.map_or(0, |k| grains_at + k * GRAIN_SECTORS) } else { 0 })
                })? {
                    self.step += 1;
                    self.next = 0;
                    self.cursor = Cursor::new(GRAIN);
                }
            }
            _ => {
                out.zeros_to(l.grains_at * SECTOR)?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn data(&self) -> Placement {
        if self.layout.stream {
            Placement::Grains(Box::new(Grains::new(self.layout.clone())))
        } else {
            Placement::Slots { unit: GRAIN, start: self.layout.grains_at * SECTOR, stride: GRAIN, prefix: Vec::new() }
        }
    }

    fn trailer(&mut self, _out: &mut Out<'_>) -> Result<()> {
        Ok(())
    }
}

/// streamOptimized's data: each grain is gathered, then written compressed behind its
/// marker unless it is all zeros; each grain table follows its grains; the directory,
/// footer and end-of-stream marker close the file ([`Grains::finish`]).
pub(crate) struct Grains {
    layout: Layout,
    grain: Vec<u8>,
    /// The grain being gathered and the bytes of it gathered.
    open: Option<(u64, u64)>,
    /// The grain table being filled (its index) and its entries.
    gt: Option<u64>,
    entries: Vec<u32>,
    /// Sector of each grain table written (0: none).
    gd: Vec<u32>,
    packed: Vec<u8>,
    compressor: Box<CompressorOxide>,
}

impl std::fmt::Debug for Grains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grains").field("open", &self.open).field("gt", &self.gt).finish()
    }
}

/// A stream marker: `sectors` of metadata of `kind` follow (1 GT, 2 GD, 3 footer, 0 end).
fn marker(sectors: u64, kind: u64) -> Vec<u8> {
    let mut m = vec![0u8; SECTOR as usize];
    put_le(&mut m, 0, sectors, 8);
    put_le(&mut m, 12, kind, 4);
    m
}

impl Grains {
    fn new(layout: Layout) -> Self {
        let flags = create_comp_flags_from_zip_params(LEVEL as i32, 15, 0);
        Grains {
            gd: vec![0; layout.gts as usize],
            layout,
            grain: vec![0; GRAIN as usize],
            open: None,
            gt: None,
            entries: vec![0; GT_ENTRIES as usize],
            packed: vec![0; GRAIN as usize + 4096],
            compressor: Box::new(CompressorOxide::new(flags)),
        }
    }

    pub(crate) fn sink<'a, 'b>(&'a mut self, out: &'a mut Out<'b>) -> GrainSink<'a, 'b> {
        GrainSink { g: self, out }
    }

    /// Write the grain gathered (unless all zeros).
    fn close(&mut self, out: &mut Out<'_>) -> Result<()> {
        let Some((g, filled)) = self.open.take() else { return Ok(()) };
        self.grain[filled as usize..].fill(0);
        if all_zero(&self.grain) {
            return Ok(());
        }
        let t = g / GT_ENTRIES;
        if self.gt != Some(t) {
            self.write_gt(out)?;
            self.gt = Some(t);
        }
        self.compressor.reset();
        let (status, read, n) = compress(&mut self.compressor, &self.grain, &mut self.packed[12..], TDEFLFlush::Finish);
        if status != TDEFLStatus::Done || read != self.grain.len() {
            return Err(VdiError::InvalidArgument(format!("compressing grain {g} failed ({status:?})")));
        }
        put_le(&mut self.packed, 0, g * GRAIN_SECTORS, 8);
        put_le(&mut self.packed, 8, n as u64, 4);
        self.entries[(g % GT_ENTRIES) as usize] = (out.pos / SECTOR) as u32;
        let len = 12 + n;
        let padded = (len as u64).next_multiple_of(SECTOR) as usize;
        self.packed[len..padded].fill(0);
        out.bytes(&self.packed[..padded])
    }

    /// Write the grain table being filled, if any, behind its marker.
    fn write_gt(&mut self, out: &mut Out<'_>) -> Result<()> {
        let Some(t) = self.gt.take() else { return Ok(()) };
        out.bytes(&marker(GT_SECTORS, 1))?;
        self.gd[t as usize] = (out.pos / SECTOR) as u32;
        let mut b = vec![0u8; (GT_SECTORS * SECTOR) as usize];
        for (i, e) in self.entries.iter_mut().enumerate() {
            put_le(&mut b, i * 4, *e as u64, 4);
            *e = 0;
        }
        out.bytes(&b)
    }

    /// The last grain and table, the directory, the footer, the end-of-stream marker.
    pub(crate) fn finish(&mut self, out: &mut Out<'_>) -> Result<()> {
        self.close(out)?;
        self.write_gt(out)?;
        let l = &self.layout;
        out.bytes(&marker(l.gd_sectors, 2))?;
        let gd_at = out.pos / SECTOR;
        let mut b = vec![0u8; (l.gd_sectors * SECTOR) as usize];
        for (i, e) in self.gd.iter().enumerate() {
            put_le(&mut b, i * 4, *e as u64, 4);
        }
        out.bytes(&b)?;
        out.bytes(&marker(1, 3))?;
        out.bytes(&l.header(gd_at))?;
        out.bytes(&marker(0, 0))
    }

    fn put(&mut self, out: &mut Out<'_>, offset: u64, len: u64, data: Option<&[u8]>) -> Result<()> {
        let mut done = 0u64;
        while done < len {
            let at = offset + done;
            let (g, within) = (at / GRAIN, at % GRAIN);
            let n = (len - done).min(GRAIN - within);
            if !matches!(self.open, Some((o, _)) if o == g) {
                self.close(out)?;
                if data.is_none() {
                    done += n;
                    continue;
                }
                self.grain[..within as usize].fill(0);
                self.open = Some((g, within));
            }
            let Some((_, filled)) = self.open.as_mut() else { unreachable!("opened above") };
            if *filled != within {
                return Err(VdiError::InvalidArgument(format!("format export out of order at disk offset {at}")));
            }
            let dst = &mut self.grain[within as usize..(within + n) as usize];
            match data {
                Some(b) => dst.copy_from_slice(&b[done as usize..(done + n) as usize]),
                None => dst.fill(0),
            }
            *filled += n;
            done += n;
        }
        Ok(())
    }
}

/// [`Grains`] as the export's sink.
pub(crate) struct GrainSink<'a, 'b> {
    g: &'a mut Grains,
    out: &'a mut Out<'b>,
}

impl RawSink for GrainSink<'_, '_> {
    fn data(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        self.g.put(self.out, offset, buf.len() as u64, Some(buf))
    }
    fn zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        self.g.put(self.out, offset, len, None)
    }
    fn piece_size(&self) -> usize {
        crate::transfer::CACHE_PIECE
    }
}
