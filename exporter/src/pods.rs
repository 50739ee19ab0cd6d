//! Per-pod metric families, built from one read of the pinned maps.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::{self, Write as _},
    sync::Arc,
};

use podmeter_ebpf::{
    counters::PodCounters, drop_reasons::DropReasons, maps::PinnedMaps, Direction, PinLayout,
    PodCounter, PodIdentity,
};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, LabelSetEncoder},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Unit,
};
use tracing::debug;

use crate::absent::not_pinned;

/// One pod interface with its counters and drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSample {
    pub ifindex: u32,
    pub identity: PodIdentity,
    pub counters: PodCounters,
    pub drops: Vec<Drops>,
}

/// Kernel drops of one pod interface, by direction and reason name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drops {
    pub direction: Direction,
    /// Shared by every drop of that reason in a scrape.
    pub reason: Arc<str>,
    pub dropped: PodCounter,
}

/// Reads the pods and their counters. The registry is read before and after
/// the counters, and only identities seen unchanged in both, with counters,
/// are kept: ADD writes the identity after the counters, DEL removes it
/// after them (so that a DEL killed halfway leaves it for the next one), so
/// a pod being deleted may lose its counters a scrape before its identity,
/// and is then left out. Counters of a new pod are only taken for an old
/// identity if its ifindex was reused between two registry reads, which the
/// kernel's cyclic ifindex allocation makes practically impossible.
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
    let before = maps.pods_batched()?;
    // Batched: reading a full node (8,192 pods, up to 16 drop entries
    // each) one syscall pair per entry was most of a scrape.
    let counters = maps.counters_batched()?;
    let drops = maps.drops_batched()?;
    let after = maps.pods_batched()?.into_iter().collect();
    let mut pods = join(before, &counters, &after);
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
    for pod in &mut pods {
        pod.drops = by_ifindex.remove(&pod.ifindex).unwrap_or_default();
    }
    Ok(pods)
}

/// Pods registered in both registry reads, with counters; at most one per
/// `(namespace, pod, interface)`, the newest interface (highest ifindex), since
/// duplicate series would fail the whole scrape. Sorted for a stable output.
fn join(
    before: Vec<(u32, PodIdentity)>,
    counters: &BTreeMap<u32, PodCounters>,
    after: &HashMap<u32, PodIdentity>,
) -> Vec<PodSample> {
    let mut by_labels: BTreeMap<PodLabels, PodSample> = BTreeMap::new();
    for (ifindex, identity) in before {
        if after.get(&ifindex) != Some(&identity) {
            continue;
        }
        let Some(&counters) = counters.get(&ifindex) else {
            continue;
        };
        let labels = PodLabels::of(&identity);
        if by_labels
            .get(&labels)
            .is_some_and(|kept| kept.ifindex > ifindex)
        {
            continue;
        }
        let sample = PodSample {
            ifindex,
            identity,
            counters,
            drops: Vec::new(),
        };
        by_labels.insert(labels, sample);
    }
    by_labels.into_values().collect()
}

/// The labels every per-pod series carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
pub struct PodLabels {
    pub namespace: String,
    pub pod: String,
    /// The pod-side interface name.
    pub interface: String,
}

impl PodLabels {
    fn of(p: &PodIdentity) -> Self {
        Self {
            namespace: p.namespace.clone(),
            pod: p.pod.clone(),
            interface: p.ifname.clone(),
        }
    }
}

/// [`PodLabels`] borrowed from a sample, encoded the same (the keys, in
/// that order): a series costs no allocation.
#[derive(Debug, Clone, Copy)]
struct PodLabelsRef<'a> {
    namespace: &'a str,
    pod: &'a str,
    interface: &'a str,
}

impl<'a> PodLabelsRef<'a> {
    fn of(p: &'a PodIdentity) -> Self {
        Self {
            namespace: &p.namespace,
            pod: &p.pod,
            interface: &p.ifname,
        }
    }
}

impl EncodeLabelSet for PodLabelsRef<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        [
            ("namespace", self.namespace),
            ("pod", self.pod),
            ("interface", self.interface),
        ]
        .encode(encoder)
    }
}

/// The pod's labels, then `direction` and `reason`.
#[derive(Debug)]
struct DropLabels<'a> {
    pod: PodLabelsRef<'a>,
    direction: &'static str,
    reason: &'a str,
}

impl EncodeLabelSet for DropLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        self.pod.encode(encoder)?;
        [("direction", self.direction), ("reason", self.reason)].encode(encoder)
    }
}

/// The pod's labels, then `uid`, `container_id`, `host_interface`, `ips`.
#[derive(Debug)]
struct PodInfoLabels<'a> {
    pod: PodLabelsRef<'a>,
    uid: &'a str,
    container_id: &'a str,
    host_interface: &'a str,
    /// `addr/prefix`, comma-separated.
    ips: String,
}

impl<'a> PodInfoLabels<'a> {
    fn of(p: &'a PodIdentity) -> Self {
        let mut ips = String::new();
        for (addr, prefix) in &p.ips {
            let sep = if ips.is_empty() { "" } else { "," };
            // Writing to a String cannot fail.
            let _ = write!(ips, "{sep}{addr}/{prefix}");
        }
        Self {
            pod: PodLabelsRef::of(p),
            uid: &p.uid,
            container_id: &p.container_id,
            host_interface: &p.host_ifname,
            ips,
        }
    }
}

impl EncodeLabelSet for PodInfoLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        self.pod.encode(encoder)?;
        [
            ("uid", self.uid),
            ("container_id", self.container_id),
            ("host_interface", self.host_interface),
            ("ips", self.ips.as_str()),
        ]
        .encode(encoder)
    }
}

/// A counter family whose value is read from a `T` ([`PodCounters`] for
/// traffic, [`PodCounter`] for drops). With a unit, the exported name is
/// `<name>_<unit>_total`, else `<name>_total`.
struct Family<T> {
    name: &'static str,
    unit: Option<Unit>,
    help: &'static str,
    value: fn(&T) -> u64,
}

impl<T> Family<T> {
    /// One counter series per `(labels, source)`.
    fn encode<'a, L: EncodeLabelSet>(
        &self,
        encoder: &mut DescriptorEncoder,
        samples: impl Iterator<Item = (L, &'a T)>,
    ) -> fmt::Result
    where
        T: 'a,
    {
        let mut metric = encoder.encode_descriptor(
            self.name,
            self.help,
            self.unit.as_ref(),
            MetricType::Counter,
        )?;
        for (labels, source) in samples {
            ConstCounter::new((self.value)(source)).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn traffic_families() -> [Family<PodCounters>; 4] {
    [
        Family {
            name: "podmeter_pod_receive",
            unit: Some(Unit::Bytes),
            help: "Bytes received by the pod interface (host veth egress).",
            value: |c| c.receive.bytes,
        },
        Family {
            name: "podmeter_pod_transmit",
            unit: Some(Unit::Bytes),
            help: "Bytes transmitted by the pod interface (host veth ingress).",
            value: |c| c.transmit.bytes,
        },
        Family {
            name: "podmeter_pod_receive_packets",
            unit: None,
            help: "Packets received by the pod interface (host veth egress).",
            value: |c| c.receive.packets,
        },
        Family {
            name: "podmeter_pod_transmit_packets",
            unit: None,
            help: "Packets transmitted by the pod interface (host veth ingress).",
            value: |c| c.transmit.packets,
        },
    ]
}

/// Encodes `podmeter_pod_info` and the traffic counters of `pods`.
pub fn encode(pods: &[PodSample], encoder: &mut DescriptorEncoder) -> fmt::Result {
    let labels: Vec<PodLabelsRef> = pods.iter().map(|p| PodLabelsRef::of(&p.identity)).collect();

    let mut info = encoder.encode_descriptor(
        "podmeter_pod_info",
        "Identity of each metered pod interface; always 1.",
        None,
        MetricType::Gauge,
    )?;
    for pod in pods {
        ConstGauge::new(1i64).encode(info.encode_family(&PodInfoLabels::of(&pod.identity))?)?;
    }

    for family in traffic_families() {
        let samples = pods.iter().zip(&labels).map(|(pod, &l)| (l, &pod.counters));
        family.encode(encoder, samples)?;
    }

    let drop_families: [Family<PodCounter>; 2] = [
        Family {
            name: "podmeter_pod_drop_packets",
            unit: None,
            help: "Packets of the pod interface dropped by the kernel (reason: its skb_drop_reason) or by the pod's policy (POLICY_DENIED), by direction and reason.",
            value: |c| c.packets,
        },
        Family {
            name: "podmeter_pod_drop",
            unit: Some(Unit::Bytes),
            help: "Bytes of the pod interface dropped by the kernel (reason: its skb_drop_reason) or by the pod's policy (POLICY_DENIED), by direction and reason.",
            value: |c| c.bytes,
        },
    ];
    for family in drop_families {
        let samples = pods.iter().zip(&labels).flat_map(|(pod, &l)| {
            pod.drops.iter().map(move |d| {
                let labels = DropLabels {
                    pod: l,
                    direction: d.direction.as_str(),
                    reason: &d.reason,
                };
                (labels, &d.dropped)
            })
        });
        family.encode(encoder, samples)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
        let c = identity("c", "eth0");
        let before = vec![(1, a.clone()), (2, b.clone()), (3, c.clone())];
        // 2 has no counters (ADD half-way); 4 has counters only (DEL half-way);
        // 3 was replaced by another pod while the counters were read.
        let counters = BTreeMap::from([(1, counters(1)), (3, counters(3)), (4, counters(4))]);
        let after = HashMap::from([(1, a.clone()), (2, b), (3, identity("d", "eth0"))]);
        let pods = join(before, &counters, &after);
        assert_eq!(
            pods,
            vec![PodSample {
                ifindex: 1,
                identity: a,
                counters: counters[&1],
                drops: Vec::new(),
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
        let before = vec![(9, new.clone()), (5, old.clone()), (7, other_if.clone())];
        let counters = BTreeMap::from([(5, counters(5)), (7, counters(7)), (9, counters(9))]);
        let after = before.iter().cloned().collect();
        let pods = join(before, &counters, &after);
        let kept: Vec<(u32, &str)> = pods
            .iter()
            .map(|p| (p.ifindex, p.identity.uid.as_str()))
            .collect();
        assert_eq!(kept, [(9, "uid-new"), (7, "uid-web-0")]);
    }

    /// The label sets as the derive wrote them before labels were
    /// borrowed: the borrowed ones must encode byte for byte the same.
    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct DerivedDrop {
        #[prometheus(flatten)]
        pod: PodLabels,
        direction: &'static str,
        reason: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct DerivedInfo {
        #[prometheus(flatten)]
        pod: PodLabels,
        uid: String,
        container_id: String,
        host_interface: String,
        ips: String,
    }

    /// One gauge series with `labels`, in both formats.
    fn render(labels: impl EncodeLabelSet + Send + Sync + fmt::Debug + 'static) -> Vec<String> {
        use prometheus_client::{collector::Collector, registry::Registry};

        #[derive(Debug)]
        struct Series<L>(L);
        impl<L: EncodeLabelSet + Send + Sync + fmt::Debug + 'static> Collector for Series<L> {
            fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
                let mut m = encoder.encode_descriptor("x", "h", None, MetricType::Gauge)?;
                ConstGauge::new(1i64).encode(m.encode_family(&self.0)?)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Series(labels)));
        [
            crate::format::Format::Text,
            crate::format::Format::OpenMetrics,
        ]
        .map(|f| f.render(&registry).unwrap())
        .to_vec()
    }

    #[test]
    fn borrowed_labels_encode_as_the_derived_ones() {
        let mut p = identity("we\\b \"0\"\nx", "eth0");
        p.namespace = "ns\"\\".into();
        p.ips = vec![("10.22.0.5".parse().unwrap(), 24)];
        // 'static copies: the collector is boxed.
        let p: &'static PodIdentity = Box::leak(Box::new(p));
        let reason: &'static str = "NO_\"SOCKET\\\n";
        let derived = render(DerivedDrop {
            pod: PodLabels::of(p),
            direction: "receive",
            reason: reason.into(),
        });
        let borrowed = render(DropLabels {
            pod: PodLabelsRef::of(p),
            direction: "receive",
            reason,
        });
        assert_eq!(borrowed, derived);
        assert!(
            derived[0].contains(r#"pod="we\\b \"0\"\nx""#),
            "{}",
            derived[0]
        );

        let info = PodInfoLabels::of(p);
        let derived = render(DerivedInfo {
            pod: PodLabels::of(p),
            uid: p.uid.clone(),
            container_id: p.container_id.clone(),
            host_interface: p.host_ifname.clone(),
            ips: info.ips.clone(),
        });
        assert_eq!(render(info), derived);
    }

    #[test]
    fn ips_label_lists_addr_slash_prefix() {
        let mut p = identity("a", "eth0");
        assert_eq!(PodInfoLabels::of(&p).ips, "");
        p.ips = vec![
            ("10.22.0.5".parse().unwrap(), 24),
            ("fd00:22::5".parse().unwrap(), 64),
        ];
        assert_eq!(PodInfoLabels::of(&p).ips, "10.22.0.5/24,fd00:22::5/64");
    }
}
