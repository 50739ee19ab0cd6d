//! The kernel writer of the kubernetes tier: a [`PolicySink`] that writes a
//! [`Compiled`] tier into the node's pinned maps with the `ebpf` crate's
//! policy store, so that NetworkPolicy is enforced by the pods' programs.
//!
//! One [`apply`](PolicySink::apply) runs under one exclusive pin lock (no
//! ADD, DEL or GC in between): the policy names, the peers, then each
//! registered pod's tier. A pod is found in the registry by its
//! `namespace/name` and uid; every interface it has (multus-like) gets the
//! tier; a registered pod that `Compiled` does not list gets an empty tier
//! (not isolated, no rules). Only the tiers that changed since the last
//! successful apply are written; after a failure nothing is assumed and
//! the next apply writes every pod again. Pods that ADD has not registered
//! yet are skipped: the update of their `status.podIPs`, which follows ADD,
//! makes the next compile.

use std::{collections::HashMap, path::Path};

use podmeter_ebpf::{
    maps::PinnedMaps,
    pins::REGISTRY_MAP,
    policy::{kubernetes::KubePodPolicy, store::PolicyStore},
    Error, PinLayout, PodIdentity,
};

use tracing::info;

use super::{model::Compiled, sink::PolicySink};

/// Writes the kubernetes tier of the pods of one pin path.
#[derive(Debug)]
pub struct KernelSink {
    layout: PinLayout,
    /// The tier each pod interface has in the kernel, by host ifindex and
    /// container ID (a reused ifindex is another sandbox), as of the last
    /// successful apply.
    applied: HashMap<(u32, String), KubePodPolicy>,
}

impl KernelSink {
    pub fn new(pin_path: &Path) -> Self {
        Self {
            layout: PinLayout::new(pin_path),
            applied: HashMap::new(),
        }
    }

    fn write(&mut self, compiled: &Compiled) -> Result<(), Error> {
        // Nothing is loaded before the node's first ADD: no pod to enforce
        // on. That pod's podIPs update makes the next compile, written then.
        if !self.layout.map(REGISTRY_MAP).exists() {
            self.applied.clear();
            return Ok(());
        }
        let mut store = PolicyStore::lock(&self.layout)?;
        store.replace_policy_names(&compiled.policy_names)?;
        store.replace_peers(&compiled.peers)?;
        // Read under the lock: no ADD or DEL changes the registry meanwhile.
        let registered = PinnedMaps::open_lazy(&self.layout)?.pods()?;
        let empty = KubePodPolicy::default();
        let mut applied = HashMap::with_capacity(registered.len());
        for (ifindex, pod) in registered {
            let want = tier_of(compiled, &pod).unwrap_or(&empty);
            let key = (ifindex, pod.container_id);
            if self.applied.get(&key) != Some(want) {
                store.apply_kubernetes(ifindex, want)?;
            }
            applied.insert(key, want.clone());
        }
        info!(
            policies = compiled.policy_names.len(),
            peers = compiled.peers.len(),
            pod_interfaces = applied.len(),
            written = applied
                .iter()
                .filter(|(k, v)| self.applied.get(k) != Some(v))
                .count(),
            "wrote the kubernetes tier"
        );
        // Interfaces gone since (DEL removed their entries) are forgotten.
        self.applied = applied;
        Ok(())
    }
}

/// The compiled tier of a registered pod interface: the local pod of its
/// `namespace/name` with its uid (a runtime that sends no uid matches by
/// name alone).
fn tier_of<'a>(compiled: &'a Compiled, pod: &PodIdentity) -> Option<&'a KubePodPolicy> {
    if pod.namespace.is_empty() {
        return None;
    }
    let local = compiled
        .pods
        .get(&format!("{}/{}", pod.namespace, pod.pod))?;
    (pod.uid.is_empty() || pod.uid == local.uid).then_some(&local.policy)
}

impl PolicySink for KernelSink {
    type Error = Error;

    fn apply(&mut self, compiled: &Compiled) -> Result<(), Error> {
        let result = self.write(compiled);
        if result.is_err() {
            // Part of the change may be in the kernel: write every pod next time.
            self.applied.clear();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netpol::model::LocalPod;

    fn compiled_with(uid: &str, isolated: bool) -> Compiled {
        let mut compiled = Compiled::default();
        compiled.pods.insert(
            "x/a".into(),
            LocalPod {
                uid: uid.into(),
                ips: vec![],
                policy: KubePodPolicy {
                    isolated: [isolated, false],
                    rules: vec![],
                },
            },
        );
        compiled
    }

    fn registered(namespace: &str, name: &str, uid: &str) -> PodIdentity {
        PodIdentity {
            namespace: namespace.into(),
            pod: name.into(),
            uid: uid.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_registered_pod_gets_the_tier_of_its_name_and_uid() {
        let compiled = compiled_with("u1", true);
        let tier = tier_of(&compiled, &registered("x", "a", "u1"));
        assert_eq!(tier.map(|t| t.isolated), Some([true, false]));
        assert!(
            tier_of(&compiled, &registered("x", "a", "u0")).is_none(),
            "another incarnation of x/a"
        );
        assert!(tier_of(&compiled, &registered("y", "a", "u1")).is_none());
        assert!(tier_of(&compiled, &registered("", "x/a", "u1")).is_none());
        assert!(
            tier_of(&compiled, &registered("x", "a", "")).is_some(),
            "a runtime without K8S_POD_UID"
        );
    }
}
