//! Stable numbers for things that come and go: pod classes and CIDR regions
//! (identities) and policies (indices). A key keeps its number for as long
//! as it is in use from one compile to the next, so that an incremental
//! change rewrites few kernel entries; numbers of keys gone are reused.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
pub struct Allocator<K: Ord> {
    ids: BTreeMap<K, u32>,
    /// Released numbers, reused lowest first.
    free: BTreeSet<u32>,
    next: u32,
}

impl<K: Ord + Clone> Allocator<K> {
    /// Numbers start at `first` (below it: reserved, like 0 and HOST).
    pub fn new(first: u32) -> Self {
        Self {
            ids: BTreeMap::new(),
            free: BTreeSet::new(),
            next: first,
        }
    }

    /// Makes `keys` exactly the keys in use: the ones kept keep their
    /// numbers, the others' numbers are freed, new keys get numbers.
    pub fn assign<'a>(&mut self, keys: impl IntoIterator<Item = &'a K>) -> &BTreeMap<K, u32>
    where
        K: 'a,
    {
        let wanted: BTreeSet<&K> = keys.into_iter().collect();
        let gone: Vec<K> = self
            .ids
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(id) = self.ids.remove(&k) {
                self.free.insert(id);
            }
        }
        for k in wanted {
            if !self.ids.contains_key(k) {
                let id = self.free.pop_first().unwrap_or_else(|| {
                    self.next += 1;
                    self.next - 1
                });
                self.ids.insert(k.clone(), id);
            }
        }
        &self.ids
    }

    pub fn get(&self, key: &K) -> Option<u32> {
        self.ids.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_keys_keep_their_numbers_and_freed_ones_are_reused() {
        let mut a = Allocator::new(2);
        a.assign(&["x", "y", "z"]);
        assert_eq!(
            (a.get(&"x"), a.get(&"y"), a.get(&"z")),
            (Some(2), Some(3), Some(4))
        );
        a.assign(&["x", "z", "w"]);
        // y's 3 went to w; x and z unchanged.
        assert_eq!(
            (a.get(&"x"), a.get(&"y"), a.get(&"z"), a.get(&"w")),
            (Some(2), None, Some(4), Some(3))
        );
        a.assign(&["x", "z", "w", "v"]);
        assert_eq!(a.get(&"v"), Some(5));
    }
}
