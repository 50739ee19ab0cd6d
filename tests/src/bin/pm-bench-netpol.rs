//! `pm-bench-netpol`: benchmark-only. Generates a cluster (PODS pods in
//! NAMESPACES namespaces, LOCAL of them on this node, POLICIES policies of
//! the usual shapes), then measures the agent's NetworkPolicy compiler:
//! a full compile (fresh identities), a recompile after one pod's labels
//! change (identities kept), the compiled tier's size, RSS; and, through
//! the fake API server and the agent's real watch, the time from a label
//! change to the changed tier reaching the sink (`scripts/bench/netpol.sh`).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use podmeter_agent::netpol::{
    compile::{Compiler, Input},
    metrics::PolicyMetrics,
    model::{Compiled, KubeRule, LocalPod, Peer},
    sink::ChannelSink,
    watch::{run, PolicyWatch},
};
use podmeter_tests::fake_apiserver::{self, FakeApiServer};
use serde_json::{json, Value};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value_t = 5000)]
    pods: usize,
    #[arg(long, default_value_t = 110)]
    local: usize,
    #[arg(long, default_value_t = 100)]
    namespaces: usize,
    /// Five shapes per namespace, cycled.
    #[arg(long, default_value_t = 500)]
    policies: usize,
    /// Compiles per figure (median, p90, min–max).
    #[arg(long, default_value_t = 11)]
    rounds: usize,
    /// Label changes timed through the fake API server and the watch.
    #[arg(long, default_value_t = 20)]
    changes: usize,
}

const LOCAL_NODE: &str = "node-0";
const PODS_PER_APP: usize = 5;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn ns_name(i: usize) -> String {
    format!("ns-{i}")
}

/// Pod `i`: namespace by blocks, an app of 5 pods, node by stride so that
/// `local` of them are on this node.
fn pod_object(cli: &Cli, i: usize, extra: Option<(&str, &str)>) -> Value {
    let per_ns = cli.pods.div_ceil(cli.namespaces);
    let ns = ns_name(i / per_ns);
    let app = (i % per_ns) / PODS_PER_APP;
    let stride = cli.pods / cli.local;
    let node = if i.is_multiple_of(stride) && i / stride < cli.local {
        LOCAL_NODE.to_owned()
    } else {
        format!("node-{}", 1 + i % 44)
    };
    let mut labels = json!({
        "app": format!("app{app}"),
        "pod-template-hash": format!("h{app}"),
        "role": if app.is_multiple_of(2) { "web" } else { "worker" },
    });
    if let Some((k, v)) = extra {
        labels[k] = json!(v);
    }
    let v4 = format!("10.244.{}.{}", i / 250, 1 + i % 250);
    let v6 = format!("fd00:10:244::{:x}", i + 1);
    let ports = json!([
        {"name": "http", "containerPort": 8080},
        {"name": "metrics", "containerPort": 9090},
    ]);
    fake_apiserver::pod(&ns, &format!("p{i}"), &node, labels, &[&v4, &v6], ports)
}

fn policy_object(i: usize, namespaces: usize) -> Value {
    let ns = ns_name(i % namespaces);
    let app = format!("app{}", (i / namespaces) % 10);
    let spec = match (i / namespaces) % 5 {
        0 => json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        1 => json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }]}),
        2 => json!({"podSelector": {"matchLabels": {"app": app}}, "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"app": app}}}],
            "ports": [{"port": 8080}],
        }]}),
        3 => json!({"podSelector": {"matchLabels": {"role": "web"}}, "ingress": [{
            "from": [{"namespaceSelector": {"matchLabels": {"team": "frontend"}},
                      "podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["web"]}]}}],
            "ports": [{"port": "http"}],
        }]}),
        _ => json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16", "10.96.0.0/12"]}},
                   {"ipBlock": {"cidr": format!("192.168.{}.0/24", i % 250)}}],
            "ports": [{"port": 443}, {"port": 8000, "endPort": 8999}],
        }]}),
    };
    fake_apiserver::network_policy(&ns, &format!("np-{i}"), spec)
}

struct Cluster {
    pods: Vec<Value>,
    namespaces: Vec<Value>,
    policies: Vec<Value>,
}

fn cluster(cli: &Cli) -> Cluster {
    let mut namespaces: Vec<Value> = (0..cli.namespaces)
        .map(|i| {
            let team = if i.is_multiple_of(3) {
                "frontend"
            } else {
                "backend"
            };
            fake_apiserver::namespace(&ns_name(i), json!({"team": team}))
        })
        .collect();
    namespaces.push(fake_apiserver::namespace("kube-system", json!({})));
    let mut pods: Vec<Value> = (0..cli.pods).map(|i| pod_object(cli, i, None)).collect();
    for i in 0..2 {
        pods.push(fake_apiserver::pod(
            "kube-system",
            &format!("coredns-{i}"),
            "node-1",
            json!({"k8s-app": "kube-dns"}),
            &[&format!("10.244.250.{}", i + 1)],
            json!([{"name": "dns", "containerPort": 53, "protocol": "UDP"}]),
        ));
    }
    let policies = (0..cli.policies)
        .map(|i| policy_object(i, cli.namespaces))
        .collect();
    Cluster {
        pods,
        namespaces,
        policies,
    }
}

fn typed<T: k8s_openapi::serde::de::DeserializeOwned>(values: &[Value]) -> Vec<Arc<T>> {
    values
        .iter()
        .map(|v| Arc::new(serde_json::from_value(v.clone()).unwrap()))
        .collect()
}

/// Median, p90, min and max of `samples`, in ms.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = samples.len();
    format!(
        "median {:.1} ms, p90 {:.1} ms, range {:.1}–{:.1} ms ({n} runs)",
        ms(samples[n / 2]),
        ms(samples[(n * 9 / 10).min(n - 1)]),
        ms(samples[0]),
        ms(samples[n - 1])
    )
}

/// What the compiled tier holds in memory, roughly: its vectors and maps'
/// elements and strings (allocator overhead not counted).
fn compiled_bytes(c: &Compiled) -> usize {
    let peers = c.peers.len() * size_of::<(ipnet::IpNet, Peer)>();
    let pods: usize = c
        .pods
        .iter()
        .map(|(k, p)| {
            k.len()
                + size_of::<LocalPod>()
                + p.uid.len()
                + p.ips.len() * size_of::<std::net::IpAddr>()
                + p.policy.rules.len() * size_of::<KubeRule>()
        })
        .sum();
    let names: usize = c.policy_names.iter().map(|(_, n)| n.len() + 28).sum();
    peers + pods + names
}

/// How many prefixes cover the port range (what one rule costs in the
/// kernel's LPM trie): the largest aligned block at each step.
fn port_prefixes(first: u16, last: u16) -> usize {
    let (mut at, last, mut n) = (u32::from(first), u32::from(last), 0);
    while at <= last {
        let mut size = if at == 0 {
            1 << 16
        } else {
            1 << at.trailing_zeros()
        };
        while at + size - 1 > last {
            size /= 2;
        }
        at += size;
        n += 1;
    }
    n
}

fn changed_entries(before: &Compiled, after: &Compiled) -> (usize, usize) {
    let peers = after
        .peers
        .iter()
        .filter(|e| !before.peers.contains(e))
        .count()
        + before
            .peers
            .iter()
            .filter(|e| !after.peers.contains(e))
            .count();
    let pods = after
        .pods
        .iter()
        .filter(|(k, p)| before.pods.get(*k) != Some(p))
        .count();
    (peers, pods)
}

fn main() {
    let cli = Cli::parse();
    let rss0 = rss_kib();
    let generated = cluster(&cli);
    let pods: Vec<Arc<Pod>> = typed(&generated.pods);
    let namespaces: Vec<Arc<Namespace>> = typed(&generated.namespaces);
    let policies: Vec<Arc<NetworkPolicy>> = typed(&generated.policies);
    let rss_objects = rss_kib();
    let node_addrs = ["172.18.0.2".parse().unwrap()];
    fn input<'a>(
        pods: &'a [Arc<Pod>],
        namespaces: &'a [Arc<Namespace>],
        policies: &'a [Arc<NetworkPolicy>],
        node_addrs: &'a [std::net::IpAddr],
    ) -> Input<'a> {
        Input {
            pods,
            namespaces,
            policies,
            node_name: LOCAL_NODE,
            node_addrs,
        }
    }

    let mut full = Vec::new();
    let mut compiled = Compiled::default();
    for _ in 0..cli.rounds {
        let started = Instant::now();
        compiled = Compiler::default().compile(&input(&pods, &namespaces, &policies, &node_addrs));
        full.push(started.elapsed());
    }
    let rss_compiled = rss_kib();

    // One remote pod of a policy-selected app gets a new label, back and
    // forth, with identities kept.
    let mut compiler = Compiler::default();
    let mut last = compiler.compile(&input(&pods, &namespaces, &policies, &node_addrs));
    let mut incremental = Vec::new();
    let mut changed = (0, 0);
    let mut relabelled = pods.clone();
    for round in 0..cli.rounds {
        let extra = (round % 2 == 0).then_some(("canary", "yes"));
        relabelled[7] = Arc::new(serde_json::from_value(pod_object(&cli, 7, extra)).unwrap());
        let started = Instant::now();
        let next = compiler.compile(&input(&relabelled, &namespaces, &policies, &node_addrs));
        incremental.push(started.elapsed());
        changed = changed_entries(&last, &next);
        last = next;
    }

    let isolated = compiled.isolated_pods();
    let kernel_rules: usize = compiled
        .pods
        .values()
        .flat_map(|p| &p.policy.rules)
        .map(|r| r.ports.map_or(1, |p| port_prefixes(p.first, p.last)))
        .sum();
    let mut per_proto: BTreeMap<String, usize> = BTreeMap::new();
    for p in compiled.pods.values() {
        for r in &p.policy.rules {
            *per_proto.entry(format!("{:?}", r.proto)).or_default() += 1;
        }
    }
    println!(
        "cluster: {} pods ({} local), {} namespaces, {} policies",
        pods.len(),
        compiled.pods.len(),
        namespaces.len(),
        policies.len()
    );
    println!("compiled: {} policies select local pods, {} local pods isolated, {} peer entries, {} rules {per_proto:?}",
        compiled.policy_names.len(), isolated, compiled.peers.len(), compiled.rule_count());
    println!("kernel rule entries (port ranges as prefixes): {kernel_rules}");
    println!("full compile (fresh identities): {}", summary(&mut full));
    println!(
        "recompile after one remote pod's labels change: {}",
        summary(&mut incremental)
    );
    println!(
        "  entries changed by that change: {} peer entries, {} local pods' tiers",
        changed.0, changed.1
    );
    println!(
        "compiled tier in memory: ~{} KiB",
        compiled_bytes(&compiled) / 1024
    );
    println!("RSS: start {rss0} KiB, with the API objects {rss_objects} KiB, after compiling {rss_compiled} KiB");

    watch_latency(&cli, &generated);
}

/// Through the fake API server and the agent's watch: time to the first
/// tier (list of everything + compile), and from each label change to the
/// changed tier at the sink (includes the 50 ms debounce).
fn watch_latency(cli: &Cli, generated: &Cluster) {
    let api = FakeApiServer::start();
    api.apply(fake_apiserver::node(
        LOCAL_NODE,
        &["10.244.0.0/24"],
        "172.18.0.2",
    ));
    for v in generated
        .namespaces
        .iter()
        .chain(&generated.pods)
        .chain(&generated.policies)
    {
        api.apply(v.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = fake_apiserver::runtime();
    runtime.block_on(async {
        let client = api.client(dir.path()).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut registry = prometheus_client::registry::Registry::default();
        let watch = PolicyWatch {
            node_name: LOCAL_NODE.into(),
            sink: ChannelSink(tx),
            metrics: PolicyMetrics::register(&mut registry),
        };
        let started = Instant::now();
        tokio::spawn(run(client, watch, std::future::pending()));
        let mut last = rx.recv().await.unwrap();
        println!(
            "watch: first tier at the sink {:.0} ms after start (lists of everything + compile)",
            started.elapsed().as_secs_f64() * 1000.0
        );
        let mut samples = Vec::new();
        for round in 0..cli.changes {
            // A remote pod (index 7) that a same-app policy names: its
            // class changes, so every tier naming it changes.
            let extra = (round % 2 == 0).then_some(("canary", "yes"));
            let started = Instant::now();
            api.apply(pod_object(cli, 7, extra));
            loop {
                let next = rx.recv().await.unwrap();
                if next != last {
                    last = next;
                    break;
                }
            }
            samples.push(started.elapsed());
        }
        println!(
            "watch: label change → changed tier at the sink: {}",
            summary(&mut samples)
        );
    });
}
