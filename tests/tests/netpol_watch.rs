//! The agent's NetworkPolicy watch against the fake API server, in-process
//! with a channel as its sink (no kernel, no root): a policy created
//! reaches the sink compiled; a peer pod's label change changes it; with
//! the API server away nothing changes (fail static), and what changed
//! meanwhile arrives once it is back, through a relist after compaction.

use std::time::Duration;

use podmeter_agent::netpol::{
    metrics::PolicyMetrics,
    model::{Compiled, Direction, KubeProto, IDENTITY_HOST},
    sink::ChannelSink,
    watch::{run, PolicyWatch},
};
use podmeter_tests::fake_apiserver::{
    namespace, network_policy, node, pod, runtime, FakeApiServer,
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

/// Long enough for any compile to arrive on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

fn serving() -> Value {
    json!([{ "name": "serve-80-tcp", "containerPort": 80 }])
}

fn x_a() -> Value {
    pod(
        "x",
        "a",
        "node-1",
        json!({ "pod": "a" }),
        &["10.244.1.10", "fd00:10:244:1::10"],
        serving(),
    )
}

fn y_b(labels: Value) -> Value {
    pod(
        "y",
        "b",
        "node-2",
        labels,
        &["10.244.2.11", "fd00:10:244:2::11"],
        serving(),
    )
}

/// The next tier that `done` accepts (earlier ones are skipped).
async fn until(rx: &mut UnboundedReceiver<Compiled>, done: impl Fn(&Compiled) -> bool) -> Compiled {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let c = rx.recv().await.expect("the watch stopped");
            if done(&c) {
                return c;
            }
        }
    })
    .await
    .expect("no such tier reached the sink")
}

fn metric(registry: &Registry, name: &str) -> f64 {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn the_compiled_tier_follows_the_api_and_stays_while_it_is_away() {
    let mut api = FakeApiServer::start();
    api.apply(node("node-1", &["10.244.1.0/24"], "172.18.0.2"));
    api.apply(node("node-2", &["10.244.2.0/24"], "172.18.0.3"));
    api.apply(namespace("x", json!({})));
    api.apply(namespace("y", json!({ "team": "blue" })));
    api.apply(x_a());
    api.apply(y_b(json!({ "pod": "b" })));
    let dir = tempfile::tempdir().unwrap();

    let runtime = runtime();
    let mut registry = Registry::with_prefix("podmeter_agent");
    let metrics = PolicyMetrics::register(&mut registry);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    runtime.block_on(async {
        let client = api.client(dir.path()).await;
        let watch = PolicyWatch {
            node_name: "node-1".into(),
            sink: ChannelSink(tx),
            metrics,
        };
        tokio::spawn(run(client, watch, std::future::pending()));

        // Before any policy: x/a local and open; y/b remote; the node HOST.
        let first = until(&mut rx, |_| true).await;
        assert_eq!(first.pods.keys().collect::<Vec<_>>(), ["x/a"]);
        assert_eq!(first.pods["x/a"].policy.isolated, [false, false]);
        let host = first
            .peers
            .iter()
            .find(|(net, _)| net.addr().to_string() == "172.18.0.2");
        assert_eq!(host.map(|(_, p)| p.pod_identity), Some(IDENTITY_HOST));

        // A policy: x's pods accept only pod=b from namespaces of team
        // blue, on their named port (the watch keeps container ports).
        api.apply(network_policy(
            "x",
            "from-blue-b",
            json!({
                "podSelector": {},
                "ingress": [{
                    "from": [{
                        "namespaceSelector": { "matchLabels": { "team": "blue" } },
                        "podSelector": { "matchLabels": { "pod": "b" } },
                    }],
                    "ports": [{ "port": "serve-80-tcp" }],
                }],
            }),
        ));
        let with = until(&mut rx, |c| !c.policy_names.is_empty()).await;
        assert_eq!(with.policy_names, [(1, "x/from-blue-b".to_owned())]);
        let tier = &with.pods["x/a"].policy;
        assert_eq!(tier.isolated, [true, false]);
        assert_eq!(tier.rules.len(), 1, "{tier:?}");
        assert_eq!(tier.rules[0].direction, Direction::Receive);
        let ports = tier.rules[0].ports.map(|p| (p.first, p.last));
        assert_eq!(
            (tier.rules[0].proto, ports),
            (Some(KubeProto::Tcp), Some((80, 80)))
        );
        let y_b_identity = with
            .peers
            .iter()
            .find(|(net, _)| net.addr().to_string() == "10.244.2.11")
            .map(|(_, p)| p.pod_identity);
        assert_eq!(Some(tier.rules[0].peer), y_b_identity);

        // y/b is relabelled: no pod matches any more, x/a stays isolated.
        api.apply(y_b(json!({ "pod": "c" })));
        let relabelled = until(&mut rx, |c| c.pods["x/a"].policy.rules.is_empty()).await;
        assert_eq!(relabelled.pods["x/a"].policy.isolated, [true, false]);

        // The API server goes away; the policy is deleted meanwhile and
        // the history compacted (the watch must relist).
        api.stop();
        api.delete_object("NetworkPolicy", "x/from-blue-b");
        api.compact();
        let errors = "podmeter_agent_policy_errors_total{stage=\"watch\"}";
        tokio::time::timeout(PATIENCE, async {
            while metric(&registry, errors) < 1.0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the watch never noticed the API server gone");
        // The watch is failing: the last tier stays, nothing reaches the sink.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            rx.try_recv().is_err(),
            "a tier reached the sink while the API server was away"
        );

        api.restart();
        let back = until(&mut rx, |c| c.policy_names.is_empty()).await;
        assert_eq!(back.pods["x/a"].policy.isolated, [false, false]);
    });
}
