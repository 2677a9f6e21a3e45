//! JSON reports shaped like `qemu-img info/check/map --output=json`.
//!
//! Field names follow qemu-img where a field means the same thing (`virtual-size`,
//! `cluster-size`, `check-errors`, map entries' `start`/`length`/`data`/`zero`/`offset`);
//! everything VDI-specific sits under `format-specific.data` (as qemu-img does for qcow2)
//! with kebab-case names. The CLI and the browser worker both print these, so the page
//! and `vdi info --json` always agree.

use serde_json::{json, Value};

use crate::check::CheckReport;
use crate::header::{Geometry, VdiHeader};
use crate::image::{BlockState, Extent};

fn geometry(g: &Geometry) -> Value {
    json!({ "cylinders": g.cylinders, "heads": g.heads, "sectors": g.sectors, "sector-size": g.sector_size })
}

/// Every header field, in `format-specific.data` form.
pub fn header_json(h: &VdiHeader) -> Value {
    json!({
        "text": h.text_str(),
        "version": format!("{}.{}", h.version_major(), h.version_minor()),
        "version-raw": h.version,
        "header-size": h.header_size,
        "image-type": h.kind().map(|k| k.name()).unwrap_or("unknown"),
        "image-type-raw": h.image_type,
        "image-flags": h.image_flags,
        "comment": h.comment_str(),
        "offset-bmap": h.offset_bmap,
        "offset-data": h.offset_data,
        "legacy-geometry": geometry(&h.legacy_geometry),
        "dummy": h.dummy,
        "disk-size": h.disk_size,
        "block-size": h.block_size,
        "block-extra": h.block_extra,
        "blocks-in-image": h.blocks_in_image,
        "blocks-allocated": h.blocks_allocated,
        "uuid": h.uuid_create.to_string(),
        "modify-uuid": h.uuid_modify.to_string(),
        "parent-uuid": h.uuid_link.to_string(),
        "parent-modify-uuid": h.uuid_parent_modify.to_string(),
        "lchs-geometry": h.lchs.as_ref().map(geometry),
    })
}

/// `vdi info --json`: `filename`, `format`, `virtual-size`, `actual-size` (when known),
/// `cluster-size`, `dirty-flag`, `format-specific` and our `notes`.
pub fn info_json(h: &VdiHeader, filename: &str, actual_size: Option<u64>) -> Value {
    let mut v = json!({
        "filename": filename,
        "format": "vdi",
        "virtual-size": h.virtual_size(),
        "cluster-size": h.block_size,
        "dirty-flag": false,
        "format-specific": { "type": "vdi", "data": header_json(h) },
        "notes": h.notes(),
    });
    if let Some(a) = actual_size {
        v["actual-size"] = json!(a);
    }
    v
}

/// `vdi check --json`: qemu-img's `check-errors`, `corruptions`, `leaks`,
/// `total-clusters`, `allocated-clusters`, `fragmented-clusters`, `image-end-offset`, plus
/// the listed findings.
pub fn check_json(r: &CheckReport, filename: &str) -> Value {
    json!({
        "filename": filename,
        "format": "vdi",
        "check-errors": 0,
        "corruptions": r.corruptions,
        "leaks": r.leaks,
        "total-clusters": r.total_blocks,
        "allocated-clusters": r.allocated_blocks,
        "fragmented-clusters": r.fragmented_blocks,
        "zero-clusters": r.zero_blocks,
        "free-clusters": r.free_blocks,
        "unreadable-entries": r.unreadable_entries,
        "image-end-offset": r.image_end_offset,
        "file-length": r.file_len,
        "findings": r.findings.iter().map(|f| json!({
            "severity": f.severity.name(),
            "kind": f.kind.name(),
            "location": f.location,
            "message": f.message,
        })).collect::<Vec<_>>(),
        "unlisted-findings": r.unlisted(),
    })
}

/// One `vdi map --json` entry: qemu-img's fields plus `state` ("free", "zero", "data").
pub fn extent_json(e: &Extent) -> Value {
    let data = e.state == BlockState::Data;
    let mut v = json!({
        "start": e.start,
        "length": e.length,
        "depth": 0,
        "present": true,
        "zero": !data,
        "data": data,
        "compressed": false,
        "state": e.state.name(),
    });
    if let Some(o) = e.host_offset {
        v["offset"] = json!(o);
    }
    v
}
