//! GC: remove what belongs to this network but to no attachment the runtime
//! still knows (leases, registry entries, counters, links, attachments).

use std::collections::HashSet;

use podmeter_ebpf::attach;

use rscni_plugin::types::{GcAttachment, NetConf};

use super::{del::remove_pod_interface, Invocation};
use crate::{config::PluginConfig, error::PluginError, masq};

/// The spec's key, and the one libcni used before 1.1.0 was final.
const LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

pub fn gc(inv: &Invocation) -> Result<(), PluginError> {
    let valid = valid_attachments(inv.conf)?;
    let keep: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    // Keep going past a failure, as the spec asks, and report the first.
    let mut first_error = None;
    let mut note = |r: Result<(), PluginError>| {
        if let Err(e) = r {
            tracing::error!("gc: {e}");
            first_error.get_or_insert(e);
        }
    };

    if let Some(maps) = inv.pinned_maps()? {
        let layout = inv.layout();
        let mut registered = HashSet::new();
        for (ifindex, pod) in maps.pods()? {
            if pod.network != inv.network()
                || keep.contains(&(pod.container_id.as_str(), pod.ifname.as_str()))
            {
                registered.insert(ifindex);
                continue;
            }
            tracing::info!("gc: removing {}/{}", pod.container_id, pod.ifname);
            note(remove_pod_interface(
                &layout,
                Some(ifindex),
                &pod.host_ifname,
            ));
            if PluginConfig::ip_masq(inv.conf) {
                note(masq::del(inv.network(), &pod.container_id, &pod.ifname));
            }
        }
        note(attach::remove_orphan_links(&layout, &registered).map_err(Into::into));
    }
    note(inv.ipam.gc(&inv.ipam_context(), &valid).map_err(Into::into));
    first_error.map_or(Ok(()), Err)
}

fn valid_attachments(conf: &NetConf) -> Result<Vec<GcAttachment>, PluginError> {
    if let Some(valid) = &conf.valid_attachments {
        return Ok(valid.clone());
    }
    match conf.custom.get(LEGACY_ATTACHMENTS_KEY) {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| PluginError::Config(format!("{LEGACY_ATTACHMENTS_KEY}: {e}"))),
        None => Err(PluginError::Config(
            "GC needs cni.dev/valid-attachments in the config".into(),
        )),
    }
}
