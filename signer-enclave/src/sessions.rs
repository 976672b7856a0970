//! A bounded map of signing sessions: at most `capacity` entries, the oldest inserted evicted
//! first when a new key needs room. A compromised scanner opening sessions it never finishes
//! cannot grow the enclave's memory; an evicted session is one the coordinator re-attempts.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
};

/// Sessions by key, bounded.
pub struct Sessions<K, V> {
    capacity: usize,
    entries: HashMap<K, V>,
    /// Keys in insertion order (a key may appear again after it was replaced; stale positions
    /// are skipped when evicting).
    order: VecDeque<K>,
}

impl<K: Eq + Hash + Clone, V> Sessions<K, V> {
    /// An empty map holding at most `capacity` sessions (at least one).
    pub fn new(capacity: usize) -> Self {
        Sessions {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The session under `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    /// Takes the session under `key` out.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key)
    }

    /// Puts a session under `key` (replacing one there), evicting the oldest sessions while
    /// there is no room; returns how many were evicted.
    pub fn insert(&mut self, key: K, value: V) -> usize {
        let mut evicted = 0;
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.capacity {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                if self.entries.remove(&oldest).is_some() {
                    evicted += 1;
                }
            }
        }
        self.entries.insert(key.clone(), value);
        self.order.push_back(key);
        // Positions of keys removed or replaced are dropped once they outnumber the entries.
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            let mut seen = std::collections::HashSet::new();
            let mut kept: Vec<K> = self
                .order
                .iter()
                .rev()
                .filter(|key| entries.contains_key(key) && seen.insert((*key).clone()))
                .cloned()
                .collect();
            kept.reverse();
            self.order = kept.into();
        }
        evicted
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_session_makes_room_and_replacing_one_evicts_nothing() {
        let mut sessions = Sessions::new(2);
        assert_eq!(sessions.insert(1, "a"), 0);
        assert_eq!(sessions.insert(2, "b"), 0);
        assert_eq!(sessions.insert(2, "b2"), 0);
        assert_eq!(sessions.insert(3, "c"), 1);
        assert_eq!(sessions.get(&1), None);
        assert_eq!(sessions.get(&2), Some(&"b2"));
        assert_eq!(sessions.len(), 2);
        // Many replacements keep the order bounded and the entries right.
        for round in 0..100 {
            sessions.insert(3, "c");
            sessions.insert(2, if round % 2 == 0 { "x" } else { "y" });
        }
        assert!(sessions.order.len() <= 4);
        assert_eq!(sessions.insert(4, "d"), 1);
        assert_eq!(sessions.get(&3), None);
        assert_eq!(sessions.remove(&2), Some("y"));
        assert_eq!(sessions.len(), 1);
    }
}
