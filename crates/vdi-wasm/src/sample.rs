//! The demo image the page offers ("Try a sample image").

use uuid::Uuid;
use vdi::{create, CreateOptions, Entry, VdiImage};

use crate::storage::{Backend, SparseMem};
use crate::MEM_OPEN_LIMIT;

/// The demo image: 128 MiB dynamic, 1 MiB blocks, written out of order, built in `spare`.
pub(crate) fn build(spare: Vec<u8>) -> vdi::Result<VdiImage<Backend>> {
    const MIB: u64 = 1 << 20;
    let mut o = CreateOptions::new(128 * MIB, Uuid::new_v4(), Uuid::new_v4());
    o.comment = "Sample image built in your browser by the VDI workbench".into();
    // 2 MiB of metadata and 23 data blocks: reserved at once, so building it never holds
    // two copies while the vector grows.
    let storage = SparseMem::in_spare(spare, MEM_OPEN_LIMIT, (2 + 23) * MIB as usize);
    let mut img = create(Backend::Mem(storage), &o, &mut vdi::NoMonitor)?;
    // Block 0: an MBR with one Linux partition from sector 2048, and a greeting.
    let mut mbr = vec![0u8; 512];
    mbr[..40].copy_from_slice(b"VDI workbench sample disk - hello there!");
    let part = &mut mbr[446..462];
    part[4] = 0x83;
    part[8..12].copy_from_slice(&2048u32.to_le_bytes());
    part[12..16].copy_from_slice(&((128 * MIB / 512) as u32 - 2048).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    img.write_at(0, &mbr)?;
    // Data blocks written in a scrambled order: slots follow write order, so the physical
    // view shows fragmentation.
    let blocks: [u64; 22] = [1, 2, 3, 40, 41, 42, 43, 8, 9, 100, 101, 102, 60, 61, 20, 21, 22, 23, 90, 127, 70, 71];
    let mut buf = vec![0u8; MIB as usize];
    debug_assert_eq!(blocks.len() + 1, 23);
    for &b in &blocks {
        for (i, x) in buf.iter_mut().enumerate() {
            *x = (b as u8).wrapping_mul(31).wrapping_add((i / 4096) as u8) | 1;
        }
        // A partial last write in one block keeps its tail zero.
        let n = if b == 127 { 4096 } else { buf.len() };
        img.write_at(b * MIB, &buf[..n])?;
    }
    // Discarded blocks, as VirtualBox marks them after compacting.
    for b in [10u32, 11, 12, 13, 50, 51, 52] {
        img.set_entry(b, Entry::Zero)?;
    }
    img.flush()?;
    Ok(img)
}
