//! JSON reports shaped like `qemu-img info/check/map --output=json`.
//!
//! Field names follow qemu-img where a field means the same thing (`virtual-size`,
//! `cluster-size`, `check-errors`, map entries' `start`/`length`/`data`/`zero`/`offset`);
//! everything VDI-specific sits under `format-specific.data` (as qemu-img does for qcow2)
//! with kebab-case names. The CLI and the browser worker both print these, so the page
//! and `vdi info --json` always agree.
//!
//! Every shape both faces print is built here, once: info, check, map extents, the edit
//! reports (compact, resize, discard, repair), a chain's layers and its map extents.

use serde_json::{json, Value};

use crate::chain::ChainExtent;
use crate::check::CheckReport;
use crate::header::{Geometry, VdiHeader};
use crate::image::{BlockState, Extent, VdiImage};
use crate::storage::ReadAt;
use crate::{CompactStats, RepairReport, ResizeStats};

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

/// qemu-img's map entry fields plus `state`; `offset` only for data.
fn map_entry(start: u64, length: u64, state: BlockState, depth: usize, present: bool, host: Option<u64>) -> Value {
    let data = state == BlockState::Data;
    let mut v = json!({
        "start": start,
        "length": length,
        "depth": depth,
        "present": present,
        "zero": !data,
        "data": data,
        "compressed": false,
        "state": state.name(),
    });
    if let Some(o) = host {
        v["offset"] = json!(o);
    }
    v
}

/// One `vdi map --json` entry: qemu-img's fields plus `state` ("free", "zero", "data").
pub fn extent_json(e: &Extent) -> Value {
    map_entry(e.start, e.length, e.state, 0, true, e.host_offset)
}

/// One `vdi map --json` entry of a chain of `layers` layers: `depth` counts down from the
/// top as qemu-img counts backing files (0 = the top; `layers` = FREE everywhere, then
/// `present` is false); data names the `filename` of the layer holding it.
pub fn chain_extent_json(e: &ChainExtent, layers: usize, filename: Option<&str>) -> Value {
    let depth = e.layer.map(|l| layers.saturating_sub(l + 1)).unwrap_or(layers);
    let mut v = map_entry(e.start, e.length, e.state, depth, e.layer.is_some(), e.host_offset);
    if let (Some(_), Some(name)) = (e.host_offset, filename) {
        v["filename"] = json!(name);
    }
    v
}

/// One layer of a chain, as `vdi info --json` lists them under `chain` and the page's
/// chain panel shows them: `filename`, `index` (where its file was among those given; the
/// CLI gives them base first), the header's identity (`uuid`, `modify-uuid`,
/// `parent-uuid`, `image-type`, `virtual-size`, `blocks-allocated`), the file's
/// `file-length`, `readable-entries` and `layout-error` (a lenient open's broken rule, or
/// null), and the layer's whole `info` report. `name` repeats `filename` (the key the page
/// reads).
pub fn chain_layer_json<S: ReadAt>(img: &VdiImage<S>, filename: &str, index: usize) -> Value {
    let h = img.header();
    json!({
        "filename": filename,
        "name": filename,
        "index": index,
        "uuid": h.uuid_create.to_string(),
        "modify-uuid": h.uuid_modify.to_string(),
        "parent-uuid": h.uuid_link.to_string(),
        "image-type": h.kind().map(|k| k.name()).unwrap_or("unknown"),
        "virtual-size": h.virtual_size(),
        "blocks-allocated": h.blocks_allocated,
        "file-length": img.file_len(),
        "readable-entries": img.readable_entries(),
        "layout-error": img.layout_error(),
        "info": info_json(h, filename, None),
    })
}

/// `vdi compact --json`: the counts of [`CompactStats`] and what all-zero blocks became
/// (`marked`: "zero", "free", or for a differencing image "free-or-zero": blocks its
/// parents read the same become FREE, zeros over data ZERO). `zero_as_free` is None for a
/// differencing image.
pub fn compact_json(st: &CompactStats, filename: &str, zero_as_free: Option<bool>) -> Value {
    json!({
        "filename": filename,
        "blocks-zeroed": st.blocks_zeroed,
        "blocks-moved": st.blocks_moved,
        "bytes-reclaimed": st.bytes_reclaimed,
        "file-length-before": st.file_len_before,
        "file-length-after": st.file_len_after,
        "marked": match zero_as_free {
            Some(true) => "free",
            Some(false) => "zero",
            None => "free-or-zero",
        },
    })
}

/// `vdi resize --json`: sizes before and after, what moved, and where the block map and
/// the data now start (`h` is the header after the resize).
pub fn resize_json(st: &ResizeStats, h: &VdiHeader, filename: &str) -> Value {
    json!({
        "filename": filename,
        "old-size": st.old_size,
        "new-size": st.new_size,
        "blocks-relocated": st.blocks_relocated,
        "map-moved": st.map_moved,
        "offset-bmap": h.offset_bmap,
        "offset-data": h.offset_data,
    })
}

/// `vdi discard --json`: whole blocks discarded and bytes the file shrank by.
pub fn discard_json(blocks_discarded: u64, bytes_reclaimed: u64, filename: &str) -> Value {
    json!({
        "filename": filename,
        "blocks-discarded": blocks_discarded,
        "bytes-reclaimed": bytes_reclaimed,
    })
}

/// `vdi repair --json` and the page's repair report: `dry-run`, `guessed` (header values
/// that were guessed), `actions` (`message`, `data-lost`), the counts before and after
/// (`corruptions-before`, `leaks-before`, `corruptions-after`, `leaks-after`; null after
/// a dry run) and both checks whole (`before`, `after`, as `vdi check --json`).
pub fn repair_json(rep: &RepairReport, filename: &str) -> Value {
    json!({
        "filename": filename,
        "dry-run": rep.dry_run,
        "guessed": rep.guessed,
        "actions": rep.actions.iter().map(|a| json!({ "message": a.message, "data-lost": a.data_lost })).collect::<Vec<_>>(),
        "corruptions-before": rep.before.corruptions,
        "leaks-before": rep.before.leaks,
        "corruptions-after": rep.after.as_ref().map(|a| a.corruptions),
        "leaks-after": rep.after.as_ref().map(|a| a.leaks),
        "before": check_json(&rep.before, filename),
        "after": rep.after.as_ref().map(|a| check_json(a, filename)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create, Chain, CreateOptions, MemStorage, NoMonitor, RepairAction, Uuid};

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().expect("an object").keys().map(String::as_str).collect()
    }

    #[test]
    fn repair_report_has_the_keys_of_both_faces() {
        let before = CheckReport { corruptions: 2, leaks: 1, ..Default::default() };
        let rep = RepairReport {
            dry_run: false,
            actions: vec![RepairAction { message: "block 12: cleared".into(), data_lost: true }],
            guessed: vec!["block size".into()],
            before,
            after: Some(CheckReport::default()),
        };
        let v = repair_json(&rep, "a.vdi");
        assert_eq!(
            keys(&v),
            [
                "filename",
                "dry-run",
                "guessed",
                "actions",
                "corruptions-before",
                "leaks-before",
                "corruptions-after",
                "leaks-after",
                "before",
                "after"
            ]
        );
        assert_eq!(v["filename"], "a.vdi");
        assert_eq!(v["actions"][0]["message"], "block 12: cleared");
        assert_eq!(v["actions"][0]["data-lost"], true);
        assert_eq!(v["guessed"][0], "block size");
        assert_eq!((v["corruptions-before"].as_u64(), v["leaks-before"].as_u64()), (Some(2), Some(1)));
        assert_eq!((v["corruptions-after"].as_u64(), v["leaks-after"].as_u64()), (Some(0), Some(0)));
        // The checks whole, as `vdi check --json` prints them (the page reads after.corruptions).
        assert_eq!(v["before"], check_json(&rep.before, "a.vdi"));
        assert_eq!(v["after"]["corruptions"], 0);
        // A dry run has no "after".
        let dry = repair_json(&RepairReport { dry_run: true, after: None, ..rep }, "a.vdi");
        assert_eq!(dry["dry-run"], true);
        assert!(dry["after"].is_null() && dry["corruptions-after"].is_null() && dry["leaks-after"].is_null());
    }

    #[test]
    fn edit_reports() {
        let st = CompactStats { blocks_zeroed: 3, blocks_moved: 2, bytes_reclaimed: 4096, file_len_before: 10240, file_len_after: 6144 };
        let v = compact_json(&st, "a.vdi", Some(false));
        assert_eq!(
            v,
            json!({
                "filename": "a.vdi", "blocks-zeroed": 3, "blocks-moved": 2, "bytes-reclaimed": 4096,
                "file-length-before": 10240, "file-length-after": 6144, "marked": "zero",
            })
        );
        assert_eq!(compact_json(&st, "a.vdi", Some(true))["marked"], "free");
        assert_eq!(compact_json(&st, "a.vdi", None)["marked"], "free-or-zero");

        let img = create(MemStorage::new(), &CreateOptions::new(4 << 20, Uuid::from_u128(1), Uuid::nil()), &mut NoMonitor).unwrap();
        let h = img.header();
        let st = ResizeStats { old_size: 4 << 20, new_size: 8 << 20, blocks_relocated: 1, map_moved: true };
        assert_eq!(
            resize_json(&st, h, "a.vdi"),
            json!({
                "filename": "a.vdi", "old-size": 4 << 20, "new-size": 8 << 20, "blocks-relocated": 1,
                "map-moved": true, "offset-bmap": h.offset_bmap, "offset-data": h.offset_data,
            })
        );
        assert_eq!(
            discard_json(2, 1 << 21, "a.vdi"),
            json!({ "filename": "a.vdi", "blocks-discarded": 2, "bytes-reclaimed": 1 << 21 })
        );
    }

    #[test]
    fn chain_layers_and_extents() {
        let mb = 1u64 << 20;
        let mut base =
            create(MemStorage::new(), &CreateOptions::new(4 * mb, Uuid::from_u128(0xb), Uuid::from_u128(0xbb)), &mut NoMonitor)
                .unwrap();
        base.write_at(0, &[1u8; 512]).unwrap();
        let o = CreateOptions::diff_of(base.header(), Uuid::from_u128(0xd), Uuid::from_u128(0xdd));
        let top = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        let mut chain = Chain::resolve(top, vec![base]).unwrap();
        chain.write_at(2 * mb, &[2u8; 512]).unwrap();

        let base_l = chain_layer_json(&chain.layers()[0], "base.vdi", 0);
        let top_l = chain_layer_json(&chain.layers()[1], "snap.vdi", 1);
        assert_eq!(
            keys(&top_l),
            [
                "filename",
                "name",
                "index",
                "uuid",
                "modify-uuid",
                "parent-uuid",
                "image-type",
                "virtual-size",
                "blocks-allocated",
                "file-length",
                "readable-entries",
                "layout-error",
                "info"
            ]
        );
        assert_eq!((&top_l["filename"], &top_l["name"], &top_l["index"]), (&json!("snap.vdi"), &json!("snap.vdi"), &json!(1)));
        assert_eq!(top_l["image-type"], "diff");
        assert_eq!(top_l["uuid"], Uuid::from_u128(0xd).to_string());
        assert_eq!(top_l["parent-uuid"], base_l["uuid"]);
        assert_eq!(top_l["blocks-allocated"], 1);
        assert_eq!(top_l["readable-entries"], 4);
        assert!(top_l["layout-error"].is_null());
        assert_eq!(top_l["info"], info_json(chain.layers()[1].header(), "snap.vdi", None));
        assert_eq!(top_l["file-length"], chain.layers()[1].file_len());
        assert_eq!(base_l["image-type"], "dynamic");

        let mut ext = Vec::new();
        chain.extents(|e| {
            ext.push(e);
            Ok(())
        })
        .unwrap();
        let names = ["base.vdi", "snap.vdi"];
        let v: Vec<Value> = ext.iter().map(|e| chain_extent_json(e, 2, e.layer.map(|l| names[l]))).collect();
        // Block 0 from the base (depth 1), block 1 FREE everywhere (depth 2, not present),
        // block 2 from the top (depth 0).
        assert_eq!((v[0]["start"].as_u64(), v[0]["depth"].as_u64(), &v[0]["filename"]), (Some(0), Some(1), &json!("base.vdi")));
        assert_eq!(v[0]["data"], true);
        assert!(v[0]["offset"].is_u64());
        assert_eq!((v[1]["depth"].as_u64(), &v[1]["present"], &v[1]["state"]), (Some(2), &json!(false), &json!("free")));
        assert!(v[1].get("filename").is_none() && v[1].get("offset").is_none());
        assert_eq!((v[2]["start"].as_u64(), v[2]["depth"].as_u64(), &v[2]["filename"]), (Some(2 * mb), Some(0), &json!("snap.vdi")));
        // The same fields as a single image's map entries.
        let single = extent_json(&Extent { start: 0, length: mb, state: BlockState::Zero, host_offset: None });
        assert_eq!(keys(&single), ["start", "length", "depth", "present", "zero", "data", "compressed", "state"]);
    }
}
