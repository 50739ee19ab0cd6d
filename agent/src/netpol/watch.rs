//! The policy watch: Pods, Namespaces and NetworkPolicies (all namespaces)
//! and this node's own Node, each in a reflector store; after changes, a
//! short debounce, then one compile of the whole tier, handed to the
//! [`PolicySink`] if it differs from the last one it took.
//!
//! Fail static: nothing is compiled before every store holds a full list,
//! and a failed list or watch changes no store (kube's reflector swaps a
//! relist in whole at its end), so an unreachable API server leaves the
//! last tier in place, never an empty world that would open or close pods;
//! changes made meanwhile arrive with the relist or resumed watch.

use std::{collections::BTreeSet, future::Future, net::IpAddr, time::Duration};

use futures::{stream::BoxStream, StreamExt};
use k8s_openapi::api::{
    core::v1::{Container, Namespace, Node, Pod},
    networking::v1::NetworkPolicy,
};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::{
    runtime::{
        reflector::{self, Store},
        watcher, WatchStreamExt,
    },
    Api, Client, Resource, ResourceExt,
};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{
    compile::{Compiler, Input},
    metrics::{PolicyMetrics, Stage},
    model::Compiled,
    sink::PolicySink,
};

/// Changes arriving together (a Deployment's pods, a relist) make one compile.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// After a failed write, try again this soon even if nothing changes.
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Pods,
    Namespaces,
    Policies,
    Node,
}

impl Kind {
    const COUNT: usize = 4;

    fn as_str(self) -> &'static str {
        match self {
            Self::Pods => "pods",
            Self::Namespaces => "namespaces",
            Self::Policies => "networkpolicies",
            Self::Node => "this node",
        }
    }
}

enum Signal {
    /// A full list is in the store.
    Synced,
    Changed,
    /// Part of a relist still being buffered.
    Listing,
    Failed(watcher::Error),
}

/// What the watch needs besides the client.
pub struct PolicyWatch<S> {
    pub node_name: String,
    pub sink: S,
    pub metrics: PolicyMetrics,
}

/// The fields a compile reads are kept; the rest of each object (managed
/// fields, annotations, env, volumes, statuses) is dropped before the store
/// keeps one per pod of the cluster.
fn slim_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.annotations_mut().clear();
    if let Some(spec) = pod.spec.as_mut() {
        let slim = |c: &mut Container| Container {
            name: std::mem::take(&mut c.name),
            ports: c.ports.take(),
            restart_policy: c.restart_policy.take(),
            ..Container::default()
        };
        spec.containers = spec.containers.iter_mut().map(slim).collect();
        spec.init_containers = spec
            .init_containers
            .as_mut()
            .map(|list| list.iter_mut().map(slim).collect());
        spec.volumes = None;
    }
    if let Some(status) = pod.status.as_mut() {
        status.conditions = None;
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}

fn slim<K: ResourceExt>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().clear();
}

/// One kind's reflector as a stream of signals.
fn reflect<K>(
    kind: Kind,
    api: Api<K>,
    config: watcher::Config,
    modify: fn(&mut K),
) -> (Store<K>, BoxStream<'static, (Kind, Signal)>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let events = watcher(api, config).modify(modify).default_backoff();
    let signals = reflector::reflector(writer, events).map(move |e| {
        let signal = match e {
            Ok(watcher::Event::InitDone) => Signal::Synced,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Signal::Changed,
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Signal::Listing,
            Err(e) => Signal::Failed(e),
        };
        (kind, signal)
    });
    (store, signals.boxed())
}

/// This node's InternalIPs and ExternalIPs.
fn own_addresses(nodes: &Store<Node>, name: &str) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = nodes
        .state()
        .iter()
        .filter(|n| n.name_any() == name)
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Watches until `shutdown` resolves; an error only if a watch stream ends.
pub async fn run<S: PolicySink>(
    client: Client,
    mut w: PolicyWatch<S>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let all = watcher::Config::default();
    let (pods, s1) = reflect(
        Kind::Pods,
        Api::<Pod>::all(client.clone()),
        all.clone(),
        slim_pod,
    );
    let (namespaces, s2) = reflect(
        Kind::Namespaces,
        Api::<Namespace>::all(client.clone()),
        all.clone(),
        slim,
    );
    let (policies, s3) = reflect(
        Kind::Policies,
        Api::<NetworkPolicy>::all(client.clone()),
        all,
        slim,
    );
    let own = watcher::Config::default().fields(&format!("metadata.name={}", w.node_name));
    let (nodes, s4) = reflect(Kind::Node, Api::<Node>::all(client), own, slim);
    let mut signals = futures::stream::select_all([s1, s2, s3, s4]);
    tokio::pin!(shutdown);

    let mut compiler = Compiler::default();
    let mut synced = BTreeSet::new();
    let mut failing = BTreeSet::new();
    let mut node_addrs = Vec::new();
    let mut due: Option<Instant> = None;
    // The last tier the sink took.
    let mut written: Option<Compiled> = None;
    loop {
        let wait = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = wait => {
                due = None;
                let started = Instant::now();
                let (p, n, np) = (pods.state(), namespaces.state(), policies.state());
                let compiled = compiler.compile(&Input {
                    pods: &p,
                    namespaces: &n,
                    policies: &np,
                    node_name: &w.node_name,
                    node_addrs: &node_addrs,
                });
                w.metrics.compiled(&compiled, started.elapsed().as_secs_f64());
                if written.as_ref() == Some(&compiled) {
                    continue;
                }
                match w.sink.apply(&compiled) {
                    Ok(()) => written = Some(compiled),
                    Err(e) => {
                        w.metrics.error(Stage::Write);
                        warn!(error = %e, retry_in = ?RETRY, "writing the kubernetes tier failed; the last one written stays");
                        due = Some(Instant::now() + RETRY);
                    }
                }
            }
            item = signals.next() => {
                let Some((kind, signal)) = item else {
                    anyhow::bail!("the policy watch ended");
                };
                if let Signal::Failed(e) = &signal {
                    w.metrics.error(Stage::Watch);
                    if failing.insert(kind) {
                        warn!(error = %e, kind = kind.as_str(), "watching for NetworkPolicy failed (retrying); the compiled policy stays as it is");
                    }
                    continue;
                }
                if failing.remove(&kind) {
                    info!(kind = kind.as_str(), "the watch is back");
                }
                match signal {
                    Signal::Synced => {
                        if synced.insert(kind) && synced.len() == Kind::COUNT {
                            info!("pods, namespaces, network policies and this node listed: compiling");
                        }
                    }
                    Signal::Changed if synced.contains(&kind) => {}
                    _ => continue,
                }
                if kind == Kind::Node {
                    let addrs = own_addresses(&nodes, &w.node_name);
                    // Node status updates are frequent; only addresses matter.
                    if addrs == node_addrs && written.is_some() {
                        continue;
                    }
                    node_addrs = addrs;
                }
                if synced.len() == Kind::COUNT && due.is_none() {
                    due = Some(Instant::now() + DEBOUNCE);
                }
            }
        }
    }
}
