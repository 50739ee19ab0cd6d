//! Run count and run time of podmeter's eBPF programs, which the kernel only
//! accounts while `kernel.bpf_stats_enabled` is 1.

use std::{fmt, fs, io};

use podmeter_ebpf::{
    programs::loader::{program_stats, ProgramStats},
    PinLayout,
};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, MetricType},
    registry::Unit,
};
use tracing::debug;

use crate::metrics::absent::not_pinned;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("reading {STATS_SYSCTL}: {0}")]
    Sysctl(#[source] io::Error),

    #[error(transparent)]
    Program(#[from] podmeter_ebpf::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProgramLabels {
    program: &'static str,
}

/// The stats of every pinned program, or `None` while the kernel does not
/// account them (the frozen values would look like an idle program) or
/// the programs are not pinned yet.
pub fn read(layout: &PinLayout) -> Result<Option<Vec<ProgramStats>>, StatsError> {
    let enabled = fs::read_to_string(STATS_SYSCTL).map_err(StatsError::Sysctl)?;
    if enabled.trim() != "1" {
        return Ok(None);
    }
    match program_stats(layout) {
        Ok(stats) => Ok(Some(stats)),
        Err(e) if not_pinned(&e) => {
            debug!(error = %e, "no pinned programs yet: no program stats");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn encode(stats: &[ProgramStats], encoder: &mut DescriptorEncoder) -> fmt::Result {
    let mut count = encoder.encode_descriptor(
        "podmeter_bpf_program_run_count",
        "Times the eBPF program ran (while kernel.bpf_stats_enabled=1).",
        None,
        MetricType::Counter,
    )?;
    for s in stats {
        ConstCounter::new(s.run_count)
            .encode(count.encode_family(&ProgramLabels { program: s.name })?)?;
    }
    let mut time = encoder.encode_descriptor(
        "podmeter_bpf_program_run",
        "Time the eBPF program ran (while kernel.bpf_stats_enabled=1).",
        Some(&Unit::Seconds),
        MetricType::Counter,
    )?;
    for s in stats {
        ConstCounter::new(s.run_time.as_secs_f64())
            .encode(time.encode_family(&ProgramLabels { program: s.name })?)?;
    }
    Ok(())
}
