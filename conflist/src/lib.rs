//! The network configuration podmeter's node agent writes and its plugin
//! reads, as one set of Rust types: the schema and its defaults live here
//! once, so the two cannot drift apart. Parsing here is only the shape; the
//! plugin validates the values (names, ranges, paths) before acting.

mod ipam;
pub mod kubernetes_tier;
mod plugin;
mod render;

pub use ipam::{BuiltinIpam, IpRange, BUILTIN_TYPE, DEFAULT_DATA_DIR};
pub use plugin::{PluginConfig, DEFAULT_BRIDGE};
pub use render::{render, Options, CNI_VERSION, NETWORK_NAME};
