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
//! makes the next compile. For those, every local pod that NetworkPolicy
//! selects also has its tier in a file where ADD finds it before the
//! pod's links come up ([`podmeter_conflist::kubernetes_tier`]): such a
//! pod meets its policy from its first packet.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
};

use podmeter_conflist::kubernetes_tier::{self, PodTier};

use podmeter_ebpf::{
    maps::PinnedMaps,
    pins::REGISTRY_MAP,
    policy::{kubernetes::KubePodPolicy, store::PolicyStore},
    PinLayout, PodIdentity,
};

use tracing::info;

use super::{model::Compiled, sink::PolicySink};

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Maps(#[from] podmeter_ebpf::Error),
    #[error("writing the pods' kubernetes tiers in {dir}: {source}")]
    Files { dir: PathBuf, source: io::Error },
}

/// Writes the kubernetes tier of the pods of one pin path.
#[derive(Debug)]
pub struct KernelSink {
    layout: PinLayout,
    /// The IPAM's `dataDir`, where ADD looks for a new pod's tier.
    data_dir: PathBuf,
    /// The tier files as of the last successful apply, by uid.
    files: HashMap<String, PodTier>,
    /// The tier each pod interface has in the kernel, by host ifindex and
    /// container ID (a reused ifindex is another sandbox), as of the last
    /// successful apply.
    applied: HashMap<(u32, String), KubePodPolicy>,
}

impl KernelSink {
    pub fn new(pin_path: &Path, data_dir: &Path) -> Self {
        Self {
            layout: PinLayout::new(pin_path),
            data_dir: data_dir.to_owned(),
            files: HashMap::new(),
            applied: HashMap::new(),
        }
    }

    /// Writes the maps; returns the pin lock, still held (`None` if
    /// nothing is pinned yet).
    fn write_maps(
        &mut self,
        compiled: &Compiled,
    ) -> Result<Option<PolicyStore<'static>>, podmeter_ebpf::Error> {
        // Nothing is loaded before the node's first ADD: no pod to enforce
        // on. That pod's podIPs update makes the next compile, written then.
        if !self.layout.map(REGISTRY_MAP).exists() {
            self.applied.clear();
            return Ok(None);
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
        Ok(Some(store))
    }

    /// One file per local pod that NetworkPolicy selects (a pod without a
    /// file has the empty tier); the files of other pods removed.
    fn write_files(&mut self, compiled: &Compiled) -> Result<(), Error> {
        let dir = kubernetes_tier::dir(&self.data_dir);
        let files = |source| Error::Files {
            dir: dir.clone(),
            source,
        };
        let mut want = HashMap::new();
        for (key, pod) in &compiled.pods {
            if pod.policy == KubePodPolicy::default() {
                continue;
            }
            let Some((namespace, name)) = key.split_once('/') else {
                continue;
            };
            let Some(path) = kubernetes_tier::file(&self.data_dir, &pod.uid) else {
                continue;
            };
            let tier = PodTier {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                policy: pod.policy.clone(),
            };
            if self.files.get(&pod.uid) != Some(&tier) {
                std::fs::create_dir_all(&dir).map_err(files)?;
                write_whole(
                    &path,
                    &serde_json::to_vec(&tier).expect("a tier serializes"),
                )
                .map_err(files)?;
            }
            want.insert(pod.uid.clone(), tier);
        }
        let listed = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.collect::<io::Result<Vec<_>>>().map_err(files)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(files(e)),
        };
        for entry in listed {
            let name = entry.file_name();
            let uid = name.to_str().and_then(|n| n.strip_suffix(".json"));
            if uid.is_none_or(|uid| !want.contains_key(uid)) {
                match std::fs::remove_file(entry.path()) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(files(e)),
                    _ => {}
                }
            }
        }
        self.files = want;
        Ok(())
    }
}

/// Replaces `path` whole: a reader sees the old content or the new one.
fn write_whole(path: &Path, content: &[u8]) -> io::Result<()> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, content)?;
    std::fs::rename(&temp, path)
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
        let _locked = self.write_maps(compiled).inspect_err(|_| {
            // Part of the change may be in the kernel: write every pod next time.
            self.applied.clear();
        })?;
        // Still under the lock (once anything is pinned): no ADD reads a
        // file meanwhile; before, each file is replaced whole anyway. A
        // failure here leaves the kernel's tiers in place; the files are
        // all written again next time.
        self.write_files(compiled)
            .inspect_err(|_| self.files.clear())
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
