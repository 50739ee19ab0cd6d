//! What ADD configures, derived from the config and the IPAM result
//! without touching the node, so it is tested as a table of cases.

use std::net::IpAddr;

use ipnet::IpNet;
use rscni_plugin::types::{CNIResult, IpConfig, Route};

use crate::{
    config::PluginConfig, error::PluginError, net::pod::PodRoute, special::special_overlap,
};

/// Index of the pod's interface in the result's `interfaces` list.
pub const POD_INTERFACE: u32 = 2;

/// What to configure, derived from the IPAM result and the config.
pub struct Plan {
    /// The pod's addresses with their subnet's prefix.
    pub addrs: Vec<IpNet>,
    /// The gateways, on the bridge, if `isGateway`.
    pub bridge_addrs: Vec<IpNet>,
    /// Routes in the pod, each with a gateway filled in as the reference
    /// plugins do (a route without `gw` goes via its family's gateway).
    pub routes: Vec<PodRoute>,
    /// Default routes added for `isDefaultGateway`, reported in the result.
    pub default_routes: Vec<Route>,
}

impl Plan {
    pub fn new(cfg: &PluginConfig, leased: &CNIResult) -> Result<Self, PluginError> {
        if leased.ips.is_empty() {
            return Err(PluginError::Config("IPAM returned no addresses".into()));
        }
        let addrs: Vec<IpNet> = leased.ips.iter().map(|ip| ip.address).collect();
        // A delegate's routes are only known now; still before anything is made.
        let subnets: Vec<IpNet> = addrs.iter().map(IpNet::trunc).collect();
        // The built-in IPAM refuses such subnets in its config; a
        // delegate (host-local) hands them out.
        if let Some((subnet, (special, what))) =
            subnets.iter().find_map(|s| Some((s, special_overlap(s)?)))
        {
            return Err(PluginError::Config(format!(
                "IPAM subnet {subnet} overlaps {special} ({what} space): not a pod range"
            )));
        }
        check_routes(&leased.routes, &subnets)?;
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

/// Refuses routes the kernel would refuse in the pod, whose addresses are in
/// `subnets`: a route of a family the pod has no address of, or via a
/// gateway of the other family or outside the pod's subnets (not on-link).
pub fn check_routes(routes: &[Route], subnets: &[IpNet]) -> Result<(), PluginError> {
    for r in routes {
        let v4 = r.dst.addr().is_ipv4();
        let family = if v4 { "IPv4" } else { "IPv6" };
        let own: Vec<&IpNet> = subnets
            .iter()
            .filter(|s| s.addr().is_ipv4() == v4)
            .collect();
        let problem = match r.gw {
            _ if own.is_empty() => format!("the pod gets no {family} address"),
            Some(gw) if gw.is_ipv4() != v4 => format!("gateway {gw} is not {family}"),
            Some(gw) if !own.iter().any(|s| s.contains(&gw)) => {
                format!("gateway {gw} is outside the pod's subnets, so not reachable")
            }
            _ => continue,
        };
        return Err(PluginError::Config(format!(
            "ipam.routes: route to {}: {problem}",
            r.dst
        )));
    }
    Ok(())
}

/// The routes to set in the pod: a route without `gw` goes via the
/// gateway of its family, as the reference plugins configure it.
pub fn pod_routes(routes: &[Route], ips: &[IpConfig]) -> Vec<PodRoute> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(address: &str, gateway: Option<&str>) -> IpConfig {
        IpConfig {
            interface: None,
            address: net(address),
            gateway: gateway.map(|g| g.parse().unwrap()),
        }
    }

    fn via(dst: &str, gw: Option<&str>) -> Route {
        route(net(dst), gw.map(|g| g.parse().unwrap()))
    }

    fn config(is_gateway: bool, is_default_gateway: bool) -> PluginConfig {
        let mut c: PluginConfig = serde_json::from_str("{}").unwrap();
        c.is_gateway = is_gateway || is_default_gateway;
        c.is_default_gateway = is_default_gateway;
        c
    }

    #[test]
    fn routes_the_pod_cannot_have_are_refused() {
        let dual = [net("10.0.0.0/24"), net("fd00::/64")];
        let v4 = [net("10.0.0.0/24")];
        // (route, subnets, accepted)
        let cases: [(Route, &[IpNet], bool); 7] = [
            (via("0.0.0.0/0", None), &dual, true),
            (via("10.1.0.0/16", Some("10.0.0.1")), &dual, true),
            (via("fd01::/64", Some("fd00::1")), &dual, true),
            (via("fd01::/64", None), &v4, false),
            (via("10.1.0.0/16", Some("fd00::1")), &dual, false),
            (via("fd01::/64", Some("10.0.0.1")), &dual, false),
            (via("10.1.0.0/16", Some("192.168.0.1")), &dual, false),
        ];
        for (r, subnets, accepted) in cases {
            let result = check_routes(std::slice::from_ref(&r), subnets);
            assert_eq!(
                result.is_ok(),
                accepted,
                "{r:?} over {subnets:?}: {result:?}"
            );
        }
    }

    /// A delegate's lease in special-purpose space: a config error (7).
    #[test]
    fn leases_in_special_space_are_refused() {
        for address in [
            "127.0.0.2/8",
            "224.0.0.5/24",
            "169.254.0.2/16",
            "fe80::2/64",
        ] {
            let leased = CNIResult {
                ips: vec![ip(address, None)],
                ..CNIResult::default()
            };
            let err = Plan::new(&config(false, false), &leased).err();
            let code = err.map(|e| u32::from(&rscni_plugin::error::Error::from(e)));
            assert_eq!(code, Some(7), "{address}");
        }
    }

    #[test]
    fn plans_follow_the_reference_bridge() {
        let dual = [
            ip("10.0.0.5/24", Some("10.0.0.1")),
            ip("fd00::5/64", Some("fd00::1")),
        ];
        let leased = |routes: Vec<Route>| CNIResult {
            ips: dual.to_vec(),
            routes,
            ..CNIResult::default()
        };
        // Gateways off: no bridge addresses, no default routes.
        let p = Plan::new(&config(false, false), &leased(vec![])).unwrap();
        assert_eq!(p.addrs, [net("10.0.0.5/24"), net("fd00::5/64")]);
        assert!(p.bridge_addrs.is_empty() && p.routes.is_empty());
        // isGateway: the gateways on the bridge, with the subnet's prefix.
        let p = Plan::new(&config(true, false), &leased(vec![])).unwrap();
        assert_eq!(p.bridge_addrs, [net("10.0.0.1/24"), net("fd00::1/64")]);
        assert!(p.default_routes.is_empty());
        // isDefaultGateway: a default route per family, via its gateway...
        let p = Plan::new(&config(false, true), &leased(vec![])).unwrap();
        assert_eq!(
            p.default_routes,
            [
                via("0.0.0.0/0", Some("10.0.0.1")),
                via("::/0", Some("fd00::1"))
            ]
        );
        // ...unless IPAM already routes that family by default; a custom
        // route without `gw` goes via its family's gateway.
        let custom = vec![via("0.0.0.0/0", None), via("fd01::/64", None)];
        let p = Plan::new(&config(false, true), &leased(custom)).unwrap();
        assert_eq!(p.default_routes, [via("::/0", Some("fd00::1"))]);
        let gws: Vec<_> = p.routes.iter().map(|r| (r.dst, r.gw)).collect();
        assert_eq!(
            gws,
            [
                (net("0.0.0.0/0"), Some("10.0.0.1".parse().unwrap())),
                (net("fd01::/64"), Some("fd00::1".parse().unwrap())),
                (net("::/0"), Some("fd00::1".parse().unwrap())),
            ]
        );
        // A delegate's result is checked too, before anything is made.
        let bad = leased(vec![via("10.1.0.0/16", Some("192.168.0.1"))]);
        assert!(Plan::new(&config(true, false), &bad).is_err());
        let none = CNIResult::default();
        assert!(Plan::new(&config(true, false), &none).is_err());
    }
}
