//! `podmeter-stat`: prints every registered pod interface with its counters,
//! straight from the pinned maps (what the exporter serves, without HTTP).

use std::path::PathBuf;

use clap::Parser;
use podmeter_ebpf::{maps::PinnedMaps, pins::DEFAULT_PIN_PATH, PinLayout};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The pin path the plugin was configured with (`pinPath`).
    #[arg(long = "bpf.pin-path", default_value = DEFAULT_PIN_PATH)]
    pin_path: PathBuf,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let maps = PinnedMaps::open(&PinLayout::new(&cli.pin_path))?;
    let counters = maps.counters()?;
    if !cli.json {
        println!(
            "{:<12} {:<20} {:<6} {:<16} {:>10} {:>12} {:>10} {:>12}",
            "NAMESPACE", "POD", "IF", "HOST IF", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES"
        );
    }
    for (ifindex, pod) in maps.pods()? {
        let c = counters.get(&ifindex).copied().unwrap_or_default();
        if cli.json {
            let ips: Vec<String> = pod.ips.iter().map(|(a, p)| format!("{a}/{p}")).collect();
            println!(
                "{}",
                serde_json::json!({
                    "namespace": pod.namespace, "pod": pod.pod, "uid": pod.uid,
                    "container_id": pod.container_id, "network": pod.network,
                    "interface": pod.ifname, "host_interface": pod.host_ifname,
                    "host_ifindex": ifindex, "ips": ips,
                    "receive_packets": c.receive.packets, "receive_bytes": c.receive.bytes,
                    "transmit_packets": c.transmit.packets, "transmit_bytes": c.transmit.bytes,
                })
            );
        } else {
            println!(
                "{:<12} {:<20} {:<6} {:<16} {:>10} {:>12} {:>10} {:>12}",
                pod.namespace,
                pod.pod,
                pod.ifname,
                pod.host_ifname,
                c.receive.packets,
                c.receive.bytes,
                c.transmit.packets,
                c.transmit.bytes
            );
        }
    }
    Ok(())
}
