//! The built-in allocator's `ipam` keys (host-local's), as written; the
//! plugin checks the ranges (`cni/src/ipam/builtin/config.rs`).

use std::{net::IpAddr, path::PathBuf};

use ipnet::IpNet;
use rscni_plugin::types::Route;
use serde::{Deserialize, Serialize};

/// The `ipam.type` that selects the built-in allocator instead of a plugin binary.
pub const BUILTIN_TYPE: &str = "builtin";

/// Where leases live (`<dataDir>/<network>/`) unless `dataDir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/podmeter/networks";

/// `ipam`'s keys other than `type`. Unknown keys are ignored because other
/// tools annotate configs; `null` counts as absent, like Go's `json.Unmarshal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltinIpam {
    /// host-local's legacy single-range shorthand (`subnet`, `rangeStart`,
    /// `rangeEnd`, `gateway` at the top of `ipam`), leased ahead of `ranges`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// One address is leased from each set; `[[v4], [v6]]` is dual stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<Vec<IpRange>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// One entry of `ranges` (or the legacy shorthand), before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    pub subnet: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

impl IpRange {
    /// The whole of `subnet`, gateway and bounds left to the allocator.
    pub fn subnet(subnet: IpNet) -> Self {
        Self {
            subnet,
            range_start: None,
            range_end: None,
            gateway: None,
        }
    }
}
