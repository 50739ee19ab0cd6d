//! The storage the allocator needs, kept behind a trait so the allocation logic is
//! tested against an in-memory fake and only the disk backend touches files.

use std::net::IpAddr;

use crate::ipam::IpamError;

/// The attachment a lease belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
}

/// A leased address and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: IpAddr,
    pub container_id: String,
    /// `None` for leases host-local wrote before it recorded the interface; host-local
    /// treats those as held by every interface of the container, and so do we.
    pub ifname: Option<String>,
}

/// host-local's separator between container ID and ifname in a lease file.
const LINE_BREAK: &str = "\r\n";

impl Lease {
    pub fn held_by(&self, owner: Owner) -> bool {
        self.container_id == owner.container_id.trim()
            && self.ifname.as_deref().is_none_or(|i| i == owner.ifname)
    }

    /// The lease file content, in host-local's format so its tooling can read ours.
    pub fn encode(owner: Owner) -> String {
        format!("{}{LINE_BREAK}{}", owner.container_id.trim(), owner.ifname)
    }

    pub fn decode(ip: IpAddr, content: &str) -> Self {
        let content = content.trim();
        match content.split_once(LINE_BREAK) {
            Some((id, ifname)) => Self {
                ip,
                container_id: id.to_string(),
                ifname: Some(ifname.to_string()),
            },
            None => Self {
                ip,
                container_id: content.to_string(),
                ifname: None,
            },
        }
    }
}

/// Leases of one network. Implementations are used by one verb at a time; the disk
/// backend guarantees that across processes by holding the network's lock while open.
pub trait LeaseStore {
    /// Every current lease, in no particular order.
    fn leases(&self) -> Result<Vec<Lease>, IpamError>;

    /// Leases `ip` to `owner` if nobody holds it, and remembers it as range set
    /// `range_set`'s last reservation. `Ok(false)` means the address was taken.
    fn reserve(&mut self, ip: IpAddr, owner: Owner, range_set: usize) -> Result<bool, IpamError>;

    /// Drops the lease on `ip`; releasing a free address is not an error.
    fn release(&mut self, ip: IpAddr) -> Result<(), IpamError>;

    /// Where the previous scan of `range_set` stopped, if known.
    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError>;
}

#[cfg(test)]
pub use fake::MemStore;

#[cfg(test)]
mod fake {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    /// An in-memory [`LeaseStore`] for allocator tests.
    #[derive(Debug, Default)]
    pub struct MemStore {
        pub leases: BTreeMap<IpAddr, Lease>,
        pub last: HashMap<usize, IpAddr>,
    }

    impl LeaseStore for MemStore {
        fn leases(&self) -> Result<Vec<Lease>, IpamError> {
            Ok(self.leases.values().cloned().collect())
        }

        fn reserve(
            &mut self,
            ip: IpAddr,
            owner: Owner,
            range_set: usize,
        ) -> Result<bool, IpamError> {
            if self.leases.contains_key(&ip) {
                return Ok(false);
            }
            let lease = Lease::decode(ip, &Lease::encode(owner));
            self.leases.insert(ip, lease);
            self.last.insert(range_set, ip);
            Ok(true)
        }

        fn release(&mut self, ip: IpAddr) -> Result<(), IpamError> {
            self.leases.remove(&ip);
            Ok(())
        }

        fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
            Ok(self.last.get(&range_set).copied())
        }
    }
}
