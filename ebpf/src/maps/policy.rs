//! The policy maps: each pod's default actions and generation
//! (`pm_policy`) and its rules (`pm_rules`, an LPM trie keyed by pod,
//! direction and CIDR). The policy store writes them;
//! here is their part of a pod's removal.

use std::collections::BTreeSet;

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap, MapData, MapError,
};

use crate::{
    abi::{PolicyEntry, RuleKeyData, RuleSet},
    maps::{
        flow_tables,
        open::with_map,
        pod_keys::{pod_keys, PodKeys},
    },
    pins::{PinLayout, POLICY_MAP, RULES_MAP},
    Error,
};

pub(crate) type PolicyMap = HashMap<MapData, u32, PolicyEntry>;
pub(crate) type RulesMap = LpmTrie<MapData, RuleKeyData, RuleSet>;

/// Removes the pod's policy entry (first: the programs stop enforcing),
/// then its rules and flow table. Maps that are not pinned have nothing to
/// remove; each problem is returned.
pub fn forget(layout: &PinLayout, ifindex: u32) -> Vec<Error> {
    [
        with_map(layout, POLICY_MAP, |m: &mut PolicyMap| {
            m.remove_pod(ifindex)
        }),
        with_map(layout, RULES_MAP, |m: &mut RulesMap| m.remove_pod(ifindex)),
    ]
    .into_iter()
    .chain(flow_tables::forget(layout, ifindex))
    .filter_map(Result::err)
    .collect()
}

/// Host ifindexes with a policy entry, rules or a flow table.
pub fn ifindexes(layout: &PinLayout) -> Result<BTreeSet<u32>, Error> {
    let mut found = BTreeSet::new();
    with_map(layout, POLICY_MAP, |m: &mut PolicyMap| {
        m.collect_ifindexes(&mut found)
    })?;
    with_map(layout, RULES_MAP, |m: &mut RulesMap| {
        m.collect_ifindexes(&mut found)
    })?;
    flow_tables::collect_ifindexes(layout, &mut found)?;
    Ok(found)
}

pod_keys!(HashMap, u32, PolicyEntry, |k| *k);

impl PodKeys for RulesMap {
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
