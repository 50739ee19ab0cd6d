//! Reading the policy maps of one pin path: a pod's defaults, isolation and
//! rules of every owner, what a probe would meet (`podmeterctl policy
//! check`), and the removal of a pod's policy at DEL and GC. Reading takes
//! no lock; edits go through [`super::store::PolicyStore`].

use std::cell::RefCell;

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap, MapData, MapError,
};
use ipnet::IpNet;

use crate::{
    abi::{
        Action, Direction, Flow, FlowKey, K8sPolicyName, K8sRule, K8sRuleKeyData, Peer,
        PeerKeyData, PolicyEntry, Source,
    },
    maps::{
        flow_tables::FlowTables,
        per_pod::PodKeys,
        policy::{K8sRulesMap, PolicyMap, RulesMap},
        PinnedMaps,
    },
    pins::{
        PinLayout, K8S_POLICIES_MAP, K8S_RULES_MAP, PEERS_MAP, POLICY_MAP, RULES_MAP, SOURCES_MAP,
    },
    Error,
};

use super::{
    encoding::{self as policy, Entries, Sets},
    kubernetes::{self as policy_k8s, NamedKubeRule},
    rules::family_of,
    Probe, Rule, Verdict,
};

pub struct PolicyView {
    layout: PinLayout,
    pub(crate) policy: PolicyMap,
    pub(crate) rules: RulesMap,
    pub(crate) k8s_rules: K8sRulesMap,
    pub(crate) peers: LpmTrie<MapData, PeerKeyData, Peer>,
    pub(crate) names: HashMap<MapData, u32, K8sPolicyName>,
    sources: HashMap<MapData, u32, Source>,
    pub(crate) flows: FlowTables,
}

impl PolicyView {
    pub fn open(layout: &PinLayout) -> Result<Self, Error> {
        Self::from_maps(&mut PinnedMaps::open_lazy(layout)?)
    }

    /// Takes the policy maps out of an open handle (no map is opened twice).
    pub fn from_maps(maps: &mut PinnedMaps) -> Result<Self, Error> {
        Ok(Self {
            layout: maps.layout().clone(),
            policy: maps.take(POLICY_MAP)?,
            rules: maps.take(RULES_MAP)?,
            k8s_rules: maps.take(K8S_RULES_MAP)?,
            peers: maps.take(PEERS_MAP)?,
            names: maps.take(K8S_POLICIES_MAP)?,
            sources: maps.take(SOURCES_MAP)?,
            flows: FlowTables::from_maps(maps)?,
        })
    }

    pub(crate) fn error(&self, map: &str, source: MapError) -> Error {
        Error::Map {
            path: self.layout.map(map),
            source,
        }
    }

    /// The pod's policy entry; `None` if it has none (it is only counted).
    pub(crate) fn entry(&self, ifindex: u32) -> Result<Option<PolicyEntry>, Error> {
        match self.policy.get(&ifindex, 0) {
            Ok(entry) => Ok(Some(entry)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(self.error(POLICY_MAP, e)),
        }
    }

    /// The pod's effective default actions (receive, transmit); `None` if
    /// it has no policy, which lets everything through.
    pub fn defaults(&self, ifindex: u32) -> Result<Option<[Action; 2]>, Error> {
        Ok(self.entry(ifindex)?.map(|entry| {
            entry
                .default_action
                .map(|raw| Action::from_raw(raw).unwrap_or(Action::Deny))
        }))
    }

    /// Whether NetworkPolicy isolates the pod, by `Direction`.
    pub fn isolated(&self, ifindex: u32) -> Result<[bool; 2], Error> {
        Ok(self
            .entry(ifindex)?
            .map_or([false; 2], |e| e.k8s_isolated.map(|i| i != 0)))
    }

    /// Every admin rule of the pod (config's and operator's), by id.
    pub fn rules(&self, ifindex: u32) -> Result<Vec<Rule>, Error> {
        let mut rules: Vec<Rule> = Vec::new();
        for ((len, data), set) in self.pod_sets(ifindex)? {
            let Some(direction) = Direction::from_raw(data.direction.into()) else {
                continue;
            };
            let prefix_len = policy::key_prefix(&Key::new(len, data));
            for stored in policy::set_rules(&set) {
                let decoded = policy::decode(stored, direction, data.family, data.addr, prefix_len);
                // A rule for any address is stored once per family.
                if let Some(rule) = decoded.filter(|r| !rules.iter().any(|o| o.id == r.id)) {
                    rules.push(rule);
                }
            }
        }
        rules.sort_by_key(|r| r.id);
        Ok(rules)
    }

    /// The pod's kubernetes rules, port prefixes merged back into ranges,
    /// each with its NetworkPolicy's name.
    pub fn kubernetes_rules(&self, ifindex: u32) -> Result<Vec<NamedKubeRule>, Error> {
        let entries: Vec<_> = self
            .pod_k8s_entries(ifindex)?
            .into_iter()
            .map(|((len, data), v)| (Key::new(len, data), v))
            .collect();
        let names = self.policy_names()?;
        Ok(policy_k8s::decode(&entries)
            .into_iter()
            .map(|rule| NamedKubeRule {
                name: names
                    .iter()
                    .find(|(i, _)| *i == rule.policy)
                    .map(|(_, n)| n.clone()),
                rule,
            })
            .collect())
    }

    /// Who every remote address is, as the agent last wrote it.
    pub fn peers(&self) -> Result<Vec<(IpNet, Peer)>, Error> {
        Ok(self
            .all_peers()?
            .into_iter()
            .filter_map(|((len, data), peer)| {
                Some((policy_k8s::peer_net(&Key::new(len, data))?, peer))
            })
            .collect())
    }

    /// The NetworkPolicy names by index.
    pub fn policy_names(&self) -> Result<Vec<(u32, String)>, Error> {
        Ok(self
            .all_names()?
            .into_iter()
            .map(|(i, raw)| {
                let end = raw
                    .name
                    .iter()
                    .position(|b| *b == 0)
                    .unwrap_or(raw.name.len());
                (i, String::from_utf8_lossy(&raw.name[..end]).into_owned())
            })
            .collect())
    }

    /// What a packet like `probe` would meet, without sending one, in the
    /// owners' order: the admin rule that decides, else the kubernetes tier
    /// for an isolated pod, else the default. A packet of a live flow
    /// opened the other way passes whatever this says.
    pub fn check(&self, ifindex: u32, probe: &Probe) -> Result<Verdict, Error> {
        let Some(entry) = self.entry(ifindex)? else {
            return Ok(Verdict::NoPolicy);
        };
        let failure = RefCell::new(None);
        let found = policy::walk(policy::probe_key(ifindex, probe), probe, |key| {
            lookup(&self.rules, key, &failure)
        });
        let admin = found.and_then(|r| Some((r.id, Action::from_raw(r.action)?)));
        let direction = probe.direction as usize;
        let default = Action::from_raw(entry.default_action[direction]).unwrap_or(Action::Deny);
        let peer_failure = RefCell::new(None);
        let k8s_failure = RefCell::new(None);
        let verdict = policy_k8s::decide(
            admin,
            entry.k8s_isolated[direction] != 0,
            || {
                let net = IpNet::from(probe.remote);
                let peer = lookup(&self.peers, &policy_k8s::peer_key(&net), &peer_failure);
                let gateway = self.sources.get(&ifindex, 0).is_ok_and(|s| {
                    s.gateways.iter().any(|g| {
                        g.family == family_of(&probe.remote)
                            && g.addr == policy::addr_bytes(&probe.remote)
                    })
                });
                policy_k8s::k8s_allows(ifindex, probe, peer, gateway, |key| {
                    lookup(&self.k8s_rules, key, &k8s_failure)
                })
            },
            default,
        );
        for (map, failure) in [
            (RULES_MAP, failure),
            (PEERS_MAP, peer_failure),
            (K8S_RULES_MAP, k8s_failure),
        ] {
            if let Some(e) = failure.into_inner() {
                return Err(self.error(map, e));
            }
        }
        Ok(verdict)
    }

    /// The pod's tracked flows.
    pub fn flows(&self, ifindex: u32) -> Result<Vec<(FlowKey, Flow)>, Error> {
        self.flows.flows(ifindex)
    }

    /// The pod's admin rule sets.
    pub(crate) fn pod_sets(&self, ifindex: u32) -> Result<Sets, Error> {
        entries(&self.rules, |k| k.ifindex == ifindex).map_err(|e| self.error(RULES_MAP, e))
    }

    /// The pod's kubernetes entries.
    pub(crate) fn pod_k8s_entries(
        &self,
        ifindex: u32,
    ) -> Result<Entries<K8sRuleKeyData, K8sRule>, Error> {
        entries(&self.k8s_rules, |k| k.ifindex == ifindex).map_err(|e| self.error(K8S_RULES_MAP, e))
    }

    pub(crate) fn all_peers(&self) -> Result<Entries<PeerKeyData, Peer>, Error> {
        entries(&self.peers, |_| true).map_err(|e| self.error(PEERS_MAP, e))
    }

    pub(crate) fn all_names(
        &self,
    ) -> Result<std::collections::BTreeMap<u32, K8sPolicyName>, Error> {
        self.names
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(K8S_POLICIES_MAP, e))
    }

    /// Pods that NetworkPolicy isolates in some direction.
    pub(crate) fn isolated_pods(&self) -> Result<Vec<u32>, Error> {
        let mut found = Vec::new();
        for entry in self.policy.iter() {
            let (ifindex, e) = entry.map_err(|e| self.error(POLICY_MAP, e))?;
            if e.k8s_isolated != [0; 2] {
                found.push(ifindex);
            }
        }
        Ok(found)
    }

    /// Removes the pod's policy entry, then its flow table: the programs
    /// only count it. Its rules (none of the admin owners', by then) and its
    /// kubernetes tier stay, for the owners to replace.
    pub(crate) fn clear(&mut self, ifindex: u32) -> Result<(), Error> {
        self.policy
            .remove_pod(ifindex)
            .map_err(|e| self.error(POLICY_MAP, e))?;
        self.flows.remove(ifindex)
    }
}

/// The trie's answer for `key` (the longest stored prefix holding it); a
/// map error is kept in `failure` for the caller to return.
fn lookup<K: aya::Pod, V: aya::Pod>(
    map: &LpmTrie<MapData, K, V>,
    key: &Key<K>,
    failure: &RefCell<Option<MapError>>,
) -> Option<V> {
    match map.get(key, 0) {
        Ok(v) => Some(v),
        Err(MapError::KeyNotFound) => None,
        Err(e) => {
            failure.replace(Some(e));
            None
        }
    }
}

/// The entries of a trie whose key data `keep` picks.
fn entries<K: aya::Pod + Ord, V: aya::Pod>(
    map: &LpmTrie<MapData, K, V>,
    keep: impl Fn(&K) -> bool,
) -> Result<Entries<K, V>, MapError> {
    let mut found = Entries::new();
    for entry in map.iter() {
        let (key, value) = entry?;
        if keep(&key.data()) {
            found.insert((key.prefix_len(), key.data()), value);
        }
    }
    Ok(found)
}
