//! Parsing and validating the built-in allocator's `ipam` section (host-local's keys).
//!
//! Unknown keys are ignored because other tools annotate configs; a known key with the
//! wrong type is an error, reported with the key's path.

use std::{collections::HashMap, net::IpAddr, path::PathBuf, time::Duration};

use podmeter_conflist::{BuiltinIpam, IpRange};
use rscni_plugin::types::Route;
use serde::Deserialize;
use serde_json::Value;

use super::range::{describe, to_u128, Range, RangeSet};
use crate::{ipam::IpamError, special::special_overlap};

pub use podmeter_conflist::DEFAULT_DATA_DIR;
/// Long enough for 50 parallel ADDs to take their turn, short enough that a stuck
/// holder turns into "try again later" before the runtime's own timeout.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The validated built-in allocator config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinConfig {
    /// One address is leased from each set; `[[v4], [v6]]` is dual stack.
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    /// Leases live in `<data_dir>/<network>/`.
    pub data_dir: PathBuf,
    /// Not a config key: how long a verb waits for the network's lock.
    pub lock_timeout: Duration,
}

impl BuiltinConfig {
    /// Parses `ipam`'s keys other than `type`.
    pub fn parse(ipam: &HashMap<String, Value>) -> Result<Self, IpamError> {
        // The shape (types, with the key at fault named) is the shared
        // schema's; the values are checked below.
        let raw: BuiltinIpam = typed("ipam", Value::Object(ipam.clone().into_iter().collect()))?;
        let mut raw_sets: Vec<Vec<(String, IpRange)>> = Vec::new();

        // host-local puts the legacy shorthand first, ahead of `ranges`.
        match (raw.subnet, (raw.range_start, raw.range_end, raw.gateway)) {
            (Some(subnet), (range_start, range_end, gateway)) => raw_sets.push(vec![(
                "ipam".to_string(),
                IpRange {
                    subnet,
                    range_start,
                    range_end,
                    gateway,
                },
            )]),
            (None, (None, None, None)) => {}
            (None, _) => {
                return Err(IpamError::config(
                    "ipam.rangeStart/rangeEnd/gateway given without ipam.subnet",
                ))
            }
        }

        for (i, set) in raw.ranges.unwrap_or_default().into_iter().enumerate() {
            raw_sets.push(
                set.into_iter()
                    .enumerate()
                    .map(|(j, range)| (format!("ipam.ranges[{i}][{j}]"), range))
                    .collect(),
            );
        }
        if raw_sets.is_empty() {
            return Err(IpamError::config(
                "no IP ranges: set ipam.ranges or ipam.subnet",
            ));
        }

        let range_sets = raw_sets
            .into_iter()
            .enumerate()
            .map(|(i, set)| build_set(i, set))
            .collect::<Result<Vec<_>, _>>()?;
        check_sets_disjoint(&range_sets)?;

        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return Err(IpamError::config("ipam.dataDir is empty"));
        }
        Ok(Self {
            range_sets,
            routes: raw.routes.unwrap_or_default(),
            data_dir,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        })
    }
}

/// Deserializes the value found at `path`; a type error names the exact key inside
/// it (`ipam.ranges[0][0].subnet: invalid type: ...`), not only where it started.
fn typed<'de, T: Deserialize<'de>>(
    path: &str,
    value: impl serde::Deserializer<'de, Error = serde_json::Error>,
) -> Result<T, IpamError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let sep = match inner.as_str() {
            "." => return IpamError::config(format!("{path}: {}", e.inner())),
            seq if seq.starts_with('[') => "",
            _ => ".",
        };
        IpamError::config(format!("{path}{sep}{inner}: {}", e.inner()))
    })
}

fn build_set(index: usize, raw: Vec<(String, IpRange)>) -> Result<RangeSet, IpamError> {
    if raw.is_empty() {
        return Err(IpamError::config(format!("ipam.ranges[{index}] is empty")));
    }
    let set = raw
        .into_iter()
        .map(|(path, raw)| build_range(&path, raw))
        .collect::<Result<RangeSet, _>>()?;
    if set
        .iter()
        .any(|r| r.start.is_ipv4() != set[0].start.is_ipv4())
    {
        return Err(IpamError::config(format!(
            "range set {index} ({}) mixes IPv4 and IPv6",
            describe(&set)
        )));
    }
    for (a, ra) in set.iter().enumerate() {
        if let Some(rb) = set[a + 1..].iter().find(|rb| ra.overlaps(rb)) {
            return Err(IpamError::config(format!(
                "range set {index}: ranges {ra} and {rb} overlap"
            )));
        }
    }
    Ok(set)
}

/// host-local refuses overlapping sets too: both would lease the same address to one
/// attachment.
fn check_sets_disjoint(sets: &[RangeSet]) -> Result<(), IpamError> {
    for (i, a) in sets.iter().enumerate() {
        for (j, b) in sets.iter().enumerate().skip(i + 1) {
            if a.iter().any(|ra| b.iter().any(|rb| ra.overlaps(rb))) {
                return Err(IpamError::config(format!(
                    "range sets {i} ({}) and {j} ({}) overlap",
                    describe(a),
                    describe(b)
                )));
            }
        }
    }
    Ok(())
}

fn build_range(path: &str, raw: IpRange) -> Result<Range, IpamError> {
    let subnet = raw.subnet;
    if subnet.addr() != subnet.network() {
        return Err(IpamError::config(format!(
            "{path}.subnet {subnet} has host bits set (the network is {})",
            subnet.trunc()
        )));
    }
    // A pod range in loopback, link-local, multicast or unspecified space
    // (or containing it: 0.0.0.0/0) would give the bridge and pods
    // addresses the kernel treats specially: refused as config, not left
    // to fail half-way through ADD.
    if let Some((special, what)) = special_overlap(&subnet) {
        return Err(IpamError::config(format!(
            "{path}.subnet {subnet} overlaps {special} ({what} space): not a pod range"
        )));
    }
    // host-local's rule: below two host bits there is nothing left once the network
    // address (and gateway) are taken out. A /30 (/126) is accepted: IPv4 keeps .2.
    if subnet.prefix_len() > subnet.max_prefix_len() - 2 {
        return Err(IpamError::config(format!(
            "{path}.subnet {subnet} is too small to allocate from"
        )));
    }
    let (lo, hi) = Range::usable_bounds(subnet);
    let usable = |key: &str, ip: IpAddr| {
        let inside =
            ip.is_ipv4() == lo.is_ipv4() && (to_u128(lo)..=to_u128(hi)).contains(&to_u128(ip));
        if inside {
            Ok(ip)
        } else {
            Err(IpamError::config(format!(
                "{path}.{key} {ip} is not a usable address of {subnet} ({lo}-{hi})"
            )))
        }
    };
    let start = usable("rangeStart", raw.range_start.unwrap_or(lo))?;
    let end = usable("rangeEnd", raw.range_end.unwrap_or(hi))?;
    let gateway = usable("gateway", raw.gateway.unwrap_or(lo))?;
    if to_u128(start) > to_u128(end) {
        return Err(IpamError::config(format!(
            "{path}: rangeStart {start} is after rangeEnd {end}"
        )));
    }
    let range = Range {
        subnet,
        start,
        end,
        gateway,
    };
    if range.capacity() == 0 {
        return Err(IpamError::config(format!(
            "{path}: range {range} holds only the gateway"
        )));
    }
    Ok(range)
}
