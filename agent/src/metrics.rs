//! The agent's own state on `/metrics` (OpenMetrics text): how many routes
//! it owns, how many nodes it sees, when routes last matched the node list
//! and how often syncing failed, and the NetworkPolicy compiler's family.
//! Pod metrics are the exporter's.

use std::{
    collections::BTreeSet,
    sync::{atomic::AtomicU64, Arc},
    time::SystemTime,
};

use axum::{
    extract::State,
    http::{header::CONTENT_TYPE, StatusCode},
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use podmeter_agent::netpol::metrics::PolicyMetrics;

use crate::routes::Skipped;

const CONTENT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What failed to sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Listing or watching Nodes (the API server unreachable, say).
    Watch,
    /// Writing this node's conflist.
    Conflist,
    /// Listing or changing routes, or a route left out (see the log).
    Routes,
}

impl Stage {
    const ALL: [Self; 3] = [Self::Watch, Self::Conflist, Self::Routes];

    fn label(self) -> StageLabel {
        let stage = match self {
            Self::Watch => "watch",
            Self::Conflist => "conflist",
            Self::Routes => "routes",
        };
        StageLabel { stage }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

/// A node this agent does not route to (or not fully), and why: one series
/// per problem while it lasts, gone when it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
pub struct NodeError {
    pub node: String,
    pub reason: &'static str,
    /// The other node of an overlap; empty otherwise.
    pub peer: String,
}

impl NodeError {
    pub fn new(node: &str, reason: &'static str) -> Self {
        Self {
            node: node.to_owned(),
            reason,
            peer: String::new(),
        }
    }

    pub fn skipped(skipped: &Skipped) -> Self {
        Self {
            peer: skipped.peer().unwrap_or_default().to_owned(),
            ..Self::new(skipped.node(), skipped.reason())
        }
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    routes: Gauge,
    nodes: Gauge,
    last_sync: Gauge<f64, AtomicU64>,
    errors: Family<StageLabel, Counter>,
    node_errors: Family<NodeError, Gauge>,
    /// The NetworkPolicy compiler's, registered with the rest.
    pub policy: PolicyMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("podmeter_agent");
        let routes = Gauge::default();
        registry.register(
            "routes",
            "Routes to other nodes' pod ranges in this node's table, made by this agent",
            routes.clone(),
        );
        let nodes = Gauge::default();
        registry.register("nodes", "Node objects in the agent's view", nodes.clone());
        let last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_sync_timestamp_seconds",
            "When routes and conflist last fully matched the node list (Unix time; 0: never)",
            last_sync.clone(),
        );
        let errors = Family::<StageLabel, Counter>::default();
        registry.register(
            "sync_errors",
            "Failed attempts to sync, by stage (watch, conflist, routes)",
            errors.clone(),
        );
        let node_errors = Family::<NodeError, Gauge>::default();
        registry.register(
            "node_errors",
            "Nodes whose pod ranges or InternalIPs are not used (1 while so), by node, reason and the other node of an overlap",
            node_errors.clone(),
        );
        // Every stage shows from the start, at 0: a rate over a series
        // that appears with its first error misses that error.
        for stage in Stage::ALL {
            drop(errors.get_or_create(&stage.label()));
        }
        let policy = PolicyMetrics::register(&mut registry);
        Self {
            registry,
            routes,
            nodes,
            last_sync,
            errors,
            node_errors,
            policy,
        }
    }
}

impl Metrics {
    pub fn set_routes(&self, n: usize) {
        self.routes.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_nodes(&self, n: usize) {
        self.nodes.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn synced_now(&self) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_sync.set(now);
    }

    pub fn error(&self, stage: Stage) {
        self.errors.get_or_create(&stage.label()).inc();
    }

    /// The node problems of the last pass, replacing the previous ones.
    pub fn set_node_errors(&self, errors: &BTreeSet<NodeError>) {
        self.node_errors.clear();
        for e in errors {
            self.node_errors.get_or_create(e).set(1);
        }
    }
}

pub async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    let mut body = String::new();
    match encode(&mut body, &metrics.registry) {
        Ok(()) => ([(CONTENT_TYPE, CONTENT)], body).into_response(),
        // Only a failing fmt::Write fails; a String never does.
        Err(std::fmt::Error) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_there_from_the_start() {
        let m = Metrics::default();
        m.set_routes(4);
        m.set_nodes(3);
        m.error(Stage::Routes);
        m.set_node_errors(&[NodeError::new("gone", "conflict")].into());
        m.set_node_errors(
            &[
                NodeError::new("x", "special_range"),
                NodeError {
                    peer: "b".into(),
                    ..NodeError::new("aaa", "overlap")
                },
            ]
            .into(),
        );
        let mut text = String::new();
        encode(&mut text, &m.registry).unwrap();
        for line in [
            "podmeter_agent_routes 4",
            "podmeter_agent_nodes 3",
            "podmeter_agent_last_sync_timestamp_seconds 0.0",
            "podmeter_agent_sync_errors_total{stage=\"watch\"} 0",
            "podmeter_agent_sync_errors_total{stage=\"routes\"} 1",
            "podmeter_agent_node_errors{node=\"x\",reason=\"special_range\",peer=\"\"} 1",
            "podmeter_agent_node_errors{node=\"aaa\",reason=\"overlap\",peer=\"b\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // A problem that went away leaves no series behind.
        assert!(!text.contains("gone"), "{text}");
    }
}
