//! The drop counters (`pm_drops`): what the kernel, or podmeter's own
//! programs, dropped on a pod's devices, per direction and drop reason.

use aya::maps::{IterableMap, MapData, PerCpuHashMap};

use super::{
    batch::{read_per_cpu, sum_cpus},
    counters::add_cpus,
    per_pod::{by_key, pod_keys, PerPodMap},
};
use crate::{
    abi::{Direction, DropKey, PodCounter},
    maps::open::PinnedMaps,
    pins::DROPS_MAP,
    Error,
};

/// Packets the kernel dropped on a pod's devices, for one direction and
/// drop reason (a value of the running kernel's `enum skb_drop_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodDrops {
    pub ifindex: u32,
    pub direction: Direction,
    pub reason: u32,
    pub dropped: PodCounter,
}

type DropsMap<T> = PerCpuHashMap<T, DropKey, PodCounter>;

pub(crate) const PER_POD: PerPodMap = by_key!(DROPS_MAP, PerCpuHashMap<DropKey, PodCounter>);

impl PinnedMaps {
    fn drops_map(&self) -> Result<DropsMap<&MapData>, Error> {
        self.typed(DROPS_MAP)
    }

    /// Every pod's drops, summed over CPUs, ordered by pod, direction, reason.
    pub fn drops(&self) -> Result<Vec<PodDrops>, Error> {
        let mut out = Vec::new();
        for entry in self.drops_map()?.iter() {
            let (key, per_cpu) = entry.map_err(|source| self.error(DROPS_MAP, source))?;
            let Some(direction) = Direction::from_raw(key.direction) else {
                continue;
            };
            let mut dropped = PodCounter::default();
            add_cpus(&mut dropped, &per_cpu);
            out.push(PodDrops {
                ifindex: key.ifindex,
                direction,
                reason: key.reason,
                dropped,
            });
        }
        out.sort_by_key(|d| (d.ifindex, d.direction as u32, d.reason));
        Ok(out)
    }

    /// [`PinnedMaps::drops`], read in batches when the kernel can.
    pub fn drops_batched(&self) -> Result<Vec<PodDrops>, Error> {
        let drops = self.drops_map()?;
        let fd = IterableMap::map(&drops).fd();
        let Some(raw) =
            read_per_cpu(fd, size_of::<DropKey>()).map_err(|e| self.error(DROPS_MAP, e))?
        else {
            return self.drops();
        };
        let mut out: Vec<PodDrops> = raw
            .entries::<DropKey>()
            .filter_map(|(key, value)| {
                Some(PodDrops {
                    ifindex: key.ifindex,
                    direction: Direction::from_raw(key.direction)?,
                    reason: key.reason,
                    dropped: sum_cpus(value),
                })
            })
            .collect();
        out.sort_unstable_by_key(|d| (d.ifindex, d.direction as u32, d.reason));
        Ok(out)
    }
}

pod_keys!(PerCpuHashMap, DropKey, PodCounter, |k| k.ifindex);
