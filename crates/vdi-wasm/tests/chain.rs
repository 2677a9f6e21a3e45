//! A chain opened in a `Session` in headless Chromium (a dedicated worker): a base and two snapshots built by
//! the engine in memory, handed over as `File`s in shuffled order.
//!
//! Run with `cargo test -p vdi-wasm --target wasm32-unknown-unknown --tests`.
#![cfg(target_arch = "wasm32")]

use js_sys::{Array, Reflect, Uint8Array};
use serde_json::Value;
use vdi::{create, Chain, CreateOptions, MemStorage, NoMonitor, Uuid, VdiImage};
use vdi_wasm::cells::NO_LAYER;
use vdi_wasm::Session;
use vdi_wasm::storage::{Backend, OpfsStorage};
use vdi_wasm::PieceKind;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::{File, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetFileOptions, FileSystemSyncAccessHandle, WorkerGlobalScope};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const MIB: u64 = 1 << 20;
const SIZE: u64 = 8 * MIB;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed as u8).wrapping_mul(37) ^ (i as u8) ^ ((i >> 9) as u8) | 1).collect()
}

/// base: blocks 0, 1; snap1: block 1 partly rewritten, block 3, block 0 zeroed (ZERO);
/// snap2: block 5. Returns the three files' bytes (base first) and the flattened disk.
fn three_layers() -> (Vec<Vec<u8>>, Vec<u8>, [Uuid; 3]) {
    let ids = [Uuid::from_u128(0xBA5E), Uuid::from_u128(0x5A1), Uuid::from_u128(0x5A2)];
    let mut raw = vec![0u8; SIZE as usize];
    let put = |raw: &mut Vec<u8>, off: u64, d: &[u8]| raw[off as usize..][..d.len()].copy_from_slice(d);
    let mut base = create(MemStorage::new(), &CreateOptions::new(SIZE, ids[0], Uuid::from_u128(1)), &mut NoMonitor).unwrap();
    for b in [0u64, 1] {
        let d = pattern(b + 1, MIB as usize);
        base.write_at(b * MIB, &d).unwrap();
        put(&mut raw, b * MIB, &d);
    }
    let s1 = create(MemStorage::new(), &CreateOptions::diff_of(base.header(), ids[1], Uuid::from_u128(2)), &mut NoMonitor).unwrap();
    let mut c = Chain::from_set(vec![base, s1]).unwrap();
    let d = pattern(9, 5000);
    c.write_at(MIB + 100, &d).unwrap();
    put(&mut raw, MIB + 100, &d);
    let d = pattern(3, MIB as usize);
    c.write_at(3 * MIB, &d).unwrap();
    put(&mut raw, 3 * MIB, &d);
    c.write_at(0, &vec![0u8; MIB as usize]).unwrap();
    put(&mut raw, 0, &vec![0u8; MIB as usize]);
    let mut layers = c.into_layers();
    let s1 = layers.pop().unwrap();
    let base = layers.pop().unwrap();
    let s2 = create(MemStorage::new(), &CreateOptions::diff_of(s1.header(), ids[2], Uuid::from_u128(3)), &mut NoMonitor).unwrap();
    let mut c = Chain::from_set(vec![base, s1, s2]).unwrap();
    let d = pattern(5, 4096);
    c.write_at(5 * MIB, &d).unwrap();
    put(&mut raw, 5 * MIB, &d);
    let files = c.into_layers().into_iter().map(|l| l.into_storage().into_vec()).collect();
    (files, raw, ids)
}

fn file(bytes: &[u8], name: &str) -> File {
    let arr = Array::new();
    arr.push(&Uint8Array::from(bytes).into());
    File::new_with_blob_sequence(&arr, name).unwrap()
}

fn files(list: &[(&[u8], &str)]) -> Array {
    let a = Array::new();
    for (b, n) in list {
        a.push(&file(b, n).into());
    }
    a
}

fn error_of(e: JsValue) -> (String, String) {
    let get = |k: &str| Reflect::get(&e, &k.into()).unwrap().as_string().unwrap_or_default();
    (get("kind"), get("message"))
}

#[wasm_bindgen_test]
fn shuffled_files_make_one_chain_with_maps_and_a_flattened_raw_disk() {
    let (f, raw, ids) = three_layers();
    let mut cb = Session::new();
    let info: Value = serde_json::from_str(&cb.open_files(&files(&[(&f[1], "s1.vdi"), (&f[2], "s2.vdi"), (&f[0], "base.vdi")])).unwrap()).unwrap();
    let names: Vec<&str> = info["layers"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["base.vdi", "s1.vdi", "s2.vdi"]);
    let index: Vec<u64> = info["layers"].as_array().unwrap().iter().map(|l| l["index"].as_u64().unwrap()).collect();
    assert_eq!(index, [2, 0, 1]);
    assert_eq!(info["layers"][1]["info"]["format-specific"]["data"]["parent-uuid"], ids[0].to_string());

    // Combined map, one block per cell: who supplies each block.
    let m = cb.map_cells(1).unwrap();
    let l = m.layers();
    assert_eq!(m.cells(), 8);
    assert_eq!((l[0], m.zero_counts()[0]), (NO_LAYER, 1), "block 0: ZERO in s1 hides the base");
    assert_eq!([l[1], l[3], l[5]], [1, 1, 2]);
    assert_eq!([l[2], l[4], l[6], l[7]], [NO_LAYER; 4]);
    let s: Value = serde_json::from_str(&m.summary()).unwrap();
    assert_eq!(s["data-by-layer"], serde_json::json!([0, 2, 1]));
    assert_eq!(s["free"], 4);
    // Folded: 3 cells of up to 3 blocks, the dominant layer per cell (a tie goes to the
    // upper layer: blocks 3 and 5 come from s1 and s2).
    let m = cb.map_cells(3).unwrap();
    assert_eq!(m.layers(), &[1, 2, NO_LAYER]);
    assert_eq!(m.data_counts(), &[1, 2, 0]);
    assert_eq!(m.zero_counts(), &[1, 0, 0]);
    // A layer's own map.
    let m = cb.layer_cells(1, 1).unwrap();
    assert_eq!(m.data_counts(), &[0, 1, 0, 1, 0, 0, 0, 0]);
    assert_eq!(m.zero_counts(), &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert!(cb.layer_cells(3, 1).is_err());

    // The flattened raw disk through the piece API.
    let size = cb.export_begin().unwrap() as u64;
    assert_eq!(size, SIZE);
    let mut got = vec![0u8; size as usize];
    let mem = wasm_bindgen::memory().unchecked_into::<js_sys::WebAssembly::Memory>();
    loop {
        match cb.export_next().unwrap() {
            PieceKind::End => break,
            PieceKind::Zeros => {}
            PieceKind::Data => {
                let (off, len) = (cb.piece_offset() as usize, cb.piece_len() as usize);
                let view = Uint8Array::new_with_byte_offset_and_length(&mem.buffer(), cb.buffer_ptr() as u32, len as u32);
                view.copy_to(&mut got[off..off + len]);
            }
        }
    }
    assert_eq!(cb.export_done(), cb.export_total(), "the export is over");
    assert!(got == raw, "the flattened raw disk equals the writes");
}

#[wasm_bindgen_test]
fn missing_parent_and_separate_chains_name_the_files() {
    let (f, _, ids) = three_layers();
    let mut cb = Session::new();
    let (kind, msg) = error_of(cb.open_files(&files(&[(&f[2], "s2.vdi"), (&f[1], "s1.vdi")])).unwrap_err());
    assert_eq!(kind, "missing-parent");
    assert!(msg.contains(&ids[0].to_string()) && msg.contains("s1.vdi"), "{msg}");
    assert!(!cb.is_open());
    let other = create(MemStorage::new(), &CreateOptions::new(SIZE, Uuid::from_u128(0x07E), Uuid::nil()), &mut NoMonitor)
        .unwrap()
        .into_storage()
        .into_vec();
    let (kind, msg) = error_of(cb.open_files(&files(&[(&f[1], "s1.vdi"), (&other, "other.vdi"), (&f[0], "base.vdi")])).unwrap_err());
    assert_eq!(kind, "broken-chain");
    assert!(msg.contains("\u{201c}base.vdi\u{201d} \u{2192} \u{201c}s1.vdi\u{201d}") && msg.contains("other.vdi"), "{msg}");
    let (kind, msg) = error_of(cb.open_files(&files(&[(&f[0], "a.vdi"), (&f[0], "b.vdi")])).unwrap_err());
    assert_eq!(kind, "broken-chain");
    assert!(msg.contains("a.vdi") && msg.contains("b.vdi"), "duplicates name both files: {msg}");
    let (kind, msg) = error_of(cb.open_files(&files(&[(&f[0], "base.vdi"), (b"not an image", "junk.vdi")])).unwrap_err());
    assert!(msg.contains("junk.vdi"), "{kind}: {msg}");
}

async fn opfs_dir() -> FileSystemDirectoryHandle {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    JsFuture::from(scope.navigator().storage().get_directory()).await.unwrap().unchecked_into()
}

async fn opfs_handle(dir: &FileSystemDirectoryHandle, name: &str) -> FileSystemSyncAccessHandle {
    let opts = FileSystemGetFileOptions::new();
    opts.set_create(true);
    let fh: FileSystemFileHandle = JsFuture::from(dir.get_file_handle_with_options(name, &opts)).await.unwrap().unchecked_into();
    JsFuture::from(fh.create_sync_access_handle()).await.unwrap().unchecked_into()
}

#[wasm_bindgen_test]
async fn flattened_vdi_is_written_through_an_opfs_handle() {
    let (f, raw, _) = three_layers();
    let mut cb = Session::new();
    cb.open_files(&files(&[(&f[2], "s2.vdi"), (&f[0], "base.vdi"), (&f[1], "s1.vdi")])).unwrap();
    let dir = opfs_dir().await;
    let name = "chain-test-flat.vdi";
    let size = cb.flat_begin(opfs_handle(&dir, name).await).unwrap();
    let mut steps = 0;
    while cb.flat_step().unwrap() < size {
        steps += 1;
        assert!(steps < 100);
    }
    let done: Value = serde_json::from_str(&cb.flat_finish().unwrap()).unwrap();
    assert_eq!(done["info"]["format-specific"]["data"]["image-type"], "dynamic");
    // Blocks 1, 3, 5 hold data; block 0 (ZERO in s1) and the free ones are not stored.
    assert_eq!(done["info"]["format-specific"]["data"]["blocks-allocated"], 3);
    let h = opfs_handle(&dir, name).await;
    let mut img = VdiImage::open(Backend::Opfs(OpfsStorage::new(h.clone()))).unwrap();
    let mut got = vec![0u8; SIZE as usize];
    img.read_at(0, &mut got).unwrap();
    assert!(got == raw, "the flattened VDI reads as the chain");
    let report = vdi::check_image(&mut img, &mut NoMonitor).unwrap();
    assert_eq!((report.corruptions, report.leaks), (0, 0));
    drop(img);
    h.close();
    let _ = JsFuture::from(dir.remove_entry(name)).await;
    // Cancelling closes the handle: the file can be opened again at once.
    cb.flat_begin(opfs_handle(&dir, name).await).unwrap();
    cb.flat_cancel();
    opfs_handle(&dir, name).await.close();
    let _ = JsFuture::from(dir.remove_entry(name)).await;
}

/// One session holds an image or a chain: what only an image has is refused for a chain
/// with a kind the page can switch on, and opening an image after a chain works.
#[wasm_bindgen_test]
fn one_session_for_a_chain_and_an_image() {
    let (f, _, _) = three_layers();
    let mut s = Session::new();
    s.open_files(&files(&[(&f[0], "base.vdi"), (&f[1], "s1.vdi")])).unwrap();
    assert!(s.is_chain());
    let (kind, msg) = error_of(s.check(&js_sys::Function::new_no_args("")).unwrap_err());
    assert_eq!(kind, "unsupported", "{msg}");
    assert!(msg.contains("chain of 2 images"), "{msg}");
    assert_eq!(error_of(s.block_info(0).unwrap_err()).0, "unsupported");
    let info: Value = serde_json::from_str(&s.open_file(&file(&f[0], "base.vdi")).unwrap()).unwrap();
    assert!(!s.is_chain());
    assert_eq!(info["file"]["name"], "base.vdi");
    assert_eq!(s.layer_cells(0, 1).unwrap().cells(), 8);
    assert!(s.check(&js_sys::Function::new_no_args("")).is_ok());
    // The limits the page draws with are the engine's.
    let l: Value = serde_json::from_str(&vdi_wasm::limits()).unwrap();
    assert_eq!(l["max-cells"], vdi_wasm::MAX_CELLS);
    assert_eq!(l["max-files"], vdi_wasm::MAX_FILES);
    assert_eq!(l["chunk"], vdi_wasm::CHUNK as u64);
}

/// A layer whose file ends inside its block map (opened leniently, as the page does): the
/// combined map still shows what every readable entry decides, and only the blocks whose
/// deciding entry is past the end of the file are unreadable.
#[wasm_bindgen_test]
fn a_cut_short_layer_leaves_only_its_unreadable_blocks_unreadable() {
    let (mut f, _, _) = three_layers();
    // The base's map is at 1 MiB: keep entries 0..3 of its 8.
    f[0].truncate((MIB + 12) as usize);
    let mut s = Session::new();
    s.open_files(&files(&[(&f[0], "base.vdi"), (&f[1], "s1.vdi"), (&f[2], "s2.vdi")])).unwrap();
    let m = s.map_cells(1).unwrap();
    let summary: Value = serde_json::from_str(&m.summary()).unwrap();
    // Blocks 1 and 3 from s1, 5 from s2; 0 ZERO in s1; 2 FREE everywhere; 4, 6, 7 decided
    // by the base's missing entries.
    assert_eq!(summary["data-by-layer"], serde_json::json!([0, 2, 1]), "{summary}");
    assert_eq!((summary["zero"].as_u64(), summary["free"].as_u64(), summary["unreadable"].as_u64()), (Some(1), Some(1), Some(3)), "{summary}");
    let unread: Vec<u32> = m.unreadable().to_vec();
    assert_eq!(unread, [0, 0, 0, 0, 1, 0, 1, 1]);
    // Its own map says the same of the base.
    let base = s.layer_cells(0, 1).unwrap();
    assert_eq!(base.readable(), 3);
}
