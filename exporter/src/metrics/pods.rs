//! Per-pod metric families, built from one read of the pinned maps.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::Arc,
};

use podmeter_ebpf::{
    abi::{FlowState, Tcp},
    maps::counters::PodCounters,
    maps::PinnedMaps,
    programs::drop_reasons::DropReasons,
    Direction, PinLayout, PodCounter, PodIdentity,
};
use prometheus_client::registry::Unit;
use tracing::debug;

use crate::metrics::{
    absent::not_pinned,
    exposition::{counter, Counter, Descriptor, Family, Kind, Labels},
    format::Format,
    tcp,
};

/// One pod interface with its counters, drops and, if it has policy, the
/// occupancy of its flow table, its policy's verdicts and its isolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSample {
    pub ifindex: u32,
    pub identity: PodIdentity,
    pub counters: PodCounters,
    pub drops: Vec<Drops>,
    pub flows: Option<FlowState>,
    /// Whether NetworkPolicy isolates the pod, by `Direction` (none: the
    /// pod has no policy).
    pub isolated: Option<[bool; 2]>,
    /// The TCP statistics of the pod's netns (none: not read yet by ADD).
    pub tcp: Option<Tcp>,
}

/// Kernel drops of one pod interface, by direction and reason name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drops {
    pub direction: Direction,
    /// Shared by every drop of that reason in a scrape.
    pub reason: Arc<str>,
    pub dropped: PodCounter,
}

/// Reads the pods and their counters: the counters first, then the
/// registry, and only identities with counters are kept. ADD writes a pod's
/// counters before its identity and DEL removes them before it (so that a
/// DEL killed halfway leaves the identity for the next one): a pod being
/// added or deleted has no identity or no counters and is left out. The
/// counters of an identity read after them are its own unless its ifindex
/// was freed and reused between the two reads, which the kernel's cyclic
/// ifindex allocation makes practically impossible. (A second registry
/// read, before the counters, rested on the same assumption and cost as
/// much as the counters' read.)
///
/// `reasons` names the kernel's drop reasons; one it lacks is exported as
/// its number. No pins yet means no pods.
pub fn read(
    layout: &PinLayout,
    reasons: &DropReasons,
) -> Result<Vec<PodSample>, podmeter_ebpf::Error> {
    let maps = match PinnedMaps::open(layout) {
        Ok(maps) => maps,
        Err(e) if not_pinned(&e) => {
            debug!(error = %e, "no pinned maps yet: no pods");
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    // Batched: reading a full node (8,192 pods, up to 16 drop entries
    // each) one syscall pair per entry was most of a scrape.
    let counters = maps.counters_batched()?;
    // The drops are read on a thread of their own while the registry is
    // read and joined: independent reads of ~5–80 ms each at a full node,
    // on a machine with more than one CPU.
    let (drops, pods) = std::thread::scope(|s| {
        let drops = s.spawn(|| maps.drops_batched());
        let pods = maps.pods_batched().map(|p| join(p, &counters));
        (drops.join(), pods)
    });
    let drops = drops.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    let mut pods = pods?;
    // Grouped once by interface (the drops come sorted by it): a scan of
    // every drop for every pod would make a full node's scrape quadratic.
    // Each reason is named once.
    let mut names: HashMap<u32, Arc<str>> = HashMap::new();
    let mut by_ifindex: HashMap<u32, Vec<Drops>> = HashMap::new();
    for group in drops.chunk_by(|a, b| a.ifindex == b.ifindex) {
        let grouped = group
            .iter()
            .map(|d| Drops {
                direction: d.direction,
                reason: names
                    .entry(d.reason)
                    .or_insert_with(|| reasons.name(d.reason).into())
                    .clone(),
                dropped: d.dropped,
            })
            .collect();
        by_ifindex.insert(group[0].ifindex, grouped);
    }
    // A few pods have policy, hence a flow table: one small read.
    let flows: HashMap<u32, FlowState> = maps.flow_occupancy()?.into_iter().collect();
    let isolated: HashMap<u32, [bool; 2]> = maps.policy_isolation()?.into_iter().collect();
    let tcp = maps.tcp()?;
    for pod in &mut pods {
        pod.drops = by_ifindex.remove(&pod.ifindex).unwrap_or_default();
        pod.flows = flows.get(&pod.ifindex).copied();
        pod.isolated = isolated.get(&pod.ifindex).copied();
        pod.tcp = tcp.get(&pod.ifindex).copied();
    }
    Ok(pods)
}

/// Registered pods with counters; at most one per `(namespace, pod,
/// interface)`, the newest interface (highest ifindex), since duplicate
/// series would fail the whole scrape. Sorted for a stable output.
fn join(pods: Vec<(u32, PodIdentity)>, counters: &BTreeMap<u32, PodCounters>) -> Vec<PodSample> {
    let mut pods: Vec<PodSample> = pods
        .into_iter()
        .filter_map(|(ifindex, identity)| {
            Some(PodSample {
                ifindex,
                counters: *counters.get(&ifindex)?,
                identity,
                drops: Vec::new(),
                flows: None,
                isolated: None,
                tcp: None,
            })
        })
        .collect();
    pods.sort_unstable_by(|a, b| labels(a).cmp(&labels(b)).then(b.ifindex.cmp(&a.ifindex)));
    // Keeps the first of each run: the newest.
    pods.dedup_by(|later, kept| labels(later) == labels(kept));
    pods
}

/// The labels that name a pod's series.
fn labels(p: &PodSample) -> (&str, &str, &str) {
    let p = &p.identity;
    (&p.namespace, &p.pod, &p.ifname)
}

const INFO: Descriptor = Descriptor {
    name: "podmeter_pod_info",
    unit: None,
    help: "Identity of each metered pod interface; always 1.",
    kind: Kind::Gauge,
};

const TRAFFIC: [Counter<PodCounters>; 4] = [
    counter(
        "podmeter_pod_receive",
        Some(Unit::Bytes),
        "Bytes received by the pod interface (host veth egress).",
        |c| c.receive.bytes,
    ),
    counter(
        "podmeter_pod_transmit",
        Some(Unit::Bytes),
        "Bytes transmitted by the pod interface (host veth ingress).",
        |c| c.transmit.bytes,
    ),
    counter(
        "podmeter_pod_receive_packets",
        None,
        "Packets received by the pod interface (host veth egress).",
        |c| c.receive.packets,
    ),
    counter(
        "podmeter_pod_transmit_packets",
        None,
        "Packets transmitted by the pod interface (host veth ingress).",
        |c| c.transmit.packets,
    ),
];

const DROPS: [Counter<PodCounter>; 2] = [
    counter(
        "podmeter_pod_drop_packets",
        None,
        "Packets of the pod interface dropped by the kernel (reason: its skb_drop_reason) or by podmeter (POLICY_DENIED: the pod's policy; SPOOFED_SOURCE: sent as someone else; UNPARSABLE: not classifiable), by direction and reason.",
        |c| c.packets,
    ),
    counter(
        "podmeter_pod_drop",
        Some(Unit::Bytes),
        "Bytes of the pod interface dropped by the kernel (reason: its skb_drop_reason) or by podmeter (POLICY_DENIED: the pod's policy; SPOOFED_SOURCE: sent as someone else; UNPARSABLE: not classifiable), by direction and reason.",
        |c| c.bytes,
    ),
];

/// One field of a pod's flow state: a value per direction, the one that
/// opened the flows.
type FlowValues = fn(&FlowState) -> [u64; 2];

/// A family of the flow table of pods with policy.
struct FlowFamily {
    descriptor: Descriptor,
    values: FlowValues,
}

const fn flow_family(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    values: FlowValues,
) -> FlowFamily {
    FlowFamily {
        descriptor: Descriptor {
            name,
            unit: None,
            help,
            kind,
        },
        values,
    }
}

const FLOWS: [FlowFamily; 3] = [
    flow_family(
        "podmeter_pod_flows",
        Kind::Gauge,
        "Flows in the flow table of a pod with policy, by the direction that opened them (transmit: by the pod); each direction's budget is 8192.",
        |s| s.flows,
    ),
    flow_family(
        "podmeter_pod_flows_refused",
        Kind::Counter,
        "New flows of a pod with policy not recorded because its budget for that direction was spent; their replies met the pod's rules.",
        |s| s.refused,
    ),
    flow_family(
        "podmeter_pod_flows_reclaimed",
        Kind::Counter,
        "Expired flows deleted from the flow table of a pod with policy to make room, by the direction that opened them.",
        |s| s.reclaimed,
    ),
];

const POLICY_FLOWS: Descriptor = Descriptor {
    name: "podmeter_pod_policy_flows",
    unit: None,
    help: "Decisions of a pod's policy on new flows, by direction (transmit: opened by the pod) and verdict: once per allowed flow, once per denied packet (each retransmission of a denied flow's first packet counts).",
    kind: Kind::Counter,
};

const POLICY_ISOLATED: Descriptor = Descriptor {
    name: "podmeter_pod_policy_isolated",
    unit: None,
    help: "1 if NetworkPolicy isolates the pod in that direction (only what a policy allows passes), else 0; pods with policy only.",
    kind: Kind::Gauge,
};

/// The verdict label's values, with their counts in a pod's flow state.
const VERDICTS: [(&str, FlowValues); 2] = [("allowed", |s| s.allowed), ("denied", |s| s.denied)];

/// Writes `podmeter_pod_info`, the traffic and the drop counters of `pods`
/// to `out`. Each pod's labels are escaped once, for all its series.
pub fn write(out: &mut String, format: Format, pods: &[PodSample]) {
    let labels: Vec<Labels> = pods.iter().map(|p| pod_labels(&p.identity)).collect();
    // The labels after the pod's, and the `ips` label's value: rewritten
    // for each series, in place.
    let mut more = Labels::default();
    let mut addrs = String::new();

    let mut info = Family::start(out, format, &INFO);
    for (pod, l) in pods.iter().zip(&labels) {
        let p = &pod.identity;
        more.clear();
        more.push("uid", &p.uid);
        more.push("container_id", &p.container_id);
        more.push("host_interface", &p.host_ifname);
        ips(&mut addrs, p);
        more.push("ips", &addrs);
        info.sample(&[l, &more], 1u8);
    }

    for family in &TRAFFIC {
        let mut f = Family::start(out, format, &family.descriptor);
        for (pod, l) in pods.iter().zip(&labels) {
            f.sample(&[l], (family.value)(&pod.counters));
        }
    }

    for family in &DROPS {
        let mut f = Family::start(out, format, &family.descriptor);
        for (pod, l) in pods.iter().zip(&labels) {
            for d in &pod.drops {
                more.clear();
                more.push("direction", d.direction.as_str());
                more.push("reason", &d.reason);
                f.sample(&[l, &more], (family.value)(&d.dropped));
            }
        }
    }

    for family in &FLOWS {
        let mut f = Family::start(out, format, &family.descriptor);
        for (pod, l) in pods.iter().zip(&labels) {
            let Some(state) = &pod.flows else { continue };
            let values = (family.values)(state);
            for direction in Direction::ALL {
                more.clear();
                more.push("direction", direction.as_str());
                f.sample(&[l, &more], values[direction as usize]);
            }
        }
    }

    let mut f = Family::start(out, format, &POLICY_FLOWS);
    for (pod, l) in pods.iter().zip(&labels) {
        let Some(state) = &pod.flows else { continue };
        for direction in Direction::ALL {
            for (verdict, values) in VERDICTS {
                more.clear();
                more.push("direction", direction.as_str());
                more.push("verdict", verdict);
                f.sample(&[l, &more], values(state)[direction as usize]);
            }
        }
    }

    let mut f = Family::start(out, format, &POLICY_ISOLATED);
    for (pod, l) in pods.iter().zip(&labels) {
        let Some(isolated) = pod.isolated else {
            continue;
        };
        for direction in Direction::ALL {
            more.clear();
            more.push("direction", direction.as_str());
            f.sample(&[l, &more], u8::from(isolated[direction as usize]));
        }
    }

    let with_tcp: Vec<_> = pods
        .iter()
        .zip(&labels)
        .filter_map(|(p, l)| Some((p.tcp.as_ref()?, l)))
        .collect();
    tcp::write(out, format, &with_tcp);
}

fn pod_labels(p: &PodIdentity) -> Labels {
    // Room for the labels of most pods: one allocation each.
    let mut l = Labels::with_capacity(128);
    l.push("namespace", &p.namespace);
    l.push("pod", &p.pod);
    l.push("interface", &p.ifname);
    l
}

/// Sets `out` to the `ips` label: `addr/prefix`, comma-separated.
fn ips(out: &mut String, p: &PodIdentity) {
    out.clear();
    for (addr, prefix) in &p.ips {
        let sep = if out.is_empty() { "" } else { "," };
        // Writing to a String cannot fail.
        let _ = write!(out, "{sep}{addr}/{prefix}");
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use prometheus_client::{
        collector::Collector,
        encoding::{
            prometheus_text, text, DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder,
        },
        metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
        registry::Registry,
    };

    use super::*;

    fn identity(pod: &str, ifname: &str) -> PodIdentity {
        PodIdentity {
            namespace: "default".into(),
            pod: pod.into(),
            uid: format!("uid-{pod}"),
            container_id: format!("c-{pod}"),
            network: "podmeter".into(),
            ifname: ifname.into(),
            host_ifname: format!("pm{pod}"),
            ips: vec![],
        }
    }

    fn counters(n: u64) -> PodCounters {
        PodCounters {
            receive: PodCounter {
                packets: n,
                bytes: 100 * n,
            },
            transmit: PodCounter::default(),
        }
    }

    #[test]
    fn half_registered_pods_are_skipped() {
        let a = identity("a", "eth0");
        let b = identity("b", "eth0");
        let registered = vec![(1, a.clone()), (2, b)];
        // 2 has no counters (ADD or DEL half-way); 4 has counters only
        // (ADD half-way).
        let counters = BTreeMap::from([(1, counters(1)), (4, counters(4))]);
        let pods = join(registered, &counters);
        assert_eq!(
            pods,
            vec![PodSample {
                ifindex: 1,
                identity: a,
                counters: counters[&1],
                drops: Vec::new(),
                flows: None,
                isolated: None,
                tcp: None,
            }]
        );
    }

    #[test]
    fn one_series_per_pod_interface_the_newest() {
        let old = identity("web-0", "eth0");
        let new = PodIdentity {
            uid: "uid-new".into(),
            ..old.clone()
        };
        let other_if = identity("web-0", "net1");
        let registered = vec![(9, new), (5, old), (7, other_if)];
        let counters = BTreeMap::from([(5, counters(5)), (7, counters(7)), (9, counters(9))]);
        let pods = join(registered, &counters);
        let kept: Vec<(u32, &str)> = pods
            .iter()
            .map(|p| (p.ifindex, p.identity.uid.as_str()))
            .collect();
        assert_eq!(kept, [(9, "uid-new"), (7, "uid-web-0")]);
    }

    /// Label sets as prometheus-client derives them.
    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct RefPod {
        namespace: String,
        pod: String,
        interface: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct RefInfo {
        #[prometheus(flatten)]
        pod: RefPod,
        uid: String,
        container_id: String,
        host_interface: String,
        ips: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct RefDirection {
        #[prometheus(flatten)]
        pod: RefPod,
        direction: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct RefVerdict {
        #[prometheus(flatten)]
        pod: RefPod,
        direction: String,
        verdict: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct RefDrop {
        #[prometheus(flatten)]
        pod: RefPod,
        direction: String,
        reason: String,
    }

    /// The per-pod families encoded by prometheus-client, as they were
    /// before [`write`].
    #[derive(Debug)]
    struct Reference(Vec<PodSample>);

    fn counter_family<'a>(
        encoder: &'a mut DescriptorEncoder,
        d: &'a Descriptor,
    ) -> Result<MetricEncoder<'a>, fmt::Error> {
        encoder.encode_descriptor(d.name, d.help, d.unit.as_ref(), MetricType::Counter)
    }

    impl Collector for Reference {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            let pod = |p: &PodIdentity| RefPod {
                namespace: p.namespace.clone(),
                pod: p.pod.clone(),
                interface: p.ifname.clone(),
            };
            let mut m = encoder.encode_descriptor(INFO.name, INFO.help, None, MetricType::Gauge)?;
            for s in &self.0 {
                let p = &s.identity;
                let info = RefInfo {
                    pod: pod(p),
                    uid: p.uid.clone(),
                    container_id: p.container_id.clone(),
                    host_interface: p.host_ifname.clone(),
                    ips: {
                        let mut addrs = String::new();
                        ips(&mut addrs, p);
                        addrs
                    },
                };
                ConstGauge::new(1i64).encode(m.encode_family(&info)?)?;
            }
            for family in &TRAFFIC {
                let mut m = counter_family(&mut encoder, &family.descriptor)?;
                for s in &self.0 {
                    let value = (family.value)(&s.counters);
                    ConstCounter::new(value).encode(m.encode_family(&pod(&s.identity))?)?;
                }
            }
            for family in &DROPS {
                let mut m = counter_family(&mut encoder, &family.descriptor)?;
                for s in &self.0 {
                    for drop in &s.drops {
                        let labels = RefDrop {
                            pod: pod(&s.identity),
                            direction: drop.direction.as_str().into(),
                            reason: drop.reason.to_string(),
                        };
                        ConstCounter::new((family.value)(&drop.dropped))
                            .encode(m.encode_family(&labels)?)?;
                    }
                }
            }
            for family in &FLOWS {
                let d = &family.descriptor;
                let kind = match d.kind {
                    Kind::Counter => MetricType::Counter,
                    Kind::Gauge | Kind::Histogram => MetricType::Gauge,
                };
                let mut m = encoder.encode_descriptor(d.name, d.help, None, kind)?;
                for s in &self.0 {
                    let Some(state) = &s.flows else { continue };
                    for direction in Direction::ALL {
                        let labels = RefDirection {
                            pod: pod(&s.identity),
                            direction: direction.as_str().into(),
                        };
                        let value = (family.values)(state)[direction as usize];
                        let metric = m.encode_family(&labels)?;
                        match d.kind {
                            Kind::Counter => ConstCounter::new(value).encode(metric)?,
                            Kind::Gauge | Kind::Histogram => {
                                ConstGauge::new(value as i64).encode(metric)?
                            }
                        }
                    }
                }
            }
            let d = &POLICY_FLOWS;
            let mut m = counter_family(&mut encoder, d)?;
            for s in &self.0 {
                let Some(state) = &s.flows else { continue };
                for direction in Direction::ALL {
                    for (verdict, values) in VERDICTS {
                        let labels = RefVerdict {
                            pod: pod(&s.identity),
                            direction: direction.as_str().into(),
                            verdict: verdict.into(),
                        };
                        ConstCounter::new(values(state)[direction as usize])
                            .encode(m.encode_family(&labels)?)?;
                    }
                }
            }
            let d = &POLICY_ISOLATED;
            let mut m = encoder.encode_descriptor(d.name, d.help, None, MetricType::Gauge)?;
            for s in &self.0 {
                let Some(isolated) = s.isolated else { continue };
                for direction in Direction::ALL {
                    let labels = RefDirection {
                        pod: pod(&s.identity),
                        direction: direction.as_str().into(),
                    };
                    ConstGauge::new(i64::from(isolated[direction as usize]))
                        .encode(m.encode_family(&labels)?)?;
                }
            }
            Ok(())
        }
    }

    #[test]
    fn writes_the_pod_families_as_prometheus_client_does() {
        let mut awkward = identity("we\\b \"0\"\nx", "eth\"0");
        awkward.namespace = "ns\"\\ λ 日本".into();
        awkward.uid = "\n".into();
        awkward.ips = vec![
            ("10.22.0.5".parse().unwrap(), 24),
            ("fd00::5".parse().unwrap(), 64),
        ];
        let drop = |direction, reason: &str, n| Drops {
            direction,
            reason: reason.into(),
            dropped: PodCounter {
                packets: n,
                bytes: 84 * n,
            },
        };
        let pods = vec![
            PodSample {
                ifindex: 7,
                identity: awkward,
                counters: counters(u64::MAX / 100),
                drops: vec![
                    drop(Direction::Receive, "NO_\"SOCKET\\\n", 1),
                    drop(Direction::Transmit, "🚀", 0),
                ],
                flows: Some(FlowState {
                    flows: [3, 8192],
                    refused: [0, u64::MAX / 2],
                    reclaimed: [7, 0],
                    swept_ns: 1,
                    allowed: [u64::MAX, 2],
                    denied: [0, 9],
                }),
                isolated: Some([false, true]),
                tcp: None,
            },
            PodSample {
                ifindex: 8,
                identity: identity("web-0", "eth0"),
                counters: counters(0),
                drops: vec![],
                flows: None,
                isolated: None,
                tcp: None,
            },
        ];
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Reference(pods.clone())));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).unwrap();
        let mut openmetrics = String::new();
        text::encode_registry(&mut openmetrics, &registry).unwrap();

        for (format, want) in [(Format::Text, text), (Format::OpenMetrics, openmetrics)] {
            let mut out = String::new();
            write(&mut out, format, &pods);
            assert_eq!(out, want, "{format:?}");
        }
    }

    #[test]
    fn ips_label_lists_addr_slash_prefix() {
        let mut p = identity("a", "eth0");
        let mut addrs = "left over".to_owned();
        ips(&mut addrs, &p);
        assert_eq!(addrs, "");
        p.ips = vec![
            ("10.22.0.5".parse().unwrap(), 24),
            ("fd00:22::5".parse().unwrap(), 64),
        ];
        ips(&mut addrs, &p);
        assert_eq!(addrs, "10.22.0.5/24,fd00:22::5/64");
    }
}
