//! `podmeterctl pods`: every registered pod interface with its counters
//! and drops, straight from the pinned maps (what the exporter serves,
//! without HTTP).

use std::{collections::HashMap, io::Write, path::Path, process::ExitCode};

use podmeter_ebpf::{maps::drops::PodDrops, programs::drop_reasons::DropReasons};
use serde_json::json;

use crate::{
    cli::{Format, PodsArgs},
    pod_ref,
};

pub fn run(pin_path: &Path, args: &PodsArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    print(pin_path, args.output == Format::Json, out)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the table (or JSON lines) to `out`; a failed write is an error
/// like any other, not a panic as `println!` makes it.
fn print(pin_path: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let maps = pod_ref::open(pin_path)?;
    // The batched reads the exporter uses: a full node is read in a few
    // syscalls, not two per entry.
    let counters = maps.counters_batched()?;
    let drops = maps.drops_batched()?;
    // Without BTF the reasons are still shown, as numbers.
    let reasons = DropReasons::of_running_kernel().unwrap_or_default();
    let reason = |d: &PodDrops| reasons.name(d.reason);
    if !json {
        writeln!(
            out,
            "{:<12} {:<20} {:<6} {:<16} {:>10} {:>12} {:>10} {:>12}",
            "NAMESPACE", "POD", "IF", "HOST IF", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES"
        )?;
    }
    for (ifindex, pod) in maps.pods_batched()? {
        let c = counters.get(&ifindex).copied().unwrap_or_default();
        // The drops come sorted by interface: the pod's are one run, found
        // by bisection rather than a scan of every drop for every pod.
        let first = drops.partition_point(|d| d.ifindex < ifindex);
        let end = drops.partition_point(|d| d.ifindex <= ifindex);
        let pod_drops = drops[first..end].iter();
        if json {
            let ips: Vec<String> = pod.ips.iter().map(|(a, p)| format!("{a}/{p}")).collect();
            let drops: Vec<_> = pod_drops
                .map(|d| {
                    json!({"direction": d.direction.as_str(), "reason": reason(d),
                           "packets": d.dropped.packets, "bytes": d.dropped.bytes})
                })
                .collect();
            writeln!(
                out,
                "{}",
                json!({
                    "namespace": pod.namespace, "pod": pod.pod, "uid": pod.uid,
                    "container_id": pod.container_id, "network": pod.network,
                    "interface": pod.ifname, "host_interface": pod.host_ifname,
                    "host_ifindex": ifindex, "ips": ips,
                    "receive_packets": c.receive.packets, "receive_bytes": c.receive.bytes,
                    "transmit_packets": c.transmit.packets, "transmit_bytes": c.transmit.bytes,
                    "drops": drops,
                })
            )?;
        } else {
            writeln!(
                out,
                "{:<12} {:<20} {:<6} {:<16} {:>10} {:>12} {:>10} {:>12}",
                pod.namespace,
                pod.pod,
                pod.ifname,
                pod.host_ifname,
                c.receive.packets,
                c.receive.bytes,
                c.transmit.packets,
                c.transmit.bytes
            )?;
            let mut by_reason: HashMap<(String, &str), u64> = HashMap::new();
            for d in pod_drops {
                *by_reason
                    .entry((reason(d), d.direction.as_str()))
                    .or_default() += d.dropped.packets;
            }
            for ((reason, direction), packets) in by_reason {
                writeln!(
                    out,
                    "{:>14} dropped {packets} pkts, {direction}, reason {reason}",
                    ""
                )?;
            }
        }
    }
    Ok(())
}
