//! The node watch: every Node in a reflector store, and after every change
//! the store takes, a reconcile of this node's conflist (from its own Node)
//! and of its routes to the other nodes' pod ranges (from all of them).
//!
//! kube's watcher relists after a `410 Gone` and rewatches from the last
//! resource version after a dropped connection, so changes made while the
//! API server was unreachable still arrive; errors are logged and retried
//! with its default backoff, never fatal. Meanwhile nothing is reconciled:
//! the conflist and routes stay as the last full node list left them (fail
//! static), rather than being judged against a list that may be stale.

use std::{collections::BTreeSet, future::Future, path::PathBuf, sync::Arc, time::Duration};

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::{
    runtime::{
        reflector::{self, ObjectRef, Store},
        watcher, WatchStreamExt,
    },
    Api, Client, ResourceExt,
};
use tracing::{error, info, warn};

use crate::{
    admit::{check_range, Host},
    conflist::{self, Options, DEFAULT_BRIDGE},
    install::{self, Outcome},
    metrics::{Metrics, NodeError, Stage},
    ranges::pod_ranges,
    ready::Readiness,
    route_table::RouteTable,
    routing::Routing,
};

/// After a failed reconcile (a write error), try again this soon even if no
/// Node changes: Node objects may not change for minutes.
const RETRY: Duration = Duration::from_secs(5);

/// Routes are checked this often even without a Node event: a route someone
/// deleted, or the kernel dropped with its link, comes back.
const RESYNC: Duration = Duration::from_secs(30);

/// What keeps this node's conflist and routes in line with the Node objects.
pub struct Reconciler {
    pub node_name: String,
    pub conflist: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub pin_path: PathBuf,
    pub ipam_data_dir: PathBuf,
    pub cluster_cidrs: Vec<IpNet>,
    pub readiness: Readiness,
    /// Read on every pass for what of this node no Node may claim; changed
    /// only by `routing`.
    pub table: RouteTable,
    /// `None` with `--routes.enabled=false`.
    pub routing: Option<Routing>,
    pub metrics: Arc<Metrics>,
}

/// Where the last reconcile left the node, to log changes once rather than
/// on every event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    NodeMissing,
    NoPodCidrs,
    /// Unparsable or refused ([`check_range`]): no conflist.
    BadPodCidrs {
        reason: &'static str,
        error: String,
    },
    Written(Vec<IpNet>, bool),
    Failed(String),
    /// This node's addresses and routes could not be read: nothing judged,
    /// nothing changed.
    HostUnreadable(String),
}

/// Watches Nodes until `shutdown` resolves.
pub async fn run(
    client: Client,
    mut reconciler: Reconciler,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (store, writer) = reflector::store();
    let nodes = watcher(Api::<Node>::all(client), watcher::Config::default())
        // Node objects are large mostly for what the agent never reads (the
        // image list, managed fields): dropped before the store keeps one
        // per node of the cluster.
        .modify(|node| {
            node.managed_fields_mut().clear();
            if let Some(status) = node.status.as_mut() {
                status.images = None;
            }
        })
        .default_backoff();
    let events = reflector::reflector(writer, nodes);
    tokio::pin!(events, shutdown);
    let mut synced = false;
    let mut failing = false;
    let mut last: Option<State> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = retry => {}
            event = events.next() => {
                if matches!(event, Some(Ok(_))) && std::mem::take(&mut failing) {
                    info!("the node watch is back");
                }
                match event {
                    // The store holds a full list only from the first
                    // InitDone on; before, a missing node may just not be
                    // listed yet, and routes to it would be removed.
                    Some(Ok(watcher::Event::InitDone)) => {
                        if !synced {
                            info!("node list synced");
                        }
                        synced = true;
                    }
                    Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) if synced => {}
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        failing = true;
                        reconciler.metrics.error(Stage::Watch);
                        warn!(
                            error = %e,
                            state = if synced { "keeping the conflist and routes of the last node list" } else { "not synced yet" },
                            "watching nodes (retrying)"
                        );
                        continue;
                    }
                    None => anyhow::bail!("the node watch ended"),
                }
            }
        }
        let (state, routes_ok) = reconciler.reconcile(&store).await;
        let failed = matches!(state, State::Failed(_)) || !routes_ok;
        let wait = if failed { RETRY } else { RESYNC };
        // Without routing, only a failed write needs another pass.
        retry_at =
            (failed || reconciler.routing.is_some()).then(|| tokio::time::Instant::now() + wait);
        if last.as_ref() != Some(&state) {
            reconciler.report(&state);
            last = Some(state);
        }
    }
}

impl Reconciler {
    /// The conflist's state, and whether the routes were all applied.
    async fn reconcile(&mut self, nodes: &Store<Node>) -> (State, bool) {
        // Without this node's addresses and routes no range can be judged:
        // nothing is changed until they can be read.
        let host = match self.table.host(DEFAULT_BRIDGE, &self.cluster_cidrs).await {
            Ok(host) => host,
            Err(e) => {
                self.metrics.error(Stage::Routes);
                return (State::HostUnreadable(e.to_string()), false);
            }
        };
        let state = self.reconcile_conflist(nodes, &host);
        let (routes_ok, mut node_errors) = self.reconcile_routes(nodes, &host).await;
        if let State::BadPodCidrs { reason, .. } = &state {
            node_errors.insert(NodeError::new(&self.node_name, reason));
        }
        self.metrics.set_node_errors(&node_errors);
        if matches!(state, State::Failed(_)) {
            self.metrics.error(Stage::Conflist);
        } else if routes_ok {
            self.metrics.synced_now();
        }
        (state, routes_ok)
    }

    /// One routing pass over the store: whether it applied everything, and
    /// the nodes it left out. Readiness needs only the table to be readable:
    /// a node left out or a route the kernel refused is that node's problem.
    async fn reconcile_routes(
        &mut self,
        nodes: &Store<Node>,
        host: &Host,
    ) -> (bool, BTreeSet<NodeError>) {
        let nodes = nodes.state();
        self.metrics.set_nodes(nodes.len());
        let Some(routing) = self.routing.as_mut() else {
            return (true, BTreeSet::new());
        };
        let (read, ok, node_errors) = match routing.sync(&self.table, &nodes, host).await {
            Ok(pass) => {
                self.metrics.set_routes(pass.owned);
                (true, pass.failed == 0, pass.node_errors)
            }
            Err(e) => {
                error!(error = %e, retry_in = ?RETRY, "syncing routes failed");
                (false, false, BTreeSet::new())
            }
        };
        if !ok {
            self.metrics.error(Stage::Routes);
        }
        self.readiness.set_routes(read);
        (ok, node_errors)
    }

    fn reconcile_conflist(&self, nodes: &Store<Node>, host: &Host) -> State {
        let state = match nodes.get(&ObjectRef::new(&self.node_name)) {
            // Deleted, or not registered yet: keep whatever conflist there
            // is; a re-registered node gets its ranges rewritten.
            None => State::NodeMissing,
            Some(node) => match own_ranges(&node, host) {
                Err(bad) => bad,
                Ok(ranges) if ranges.is_empty() => State::NoPodCidrs,
                Ok(ranges) => self.write(ranges),
            },
        };
        self.readiness
            .set_conflist(matches!(state, State::Written(..)));
        state
    }

    fn write(&self, ranges: Vec<IpNet>) -> State {
        let portmap = self.cni_bin_dir.join("portmap").is_file();
        let options = Options {
            pin_path: self.pin_path.clone(),
            ipam_data_dir: self.ipam_data_dir.clone(),
            cluster_cidrs: self.cluster_cidrs.clone(),
            portmap,
        };
        let text = conflist::render(&ranges, &options);
        match install::replace(&self.conflist, text.as_bytes(), 0o644) {
            Ok(Outcome::Written) => {
                info!(path = %self.conflist.display(), ranges = ?ranges, portmap, "wrote the conflist");
                State::Written(ranges, portmap)
            }
            Ok(Outcome::Unchanged) => State::Written(ranges, portmap),
            Err(e) => State::Failed(e.to_string()),
        }
    }

    fn report(&self, state: &State) {
        let node = &self.node_name;
        match state {
            State::NodeMissing => {
                warn!(node, "this node's Node object is not there (yet); waiting")
            }
            State::NoPodCidrs => info!(node, "the node has no spec.podCIDRs yet; waiting"),
            State::BadPodCidrs { reason, error } => {
                error!(node, reason, %error, "the node's pod ranges cannot be used: no conflist; waiting for a change")
            }
            State::Written(ranges, portmap) => {
                if !portmap {
                    warn!(bin_dir = %self.cni_bin_dir.display(), "no portmap plugin: hostPort is not available to pods");
                }
                info!(node, ranges = ?ranges, "the conflist is current");
            }
            State::Failed(e) => {
                error!(node, error = %e, retry_in = ?RETRY, "writing the conflist failed")
            }
            State::HostUnreadable(e) => {
                error!(node, error = %e, retry_in = ?RETRY, "reading this node's addresses and routes failed; conflist and routes left as they are")
            }
        }
    }
}

/// This node's pod ranges, if each may be a pod range here: a refused one
/// gets no conflist (the plugin would refuse it too, or worse, take this
/// node's own network onto the pod bridge).
fn own_ranges(node: &Node, host: &Host) -> Result<Vec<IpNet>, State> {
    let ranges = pod_ranges(node).map_err(|e| State::BadPodCidrs {
        reason: "bad_pod_cidrs",
        error: e.to_string(),
    })?;
    for range in &ranges {
        check_range(*range, host).map_err(|refused| State::BadPodCidrs {
            reason: refused.reason(),
            error: refused.to_string(),
        })?;
    }
    Ok(ranges)
}
