//! The JSON of a filesystem-aware compaction (`vdi compact --fs-aware --json`, and the
//! page's preview): per partition what was read and what it calls free, then what the
//! compaction did (or, with a dry run, would release).

use serde_json::{json, Value};

use crate::surgery::FsCompactStats;
use crate::volume::{FreePlan, FreeStatus};

/// The plan alone: per partition, and the blocks and bytes a compaction would release
/// (`stride`: bytes a stored block takes in the file, its prefix included).
pub fn free_plan_json(plan: &FreePlan, stride: u64) -> Value {
    let parts: Vec<Value> = plan
        .partitions
        .iter()
        .map(|p| {
            let (status, reason, hint) = match &p.status {
                FreeStatus::Read => ("read", None, None),
                FreeStatus::NotRead { why } => ("not-read", Some(why.clone()), None),
                FreeStatus::NotClean(n) => ("not-clean", Some(n.reason.clone()), Some(n.hint.clone())),
            };
            json!({
                "number": p.number,
                "start": p.start,
                "size": p.size,
                "filesystem": p.fs.map(|k| k.name()),
                "status": status,
                "reason": reason,
                "hint": hint,
                "free-bytes": p.free_bytes,
                "free-blocks": p.free_blocks,
                "releasable-blocks": p.releasable_blocks,
                "releasable-bytes": p.releasable_blocks * plan.block_size,
            })
        })
        .collect();
    json!({
        "block-size": plan.block_size,
        "partitions": parts,
        "findings": plan.findings,
        "releasable-blocks": plan.releasable_blocks(),
        "estimated-bytes-reclaimed": plan.releasable_blocks() * stride,
    })
}

/// `vdi compact --fs-aware --json`: the plan, then what was done.
pub fn fs_compact_json(st: &FsCompactStats, stride: u64, filename: &str) -> Value {
    let mut v = free_plan_json(&st.plan, stride);
    let c = &st.compact;
    let o = v.as_object_mut().expect("an object");
    o.insert("filename".into(), json!(filename));
    o.insert("dry-run".into(), json!(false));
    o.insert("blocks-released".into(), json!(st.blocks_released));
    o.insert("blocks-zeroed".into(), json!(c.blocks_zeroed));
    o.insert("blocks-moved".into(), json!(c.blocks_moved));
    o.insert("bytes-reclaimed".into(), json!(c.bytes_reclaimed));
    o.insert("file-length-before".into(), json!(c.file_len_before));
    o.insert("file-length-after".into(), json!(c.file_len_after));
    v
}
