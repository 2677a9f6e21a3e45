//! JSON shapes of partitions, directory entries and file extents, shared by the CLI
//! (`vdi fs --json`, `vdi ls --json`) and the wasm layer.

use serde_json::{json, Value};

use crate::volume::{Entry, FileExtent, Partition, PartitionTable};

/// `{"scheme", "disk_id", "findings": [...], "partitions": [...]}`.
pub fn table_json(t: &PartitionTable) -> Value {
    json!({
        "scheme": t.scheme.name(),
        "disk_id": t.disk_id,
        "findings": t.findings,
        "partitions": t.partitions.iter().map(partition_json).collect::<Vec<_>>(),
    })
}

/// One partition: where it is, its type, and what detection found in it (`filesystem`
/// null when nothing was recognised; `label`, `uuid` are the filesystem's).
pub fn partition_json(p: &Partition) -> Value {
    let fs = p.filesystem.as_ref();
    json!({
        "number": p.number,
        "start": p.start,
        "size": p.size,
        "type": p.type_id.to_string(),
        "type_name": p.type_name,
        "name": p.name,
        "partuuid": p.uuid,
        "attributes": p.attributes,
        "filesystem": fs.map(|f| f.kind.name()),
        "label": fs.map(|f| f.label.as_str()),
        "uuid": fs.map(|f| f.uuid.as_str()),
        "fs_size": fs.map(|f| f.size),
        "used": fs.and_then(|f| f.used),
        "free": fs.and_then(|f| f.free),
        "readable": fs.is_some_and(|f| f.readable),
    })
}

/// One directory entry: `{name, kind, size, mtime, mode, id, target}`.
pub fn entry_json(e: &Entry) -> Value {
    json!({
        "name": e.name,
        "kind": e.kind.name(),
        "size": e.size,
        "mtime": e.mtime,
        "mode": e.mode,
        "id": e.id,
        "target": e.target,
    })
}

/// A file's extents: `[{offset, disk_offset (null: reads zeros), length}]`.
pub fn extents_json(x: &[FileExtent]) -> Value {
    Value::Array(x.iter().map(|e| json!({"offset": e.offset, "disk_offset": e.disk_offset, "length": e.len})).collect())
}
