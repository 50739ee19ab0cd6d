//! STATUS: can this node service an ADD of this config? It can if the node
//! offers what the config asks (see [`preflight`]) and the IPAM is ready.

use super::{preflight, Invocation};
use crate::{error::PluginError, net::netns::Netlink};

pub fn status(inv: &Invocation) -> Result<(), PluginError> {
    Netlink::open()
        .map_err(PluginError::from)
        .and_then(|netlink| preflight::node_ready(inv, &netlink))
        .map_err(|e| match e {
            PluginError::NotAvailable(_) => e,
            e => PluginError::NotAvailable(e.to_string()),
        })?;
    inv.ipam
        .status(&inv.ipam_context())
        .map_err(|e| PluginError::NotAvailable(format!("IPAM is not ready: {e}")))
}
