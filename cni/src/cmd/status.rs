//! STATUS: can this node service an ADD? It can if the programs load (or
//! are already pinned) and the IPAM is ready.

use podmeter_ebpf::loader;

use super::Invocation;
use crate::error::PluginError;

pub fn status(inv: &Invocation) -> Result<(), PluginError> {
    loader::ensure_loaded(&inv.layout())
        .map_err(|e| PluginError::NotAvailable(format!("cannot load the eBPF programs: {e}")))?;
    inv.ipam
        .status(&inv.ipam_context())
        .map_err(|e| PluginError::NotAvailable(format!("IPAM is not ready: {e}")))
}
