//! The per-pod policy maps: each pod's defaults, isolation and generation
//! (`pm_policy`), its admin rules (`pm_rules`, an LPM trie keyed by pod,
//! direction and CIDR) and its kubernetes tier (`pm_k8s_rules`). The
//! policy store writes them; here are their types and their part of a
//! pod's removal.

use std::collections::BTreeSet;

use aya::maps::{lpm_trie::LpmTrie, HashMap, MapData};

use crate::{
    abi::{K8sRule, K8sRuleKeyData, PolicyEntry, RuleKeyData, RuleSet},
    maps::{
        flow_tables,
        per_pod::{by_key, pod_keys, trie_pod_keys, PerPodMap},
        PinnedMaps,
    },
    pins::{PinLayout, K8S_RULES_MAP, POLICY_MAP, RULES_MAP},
    Error,
};

pub(crate) type PolicyMap = HashMap<MapData, u32, PolicyEntry>;
pub(crate) type RulesMap = LpmTrie<MapData, RuleKeyData, RuleSet>;
pub(crate) type K8sRulesMap = LpmTrie<MapData, K8sRuleKeyData, K8sRule>;

pod_keys!(HashMap, u32, PolicyEntry, |k| *k);

trie_pod_keys!(RuleKeyData, RuleSet);
trie_pod_keys!(K8sRuleKeyData, K8sRule);

/// In the table of per-pod maps: the policy entry goes first at DEL (the
/// programs stop enforcing), then the rules of every owner.
pub(crate) const POLICY: PerPodMap = by_key!(POLICY_MAP, HashMap<u32, PolicyEntry>);
pub(crate) const RULES: PerPodMap = by_key!(RULES_MAP, LpmTrie<RuleKeyData, RuleSet>);
pub(crate) const K8S_RULES: PerPodMap = by_key!(K8S_RULES_MAP, LpmTrie<K8sRuleKeyData, K8sRule>);

/// Host ifindexes with a policy entry, rules of any owner or a flow table.
pub fn ifindexes(layout: &PinLayout) -> Result<BTreeSet<u32>, Error> {
    PinnedMaps::open_lazy(layout)?.pods_in(&[
        &POLICY,
        &RULES,
        &K8S_RULES,
        &flow_tables::TABLES,
        &flow_tables::STATE,
    ])
}

impl PinnedMaps {
    /// Whether NetworkPolicy isolates each pod with policy, by host ifindex
    /// and `Direction`: one read of `pm_policy`, which holds only the pods
    /// with policy.
    pub fn policy_isolation(&self) -> Result<Vec<(u32, [bool; 2])>, Error> {
        let map: HashMap<&MapData, u32, PolicyEntry> = self.typed(POLICY_MAP)?;
        map.iter()
            .map(|entry| entry.map(|(ifindex, e)| (ifindex, e.k8s_isolated.map(|i| i != 0))))
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(POLICY_MAP, e))
    }
}
