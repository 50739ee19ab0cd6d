//! What the node must offer for this config: ADD checks it before it
//! touches anything, STATUS reports it, so a config that cannot ADD on this
//! node does not pass STATUS.

use podmeter_ebpf::{
    programs::attach, programs::kernel::Probe, programs::loader, programs::loader::Programs,
    AttachMode,
};

use super::Invocation;
use crate::{
    config::{FromNetconf, PluginConfig},
    error::PluginError,
    masq,
    net::{link::link_by_name, netns::Netlink, NetError},
    timing,
};

/// Checks the kernel (release, BTF; `br_netfilter` for `bridgeNetfilter`),
/// loads (or reopens) the programs, and checks the attach mode, `nft` for
/// `ipMasq` and that the bridge's name is free or a bridge.
pub fn node_ready(inv: &Invocation, netlink: &Netlink) -> Result<Programs, PluginError> {
    let kernel = Probe::default();
    kernel.programs().map_err(not_available)?;
    if inv.plugin.bridge_netfilter {
        kernel
            .br_netfilter()
            .map_err(|e| not_available(format!("bridgeNetfilter: {e}")))?;
    }
    let programs = loader::ensure_loaded(&inv.layout())?;
    timing::mark("programs: load or reopen");
    let mode = inv.plugin.tc_attach_mode;
    if mode == AttachMode::Tcx && !attach::tcx_available() {
        return Err(PluginError::NotAvailable(
            "tcAttachMode \"tcx\" needs Linux 6.6 or later: use \"auto\" or \"clsact\"".into(),
        ));
    }
    if PluginConfig::ip_masq(inv.conf) {
        masq::check_available()?;
    }
    let name = inv.plugin.bridge.clone();
    let link = netlink.run(|h| async move { link_by_name(&h, &name).await })?;
    if let Some(link) = link.filter(|l| l.kind.as_deref() != Some("bridge")) {
        return Err(PluginError::Net(NetError::NotABridge {
            name: link.name,
            kind: link.kind.unwrap_or_else(|| "link without a kind".into()),
        }));
    }
    timing::mark("preflight: netlink, nft");
    Ok(programs)
}

fn not_available(e: impl ToString) -> PluginError {
    PluginError::NotAvailable(e.to_string())
}
