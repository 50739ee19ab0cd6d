//! Command-line flags, named like the exporter's (`--bpf.*`, `--web.*`,
//! `--log.*`). Every host path is a flag so that tests (and unusual nodes)
//! can point the agent elsewhere; the defaults are what a node uses.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, ValueEnum};

/// Next to the exporter's 9977. Loopback: only the kubelet's probe (from the
/// host network, `host: 127.0.0.1`) needs it.
pub const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:9978";

#[derive(Debug, Parser)]
#[command(name = "podmeter-agent", version, about)]
pub struct Args {
    /// This node's name, as the kubelet registered it (the DaemonSet sets
    /// NODE_NAME from `spec.nodeName`).
    #[arg(long = "node-name", env = "NODE_NAME", value_name = "NAME", value_parser = node_name)]
    pub node_name: String,

    /// Where bpffs must be mounted; the agent mounts it there (mode 0700,
    /// shared) when it is not.
    #[arg(
        long = "bpf.mount-path",
        value_name = "DIR",
        default_value = "/sys/fs/bpf"
    )]
    pub bpffs: PathBuf,

    /// The plugin's pin path, written into the conflist as `pinPath` (the
    /// exporter's `--bpf.pin-path` must match).
    #[arg(
        long = "bpf.pin-path",
        value_name = "DIR",
        default_value = "/sys/fs/bpf/podmeter"
    )]
    pub pin_path: PathBuf,

    /// The conflist the agent writes (the container runtime's CNI conf dir).
    #[arg(
        long = "cni.conflist",
        value_name = "FILE",
        default_value = "/etc/cni/net.d/10-podmeter.conflist"
    )]
    pub conflist: PathBuf,

    /// The runtime's CNI plugin dir: the plugin is installed here, and
    /// `portmap` is chained only if it is here too.
    #[arg(
        long = "cni.bin-dir",
        value_name = "DIR",
        default_value = "/opt/cni/bin"
    )]
    pub cni_bin_dir: PathBuf,

    /// The plugin binary shipped in the agent's image.
    #[arg(
        long = "cni.plugin-source",
        value_name = "FILE",
        default_value = "/opt/podmeter/bin/podmeter"
    )]
    pub plugin_source: PathBuf,

    /// Remove the conflist when the agent stops (SIGTERM/SIGINT). Off by
    /// default: a rolling update stops every agent, and removing the
    /// conflist would take each node NotReady for the restart.
    #[arg(long = "cni.uninstall", default_value_t = false)]
    pub uninstall: bool,

    /// The IPAM's lease directory (`ipam.dataDir`).
    #[arg(
        long = "ipam.data-dir",
        value_name = "DIR",
        default_value = "/var/lib/podmeter/networks"
    )]
    pub ipam_data_dir: PathBuf,

    /// Address of `/readyz` and `/healthz` (`127.0.0.1:0` picks a free
    /// port; the bound address is logged as `listening address=...`).
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: SocketAddr,

    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Output format of log messages (to stderr).
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Logfmt)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => Self::ERROR,
            LogLevel::Warn => Self::WARN,
            LogLevel::Info => Self::INFO,
            LogLevel::Debug => Self::DEBUG,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

/// An empty NODE_NAME (a DaemonSet without the downward API entry) would
/// watch for a node that never exists: refuse it at start.
fn node_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_nodes_paths() {
        let args = Args::try_parse_from(["x", "--node-name", "n1"]).unwrap();
        assert_eq!(args.node_name, "n1");
        assert_eq!(args.bpffs, PathBuf::from("/sys/fs/bpf"));
        assert_eq!(args.pin_path, PathBuf::from("/sys/fs/bpf/podmeter"));
        assert_eq!(
            args.conflist,
            PathBuf::from("/etc/cni/net.d/10-podmeter.conflist")
        );
        assert_eq!(args.cni_bin_dir, PathBuf::from("/opt/cni/bin"));
        assert_eq!(
            args.plugin_source,
            PathBuf::from("/opt/podmeter/bin/podmeter")
        );
        assert!(!args.uninstall);
        assert_eq!(args.listen_address, DEFAULT_LISTEN_ADDRESS.parse().unwrap());
    }

    #[test]
    fn a_missing_or_empty_node_name_is_refused() {
        // clap reads NODE_NAME only if the flag is absent; the test runner's
        // environment has none.
        assert!(std::env::var_os("NODE_NAME").is_none());
        assert!(Args::try_parse_from(["x"]).is_err());
        assert!(Args::try_parse_from(["x", "--node-name="]).is_err());
    }
}
