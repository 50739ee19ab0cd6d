//! The exporter end to end: real pods, real traffic, the scraped values
//! against the kernel's counters, restarts, DEL, and a real Prometheus
//! evaluating every dashboard and rule expression.

use std::{
    fs,
    process::{Child, Stdio},
    time::Duration,
};

use podmeter_tests::{
    binary,
    exporter::{self, pod_series, promtool_check_metrics, sample, Exporter},
    frames,
    prometheus::Prometheus,
    sysctl::BpfStats,
    traffic::tcp_talks,
    NetNs, Node, Pod, TwoPods,
};
use serde_json::Value;

fn start_exporter(node: &Node) -> Exporter {
    Exporter::start(&binary("podmeter-exporter"), &node.pin_path)
}

/// The scraped counters of `pod` equal the kernel's; returns the scrape.
fn assert_scrape_matches_kernel(node: &Node, exporter: &Exporter, pod: &Pod, name: &str) -> String {
    exporter::assert_scrape_matches_kernel(node, pod, name, || exporter.metrics())
}

#[test]
fn scraped_values_equal_the_kernel_counters_with_pod_labels() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, a, b, .. } = TwoPods::new();
    a.ns.ping(&b.ips()[0], 100, 1200);
    b.ns.ping(&a.ips()[0], 100, 1200);
    let exporter = start_exporter(&node);

    for (pod, name) in [(&a, "a"), (&b, "b")] {
        let metrics = assert_scrape_matches_kernel(&node, &exporter, pod, name);
        assert!(sample(&metrics, &pod_series("receive_bytes", name)).unwrap() > 200.0 * 1200.0);
        let info = format!(
            r#"podmeter_pod_info{{namespace="test",pod="{name}",interface="eth0",uid="uid-{name}",container_id="{}",host_interface="{}",ips="{}/24,{}/64"}}"#,
            pod.container_id,
            pod.host_ifname(),
            pod.ips()[0],
            pod.ips()[1]
        );
        assert_eq!(sample(&metrics, &info), Some(1.0), "{info} in\n{metrics}");
        // Each busybox echo reply is also a NO_SOCKET drop in the pinger.
        let drops = format!(
            r#"podmeter_pod_drop_packets_total{{namespace="test",pod="{name}",interface="eth0",direction="receive",reason="NO_SOCKET"}}"#
        );
        assert!(
            sample(&metrics, &drops).unwrap_or(0.0) >= 100.0,
            "{drops} in\n{metrics}"
        );
        promtool_check_metrics(&metrics);
    }
    assert_eq!(sample(&exporter.metrics(), "podmeter_pods"), Some(2.0));
}

#[test]
fn counters_continue_across_an_exporter_sigkill_and_keep_counting_without_it() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, a, b, .. } = TwoPods::new();
    a.ns.ping(&b.ips()[0], 20, 500);
    let mut exporter = start_exporter(&node);
    let before = assert_scrape_matches_kernel(&node, &exporter, &a, "a");
    let sent_before = sample(&before, &pod_series("transmit_packets", "a")).unwrap();

    exporter.signal(libc::SIGKILL);
    exporter.wait();
    // The programs count on with no userspace process around.
    a.ns.ping(&b.ips()[0], 30, 500);
    let exporter = start_exporter(&node);
    let after = assert_scrape_matches_kernel(&node, &exporter, &a, "a");
    let sent_after = sample(&after, &pod_series("transmit_packets", "a")).unwrap();
    assert!(
        sent_after >= sent_before + 30.0,
        "{sent_before} -> {sent_after}"
    );
}

#[test]
fn a_deleted_pods_series_are_gone_from_the_next_scrape() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, conf, a, b } = TwoPods::new();
    let exporter = start_exporter(&node);
    let metrics = exporter.metrics();
    assert!(sample(&metrics, &pod_series("receive_bytes", "a")).is_some());

    node.del(&a, &conf).ok();
    let metrics = exporter.metrics();
    assert!(
        !metrics.contains(r#"pod="a""#),
        "series of the deleted pod:\n{metrics}"
    );
    assert!(sample(&metrics, &pod_series("receive_bytes", "b")).is_some());
    assert_eq!(sample(&metrics, "podmeter_pods"), Some(1.0));
    drop(b);
}

/// A ping running in the background while Prometheus scrapes.
struct Traffic(Child);

impl Traffic {
    fn ping(from: &NetNs, to: &str) -> Self {
        let child = from
            .command("busybox")
            .args(["ping", "-q", "-i", "0.1", "-c", "600", to])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A comparison with a number becomes a `bool` comparison, so an alert's
/// expression returns its series whether or not the alert would fire.
fn without_threshold(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find(['>', '<', '=', '!']) {
        let op_len = if rest[i + 1..].starts_with('=') { 2 } else { 1 };
        let (before, after) = rest.split_at(i + op_len);
        out.push_str(before);
        let is_comparison = !before.ends_with("=~") && !after.starts_with('~');
        if is_comparison && after.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(" bool");
        }
        rest = after;
    }
    out + rest
}

fn dashboard_exprs() -> Vec<String> {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| collect(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let path = podmeter_tests::prometheus::assets().join("../dashboards/podmeter.json");
    let json: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect(&json, &mut exprs);
    exprs
}

#[test]
fn prometheus_returns_data_for_every_dashboard_and_rule_expression() {
    podmeter_testkit::needs_root!();
    let _stats = BpfStats::enable();
    let TwoPods { node, a, b, .. } = TwoPods::new();
    let _ab = Traffic::ping(&a.ns, &b.ips()[0]);
    let _ba = Traffic::ping(&b.ns, &a.ips()[0]);
    // A policy denial, for the policy panels and rules.
    let denied = node.ctl(&[
        "policy",
        "add",
        "test/a",
        "--direction",
        "transmit",
        "--action",
        "deny",
        "--proto",
        "tcp",
        "--ports",
        "9",
    ]);
    assert!(denied.status.success(), "{denied:?}");
    assert!(!tcp_talks(
        &a.ns,
        &b.ips()[0],
        9,
        Duration::from_millis(500)
    ));
    // A frame from another MAC, for the source validation alert.
    let forged = frames::eth(
        frames::BROADCAST,
        [2, 0, 0, 0, 0, 9],
        &[],
        frames::ETH_P_ARP,
        &[0; 28],
    );
    frames::send(&a.ns, "eth0", &[forged]);
    let exporter = start_exporter(&node);
    let prometheus = Prometheus::start(exporter.addr);

    let wait = Duration::from_secs(60);
    prometheus.wait_for(r#"podmeter_pod_info{pod="a"}"#, wait);
    let rules = prometheus.rules();
    assert!(rules.len() >= 10, "rules loaded: {rules:?}");
    for (kind, name, query) in &rules {
        if kind == "recording" {
            prometheus.wait_for(name, wait);
            prometheus.wait_for(query, wait);
        } else {
            prometheus.wait_for(&without_threshold(query), wait);
        }
    }
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 20, "{exprs:?}");
    for expr in exprs {
        let promql = expr
            .replace("$namespace", "test")
            .replace("$pod", ".*")
            .replace("$__rate_interval", "10s")
            .replace("$__interval", "1s");
        prometheus.wait_for(&promql, wait);
    }
}

#[test]
fn thresholds_become_bool_comparisons() {
    podmeter_testkit::needs_root!();
    assert_eq!(
        without_threshold(r#"up{job="podmeter"} == 0 or absent(up{job="podmeter"})"#),
        r#"up{job="podmeter"} == bool 0 or absent(up{job="podmeter"})"#
    );
    assert_eq!(
        without_threshold(r#"sum(rate(x{a=~"b"}[5m])) > 1"#),
        r#"sum(rate(x{a=~"b"}[5m])) > bool 1"#
    );
    assert_eq!(without_threshold("a >= 0.5"), "a >= bool 0.5");
    assert_eq!(without_threshold("a / (b > 0)"), "a / (b > bool 0)");
}
