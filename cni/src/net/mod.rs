//! Links, addresses and routes on the node and inside pod network namespaces.
//!
//! The node side works in whatever namespace the calling thread is in; pod-side work goes
//! through [`netns::in_netns`]. Async functions take an rtnetlink [`rtnetlink::Handle`]
//! opened on the thread they run on ([`netns::with_netlink`]).

mod addr;
pub mod bridge;
mod error;
pub mod link;
pub mod names;
pub mod netns;
pub mod pod;
pub mod sysctl;
pub mod veth;

#[cfg(test)]
mod tests;

pub use error::NetError;
