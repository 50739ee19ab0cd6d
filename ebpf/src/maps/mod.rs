//! The pinned maps, one file per map family: each holds its reads and its
//! part of a pod's life (made at ADD, removed at DEL, found by GC).

mod batch;
pub mod counters;
pub mod flow_tables;
pub mod open;
pub(crate) mod pod_keys;
pub mod registry;
pub mod sources;

pub use open::PinnedMaps;
