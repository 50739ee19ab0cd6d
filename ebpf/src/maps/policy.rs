//! The per-pod policy maps: each pod's defaults, isolation and generation
//! (`pm_policy`), its admin rules (`pm_rules`, an LPM trie keyed by pod,
//! direction and CIDR) and its kubernetes tier (`pm_k8s_rules`). The
//! policy store writes them; here is their part of a pod's removal.

use std::collections::BTreeSet;

use aya::maps::{lpm_trie::LpmTrie, HashMap, MapData};

use crate::{
    abi::{K8sRule, K8sRuleKeyData, PolicyEntry, RuleKeyData, RuleSet},
    maps::{
        flow_tables,
        open::with_map,
        pod_keys::{pod_keys, trie_pod_keys, PodKeys},
    },
    pins::{PinLayout, K8S_RULES_MAP, POLICY_MAP, RULES_MAP},
    Error,
};

pub(crate) type PolicyMap = HashMap<MapData, u32, PolicyEntry>;
pub(crate) type RulesMap = LpmTrie<MapData, RuleKeyData, RuleSet>;
pub(crate) type K8sRulesMap = LpmTrie<MapData, K8sRuleKeyData, K8sRule>;

/// Removes the pod's policy entry (first: the programs stop enforcing),
/// then its admin and kubernetes rules and flow table. Maps that are not pinned have nothing to
/// remove; each problem is returned.
pub fn forget(layout: &PinLayout, ifindex: u32) -> Vec<Error> {
    [
        with_map(layout, POLICY_MAP, |m: &mut PolicyMap| {
            m.remove_pod(ifindex)
        }),
        with_map(layout, RULES_MAP, |m: &mut RulesMap| m.remove_pod(ifindex)),
        with_map(layout, K8S_RULES_MAP, |m: &mut K8sRulesMap| {
            m.remove_pod(ifindex)
        }),
    ]
    .into_iter()
    .chain(flow_tables::forget(layout, ifindex))
    .filter_map(Result::err)
    .collect()
}

/// Host ifindexes with a policy entry, rules of any owner or a flow table.
pub fn ifindexes(layout: &PinLayout) -> Result<BTreeSet<u32>, Error> {
    let mut found = BTreeSet::new();
    with_map(layout, POLICY_MAP, |m: &mut PolicyMap| {
        m.collect_ifindexes(&mut found)
    })?;
    with_map(layout, RULES_MAP, |m: &mut RulesMap| {
        m.collect_ifindexes(&mut found)
    })?;
    with_map(layout, K8S_RULES_MAP, |m: &mut K8sRulesMap| {
        m.collect_ifindexes(&mut found)
    })?;
    flow_tables::collect_ifindexes(layout, &mut found)?;
    Ok(found)
}

pod_keys!(HashMap, u32, PolicyEntry, |k| *k);

trie_pod_keys!(RuleKeyData, RuleSet);
trie_pod_keys!(K8sRuleKeyData, K8sRule);
