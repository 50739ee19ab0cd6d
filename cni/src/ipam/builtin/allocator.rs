//! host-local's allocation rules over any [`LeaseStore`]; no files, no kernel.
//!
//! Callers hold the store for the whole verb, so "read the leases, then reserve" is not
//! a race; `reserve` still refuses a taken address in case a lease appeared anyway.

use std::{collections::HashSet, net::IpAddr};

use ipnet::IpNet;
use rscni_plugin::types::{GcAttachment, IpConfig};

use super::{
    range::{candidates, describe, RangeSet},
    store::{Lease, LeaseStore, Owner},
};
use crate::ipam::IpamError;

/// Leases one address per range set to `owner`, all or nothing. The leases are
/// visible at once; the caller makes them durable ([`LeaseStore::sync`]) before it
/// answers.
pub fn allocate(
    sets: &[RangeSet],
    store: &mut impl LeaseStore,
    owner: Owner,
) -> Result<Vec<IpConfig>, IpamError> {
    let leases = store.leases()?;
    // Checked for every set before reserving anything, so a rejected ADD leaves the
    // store exactly as it found it. The spec forbids a second ADD for one attachment.
    for set in sets {
        let held = leases
            .iter()
            .find(|l| l.held_by(owner) && set.iter().any(|r| r.contains(l.ip)));
        if let Some(lease) = held {
            return Err(IpamError::AlreadyAllocated {
                ip: lease.ip,
                container_id: owner.container_id.to_string(),
                ifname: owner.ifname.to_string(),
            });
        }
    }
    let taken: HashSet<IpAddr> = leases.iter().map(|l| l.ip).collect();

    let mut configs = Vec::with_capacity(sets.len());
    for (index, set) in sets.iter().enumerate() {
        match allocate_from_set(index, set, store, owner, &taken) {
            Ok(config) => configs.push(config),
            Err(err) => {
                // A half-done dual-stack ADD would leak the first family's address: the
                // runtime answers a failed ADD with DEL at best, and maybe not at all.
                take_back(store, &configs);
                return Err(err);
            }
        }
    }
    Ok(configs)
}

/// Releases the leases of a failed ADD, best effort.
fn take_back(store: &mut impl LeaseStore, configs: &[IpConfig]) {
    for config in configs {
        if let Err(undo) = store.release(config.address.addr()) {
            tracing::warn!(ip = %config.address.addr(), %undo, "rollback of a lease failed");
        }
    }
    if let Err(undo) = store.sync() {
        tracing::warn!(%undo, "rollback of leases: fsync failed");
    }
}

fn allocate_from_set(
    index: usize,
    set: &RangeSet,
    store: &mut impl LeaseStore,
    owner: Owner,
    taken: &HashSet<IpAddr>,
) -> Result<IpConfig, IpamError> {
    let last = store.last_reserved(index)?;
    for (range_index, ip) in candidates(set, last) {
        if taken.contains(&ip) || !store.reserve(ip, owner, index)? {
            continue;
        }
        let range = &set[range_index];
        let address = IpNet::new(ip, range.subnet.prefix_len())
            .expect("the prefix comes from a valid subnet of the same family");
        return Ok(IpConfig {
            interface: None,
            address,
            gateway: Some(range.gateway),
        });
    }
    Err(IpamError::RangeExhausted {
        range_set: index,
        ranges: describe(set),
    })
}

/// Releases every lease `owner` holds, in any range set or none; returns what it freed.
pub fn release(store: &mut impl LeaseStore, owner: Owner) -> Result<Vec<IpAddr>, IpamError> {
    let mine: Vec<IpAddr> = store
        .leases()?
        .into_iter()
        .filter(|l| l.held_by(owner))
        .map(|l| l.ip)
        .collect();
    for &ip in &mine {
        store.release(ip)?;
    }
    if !mine.is_empty() {
        store.sync()?;
    }
    Ok(mine)
}

/// Fails, naming the first range set without one, unless `owner` holds a lease in
/// every set.
pub fn check(sets: &[RangeSet], leases: &[Lease], owner: Owner) -> Result<(), IpamError> {
    for (index, set) in sets.iter().enumerate() {
        let held = leases
            .iter()
            .any(|l| l.held_by(owner) && set.iter().any(|r| r.contains(l.ip)));
        if !held {
            return Err(IpamError::LeaseMissing {
                container_id: owner.container_id.to_string(),
                ifname: owner.ifname.to_string(),
                range_set: index,
                ranges: describe(set),
            });
        }
    }
    Ok(())
}

/// Releases the leases of attachments not in `valid`, and garbage lease files;
/// returns what it freed.
pub fn gc(store: &mut impl LeaseStore, valid: &[GcAttachment]) -> Result<Vec<IpAddr>, IpamError> {
    let stale: Vec<IpAddr> = store
        .leases()?
        .into_iter()
        .filter(|l| {
            l.collectable()
                && !valid.iter().any(|a| {
                    l.held_by(Owner {
                        container_id: &a.container_id,
                        ifname: &a.ifname,
                    })
                })
        })
        .map(|l| l.ip)
        .collect();
    for &ip in &stale {
        store.release(ip)?;
    }
    if !stale.is_empty() {
        store.sync()?;
    }
    Ok(stale)
}
