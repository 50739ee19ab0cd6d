//! A pod's policy in the pinned maps, by owner: its defaults and isolation
//! (`pm_policy`), the admin rules of the config and the operator
//! (`pm_rules`, an LPM trie), the kubernetes tier (`pm_k8s_rules`), its flow
//! table ([`crate::flow_tables`]); and the node-wide maps of the kubernetes
//! tier (`pm_peers`, `pm_k8s_policies`).
//!
//! Each owner replaces only its own rules and defaults. Every map update is
//! one the programs see whole, in an order that never opens or closes a pod
//! by mistake: rules are written before the pod's policy entry that makes
//! the programs look at them (and so is the pod's flow table), and the
//! entry goes first when the pod's policy is removed. A change is all or
//! nothing: if a write fails (a table is full), what it wrote before is put
//! back as it was, and the policy entry, written last, bumps the generation
//! once.
//!
//! Reading needs no lock ([`PolicyView`]); an edit needs the pin lock
//! ([`PolicyStore`]), which serializes it with other edits, DEL and GC:
//! [`PolicyStore::lock`] takes it exclusively, [`PolicyStore::under`] uses
//! one the caller holds (ADD's shared lock, for the pod it is creating).

use std::{collections::BTreeMap, ops::Deref};

use aya::maps::{lpm_trie::Key, MapError};
use ipnet::IpNet;

use crate::{
    abi::{
        Action, Direction, K8sPolicyName, K8sRule, K8sRuleKeyData, Peer, PeerKeyData, PolicyEntry,
        RuleKeyData, RuleSet, K8S_POLICY_NAME_LEN, MAX_K8S_POLICIES, MAX_K8S_RULES, MAX_PEERS,
        MAX_RULE_PREFIXES, OWNER_OPERATOR, RULES_PER_PREFIX,
    },
    lock::PinLock,
    maps::{ignore_missing, PinnedMaps},
    pins::{K8S_POLICIES_MAP, K8S_RULES_MAP, PEERS_MAP, POLICY_MAP, RULES_MAP},
    Error,
};

use super::{
    encoding::{self as policy, Entries, Sets},
    kubernetes::{self as policy_k8s, KubePodPolicy},
    view::PolicyView,
    Owner, PodPolicy, RuleSpec,
};

pub use crate::maps::policy::ifindexes;

/// One write of a change, and what to put back if a later one fails.
enum Step {
    Rules(Key<RuleKeyData>, Option<RuleSet>),
    K8s(Key<K8sRuleKeyData>, Option<K8sRule>),
    Peers(Key<PeerKeyData>, Option<Peer>),
    Names(u32, Option<K8sPolicyName>),
}

/// What one change overwrote, to put back in reverse order.
#[derive(Default)]
struct Undo(Vec<Step>);

/// Whether the pod has admin rules, for [`PolicyStore::write_entry`]: known
/// by the caller, or to be read from the trie if it matters.
#[derive(Clone, Copy)]
enum Rules {
    Known(bool),
    Unknown,
}

/// The pin lock an edit runs under: its own, or one its caller holds.
enum Held<'a> {
    Own(PinLock),
    Borrowed(&'a PinLock),
}

impl Held<'_> {
    fn lock(&self) -> &PinLock {
        match self {
            Held::Own(l) => l,
            Held::Borrowed(l) => l,
        }
    }
}

/// Edits of the policy of one pin path, under its pin lock.
pub struct PolicyStore<'lock> {
    view: PolicyView,
    held: Held<'lock>,
}

impl Deref for PolicyStore<'_> {
    type Target = PolicyView;
    fn deref(&self) -> &PolicyView {
        &self.view
    }
}

impl PolicyStore<'static> {
    /// Takes the pin path's exclusive lock, held until the store is dropped.
    pub fn lock(layout: &crate::PinLayout) -> Result<Self, Error> {
        let mut maps = PinnedMaps::open_lazy(layout)?;
        let lock = maps.lock_exclusive()?;
        Ok(Self {
            view: PolicyView::from_maps(&mut maps)?,
            held: Held::Own(lock),
        })
    }
}

impl<'lock> PolicyStore<'lock> {
    /// Edits under a lock the caller holds, with the policy maps taken out
    /// of its open handle. A shared lock (ADD's) is enough for the pods its
    /// holder creates; node-wide edits need an exclusive one.
    pub fn under(lock: &'lock PinLock, maps: &mut PinnedMaps) -> Result<Self, Error> {
        Ok(Self {
            view: PolicyView::from_maps(maps)?,
            held: Held::Borrowed(lock),
        })
    }

    /// Replaces `owner`'s rules and defaults of the pod with `policy`
    /// (`Config` at ADD, before the pod's links are up; `Operator`).
    pub fn apply(&mut self, ifindex: u32, owner: Owner, policy: &PodPolicy) -> Result<(), Error> {
        let raw = admin_owner(owner)?;
        policy.validate().map_err(|e| Error::Policy(e.0))?;
        let before = self.view.pod_sets(ifindex)?;
        let mut after = before.clone();
        policy::remove_rules(&mut after, |r| r.owner == raw);
        let next = policy::next_id(&after);
        let specs = Direction::ALL
            .into_iter()
            .flat_map(|d| policy.direction(d).rules.iter().map(move |spec| (d, spec)));
        for ((direction, spec), id) in specs.zip(next..) {
            policy::insert_rule(&mut after, ifindex, direction, spec, id, raw)
                .map_err(|e| Error::Policy(e.0))?;
        }
        let defaults = Direction::ALL.map(|d| policy.direction(d).default_action);
        self.atomically(|store, undo| {
            store.write_sets(undo, &before, &after)?;
            store.write_entry(ifindex, Rules::Known(!after.is_empty()), |e| {
                for (d, action) in defaults.iter().enumerate() {
                    e.owner_default[usize::from(raw - 1)][d] = action.map_or(0, |a| a as u8 + 1);
                }
            })
        })
    }

    /// Adds an operator rule and returns its id (one more than the pod's
    /// highest, whoever owns it).
    pub fn add(
        &mut self,
        ifindex: u32,
        direction: Direction,
        spec: &RuleSpec,
    ) -> Result<u32, Error> {
        spec.validate().map_err(|e| Error::Policy(e.0))?;
        let before = self.view.pod_sets(ifindex)?;
        let mut after = before.clone();
        let id = policy::next_id(&after);
        policy::insert_rule(&mut after, ifindex, direction, spec, id, OWNER_OPERATOR)
            .map_err(|e| Error::Policy(e.0))?;
        self.atomically(|store, undo| {
            store.write_sets(undo, &before, &after)?;
            store.write_entry(ifindex, Rules::Known(true), |_| {})
        })?;
        Ok(id)
    }

    /// Removes the operator's rule `id` of the pod; false if it has no rule
    /// of that id. Another owner's rule is refused.
    pub fn delete(&mut self, ifindex: u32, id: u32) -> Result<bool, Error> {
        let before = self.view.pod_sets(ifindex)?;
        let owner = before
            .values()
            .flat_map(|s| &s.rules[..(s.n_rules as usize).min(RULES_PER_PREFIX)])
            .find(|r| r.id == id)
            .map(|r| r.owner);
        match owner {
            None => return Ok(false),
            Some(OWNER_OPERATOR) => {}
            Some(raw) => {
                let owner = Owner::from_raw(raw).map_or("another owner", Owner::as_str);
                return Err(Error::Policy(format!(
                    "rule {id} belongs to the {owner}, not the operator: podmeterctl edits \
                     only the operator's rules (the config's come and go with the CNI config)"
                )));
            }
        }
        let mut after = before.clone();
        policy::remove_rules(&mut after, |r| r.id == id);
        self.atomically(|store, undo| {
            store.write_sets(undo, &before, &after)?;
            store.write_entry(ifindex, Rules::Known(!after.is_empty()), |_| {})
        })?;
        Ok(true)
    }

    /// Sets the operator's default of one direction.
    pub fn set_default(
        &mut self,
        ifindex: u32,
        direction: Direction,
        action: Action,
    ) -> Result<(), Error> {
        self.write_entry(ifindex, Rules::Unknown, |e| {
            e.owner_default[usize::from(OWNER_OPERATOR - 1)][direction as usize] = action as u8 + 1;
        })
    }

    /// Replaces the pod's kubernetes tier whole: its isolation and rules.
    /// New and changed entries are written first, stale ones removed, then
    /// the policy entry.
    pub fn apply_kubernetes(&mut self, ifindex: u32, policy: &KubePodPolicy) -> Result<(), Error> {
        for rule in &policy.rules {
            rule.validate().map_err(|e| Error::Policy(e.0))?;
        }
        let before = self.view.pod_k8s_entries(ifindex)?;
        let after: Entries<K8sRuleKeyData, K8sRule> = policy
            .rules
            .iter()
            .flat_map(|r| r.entries(ifindex))
            .map(|(k, v)| ((k.prefix_len(), k.data()), v))
            .collect();
        let isolated = policy.isolated.map(u8::from);
        self.atomically(|store, undo| {
            for ((len, data), value, was) in diff(&before, &after) {
                store.put(
                    undo,
                    Step::K8s(Key::new(len, data), value),
                    Step::K8s(Key::new(len, data), was),
                )?;
            }
            store.write_entry(ifindex, Rules::Unknown, |e| e.k8s_isolated = isolated)
        })
    }

    /// Replaces who every remote address is, node-wide (the agent's).
    /// Isolated pods meet the policy again at their flows' next packet.
    pub fn replace_peers(&mut self, peers: &[(IpNet, Peer)]) -> Result<(), Error> {
        self.node_wide()?;
        let mut after = BTreeMap::new();
        for (net, peer) in peers {
            if net.trunc() != *net {
                return Err(Error::Policy(format!("peer CIDR {net} has host bits set")));
            }
            let key = policy_k8s::peer_key(net);
            after.insert((key.prefix_len(), key.data()), *peer);
        }
        let before = self.view.all_peers()?;
        let changes = diff(&before, &after);
        if changes.is_empty() {
            return Ok(());
        }
        let isolated = self.view.isolated_pods()?;
        self.atomically(|store, undo| {
            for ((len, data), value, was) in changes {
                store.put(
                    undo,
                    Step::Peers(Key::new(len, data), value),
                    Step::Peers(Key::new(len, data), was),
                )?;
            }
            for ifindex in isolated {
                store.write_entry(ifindex, Rules::Known(true), |_| {})?;
            }
            Ok(())
        })
    }

    /// Replaces the NetworkPolicy names (`namespace/name` by index) that
    /// `policy list` shows, node-wide.
    pub fn replace_policy_names(&mut self, names: &[(u32, String)]) -> Result<(), Error> {
        self.node_wide()?;
        let mut after = BTreeMap::new();
        for (index, name) in names {
            let mut raw = K8sPolicyName {
                name: [0; K8S_POLICY_NAME_LEN],
            };
            if name.len() >= K8S_POLICY_NAME_LEN {
                return Err(Error::Policy(format!(
                    "NetworkPolicy name {name:?} is longer than {} bytes",
                    K8S_POLICY_NAME_LEN - 1
                )));
            }
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            after.insert(*index, raw);
        }
        let before = self.view.all_names()?;
        self.atomically(|store, undo| {
            for (index, value, was) in diff(&before, &after) {
                store.put(undo, Step::Names(index, value), Step::Names(index, was))?;
            }
            Ok(())
        })
    }

    fn node_wide(&self) -> Result<(), Error> {
        if self.held.lock().is_exclusive() {
            return Ok(());
        }
        Err(Error::Policy(
            "node-wide policy maps are edited under the exclusive pin lock only".to_owned(),
        ))
    }

    /// Writes the admin rule sets that differ between `before` and `after`.
    fn write_sets(&mut self, undo: &mut Undo, before: &Sets, after: &Sets) -> Result<(), Error> {
        for ((len, data), value, was) in diff(before, after) {
            self.put(
                undo,
                Step::Rules(Key::new(len, data), value),
                Step::Rules(Key::new(len, data), was),
            )?;
        }
        Ok(())
    }

    /// Rewrites the pod's policy entry with `change` applied, the effective
    /// defaults recomputed and the next generation: flows allowed under the
    /// previous one meet the policy again at their next packet. The pod's
    /// flow table is made first if it has none. A pod whose policy lets
    /// everything through (no admin rules, no deny default, not isolated)
    /// gets no entry: without one, the programs only count.
    fn write_entry(
        &mut self,
        ifindex: u32,
        rules: Rules,
        change: impl FnOnce(&mut PolicyEntry),
    ) -> Result<(), Error> {
        let current = self.view.entry(ifindex)?;
        let mut entry = current.unwrap_or_default();
        change(&mut entry);
        entry.default_action = policy::effective_defaults(&entry).map(|a| a as u8);
        let open = entry.k8s_isolated == [0; 2]
            && entry
                .owner_default
                .iter()
                .flatten()
                .all(|d| *d != Action::Deny as u8 + 1);
        // Admin rules always come with an entry: without one there are
        // none, and the trie is read only where the answer matters.
        let idle = open
            && match rules {
                Rules::Known(has) => !has,
                Rules::Unknown => current.is_none() || self.view.pod_sets(ifindex)?.is_empty(),
            };
        if idle {
            return self.view.clear(ifindex);
        }
        self.view.flows.ensure(ifindex)?;
        entry.generation = match current {
            Some(e) => e.generation.wrapping_add(1),
            // From the clock: a pod whose policy was removed and made again
            // must not meet its old generation in a CPU's flow cache.
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32),
        };
        self.view
            .policy
            .insert(ifindex, entry, 0)
            .map_err(|e| self.view.error(POLICY_MAP, e))
    }

    /// Runs `change`; if it fails, puts back everything it wrote.
    fn atomically<T>(
        &mut self,
        change: impl FnOnce(&mut Self, &mut Undo) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut undo = Undo::default();
        let result = change(self, &mut undo);
        if result.is_err() {
            for step in undo.0.into_iter().rev() {
                // Putting back what was there needs no new entry, so it does
                // not fail for want of room; a map error here would have
                // failed the change's own writes first.
                let _ = self.write(&step);
            }
        }
        result
    }

    /// Writes `step`, noting in `undo` the `before` to put back.
    fn put(&mut self, undo: &mut Undo, step: Step, before: Step) -> Result<(), Error> {
        self.write(&step)?;
        undo.0.push(before);
        Ok(())
    }

    fn write(&mut self, step: &Step) -> Result<(), Error> {
        let v = &mut self.view;
        let (result, map, capacity) = match step {
            Step::Rules(k, set) => (upsert(&mut v.rules, k, set), RULES_MAP, MAX_RULE_PREFIXES),
            Step::K8s(k, rule) => (
                upsert(&mut v.k8s_rules, k, rule),
                K8S_RULES_MAP,
                MAX_K8S_RULES,
            ),
            Step::Peers(k, peer) => (upsert(&mut v.peers, k, peer), PEERS_MAP, MAX_PEERS),
            Step::Names(k, name) => (
                match name {
                    Some(n) => v.names.insert(k, n, 0),
                    None => ignore_missing(v.names.remove(k)),
                },
                K8S_POLICIES_MAP,
                MAX_K8S_POLICIES,
            ),
        };
        result.map_err(|e| match e {
            MapError::SyscallError(ref s) if s.io_error.raw_os_error() == Some(libc::ENOSPC) => {
                table_full(map, capacity)
            }
            e => v.error(map, e),
        })
    }
}

/// The owner byte of an admin owner; the kubernetes tier has its own call.
fn admin_owner(owner: Owner) -> Result<u8, Error> {
    owner.raw().ok_or_else(|| {
        Error::Policy("kubernetes rules are applied with apply_kubernetes".to_owned())
    })
}

/// Writes `value` at `key` of a trie (`None`: removes it).
fn upsert<K: aya::Pod, V: aya::Pod>(
    map: &mut aya::maps::lpm_trie::LpmTrie<aya::maps::MapData, K, V>,
    key: &Key<K>,
    value: &Option<V>,
) -> Result<(), MapError> {
    match value {
        Some(v) => map.insert(key, v, 0),
        None => ignore_missing(map.remove(key)),
    }
}

/// What to write to turn `before` into `after`: `(key, new value, old
/// value)`, new and changed entries first, removals last.
fn diff<K: Ord + Copy, V: PartialEq + Copy>(
    before: &BTreeMap<K, V>,
    after: &BTreeMap<K, V>,
) -> Vec<(K, Option<V>, Option<V>)> {
    let upserts = after
        .iter()
        .filter(|(k, v)| before.get(k) != Some(v))
        .map(|(k, v)| (*k, Some(*v), before.get(k).copied()));
    let removals = before
        .iter()
        .filter(|(k, _)| !after.contains_key(k))
        .map(|(k, v)| (*k, None, Some(*v)));
    upserts.chain(removals).collect()
}

/// A full table, written as the README writes its limit (65,536).
fn table_full(map: &str, capacity: u32) -> Error {
    let (k, units) = (capacity / 1000, capacity % 1000);
    if map == RULES_MAP {
        return Error::Policy(format!(
            "the rule table is full: all {k},{units:03} CIDR entries per node are \
             in use (one per pod, direction and CIDR; a rule for any address \
             takes one per family)"
        ));
    }
    Error::Policy(format!(
        "{map} is full: all {k},{units:03} entries per node are in use"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_writes_new_and_changed_entries_before_removals() {
        let before = BTreeMap::from([(1, 'a'), (2, 'b'), (3, 'c')]);
        let after = BTreeMap::from([(2, 'B'), (3, 'c'), (4, 'd')]);
        assert_eq!(
            diff(&before, &after),
            vec![
                (2, Some('B'), Some('b')),
                (4, Some('d'), None),
                (1, None, Some('a'))
            ]
        );
        assert!(diff(&after, &after).is_empty());
    }
}
