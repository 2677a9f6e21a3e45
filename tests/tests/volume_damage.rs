//! Damaged filesystems end in a named error quickly, and reads stay proportional to what
//! is asked: images made by mkfs.ext4 -d and mkfs.vfat + mcopy, then broken at places
//! debugfs (or the engine's own extents, checked elsewhere against the tools) points to.
//! One test per binary would be needed for a global allocator; here the reads are counted.

use std::fs;
use std::process::Command;

use vdi::volume::{Entry, Filesystem, PartitionTable};
use vdi::VdiError;
use vdi_tests::*;


fn sh(cmd: &str, args: &[&str]) -> String {
    ok(Command::new(cmd).args(args).env("MTOOLS_SKIP_CHECK", "1"))
}

/// An ext4 image (4 KiB blocks) holding /big.bin (2 MiB) and /dir/small.txt, and inode
/// numbers from debugfs.
fn ext_image() -> (Vec<u8>, tempfile::TempDir) {
    let work = scratch();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("big.bin"), pattern(3, 2 << 20)).unwrap();
    fs::write(src.join("dir/small.txt"), b"small\n").unwrap();
    let img = p(&work, "ext.img");
    sh("mkfs.ext4", &["-q", "-F", "-b", "4096", "-d", src.to_str().unwrap(), &img, "8M"]);
    (fs::read(&img).unwrap(), work)
}

/// `debugfs -R CMD` on `bytes` (written to a scratch file).
fn debugfs(work: &tempfile::TempDir, bytes: &[u8], cmd: &str) -> String {
    let f = p(work, "probe.img");
    fs::write(&f, bytes).unwrap();
    sh("debugfs", &["-R", cmd, &f])
}

/// Byte offset of inode `path`'s on-disk inode, from `debugfs imap`.
fn inode_at(work: &tempfile::TempDir, bytes: &[u8], path: &str) -> usize {
    let out = debugfs(work, bytes, &format!("imap {path}"));
    let block: usize = out.split("located at block ").nth(1).unwrap().split(',').next().unwrap().trim().parse().unwrap();
    let off = out.split("offset ").nth(1).unwrap().trim();
    block * 4096 + usize::from_str_radix(off.trim_start_matches("0x"), 16).unwrap()
}

fn open(disk: &mut Counted) -> vdi::Result<Filesystem> {
    let t = PartitionTable::read(disk)?;
    let part = t.select(None)?.clone();
    Filesystem::open(disk, &part)
}

fn read_all(fs: &mut Filesystem, disk: &mut Counted, path: &str) -> vdi::Result<Vec<u8>> {
    let e: Entry = fs.lookup(disk, path)?;
    let mut v = vec![0u8; e.size as usize];
    fs.read(disk, &e, 0, &mut v)?;
    Ok(v)
}

fn damaged(r: vdi::Result<impl std::fmt::Debug>, place: &str) -> String {
    let e: VdiError = r.expect_err("a damaged structure");
    assert_eq!(e.kind(), "damaged", "{e}");
    let text = e.to_string();
    assert!(text.contains(place), "{text} should name {place}");
    text
}

#[test]
fn reads_are_proportional_to_what_is_asked() {
    let (bytes, _w) = ext_image();
    let mut disk = Counted::new(bytes);
    let mut fs = open(&mut disk).unwrap();
    // Detection reads 68 KiB per candidate (sector 0's whole-disk probe included).
    assert!(disk.read.replace(0) <= 3 * 0x11000);
    let big = fs.lookup(&mut disk, "/big.bin").unwrap();
    let mut buf = [0u8; 100];
    disk.read.set(0);
    fs.read(&mut disk, &big, 1 << 20, &mut buf).unwrap();
    assert_eq!(&buf[..], &pattern(3, 2 << 20)[1 << 20..(1 << 20) + 100]);
    // The group descriptor, the inode and the 100 bytes.
    let n = disk.read.get();
    assert!(n <= 512, "reading 100 bytes read {n}");
    disk.read.set(0);
    let x = fs.extents(&mut disk, &big, 0, 1).unwrap();
    assert_eq!(x.len(), 1);
    assert!(disk.read.get() <= 512);
}

#[test]
fn a_broken_extent_header_names_the_inode() {
    let (mut bytes, w) = ext_image();
    let at = inode_at(&w, &bytes, "/big.bin");
    let ino = debugfs(&w, &bytes, "stat /big.bin").split("Inode: ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    bytes[at + 0x28] = 0; // i_block: the extent header's magic
    let mut disk = Counted::new(bytes);
    let mut fs = open(&mut disk).unwrap();
    let t = damaged(read_all(&mut fs, &mut disk, "/big.bin"), &format!("inode {ino} extent root"));
    assert!(t.contains("expected 0xf30a"), "{t}");
}

#[test]
fn an_extent_outside_the_filesystem_is_refused() {
    let (mut bytes, w) = ext_image();
    let at = inode_at(&w, &bytes, "/big.bin");
    // The first extent's physical start (i_block + 12 header + 8): far past the 2048 blocks.
    bytes[at + 0x28 + 20..at + 0x28 + 24].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let mut disk = Counted::new(bytes);
    let mut fs = open(&mut disk).unwrap();
    damaged(read_all(&mut fs, &mut disk, "/big.bin"), "lie outside the 2048 blocks");
}

#[test]
fn a_zero_length_directory_entry_is_refused() {
    let (mut bytes, w) = ext_image();
    let block: usize = debugfs(&w, &bytes, "bmap /dir 0").trim().parse().unwrap();
    // The first entry ("."): rec_len 0 would loop forever if believed.
    bytes[block * 4096 + 4..block * 4096 + 6].fill(0);
    let mut disk = Counted::new(bytes);
    let mut fs = open(&mut disk).unwrap();
    damaged(fs.list_path(&mut disk, "/dir"), "entry length 0");
    // The rest of the filesystem still reads.
    assert_eq!(read_all(&mut fs, &mut disk, "/big.bin").unwrap(), pattern(3, 2 << 20));
}

#[test]
fn absurd_superblock_and_huge_directory_sizes_are_refused() {
    let (bytes, w) = ext_image();
    let mut b = bytes.clone();
    b[1024 + 0x28..1024 + 0x2c].copy_from_slice(&u32::MAX.to_le_bytes()); // s_inodes_per_group
    damaged(open(&mut Counted::new(b)), "superblock");
    // A directory claiming 2^40 bytes (of holes) is refused, not walked.
    let mut b = bytes;
    let at = inode_at(&w, &b, "/dir");
    b[at + 0x6c..at + 0x70].copy_from_slice(&256u32.to_le_bytes()); // i_size_high
    let mut disk = Counted::new(b);
    let mut fs = open(&mut disk).unwrap();
    let e = fs.list_path(&mut disk, "/dir").unwrap_err();
    assert_eq!(e.kind(), "limit", "{e}");
}

/// A FAT16 image with /big.bin of several clusters.
fn fat_image() -> Vec<u8> {
    let work = scratch();
    let big = p(&work, "big.bin");
    fs::write(&big, pattern(5, 300_000)).unwrap();
    let img = p(&work, "fat.img");
    sh("mkfs.vfat", &["-C", "-F", "16", &img, "20480"]);
    sh("mcopy", &["-i", &img, &big, "::/big.bin"]);
    fs::read(&img).unwrap()
}

#[test]
fn a_looping_or_broken_fat_chain_ends_in_a_named_error() {
    let bytes = fat_image();
    let mut disk = Counted::new(bytes.clone());
    let mut fs = open(&mut disk).unwrap();
    let big = fs.lookup(&mut disk, "/BIG.BIN").unwrap();
    assert_eq!(read_all(&mut fs, &mut disk, "/big.bin").unwrap(), pattern(5, 300_000));
    let first = big.id as usize;
    let fat = u16::from_le_bytes([bytes[14], bytes[15]]) as usize * 512;
    // The first cluster points to itself.
    let mut b = bytes.clone();
    b[fat + 2 * first..fat + 2 * first + 2].copy_from_slice(&(first as u16).to_le_bytes());
    let mut disk = Counted::new(b);
    let mut fs = open(&mut disk).unwrap();
    damaged(read_all(&mut fs, &mut disk, "/big.bin"), &format!("cluster {first} points to itself"));
    // The chain ends early (an end mark on the first cluster).
    let mut b = bytes.clone();
    b[fat + 2 * first..fat + 2 * first + 2].copy_from_slice(&0xffffu16.to_le_bytes());
    let mut disk = Counted::new(b);
    let mut fs = open(&mut disk).unwrap();
    damaged(read_all(&mut fs, &mut disk, "/big.bin"), "ends before byte");
    // A pointer to cluster 1 (reserved).
    let mut b = bytes;
    b[fat + 2 * first..fat + 2 * first + 2].copy_from_slice(&1u16.to_le_bytes());
    let mut disk = Counted::new(b);
    let mut fs = open(&mut disk).unwrap();
    damaged(read_all(&mut fs, &mut disk, "/big.bin"), "cluster 1 is outside");
}

#[test]
fn a_file_whose_first_cluster_is_past_the_partition_has_no_extents() {
    // Fuzzer-found: a FAT cut short; a file's first cluster lies past the cut, and its
    // extents pointed there.
    let bytes = fat_image();
    let le16 = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    // Cut where the data area starts: reserved sectors, the FATs, the fixed root directory.
    let data = (le16(14) + bytes[16] as usize * le16(22)) * 512 + le16(17) * 32;
    let mut disk = Counted::new(bytes[..data].to_vec());
    let mut fs = open(&mut disk).unwrap();
    let big = fs.lookup(&mut disk, "/big.bin").unwrap();
    damaged(fs.extents(&mut disk, &big, 0, 4), "is outside 2..");
}

#[test]
fn ntfs_records_failing_their_checks_are_named() {
    let work = scratch();
    let img = p(&work, "ntfs.img");
    fs::File::create(&img).unwrap().set_len(4 << 20).unwrap();
    sh("mkntfs", &["-q", "-F", "-Q", &img]);
    let big = p(&work, "big.bin");
    fs::write(&big, pattern(9, 100_000)).unwrap();
    sh("ntfscp", &["-q", &img, &big, "big.bin"]);
    let bytes = fs::read(&img).unwrap();
    let mut disk = Counted::new(bytes.clone());
    assert_eq!(read_all(&mut open(&mut disk).unwrap(), &mut disk, "/big.bin").unwrap(), pattern(9, 100_000));
    let id = open(&mut disk).unwrap().lookup(&mut disk, "/big.bin").unwrap().id as usize;
    let cluster = u16::from_le_bytes([bytes[11], bytes[12]]) as usize * bytes[13] as usize;
    let mft = u64::from_le_bytes(bytes[0x30..0x38].try_into().unwrap()) as usize * cluster;
    let rec = mft + id * 1024;
    // The last two bytes of the record's first sector no longer match its update sequence.
    let mut b = bytes.clone();
    b[rec + 510] ^= 0xff;
    let mut disk = Counted::new(b);
    let mut fs = open(&mut disk).unwrap();
    damaged(read_all(&mut fs, &mut disk, "/big.bin"), &format!("MFT record {id}: sector 0 fails its update-sequence check"));
    let mut b = bytes;
    b[rec..rec + 4].copy_from_slice(b"BAAD");
    let mut disk = Counted::new(b);
    let mut fs = open(&mut disk).unwrap();
    damaged(fs.list_path(&mut disk, "/"), &format!("MFT record {id}: no FILE signature"));
}

#[test]
fn truncated_filesystems_name_what_is_past_the_end() {
    let (bytes, _w) = ext_image();
    // Cut after the first 64 KiB: the superblock is there, the root's directory block is not.
    let mut disk = Counted::new(bytes[..64 << 10].to_vec());
    let t = PartitionTable::read(&mut disk).unwrap();
    assert_eq!(t.partitions[0].size, 64 << 10);
    let mut fs = Filesystem::open(&mut disk, &t.partitions[0]).unwrap();
    let t = damaged(fs.list_path(&mut disk, "/"), "past the end of the 65536-byte filesystem");
    assert!(t.starts_with("damaged ext4: "), "{t}");
}
