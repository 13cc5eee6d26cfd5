//! Hash tables for the per-socket state kept by the tracker and the
//! dashboard model: up to 10^5 small entries each, bounded, and part of the
//! memory bound (docs/benchmarks.md, "Memory of the dashboard's pipeline").
//!
//! `std`'s map stores key and value in every bucket, and a table with 7/8
//! of its buckets used doubles: at 100,000 entries of 112 bytes it holds
//! 131,072 buckets and, while growing, the old table next to the new one.
//! Here the buckets hold a `u32` index into one dense vector of entries:
//! growing the table moves 4 bytes per entry, the entries only move with
//! the vector itself, and its pages are touched only as far as it is full.
//! [`Lru`] adds least-recently-used order as two `u32` links per entry,
//! with no allocation per entry (the `lru` crate boxes every node).
//!
//! Removal swaps the last entry into the hole, so iteration order is
//! insertion order only until the first removal: callers sort what they
//! show.

use std::{
    hash::{BuildHasher as _, Hash},
    num::NonZeroUsize,
};

use hashbrown::HashTable;

use crate::util::fasthash::KeyedState;

/// No entry (end of an [`Lru`] list).
const NIL: u32 = u32::MAX;

fn index(i: usize) -> u32 {
    // Callers bound their tables far below 2^32 entries (the largest is
    // 131,072); an index past it would be a bug, not an input.
    u32::try_from(i).unwrap_or(NIL)
}

/// A hash map of dense entries, keyed by a per-process random seed
/// ([`KeyedState`]).
#[derive(Debug, Clone)]
pub struct DenseMap<K, V> {
    index: HashTable<u32>,
    entries: Vec<(K, V)>,
    hasher: KeyedState,
}

impl<K, V> Default for DenseMap<K, V> {
    fn default() -> Self {
        Self::with_hasher(KeyedState::default())
    }
}

impl<K, V> DenseMap<K, V> {
    pub fn with_hasher(hasher: KeyedState) -> Self {
        Self {
            index: HashTable::new(),
            entries: Vec::new(),
            hasher,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries the vector holds room for.
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    pub fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
    }
}

impl<K: Hash + Eq, V> DenseMap<K, V> {
    fn hash(&self, k: &K) -> u64 {
        self.hasher.hash_one(k)
    }

    fn find(&self, k: &K) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(self.hash(k), |&i| entries[i as usize].0 == *k)
            .map(|&i| i as usize)
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.find(k).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.find(k).map(|i| &mut self.entries[i].1)
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.find(k).is_some()
    }

    /// Inserts or replaces; the value replaced, if any.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        if let Some(i) = self.find(&k) {
            return Some(std::mem::replace(&mut self.entries[i].1, v));
        }
        self.push(k, v);
        None
    }

    /// The entry of `k`, made with `make` if absent.
    pub fn get_or_insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&k) {
            Some(i) => i,
            None => {
                self.push(k, make());
                self.entries.len() - 1
            }
        };
        &mut self.entries[i].1
    }

    /// Appends an entry whose key is absent.
    fn push(&mut self, k: K, v: V) {
        let hash = self.hash(&k);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.insert_unique(hash, index(entries.len()), |&i| {
            hasher.hash_one(&entries[i as usize].0)
        });
        self.entries.push((k, v));
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let hash = self.hash(k);
        let entries = &self.entries;
        let (i, _) = self
            .index
            .find_entry(hash, |&i| entries[i as usize].0 == *k)
            .ok()?
            .remove();
        let i = i as usize;
        let last = self.entries.len() - 1;
        let (_, v) = self.entries.swap_remove(i);
        if i != last {
            // The last entry moved into the hole: point its bucket there.
            let moved = self.hash(&self.entries[i].0);
            if let Some(slot) = self.index.find_mut(moved, |&j| j as usize == last) {
                *slot = index(i);
            }
        }
        Some(v)
    }

    /// Keeps the entries `keep` holds true for.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let before = self.entries.len();
        self.entries.retain_mut(|(k, v)| keep(k, v));
        if self.entries.len() != before {
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        self.index.clear();
        let (entries, hasher) = (&self.entries, &self.hasher);
        for (i, (k, _)) in entries.iter().enumerate() {
            self.index
                .insert_unique(hasher.hash_one(k), index(i), |&j| {
                    hasher.hash_one(&entries[j as usize].0)
                });
        }
    }

    /// Gives back room beyond `min` entries.
    pub fn shrink_to(&mut self, min: usize) {
        self.entries.shrink_to(min);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index
            .shrink_to(min, |&i| hasher.hash_one(&entries[i as usize].0));
    }
}

/// One entry of an [`Lru`], linked to its neighbours in recency order.
#[derive(Debug, Clone)]
struct Slot<K, V> {
    key: K,
    value: V,
    /// Towards the most recently used.
    newer: u32,
    /// Towards the least recently used.
    older: u32,
}

/// A bounded map that forgets its least recently used entry to make room.
#[derive(Debug, Clone)]
pub struct Lru<K, V> {
    index: HashTable<u32>,
    slots: Vec<Slot<K, V>>,
    /// Most and least recently used.
    newest: u32,
    oldest: u32,
    cap: NonZeroUsize,
    hasher: KeyedState,
}

impl<K: Hash + Eq, V> Lru<K, V> {
    /// Room for `cap` entries is reserved, not touched: the pages fill as
    /// the entries do.
    pub fn with_hasher(cap: NonZeroUsize, hasher: KeyedState) -> Self {
        Self {
            index: HashTable::with_capacity(cap.get()),
            slots: Vec::with_capacity(cap.get()),
            newest: NIL,
            oldest: NIL,
            cap,
            hasher,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn cap(&self) -> NonZeroUsize {
        self.cap
    }

    fn hash(&self, k: &K) -> u64 {
        self.hasher.hash_one(k)
    }

    fn find(&self, k: &K) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(self.hash(k), |&i| slots[i as usize].key == *k)
            .copied()
    }

    pub fn contains(&self, k: &K) -> bool {
        self.find(k).is_some()
    }

    /// The value of `k`, leaving its recency alone.
    pub fn peek(&self, k: &K) -> Option<&V> {
        self.find(k).map(|i| &self.slots[i as usize].value)
    }

    /// The value of `k`, now the most recently used.
    pub fn get(&mut self, k: &K) -> Option<&V> {
        let i = self.find(k)?;
        self.unlink(i);
        self.link_newest(i);
        Some(&self.slots[i as usize].value)
    }

    /// Inserts `k` as the most recently used. Returns the entry it
    /// displaced: the old value of `k`, or the least recently used entry,
    /// forgotten to stay within the bound.
    pub fn push(&mut self, k: K, v: V) -> Option<(K, V)> {
        if let Some(i) = self.find(&k) {
            self.unlink(i);
            self.link_newest(i);
            let slot = &mut self.slots[i as usize];
            let old = std::mem::replace(&mut slot.value, v);
            return Some((std::mem::replace(&mut slot.key, k), old));
        }
        let hash = self.hash(&k);
        if self.slots.len() >= self.cap.get() && self.oldest != NIL {
            // Full: the least recently used slot takes the new entry.
            let i = self.oldest;
            let old_hash = self.hash(&self.slots[i as usize].key);
            if let Ok(e) = self.index.find_entry(old_hash, |&j| j == i) {
                e.remove();
            }
            self.unlink(i);
            let slot = &mut self.slots[i as usize];
            let old = (
                std::mem::replace(&mut slot.key, k),
                std::mem::replace(&mut slot.value, v),
            );
            self.insert_index(hash, i);
            self.link_newest(i);
            return Some(old);
        }
        let i = index(self.slots.len());
        self.slots.push(Slot {
            key: k,
            value: v,
            newer: NIL,
            older: NIL,
        });
        self.insert_index(hash, i);
        self.link_newest(i);
        None
    }

    /// Removes `k`.
    pub fn pop(&mut self, k: &K) -> Option<V> {
        let hash = self.hash(k);
        let slots = &self.slots;
        let (i, _) = self
            .index
            .find_entry(hash, |&i| slots[i as usize].key == *k)
            .ok()?
            .remove();
        self.unlink(i);
        let last = index(self.slots.len() - 1);
        let gone = self.slots.swap_remove(i as usize);
        if i != last {
            // The last slot moved into the hole: relink it and point its
            // bucket there.
            let (newer, older) = {
                let s = &self.slots[i as usize];
                (s.newer, s.older)
            };
            match newer {
                NIL => self.newest = i,
                n => self.slots[n as usize].older = i,
            }
            match older {
                NIL => self.oldest = i,
                o => self.slots[o as usize].newer = i,
            }
            let moved = self.hash(&self.slots[i as usize].key);
            if let Some(slot) = self.index.find_mut(moved, |&j| j == last) {
                *slot = i;
            }
        }
        Some(gone.value)
    }

    fn insert_index(&mut self, hash: u64, i: u32) {
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(hash, i, |&j| hasher.hash_one(&slots[j as usize].key));
    }

    fn unlink(&mut self, i: u32) {
        let (newer, older) = {
            let s = &self.slots[i as usize];
            (s.newer, s.older)
        };
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
        let s = &mut self.slots[i as usize];
        (s.newer, s.older) = (NIL, NIL);
    }

    fn link_newest(&mut self, i: u32) {
        let old = self.newest;
        {
            let s = &mut self.slots[i as usize];
            s.older = old;
            s.newer = NIL;
        }
        match old {
            NIL => self.oldest = i,
            o => self.slots[o as usize].newer = i,
        }
        self.newest = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).expect("nonzero")
    }

    #[test]
    fn a_dense_map_finds_what_it_holds_after_removals() {
        let mut m = DenseMap::default();
        for i in 0..1000u64 {
            assert_eq!(m.insert(i, i * 2), None);
        }
        assert_eq!(m.insert(5, 0), Some(10));
        for i in (0..1000).step_by(3) {
            assert!(m.remove(&i).is_some());
        }
        assert_eq!(m.remove(&0), None);
        for i in 0..1000 {
            let want = (i % 3 != 0).then_some(if i == 5 { 0 } else { i * 2 });
            assert_eq!(m.get(&i).copied(), want, "{i}");
        }
        m.retain(|k, _| k % 2 == 0);
        assert!(m.keys().all(|k| k % 2 == 0 && k % 3 != 0));
        assert_eq!(m.len(), 333);
        m.shrink_to(0);
        assert_eq!(m.get(&998).copied(), Some(1996));
        *m.get_or_insert_with(7, || 1) += 1;
        assert_eq!(m.get(&7).copied(), Some(2));
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut l = Lru::with_hasher(cap(3), KeyedState::default());
        for i in 0..3 {
            assert!(l.push(i, i).is_none());
        }
        assert_eq!(l.get(&0).copied(), Some(0), "0 is now the newest");
        assert_eq!(l.peek(&1).copied(), Some(1), "a peek does not refresh");
        assert_eq!(l.push(3, 3), Some((1, 1)));
        assert_eq!(l.push(3, 30), Some((3, 3)), "a replacement");
        assert_eq!(l.pop(&2), Some(2));
        assert_eq!(l.len(), 2);
        assert!(l.push(4, 4).is_none());
        assert_eq!(l.push(5, 5), Some((0, 0)));
        assert_eq!(l.push(6, 6), Some((3, 30)));
        assert!(l.contains(&4) && l.contains(&5) && l.contains(&6));
        // Popping every position keeps the order of the rest.
        for k in [5, 4, 6] {
            assert_eq!(l.pop(&k), Some(k));
        }
        assert!(l.is_empty() && l.pop(&6).is_none());
        for i in 0..3 {
            l.push(i, i);
        }
        l.pop(&1);
        assert_eq!(l.push(7, 7), None);
        assert_eq!(l.push(8, 8), Some((0, 0)));
        assert_eq!(l.push(9, 9), Some((2, 2)));
    }
}
