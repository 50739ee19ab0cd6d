//! Tests only: random worlds (labels, pods without addresses, hostNetwork
//! and deleting pods, named ports, policies of every shape) from a seeded
//! generator, each compared with the reference evaluator. One known limit
//! is left out: an egress rule with a named port and ipBlock peers (the
//! compiler allows nothing there; see the README's NetworkPolicy limits).

use serde_json::{json, Value};

use super::fixture::{policy, World, NAMESPACES, PODS};

/// splitmix64: enough randomness for test cases, no crate needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const KEYS: [&str; 3] = ["pod", "role", "team"];
const VALUES: [&str; 3] = ["a", "b", "r"];

fn labels(rng: &mut Rng) -> Value {
    let mut m = serde_json::Map::new();
    for k in KEYS {
        if rng.chance(50) {
            m.insert(k.into(), json!(rng.pick(&VALUES)));
        }
    }
    Value::Object(m)
}

fn selector(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!({}),
        1 => json!({"matchLabels": labels(rng)}),
        _ => {
            let op = *rng.pick(&["In", "NotIn", "Exists", "DoesNotExist"]);
            let key = *rng.pick(&KEYS);
            let mut e = json!({"key": key, "operator": op});
            if op == "In" || op == "NotIn" {
                e["values"] = json!([rng.pick(&VALUES), rng.pick(&VALUES)]);
            }
            // The automatic namespace label too.
            if rng.chance(20) {
                e = json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": [rng.pick(&NAMESPACES)]});
            }
            json!({"matchExpressions": [e]})
        }
    }
}

fn block(rng: &mut Rng) -> Value {
    let (wide, narrow, host) = if rng.chance(50) {
        (
            "10.244.0.0/16",
            "10.244.1.0/24",
            format!("10.244.{}.{}/32", 1 + rng.below(2), 10 + rng.below(9)),
        )
    } else {
        (
            "fd00:10:244::/56",
            "fd00:10:244:1::/64",
            format!(
                "fd00:10:244:{}::{}/128",
                1 + rng.below(2),
                10 + rng.below(9)
            ),
        )
    };
    match rng.below(4) {
        0 => json!({"cidr": host}),
        1 => json!({"cidr": narrow}),
        2 => json!({"cidr": wide, "except": [host]}),
        _ => json!({"cidr": wide, "except": [narrow, host]}),
    }
}

fn peers(rng: &mut Rng, blocks: bool) -> Option<Value> {
    match rng.below(5) {
        0 => None,
        1 => Some(json!([])),
        _ => {
            let n = 1 + rng.below(2);
            let list: Vec<Value> = (0..n)
                .map(|_| match rng.below(if blocks { 4 } else { 3 }) {
                    0 => json!({"podSelector": selector(rng)}),
                    1 => json!({"namespaceSelector": selector(rng)}),
                    2 => json!({"podSelector": selector(rng), "namespaceSelector": selector(rng)}),
                    _ => json!({"ipBlock": block(rng)}),
                })
                .collect();
            Some(Value::Array(list))
        }
    }
}

fn ports(rng: &mut Rng) -> Option<Value> {
    if rng.chance(40) {
        return None;
    }
    let n = rng.below(3);
    let list: Vec<Value> = (0..n)
        .map(|_| {
            let mut p = json!({});
            let proto = *rng.pick(&["TCP", "UDP", "SCTP"]);
            if proto != "TCP" || rng.chance(50) {
                p["protocol"] = json!(proto);
            }
            match rng.below(4) {
                0 => {}
                1 => p["port"] = json!(80 + rng.below(3)),
                2 => {
                    p["port"] = json!(80);
                    p["endPort"] = json!(80 + rng.below(3));
                }
                _ => {
                    let named = format!(
                        "serve-{}-{}",
                        80 + rng.below(2),
                        rng.pick(&["tcp", "udp", "sctp"])
                    );
                    p["port"] = json!(named);
                }
            }
            p
        })
        .collect();
    Some(Value::Array(list))
}

fn has_named(ports: &Option<Value>) -> bool {
    ports
        .as_ref()
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|p| p["port"].is_string()))
}

fn rules(rng: &mut Rng, field: &str, egress: bool) -> Value {
    let list: Vec<Value> = (0..rng.below(3))
        .map(|_| {
            let ports = ports(rng);
            let mut r = json!({});
            if let Some(peers) = peers(rng, !(egress && has_named(&ports))) {
                r[field] = peers;
            }
            if let Some(ports) = ports {
                r["ports"] = ports;
            }
            r
        })
        .collect();
    Value::Array(list)
}

fn random_world(rng: &mut Rng) -> World {
    let mut w = World::upstream();
    for ns in &mut w.namespaces {
        let ns = std::sync::Arc::make_mut(ns);
        ns.metadata.labels = serde_json::from_value(labels(rng)).unwrap();
    }
    for ns in NAMESPACES {
        for name in PODS {
            let key = format!("{ns}/{name}");
            let roll = rng.below(20);
            let pod = w.pod_mut(&key);
            pod.metadata.labels = serde_json::from_value(labels(rng)).unwrap();
            match roll {
                0 => pod.status.as_mut().unwrap().pod_ips = None,
                1 => pod.spec.as_mut().unwrap().host_network = Some(true),
                2 => {
                    pod.metadata.deletion_timestamp = Some(
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
                    )
                }
                3 => pod.status.as_mut().unwrap().phase = Some("Failed".into()),
                4 | 5 => {
                    let ports = pod.spec.as_mut().unwrap().containers[0]
                        .ports
                        .as_mut()
                        .unwrap();
                    ports.retain(|p| {
                        p.name.as_deref() != Some("serve-80-tcp")
                            && p.name.as_deref() != Some("serve-81-udp")
                    });
                }
                _ => {}
            }
        }
    }
    for i in 0..1 + rng.below(4) {
        let mut spec = json!({"podSelector": selector(rng)});
        if rng.chance(70) {
            spec["ingress"] = rules(rng, "from", false);
        }
        if rng.chance(60) {
            spec["egress"] = rules(rng, "to", true);
        }
        match rng.below(5) {
            0 => {}
            4 => spec["policyTypes"] = json!([]),
            1 => spec["policyTypes"] = json!(["Ingress"]),
            2 => spec["policyTypes"] = json!(["Egress"]),
            _ => spec["policyTypes"] = json!(["Ingress", "Egress"]),
        }
        let ns = *rng.pick(&NAMESPACES);
        w.add(policy(ns, &format!("p{i}"), spec));
    }
    w
}

#[test]
fn random_worlds_agree_with_the_reference() {
    let mut rng = Rng(0x5eed_0020);
    let mut compared = 0;
    for _ in 0..300 {
        let w = random_world(&mut rng);
        compared += w.compare();
    }
    assert!(compared > 1_000_000, "{compared}");
}
