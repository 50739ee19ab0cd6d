//! The per-pod TCP families: what the TCP programs counted for the sockets
//! of each pod's network namespace, equal to the kernel's own per-netns
//! counters (`nstat` in the pod: TcpRetransSegs, TcpOutRsts,
//! TcpActiveOpens, TcpPassiveOpens, TcpCurrEstab), and the smoothed RTT of
//! each connection that ended.

use podmeter_ebpf::abi::{Tcp, TCP_RTT_BOUNDS};
use prometheus_client::registry::Unit;

use crate::metrics::{
    exposition::{counter, Counter, Descriptor, Family, Kind, Labels},
    format::Format,
};

const COUNTERS: [Counter<Tcp>; 2] = [
    counter(
        "podmeter_pod_tcp_retransmits",
        None,
        "TCP segments the pod retransmitted (its netns' TcpRetransSegs).",
        |t| t.retransmits,
    ),
    counter(
        "podmeter_pod_tcp_resets_sent",
        None,
        "TCP segments with RST the pod sent (its netns' TcpOutRsts).",
        |t| t.resets_sent,
    ),
];

const OPENED: Descriptor = Descriptor {
    name: "podmeter_pod_tcp_connections_opened",
    unit: None,
    help: "TCP connections the pod opened (side=active: connect, TcpActiveOpens) or accepted (side=passive: TcpPassiveOpens).",
    kind: Kind::Counter,
};

const CONNECTIONS: Descriptor = Descriptor {
    name: "podmeter_pod_tcp_connections",
    unit: None,
    help: "TCP connections of the pod in ESTABLISHED or CLOSE-WAIT now (its netns' TcpCurrEstab).",
    kind: Kind::Gauge,
};

const RTT: Descriptor = Descriptor {
    name: "podmeter_pod_tcp_rtt",
    unit: Some(Unit::Seconds),
    help: "Smoothed round-trip time of each TCP connection of the pod, observed once when it ends.",
    kind: Kind::Histogram,
};

/// Writes the TCP families of the pods that have TCP statistics, each
/// with its pod's labels. Nothing, not even the headers, while no pod has
/// any.
pub fn write(out: &mut String, format: Format, pods: &[(&Tcp, &Labels)]) {
    if pods.is_empty() {
        return;
    }
    let with_tcp = || pods.iter().copied();
    for family in &COUNTERS {
        let mut f = Family::start(out, format, &family.descriptor);
        for (t, l) in with_tcp() {
            f.sample(&[l], (family.value)(t));
        }
    }
    let mut side = Labels::default();
    let mut f = Family::start(out, format, &OPENED);
    for (t, l) in with_tcp() {
        for (name, value) in [("active", t.active_opens), ("passive", t.passive_opens)] {
            side.clear();
            side.push("side", name);
            f.sample(&[l, &side], value);
        }
    }
    let mut f = Family::start(out, format, &CONNECTIONS);
    for (t, l) in with_tcp() {
        // The sum of per-CPU shares; below zero only if connections made
        // before the pod's ADD ended after it.
        f.sample(&[l], (t.established as i64).max(0));
    }
    let bounds: Vec<f64> = (0..TCP_RTT_BOUNDS)
        .map(|i| Tcp::rtt_bound_us(i) as f64 / 1e6)
        .collect();
    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(TCP_RTT_BOUNDS);
    let mut f = Family::start(out, format, &RTT);
    for (t, l) in with_tcp() {
        buckets.clear();
        buckets.extend(bounds.iter().copied().zip(t.rtt_buckets));
        let sum = t.rtt_sum_us as f64 / 1e6;
        f.histogram(&[l], &buckets, t.rtt_buckets[TCP_RTT_BOUNDS], sum);
    }
}

#[cfg(test)]
mod tests {
    use podmeter_testkit::promtool::check_metrics;

    use super::*;

    fn sample() -> Tcp {
        let mut t = Tcp {
            retransmits: 12,
            resets_sent: 3,
            active_opens: 40,
            passive_opens: 41,
            established: 5,
            rtt_count: 4,
            rtt_sum_us: 60_120,
            ..Tcp::default()
        };
        t.rtt_buckets[0] = 2; // <= 50 us
        t.rtt_buckets[9] = 1; // <= 25.6 ms
        t.rtt_buckets[TCP_RTT_BOUNDS] = 1; // above 3.2768 s
        t
    }

    fn written(format: Format, tcp: &Tcp) -> String {
        let mut labels = Labels::default();
        labels.push("pod", "web-0");
        let mut out = String::new();
        write(&mut out, format, &[(tcp, &labels)]);
        out
    }

    #[test]
    fn writes_counters_gauge_and_a_cumulative_histogram() {
        let out = written(Format::Text, &sample());
        for line in [
            "podmeter_pod_tcp_retransmits_total{pod=\"web-0\"} 12\n",
            "podmeter_pod_tcp_resets_sent_total{pod=\"web-0\"} 3\n",
            "podmeter_pod_tcp_connections_opened_total{pod=\"web-0\",side=\"active\"} 40\n",
            "podmeter_pod_tcp_connections_opened_total{pod=\"web-0\",side=\"passive\"} 41\n",
            "# TYPE podmeter_pod_tcp_connections gauge\npodmeter_pod_tcp_connections{pod=\"web-0\"} 5\n",
            "# TYPE podmeter_pod_tcp_rtt_seconds histogram\n",
            "podmeter_pod_tcp_rtt_seconds_bucket{pod=\"web-0\",le=\"0.00005\"} 2\n",
            "podmeter_pod_tcp_rtt_seconds_bucket{pod=\"web-0\",le=\"0.0128\"} 2\n",
            "podmeter_pod_tcp_rtt_seconds_bucket{pod=\"web-0\",le=\"0.0256\"} 3\n",
            "podmeter_pod_tcp_rtt_seconds_bucket{pod=\"web-0\",le=\"3.2768\"} 3\n",
            "podmeter_pod_tcp_rtt_seconds_bucket{pod=\"web-0\",le=\"+Inf\"} 4\n",
            "podmeter_pod_tcp_rtt_seconds_sum{pod=\"web-0\"} 0.06012\n",
            "podmeter_pod_tcp_rtt_seconds_count{pod=\"web-0\"} 4\n",
        ] {
            assert!(out.contains(line), "{line:?} missing in\n{out}");
        }
        // 5 counter and gauge series, 18 buckets, _sum and _count.
        assert_eq!(out.matches("web-0").count(), 5 + 18 + 2, "{out}");
        check_metrics(&out);
    }

    #[test]
    fn openmetrics_has_the_unit_and_a_gauge_below_zero_reads_zero() {
        let mut t = sample();
        t.established = (-2i64) as u64;
        let out = written(Format::OpenMetrics, &t);
        assert!(out.contains("# TYPE podmeter_pod_tcp_rtt_seconds histogram\n# UNIT podmeter_pod_tcp_rtt_seconds seconds\n"), "{out}");
        assert!(
            out.contains("podmeter_pod_tcp_connections{pod=\"web-0\"} 0\n"),
            "{out}"
        );
    }
}
