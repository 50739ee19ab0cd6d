//! Command-line flags, named like the exporter's (`--bpf.*`, `--web.*`,
//! `--log.*`). Every host path is a flag so that tests (and unusual nodes)
//! can point the agent elsewhere; the defaults are what a node uses.

use std::{net::SocketAddr, path::PathBuf};

use clap::{ArgAction, Parser};
use ipnet::IpNet;
use podmeter_conflist::DEFAULT_DATA_DIR;
use podmeter_daemon::LogArgs;
use podmeter_ebpf::pins::DEFAULT_PIN_PATH;

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
        default_value = DEFAULT_PIN_PATH
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
        default_value = DEFAULT_DATA_DIR
    )]
    pub ipam_data_dir: PathBuf,

    /// The cluster's pod ranges (kube-controller-manager's
    /// `--cluster-cidr`), repeatable or comma-separated: written into the
    /// conflist as `clusterCIDRs`, so that pod traffic to other nodes' pods
    /// keeps its source address while traffic leaving them is masqueraded.
    #[arg(long = "cluster-cidr", value_name = "CIDR", value_delimiter = ',', value_parser = cidr)]
    pub cluster_cidrs: Vec<IpNet>,

    /// Keep a route to every other node's pod ranges via its InternalIP
    /// (nodes on one L2 segment). Off where something else routes pod
    /// ranges (the cloud's routes, BGP).
    #[arg(long = "routes.enabled", value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub routes: bool,

    /// Enforce Kubernetes NetworkPolicy: watch Pods, Namespaces and
    /// NetworkPolicies and keep this node's pods' kubernetes tier compiled.
    /// `false`: no such watches, no policy written.
    #[arg(long = "network-policy", value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub network_policy: bool,

    /// The cluster's Service ranges (kube-apiserver's
    /// `--service-cluster-ip-range`), repeatable or comma-separated. Kept
    /// for the post-DNAT egress decision (Services); not used yet.
    #[arg(long = "service-cidr", value_name = "CIDR", value_delimiter = ',', value_parser = cidr)]
    pub service_cidrs: Vec<IpNet>,

    /// Address of `/readyz`, `/healthz` and `/metrics` (`127.0.0.1:0` picks a free
    /// port; the bound address is logged as `listening address=...`).
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: SocketAddr,

    #[command(flatten)]
    pub log: LogArgs,
}

/// An empty NODE_NAME (a DaemonSet without the downward API entry) would
/// watch for a node that never exists: refuse it at start.
fn node_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_owned())
}

/// A range with host bits set is most likely a typo: refused rather than
/// quietly widened.
fn cidr(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s.trim().parse().map_err(|e| format!("{e}"))?;
    if net != net.trunc() {
        return Err(format!(
            "has host bits set (the network is {})",
            net.trunc()
        ));
    }
    Ok(net)
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
        assert!(args.cluster_cidrs.is_empty());
        assert!(args.routes);
        assert!(args.network_policy);
        assert!(args.service_cidrs.is_empty());
    }

    #[test]
    fn network_policy_can_be_turned_off_and_service_cidrs_are_ranges() {
        let args = Args::try_parse_from([
            "x",
            "--node-name=n",
            "--network-policy=false",
            "--service-cidr=10.96.0.0/16,fd00:10:96::/112",
        ])
        .unwrap();
        assert!(!args.network_policy);
        let want: Vec<IpNet> = ["10.96.0.0/16", "fd00:10:96::/112"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(args.service_cidrs, want);
        let err = Args::try_parse_from(["x", "--node-name=n", "--service-cidr=10.96.0.1/16"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--service-cidr"), "{err}");
    }

    #[test]
    fn cluster_cidrs_repeat_or_come_comma_separated() {
        let args = Args::try_parse_from([
            "x",
            "--node-name=n",
            "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
            "--cluster-cidr",
            "10.96.0.0/12",
            "--routes.enabled=false",
        ])
        .unwrap();
        let want: Vec<IpNet> = ["10.244.0.0/16", "fd00:10:244::/56", "10.96.0.0/12"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(args.cluster_cidrs, want);
        assert!(!args.routes);
        for bad in ["10.244.0.0/33", "10.244.1.0/16", "nonsense"] {
            let err = Args::try_parse_from(["x", "--node-name=n", "--cluster-cidr", bad])
                .unwrap_err()
                .to_string();
            assert!(err.contains("--cluster-cidr"), "{bad}: {err}");
        }
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
