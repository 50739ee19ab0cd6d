//! Interface names the plugin gives to links it creates on the node.

use sha2::{Digest, Sha256};

use super::NetError;

/// The kernel's IFNAMSIZ minus the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

const HOST_HASH_DIGITS: usize = 13;

/// The node-side veth name of a pod interface: `pm` + 13 hex digits of
/// sha256(container_id NUL ifname).
///
/// Deterministic so that DEL finds (and removes) the host end even when the pod netns is
/// already gone; the NUL keeps ("ab","c") and ("a","bc") apart. 52 bits make a collision
/// between pods on one node negligible.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut h = Sha256::new();
    h.update(container_id.as_bytes());
    h.update([0u8]);
    h.update(ifname.as_bytes());
    let mut name = String::from("pm");
    name.push_str(&hex(&h.finalize(), "")[..HOST_HASH_DIGITS]);
    name
}

/// Whether `name` has the shape of [`host_veth_name`]: how GC recognises a
/// host veth that an ADD created but died before registering.
pub fn is_host_veth_name(name: &str) -> bool {
    name.len() == 2 + HOST_HASH_DIGITS
        && name.starts_with("pm")
        && name[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A random name for the pod end of a veth while it still sits in the node namespace.
///
/// Random rather than derived from the container id: two ADDs for the same container (a retry
/// after a crash) must not trip over each other's leftovers.
pub fn temp_peer_name() -> String {
    let mut buf = [0u8; 5];
    fill_random(&mut buf);
    format!("pmtmp{}", hex(&buf, ""))
}

/// Checks that the kernel would accept `name` as an interface name (and that it is safe to
/// splice into a /proc/sys path).
pub fn validate_ifname(name: &str) -> Result<(), NetError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_IFNAME_LEN {
        "longer than 15 bytes"
    } else if name == "." || name == ".." {
        "reserved"
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        "contains '/', ':', NUL or whitespace"
    } else {
        return Ok(());
    };
    Err(NetError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Lowercase hex of `bytes`, `sep` between bytes: `""` for hashes and
/// names, `":"` for a MAC as CNI results and `ip link` print it.
pub(crate) fn hex(bytes: &[u8], sep: &str) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(sep)
}

pub(super) fn fill_random(buf: &mut [u8]) {
    // SAFETY: the pointer and length describe `buf`. Requests of <= 256 bytes are never
    // split or interrupted by signals once the pool is initialised.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // Only possible on a kernel without getrandom(2); names need to differ, not be secret.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            ^ (u128::from(std::process::id()) << 64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> (i * 8)) as u8 ^ (t >> (64 + i * 8)) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_is_stable_short_and_distinct() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("pm"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(host_veth_name("ab", "ceth0"), host_veth_name("abc", "eth0"));
        validate_ifname(&a).unwrap();
        assert!(is_host_veth_name(&a));
        for other in [
            "pm0",
            "pmtmp0123456789",
            "pm0123456789abC",
            "pm0123456789abcd",
            "eth0",
        ] {
            assert!(!is_host_veth_name(other), "{other}");
        }
    }

    #[test]
    fn temp_names_are_random_and_valid() {
        let (a, b) = (temp_peer_name(), temp_peer_name());
        assert_ne!(a, b);
        assert_eq!(a.len(), 15);
        validate_ifname(&a).unwrap();
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "a/b", "..", "sixteen-chars-xx", "a b"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
