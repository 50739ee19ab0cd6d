//! The compiled object and its programs: what the kernel must offer, loading
//! and pinning once per pin path, attaching to a pod's host veth, and the
//! kernel facts the programs are given (drop reasons, netns cookies).

pub mod attach;
pub mod drop_reasons;
pub mod kernel;
pub mod loader;
pub mod netns_cookie;
pub mod object;
pub mod tracepoint_args;
