//! Validated address ranges and the order in which the allocator tries them.
//!
//! Addresses are handled as `u128` so one code path serves IPv4 and IPv6.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;

/// One allocatable range of a subnet: `start..=end`, minus the gateway.
///
/// Construction guarantees `start..=end` lies inside the subnet and excludes the network
/// address and the IPv4 broadcast, so the allocator never has to check either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

/// The ranges one address is drawn from; the attachment gets one IP per set.
pub type RangeSet = Vec<Range>;

impl Range {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.start.is_ipv4() == ip.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    pub fn overlaps(&self, other: &Self) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }

    /// The lowest and highest addresses of the subnet that may be handed out: host-local
    /// excludes the network address, and for IPv4 the broadcast (IPv6 has none).
    pub fn usable_bounds(subnet: IpNet) -> (IpAddr, IpAddr) {
        let first = to_u128(subnet.network()) + 1;
        let last = to_u128(subnet.broadcast()) - u128::from(subnet.addr().is_ipv4());
        let v4 = subnet.addr().is_ipv4();
        (from_u128(first, v4), from_u128(last, v4))
    }

    /// How many addresses the range can actually hand out.
    pub fn capacity(&self) -> u128 {
        let all = to_u128(self.end) - to_u128(self.start) + 1;
        all - u128::from(self.contains(self.gateway))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// A range set as "a-b,c-d" for error messages.
pub fn describe(set: &[Range]) -> String {
    set.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Inverse of [`to_u128`]; only called with values that came from an address of the
/// same family, so the IPv4 truncation never loses bits.
pub fn from_u128(value: u128, v4: bool) -> IpAddr {
    if v4 {
        #[allow(clippy::cast_possible_truncation)]
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

/// Every candidate of `set` once, as `(range index, ip)`, in host-local's round-robin
/// order: from just after `last` (the previous allocation, if it still lies in the set)
/// to the end of its range, through the following ranges, wrapping around and ending on
/// `last` itself. Without `last` the scan starts at the first range's start. Gateways
/// are skipped. Lazy, so a /64 costs nothing until walked.
pub fn candidates(
    set: &[Range],
    last: Option<IpAddr>,
) -> impl Iterator<Item = (usize, IpAddr)> + '_ {
    let full = |i: usize| (i, to_u128(set[i].start), to_u128(set[i].end));
    let mut segments = Vec::with_capacity(set.len() + 1);
    match last.and_then(|ip| set.iter().position(|r| r.contains(ip)).map(|i| (i, ip))) {
        Some((i, ip)) => {
            let (cur, end) = (to_u128(ip), to_u128(set[i].end));
            if cur < end {
                segments.push((i, cur + 1, end));
            }
            segments.extend((1..set.len()).map(|k| full((i + k) % set.len())));
            segments.push((i, to_u128(set[i].start), cur));
        }
        None => segments.extend((0..set.len()).map(full)),
    }
    segments.into_iter().flat_map(move |(i, lo, hi)| {
        let range = &set[i];
        let v4 = range.start.is_ipv4();
        (lo..=hi)
            .map(move |n| (i, from_u128(n, v4)))
            .filter(move |&(_, ip)| ip != range.gateway)
    })
}
