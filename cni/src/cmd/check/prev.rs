//! CHECK's comparisons of the pod interface with `prevResult`, apart from
//! the kernel so every result layout (0.3.x and 0.4.0 with `version` and
//! `interface` on each IP, 1.x without) is tested as a table.

use rscni_plugin::types::{CNIResult, IpConfig};

use super::super::plan::pod_routes;
use crate::{error::PluginError, net::pod::PodIfState};

/// The index of `ifname` among `prevResult`'s interfaces, in a sandbox.
pub fn pod_interface(prev: &CNIResult, ifname: &str) -> Result<usize, PluginError> {
    prev.interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some())
        .ok_or_else(|| {
            PluginError::Check(format!(
                "prevResult lists no interface {ifname} in a sandbox"
            ))
        })
}

/// The interface at `index` of `prevResult`, named `ifname`, has the MAC,
/// addresses and routes `prevResult` gives it.
pub fn compare(
    prev: &CNIResult,
    index: usize,
    ifname: &str,
    state: &PodIfState,
) -> Result<(), PluginError> {
    let fail = |msg: String| Err(PluginError::Check(msg));
    let expected_mac = &prev.interfaces[index].mac;
    if !expected_mac.is_empty() && !expected_mac.eq_ignore_ascii_case(&state.mac) {
        return fail(format!(
            "{ifname} has MAC {}, prevResult says {expected_mac}",
            state.mac
        ));
    }
    // An IP without `interface` is the pod's: the 1.x layout may omit it.
    let ips: Vec<IpConfig> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i as usize == index))
        .cloned()
        .collect();
    if let Some(ip) = ips.iter().find(|ip| !state.addrs.contains(&ip.address)) {
        return fail(format!("{ifname} lacks address {}", ip.address));
    }
    if let Some(route) = pod_routes(&prev.routes, &ips)
        .into_iter()
        .find(|r| !state.routes.contains(r))
    {
        return fail(format!("{ifname} lacks route {route:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rscni_plugin::types::NetConf;
    use serde_json::{json, Value};

    use super::*;
    use crate::net::pod::PodRoute;

    const MAC: &str = "0a:58:0a:16:00:05";

    /// `prevResult` as a runtime sends it, parsed the way the plugin parses its config.
    fn prev(result: Value) -> CNIResult {
        let conf: NetConf = serde_json::from_value(json!({
            "cniVersion": result["cniVersion"],
            "name": "podnet",
            "type": "podmeter",
            "prevResult": result,
        }))
        .unwrap();
        conf.prev_result.unwrap()
    }

    /// A result of `version` for a pod with one IPv4 address and a default route.
    fn result(version: &str) -> Value {
        let legacy = version.starts_with("0.");
        let mut ip = json!({"address": "10.22.0.5/24", "gateway": "10.22.0.1", "interface": 2});
        if legacy {
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "pm0", "mac": "02:00:00:00:00:01"},
                {"name": "pm1234", "mac": "02:00:00:00:00:02"},
                {"name": "eth0", "mac": MAC, "sandbox": "/run/netns/pod"},
            ],
            "ips": [ip],
            "routes": [{"dst": "0.0.0.0/0"}],
        })
    }

    /// The pod as ADD leaves it.
    fn state() -> PodIfState {
        PodIfState {
            mac: MAC.to_uppercase(),
            addrs: vec!["10.22.0.5/24".parse().unwrap()],
            routes: vec![
                PodRoute {
                    dst: "10.22.0.0/24".parse().unwrap(),
                    gw: None,
                },
                PodRoute {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: Some("10.22.0.1".parse().unwrap()),
                },
            ],
        }
    }

    #[test]
    fn the_pod_interface_is_found_in_a_sandbox_only() {
        let r = prev(result("1.0.0"));
        assert_eq!(pod_interface(&r, "eth0").unwrap(), 2);
        // pm0 is listed, but on the host.
        assert!(pod_interface(&r, "pm0").is_err());
        assert!(pod_interface(&r, "eth1").is_err());
    }

    #[test]
    fn comparisons_with_every_result_layout() {
        type Edit = fn(&mut Value, &mut PodIfState);
        let cases: &[(&str, Edit, Option<&str>)] = &[
            ("as ADD left it", |_, _| {}, None),
            (
                "MAC differs",
                |_, s| s.mac = "02:00:00:00:00:99".into(),
                Some("has MAC"),
            ),
            (
                "no MAC in the result",
                |r, s| {
                    r["interfaces"][2]["mac"] = json!("");
                    s.mac = "02:00:00:00:00:99".into();
                },
                None,
            ),
            (
                "address missing",
                |_, s| s.addrs.clear(),
                Some("lacks address 10.22.0.5/24"),
            ),
            (
                "address of another interface",
                |r, s| {
                    r["ips"][0]["interface"] = json!(1);
                    r["routes"] = json!([]);
                    s.addrs.clear();
                },
                None,
            ),
            (
                "IP without interface",
                |r, s| {
                    r["ips"][0].as_object_mut().unwrap().remove("interface");
                    s.addrs.clear();
                },
                Some("lacks address"),
            ),
            (
                "route missing",
                |_, s| s.routes.truncate(1),
                Some("lacks route"),
            ),
            (
                "route via another gateway",
                |_, s| {
                    s.routes[1].gw = Some("10.22.0.254".parse().unwrap());
                },
                Some("lacks route"),
            ),
            (
                "explicit gateway kept",
                |r, s| {
                    r["routes"][0]["gw"] = json!("10.22.0.254");
                    s.routes[1].gw = Some("10.22.0.254".parse().unwrap());
                },
                None,
            ),
        ];
        for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            for (name, edit, want) in cases {
                let (mut r, mut s) = (result(version), state());
                edit(&mut r, &mut s);
                let got = compare(&prev(r), 2, "eth0", &s);
                match (want, got) {
                    (None, Ok(())) => {}
                    (Some(w), Err(PluginError::Check(msg))) if msg.contains(w) => {}
                    (_, got) => panic!("{version} {name}: want {want:?}, got {got:?}"),
                }
            }
        }
    }
}
