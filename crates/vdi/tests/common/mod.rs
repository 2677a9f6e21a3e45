//! What several engine test files share.

#[allow(dead_code)] // (each test file uses part of it)
pub mod crash;

/// `len` bytes of a xorshift pattern seeded by `seed` (distinct seeds, distinct bytes).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
