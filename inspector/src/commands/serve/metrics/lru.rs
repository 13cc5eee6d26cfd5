//! The label values that keep their own series: the most recently used
//! ones, up to a bound. A port that starts failing now matters more than
//! one that failed once an hour ago, so the least recently used value
//! gives way to the new one (and its series fold into `other`), rather
//! than the first values seen keeping their labels for the agent's life.

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
};

/// What [`Lru::touch`] did with a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touch<K> {
    /// The value has its own label; the least recently used value gave
    /// way to it, if the bound was reached.
    Held { evicted: Option<K> },
    /// The bound is 0: no value gets a label of its own.
    Refused,
}

/// At most `cap` values, ordered by last use.
#[derive(Debug)]
pub struct Lru<K> {
    cap: usize,
    /// A use counter, not a clock: ties cannot happen.
    tick: u64,
    used: HashMap<K, u64>,
    by_use: BTreeMap<u64, K>,
}

impl<K> Default for Lru<K> {
    fn default() -> Self {
        Self {
            cap: 0,
            tick: 0,
            used: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Lru<K> {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            tick: 0,
            used: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    /// Marks `key` used now, adding it if it is new.
    pub fn touch(&mut self, key: K) -> Touch<K> {
        if self.cap == 0 {
            return Touch::Refused;
        }
        self.tick += 1;
        if let Some(at) = self.used.insert(key.clone(), self.tick) {
            self.by_use.remove(&at);
            self.by_use.insert(self.tick, key);
            return Touch::Held { evicted: None };
        }
        self.by_use.insert(self.tick, key);
        let evicted = if self.used.len() > self.cap {
            self.by_use.pop_first().map(|(_, old)| {
                self.used.remove(&old);
                old
            })
        } else {
            None
        };
        Touch::Held { evicted }
    }

    #[cfg(test)]
    pub fn contains(&self, key: &K) -> bool {
        self.used.contains_key(key)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_value_gives_way() {
        let mut lru = Lru::new(2);
        assert_eq!(lru.touch(1), Touch::Held { evicted: None });
        assert_eq!(lru.touch(2), Touch::Held { evicted: None });
        // 1 is used again: 2 is now the oldest.
        assert_eq!(lru.touch(1), Touch::Held { evicted: None });
        assert_eq!(lru.touch(3), Touch::Held { evicted: Some(2) });
        assert!(lru.contains(&1) && lru.contains(&3) && !lru.contains(&2));
        assert_eq!(lru.len(), 2);
        assert_eq!(Lru::new(0).touch(1), Touch::Refused);
    }
}
