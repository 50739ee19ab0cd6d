//! NetworkPolicy ports: what one `ports` entry allows, and the named
//! container ports a pod defines (a named port is resolved against the pod
//! that serves it: the selected pod for ingress, each destination for
//! egress). An entry the API would refuse allows nothing.

use k8s_openapi::{
    api::{core::v1::Pod, networking::v1::NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::model::{KubeProto, PortRange};

/// A container port with a name, as a pod class carries it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    pub name: String,
    pub proto: KubeProto,
    pub port: u16,
}

/// What one `ports` entry (or a rule without ports) allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// No `ports`: every protocol and port.
    All,
    /// A protocol, on every port (`None`) or a range.
    Numbers(KubeProto, Option<PortRange>),
    /// A protocol on the port of this name, wherever it is served.
    Named(KubeProto, String),
}

/// The rule's `ports` as specs: `All` for none; entries the API would
/// refuse (unknown protocol, port 0, `endPort` below `port` or with a name)
/// are left out, so they allow nothing.
pub fn specs(ports: Option<&Vec<NetworkPolicyPort>>) -> Vec<PortSpec> {
    match ports {
        None => vec![PortSpec::All],
        Some(p) if p.is_empty() => vec![PortSpec::All],
        Some(p) => p.iter().filter_map(spec).collect(),
    }
}

fn spec(p: &NetworkPolicyPort) -> Option<PortSpec> {
    let proto = protocol(p.protocol.as_deref())?;
    match (&p.port, p.end_port) {
        (None, None) => Some(PortSpec::Numbers(proto, None)),
        (None, Some(_)) => None,
        (Some(IntOrString::Int(first)), end) => {
            let first = port(*first)?;
            let last = match end {
                None => first,
                Some(end) => port(end).filter(|e| *e >= first)?,
            };
            Some(PortSpec::Numbers(proto, Some(PortRange { first, last })))
        }
        (Some(IntOrString::String(name)), None) => Some(PortSpec::Named(proto, name.clone())),
        (Some(IntOrString::String(_)), Some(_)) => None,
    }
}

/// The API's spelling (`protocol: TCP`, the default when absent); `None`
/// for anything else.
pub fn protocol(s: Option<&str>) -> Option<KubeProto> {
    match s.unwrap_or("TCP") {
        "TCP" => Some(KubeProto::Tcp),
        "UDP" => Some(KubeProto::Udp),
        "SCTP" => Some(KubeProto::Sctp),
        _ => None,
    }
}

fn port(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// The pod's named container ports (regular containers, and sidecars:
/// init containers that keep running), sorted.
pub fn named_ports(pod: &Pod) -> Vec<NamedPort> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let mut ports: Vec<NamedPort> = spec
        .containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone()?,
                proto: protocol(p.protocol.as_deref())?,
                port: port(p.container_port)?,
            })
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// The port `name` resolves to for `proto` among `ports`, if defined.
pub fn resolve(ports: &[NamedPort], proto: KubeProto, name: &str) -> Option<u16> {
    ports
        .iter()
        .find(|p| p.proto == proto && p.name == name)
        .map(|p| p.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Vec<PortSpec> {
        let ports: Vec<NetworkPolicyPort> = serde_json::from_value(v).unwrap();
        specs(Some(&ports))
    }

    #[test]
    fn entries_as_the_api_defines_them() {
        let r = |first, last| Some(PortRange { first, last });
        assert_eq!(specs(None), [PortSpec::All]);
        assert_eq!(parse(json!([])), [PortSpec::All]);
        assert_eq!(
            parse(json!([
                {"port": 80},
                {"protocol": "UDP", "port": 81, "endPort": 90},
                {"protocol": "SCTP"},
                {"port": "serve-80-tcp"},
                // Refused by the API: allow nothing.
                {"protocol": "ICMP", "port": 1},
                {"port": 90, "endPort": 80},
                {"port": 0},
                {"port": "x", "endPort": 9},
                {"endPort": 9},
            ])),
            [
                PortSpec::Numbers(KubeProto::Tcp, r(80, 80)),
                PortSpec::Numbers(KubeProto::Udp, r(81, 90)),
                PortSpec::Numbers(KubeProto::Sctp, None),
                PortSpec::Named(KubeProto::Tcp, "serve-80-tcp".into()),
            ]
        );
    }

    #[test]
    fn named_ports_come_from_containers_and_sidecars() {
        let pod: Pod = serde_json::from_value(json!({
            "spec": {
                "containers": [{"name": "c", "ports": [
                    {"name": "serve-80-tcp", "containerPort": 80},
                    {"name": "serve-80-udp", "containerPort": 80, "protocol": "UDP"},
                    {"containerPort": 81},
                ]}],
                "initContainers": [
                    {"name": "side", "restartPolicy": "Always", "ports": [{"name": "metrics", "containerPort": 9000}]},
                    {"name": "once", "ports": [{"name": "gone", "containerPort": 9001}]},
                ],
            }
        }))
        .unwrap();
        let ports = named_ports(&pod);
        assert_eq!(ports.len(), 3, "{ports:?}");
        assert_eq!(resolve(&ports, KubeProto::Tcp, "serve-80-tcp"), Some(80));
        assert_eq!(resolve(&ports, KubeProto::Udp, "serve-80-tcp"), None);
        assert_eq!(resolve(&ports, KubeProto::Tcp, "metrics"), Some(9000));
        assert_eq!(resolve(&ports, KubeProto::Tcp, "gone"), None);
    }
}
