//! Special-purpose address space that is never a pod range nor a next hop:
//! loopback, link-local, multicast, broadcast and unspecified. One table for
//! the agent (which refuses such Node ranges) and the plugin (which refuses
//! them in its config): the plugin includes this file with `#[path]`, since
//! it shares no library with the agent. Pure, and only `ipnet` and std.

use ipnet::IpNet;

const SPECIAL: [(&str, &str); 9] = [
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

fn special() -> impl Iterator<Item = (IpNet, &'static str)> {
    SPECIAL
        .iter()
        .map(|(net, what)| (net.parse().expect("SPECIAL holds networks"), *what))
}

/// CIDRs either nest or are disjoint.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// The special block `range` overlaps (a range containing one counts: a
/// pod range of `0.0.0.0/0` or `128.0.0.0/1` would take multicast too).
pub fn special_overlap(range: &IpNet) -> Option<(IpNet, &'static str)> {
    special().find(|(s, _)| overlaps(s, range))
}
