//! `vdi compact --fs-aware [--dry-run]`: release what the guest's filesystems call free,
//! then compact; with --dry-run, only say how much would come back.

use std::path::Path;

use anyhow::{bail, Context, Result};
use vdi::volume::free_json::{free_plan_json, fs_compact_json};
use vdi::volume::{FreePlan, FreeStatus};
use vdi::VdiImage;
use vdi_cli::FileStorage;

use crate::{human, print_json, Bar};

pub fn compact(path: &Path, dry_run: bool, json: bool) -> Result<u8> {
    let name = path.display().to_string();
    if dry_run {
        let mut img = crate::open_image(path)?;
        if img.header().kind() == Some(vdi::ImageType::Diff) {
            bail!("{name}: filesystem-aware compaction of a differencing image is not supported");
        }
        let plan = FreePlan::scan(&mut img).with_context(|| format!("could not read the filesystems in {name}"))?;
        let stride = img.header().block_stride();
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
    crate::open_file(path)?;
    let f = FileStorage::open_rw(path).with_context(|| format!("could not open {name} for writing"))?;
    let mut img = VdiImage::open(f).with_context(|| format!("could not open {name}"))?;
    let st = {
        let mut bar = Bar::new("compacting");
        img.compact_fs_aware(&mut bar)?
    };
    img.flush()?;
    if json {
        return print_json(&fs_compact_json(&st, img.header().block_stride(), &name));
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
