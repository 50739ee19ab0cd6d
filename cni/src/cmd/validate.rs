//! Checks across the plugin's own keys and the IPAM's that neither parser
//! can make alone. Every verb runs them (through [`super::Invocation`])
//! before touching anything, so a config that passes STATUS does not fail
//! ADD halfway on a mistake of its own.

use ipnet::IpNet;

use super::plan::check_routes;
use crate::{error::PluginError, ipam::Ipam};

pub fn validate(ipam: &Ipam) -> Result<(), PluginError> {
    // A delegate's addresses and routes are known only at ADD, which
    // checks them in its plan before creating anything.
    let Ipam::Builtin(builtin) = ipam else {
        return Ok(());
    };
    let subnets: Vec<IpNet> = builtin
        .range_sets
        .iter()
        .flatten()
        .map(|r| r.subnet)
        .collect();
    check_routes(&builtin.routes, &subnets)
}
