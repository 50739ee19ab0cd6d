//! The keys of podmeter's per-pod maps, each of which names the pod by its
//! host ifindex: for collecting which pods a map holds entries of, and for
//! removing one pod's entries, whatever the map's type.

use std::collections::BTreeSet;

use aya::maps::MapError;

use super::ignore_missing;

/// A map whose keys carry a pod's host ifindex.
pub(crate) trait PodKeys {
    type Key;
    fn ifindex(key: &Self::Key) -> u32;
    fn key_list(&self) -> Result<Vec<Self::Key>, MapError>;
    fn remove_key(&mut self, key: &Self::Key) -> Result<(), MapError>;

    /// Adds the ifindex of every entry to `found`.
    fn collect_ifindexes(&self, found: &mut BTreeSet<u32>) -> Result<(), MapError> {
        found.extend(self.key_list()?.iter().map(Self::ifindex));
        Ok(())
    }

    /// Removes every entry of the pod. A failed read is an error, not fewer
    /// entries: DEL must not report a pod gone whose entries it did not see.
    fn remove_pod(&mut self, ifindex: u32) -> Result<(), MapError> {
        let keys = self.key_list()?;
        keys.iter()
            .filter(|k| Self::ifindex(k) == ifindex)
            .try_for_each(|k| ignore_missing(self.remove_key(k)))
    }
}

/// Implements [`PodKeys`] for a map type whose key names the pod as `$ifindex`.
macro_rules! pod_keys {
    ($map:ident, $key:ty, $value:ty, |$k:ident| $ifindex:expr) => {
        impl $crate::maps::pod_keys::PodKeys for $map<aya::maps::MapData, $key, $value> {
            type Key = $key;
            fn ifindex($k: &$key) -> u32 {
                $ifindex
            }
            fn key_list(&self) -> Result<Vec<$key>, aya::maps::MapError> {
                self.keys().collect()
            }
            fn remove_key(&mut self, key: &$key) -> Result<(), aya::maps::MapError> {
                self.remove(key)
            }
        }
    };
}
pub(crate) use pod_keys;

/// Implements [`PodKeys`] for an LPM trie whose key data starts with the
/// pod's ifindex.
macro_rules! trie_pod_keys {
    ($key:ty, $value:ty) => {
        impl $crate::maps::pod_keys::PodKeys
            for aya::maps::lpm_trie::LpmTrie<aya::maps::MapData, $key, $value>
        {
            type Key = aya::maps::lpm_trie::Key<$key>;
            fn ifindex(key: &Self::Key) -> u32 {
                key.data().ifindex
            }
            fn key_list(&self) -> Result<Vec<Self::Key>, aya::maps::MapError> {
                self.keys().collect()
            }
            fn remove_key(&mut self, key: &Self::Key) -> Result<(), aya::maps::MapError> {
                self.remove(key)
            }
        }
    };
}
pub(crate) use trie_pod_keys;
