//! `podmeter-stat`: prints every registered pod interface with its counters
//! and drops, straight from the pinned maps (what the exporter serves,
//! without HTTP).

use std::{
    collections::HashMap,
    io::{self, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use clap::Parser;
use podmeter_ebpf::{
    counters::PodDrops, drop_reasons::DropReasons, maps::PinnedMaps, pins::DEFAULT_PIN_PATH,
    PinLayout,
};
use serde_json::json;

#[derive(Parser)]
#[command(name = "podmeter-stat", version, about)]
struct Cli {
    /// The pin path the plugin was configured with (`pinPath`).
    #[arg(long = "bpf.pin-path", default_value = DEFAULT_PIN_PATH)]
    pin_path: PathBuf,
    /// Print one JSON object per pod interface instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = BufWriter::new(io::stdout().lock());
    let result = print(&cli, &mut out).and_then(|()| out.flush().map_err(Into::into));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `podmeter-stat | head`: the reader has what it wanted.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the table (or JSON lines) to `out`; a failed write is an error
/// like any other, not a panic as `println!` makes it.
fn print(cli: &Cli, out: &mut impl Write) -> anyhow::Result<()> {
    let maps = PinnedMaps::open(&PinLayout::new(&cli.pin_path))?;
    let counters = maps.counters()?;
    let drops = maps.drops()?;
    // Without BTF the reasons are still shown, as numbers.
    let reasons = DropReasons::of_running_kernel().unwrap_or_default();
    let reason = |d: &PodDrops| reasons.name(d.reason);
    if !cli.json {
        writeln!(
            out,
            "{:<12} {:<20} {:<6} {:<16} {:>10} {:>12} {:>10} {:>12}",
            "NAMESPACE", "POD", "IF", "HOST IF", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES"
        )?;
    }
    for (ifindex, pod) in maps.pods()? {
        let c = counters.get(&ifindex).copied().unwrap_or_default();
        let pod_drops = drops.iter().filter(|d| d.ifindex == ifindex);
        if cli.json {
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
