//! A small page cache for reading inside a disk. A filesystem reader asks for many small
//! pieces (an inode, a directory block, a FAT sector), and in the browser every read of a
//! dropped `File` is a round trip of milliseconds: listing a folder of 300 files made 600
//! of them. Reads smaller than a page are served from 64 KiB pages of the disk, at most
//! [`PAGES`] kept (least recently used goes first); larger reads (file data) go straight to
//! the disk. The cache belongs to one disk and is dropped with what was read of it (an
//! edit of the disk drops it too: see `Session::writable_img`).

use vdi::volume::ReadDisk;
use vdi::{Disk, Result};

/// Bytes of a page.
pub const PAGE: u64 = 64 << 10;
/// Pages kept (4 MiB).
pub const PAGES: usize = 64;

/// The pages kept: (page number, bytes, last use).
#[derive(Debug, Default)]
pub struct PageCache {
    pages: Vec<(u64, Vec<u8>, u64)>,
    clock: u64,
    /// Reads of the disk made to fill pages, and reads that bypassed the cache.
    pub misses: u64,
}

impl PageCache {
    fn page(&mut self, disk: &mut dyn Disk, n: u64) -> Result<&[u8]> {
        self.clock += 1;
        let now = self.clock;
        if let Some(i) = self.pages.iter().position(|p| p.0 == n) {
            self.pages[i].2 = now;
            return Ok(&self.pages[i].1);
        }
        let start = n * PAGE;
        let len = PAGE.min(disk.virtual_size().saturating_sub(start)) as usize;
        let mut bytes = if self.pages.len() >= PAGES {
            let oldest = (0..self.pages.len()).min_by_key(|&i| self.pages[i].2).expect("pages kept");
            self.pages.swap_remove(oldest).1
        } else {
            Vec::new()
        };
        bytes.resize(len, 0);
        disk.read_at(start, &mut bytes)?;
        self.misses += 1;
        self.pages.push((n, bytes, now));
        Ok(&self.pages.last().expect("just pushed").1)
    }
}

/// A disk read through a [`PageCache`].
pub struct Cached<'a> {
    /// The disk.
    pub disk: &'a mut dyn Disk,
    /// Its pages.
    pub cache: &'a mut PageCache,
}

impl ReadDisk for Cached<'_> {
    fn read_disk(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.saturating_add(buf.len() as u64);
        if buf.len() as u64 >= PAGE || end > self.disk.virtual_size() {
            // Large reads, and reads past the end (the disk names the error), go straight.
            self.cache.misses += 1;
            return self.disk.read_at(offset, buf);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let page = self.cache.page(self.disk, at / PAGE)?;
            let from = (at % PAGE) as usize;
            let n = (page.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[from..from + n]);
            done += n;
        }
        Ok(())
    }

    fn disk_size(&self) -> u64 {
        self.disk.virtual_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdi::{create, CreateOptions, MemStorage, NoMonitor, Uuid};

    #[test]
    fn reads_equal_the_disk_and_pages_are_reused() {
        let size = 3 * PAGE + 1000;
        let mut img = create(MemStorage::new(), &CreateOptions::new(size, Uuid::from_u128(1), Uuid::from_u128(2)), &mut NoMonitor).unwrap();
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        img.write_at(0, &data).unwrap();
        let mut cache = PageCache::default();
        let mut c = Cached { disk: &mut img, cache: &mut cache };
        for (off, len) in [(0u64, 10usize), (PAGE - 5, 10), (PAGE * 3 + 990, 10), (5, 3 * PAGE as usize), (100, 200)] {
            let mut buf = vec![0u8; len];
            c.read_disk(off, &mut buf).unwrap();
            assert_eq!(buf, data[off as usize..off as usize + len], "{off}+{len}");
        }
        // Pages 0, 1 and 3 were read once each; the large read went straight.
        assert_eq!(cache.misses, 4);
        let mut c = Cached { disk: &mut img, cache: &mut cache };
        let end = c.disk_size();
        assert!(c.read_disk(end - 5, &mut [0u8; 10]).is_err(), "past the end is the disk's error");
    }

    #[test]
    fn at_most_pages_are_kept() {
        let size = (PAGES as u64 + 10) * PAGE;
        let mut img = create(MemStorage::new(), &CreateOptions::new(size, Uuid::from_u128(1), Uuid::from_u128(2)), &mut NoMonitor).unwrap();
        let mut cache = PageCache::default();
        let mut c = Cached { disk: &mut img, cache: &mut cache };
        for p in 0..PAGES as u64 + 10 {
            c.read_disk(p * PAGE, &mut [0u8; 4]).unwrap();
        }
        c.read_disk(0, &mut [0u8; 4]).unwrap(); // page 0 went first
        assert_eq!(cache.pages.len(), PAGES);
        assert_eq!(cache.misses, PAGES as u64 + 11);
    }
}
