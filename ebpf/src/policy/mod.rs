//! Per-pod policy: the rule language users write ([`rules`]), and the store
//! that keeps it in the pinned maps ([`store`]).

mod rules;
pub mod store;

pub use rules::*;
