//! Random operation sequences on in-memory images and differencing chains, compared with a
//! plain byte vector after every step: write, read, compact, resize, discard, repair,
//! reopen, snapshot (a new diff on top), commit, stream, compact of the top. A clean start
//! stays clean (check) and reads as the model; an operation that refuses changes nothing.
//! With damage applied to the start image, nothing may panic or allocate without bound.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vdi::{check, create, repair, Chain, CreateOptions, Layout, MemStorage, NoMonitor, Uuid, VdiImage};
use vdi_fuzz::Capped;

#[derive(Arbitrary, Debug)]
struct Setup {
    /// Disk size in 512-byte sectors, 1..=512.
    sectors: u16,
    /// Block size: 512 << (n % 8) (512 bytes .. 64 KiB).
    block_shift: u8,
    qemu_layout: bool,
    fixed: bool,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Write { at: u32, len: u16, seed: u8 },
    WriteZeros { at: u32, len: u16 },
    Read { at: u32, len: u16 },
    Compact { free: bool },
    Resize { sectors: u16 },
    Discard { at: u32, len: u32 },
    Repair,
    Reopen,
    Check,
    Snapshot,
    Commit { keep_top: bool },
    Stream,
    CompactTop,
}

#[derive(Arbitrary, Debug)]
struct Input {
    setup: Setup,
    ops: Vec<Op>,
    /// (offset, byte) edits applied to the start image: chaos mode, no model.
    damage: Vec<(u16, u8)>,
}

struct World {
    layers: Vec<VdiImage<MemStorage>>,
    model: Vec<u8>,
    next_id: u128,
}

impl World {
    fn chain(&mut self) -> Chain<MemStorage> {
        let mut layers = std::mem::take(&mut self.layers);
        let top = layers.pop().expect("a layer");
        Chain::resolve(top, layers).expect("our own chain resolves")
    }
    fn put(&mut self, c: Chain<MemStorage>) {
        self.layers = c.into_layers();
    }
    fn top(&mut self) -> &mut VdiImage<MemStorage> {
        self.layers.last_mut().expect("a layer")
    }
    fn reopen(&mut self) {
        let layers = std::mem::take(&mut self.layers);
        self.layers = layers.into_iter().map(|l| VdiImage::open(l.into_storage()).expect("reopens")).collect();
    }
    fn read_all(&mut self) -> Vec<u8> {
        let mut c = self.chain();
        let mut buf = vec![0u8; c.virtual_size() as usize];
        c.read_at(0, &mut buf).expect("the chain reads");
        self.put(c);
        buf
    }
    fn assert_model(&mut self, what: &str) {
        let got = self.read_all();
        assert_eq!(got.len(), self.model.len(), "{what}: size");
        if let Some(i) = got.iter().zip(&self.model).position(|(a, b)| a != b) {
            panic!("{what}: disk differs from the model at byte {i}");
        }
        for l in &self.layers {
            let r = check(l.storage(), &mut NoMonitor).unwrap();
            assert!(r.is_clean(), "{what}: {:?}", r.findings);
        }
    }
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| seed.wrapping_add((i * 31 % 253) as u8) | 1).collect()
}

const MAX_SIZE: u64 = 1024 * 512;

fn run(input: Input) {
    let s = &input.setup;
    let bs = 512u32 << (s.block_shift % 8);
    let size = (s.sectors as u64 % 512 + 1) * 512;
    let mut o = CreateOptions::new(size, Uuid::from_u128(1), Uuid::from_u128(2));
    o.block_size = bs;
    o.layout = if s.qemu_layout { Layout::Qemu } else { Layout::Vbox };
    o.fixed = s.fixed;
    let img = create(MemStorage::new(), &o, &mut NoMonitor).expect("create");
    if !input.damage.is_empty() {
        chaos(img, &input);
        return;
    }
    let mut w = World { layers: vec![img], model: vec![0u8; size as usize], next_id: 10 };
    for op in input.ops.iter().take(16) {
        let size = w.model.len() as u64;
        match *op {
            Op::Write { at, len, seed } => {
                let at = at as u64 % (size + 1);
                let n = (len as u64).min(size - at) as usize;
                let d = pattern(seed, n);
                let mut c = w.chain();
                let r = c.write_at(at, &d);
                w.put(c);
                r.expect("write");
                w.model[at as usize..at as usize + n].copy_from_slice(&d);
            }
            Op::WriteZeros { at, len } => {
                let at = at as u64 % (size + 1);
                let n = (len as u64).min(size - at) as usize;
                let mut c = w.chain();
                let r = c.write_at(at, &vec![0u8; n]);
                w.put(c);
                r.expect("write zeros");
                w.model[at as usize..at as usize + n].fill(0);
            }
            Op::Read { at, len } => {
                let at = at as u64 % (size + 1);
                let n = (len as u64).min(size - at) as usize;
                let mut buf = vec![0xEEu8; n];
                let mut c = w.chain();
                let r = c.read_at(at, &mut buf);
                w.put(c);
                r.expect("read");
                assert!(buf[..] == w.model[at as usize..at as usize + n], "read {at}+{n}");
                continue;
            }
            Op::Compact { free } => {
                let _ = w.top().compact(free, &mut NoMonitor);
            }
            Op::Resize { sectors } => {
                let new = (sectors as u64 % 1024 + 1) * 512;
                if w.layers.len() == 1 && w.top().resize(new, &mut NoMonitor).is_ok() {
                    w.model.resize(new as usize, 0);
                }
            }
            Op::Discard { at, len } => {
                let at = at as u64 % (size + 1);
                let n = (len as u64).min(size - at);
                if w.layers.len() == 1 && w.top().discard(at, n, &mut NoMonitor).is_ok() {
                    w.model[at as usize..(at + n) as usize].fill(0);
                }
            }
            Op::Repair => {
                let top = w.layers.pop().unwrap().into_storage();
                let (rep, s) = repair(top, false, &mut NoMonitor).expect("repair of a clean image");
                assert!(rep.actions.is_empty(), "repair acted on a clean image: {:?}", rep.actions);
                w.layers.push(VdiImage::open(s).expect("reopens"));
            }
            Op::Reopen => w.reopen(),
            Op::Check => {}
            Op::Snapshot => {
                if w.layers.len() >= 4 {
                    continue;
                }
                let id = w.next_id;
                w.next_id += 2;
                let o = CreateOptions::diff_of(w.top().header(), Uuid::from_u128(id), Uuid::from_u128(id + 1));
                let d = create(MemStorage::new(), &o, &mut NoMonitor).expect("create diff");
                w.layers.push(d);
            }
            Op::Commit { keep_top } => {
                if w.layers.len() < 2 {
                    continue;
                }
                let id = w.next_id;
                w.next_id += 1;
                let mut c = w.chain();
                let r = c.commit(Uuid::from_u128(id), keep_top, &mut NoMonitor);
                w.put(c);
                r.expect("commit");
            }
            Op::Stream => {
                if w.layers.len() < 2 {
                    continue;
                }
                let mut c = w.chain();
                let r = c.stream(&mut NoMonitor);
                w.put(c);
                r.expect("stream");
            }
            Op::CompactTop => {
                let mut c = w.chain();
                let r = c.compact_top(&mut NoMonitor);
                w.put(c);
                let _ = r;
            }
        }
        w.assert_model(&format!("{op:?}"));
        assert!(w.model.len() as u64 <= MAX_SIZE);
    }
    w.reopen();
    w.assert_model("final reopen");
}

/// Damaged start: every operation may fail, none may panic.
fn chaos(img: VdiImage<MemStorage>, input: &Input) {
    let mut bytes = img.into_storage().into_vec();
    for &(at, v) in &input.damage {
        let n = bytes.len().max(1);
        if let Some(b) = bytes.get_mut(at as usize % n) {
            *b = v;
        }
    }
    let storage = Capped { inner: MemStorage::from_vec(bytes), cap: 64 << 20 };
    let Ok(mut img) = VdiImage::open(storage) else { return };
    for op in input.ops.iter().take(24) {
        let size = img.virtual_size();
        match *op {
            Op::Write { at, len, seed } => {
                let at = at as u64 % (size + 1);
                let _ = img.write_at(at, &pattern(seed, (len as u64).min(size - at) as usize));
            }
            Op::WriteZeros { at, len } => {
                let at = at as u64 % (size + 1);
                let _ = img.write_at(at, &vec![0u8; (len as u64).min(size - at) as usize]);
            }
            Op::Read { at, len } => {
                let at = at as u64 % (size + 1);
                let _ = img.read_at(at, &mut vec![0u8; (len as u64).min(size - at) as usize]);
            }
            Op::Compact { free } => {
                let _ = img.compact(free, &mut NoMonitor);
            }
            Op::Resize { sectors } => {
                let _ = img.resize((sectors as u64 % 2048 + 1) * 512, &mut NoMonitor);
            }
            Op::Discard { at, len } => {
                let at = at as u64 % (size + 1);
                let _ = img.discard(at, (len as u64).min(size - at), &mut NoMonitor);
            }
            Op::Repair => {
                let s = img.into_storage();
                let keep = s.clone();
                img = match repair(s, false, &mut NoMonitor) {
                    Ok((_, s)) => match VdiImage::open(s) {
                        Ok(i) => i,
                        Err(_) => return,
                    },
                    Err(_) => match VdiImage::open(keep) {
                        Ok(i) => i,
                        Err(_) => return,
                    },
                };
            }
            Op::Reopen | Op::Snapshot | Op::Commit { .. } | Op::Stream | Op::CompactTop => {
                img = match VdiImage::open(img.into_storage()) {
                    Ok(i) => i,
                    Err(_) => return,
                };
            }
            Op::Check => {
                let _ = vdi::check_image(&mut img, &mut NoMonitor);
            }
        }
    }
}

fuzz_target!(|input: Input| run(input));
