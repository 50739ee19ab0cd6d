//! Each pod with policy has a flow table of its own, so that no pod's new
//! flows can take the room of another pod's (`bpf/policy.h` explains the
//! budgets). The tables are inner maps of `pm_flow_tables` (a hash of maps
//! by host ifindex), created here when a pod gets policy and dropped with
//! it: the outer map's entry is the only reference a table has once made,
//! so removing the entry frees the table. Beside it, `pm_flow_state` holds
//! each table's occupancy, which the programs keep.

use std::borrow::Borrow;

use aya::maps::{HashMap, HashOfMaps, Map, MapData, MapError};

use crate::{
    abi::{Flow, FlowKey, FlowState, FLOWS_PER_POD},
    maps::{
        ignore_missing,
        per_pod::{by_key, pod_keys, PerPodMap},
        PinnedMaps,
    },
    pins::{PinLayout, FLOW_STATE_MAP, FLOW_TABLES_MAP},
    Error,
};

/// One pod's flow table.
pub type FlowTable = HashMap<MapData, FlowKey, Flow>;
type TablesMap = HashOfMaps<MapData, u32, FlowTable>;
type StateMap = HashMap<MapData, u32, FlowState>;

pod_keys!(HashMap, u32, FlowState, |k| *k);
pod_keys!(HashOfMaps, u32, FlowTable, |k| *k);

/// In the table of per-pod maps: the outer map's entry is the table's last
/// reference, so removing it frees the table.
pub(crate) const TABLES: PerPodMap = by_key!(FLOW_TABLES_MAP, HashOfMaps<u32, FlowTable>);
pub(crate) const STATE: PerPodMap = by_key!(FLOW_STATE_MAP, HashMap<u32, FlowState>);

/// The kernel name of every pod's table (at most 15 bytes).
pub const FLOW_TABLE_NAME: &str = "pm_flow_table";

/// `BPF_F_NO_PREALLOC`: a table's entries are allocated as flows open,
/// so an idle pod costs its table's bucket array only.
pub const FLOW_TABLE_FLAGS: u32 = 1;

/// The outer map and the occupancy map of one pin path.
pub struct FlowTables {
    layout: PinLayout,
    tables: TablesMap,
    state: StateMap,
}

impl FlowTables {
    pub fn open(layout: &PinLayout) -> Result<Self, Error> {
        Self::from_maps(&mut PinnedMaps::open_lazy(layout)?)
    }

    /// Takes the two maps out of an open handle.
    pub fn from_maps(maps: &mut PinnedMaps) -> Result<Self, Error> {
        Ok(Self {
            layout: maps.layout().clone(),
            tables: maps.take(FLOW_TABLES_MAP)?,
            state: maps.take(FLOW_STATE_MAP)?,
        })
    }

    fn error(&self, map: &str, source: MapError) -> Error {
        Error::Map {
            path: self.layout.map(map),
            source,
        }
    }

    /// Gives the pod an empty flow table unless it has one: its occupancy
    /// first (the programs record flows only where they find both).
    pub fn ensure(&mut self, ifindex: u32) -> Result<(), Error> {
        if self.has_table(ifindex)? {
            return Ok(());
        }
        self.state
            .insert(ifindex, FlowState::default(), 0)
            .map_err(|e| self.error(FLOW_STATE_MAP, e))?;
        let table = create_table().map_err(|e| self.error(FLOW_TABLES_MAP, e))?;
        self.tables
            .insert(ifindex, &table, 0)
            .map_err(|e| self.error(FLOW_TABLES_MAP, e))
    }

    fn has_table(&self, ifindex: u32) -> Result<bool, Error> {
        match self.tables.get(&ifindex, 0) {
            Ok(_) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(self.error(FLOW_TABLES_MAP, e)),
        }
    }

    /// Drops the pod's table (freed with its last reference) and occupancy.
    pub fn remove(&mut self, ifindex: u32) -> Result<(), Error> {
        ignore_missing(self.tables.remove(&ifindex)).map_err(|e| self.error(FLOW_TABLES_MAP, e))?;
        ignore_missing(self.state.remove(&ifindex)).map_err(|e| self.error(FLOW_STATE_MAP, e))
    }

    /// The pod's tracked flows (none without a table).
    pub fn flows(&self, ifindex: u32) -> Result<Vec<(FlowKey, Flow)>, Error> {
        let table = match self.tables.get(&ifindex, 0) {
            Ok(table) => table,
            Err(MapError::KeyNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(self.error(FLOW_TABLES_MAP, e)),
        };
        table
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(FLOW_TABLES_MAP, e))
    }

    /// The occupancy of every pod's table, by host ifindex.
    pub fn occupancy(&self) -> Result<Vec<(u32, FlowState)>, Error> {
        occupancy(&self.state).map_err(|e| self.error(FLOW_STATE_MAP, e))
    }
}

/// A new, empty pod table, shaped as the object's template for
/// `pm_flow_tables` values (the kernel refuses any other at insert).
fn create_table() -> Result<FlowTable, MapError> {
    let def = aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_HASH as u32,
        size_of::<FlowKey>() as u32,
        size_of::<Flow>() as u32,
        FLOWS_PER_POD,
        FLOW_TABLE_FLAGS,
    );
    let data = MapData::create(def, FLOW_TABLE_NAME, None)?;
    FlowTable::try_from(Map::from_map_data(data)?)
}

impl PinnedMaps {
    /// The occupancy of every pod's flow table, by host ifindex.
    pub fn flow_occupancy(&self) -> Result<Vec<(u32, FlowState)>, Error> {
        let state: HashMap<&MapData, u32, FlowState> = self.typed(FLOW_STATE_MAP)?;
        occupancy(&state).map_err(|e| self.error(FLOW_STATE_MAP, e))
    }
}

fn occupancy<T: Borrow<MapData>>(
    state: &HashMap<T, u32, FlowState>,
) -> Result<Vec<(u32, FlowState)>, MapError> {
    state.iter().collect()
}
