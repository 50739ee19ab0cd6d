//! Command-line flags, named like the Prometheus exporters' (`--web.*`, `--log.*`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use podmeter_daemon::LogArgs;
use podmeter_ebpf::pins::DEFAULT_PIN_PATH;

/// Loopback only by default: the metrics carry pod names and IPs. A
/// DaemonSet that Prometheus scrapes over the network passes its own address.
/// 9977 is in the exporters' 9100–9999 range.
pub const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:9977";

#[derive(Debug, Parser)]
#[command(name = "podmeter-exporter", version, about)]
pub struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the bound
    /// address is logged as `listening address=...`).
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: SocketAddr,

    /// Path under which to expose the metrics.
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = "/metrics", value_parser = telemetry_path)]
    pub telemetry_path: String,

    /// How long to let in-flight scrapes finish after SIGTERM/SIGINT (e.g. `5s`, `500ms`).
    #[arg(long = "web.shutdown-timeout", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Maximum number of parallel scrape requests; more get 503 at once. 0 disables the limit.
    #[arg(long = "web.max-requests", value_name = "N", default_value_t = 40)]
    pub max_requests: usize,

    /// Maximum number of open connections; one more is answered 503 and
    /// closed. 0 disables the limit. Well under the usual 1024 open files.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = 128)]
    pub max_connections: usize,

    /// The Prometheus exporter-toolkit's web configuration file (YAML): TLS,
    /// basic auth users, response headers. Read again for every connection
    /// and request, so new certificates and users apply without a restart.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,

    /// The plugin's bpffs pin path, holding the pinned maps and programs.
    #[arg(long = "bpf.pin-path", value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reads a password on stdin (one trailing newline dropped) and prints
    /// its bcrypt hash for the web config file's `basic_auth_users`, then
    /// exits: no htpasswd or python3-bcrypt needed.
    HashPassword,
}

/// An absolute path other than `/`, which is the landing page, without the
/// router's capture syntax (`{name}`).
fn telemetry_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s == "/" {
        return Err("must start with `/` and not be `/` (the landing page)".into());
    }
    if s.contains(['{', '}']) {
        return Err("must not contain `{` or `}`".into());
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_prometheus_style_flags() {
        let args = Args::try_parse_from(["x"]).unwrap();
        assert_eq!(args.listen_address, "127.0.0.1:9977".parse().unwrap());
        assert_eq!(args.telemetry_path, "/metrics");
        assert_eq!(args.pin_path, PathBuf::from(DEFAULT_PIN_PATH));
        assert_eq!(args.shutdown_timeout, Duration::from_secs(5));
        assert_eq!((args.max_requests, args.max_connections), (40, 128));
        assert_eq!(args.web_config_file, None);

        let args = Args::try_parse_from([
            "x",
            "--web.listen-address=127.0.0.1:0",
            "--web.telemetry-path",
            "/m",
            "--web.shutdown-timeout=1m 30s",
            "--web.max-requests=0",
            "--web.max-connections",
            "7",
            "--bpf.pin-path=/sys/fs/bpf/other",
            "--web.config.file=/etc/podmeter/web.yml",
            "--log.level=debug",
            "--log.format=json",
        ])
        .unwrap();
        assert_eq!(args.listen_address.port(), 0);
        assert_eq!(args.telemetry_path, "/m");
        assert_eq!(args.shutdown_timeout, Duration::from_secs(90));
        assert_eq!((args.max_requests, args.max_connections), (0, 7));
        assert_eq!(
            args.web_config_file,
            Some(PathBuf::from("/etc/podmeter/web.yml"))
        );
        assert_eq!(args.log.level, podmeter_daemon::LogLevel::Debug);
        assert_eq!(args.log.format, podmeter_daemon::LogFormat::Json);
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            "--web.telemetry-path=/",
            "--web.telemetry-path=metrics",
            "--web.telemetry-path=/{x}",
            "--web.shutdown-timeout=soon",
            "--web.listen-address=localhost",
            "--log.level=trace",
            "--web.max-requests=-1",
            "--web.max-connections=many",
        ] {
            assert!(Args::try_parse_from(["x", bad]).is_err(), "{bad}");
        }
    }
}
