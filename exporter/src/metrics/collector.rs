//! The scrape: reads the pins on every call, keeps nothing but its error count.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use podmeter_ebpf::{
    programs::drop_reasons::DropReasons, programs::loader::ProgramStats, PinLayout,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::{Registry, Unit},
};
use tracing::{error, warn};

use crate::metrics::{bpf_stats, format::Format, pods, render::render};

#[derive(Debug)]
pub struct Scraper {
    layout: PinLayout,
    /// Names of the running kernel's drop reasons: fixed for its uptime.
    reasons: DropReasons,
    /// Failed reads since start: the only state the exporter keeps.
    scrape_errors: AtomicU64,
}

impl Scraper {
    pub fn new(layout: PinLayout) -> Self {
        let reasons = DropReasons::of_running_kernel().unwrap_or_else(|e| {
            warn!(error = %chain(&e), "drop reasons are exported as numbers");
            DropReasons::default()
        });
        Self {
            layout,
            reasons,
            scrape_errors: AtomicU64::new(0),
        }
    }

    /// One scrape: reads the pins and renders every family in `format`. A
    /// failed read leaves out only the families it feeds; the health
    /// families are always there.
    pub fn render(&self, format: Format) -> Result<String, fmt::Error> {
        let start = Instant::now();
        let pods = pods::read(&self.layout, &self.reasons)
            .inspect_err(|e| self.failed("reading the pinned maps", e))
            .ok();
        let programs = bpf_stats::read(&self.layout)
            .inspect_err(|e| self.failed("reading the eBPF program stats", e))
            .ok()
            .flatten();
        let others = OtherFamilies {
            pods: pods.as_ref().map(Vec::len),
            programs,
            read_time: start.elapsed(),
            scrape_errors: self.scrape_errors.load(Ordering::Relaxed),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(others));
        render(format, pods.as_deref(), &registry)
    }

    fn failed(&self, what: &str, err: &dyn std::error::Error) {
        self.scrape_errors.fetch_add(1, Ordering::Relaxed);
        error!(pin_path = %self.layout.pin_path().display(), error = %chain(err), "{what} failed");
    }
}

/// A scrape's families but the per-pod ones: a few series, encoded by
/// prometheus-client.
#[derive(Debug)]
struct OtherFamilies {
    /// Pods exported, if the maps could be read.
    pods: Option<usize>,
    programs: Option<Vec<ProgramStats>>,
    read_time: Duration,
    scrape_errors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

impl Collector for OtherFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if let Some(pods) = self.pods {
            gauge(
                &mut encoder,
                "podmeter_pods",
                "Pod interfaces registered and exported.",
                None,
                pods as i64,
            )?;
        }
        if let Some(programs) = &self.programs {
            bpf_stats::encode(programs, &mut encoder)?;
        }

        let mut build = encoder.encode_descriptor(
            "podmeter_exporter_build_info",
            "The exporter's version; always 1.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(build.encode_family(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        })?)?;
        gauge(
            &mut encoder,
            "podmeter_exporter_scrape_duration",
            "Time this scrape spent reading the pinned maps and programs.",
            Some(&Unit::Seconds),
            self.read_time.as_secs_f64(),
        )?;
        ConstCounter::new(self.scrape_errors).encode(encoder.encode_descriptor(
            "podmeter_exporter_scrape_errors",
            "Reads of the pinned maps or programs that failed, since the exporter started.",
            None,
            MetricType::Counter,
        )?)
    }
}

/// The error and its sources, each once: many errors already print their
/// source in their own message.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let msg = e.to_string();
        if !out.ends_with(&msg) {
            out = format!("{out}: {msg}");
        }
        source = e.source();
    }
    out
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: V,
) -> fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape_errors(metrics: &str) -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("podmeter_exporter_scrape_errors_total "))
            .expect("the error counter is always there")
            .parse()
            .unwrap()
    }

    #[test]
    fn missing_pins_are_no_pods_and_no_error() {
        let scraper = Scraper::new(PinLayout::new("/nonexistent/podmeter"));
        for _ in 0..2 {
            let metrics = scraper.render(Format::Text).unwrap();
            assert!(metrics.contains("podmeter_exporter_build_info{version=\""));
            assert!(metrics.contains("\npodmeter_exporter_scrape_duration_seconds "));
            assert!(metrics.contains("\npodmeter_pods 0\n"), "{metrics}");
            let pod_samples = metrics
                .lines()
                .filter(|l| l.starts_with("podmeter_pod_"))
                .count();
            assert_eq!(pod_samples, 0, "{metrics}");
            assert_eq!(scrape_errors(&metrics), 0);
        }
    }

    #[test]
    fn a_pin_path_that_is_not_a_directory_counts_an_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let scraper = Scraper::new(PinLayout::new(file.path()));
        let metrics = scraper.render(Format::Text).unwrap();
        // Two if another test turned on kernel.bpf_stats_enabled meanwhile.
        assert!(scrape_errors(&metrics) >= 1, "{metrics}");
        assert!(!metrics.contains("podmeter_pods"), "{metrics}");
    }

    #[test]
    fn error_chain_names_each_cause_once() {
        // ENOENT; the message repeats its source, which must not be repeated.
        let io = std::io::Error::from_raw_os_error(2);
        let err = bpf_stats::StatsError::Sysctl(io);
        assert_eq!(
            chain(&err),
            "reading /proc/sys/kernel/bpf_stats_enabled: No such file or directory (os error 2)"
        );
    }
}
