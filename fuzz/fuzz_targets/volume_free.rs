//! Filesystem-aware compaction's free-space scan over any bytes: the input is the virtual
//! disk of a small VDI (4 KiB blocks). `FreePlan::scan` never panics, every error is a named
//! one, and every block it calls free lies wholly inside one partition whose allocation map
//! was read (never in a gap, never in a partition it did not read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdi::volume::{FreePlan, FreeStatus};
use vdi::{create, CreateOptions, MemStorage, NoMonitor, Uuid};

const BS: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let size = (data.len() as u64).div_ceil(BS) * BS;
    let mut o = CreateOptions::new(size, Uuid::from_u128(1), Uuid::from_u128(2));
    o.block_size = BS as u32;
    let mut img = create(MemStorage::new(), &o, &mut NoMonitor).expect("a small image is created");
    img.write_at(0, data).expect("the disk is written");
    let plan = match FreePlan::scan(&mut img) {
        Ok(p) => p,
        Err(e) => {
            assert!(matches!(e.kind(), "damaged" | "limit" | "filesystem-not-clean"), "{} ({e})", e.kind());
            return;
        }
    };
    for b in 0..size / BS {
        if !plan.is_free(b) {
            continue;
        }
        let (x, y) = (b * BS, (b + 1) * BS);
        assert!(
            plan.partitions.iter().any(|p| p.status == FreeStatus::Read && p.start <= x && y <= p.start + p.size),
            "block {b} is called free outside every partition whose map was read: {plan:?}"
        );
    }
    for p in &plan.partitions {
        assert!(p.free_blocks <= p.size / BS + 1, "{p:?}");
    }
});
