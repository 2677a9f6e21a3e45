//! qcow2 version 3 (QEMU's docs/interop/qcow2.txt), 64 KiB clusters, 16-bit refcounts.
//!
//! ```text
//! cluster 0        header (104 bytes; no extensions)
//! L1 table         one entry per 512 MiB of the disk: its L2 table, or 0
//! refcount table   one entry per refcount block
//! refcount blocks  refcount 1 for every cluster of the file (all are in use once)
//! L2 tables        one per 512 MiB group holding data, in disk order
//! data clusters    the stored clusters, in disk order
//! ```
//! Every count is known from the map before writing, so the file is written front to back.

use super::{sector_size, table_piece, Alloc, Cursor, Format, FormatWriter, Out, Placement, Plan};
use crate::disk::Disk;
use crate::error::Result;

const CLUSTER: u64 = 64 * 1024;
const CLUSTER_BITS: u32 = 16;
/// Entries of an L2 table (8 bytes each).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Disk bytes one L2 table maps.
const GROUP: u64 = CLUSTER * L2_ENTRIES;
/// Clusters a refcount block counts (16-bit refcounts).
const REFS_PER_BLOCK: u64 = CLUSTER / 2;
/// L1/L2 entry flag: the cluster's refcount is exactly one.
const COPIED: u64 = 1 << 63;

struct Qcow2 {
    size: u64,
    l1_entries: u64,
    l1_at: u64,
    rt_at: u64,
    rt_clusters: u64,
    rb_at: u64,
    rb_clusters: u64,
    l2_at: u64,
    data_at: u64,
    /// Clusters of the whole file.
    total: u64,
    step: usize,
    next: u64,
    groups: Cursor,
    clusters: Cursor,
    /// Stored groups not yet written as L2 tables: the current range and the next group.
    group_walk: Alloc,
    group_range: Option<(u64, u64)>,
}

pub(super) fn plan(disk: &mut dyn Disk) -> Result<(Plan, Box<dyn FormatWriter>)> {
    let mut notes = Vec::new();
    let size = sector_size(disk.virtual_size(), &mut notes, Format::Qcow2);
    let units = Alloc::count(disk, CLUSTER)?;
    let groups = Alloc::count(disk, GROUP)?;
    let l1_entries = size.div_ceil(GROUP).max(1);
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER);
    let fixed = 1 + l1_clusters + groups + units;
    let (mut rb, mut rt) = (1, 1);
    loop {
        let total = fixed + rb + rt;
        let (nrb, nrt) = (total.div_ceil(REFS_PER_BLOCK), (total.div_ceil(REFS_PER_BLOCK) * 8).div_ceil(CLUSTER));
        if (nrb, nrt) == (rb, rt) {
            break;
        }
        (rb, rt) = (nrb, nrt);
    }
    let total = fixed + rb + rt;
    let l1_at = CLUSTER;
    let rt_at = l1_at + l1_clusters * CLUSTER;
    let rb_at = rt_at + rt * CLUSTER;
    let l2_at = rb_at + rb * CLUSTER;
    let data_at = l2_at + groups * CLUSTER;
    let w = Qcow2 {
        size,
        l1_entries,
        l1_at,
        rt_at,
        rt_clusters: rt,
        rb_at,
        rb_clusters: rb,
        l2_at,
        data_at,
        total,
        step: 0,
        next: 0,
        groups: Cursor::new(GROUP),
        clusters: Cursor::new(CLUSTER),
        group_walk: Alloc::new(GROUP),
        group_range: None,
    };
    let plan = Plan {
        format: Format::Qcow2,
        disk_size: disk.virtual_size(),
        virtual_size: size,
        units,
        unit: CLUSTER,
        output_len: Some(total * CLUSTER),
        notes,
    };
    Ok((plan, Box::new(w)))
}

impl Qcow2 {
    fn header(&self) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        let be = |h: &mut Vec<u8>, at: usize, v: u64, n: usize| super::put_be(h, at, v, n);
        h[0..4].copy_from_slice(b"QFI\xfb");
        be(&mut h, 4, 3, 4); // version
        be(&mut h, 20, CLUSTER_BITS as u64, 4);
        be(&mut h, 24, self.size, 8);
        be(&mut h, 36, self.l1_entries, 4);
        be(&mut h, 40, self.l1_at, 8);
        be(&mut h, 48, self.rt_at, 8);
        be(&mut h, 56, self.rt_clusters, 4);
        be(&mut h, 96, 4, 4); // refcount_order: 16-bit refcounts
        be(&mut h, 100, 104, 4); // header_length
        h
    }
}

impl FormatWriter for Qcow2 {
    fn meta(&mut self, disk: &mut dyn Disk, out: &mut Out<'_>) -> Result<bool> {
        let done = match self.step {
            0 => {
                out.bytes(&self.header())?;
                out.zeros_to(self.l1_at)?;
                true
            }
            1 => {
                let (groups, l2_at) = (&mut self.groups, self.l2_at);
                let d = table_piece(out, &mut self.next, self.l1_entries, 8, true, |g| {
                    Ok(groups.slot(disk, g)?.map_or(0, |k| (l2_at + k * CLUSTER) | COPIED))
                })?;
                if d {
                    out.zeros_to(self.rt_at)?;
                }
                d
            }
            2 => {
                let rb_at = self.rb_at;
                let d = table_piece(out, &mut self.next, self.rb_clusters, 8, true, |i| Ok(rb_at + i * CLUSTER))?;
                if d {
                    out.zeros_to(self.rb_at)?;
                }
                d
            }
            3 => {
                let total = self.total;
                let d = table_piece(out, &mut self.next, total, 2, true, |_| Ok(1))?;
                if d {
                    out.zeros_to(self.l2_at)?;
                }
                d
            }
            4 => {
                // L2 tables of the stored groups, in order: `next` counts entries written.
                let Some((g, end)) = self.current_group(disk)? else { return Ok(false) };
                let first = g * L2_ENTRIES;
                let (clusters, data_at) = (&mut self.clusters, self.data_at);
                let mut i = self.next % L2_ENTRIES;
                let d = table_piece(out, &mut i, L2_ENTRIES, 8, true, |k| {
                    Ok(clusters.slot(disk, first + k)?.map_or(0, |s| (data_at + s * CLUSTER) | COPIED))
                })?;
                self.next = self.next - self.next % L2_ENTRIES + i;
                if d {
                    self.group_range = (g + 1 < end).then_some((g + 1, end));
                }
                return Ok(true);
            }
            _ => return Ok(false),
        };
        if done {
            self.step += 1;
            self.next = 0;
        }
        Ok(true)
    }

    fn data(&self) -> Placement {
        Placement::Slots { unit: CLUSTER, start: self.data_at, stride: CLUSTER, prefix: Vec::new() }
    }

    fn trailer(&mut self, _out: &mut Out<'_>) -> Result<()> {
        Ok(())
    }
}

impl Qcow2 {
    /// The stored group whose L2 table is next, and the end of its range; None when all are
    /// written (the step then ends).
    fn current_group(&mut self, disk: &mut dyn Disk) -> Result<Option<(u64, u64)>> {
        if self.group_range.is_none() {
            self.group_range = self.group_walk.next(disk)?;
            if self.group_range.is_none() {
                self.step += 1;
            }
        }
        Ok(self.group_range)
    }
}
