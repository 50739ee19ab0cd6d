//! One routing pass: the routes the node list asks for ([`routes::desired`]),
//! compared with the kernel's ([`RouteTable::list`]), and only the
//! differences applied ([`routes::plan`]). Changes are logged one by one;
//! left-out nodes and conflicts only when they change, since a pass runs on
//! every Node event and periodically. A node that gets no route, or whose
//! route the kernel refuses, is reported per node ([`NodeError`]) and never
//! holds up the others.

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::api::core::v1::Node;
use tracing::{error, info, warn};

use crate::{
    admit::Host,
    metrics::NodeError,
    route_table::{RouteError, RouteTable},
    routes::{self, Op, Skipped},
};

/// The outcome of a pass that could read the table.
#[derive(Debug)]
pub struct Pass {
    /// Routes of ours in the table afterwards.
    pub owned: usize,
    /// Changes that failed (each logged); the others were applied.
    pub failed: usize,
    /// Nodes left out or whose route failed, and why.
    pub node_errors: BTreeSet<NodeError>,
}

pub struct Routing {
    own: String,
    /// What the last pass reported as left out, to log only changes.
    reported: BTreeSet<String>,
}

impl Routing {
    pub fn new(own: String) -> Self {
        Self {
            own,
            reported: BTreeSet::new(),
        }
    }

    pub async fn sync(
        &mut self,
        table: &RouteTable,
        nodes: &[Arc<Node>],
        host: &Host,
    ) -> Result<Pass, RouteError> {
        let desired = routes::desired(nodes, &self.own, host);
        let listed = table.list().await?;
        let found: Vec<routes::Found> = listed.iter().map(|l| l.found.clone()).collect();
        let ops = routes::plan(&found, &desired.routes);

        let mut left_out: BTreeSet<String> =
            desired.skipped.iter().map(Skipped::to_string).collect();
        let mut node_errors: BTreeSet<NodeError> =
            desired.skipped.iter().map(NodeError::skipped).collect();
        let mut failed = 0;
        let mut changed = false;
        for op in &ops {
            let result = match op {
                Op::Replace { dst, via } => {
                    let moved = found.iter().any(|f| f.ours && f.dst == *dst);
                    let (doing, done) = if moved {
                        ("moving", "moved route")
                    } else {
                        ("adding", "added route")
                    };
                    changed = true;
                    let result = table.replace(*dst, via, doing).await;
                    if result.is_err() {
                        node_errors.insert(NodeError::new(&via.node, "route_failed"));
                    }
                    result.map(|()| info!(%dst, gateway = %via.gateway, node = via.node, "{done}"))
                }
                Op::Delete { found: i } => {
                    changed = true;
                    let route = &listed[*i];
                    table.delete(route).await.map(|()| {
                        info!(dst = %route.found.dst, gateway = ?route.found.gateway, "removed route")
                    })
                }
                Op::Conflict { dst, via } => {
                    left_out.insert(format!(
                        "node {}: a route to {dst} that podmeter did not make is in the table (left alone)",
                        via.node
                    ));
                    node_errors.insert(NodeError::new(&via.node, "conflict"));
                    Ok(())
                }
            };
            if let Err(e) = result {
                error!(error = %e, "changing a route failed");
                failed += 1;
            }
        }
        if left_out != self.reported {
            for reason in left_out.difference(&self.reported) {
                warn!(reason, "no route for a node's pod range");
            }
            self.reported = left_out;
        }

        let owned = if changed {
            table.list().await?.iter().filter(|l| l.found.ours).count()
        } else {
            found.iter().filter(|f| f.ours).count()
        };
        Ok(Pass {
            owned,
            failed,
            node_errors,
        })
    }
}
