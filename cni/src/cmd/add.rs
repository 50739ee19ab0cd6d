//! ADD: lease addresses, wire the pod onto the bridge, start metering it.
//!
//! The order is what makes the counters exact: the veth pair is created
//! down, the pod is registered (zeroed counters) and the programs attached,
//! and only then do the links come up, so the programs see every packet the
//! kernel's own veth counters see.

use std::net::IpAddr;

use ipnet::IpNet;
use podmeter_ebpf::{
    attach, loader, maps::PinnedMaps, netns_cookie::current_netns_cookie, PodDevices, PodIdentity,
};
use rscni_plugin::types::{CNIResult, Dns, Interface, IpConfig, Route};

use super::{rollback::Rollback, Invocation};
use crate::{
    cni_args::PodRef,
    config::PluginConfig,
    error::PluginError,
    masq,
    net::{
        bridge::ensure_bridge,
        link::{delete_link_by_name, link_by_name, set_up, LinkSummary},
        names::temp_peer_name,
        netns::{in_netns, open_netns, with_netlink},
        pod::{configure_pod_interface, PodRoute},
        sysctl::{set_accept_ra, write_sysctl},
        veth::create_veth,
        NetError,
    },
};

/// Index of the pod's interface in the result's `interfaces` list.
const POD_INTERFACE: u32 = 2;

pub fn add(inv: &Invocation) -> Result<CNIResult, PluginError> {
    let netns_path = inv
        .netns
        .ok_or_else(|| PluginError::Config("CNI_NETNS is required for ADD".into()))?;
    let netns = open_netns(netns_path)?;
    let layout = &inv.layout();
    // A node that cannot meter fails here, before anything is created.
    let mut programs = loader::ensure_loaded(layout)?;
    let mut maps = PinnedMaps::open(layout)?;

    let mut rollback = Rollback::default();
    let leased = inv.ipam.add(&inv.ipam_context())?;
    rollback.push("release addresses", || {
        inv.ipam.del(&inv.ipam_context()).map_err(|e| e.to_string())
    });
    let plan = Plan::new(&inv.plugin, &leased)?;
    if inv.plugin.is_gateway {
        enable_forwarding(&plan.addrs)?;
    }

    let host_name = inv.host_ifname();
    let peer_name = temp_peer_name();
    // Async blocks below borrow; they must not take these by value.
    let (plan, peer_name, netns) = (&plan, peer_name.as_str(), &netns);
    let (bridge, host) = with_netlink(|h| async move {
        let bridge =
            ensure_bridge(&h, &inv.plugin.bridge, inv.plugin.mtu, &plan.bridge_addrs).await?;
        let host = create_veth(
            &h,
            &host_name,
            peer_name,
            inv.plugin.mtu,
            bridge.index,
            inv.plugin.hairpin_mode,
            std::os::fd::AsFd::as_fd(netns),
        )
        .await?;
        Ok((bridge, host))
    })?;
    // Undo steps own what they need: they run after this function's locals are gone.
    let (host_name, host_index) = (host.name.clone(), host.index);
    rollback.push("delete veth", move || {
        with_netlink(|h| async move { delete_link_by_name(&h, &host_name).await })
            .map(drop)
            .map_err(|e| e.to_string())
    });
    set_accept_ra(&host.name, 0)?;

    let pod_ref = PodRef::from_cni_args(inv.cni_args);
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
    let devices = pod_devices(netns_path, peer_name)?;
    maps.register(host.index, &identity, &devices)?;
    rollback.push("unregister", move || {
        maps.unregister(host_index).map_err(|e| e.to_string())
    });
    programs.attach(
        layout,
        &host.name,
        host.index,
        inv.plugin.tc_attach_mode.into(),
    )?;
    rollback.push("detach", move || {
        attach::detach(layout, host_index).map_err(|e| e.to_string())
    });

    let pod = in_netns(netns_path, || {
        with_netlink(|h| async move {
            configure_pod_interface(&h, peer_name, inv.ifname, &plan.addrs, &plan.routes).await
        })
    })??;
    with_netlink(|h| async move { set_up(&h, host.index).await })?;

    // Last, so nothing can fail after it: one `nft -f` adds all or nothing.
    if PluginConfig::ip_masq(inv.conf) {
        masq::add(inv.network(), inv.container_id, inv.ifname, &plan.addrs)?;
    }

    rollback.commit();
    Ok(result(
        inv,
        &leased,
        plan,
        [&bridge, &host, &pod],
        netns_path,
    ))
}

/// Where the two veth ends live, so the drop tracer can attribute drops on
/// either to the pod. The pod end still has its temporary name here.
fn pod_devices(netns: &std::path::Path, peer_name: &str) -> Result<PodDevices, PluginError> {
    let cookie = |e: std::io::Error| {
        PluginError::Net(NetError::Setup {
            what: "read netns cookie",
            source: e,
        })
    };
    let node_netns_cookie = current_netns_cookie().map_err(cookie)?;
    let (pod_netns_cookie, pod) = in_netns(netns, || {
        let pod = with_netlink(|h| async move { link_by_name(&h, peer_name).await });
        (current_netns_cookie(), pod)
    })?;
    let pod = pod?.ok_or_else(|| {
        PluginError::Net(NetError::LinkNotFound {
            name: peer_name.to_owned(),
        })
    })?;
    Ok(PodDevices {
        node_netns_cookie,
        pod_netns_cookie: pod_netns_cookie.map_err(cookie)?,
        pod_ifindex: pod.index,
    })
}

/// What to configure, derived from the IPAM result and the config.
struct Plan {
    /// The pod's addresses with their subnet's prefix.
    addrs: Vec<IpNet>,
    /// The gateways, on the bridge, if `isGateway`.
    bridge_addrs: Vec<IpNet>,
    /// Routes in the pod, each with a gateway filled in as the reference
    /// plugins do (a route without `gw` goes via its family's gateway).
    routes: Vec<PodRoute>,
    /// Default routes added for `isDefaultGateway`, reported in the result.
    default_routes: Vec<Route>,
}

impl Plan {
    fn new(cfg: &PluginConfig, leased: &CNIResult) -> Result<Self, PluginError> {
        if leased.ips.is_empty() {
            return Err(PluginError::Config("IPAM returned no addresses".into()));
        }
        let addrs: Vec<IpNet> = leased.ips.iter().map(|ip| ip.address).collect();
        let bridge_addrs = if cfg.is_gateway {
            leased
                .ips
                .iter()
                .filter_map(|ip| {
                    let gw = ip.gateway?;
                    IpNet::new(gw, ip.address.prefix_len()).ok()
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut default_routes = Vec::new();
        if cfg.is_default_gateway {
            for v4 in [true, false] {
                let has_default = leased
                    .routes
                    .iter()
                    .any(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4() == v4);
                if let (Some(gw), false) = (family_gateway(&leased.ips, v4), has_default) {
                    default_routes.push(route(default_net(v4), Some(gw)));
                }
            }
        }
        let all_routes: Vec<Route> = leased
            .routes
            .iter()
            .chain(&default_routes)
            .cloned()
            .collect();
        let routes = pod_routes(&all_routes, &leased.ips);
        Ok(Self {
            addrs,
            bridge_addrs,
            routes,
            default_routes,
        })
    }
}

/// The routes to set in the pod: a route without `gw` goes via the
/// gateway of its family, as the reference plugins configure it.
pub(super) fn pod_routes(routes: &[Route], ips: &[IpConfig]) -> Vec<PodRoute> {
    routes
        .iter()
        .map(|r| PodRoute {
            dst: r.dst,
            gw: r.gw.or_else(|| family_gateway(ips, r.dst.addr().is_ipv4())),
        })
        .collect()
}

fn family_gateway(ips: &[IpConfig], v4: bool) -> Option<IpAddr> {
    ips.iter()
        .filter(|ip| ip.address.addr().is_ipv4() == v4)
        .find_map(|ip| ip.gateway)
}

fn default_net(v4: bool) -> IpNet {
    let any: IpAddr = if v4 {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u8; 16])
    };
    IpNet::new(any, 0).expect("prefix 0 is valid")
}

fn route(dst: IpNet, gw: Option<IpAddr>) -> Route {
    Route {
        dst,
        gw,
        mtu: None,
        advmss: None,
        priority: None,
        table: None,
        scope: None,
    }
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
