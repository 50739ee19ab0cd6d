//! `pm-bench-fill`: benchmark-only. Fills a pin path (one the benchmark made,
//! e.g. `/sys/fs/bpf/pmbench-…`) with `--pods` registered pod interfaces, so
//! that `scripts/bench/scrape-full.sh` can scrape a full node without wiring
//! thousands of veths.
//!
//! The programs and maps are loaded with `loader::ensure_loaded` and the pods
//! registered with `PinnedMaps::register`, as the plugin does. Then, as the
//! programs would: every `--traffic-every`-th pod gets non-zero traffic
//! counters and every pod `--drops` drop entries (half receive, half
//! transmit, real reason values of the running kernel). The ifindexes and
//! netns cookies are made up (from 1,000,000 and 2^62 up): no device of the
//! machine has them, so the programs never touch these entries.

use std::{path::PathBuf, process::ExitCode};

use aya::maps::{Map, MapData, MapError, PerCpuHashMap, PerCpuValues};
use clap::Parser;
use podmeter_ebpf::{
    abi::{CounterKey, DropKey, MAX_DROP_KEYS, MAX_PODS},
    maps::PinnedMaps,
    pins::{COUNTERS_MAP, DROPS_MAP},
    programs::drop_reasons::DropReasons,
    programs::loader,
    Direction, PinLayout, PodCounter, PodDevices, PodIdentity,
};

#[derive(Parser)]
struct Cli {
    /// The pin path to fill; loaded first if it holds nothing yet.
    #[arg(long)]
    pin_path: PathBuf,
    #[arg(long)]
    pods: u32,
    /// Drop entries per pod (direction × reason).
    #[arg(long, default_value_t = 16)]
    drops: u32,
    /// Every n-th pod has traffic (0: none).
    #[arg(long, default_value_t = 4)]
    traffic_every: u32,
}

const FIRST_IFINDEX: u32 = 1_000_000;
const FIRST_COOKIE: u64 = 1 << 62;

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                msg = format!("{msg}: {s}");
                source = s.source();
            }
            eprintln!("pm-bench-fill: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    if cli.pods > MAX_PODS || u64::from(cli.pods) * u64::from(cli.drops) > u64::from(MAX_DROP_KEYS)
    {
        return Err(
            format!("at most {MAX_PODS} pods and {MAX_DROP_KEYS} drop entries in all").into(),
        );
    }
    let layout = PinLayout::new(&cli.pin_path);
    loader::ensure_loaded(&layout)?;
    let mut maps = PinnedMaps::open(&layout)?;
    for i in 0..cli.pods {
        let ifindex = FIRST_IFINDEX + i;
        let devices = PodDevices {
            node_netns_cookie: FIRST_COOKIE,
            pod_netns_cookie: FIRST_COOKIE + 1 + u64::from(i),
            pod_ifindex: 2,
        };
        maps.register(ifindex, &identity(i), &devices)?;
    }

    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let per_cpu = |n: u64| -> std::io::Result<PerCpuValues<PodCounter>> {
        // Spread over the CPUs as the programs would; the sum is (n, 100 n).
        let values = (0..cpus as u64)
            .map(|c| PodCounter {
                packets: n / cpus as u64 + u64::from(c < n % cpus as u64),
                bytes: 100 * (n / cpus as u64 + u64::from(c < n % cpus as u64)),
            })
            .collect::<Vec<_>>();
        PerCpuValues::try_from(values)
    };
    let open = |name: &str| -> Result<Map, Box<dyn std::error::Error>> {
        Ok(Map::from_map_data(MapData::from_pin(layout.map(name))?)?)
    };
    if cli.traffic_every > 0 {
        let mut counters: PerCpuHashMap<MapData, CounterKey, PodCounter> =
            open(COUNTERS_MAP)?.try_into()?;
        for i in (0..cli.pods).step_by(cli.traffic_every as usize) {
            for (k, direction) in Direction::ALL.into_iter().enumerate() {
                let n = 1_000 + 7 * u64::from(i) + k as u64;
                counters.insert(
                    CounterKey::new(FIRST_IFINDEX + i, direction),
                    per_cpu(n)?,
                    0,
                )?;
            }
        }
    }

    // Real reason values (names from the kernel's BTF), skipping 0
    // (NOT_DROPPED_YET) and 1 (NOT_SPECIFIED).
    let mut reasons: Vec<u32> = DropReasons::of_running_kernel()?
        .iter()
        .map(|(v, _)| v)
        .filter(|&v| v > 1)
        .collect();
    reasons.sort_unstable();
    let per_direction = cli.drops.div_ceil(2) as usize;
    if reasons.len() < per_direction {
        return Err(format!("the kernel names only {} drop reasons", reasons.len()).into());
    }
    let mut drops: PerCpuHashMap<MapData, DropKey, PodCounter> = open(DROPS_MAP)?.try_into()?;
    for i in 0..cli.pods {
        for d in 0..cli.drops {
            let direction = Direction::ALL[(d % 2) as usize];
            // Each pod its own set of reasons, rotating through the list.
            let reason = reasons[(i as usize + (d / 2) as usize) % reasons.len()];
            let key = DropKey {
                ifindex: FIRST_IFINDEX + i,
                direction: direction as u32,
                reason,
                pad: 0,
            };
            let n = 1 + u64::from(i % 97 + d);
            // The drops map allocates its entries as they come (no
            // prealloc); a burst of inserts can find the kernel's per-CPU
            // cache empty before its refill ran: ENOMEM, retried.
            let mut tries = 0;
            while let Err(e) = drops.insert(key, per_cpu(n)?, 0) {
                let enomem = matches!(&e, MapError::SyscallError(s)
                    if s.io_error.raw_os_error() == Some(libc::ENOMEM));
                tries += 1;
                if !enomem || tries == 100 {
                    return Err(e.into());
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
    println!(
        "{} pods registered, {} with traffic, {} drop entries",
        cli.pods,
        if cli.traffic_every > 0 {
            cli.pods.div_ceil(cli.traffic_every)
        } else {
            0
        },
        cli.pods * cli.drops
    );
    Ok(())
}

/// Identities of the length a cluster's have: a Deployment's pod name, a
/// UUID, a 64-hex container ID, a v4 and a v6 address.
fn identity(i: u32) -> PodIdentity {
    let h = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    PodIdentity {
        namespace: format!("team-{:02}", i % 40),
        pod: format!("service-{:03}-7d9f8c6b5-{i:05x}", i % 300),
        uid: format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            h >> 32,
            (h >> 16) & 0xffff,
            h & 0xfff,
            (h >> 20) & 0xfff,
            h & 0xffff_ffff_ffff
        ),
        container_id: format!("{h:016x}{:016x}{h:016x}{:016x}", !h, h.rotate_left(17)),
        network: "podmeter".into(),
        ifname: "eth0".into(),
        host_ifname: format!("pm{:013x}", h >> 12),
        ips: vec![
            (
                format!("10.{}.{}.{}", 64 + (i >> 16), (i >> 8) & 0xff, i & 0xff)
                    .parse()
                    .expect("a v4 address"),
                16,
            ),
            (
                format!("fd00:22::{:x}", i + 1)
                    .parse()
                    .expect("a v6 address"),
                64,
            ),
        ],
    }
}
