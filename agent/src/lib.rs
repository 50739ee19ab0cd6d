//! What of the node agent other code uses: how a Node's pod ranges are read
//! and the conflist rendered from them, so that tests run containerd with
//! exactly the conflist the agent writes.

pub mod admit;
pub mod netpol;
/// The conflist's schema and rendering, shared with the plugin.
pub use podmeter_conflist as conflist;
pub mod ranges;
pub mod special;
