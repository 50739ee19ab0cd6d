//! The policy maps: each pod's default actions and generation
//! (`pm_policy`) and its rules (`pm_rules`, an LPM trie keyed by pod,
//! direction and CIDR). The policy store writes them; here are their types
//! and their part of a pod's removal.

use std::{borrow::BorrowMut, collections::BTreeSet};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap, MapData, MapError,
};

use crate::{
    abi::{PolicyEntry, RuleKeyData, RuleSet},
    maps::{
        flow_tables,
        per_pod::{by_key, pod_keys, PerPodMap, PodKeys},
        PinnedMaps,
    },
    pins::{PinLayout, POLICY_MAP, RULES_MAP},
    Error,
};

pub(crate) type PolicyMap = HashMap<MapData, u32, PolicyEntry>;
pub(crate) type RulesMap = LpmTrie<MapData, RuleKeyData, RuleSet>;

pod_keys!(HashMap, u32, PolicyEntry, |k| *k);

impl<T: BorrowMut<MapData>> PodKeys for LpmTrie<T, RuleKeyData, RuleSet> {
    type Key = Key<RuleKeyData>;
    fn ifindex(key: &Self::Key) -> u32 {
        key.data().ifindex
    }
    fn key_list(&self) -> Result<Vec<Self::Key>, MapError> {
        self.keys().collect()
    }
    fn remove_key(&mut self, key: &Self::Key) -> Result<(), MapError> {
        self.remove(key)
    }
}

/// In the table of per-pod maps: the policy entry goes first at DEL (the
/// programs stop enforcing), then the rules.
pub(crate) const POLICY: PerPodMap = by_key!(POLICY_MAP, HashMap<u32, PolicyEntry>);
pub(crate) const RULES: PerPodMap = by_key!(RULES_MAP, LpmTrie<RuleKeyData, RuleSet>);

/// Host ifindexes with a policy entry, rules or a flow table.
pub fn ifindexes(layout: &PinLayout) -> Result<BTreeSet<u32>, Error> {
    PinnedMaps::open_lazy(layout)?.pods_in(&[
        &POLICY,
        &RULES,
        &flow_tables::TABLES,
        &flow_tables::STATE,
    ])
}
