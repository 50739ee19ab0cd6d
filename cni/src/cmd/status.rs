//! STATUS: can this node service an ADD of this config? It can if the node
//! offers what the config asks (see [`preflight`]) and the IPAM is ready.

use super::{preflight, Invocation};
use crate::error::PluginError;

pub fn status(inv: &Invocation) -> Result<(), PluginError> {
    preflight::node_ready(inv).map_err(|e| match e {
        PluginError::NotAvailable(_) => e,
        e => PluginError::NotAvailable(e.to_string()),
    })?;
    inv.ipam
        .status(&inv.ipam_context())
        .map_err(|e| PluginError::NotAvailable(format!("IPAM is not ready: {e}")))
}
