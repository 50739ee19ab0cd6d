//! ADD: lease addresses, wire the pod onto the bridge, start metering it.
//!
//! The order is what makes the counters exact: the veth pair is created
//! down, the pod is registered (zeroed counters, the config's policy and
//! the kubernetes tier the node agent compiled for it) and
//! the programs attached,
//! and only then do the links come up, so the programs see every packet the
//! kernel's own veth counters see.

use ipnet::IpNet;
use std::{fs::File, os::fd::AsFd};

use podmeter_conflist::kubernetes_tier;
use podmeter_ebpf::{
    pod,
    policy::{kubernetes::KubePodPolicy, store::PolicyStore, Owner},
    programs::attach,
    programs::netns_cookie::current_netns_cookie,
    PodDevices, PodIdentity, PodSource,
};
use rscni_plugin::types::{CNIResult, Dns, Interface, IpConfig};

use super::{
    plan::{Plan, POD_INTERFACE},
    preflight,
    rollback::Rollback,
    Invocation,
};
use crate::{
    cni_args::PodRef,
    config::{FromNetconf, PluginConfig},
    error::PluginError,
    ipam::Ipam,
    masq,
    net::{
        bridge::{ensure_bridge, ensure_netfilter},
        link::{delete_link_by_name, set_up, LinkSummary},
        names::temp_peer_name,
        netns::{in_netns, with_netlink, Netlink},
        pod::configure_pod_interface,
        sysctl::{set_accept_ra, write_sysctl},
        veth::create_veth,
        NetError,
    },
    timing,
};

/// The kubernetes tier the node agent compiled for this pod, if it wrote
/// one where the built-in IPAM keeps its state: applied before the links
/// come up, so that NetworkPolicy holds from the pod's first packet.
fn kubernetes_tier(
    inv: &Invocation,
    pod: &PodIdentity,
) -> Result<Option<KubePodPolicy>, PluginError> {
    let Ipam::Builtin(ipam) = &inv.ipam else {
        return Ok(None);
    };
    kubernetes_tier::read(&ipam.data_dir, &pod.namespace, &pod.pod, &pod.uid).map_err(|source| {
        PluginError::KubernetesTier {
            dir: kubernetes_tier::dir(&ipam.data_dir),
            source,
        }
    })
}

pub fn add(inv: &Invocation) -> Result<CNIResult, PluginError> {
    let pod_ref = PodRef::from_cni_args(inv.cni_args)?;
    let (netns_path, netns) = inv.pod_netns()?;
    let layout = &inv.layout();
    // A node that cannot do what the config asks fails here, before
    // anything is created.
    // One connection for every node-side step (rollback opens its own).
    let netlink = &Netlink::open()?;
    let mut programs = preflight::node_ready(inv, netlink)?;
    // Held until ADD returns: GC waits for it, so it never takes this
    // half-made pod for a leftover.
    let adding = programs.maps().lock_shared()?;
    timing::mark("lock");

    let mut rollback = Rollback::default();
    let (leased, syncing) = inv.ipam.add(&inv.ipam_context())?;
    rollback.push("release addresses", || {
        inv.ipam.del(&inv.ipam_context()).map_err(|e| e.to_string())
    });
    timing::mark("ipam");
    let plan = Plan::new(&inv.plugin, &leased)?;
    if inv.plugin.is_gateway {
        enable_forwarding(&plan.addrs)?;
    }

    let peer_name = temp_peer_name();
    // Async blocks below borrow; they must not take these by value.
    let (plan, peer_name, netns) = (&plan, peer_name.as_str(), &netns);
    let (bridge, host) = create_links(inv, netlink, plan, peer_name, netns)?;
    timing::mark("netlink: bridge, veth");
    // Undo steps own what they need: they run after this function's locals are gone.
    let (host_name, host_index) = (host.name.clone(), host.index);
    rollback.push("delete veth", move || {
        delete_host_veth(&host_name)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    set_accept_ra(&host.name, 0)?;
    timing::mark("sysctls");

    let identity = PodIdentity {
        namespace: pod_ref.namespace,
        pod: pod_ref.name,
        uid: pod_ref.uid,
        container_id: inv.container_id.to_owned(),
        network: inv.network().to_owned(),
        ifname: inv.ifname.to_owned(),
        host_ifname: host.name.clone(),
        ips: plan
            .addrs
            .iter()
            .map(|a| (a.addr(), a.prefix_len()))
            .collect(),
    };
    let devices = pod_devices(netns_path, peer_name, host.peer_index)?;
    timing::mark("netlink: pod end, cookies");
    // Pushed before the step it undoes, which may fail halfway (one map
    // written, one hook attached); each undo removes only what is there.
    rollback.push("unregister", move || {
        pod::forget(layout, host_index)
            .into_iter()
            .next()
            .map_or(Ok(()), |e| Err(e.to_string()))
    });
    let k8s_tier = kubernetes_tier(inv, &identity)?;
    programs.maps().register(host.index, &identity, &devices)?;
    if !inv.plugin.policy.is_empty() || k8s_tier.is_some() {
        let mut store = PolicyStore::under(&adding, programs.maps())?;
        if !inv.plugin.policy.is_empty() {
            store.apply(host.index, Owner::Config, &inv.plugin.policy)?;
        }
        if let Some(tier) = &k8s_tier {
            store.apply_kubernetes(host.index, tier)?;
        }
    }
    timing::mark("map writes");
    rollback.push("detach", move || {
        attach::detach(layout, host_index).map_err(|e| e.to_string())
    });
    programs.attach(layout, &host.name, host.index, inv.plugin.tc_attach_mode)?;
    timing::mark("attach");

    let pod = in_netns(netns_path, || {
        with_netlink(|h| async move {
            configure_pod_interface(&h, peer_name, inv.ifname, &plan.addrs, &plan.routes).await
        })
    })??;
    // Before the host end comes up: the programs drop all a pod without
    // its source sends.
    programs
        .maps()
        .set_source(host.index, &pod_source(plan, &pod)?)?;
    netlink.run(|h| async move { set_up(&h, host.index).await })?;
    timing::mark("netlink: pod side, host up");

    if PluginConfig::ip_masq(inv.conf) {
        rollback.push("remove masquerade rules", || {
            masq::del(inv.network(), inv.container_id, inv.ifname).map_err(|e| e.to_string())
        });
        masq::add(
            inv.network(),
            inv.container_id,
            inv.ifname,
            &plan.addrs,
            &inv.plugin.cluster_cidrs,
        )?;
        timing::mark("masquerade");
    }

    // The leases' fsyncs ran meanwhile: durable before we answer.
    syncing.wait()?;
    timing::mark("ipam: wait for fsyncs");
    rollback.commit();
    Ok(result(
        inv,
        &leased,
        plan,
        [&bridge, &host, &pod],
        netns_path,
    ))
}

/// Makes sure the bridge is there and creates the veth pair. If creating
/// the pair fails past the request itself (the ack lost, a later step
/// refused), the pair may exist: it is deleted over a fresh connection, as
/// the failed one may be what broke. A name that already existed (EEXIST)
/// is another attachment's and stays.
fn create_links(
    inv: &Invocation,
    netlink: &Netlink,
    plan: &Plan,
    peer_name: &str,
    netns: &File,
) -> Result<(LinkSummary, LinkSummary), PluginError> {
    let host_name = inv.host_ifname();
    let name = host_name.as_str();
    let created = netlink.run(|h| async move {
        let bridge =
            ensure_bridge(&h, &inv.plugin.bridge, inv.plugin.mtu, &plan.bridge_addrs).await?;
        if inv.plugin.bridge_netfilter {
            ensure_netfilter(&h, &inv.plugin.bridge).await?;
        }
        let host = create_veth(
            &h,
            name,
            peer_name,
            inv.plugin.mtu,
            bridge.index,
            inv.plugin.hairpin_mode,
            netns.as_fd(),
        )
        .await?;
        Ok((bridge, host))
    });
    if let Err(e) = &created {
        if e.errno() != Some(libc::EEXIST) {
            if let Err(undo) = delete_host_veth(&host_name) {
                tracing::error!("rollback: delete veth {host_name}: {undo}");
            }
        }
    }
    Ok(created?)
}

fn delete_host_veth(name: &str) -> Result<bool, NetError> {
    with_netlink(|h| async move { delete_link_by_name(&h, name).await })
}

/// Where the two veth ends live, so the drop tracer can attribute drops on
/// either to the pod. The pod end's index is the host end's `IFLA_LINK`
/// (the kernel reports a veth's peer by its index in the peer's namespace);
/// only the pod's netns cookie needs a thread in that namespace.
fn pod_devices(
    netns: &std::path::Path,
    peer_name: &str,
    peer_index: Option<u32>,
) -> Result<PodDevices, PluginError> {
    let cookie = |e: std::io::Error| {
        PluginError::Net(NetError::Setup {
            what: "read netns cookie",
            source: e,
        })
    };
    let pod_ifindex = peer_index.ok_or_else(|| {
        PluginError::Net(NetError::LinkNotFound {
            name: peer_name.to_owned(),
        })
    })?;
    let node_netns_cookie = current_netns_cookie().map_err(cookie)?;
    let pod_netns_cookie = in_netns(netns, current_netns_cookie)?.map_err(cookie)?;
    Ok(PodDevices {
        node_netns_cookie,
        pod_netns_cookie,
        pod_ifindex,
    })
}

/// Who the pod may send as: its interface's MAC and its addresses.
fn pod_source(plan: &Plan, pod: &LinkSummary) -> Result<PodSource, PluginError> {
    let mac = parse_mac(&pod.mac).ok_or_else(|| {
        PluginError::Net(NetError::Setup {
            what: "read the pod interface's MAC",
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, pod.mac.clone()),
        })
    })?;
    Ok(PodSource {
        mac,
        ips: plan.addrs.iter().map(IpNet::addr).collect(),
        gateways: plan.gateways.clone(),
    })
}

/// `aa:bb:cc:dd:ee:ff` as six bytes.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// A gateway forwards between pods and the rest of the node, as the
/// reference bridge plugin enables it.
fn enable_forwarding(addrs: &[IpNet]) -> Result<(), PluginError> {
    if addrs.iter().any(|a| a.addr().is_ipv4()) {
        write_sysctl("ipv4/ip_forward", "1")?;
    }
    if addrs.iter().any(|a| a.addr().is_ipv6()) {
        write_sysctl("ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}

fn result(
    inv: &Invocation,
    leased: &CNIResult,
    plan: &Plan,
    [bridge, host, pod]: [&LinkSummary; 3],
    netns: &std::path::Path,
) -> CNIResult {
    let interface = |l: &LinkSummary, sandbox: Option<String>| Interface {
        name: l.name.clone(),
        mac: l.mac.clone(),
        mtu: None,
        sandbox,
        socket_path: None,
        pci_id: None,
    };
    let dns = inv
        .conf
        .dns
        .clone()
        .filter(|d| *d != Dns::default())
        .or_else(|| leased.dns.clone());
    CNIResult {
        interfaces: vec![
            interface(bridge, None),
            interface(host, None),
            interface(pod, Some(netns.display().to_string())),
        ],
        ips: leased
            .ips
            .iter()
            .map(|ip| IpConfig {
                interface: Some(POD_INTERFACE),
                ..ip.clone()
            })
            .collect(),
        routes: leased
            .routes
            .iter()
            .chain(&plan.default_routes)
            .cloned()
            .collect(),
        dns,
    }
}
