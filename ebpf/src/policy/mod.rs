//! Per-pod policy: the rule language users write (`rules`), its kernel
//! encoding (`encoding`), and the store that keeps it in the pinned maps
//! ([`store`]).

mod encoding;
mod rules;
pub mod store;

pub use encoding::RULE_ANY_ADDRESS;
pub use rules::*;
