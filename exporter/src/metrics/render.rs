//! One scrape's response: the per-pod families (written by [`pods`]), then
//! those prometheus-client encodes. Apart from [`Format`], which only
//! names the format, so that the format depends on no family.

use std::{
    fmt,
    sync::atomic::{AtomicUsize, Ordering},
};

use prometheus_client::{
    encoding::{prometheus_text, text},
    registry::Registry,
};

use crate::metrics::{
    format::Format,
    pods::{self, PodSample},
};

/// The length of the last response [`render`] made.
static LAST_LEN: AtomicUsize = AtomicUsize::new(0);

/// The per-pod families of `pods` (if they could be read), then those of
/// `registry`, in `format`.
pub fn render(
    format: Format,
    pods: Option<&[PodSample]>,
    registry: &Registry,
) -> Result<String, fmt::Error> {
    // Sized as the last response plus a margin: a full node's is tens
    // of MB, and growing it by doubling copied it several times.
    let last = LAST_LEN.load(Ordering::Relaxed);
    let mut out = String::with_capacity(last + last / 16);
    if let Some(pods) = pods {
        pods::write(&mut out, format, pods);
    }
    match format {
        // Ends with `# EOF`.
        Format::OpenMetrics => text::encode(&mut out, registry)?,
        Format::Text => prometheus_text::encode(&mut out, registry)?,
    }
    LAST_LEN.store(out.len(), Ordering::Relaxed);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use podmeter_ebpf::{
        maps::counters::PodCounters, programs::loader::ProgramStats, Direction, PodCounter,
        PodIdentity,
    };
    use podmeter_testkit::promtool::check_metrics as promtool_check_metrics;
    use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

    use super::*;
    use crate::metrics::{bpf_stats, pods::Drops};

    /// Program stats, on fixed data instead of the pins.
    #[derive(Debug)]
    struct Fixed(Vec<ProgramStats>);

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            bpf_stats::encode(&self.0, &mut encoder)
        }
    }

    /// A scrape's rendering, on fixed data instead of the pins.
    fn render(format: Format) -> String {
        let pod = PodSample {
            ifindex: 7,
            identity: PodIdentity {
                namespace: "default".into(),
                pod: "web-0".into(),
                uid: "u-1".into(),
                container_id: "c0ffee".into(),
                network: "podmeter".into(),
                ifname: "eth0".into(),
                host_ifname: "pm0123".into(),
                ips: vec![
                    ("10.22.0.5".parse().unwrap(), 24),
                    ("fd00::5".parse().unwrap(), 64),
                ],
            },
            counters: PodCounters {
                receive: PodCounter {
                    packets: 3,
                    bytes: 300,
                },
                transmit: PodCounter {
                    packets: 2,
                    bytes: 200,
                },
            },
            drops: vec![Drops {
                direction: Direction::Receive,
                reason: "NO_SOCKET".into(),
                dropped: PodCounter {
                    packets: 1,
                    bytes: 84,
                },
            }],
            flows: Some(podmeter_ebpf::abi::FlowState {
                flows: [2, 8192],
                refused: [0, 9],
                reclaimed: [1, 0],
                swept_ns: 0,
                allowed: [4, 5],
                denied: [6, 0],
            }),
            isolated: Some([true, false]),
            tcp: None,
        };
        let stats = ProgramStats {
            name: "pm_ingress",
            run_count: 5,
            run_time: Duration::from_micros(1500),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(vec![stats])));
        super::render(format, Some(&[pod]), &registry).unwrap()
    }

    const POD: &str = r#"{namespace="default",pod="web-0",interface="eth0"}"#;
    const DROP: &str = r#"{namespace="default",pod="web-0",interface="eth0",direction="receive",reason="NO_SOCKET"}"#;
    const RX: &str = r#"{namespace="default",pod="web-0",interface="eth0",direction="receive"}"#;
    const TX: &str = r#"{namespace="default",pod="web-0",interface="eth0",direction="transmit"}"#;
    const RX_ALLOWED: &str = r#"{namespace="default",pod="web-0",interface="eth0",direction="receive",verdict="allowed"}"#;
    const RX_DENIED: &str = r#"{namespace="default",pod="web-0",interface="eth0",direction="receive",verdict="denied"}"#;
    const TX_ALLOWED: &str = r#"{namespace="default",pod="web-0",interface="eth0",direction="transmit",verdict="allowed"}"#;
    const TX_DENIED: &str = r#"{namespace="default",pod="web-0",interface="eth0",direction="transmit",verdict="denied"}"#;
    const INFO: &str = r#"{namespace="default",pod="web-0",interface="eth0",uid="u-1",container_id="c0ffee",host_interface="pm0123",ips="10.22.0.5/24,fd00::5/64"} 1"#;

    #[test]
    fn text_format_names_counter_families_with_total_and_has_no_eof() {
        let out = render(Format::Text);
        let want = format!(
            "# HELP podmeter_pod_info Identity of each metered pod interface; always 1.
# TYPE podmeter_pod_info gauge
podmeter_pod_info{INFO}
# HELP podmeter_pod_receive_bytes_total Bytes received by the pod interface (host veth egress).
# TYPE podmeter_pod_receive_bytes_total counter
podmeter_pod_receive_bytes_total{POD} 300
# HELP podmeter_pod_transmit_bytes_total Bytes transmitted by the pod interface (host veth ingress).
# TYPE podmeter_pod_transmit_bytes_total counter
podmeter_pod_transmit_bytes_total{POD} 200
# HELP podmeter_pod_receive_packets_total Packets received by the pod interface (host veth egress).
# TYPE podmeter_pod_receive_packets_total counter
podmeter_pod_receive_packets_total{POD} 3
# HELP podmeter_pod_transmit_packets_total Packets transmitted by the pod interface (host veth ingress).
# TYPE podmeter_pod_transmit_packets_total counter
podmeter_pod_transmit_packets_total{POD} 2
# HELP podmeter_pod_drop_packets_total Packets of the pod interface dropped by the kernel (reason: its skb_drop_reason) or by podmeter (POLICY_DENIED: the pod's policy; SPOOFED_SOURCE: sent as someone else; UNPARSABLE: not classifiable), by direction and reason.
# TYPE podmeter_pod_drop_packets_total counter
podmeter_pod_drop_packets_total{DROP} 1
# HELP podmeter_pod_drop_bytes_total Bytes of the pod interface dropped by the kernel (reason: its skb_drop_reason) or by podmeter (POLICY_DENIED: the pod's policy; SPOOFED_SOURCE: sent as someone else; UNPARSABLE: not classifiable), by direction and reason.
# TYPE podmeter_pod_drop_bytes_total counter
podmeter_pod_drop_bytes_total{DROP} 84
# HELP podmeter_pod_flows Flows in the flow table of a pod with policy, by the direction that opened them (transmit: by the pod); each direction's budget is 8192.
# TYPE podmeter_pod_flows gauge
podmeter_pod_flows{RX} 2
podmeter_pod_flows{TX} 8192
# HELP podmeter_pod_flows_refused_total New flows of a pod with policy not recorded because its budget for that direction was spent; their replies met the pod's rules.
# TYPE podmeter_pod_flows_refused_total counter
podmeter_pod_flows_refused_total{RX} 0
podmeter_pod_flows_refused_total{TX} 9
# HELP podmeter_pod_flows_reclaimed_total Expired flows deleted from the flow table of a pod with policy to make room, by the direction that opened them.
# TYPE podmeter_pod_flows_reclaimed_total counter
podmeter_pod_flows_reclaimed_total{RX} 1
podmeter_pod_flows_reclaimed_total{TX} 0
# HELP podmeter_pod_policy_flows_total Decisions of a pod's policy on new flows, by direction (transmit: opened by the pod) and verdict: once per allowed flow, once per denied packet (each retransmission of a denied flow's first packet counts).
# TYPE podmeter_pod_policy_flows_total counter
podmeter_pod_policy_flows_total{RX_ALLOWED} 4
podmeter_pod_policy_flows_total{RX_DENIED} 6
podmeter_pod_policy_flows_total{TX_ALLOWED} 5
podmeter_pod_policy_flows_total{TX_DENIED} 0
# HELP podmeter_pod_policy_isolated 1 if NetworkPolicy isolates the pod in that direction (only what a policy allows passes), else 0; pods with policy only.
# TYPE podmeter_pod_policy_isolated gauge
podmeter_pod_policy_isolated{RX} 1
podmeter_pod_policy_isolated{TX} 0
# HELP podmeter_bpf_program_run_count_total Times the eBPF program ran (while kernel.bpf_stats_enabled=1).
# TYPE podmeter_bpf_program_run_count_total counter
podmeter_bpf_program_run_count_total{{program=\"pm_ingress\"}} 5
# HELP podmeter_bpf_program_run_seconds_total Time the eBPF program ran (while kernel.bpf_stats_enabled=1).
# TYPE podmeter_bpf_program_run_seconds_total counter
podmeter_bpf_program_run_seconds_total{{program=\"pm_ingress\"}} 0.0015
"
        );
        assert_eq!(out, want);
        promtool_check_metrics(&out);
    }

    #[test]
    fn openmetrics_names_families_without_total_with_units_and_eof() {
        let out = render(Format::OpenMetrics);
        for line in [
            "# TYPE podmeter_pod_info gauge\n".to_owned(),
            format!("podmeter_pod_info{INFO}\n"),
            "# TYPE podmeter_pod_receive_bytes counter\n# UNIT podmeter_pod_receive_bytes bytes\n"
                .to_owned(),
            format!("podmeter_pod_receive_bytes_total{POD} 300\n"),
            "# TYPE podmeter_pod_transmit_packets counter\n".to_owned(),
            format!("podmeter_pod_transmit_packets_total{POD} 2\n"),
            "# UNIT podmeter_bpf_program_run_seconds seconds\n".to_owned(),
            "# TYPE podmeter_pod_policy_flows counter\n".to_owned(),
            format!("podmeter_pod_policy_flows_total{RX_DENIED} 6\n"),
            format!("podmeter_pod_policy_isolated{RX} 1\n"),
        ] {
            assert!(out.contains(&line), "{line:?} missing in\n{out}");
        }
        assert!(out.ends_with("\n# EOF\n"), "{out}");
    }
}
