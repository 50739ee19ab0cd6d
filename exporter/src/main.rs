//! podmeter-exporter: serves the pinned per-pod counters (see issue 3; not built yet).

fn main() {
    eprintln!("podmeter-exporter is not implemented yet");
    std::process::exit(1);
}
