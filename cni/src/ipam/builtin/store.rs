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
    pub holder: Holder,
}

/// Who holds a leased address. Only [`Holder::Attachment`] belongs to anyone; the
/// others keep the address from being handed out while their file exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Attachment {
        container_id: String,
        /// `None` for leases host-local wrote before it recorded the interface;
        /// host-local treats those as held by every interface of the container, and
        /// so do we.
        ifname: Option<String>,
    },
    /// A regular file whose content is no lease (not UTF-8, empty, oversized): held by
    /// no attachment, so DEL never frees it and GC, which frees what no valid
    /// attachment holds, does.
    Garbage,
    /// A file that could not be read as a lease (a FIFO, a symlink, a directory, a
    /// read error): whatever it is, it is not ours to delete, and link(2) cannot
    /// create a lease over it anyway.
    Unknown,
}

/// host-local's separator between container ID and ifname in a lease file.
const LINE_BREAK: &str = "\r\n";

impl Lease {
    pub fn held_by(&self, owner: Owner) -> bool {
        match &self.holder {
            Holder::Attachment {
                container_id,
                ifname,
            } => {
                *container_id == owner.container_id.trim()
                    && ifname.as_deref().is_none_or(|i| i == owner.ifname)
            }
            Holder::Garbage | Holder::Unknown => false,
        }
    }

    /// Whether GC may remove the lease when no valid attachment holds it.
    pub fn collectable(&self) -> bool {
        !matches!(self.holder, Holder::Unknown)
    }

    /// The lease file content, in host-local's format so its tooling can read ours.
    pub fn encode(owner: Owner) -> String {
        format!("{}{LINE_BREAK}{}", owner.container_id.trim(), owner.ifname)
    }

    /// Reads a lease file's content; anything host-local could not have written is
    /// [`Holder::Garbage`].
    pub fn decode(ip: IpAddr, content: &[u8]) -> Self {
        let holder = match std::str::from_utf8(content).map(str::trim) {
            Ok("") | Err(_) => Holder::Garbage,
            Ok(content) => match content.split_once(LINE_BREAK) {
                Some((id, ifname)) => Holder::Attachment {
                    container_id: id.to_string(),
                    ifname: Some(ifname.to_string()),
                },
                None => Holder::Attachment {
                    container_id: content.to_string(),
                    ifname: None,
                },
            },
        };
        Self { ip, holder }
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

    /// Makes every reservation and release so far durable. Each is visible at once
    /// (to the next holder of the store), but survives a crash only after this: a verb
    /// calls it once, after its last change and before it answers (ADD through
    /// `DiskStore::sync_in_background`).
    fn sync(&mut self) -> Result<(), IpamError>;

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
            let lease = Lease::decode(ip, Lease::encode(owner).as_bytes());
            self.leases.insert(ip, lease);
            self.last.insert(range_set, ip);
            Ok(true)
        }

        fn release(&mut self, ip: IpAddr) -> Result<(), IpamError> {
            self.leases.remove(&ip);
            Ok(())
        }

        fn sync(&mut self) -> Result<(), IpamError> {
            Ok(())
        }

        fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
            Ok(self.last.get(&range_set).copied())
        }
    }
}
