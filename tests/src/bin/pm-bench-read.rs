//! `pm-bench-read`: benchmark-only. Times the batched reads a scrape makes of
//! a pin path (e.g. one `pm-bench-fill` filled), each map alone, so that
//! `scripts/bench/scrape-full.sh` can print the kernel's share of a scrape
//! next to the scrape itself. Prints one line per read: median and min ms
//! over `--rounds`, and what was read.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use clap::Parser;
use podmeter_ebpf::{maps::PinnedMaps, PinLayout};

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    pin_path: PathBuf,
    #[arg(long, default_value_t = 20)]
    rounds: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let maps = match PinnedMaps::open(&PinLayout::new(&cli.pin_path)) {
        Ok(maps) => maps,
        Err(e) => {
            eprintln!("pm-bench-read: {e}");
            return ExitCode::FAILURE;
        }
    };
    type Read<'a> = &'a dyn Fn() -> Result<usize, podmeter_ebpf::Error>;
    let reads: [(&str, Read, &str); 3] = [
        (
            "pm_registry",
            &|| maps.pods_batched().map(|v| v.len()),
            "pods",
        ),
        // Two entries (directions) per pod.
        (
            "pm_counters",
            &|| maps.counters_batched().map(|v| v.len()),
            "pods",
        ),
        (
            "pm_drops",
            &|| maps.drops_batched().map(|v| v.len()),
            "entries",
        ),
    ];
    for (name, read, what) in reads {
        let mut ms = Vec::with_capacity(cli.rounds);
        let mut read_n = 0;
        for _ in 0..cli.rounds {
            let start = Instant::now();
            match read() {
                Ok(n) => read_n = n,
                Err(e) => {
                    eprintln!("pm-bench-read: {name}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ms.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "{name}: median {:.2} ms, min {:.2} ms, {read_n} {what}",
            ms[ms.len() / 2],
            ms[0]
        );
    }
    ExitCode::SUCCESS
}
