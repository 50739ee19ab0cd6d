//! Kubernetes NetworkPolicy for this node: the pure compiler from API
//! objects to the kubernetes tier of the design's model ([`model`]), and
//! the watch that keeps it current and hands it to a [`sink::PolicySink`].

pub mod cidr;
pub mod compile;
pub mod identity;
pub mod kernel_sink;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod selector;
pub mod sink;
pub mod view;
pub mod watch;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod random;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod simulate;
#[cfg(test)]
mod tests;
