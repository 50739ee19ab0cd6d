//! Where podmeter pins things on bpffs. The pins are the truth: every process
//! rebuilds its handles from them.
//!
//! ```text
//! <pin path>/v<ABI>/pm_counters          per-CPU counters   (map)
//! <pin path>/v<ABI>/pm_registry          pod identities     (map)
//! <pin path>/v<ABI>/pm_devices           pod devices by netns and ifindex (map)
//! <pin path>/v<ABI>/pm_sources           who each pod may send as (map)
//! <pin path>/v<ABI>/pm_drops             per-CPU drops by pod, direction, reason (map)
//! <pin path>/v<ABI>/pm_policy            pods with policy: defaults, isolation (map)
//! <pin path>/v<ABI>/pm_rules             admin rules by pod, direction, CIDR (LPM trie)
//! <pin path>/v<ABI>/pm_peers             node-wide: identities of remote addresses (LPM trie)
//! <pin path>/v<ABI>/pm_k8s_rules         kubernetes rules by pod, direction, proto, peer, port (LPM trie)
//! <pin path>/v<ABI>/pm_k8s_policies      node-wide: NetworkPolicy names by index (map)
//! <pin path>/v<ABI>/pm_flow_tables       each policy pod's flow table (hash of maps)
//! <pin path>/v<ABI>/pm_flow_state        each policy pod's flow table occupancy (map)
//! <pin path>/v<ABI>/pm_tcp               per-CPU TCP statistics by pod (map)
//! <pin path>/v<ABI>/prog_pm_ingress      loaded programs, reused by every ADD
//! <pin path>/v<ABI>/prog_pm_egress
//! <pin path>/v<ABI>/prog_pm_kfree_skb    the drop tracer
//! <pin path>/v<ABI>/prog_pm_tcp_*        the TCP programs (object::TRACERS)
//! <pin path>/v<ABI>/links/<ifindex>_<hook>   TCX links (one per pod and hook)
//! <pin path>/v<ABI>/links/kfree_skb      the drop tracer's link
//! <pin path>/v<ABI>/links/<tracepoint>   each TCP program's link
//! ```

use std::path::{Path, PathBuf};

use crate::abi::ABI_VERSION;

/// The default pin path, shared by the plugin's `pinPath` and the exporter's flag.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/podmeter";

pub const COUNTERS_MAP: &str = "pm_counters";
pub const REGISTRY_MAP: &str = "pm_registry";
pub const DEVICES_MAP: &str = "pm_devices";
pub const DROPS_MAP: &str = "pm_drops";
pub const SOURCES_MAP: &str = "pm_sources";
pub const POLICY_MAP: &str = "pm_policy";
pub const RULES_MAP: &str = "pm_rules";
pub const PEERS_MAP: &str = "pm_peers";
pub const K8S_RULES_MAP: &str = "pm_k8s_rules";
pub const K8S_POLICIES_MAP: &str = "pm_k8s_policies";
pub const FLOW_TABLES_MAP: &str = "pm_flow_tables";
pub const FLOW_STATE_MAP: &str = "pm_flow_state";
pub const TCP_MAP: &str = "pm_tcp";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(pin_path: impl AsRef<Path>) -> Self {
        Self {
            root: pin_path.as_ref().to_path_buf(),
        }
    }

    /// The configured pin path (e.g. `/sys/fs/bpf/podmeter`).
    pub fn pin_path(&self) -> &Path {
        &self.root
    }

    /// The versioned directory holding this ABI's maps, programs and links.
    pub fn dir(&self) -> PathBuf {
        self.root.join(format!("v{ABI_VERSION}"))
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    pub fn program(&self, name: &str) -> PathBuf {
        self.dir().join(format!("prog_{name}"))
    }

    pub fn links_dir(&self) -> PathBuf {
        self.dir().join("links")
    }

    /// The link of a node-wide tracing program (not tied to an interface).
    pub fn tracer_link(&self, tracepoint: &str) -> PathBuf {
        self.links_dir().join(tracepoint)
    }

    pub fn link(&self, ifindex: u32, hook: &str) -> PathBuf {
        self.links_dir().join(format!("{ifindex}_{hook}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_versioned() {
        let l = PinLayout::new("/sys/fs/bpf/x");
        assert_eq!(
            l.map(COUNTERS_MAP),
            Path::new("/sys/fs/bpf/x/v4/pm_counters")
        );
        assert_eq!(
            l.program("pm_ingress"),
            Path::new("/sys/fs/bpf/x/v4/prog_pm_ingress")
        );
        assert_eq!(
            l.link(7, "egress"),
            Path::new("/sys/fs/bpf/x/v4/links/7_egress")
        );
    }
}
