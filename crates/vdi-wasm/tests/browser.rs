//! The bindings in headless Chromium, in a dedicated worker (where `FileReaderSync` and OPFS
//! sync access handles exist), against each backend: a `File`, an OPFS file, wasm memory.
//!
//! Run with `cargo test -p vdi-wasm --target wasm32-unknown-unknown --tests` (the runner and
//! Chromium are configured in `.cargo/config.toml` and `webdriver.json`).
#![cfg(target_arch = "wasm32")]

use js_sys::{Array, Reflect, Uint8Array};
use serde_json::Value;
use vdi::report::{check_json, info_json};
use vdi::{create, CreateOptions, Entry, Layout, MemStorage, NoMonitor, Storage, Uuid, VdiImage};
use vdi_wasm::storage::{Backend, FileStorage, OpfsStorage};
use vdi_wasm::{PieceKind, Session, CHUNK};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::{
    Blob, File, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetFileOptions,
    FileSystemSyncAccessHandle, WorkerGlobalScope,
};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A recognisable byte for position `i` of a block written with `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed as u8).wrapping_mul(37) ^ (i as u8) ^ ((i >> 9) as u8) | 1).collect()
}

/// A dynamic image in memory with data in blocks 0, 3 (whole) and 7 (partial), block 5
/// marked ZERO; returns the file bytes and the raw disk they describe.
fn small_image(layout: Layout) -> (Vec<u8>, Vec<u8>) {
    let size = 10 * MIB;
    let mut o = CreateOptions::new(size, Uuid::from_u128(0xA1), Uuid::from_u128(0xB2));
    o.layout = layout;
    o.comment = "wasm test <b>image</b>".into();
    let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    let mut raw = vec![0u8; size as usize];
    // Written out of order so slots differ from block numbers.
    for (block, len) in [(3u64, MIB), (0, MIB), (7, 4096)] {
        let d = pattern(block + 1, len as usize);
        img.write_at(block * MIB, &d).unwrap();
        raw[(block * MIB) as usize..][..d.len()].copy_from_slice(&d);
    }
    img.set_entry(5, Entry::Zero).unwrap();
    (img.into_storage().into_vec(), raw)
}

fn file_of(parts: &[&JsValue], name: &str) -> File {
    let arr = Array::new();
    for p in parts {
        arr.push(p);
    }
    File::new_with_blob_sequence(&arr, name).unwrap()
}

fn bytes_js(b: &[u8]) -> JsValue {
    Uint8Array::from(b).into()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

/// `(kind, message)` of an error thrown by the bindings.
fn error_of(e: JsValue) -> (String, String) {
    let get = |k: &str| Reflect::get(&e, &k.into()).unwrap().as_string().unwrap_or_default();
    (get("kind"), get("message"))
}

/// Run a whole raw export through the piece API into a Vec, checking that the pieces
/// cover every data byte exactly once and that the progress counters end at the total.
fn export_all(wb: &mut Session) -> Vec<u8> {
    let size = wb.export_begin().unwrap() as usize;
    let host_order = wb.export_host_order();
    let mut out = vec![0u8; size];
    let mut written = vec![false; size];
    let mut covered = 0u64;
    let mut last_end = 0u64;
    loop {
        let p = wb.next_piece().unwrap();
        assert!(p.len as usize <= CHUNK);
        let (a, b) = (p.offset as usize, (p.offset + p.len) as usize);
        match p.kind {
            PieceKind::End => break,
            PieceKind::Zeros => assert!(!host_order, "host order never reports zeros"),
            PieceKind::Data => {
                out[a..b].copy_from_slice(&wb.transfer_buffer()[p.buf_off..p.buf_off + p.len as usize]);
                assert!(written[a..b].iter().all(|w| !w), "bytes {a}..{b} written twice");
                written[a..b].fill(true);
            }
        }
        if !host_order {
            assert_eq!(p.offset, last_end, "disk order is contiguous");
            last_end = p.offset + p.len;
        }
        covered += p.len;
    }
    assert_eq!(wb.export_done(), wb.export_total());
    assert_eq!(covered as f64, wb.export_total());
    assert_eq!(wb.next_piece().unwrap().kind, PieceKind::End, "the end stays the end");
    out
}

/// The same export the way the worker runs it for a `File`: the bindings plan each run of
/// the file, the caller reads it (here straight from `file`) and places the pieces.
fn export_planned(wb: &mut Session, file: &[u8]) -> Vec<u8> {
    let size = wb.export_begin().unwrap() as usize;
    assert!(wb.export_host_order());
    let mut out = vec![0u8; size];
    let mut last_host = 0u64;
    loop {
        let plan = wb.export_plan_next().unwrap();
        if plan.is_empty() {
            break;
        }
        let (host, len) = (plan[0] as u64, plan[1] as u64);
        assert!(len as usize <= CHUNK && host >= last_host, "runs go front to back");
        last_host = host + len;
        let run = &file[host as usize..(host + len) as usize];
        let mut covered = 0;
        for p in plan[2..].chunks(3) {
            let (off, n, at) = (p[0] as usize, p[1] as usize, p[2] as usize);
            out[off..off + n].copy_from_slice(&run[at..at + n]);
            covered += n;
        }
        assert_eq!(covered as u64, len, "the pieces cover the run");
    }
    assert_eq!(wb.export_done(), wb.export_total());
    out
}

/// The engine's own raw export (`vdi::export_raw`) of an image in memory.
fn engine_raw(bytes: &[u8]) -> Vec<u8> {
    struct Collect(Vec<u8>);
    impl vdi::RawSink for Collect {
        fn data(&mut self, offset: u64, buf: &[u8]) -> vdi::Result<()> {
            assert_eq!(offset, self.0.len() as u64);
            self.0.extend_from_slice(buf);
            Ok(())
        }
        fn zeros(&mut self, _offset: u64, len: u64) -> vdi::Result<()> {
            self.0.resize(self.0.len() + len as usize, 0);
            Ok(())
        }
    }
    let mut img = VdiImage::open(MemStorage::from_vec(bytes.to_vec())).unwrap();
    let mut c = Collect(Vec::new());
    vdi::export_raw(&mut img, &mut c, &mut NoMonitor).unwrap();
    c.0
}

async fn opfs_dir() -> FileSystemDirectoryHandle {
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    JsFuture::from(scope.navigator().storage().get_directory()).await.unwrap().unchecked_into()
}

async fn opfs_handle(dir: &FileSystemDirectoryHandle, name: &str) -> (FileSystemFileHandle, FileSystemSyncAccessHandle) {
    let opts = FileSystemGetFileOptions::new();
    opts.set_create(true);
    let fh: FileSystemFileHandle =
        JsFuture::from(dir.get_file_handle_with_options(name, &opts)).await.unwrap().unchecked_into();
    let ah = JsFuture::from(fh.create_sync_access_handle()).await.unwrap().unchecked_into();
    (fh, ah)
}

async fn opfs_remove(dir: &FileSystemDirectoryHandle, name: &str) {
    let _ = JsFuture::from(dir.remove_entry(name)).await;
}

#[wasm_bindgen_test]
fn memory_backend_sample_fills_every_panel() {
    let mut wb = Session::new();
    let info = json(&wb.open_sample().unwrap());
    let d = &info["info"]["format-specific"]["data"];
    assert_eq!(info["info"]["virtual-size"], 128 * MIB);
    assert_eq!(d["blocks-in-image"], 128);
    assert_eq!(d["blocks-allocated"], 23);
    assert_eq!(info["file"]["backend"], "memory");
    assert!(d["comment"].as_str().unwrap().contains("Sample image"));

    let cells = wb.map_cells(1).unwrap();
    let s = json(&cells.summary());
    assert_eq!((s["data"].as_u64(), s["zero"].as_u64(), s["free"].as_u64()), (Some(23), Some(7), Some(98)));
    assert!(s["fragmented"].as_u64().unwrap() >= 5, "{s}");
    assert_eq!(cells.data_counts().iter().sum::<u32>(), 23);
    // Block 40 was the fourth block written (after 0, 1, 2, 3): slot 4.
    let b = json(&wb.block_info(40).unwrap());
    assert_eq!(b["state"], "data");
    assert_eq!(b["slot"], 4);
    assert_eq!(b["host-offset"], 2 * MIB + 4 * MIB);
    assert_eq!(b["virtual-offset"], 40 * MIB);
    assert_eq!(json(&wb.block_info(10).unwrap())["state"], "zero");
    assert_eq!(json(&wb.block_info(11 + 100).unwrap())["state"], "free");

    wb.read_disk(0.0, 512).unwrap();
    assert_eq!(&wb.transfer_buffer()[510..512], &[0x55, 0xAA]);
    let raw = export_all(&mut wb);
    assert_eq!(raw.len() as u64, 128 * MIB);
    let img = wb.image().unwrap();
    let mut want = vec![0u8; 128 * MIB as usize];
    img.read_at(0, &mut want).unwrap();
    assert!(raw == want, "the export equals the engine's reads");
    let r = json(&wb.check(&js_sys::Function::new_no_args("")).unwrap());
    assert_eq!((r["corruptions"].as_u64(), r["leaks"].as_u64()), (Some(0), Some(0)), "{r}");
    let Backend::Mem(m) = wb.image().unwrap().storage() else { panic!("the sample lives in memory") };
    assert_eq!(m.stored().len() as u64, 25 * MIB, "2 MiB of metadata and 23 blocks");
}

#[wasm_bindgen_test]
fn file_backend_reads_in_place_and_matches_the_engine() {
    for layout in [Layout::Vbox, Layout::Qemu] {
        let (bytes, raw) = small_image(layout);
        let file = file_of(&[&bytes_js(&bytes)], "small.vdi");
        let mut wb = Session::new();
        let info = json(&wb.open_file(&file).unwrap());
        // Opening reads the header only.
        let st = json(&wb.read_stats().unwrap());
        assert!(st["bytes"].as_u64().unwrap() <= 0x200, "{st}");
        let mem = VdiImage::open(MemStorage::from_vec(bytes.clone())).unwrap();
        assert_eq!(info["info"], info_json(mem.header(), "small.vdi", None), "the page shows what `vdi info --json` prints");
        assert_eq!(info["file"]["backend"], "file");
        assert_eq!(info["file"]["writable"], false);
        assert_eq!(info["file"]["length"], bytes.len() as u64);

        assert!(wb.export_begin().is_ok() && wb.export_host_order());
        let got = export_all(&mut wb);
        assert!(got == raw, "raw export through FileReaderSync");
        assert!(got == engine_raw(&bytes), "same bytes as the engine's export_raw");
        assert!(export_planned(&mut wb, &bytes) == raw, "planned export (the worker's File path)");
        let want_check = vdi::check(MemStorage::from_vec(bytes.clone()), &mut NoMonitor).unwrap();
        let got = json(&wb.check(&js_sys::Function::new_no_args("")).unwrap());
        assert_eq!(got, check_json(&want_check, "small.vdi"));

        let cells = wb.map_cells(1).unwrap();
        assert_eq!(cells.cells(), 10);
        assert_eq!(cells.data_counts(), &[1, 0, 0, 1, 0, 0, 0, 1, 0, 0]);
        assert_eq!(cells.zero_counts(), &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        // Block 3 was written first: slot 0, right at the data offset.
        let b = json(&wb.block_info(3).unwrap());
        let off = mem.header().offset_data as u64;
        assert_eq!((b["slot"].as_u64(), b["host-offset"].as_u64()), (Some(0), Some(off)));

        // The image file itself, read back through the backend.
        wb.read_image(0.0, 4096).unwrap();
        assert_eq!(&wb.transfer_buffer()[..4096], &bytes[..4096]);
        // Writes are refused with a clear message.
        let e = FileStorage::new(&file).unwrap().write_at(0, b"x").unwrap_err();
        assert!(e.message.contains("read-only"), "{e}");
    }
}

/// A File larger than 4 GiB without holding it in memory: a Blob built from one 1 MiB
/// zero Blob referenced thousands of times. Block 4500's data lies past 4 GiB in the file.
#[wasm_bindgen_test]
fn file_backend_reads_past_4_gib() {
    let o = CreateOptions::new(8 * GIB, Uuid::from_u128(7), Uuid::from_u128(8));
    let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    const N: u32 = 4501;
    for b in 0..N {
        img.set_entry(b, Entry::Data(b)).unwrap();
    }
    let mut meta = img.into_storage().into_vec();
    meta[0x184..0x188].copy_from_slice(&N.to_le_bytes()); // blocks_allocated
    assert_eq!(meta.len() as u64, 2 * MIB);
    let zero_mib: JsValue = Blob::new_with_u8_array_sequence(&Array::of1(&bytes_js(&vec![0u8; MIB as usize]))).unwrap().into();
    let last = pattern(99, MIB as usize);
    let parts = Array::new();
    parts.push(&bytes_js(&meta));
    for _ in 0..N - 1 {
        parts.push(&zero_mib);
    }
    parts.push(&bytes_js(&last));
    let file = File::new_with_blob_sequence(&parts, "big.vdi").unwrap();
    assert_eq!(file.size() as u64, 2 * MIB + N as u64 * MIB);

    let mut wb = Session::new();
    json(&wb.open_file(&file).unwrap());
    let b = json(&wb.block_info(N - 1).unwrap());
    let host = b["host-offset"].as_u64().unwrap();
    assert_eq!(host, 2 * MIB + 4500 * MIB);
    assert!(host > 4 * GIB);
    wb.read_disk(((N - 1) as u64 * MIB) as f64, MIB as u32).unwrap();
    assert!(wb.transfer_buffer()[..MIB as usize] == last[..], "bytes past 4 GiB come back");
    let r = json(&wb.check(&js_sys::Function::new_no_args("")).unwrap());
    assert_eq!(r["corruptions"], 0, "{r}");
    assert_eq!(r["allocated-clusters"], N);
    // Open + block info + one block + the map scan: nowhere near the 4.4 GiB of the file.
    let st = json(&wb.read_stats().unwrap());
    assert!(st["bytes"].as_u64().unwrap() < 2 * MIB, "{st}");
}

#[wasm_bindgen_test]
async fn opfs_backend_reads_and_writes_past_4_gib() {
    let dir = opfs_dir().await;
    let name = "vdi-wasm-test-raw.bin";
    let (_fh, ah) = opfs_handle(&dir, name).await;
    let mut s = OpfsStorage::new(ah);
    s.set_len(0).unwrap();
    let at = 5 * GIB + 3;
    s.write_at(at, b"past four gigabytes").unwrap();
    assert_eq!(vdi::ReadAt::len(&s).unwrap(), at + 19);
    let mut back = [0u8; 19];
    vdi::ReadAt::read_at(&s, at, &mut back).unwrap();
    assert_eq!(&back, b"past four gigabytes");
    let e = vdi::ReadAt::read_at(&s, at + 10, &mut back).unwrap_err();
    assert!(e.past_end, "{e}");
    s.set_len(0).unwrap();
    s.close();
    opfs_remove(&dir, name).await;
}

#[wasm_bindgen_test]
fn js_exceptions_keep_their_storage_kind() {
    use std::io::ErrorKind;
    use vdi_wasm::storage::{dom_error_kind, js_error_kind};
    // OPFS writes over the origin's quota throw a QuotaExceededError: a full disk.
    let quota = js_sys::Error::new("the quota has been exceeded");
    quota.set_name("QuotaExceededError");
    assert_eq!(js_error_kind(&quota.into()), ErrorKind::StorageFull);
    let e = vdi::VdiError::Io { op: "write", offset: 0, len: 1, source: vdi::StorageError::with_kind(ErrorKind::StorageFull, "x") };
    assert_eq!(e.kind(), "no-space");
    assert_eq!(dom_error_kind("NotFoundError"), ErrorKind::NotFound);
    assert_eq!(dom_error_kind("NotAllowedError"), ErrorKind::PermissionDenied);
    assert_eq!(dom_error_kind("InvalidStateError"), ErrorKind::Other);
    assert_eq!(js_error_kind(&JsValue::from_str("plain text")), ErrorKind::Other);
}

#[wasm_bindgen_test]
async fn opfs_backend_holds_a_fixed_image_over_4_gib() {
    let dir = opfs_dir().await;
    let name = "vdi-wasm-test-fixed.vdi";
    let (_fh, ah) = opfs_handle(&dir, name).await;
    let mut wb = Session::new();
    let opts = r#"{"size": 5368709120, "fixed": true, "block_size": 1048576, "layout": "vbox", "comment": "opfs"}"#;
    let info = json(&wb.create_image(opts, Some(ah)).unwrap());
    assert_eq!(info["file"]["backend"], "opfs");
    assert_eq!(info["file"]["length"], 2 * MIB + 5 * GIB);
    assert_eq!(info["info"]["format-specific"]["data"]["image-type"], "fixed");
    // The last block's data sits past 4 GiB in the file.
    let data = pattern(5, MIB as usize);
    let img = wb.image().unwrap();
    img.write_at(5 * GIB - MIB, &data).unwrap();
    img.flush().unwrap();
    wb.close();

    let (_fh, ah) = opfs_handle(&dir, name).await;
    let mut wb = Session::new();
    let info = json(&wb.open_opfs(ah, name).unwrap());
    assert_eq!(info["file"]["writable"], true);
    let b = json(&wb.block_info(5119).unwrap());
    assert_eq!(b["host-offset"], 2 * MIB + 5119 * MIB);
    wb.read_disk((5 * GIB - MIB) as f64, MIB as u32).unwrap();
    assert!(wb.transfer_buffer()[..MIB as usize] == data[..]);
    let r = json(&wb.check(&js_sys::Function::new_no_args("")).unwrap());
    assert_eq!((r["corruptions"].as_u64(), r["leaks"].as_u64()), (Some(0), Some(0)), "{r}");
    assert_eq!(r["allocated-clusters"], 5120);
    // The export's data pieces cover the whole disk (a fixed image has no holes), read from
    // the file front to back in chunks.
    let size = wb.export_begin().unwrap() as u64;
    assert!(wb.export_host_order());
    let (mut data_bytes, mut last) = (0u64, Vec::new());
    loop {
        let p = wb.next_piece().unwrap();
        if p.kind == PieceKind::End {
            break;
        }
        assert_eq!(p.kind, PieceKind::Data);
        assert_eq!(p.len, CHUNK as u64, "contiguous blocks make whole chunks");
        data_bytes += p.len;
        if p.offset + p.len == size {
            last = wb.transfer_buffer()[p.buf_off + (p.len - MIB) as usize..p.buf_off + p.len as usize].to_vec();
        }
    }
    assert_eq!(data_bytes, 5 * GIB);
    assert!(last == data);
    wb.close();
    opfs_remove(&dir, name).await;
}

#[wasm_bindgen_test]
fn errors_reach_js_as_kind_and_message() {
    let mut wb = Session::new();
    let (kind, msg) = error_of(wb.open_bytes(vec![0x42; 1024], "junk").unwrap_err());
    assert_eq!(kind, "bad-signature");
    assert_eq!(msg, "not a VDI image: signature at offset 0x40 is 0x42424242, expected 0xbeda107f");
    // The same error through the File backend.
    let f = file_of(&[&bytes_js(&[0x42; 1024])], "junk.vdi");
    assert_eq!(error_of(wb.open_file(&f).unwrap_err()).0, "bad-signature");

    let (bytes, _) = small_image(Layout::Vbox);
    let (kind, msg) = error_of(wb.open_bytes(bytes[..0x100].to_vec(), "short").unwrap_err());
    assert_eq!(kind, "truncated", "{msg}");
    let mut bad = bytes.clone();
    bad[0x178..0x17C].copy_from_slice(&3000u32.to_le_bytes());
    let (kind, msg) = error_of(wb.open_bytes(bad, "bad").unwrap_err());
    assert_eq!(kind, "invalid-field");
    assert!(msg.contains("block_size = 3000"), "{msg}");

    assert_eq!(error_of(wb.info().unwrap_err()).0, "no-image");
    json(&wb.open_bytes(bytes, "ok").unwrap());
    assert_eq!(error_of(wb.block_info(10).unwrap_err()).0, "invalid-argument");
    assert_eq!(error_of(wb.read_disk((10 * MIB) as f64, 1).unwrap_err()).0, "out-of-range");
    assert_eq!(error_of(wb.export_next().unwrap_err()).0, "invalid-argument");
    // A failed open leaves the open image alone.
    assert_eq!(error_of(wb.open_bytes(vec![0; 60], "bad").unwrap_err()).0, "truncated");
    assert_eq!(json(&wb.info().unwrap())["file"]["name"], "ok");
    let (kind, msg) = error_of(wb.create_image(r#"{"size": 1048576, "block_size": 3000}"#, None).unwrap_err());
    assert_eq!(kind, "invalid-argument");
    assert!(msg.contains("block size 3000"), "{msg}");
    let (_, msg) = error_of(wb.create_image(&format!(r#"{{"size": 1048576, "comment": "{}"}}"#, "é".repeat(200)), None).unwrap_err());
    assert!(msg.contains("comment is 400 bytes"), "{msg}");
    assert_eq!(error_of(wb.create_image(r#"{"size": 0}"#, None).unwrap_err()).0, "invalid-argument");
}

#[wasm_bindgen_test]
fn differencing_image_export_names_the_parent() {
    let (mut bytes, _) = small_image(Layout::Qemu);
    bytes[0x4C..0x50].copy_from_slice(&4u32.to_le_bytes()); // image_type diff
    let parent = Uuid::from_u128(0x1234_5678);
    bytes[0x1A8..0x1B8].copy_from_slice(&parent.to_bytes_le()); // uuid_link
    let mut wb = Session::new();
    let info = json(&wb.open_bytes(bytes, "diff.vdi").unwrap());
    assert!(info["info"]["notes"].to_string().contains("differencing"), "{info}");
    wb.export_begin().unwrap();
    let mut err = None;
    for _ in 0..20 {
        match wb.export_next() {
            Ok(PieceKind::End) => break,
            Ok(_) => {}
            Err(e) => {
                err = Some(error_of(e));
                break;
            }
        }
    }
    let (kind, msg) = err.expect("a FREE block of a diff image cannot be exported alone");
    assert_eq!(kind, "needs-parent");
    assert!(msg.contains(&parent.to_string()), "{msg}");
}

#[wasm_bindgen_test]
fn create_in_memory_keeps_only_metadata() {
    let mut wb = Session::new();
    let opts = r#"{"size": 3145729, "fixed": true, "block_size": 1048576, "layout": "qemu", "comment": "<img src=x>"}"#;
    let info = json(&wb.create_image(opts, None).unwrap());
    let d = &info["info"]["format-specific"]["data"];
    assert_eq!(d["disk-size"], 3 * MIB + 512);
    assert_eq!(d["header-size"], 0x180);
    assert_eq!(d["comment"], "<img src=x>");
    assert_eq!(info["file"]["backend"], "memory");
    let len = info["file"]["length"].as_u64().unwrap();
    assert_eq!(len, 0x400 + 4 * MIB);
    let meta_len = wb.created_meta_len().unwrap();
    assert!(meta_len < 0x1000, "only the header and map are stored: {meta_len}");
    // The saved file is the stored bytes followed by zeros: it opens and checks clean.
    let mut file = vec![0u8; len as usize];
    let img = wb.image().unwrap();
    vdi::ReadAt::read_at(img.storage(), 0, &mut file[..meta_len]).unwrap();
    let r = vdi::check(MemStorage::from_vec(file), &mut NoMonitor).unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.allocated_blocks, 4);
}

#[wasm_bindgen_test]
fn check_reports_findings_and_progress() {
    let (mut bytes, _) = small_image(Layout::Vbox);
    // Block 9 claims block 0's slot (1), block 8 a slot far past the end.
    let bmap = MIB as usize;
    bytes[bmap + 9 * 4..][..4].copy_from_slice(&1u32.to_le_bytes());
    bytes[bmap + 8 * 4..][..4].copy_from_slice(&9u32.to_le_bytes());
    let mut wb = Session::new();
    json(&wb.open_file(&file_of(&[&bytes_js(&bytes)], "bad.vdi")).unwrap());
    let calls = Array::new();
    let record = js_sys::Function::new_with_args("d, t", "this.push([d, t])").bind0(&calls);
    let r = json(&wb.check(&record).unwrap());
    let kinds: Vec<&str> = r["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"duplicate-entry"), "{kinds:?}");
    assert!(kinds.contains(&"entry-past-end"), "{kinds:?}");
    assert!(kinds.contains(&"allocated-mismatch"), "{kinds:?}");
    assert!(r["corruptions"].as_u64().unwrap() >= 2, "{r}");
    assert!(calls.length() >= 1, "progress was reported");
    let last: Array = calls.get(calls.length() - 1).unchecked_into();
    assert_eq!((last.get(0).as_f64(), last.get(1).as_f64()), (Some(10.0), Some(10.0)));
}

#[wasm_bindgen_test]
fn map_cells_aggregate_many_blocks() {
    let o = CreateOptions::new(4 * GIB, Uuid::from_u128(1), Uuid::from_u128(2));
    let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    for b in [0u64, 1, 2, 100, 4095] {
        img.write_at(b * MIB, &[1]).unwrap();
    }
    img.set_entry(70, Entry::Zero).unwrap();
    let mut wb = Session::new();
    json(&wb.open_bytes(img.into_storage().into_vec(), "agg.vdi").unwrap());
    let c = wb.map_cells(64).unwrap();
    assert_eq!((c.cells(), c.per(), c.blocks()), (64, 64, 4096));
    assert_eq!(&c.data_counts()[..3], &[3, 1, 0]);
    assert_eq!(c.data_counts()[63], 1);
    assert_eq!(c.zero_counts()[1], 1);
    assert_eq!(c.mean_slots()[0], 1.0); // slots 0, 1, 2
    assert!(c.mean_slots()[2].is_nan());
    let s = json(&c.summary());
    assert_eq!((s["data"].as_u64(), s["zero"].as_u64(), s["free"].as_u64()), (Some(5), Some(1), Some(4090)));
    let r = json(&wb.range_info(64, 128).unwrap());
    assert_eq!((r["data"].as_u64(), r["zero"].as_u64()), (Some(1), Some(1)));
    assert_eq!(r["host-min"], 2 * MIB + 3 * MIB); // block 100 got slot 3
    assert_eq!(wb.map_cells(1).unwrap().cells(), 4096);
    assert_eq!(error_of(wb.map_cells(0).unwrap_err()).0, "invalid-argument");
}

/// Blocks with a per-block prefix (block_extra), allocated in reverse order, and a disk whose
/// last block is partial: the host-order export still matches the engine's export_raw.
#[wasm_bindgen_test]
fn export_handles_block_extra_partial_blocks_and_random_slots() {
    let bs = MIB as usize;
    let extra = 512usize;
    let mut o = CreateOptions::new(6 * MIB + 1024, Uuid::from_u128(3), Uuid::from_u128(4));
    o.layout = Layout::Qemu;
    let img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
    let mut bytes = img.into_storage().into_vec();
    let data_off = u32::from_le_bytes(bytes[0x158..0x15C].try_into().unwrap()) as usize;
    bytes[0x17C..0x180].copy_from_slice(&(extra as u32).to_le_bytes()); // block_extra
    // Blocks 6 (partial), 4, 1, 0 get slots 0..4: reverse and scattered.
    let blocks = [6u32, 4, 1, 0];
    for (slot, &b) in blocks.iter().enumerate() {
        bytes[0x200 + b as usize * 4..][..4].copy_from_slice(&(slot as u32).to_le_bytes());
        let at = data_off + slot * (bs + extra);
        bytes.resize(at + bs + extra, 0);
        bytes[at..at + extra].fill(0xEE); // the prefix, never part of the disk
        let d = pattern(b as u64 + 10, bs);
        bytes[at + extra..at + extra + bs].copy_from_slice(&d);
    }
    bytes[0x184..0x188].copy_from_slice(&(blocks.len() as u32).to_le_bytes());
    let want = engine_raw(&bytes);
    assert_eq!(want.len() as u64, 6 * MIB + 1024);
    let mut wb = Session::new();
    json(&wb.open_bytes(bytes.clone(), "extra.vdi").unwrap());
    assert!(export_all(&mut wb) == want);
    // Through a File too.
    json(&wb.open_file(&file_of(&[&bytes_js(&bytes)], "extra.vdi")).unwrap());
    assert!(export_all(&mut wb) == want);
    assert!(export_planned(&mut wb, &bytes) == want);
    // A block whose slot lies past the end of the file: the engine's own error.
    let mut cut = bytes.clone();
    cut.truncate(cut.len() - 1);
    json(&wb.open_bytes(cut, "cut.vdi").unwrap());
    wb.export_begin().unwrap();
    let e = loop {
        match wb.export_next() {
            Ok(PieceKind::End) => panic!("a block past the end must fail the export"),
            Ok(_) => {}
            Err(e) => break error_of(e),
        }
    };
    assert_eq!(e.0, "block-past-end", "{}", e.1);
    wb.export_begin().unwrap();
    let e = loop {
        match wb.export_plan_next() {
            Ok(p) if p.is_empty() => panic!("planning a block past the end must fail"),
            Ok(_) => {}
            Err(e) => break error_of(e),
        }
    };
    assert_eq!(e.0, "block-past-end", "{}", e.1);
    // A differencing image exports in disk order: planning is refused.
    let (mut diff, _) = small_image(Layout::Qemu);
    diff[0x4C..0x50].copy_from_slice(&4u32.to_le_bytes());
    json(&wb.open_bytes(diff, "diff.vdi").unwrap());
    wb.export_begin().unwrap();
    assert!(!wb.export_host_order());
    assert_eq!(error_of(wb.export_plan_next().unwrap_err()).0, "invalid-argument");
}

#[wasm_bindgen_test]
fn backend_kinds() {
    let (bytes, _) = small_image(Layout::Vbox);
    let b = Backend::File(FileStorage::new(&file_of(&[&bytes_js(&bytes)], "x")).unwrap());
    assert_eq!((b.kind(), b.writable()), ("file", false));
    assert!(vdi::probe(&b));
}
