//! The hasher of every map whose keys a remote peer can choose: addresses,
//! ports and 4-tuples of connections (the tracker, the dashboard model).
//!
//! An unkeyed hash lets anyone who can open connections to the host pick
//! (address, port) pairs that all land in one bucket; each lookup then walks
//! the whole chain and the tracer falls behind the kernel's ring buffer. The
//! hash is therefore keyed: each map gets its own seed, drawn from a
//! per-process random seed, so colliding keys cannot be computed offline.
//!
//! `foldhash::quality::RandomState` was chosen after comparing foldhash,
//! on the tracker's own keys, with std's SipHash-1-3 and `ahash` (see
//! `benches/pipeline.rs`, group `hasher`). Its `fast` variant hashes a u64
//! with one multiply by a per-process seed, and for some seeds the low
//! bits, which pick the bucket, hardly change between keys that differ in
//! their middle bits: 64 socket addresses 0x40 apart fell into 7 to 16 of
//! 256 buckets in one process in 40. The quality variant's final fold
//! spreads them like random keys under every seed, for one more multiply.
//! Its seed resists keys prepared in advance; it does not claim to resist
//! an attacker who reads hash values back, and nothing here exposes them
//! (map order is never printed unsorted).

use std::collections::HashMap;

/// Builds a keyed hasher; every `default()` draws a fresh per-map seed.
pub type KeyedState = foldhash::quality::RandomState;

/// A hash map keyed by a per-process random seed.
pub type FastMap<K, V> = HashMap<K, V, KeyedState>;

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, hash::BuildHasher as _};

    use super::*;

    #[test]
    fn equal_keys_hash_equal_and_neighbours_differ() {
        let b = KeyedState::default();
        assert_eq!(
            b.hash_one(0xffff_8881_2aed_d340u64),
            b.hash_one(0xffff_8881_2aed_d340u64)
        );
        // Slab neighbours (sockets 0x40 apart) spread over the low bits
        // like random keys (about 57 of 64 distinct in 256 buckets).
        let low: HashSet<u64> = (0..64u64)
            .map(|i| b.hash_one(0xffff_8881_2aed_0000 + i * 0x40) & 0xff)
            .collect();
        assert!(low.len() > 40, "{}", low.len());
    }

    #[test]
    fn the_seed_makes_hashes_unpredictable() {
        let (a, b) = (KeyedState::default(), KeyedState::default());
        let key = ("2001:db8::1".parse::<std::net::IpAddr>().ok(), 443u16);
        assert_ne!(a.hash_one(key), b.hash_one(key), "two maps, two seeds");
        // Keys that share their low 8 bits (one bucket of a 256-bucket
        // table) under one seed spread under another.
        let keys: Vec<(u128, u16)> = (0..50_000u32)
            .map(|i| (0x2001_0db8 << 96 | u128::from(i), 40_000))
            .collect();
        let same: Vec<_> = keys.iter().filter(|k| a.hash_one(k) & 0xff == 0).collect();
        assert!(same.len() > 100, "{}", same.len());
        let spread: HashSet<u64> = same.iter().map(|k| b.hash_one(k) & 0xff).collect();
        assert!(spread.len() > same.len().min(256) / 2, "{}", spread.len());
    }
}
