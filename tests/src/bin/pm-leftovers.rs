//! `pm-leftovers`: prints, as one JSON object, what pod attachments left on a
//! test node (see `podmeter_tests::leftovers`), for `scripts/faults.sh`.

use std::path::PathBuf;

use clap::Parser;
use podmeter_tests::leftovers::{Leftovers, Site};

#[derive(Parser)]
struct Cli {
    /// The node's network namespace (a name under /run/netns).
    #[arg(long)]
    netns: String,
    /// A pod namespace whose processes count too (repeatable).
    #[arg(long)]
    pod_netns: Vec<String>,
    #[arg(long)]
    pin_path: PathBuf,
    /// The built-in IPAM's `dataDir`.
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    network: String,
    /// An earlier output of this tool (after a fault-free ADD, DEL and GC)
    /// whose addresses and routes are the node's own.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let site = Site {
        netns: cli.netns,
        pod_netns: cli.pod_netns,
        pin_path: cli.pin_path,
        data_dir: cli.data_dir,
        network: cli.network,
    };
    let mut found = Leftovers::read(&site);
    if let Some(path) = cli.baseline {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json = serde_json::from_str(&text).expect("baseline is JSON");
        found = found.beyond(&Leftovers::baseline_from_json(&json));
    }
    println!("{}", found.to_json());
}
