//! Per-pod policy: the rule language users write (`rules`), its kernel
//! encoding (`encoding`), the kubernetes tier ([`kubernetes`]), reading the
//! maps ([`view`]) and the store that edits them by owner ([`store`]).

mod encoding;
pub mod kubernetes;
mod rules;
pub mod store;
pub mod view;

pub use encoding::RULE_ANY_ADDRESS;
pub use rules::*;
