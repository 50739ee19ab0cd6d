//! A pod's policy in the pinned maps: its default actions (`pm_policy`),
//! rules (`pm_rules`, an LPM trie) and flow table ([`crate::flow_tables`]).
//!
//! Every map update is one the programs see whole, in an order that never
//! opens or closes a pod by mistake: a rule is written before the pod's
//! policy entry that makes the programs look at rules (and so is the pod's
//! flow table), and the entry goes first when the pod's policy is removed.
//! A change (a rule added or deleted, a config's policy applied) is all or
//! nothing: if a write fails (the table is full), the rule sets written
//! before it are put back as they were, and the policy entry, written last,
//! bumps the generation once. Edits of the same pin path, and DEL, are
//! serialized by the caller holding [`crate::lock::PinLock`] (exclusive for
//! an edit).

use std::{cell::RefCell, collections::BTreeSet};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap, MapData, MapError,
};

use crate::{
    abi::{
        Action, Direction, Flow, FlowKey, PolicyEntry, RuleKeyData, RuleSet, MAX_RULE_PREFIXES,
        RULES_PER_PREFIX,
    },
    flow_tables::{self, FlowTables},
    maps::open_typed,
    pin_dir,
    pins::{PinLayout, POLICY_MAP, RULES_MAP},
    pod_keys::PodKeys,
    policy::{self, PodPolicy, Probe, Rule, RuleSpec, Verdict},
    registry::{ignore_missing, with_map},
    Error,
};

type PolicyMap = HashMap<MapData, u32, PolicyEntry>;
type RulesMap = LpmTrie<MapData, RuleKeyData, RuleSet>;

/// What one change overwrote in `pm_rules` (`None`: the key was free), to
/// put back in reverse order if a later step of the change fails.
#[derive(Default)]
struct Undo(Vec<(Key<RuleKeyData>, Option<RuleSet>)>);

pub struct PolicyStore {
    layout: PinLayout,
    policy: PolicyMap,
    rules: RulesMap,
    flows: FlowTables,
}

impl PolicyStore {
    pub fn open(layout: &PinLayout) -> Result<Self, Error> {
        pin_dir::check(layout)?;
        Ok(Self {
            layout: layout.clone(),
            policy: open_typed(layout, POLICY_MAP)?,
            rules: open_typed(layout, RULES_MAP)?,
            flows: FlowTables::open(layout)?,
        })
    }

    fn error(&self, map: &str, source: MapError) -> Error {
        Error::Map {
            path: self.layout.map(map),
            source,
        }
    }

    /// The pod's default actions (receive, transmit); `None` if it has no
    /// policy, which lets everything through.
    pub fn defaults(&self, ifindex: u32) -> Result<Option<[Action; 2]>, Error> {
        match self.policy.get(&ifindex, 0) {
            Ok(entry) => Ok(Some(
                entry
                    .default_action
                    .map(|raw| Action::from_raw(raw).unwrap_or(Action::Deny)),
            )),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(self.error(POLICY_MAP, e)),
        }
    }

    pub fn set_default(
        &mut self,
        ifindex: u32,
        direction: Direction,
        action: Action,
    ) -> Result<(), Error> {
        let mut defaults = self.defaults(ifindex)?.unwrap_or([Action::Allow; 2]);
        defaults[direction as usize] = action;
        self.write_defaults(ifindex, defaults)?;
        self.drop_policy_if_idle(ifindex)
    }

    /// Writes the pod's policy entry with the next generation: flows
    /// allowed under the previous one meet the rules again at their next
    /// packet. The pod's flow table is made first if it has none.
    fn write_defaults(&mut self, ifindex: u32, defaults: [Action; 2]) -> Result<(), Error> {
        self.flows.ensure(ifindex)?;
        let generation = match self.policy.get(&ifindex, 0) {
            Ok(entry) => entry.generation.wrapping_add(1),
            // From the clock: a pod whose policy was removed and made again
            // must not meet its old generation in a CPU's flow cache.
            Err(MapError::KeyNotFound) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32),
            Err(e) => return Err(self.error(POLICY_MAP, e)),
        };
        let entry = PolicyEntry {
            default_action: defaults.map(|a| a as u8),
            generation,
            ..Default::default()
        };
        self.policy
            .insert(ifindex, entry, 0)
            .map_err(|e| self.error(POLICY_MAP, e))
    }

    /// Every rule of the pod, by id.
    pub fn rules(&self, ifindex: u32) -> Result<Vec<Rule>, Error> {
        let mut rules: Vec<Rule> = Vec::new();
        for entry in self.rules.iter() {
            let (key, set) = entry.map_err(|e| self.error(RULES_MAP, e))?;
            let data = key.data();
            if data.ifindex != ifindex {
                continue;
            }
            let Some(direction) = Direction::from_raw(data.direction.into()) else {
                continue;
            };
            let n = (set.n_rules as usize).min(RULES_PER_PREFIX);
            for stored in &set.rules[..n] {
                let decoded =
                    policy::decode(stored, direction, data.family, data.addr, set.prefix_len);
                // A rule for any address is stored once per family.
                if let Some(rule) = decoded.filter(|r| !rules.iter().any(|o| o.id == r.id)) {
                    rules.push(rule);
                }
            }
        }
        rules.sort_by_key(|r| r.id);
        Ok(rules)
    }

    /// Adds a rule and returns its id (one more than the pod's highest).
    pub fn add(
        &mut self,
        ifindex: u32,
        direction: Direction,
        spec: &RuleSpec,
    ) -> Result<u32, Error> {
        spec.validate().map_err(|e| Error::Policy(e.0))?;
        let id = self.rules(ifindex)?.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        self.atomically(|store, undo| {
            store.store_rule(undo, ifindex, direction, spec, id)?;
            let defaults = store.defaults(ifindex)?.unwrap_or([Action::Allow; 2]);
            store.write_defaults(ifindex, defaults)
        })?;
        Ok(id)
    }

    /// Writes rule `id` into its CIDRs' rule sets (without the policy entry
    /// that makes the programs look at them).
    fn store_rule(
        &mut self,
        undo: &mut Undo,
        ifindex: u32,
        direction: Direction,
        spec: &RuleSpec,
        id: u32,
    ) -> Result<(), Error> {
        let entry = spec.entry(id);
        // Every family's set is checked for room before any is written.
        let mut sets = Vec::new();
        for (family, addr, len) in spec.prefixes() {
            let key = policy::rule_key(ifindex, direction, family, addr, len);
            let mut set = self.exact(&key)?.unwrap_or(RuleSet {
                prefix_len: len.into(),
                ..Default::default()
            });
            let n = set.n_rules as usize;
            if n >= RULES_PER_PREFIX {
                return Err(Error::Policy(format!(
                    "{} has {RULES_PER_PREFIX} {} rules already, the limit: \
                     {RULES_PER_PREFIX} rules per CIDR and direction",
                    spec.cidr
                        .map_or("any address".to_owned(), |c| c.to_string()),
                    direction.as_str(),
                )));
            }
            set.rules[n] = entry;
            set.n_rules += 1;
            policy::sort_rules(&mut set.rules[..=n]);
            sets.push((key, set));
        }
        for (key, set) in sets {
            self.put(undo, key, Some(set))?;
        }
        Ok(())
    }

    /// Runs `change`; if it fails, puts back every rule set it wrote.
    fn atomically<T>(
        &mut self,
        change: impl FnOnce(&mut Self, &mut Undo) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut undo = Undo::default();
        let result = change(self, &mut undo);
        if result.is_err() {
            for (key, before) in undo.0.into_iter().rev() {
                // Putting back what was there needs no new entry, so it does
                // not fail for want of room; a map error here would have
                // failed the change's own writes first.
                let _ = self.write_set(&key, before);
            }
        }
        result
    }

    /// Writes `set` at `key` (`None`: removes it), noting in `undo` what
    /// was there.
    fn put(
        &mut self,
        undo: &mut Undo,
        key: Key<RuleKeyData>,
        set: Option<RuleSet>,
    ) -> Result<(), Error> {
        let before = self.exact(&key)?;
        self.write_set(&key, set)?;
        undo.0.push((key, before));
        Ok(())
    }

    fn write_set(&mut self, key: &Key<RuleKeyData>, set: Option<RuleSet>) -> Result<(), Error> {
        let result = match set {
            Some(set) => self.rules.insert(key, set, 0),
            None => ignore_missing(self.rules.remove(key)),
        };
        result.map_err(|e| match e {
            MapError::SyscallError(ref s) if s.io_error.raw_os_error() == Some(libc::ENOSPC) => {
                // Written as the README writes the limit: 65,536.
                let (k, units) = (MAX_RULE_PREFIXES / 1000, MAX_RULE_PREFIXES % 1000);
                Error::Policy(format!(
                    "the rule table is full: all {k},{units:03} CIDR entries per node are \
                     in use (one per pod, direction and CIDR; a rule for any address \
                     takes one per family)"
                ))
            }
            e => self.error(RULES_MAP, e),
        })
    }

    /// Removes rule `id` of the pod; false if it has none such.
    pub fn delete(&mut self, ifindex: u32, id: u32) -> Result<bool, Error> {
        let mut changed = Vec::new();
        for entry in self.rules.iter() {
            let (key, mut set) = entry.map_err(|e| self.error(RULES_MAP, e))?;
            if key.data().ifindex != ifindex {
                continue;
            }
            let n = (set.n_rules as usize).min(RULES_PER_PREFIX);
            let kept: Vec<_> = set.rules[..n]
                .iter()
                .filter(|r| r.id != id)
                .copied()
                .collect();
            if kept.len() < n {
                set.rules = Default::default();
                set.rules[..kept.len()].copy_from_slice(&kept);
                set.n_rules = kept.len() as u32;
                changed.push((key, set));
            }
        }
        let found = !changed.is_empty();
        self.atomically(|store, undo| {
            for (key, set) in changed {
                store.put(undo, key, (set.n_rules > 0).then_some(set))?;
            }
            match store.defaults(ifindex)?.filter(|_| found) {
                Some(defaults) => store.write_defaults(ifindex, defaults),
                None => Ok(()),
            }
        })?;
        self.drop_policy_if_idle(ifindex)?;
        Ok(found)
    }

    /// Replaces whatever policy the pod has with `policy` (the plugin's
    /// config, at ADD, before the pod's links are up).
    pub fn apply(&mut self, ifindex: u32, policy: &PodPolicy) -> Result<(), Error> {
        policy.validate().map_err(|e| Error::Policy(e.0))?;
        self.clear(ifindex)?;
        if policy.is_empty() {
            return Ok(());
        }
        // The pod has no rules now: ids are 1, 2, ... in config order, and
        // the policy entry is written once, after every rule.
        let specs = Direction::ALL
            .into_iter()
            .flat_map(|d| policy.direction(d).rules.iter().map(move |spec| (d, spec)));
        let defaults =
            Direction::ALL.map(|d| policy.direction(d).default_action.unwrap_or(Action::Allow));
        self.atomically(|store, undo| {
            for ((direction, spec), id) in specs.zip(1..) {
                store.store_rule(undo, ifindex, direction, spec, id)?;
            }
            store.write_defaults(ifindex, defaults)
        })
    }

    /// What a packet like `probe` would meet, without sending one: the rule
    /// that decides, or the default. A packet of a live flow opened the
    /// other way passes whatever this says.
    pub fn check(&self, ifindex: u32, probe: &Probe) -> Result<Verdict, Error> {
        let Some(defaults) = self.defaults(ifindex)? else {
            return Ok(Verdict::NoPolicy);
        };
        let failure = RefCell::new(None);
        let found = policy::walk(policy::probe_key(ifindex, probe), probe, |key| {
            match self.rules.get(key, 0) {
                Ok(set) => Some(set),
                Err(MapError::KeyNotFound) => None,
                Err(e) => {
                    failure.replace(Some(e));
                    None
                }
            }
        });
        if let Some(e) = failure.into_inner() {
            return Err(self.error(RULES_MAP, e));
        }
        Ok(
            match found.and_then(|r| Some((r.id, Action::from_raw(r.action)?))) {
                Some((id, action)) => Verdict::Rule { id, action },
                None => Verdict::Default(defaults[probe.direction as usize]),
            },
        )
    }

    /// The pod's tracked flows.
    pub fn flows(&self, ifindex: u32) -> Result<Vec<(FlowKey, Flow)>, Error> {
        self.flows.flows(ifindex)
    }

    /// The rule set stored for exactly this key's CIDR (the trie's lookup
    /// answers the longest prefix holding it, maybe a shorter one).
    fn exact(&self, key: &Key<RuleKeyData>) -> Result<Option<RuleSet>, Error> {
        match self.rules.get(key, 0) {
            Ok(set) if policy::key_prefix(key) == set.prefix_len => Ok(Some(set)),
            Ok(_) | Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(self.error(RULES_MAP, e)),
        }
    }

    /// A pod whose policy lets everything through needs no entry: without
    /// one, the programs only count.
    fn drop_policy_if_idle(&mut self, ifindex: u32) -> Result<(), Error> {
        let idle =
            self.defaults(ifindex)? == Some([Action::Allow; 2]) && self.rules(ifindex)?.is_empty();
        if idle {
            self.clear(ifindex)?;
        }
        Ok(())
    }

    /// Removes the pod's policy entry, rules and flow table, in that order
    /// (as [`forget`], on the maps already open).
    fn clear(&mut self, ifindex: u32) -> Result<(), Error> {
        self.policy
            .remove_pod(ifindex)
            .map_err(|e| self.error(POLICY_MAP, e))?;
        self.rules
            .remove_pod(ifindex)
            .map_err(|e| self.error(RULES_MAP, e))?;
        self.flows.remove(ifindex)
    }
}

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
