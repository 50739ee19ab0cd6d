//! Ethernet frames built byte by byte and sent from inside a pod through a
//! packet socket, as a hostile pod with CAP_NET_RAW (granted by runtimes by
//! default) can: any source MAC or address, VLAN tags, IPv6 extension
//! header chains, ARP, neighbour advertisements, router advertisements,
//! forged ICMP errors. Checksums are right, so what a receiver drops it
//! drops for what the frame says, not for a bad sum.

use std::net::IpAddr;

use crate::NetNs;

pub type Mac = [u8; 6];

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const UDP: u8 = 17;
pub const TCP: u8 = 6;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const BROADCAST: Mac = [0xff; 6];

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac(text: &str) -> Mac {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// Ethernet: destination, source, then the given tags (TPID, VID) outermost
/// first, then the ethertype and payload.
pub fn eth(dst: Mac, src: Mac, tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = [dst, src].concat();
    for (tpid, vid) in tags {
        f.extend(tpid.to_be_bytes());
        f.extend(vid.to_be_bytes());
    }
    f.extend(ethertype.to_be_bytes());
    f.extend(payload);
    f
}

/// The ethertype of an IP address's family.
pub fn ethertype(addr: IpAddr) -> u16 {
    if addr.is_ipv4() {
        ETH_P_IP
    } else {
        ETH_P_IPV6
    }
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The Internet checksum (RFC 1071) of the concatenated parts.
fn checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A transport payload with its checksum (at `at`) over the pseudo-header.
fn with_checksum(src: IpAddr, dst: IpAddr, proto: u8, mut segment: Vec<u8>, at: usize) -> Vec<u8> {
    let len = segment.len() as u32;
    let pseudo: Vec<u8> = if src.is_ipv4() {
        [
            octets(src),
            octets(dst),
            vec![0, proto],
            (len as u16).to_be_bytes().to_vec(),
        ]
        .concat()
    } else {
        [
            octets(src),
            octets(dst),
            len.to_be_bytes().to_vec(),
            vec![0, 0, 0, proto],
        ]
        .concat()
    };
    let sum = checksum(&[&pseudo, &segment]);
    segment[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    segment
}

pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut s = [sport.to_be_bytes(), dport.to_be_bytes()].concat();
    s.extend(((8 + data.len()) as u16).to_be_bytes());
    s.extend([0, 0]);
    s.extend(data);
    with_checksum(src, dst, UDP, s, 6)
}

pub fn tcp_syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    let mut s = [sport.to_be_bytes(), dport.to_be_bytes()].concat();
    s.extend(1u32.to_be_bytes()); // sequence
    s.extend(0u32.to_be_bytes()); // ack
    s.extend([5 << 4, 0x02]); // 20 bytes, SYN
    s.extend(65535u16.to_be_bytes());
    s.extend([0, 0, 0, 0]); // checksum, urgent pointer
    with_checksum(src, dst, TCP, s, 16)
}

/// ICMP (IPv4) or ICMPv6 (by the addresses' family): type, code, the 4
/// bytes after the checksum, and the body.
pub fn icmp(src: IpAddr, dst: IpAddr, kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut s = vec![kind, code, 0, 0];
    s.extend(rest);
    s.extend(body);
    if src.is_ipv4() {
        let sum = checksum(&[&s]);
        s[2..4].copy_from_slice(&sum.to_be_bytes());
        s
    } else {
        with_checksum(src, dst, ICMPV6, s, 2)
    }
}

/// An IPv4 header (identification `id`, fragment offset in 8-byte units,
/// more-fragments) before `payload`.
pub fn ipv4_frag(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u16,
    (offset, more): (u16, bool),
    payload: &[u8],
) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend(((20 + payload.len()) as u16).to_be_bytes());
    h.extend(id.to_be_bytes());
    h.extend((offset | if more { 0x2000 } else { 0 }).to_be_bytes());
    h.extend([64, proto, 0, 0]);
    h.extend(octets(src));
    h.extend(octets(dst));
    let sum = checksum(&[&h]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend(payload);
    h
}

/// An IPv6 header with `hop_limit` before `payload`, whose first header is `next`.
pub fn ipv6(src: IpAddr, dst: IpAddr, next: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend((payload.len() as u16).to_be_bytes());
    h.extend([next, hop_limit]);
    h.extend(octets(src));
    h.extend(octets(dst));
    h.extend(payload);
    h
}

/// An IP packet of either family (IPv4: not fragmented, TTL 64; IPv6: hop
/// limit 64 or 255 for ICMPv6, as neighbour discovery requires).
pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    if src.is_ipv4() {
        ipv4_frag(src, dst, proto, 1, (0, false), payload)
    } else {
        let hop_limit = if proto == ICMPV6 { 255 } else { 64 };
        ipv6(src, dst, proto, hop_limit, payload)
    }
}

/// IPv6 extension headers in front of a transport header `last`: each is
/// (its own protocol number: 0 hop-by-hop, 43 routing, 44 fragment, 60
/// destination options). Returns the first header's number and the bytes.
pub fn ext_chain(kinds: &[u8], last: u8, transport: &[u8]) -> (u8, Vec<u8>) {
    let mut bytes = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).copied().unwrap_or(last);
        bytes.extend(match kind {
            // An atomic fragment: offset 0, no more fragments.
            44 => vec![next, 0, 0, 0, 0, 0, 0, 1],
            // Routing type 0 with no segments left: skipped by the
            // receiver (a segment routing header would be dropped unless
            // seg6 is enabled).
            43 => vec![next, 0, 0, 0, 0, 0, 0, 0],
            // Options (hop-by-hop, destination): one PadN of 4 bytes.
            _ => vec![next, 0, 1, 4, 0, 0, 0, 0],
        });
    }
    bytes.extend(transport);
    (kinds.first().copied().unwrap_or(last), bytes)
}

/// ARP over Ethernet: `op` 1 request, 2 reply.
pub fn arp(op: u16, sha: Mac, spa: IpAddr, tha: Mac, tpa: IpAddr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0, 6, 4];
    a.extend(op.to_be_bytes());
    a.extend(sha);
    a.extend(octets(spa));
    a.extend(tha);
    a.extend(octets(tpa));
    a
}

/// Frames that a packet socket in `ns` sends out of `ifname`, one by one.
pub fn send(ns: &NetNs, ifname: &str, frames: &[Vec<u8>]) {
    let ifname = std::ffi::CString::new(ifname).unwrap();
    ns.run_in(|| {
        // SAFETY: plain socket calls on a socket this closure owns; every
        // buffer outlives its call.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = libc::if_nametoindex(ifname.as_ptr()) as i32;
            assert!(addr.sll_ifindex > 0, "no such interface");
            let bound = libc::bind(
                fd,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            for f in frames {
                let sent = libc::send(fd, f.as_ptr().cast(), f.len(), 0);
                assert_eq!(
                    sent,
                    f.len() as isize,
                    "{}",
                    std::io::Error::last_os_error()
                );
            }
            libc::close(fd);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_sum_to_zero() {
        // An IPv4 header's sum over itself, checksum included, is 0 (RFC 1071).
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let h = ipv4_frag(a, b, UDP, 7, (0, false), &[]);
        assert_eq!(checksum(&[&h[..20]]), 0);
        let (first, chain) = ext_chain(&[0, 60, 44], UDP, &[]);
        assert_eq!(
            (first, chain.len(), chain[0], chain[8], chain[16]),
            (0, 24, 60, 44, UDP)
        );
    }
}
