//! podmeter's kernel side and the only code that knows its map layouts.
//!
//! The tc programs (`bpf/podmeter.bpf.c`) are loaded once per pin path and
//! pinned together with their maps and links (see [`pins`]), so counters
//! survive restarts of every userspace process. The CNI plugin attaches,
//! registers and unregisters pods; the exporter only reads.

pub mod abi;
pub mod attach;
pub mod batch;
pub mod counters;
pub mod drop_reasons;
pub mod error;
pub mod flow_tables;
pub mod kernel;
pub mod loader;
pub mod lock;
pub mod maps;
pub mod netns_cookie;
pub mod object;
pub mod pin_dir;
pub mod pins;
mod pod_keys;
pub mod policy;
pub mod policy_k8s;
pub mod policy_store;
pub mod policy_view;
pub mod registry;
pub mod sources;

pub use abi::{Direction, PodCounter};
pub use attach::AttachMode;
pub use error::Error;
pub use pins::PinLayout;
pub use registry::{PodDevices, PodIdentity};
pub use sources::PodSource;
