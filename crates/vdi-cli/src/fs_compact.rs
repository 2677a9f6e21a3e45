//! `vdi compact --fs-aware [--dry-run]`: release what the guest's filesystems call free,
//! then compact; with --dry-run, only say how much would come back.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use vdi::volume::free_json::{free_plan_json, fs_compact_json};
use vdi::volume::{FreePlan, FreeStatus};

use crate::layers::{self, Rw};
use crate::{human, print_json, Bar};

pub fn compact(path: &Path, dry_run: bool, json: bool, chain: &[PathBuf]) -> Result<u8> {
    let name = path.display().to_string();
    // A single image is a chain of one; a snapshot is read through its parents.
    let mut l = layers::open(path, chain, if dry_run { Rw::None } else { Rw::Top })?;
    let stride = l.chain.top().header().block_stride();
    if l.chain.top().header().kind() == Some(vdi::ImageType::Fixed) {
        bail!("{name}: a fixed image keeps every block allocated by design; convert it to a dynamic image (vdi convert -O vdi) first");
    }
    if dry_run {
        let plan = FreePlan::scan(&mut l.chain).with_context(|| format!("could not read the filesystems in {name}"))?;
        if json {
            let mut v = free_plan_json(&plan, stride);
            v["filename"] = name.clone().into();
            v["dry-run"] = true.into();
            return print_json(&v);
        }
        print_plan(&plan);
        match plan.refusal() {
            Some(e) => println!("{name}: compaction would be refused: {e}"),
            None => println!(
                "{name}: {} block(s) would be released, the file would shrink by at least {} (dry run: nothing written)",
                plan.releasable_blocks(),
                human(plan.releasable_blocks() * stride)
            ),
        }
        return Ok(0);
    }
    let st = {
        let mut bar = Bar::new("compacting");
        l.chain.compact_fs_aware_top(&mut bar)?
    };
    l.chain.flush()?;
    if json {
        return print_json(&fs_compact_json(&st, stride, &name));
    }
    print_plan(&st.plan);
    let c = &st.compact;
    println!(
        "{name}: {} block(s) released as free space, {} zero block(s) marked ZERO, {} block(s) moved, {} reclaimed ({} -> {} bytes)",
        st.blocks_released,
        c.blocks_zeroed,
        c.blocks_moved,
        human(c.bytes_reclaimed),
        c.file_len_before,
        c.file_len_after
    );
    Ok(0)
}

fn print_plan(plan: &FreePlan) {
    for p in &plan.partitions {
        let fs = p.fs.map(|k| k.name()).unwrap_or("-");
        let what = match &p.status {
            FreeStatus::Read => format!(
                "{} free, {} block(s) wholly free, {} stored: released",
                human(p.free_bytes),
                p.free_blocks,
                p.releasable_blocks
            ),
            FreeStatus::NotRead { why } => format!("not read ({why})"),
            FreeStatus::NotClean(n) => format!("NOT CLEAN: {}; {}", n.reason, n.hint),
        };
        println!("partition {} ({fs}, {}): {what}", p.number, human(p.size));
    }
    for f in &plan.findings {
        println!("partition table: {f}");
    }
}
