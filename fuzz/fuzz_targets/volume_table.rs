//! Partition tables and detection: `PartitionTable::read` over any bytes never panics, never
//! reads past the disk (a read past it would be an `out-of-range` error, which must not
//! happen: tables are clipped), and what it returns lies inside the disk, numbered as Linux
//! numbers partitions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdi::volume::{PartitionTable, Scheme};

fuzz_target!(|data: &[u8]| {
    let mut disk = data.to_vec();
    let t = PartitionTable::read(&mut disk).expect("reading bytes in memory never fails");
    let size = data.len() as u64;
    let mut numbers = vec![];
    for p in &t.partitions {
        assert!(p.size > 0 || p.number == 0 || p.start < size);
        assert!(p.start.checked_add(p.size).is_some_and(|e| e <= size), "{p:?} past the {size}-byte disk");
        match t.scheme {
            Scheme::Mbr => assert!((1..=4).contains(&p.number) || p.number >= 5),
            Scheme::None => assert_eq!(p.number, 0),
            Scheme::Gpt | Scheme::HybridMbr => assert!(p.number >= 1),
        }
        numbers.push(p.number);
    }
    let mut sorted = numbers.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), numbers.len(), "each number once: {numbers:?}");
    let _ = t.select(None);
});
