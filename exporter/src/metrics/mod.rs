//! What the metrics are: the scrape reading the pins (per-pod counters,
//! drops, flows; program stats), the families it writes, and the
//! exposition formats they are written in.

pub mod absent;
pub mod bpf_stats;
pub mod collector;
pub mod exposition;
pub mod format;
pub mod pods;
pub mod render;
pub mod tcp;
