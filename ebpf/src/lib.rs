//! podmeter's kernel side and the only code that knows its map layouts.
//!
//! The tc programs (`bpf/podmeter.bpf.c`) are loaded once per pin path and
//! pinned together with their maps and links (see [`pins`]), so counters
//! survive restarts of every userspace process. The CNI plugin attaches,
//! registers and unregisters pods; the exporter only reads.
//!
//! Laid out by job: [`programs`] (the object, loading, attaching),
//! [`maps`] (one file per map family), [`policy`] (the rule language, its
//! kernel encoding and the store); the pin layout, its directory checks,
//! the pin lock, the ABI and the errors at the root.

pub mod abi;
pub mod error;
pub mod lock;
pub mod maps;
pub mod pin_dir;
pub mod pins;
pub mod pod;
pub mod policy;
pub mod programs;

pub use abi::{Direction, PodCounter};
pub use error::Error;
pub use maps::sources::PodSource;
pub use maps::{devices::PodDevices, registry::PodIdentity};
pub use pins::PinLayout;
pub use programs::attach::AttachMode;
