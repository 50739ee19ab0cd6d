//! GC: remove what belongs to this network but to no attachment the runtime
//! still knows: registered pods, veths an ADD made but died before
//! registering, map entries and link pins left by a process killed halfway,
//! masquerade rules and leases.

use std::collections::{BTreeSet, HashSet};

use podmeter_ebpf::{lock::PinLock, maps::PinnedMaps, programs::attach};
use rscni_plugin::types::{GcAttachment, NetConf};

use super::{
    best_effort::BestEffort,
    del::{forget, remove_pod_interface},
    Invocation,
};
use crate::{
    config::{FromNetconf, PluginConfig},
    error::PluginError,
    masq,
    net::{
        link::{bridge_ports, link_by_index, link_by_name, LinkDetails},
        names::{host_veth_name, is_host_veth_name},
        netns::with_netlink,
    },
};

/// The key the 1.1.0 spec first gave by mistake, for the one libcni always sent
/// (containernetworking/cni#1101); libcni now sends both. A runtime written to
/// the first text may send only this one.
const LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

pub fn gc(inv: &Invocation) -> Result<(), PluginError> {
    let valid = valid_attachments(inv.conf)?;
    let keep: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let mut run = BestEffort::new("GC");
    let layout = inv.layout();
    // ADDs hold this lock shared while they create a pod: what GC finds
    // unregistered below is a leftover, never a pod being made.
    let _lock = run.pins("lock the pin path", PinLock::exclusive(&layout));
    // One handle for the whole GC: each map opened once, when first needed.
    let mut maps = run.pins("check the pin path", PinnedMaps::open_lazy(&layout));

    // Registered pods of this network that the runtime no longer knows.
    let mut registered = HashSet::new();
    let pods = maps.as_ref().map(PinnedMaps::registered);
    let pods = pods.and_then(|p| run.pins("read the registry", p));
    for (ifindex, pod) in pods.unwrap_or_default() {
        if pod.network != inv.network()
            || keep.contains(&(pod.container_id.as_str(), pod.ifname.as_str()))
        {
            registered.insert(ifindex);
            continue;
        }
        tracing::info!("GC: removing {}/{}", pod.container_id, pod.ifname);
        remove_pod_interface(
            &mut run,
            &layout,
            maps.as_mut(),
            &BTreeSet::from([ifindex]),
            &pod.host_ifname,
        );
    }

    // Host veths on our bridge that no one registered, or registered as
    // another network's, and that are no valid attachment's.
    let valid_names: HashSet<String> = keep.iter().map(|(c, i)| host_veth_name(c, i)).collect();
    let bridge = inv.plugin.bridge.clone();
    let ports = run.step(
        "list the bridge's ports",
        with_netlink(|h| async move {
            match link_by_name(&h, &bridge).await? {
                Some(br) => bridge_ports(&h, br.index).await,
                None => Ok(Vec::new()),
            }
        }),
    );
    let orphans = ports
        .unwrap_or_default()
        .into_iter()
        .filter(|l: &LinkDetails| {
            is_host_veth_name(&l.name)
                && !valid_names.contains(&l.name)
                && !registered.contains(&l.index)
        });
    for veth in orphans {
        tracing::info!("GC: removing unregistered veth {}", veth.name);
        remove_pod_interface(
            &mut run,
            &layout,
            maps.as_mut(),
            &BTreeSet::from([veth.index]),
            &veth.name,
        );
    }

    // Entries without an identity whose interface is gone: an ADD or a DEL
    // died between writing or removing them and the identity.
    let stale = maps.as_mut().map(PinnedMaps::unregistered);
    let stale = stale.and_then(|s| run.pins("read the maps", s));
    for ifindex in stale.unwrap_or_default() {
        let exists = run.step(
            "look up an interface",
            with_netlink(|h| async move { Ok(link_by_index(&h, ifindex).await?.is_some()) }),
        );
        if let (Some(false), Some(maps)) = (exists, maps.as_mut()) {
            forget(&mut run, maps, ifindex);
        }
    }
    // Link pins of interfaces registered nowhere (in any network).
    let all = maps.as_ref().map(PinnedMaps::registered);
    if let Some(all) = all.and_then(|a| run.pins("read the registry", a)) {
        let all: HashSet<u32> = all.into_iter().map(|(i, _)| i).collect();
        run.pins(
            "remove orphan link pins",
            attach::remove_orphan_links(&layout, &all),
        );
    }

    if PluginConfig::ip_masq(inv.conf) {
        let keep: Vec<(&str, &str)> = keep.iter().copied().collect();
        run.step("remove masquerade rules", masq::gc(inv.network(), &keep));
    }
    run.step("release leases", inv.ipam.gc(&inv.ipam_context(), &valid));
    run.finish()
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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn conf(extra: Value) -> NetConf {
        let mut conf = json!({"cniVersion": "1.1.0", "name": "podnet", "type": "podmeter"});
        conf.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(conf).unwrap()
    }

    #[test]
    fn valid_attachments_from_the_spec_key_or_the_legacy_one() {
        let one = json!([{"containerID": "c1", "ifname": "eth0"}]);
        let cases = [
            (
                "spec key",
                json!({"cni.dev/valid-attachments": one}),
                Ok(vec!["c1/eth0"]),
            ),
            (
                "legacy key",
                json!({"cni.dev/attachments": one}),
                Ok(vec!["c1/eth0"]),
            ),
            (
                "spec key wins",
                json!({"cni.dev/valid-attachments": [], "cni.dev/attachments": one}),
                Ok(vec![]),
            ),
            (
                "missing",
                json!({}),
                Err("GC needs cni.dev/valid-attachments"),
            ),
            (
                "malformed legacy key",
                json!({"cni.dev/attachments": [{"ifname": "eth0"}]}),
                Err("cni.dev/attachments: missing field `containerID`"),
            ),
        ];
        for (name, extra, want) in cases {
            let got = valid_attachments(&conf(extra)).map(|v| {
                v.iter()
                    .map(|a| format!("{}/{}", a.container_id, a.ifname))
                    .collect::<Vec<_>>()
            });
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{name}"),
                (Err(w), Err(PluginError::Config(msg))) if msg.contains(w) => {}
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_malformed_spec_key_is_refused_when_parsing() {
        let bad = json!({"cniVersion": "1.1.0", "name": "n", "type": "podmeter",
                         "cni.dev/valid-attachments": [{"ifname": "eth0"}]});
        assert!(serde_json::from_value::<NetConf>(bad).is_err());
    }
}
