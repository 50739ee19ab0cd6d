//! The table of per-pod maps: every pinned map whose entries belong to one
//! pod, named by its host ifindex, with its part of the pod's life. ADD's
//! zeroing, DEL's removal and GC's search for leftovers all go over this
//! table (`pod`), so a new per-pod map is one line here (and its
//! family file); a map of the object that is in neither this table nor
//! [`NODE_WIDE_MAPS`] fails a test.

use std::collections::BTreeSet;

use aya::maps::{Map, MapError};

use super::{
    counters, devices, drops, flow_tables, ignore_missing, policy, registry, sources, tcp,
};
use crate::{maps::PinnedMaps, Error};

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
        impl<T: std::borrow::BorrowMut<aya::maps::MapData>> $crate::maps::per_pod::PodKeys
            for $map<T, $key, $value>
        {
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
        impl<T: std::borrow::BorrowMut<aya::maps::MapData>> $crate::maps::per_pod::PodKeys
            for aya::maps::lpm_trie::LpmTrie<T, $key, $value>
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

/// The table entry of a map whose keys name the pod ([`PodKeys`]), read as
/// `$map<_, $key, $value>`: its entries are found and removed by key.
macro_rules! by_key {
    ($name:expr, $map:ident<$key:ty, $value:ty>) => {
        $crate::maps::per_pod::PerPodMap {
            name: $name,
            zero: None,
            collect: |map, found| {
                let typed = $map::<&mut aya::maps::MapData, $key, $value>::try_from(map)?;
                $crate::maps::per_pod::PodKeys::collect_ifindexes(&typed, found)
            },
            remove: |map, ifindex| {
                let mut typed = $map::<&mut aya::maps::MapData, $key, $value>::try_from(map)?;
                $crate::maps::per_pod::PodKeys::remove_pod(&mut typed, ifindex)
            },
        }
    };
}
pub(crate) use by_key;

/// What ADD writes in one map for a new pod, on the pod's host ifindex.
pub(crate) type Zero = fn(&mut PinnedMaps, u32) -> Result<(), Error>;

/// A per-pod map and its part of a pod's life.
pub(crate) struct PerPodMap {
    pub(crate) name: &'static str,
    /// What ADD writes for a new pod before its identity, if anything.
    pub(crate) zero: Option<Zero>,
    /// Adds the host ifindex of each of the map's entries to the set.
    pub(crate) collect: fn(&mut Map, &mut BTreeSet<u32>) -> Result<(), MapError>,
    /// Removes every entry of one pod (one already gone is not an error).
    pub(crate) remove: fn(&mut Map, u32) -> Result<(), MapError>,
}

/// Every per-pod map, in the order DEL removes a pod's entries: the policy
/// entry first (the programs stop enforcing), then the rules and the flow
/// table (the outer map's entry is the table's last reference), the
/// source, the devices (no drop is attributed to the pod once its
/// counters are going), the counters, drops and TCP statistics; and the identity last, by
/// which the next DEL or GC finds what a DEL killed halfway left.
pub(crate) const PER_POD_MAPS: &[&PerPodMap] = &[
    &policy::POLICY,
    &policy::RULES,
    &policy::K8S_RULES,
    &flow_tables::TABLES,
    &flow_tables::STATE,
    &sources::PER_POD,
    &devices::PER_POD,
    &counters::PER_POD,
    &drops::PER_POD,
    &tcp::PER_POD,
    &registry::PER_POD,
];

/// The pinned maps that belong to the node, not to one pod: the kubernetes
/// tier's identities and NetworkPolicy names (the agent's).
#[cfg(test)] // Read by the classification test only.
pub(crate) const NODE_WIDE_MAPS: &[&str] = &[crate::pins::PEERS_MAP, crate::pins::K8S_POLICIES_MAP];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        pins::{COUNTERS_MAP, DEVICES_MAP, FLOW_TABLES_MAP, POLICY_MAP, REGISTRY_MAP, RULES_MAP},
        programs::object::MAPS,
    };

    #[test]
    fn every_map_of_the_object_is_per_pod_or_node_wide() {
        for spec in MAPS {
            let per_pod = PER_POD_MAPS.iter().filter(|m| m.name == spec.name).count();
            let node_wide = NODE_WIDE_MAPS.iter().filter(|n| **n == spec.name).count();
            assert_eq!(
                (per_pod, node_wide),
                if per_pod > 0 { (1, 0) } else { (0, 1) },
                "{}: classify it once, in PER_POD_MAPS (DEL removes a pod's entries) \
                 or NODE_WIDE_MAPS",
                spec.name
            );
        }
        let known = |name: &str| MAPS.iter().any(|m| m.name == name);
        assert!(PER_POD_MAPS.iter().all(|m| known(m.name)));
        assert!(NODE_WIDE_MAPS.iter().all(|n| known(n)));
    }

    #[test]
    fn removal_keeps_its_order() {
        let at = |name| PER_POD_MAPS.iter().position(|m| m.name == name).unwrap();
        assert_eq!(at(POLICY_MAP), 0, "the programs stop enforcing first");
        assert!(at(RULES_MAP) < at(FLOW_TABLES_MAP));
        assert!(
            at(DEVICES_MAP) < at(COUNTERS_MAP),
            "no drop counted once counters go"
        );
        assert_eq!(
            at(REGISTRY_MAP),
            PER_POD_MAPS.len() - 1,
            "the identity last"
        );
    }
}
