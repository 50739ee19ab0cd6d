//! A pod's life in the pinned maps, over the table of per-pod maps
//! ([`crate::maps::per_pod`]): registered at ADD, found by attachment,
//! forgotten at DEL, and its leftovers found by GC; and found by what an
//! operator knows of it ([`lookup`]).

pub mod lookup;

use std::collections::BTreeSet;

use crate::{
    maps::{
        per_pod::{PerPodMap, PER_POD_MAPS},
        registry::{encode, PodIdentity},
        PinnedMaps,
    },
    pins::{PinLayout, REGISTRY_MAP},
    Error, PodDevices,
};

impl PinnedMaps {
    /// Writes what the per-pod maps hold for a new pod (its zeroed counters
    /// and TCP statistics), then its devices, then its identity: in that
    /// order, so a reader that sees the identity also finds counters, and
    /// the TCP programs, which find the pod by its netns entry in the
    /// devices, find its statistics zeroed.
    pub fn register(
        &mut self,
        ifindex: u32,
        pod: &PodIdentity,
        devices: &PodDevices,
    ) -> Result<(), Error> {
        let info = encode(pod)?;
        for zero in PER_POD_MAPS.iter().filter_map(|m| m.zero) {
            zero(self, ifindex)?;
        }
        self.record_devices(ifindex, devices)?;
        self.record_identity(ifindex, &info)
    }

    /// The registered interface of one attachment, if any.
    pub fn find(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<(u32, PodIdentity)>, Error> {
        Ok(self
            .pods()?
            .into_iter()
            .find(|(_, p)| p.is_attachment(network, container_id, ifname)))
    }

    /// Removes a pod interface's entries from every per-pod map, in the
    /// table's order, and its identity last: a DEL killed halfway leaves the
    /// identity, by which the next DEL or GC finds what is left. Each map
    /// is taken on its own: DEL must clean what it can when a map is missing
    /// (a first ADD killed while loading) or of another layout. Missing
    /// entries are not an error. Returns what it could not do; the identity
    /// stays while a retry could remove more.
    pub fn forget(&mut self, ifindex: u32) -> Vec<Error> {
        let (identity, others) = PER_POD_MAPS.split_last().expect("the table is not empty");
        let mut problems: Vec<Error> = others
            .iter()
            .filter_map(|m| self.if_pinned(m.name, |map| (m.remove)(map, ifindex)).err())
            .collect();
        // A map of another layout stays so, and a retry could not do better.
        let retry_could_help = problems
            .iter()
            .any(|e| !matches!(e, Error::LayoutMismatch { .. }));
        if !retry_could_help {
            problems.extend(
                self.if_pinned(identity.name, |map| (identity.remove)(map, ifindex))
                    .err(),
            );
        }
        problems
    }

    /// Every registered pod interface, reading the registry alone (none if
    /// it is not pinned): for DEL and GC, which must work when another map
    /// is not.
    pub fn registered(&self) -> Result<Vec<(u32, PodIdentity)>, Error> {
        if !self.is_pinned(REGISTRY_MAP)? {
            return Ok(Vec::new());
        }
        self.pods()
    }

    /// The registered host ifindex of an attachment, if any (none if the
    /// registry is not pinned).
    pub fn find_attachment(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<u32>, Error> {
        Ok(self
            .registered()?
            .into_iter()
            .find(|(_, p)| p.is_attachment(network, container_id, ifname))
            .map(|(ifindex, _)| ifindex))
    }

    /// Host ifindexes with entries in some per-pod map but no identity: left
    /// by an ADD or DEL that died halfway, or an ADD still in flight.
    pub fn unregistered(&mut self) -> Result<BTreeSet<u32>, Error> {
        let (identity, others) = PER_POD_MAPS.split_last().expect("the table is not empty");
        let registered = self.pods_in(&[identity])?;
        let found = self.pods_in(others)?;
        Ok(found.difference(&registered).copied().collect())
    }

    /// The per-pod maps that hold entries of the pod (of those pinned): none
    /// once DEL is done with it.
    pub fn holding(&mut self, ifindex: u32) -> Result<Vec<&'static str>, Error> {
        let mut holding = Vec::new();
        for m in PER_POD_MAPS {
            if self.pods_in(&[m])?.contains(&ifindex) {
                holding.push(m.name);
            }
        }
        Ok(holding)
    }

    /// Host ifindexes with entries in any of `maps` (those pinned).
    pub(crate) fn pods_in(&mut self, maps: &[&PerPodMap]) -> Result<BTreeSet<u32>, Error> {
        let mut found = BTreeSet::new();
        for m in maps {
            self.if_pinned(m.name, |map| (m.collect)(map, &mut found))?;
        }
        Ok(found)
    }
}

/// The names of the per-pod maps, in the order DEL empties them.
pub fn per_pod_maps() -> impl Iterator<Item = &'static str> {
    PER_POD_MAPS.iter().map(|m| m.name)
}

/// [`PinnedMaps::forget`] on a handle of its own (after checking the pin
/// directory): for ADD's rollback, which runs after ADD's handle is gone.
pub fn forget(layout: &PinLayout, ifindex: u32) -> Vec<Error> {
    match PinnedMaps::open_lazy(layout) {
        Ok(mut maps) => maps.forget(ifindex),
        Err(e) => vec![e],
    }
}
