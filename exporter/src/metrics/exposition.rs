//! A small writer of metric families in the text exposition formats, for
//! the per-pod families: a full node has some 300,000 per-pod series, and
//! prometheus-client's generic encoder (a `dyn` label set per series, each
//! label escaped through layers of `fmt::Write`) took most of a scrape's
//! CPU. Label sets are escaped once into a [`Labels`] and copied into every
//! series that carries them.
//!
//! It writes byte for byte what prometheus-client 0.26 writes for integer
//! counters and gauges, in both formats (a test compares them); the few
//! other families stay on prometheus-client.

use std::fmt::Write as _;

use prometheus_client::registry::Unit;

use crate::metrics::format::Format;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Samples written with [`Family::histogram`].
    Histogram,
}

/// A family as prometheus-client's `encode_descriptor` takes it. A counter
/// named `n` with unit `u` has the series `n_u_total`.
#[derive(Debug)]
pub struct Descriptor {
    pub name: &'static str,
    pub unit: Option<Unit>,
    pub help: &'static str,
    pub kind: Kind,
}

/// A counter family whose value is read from a `T` (the pod counters for
/// traffic, one counter for drops, the TCP statistics).
pub(crate) struct Counter<T> {
    pub(crate) descriptor: Descriptor,
    pub(crate) value: fn(&T) -> u64,
}

pub(crate) const fn counter<T>(
    name: &'static str,
    unit: Option<Unit>,
    help: &'static str,
    value: fn(&T) -> u64,
) -> Counter<T> {
    Counter {
        descriptor: Descriptor {
            name,
            unit,
            help,
            kind: Kind::Counter,
        },
        value,
    }
}

/// Label pairs `key="value"`, comma-separated, the values escaped.
#[derive(Debug, Default, Clone)]
pub struct Labels(String);

impl Labels {
    pub fn with_capacity(bytes: usize) -> Self {
        Self(String::with_capacity(bytes))
    }

    pub fn push(&mut self, key: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(key);
        self.0.push_str("=\"");
        escape::<true>(&mut self.0, value);
        self.0.push('"');
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// The samples of one family, written after its header.
pub struct Family<'a> {
    out: &'a mut String,
    /// The series' name.
    name: String,
}

impl<'a> Family<'a> {
    /// Writes the header of `d` (`# HELP`, `# TYPE`, and in OpenMetrics
    /// `# UNIT`) to `out`, where its samples follow.
    pub fn start(out: &'a mut String, format: Format, d: &Descriptor) -> Self {
        let mut name = String::from(d.name);
        if let Some(unit) = &d.unit {
            name.push('_');
            name.push_str(unit.as_str());
        }
        let family = name.clone();
        if d.kind == Kind::Counter {
            name.push_str("_total");
        }
        let kind = match d.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        // Writing to a String cannot fail.
        match format {
            // The family is named as its series; the help escaped.
            Format::Text => {
                let _ = write!(out, "# HELP {name} ");
                escape::<false>(out, d.help);
                let _ = writeln!(out, "\n# TYPE {name} {kind}");
            }
            // Named without `_total`, with its unit; the help as it is.
            Format::OpenMetrics => {
                let _ = writeln!(out, "# HELP {family} {}\n# TYPE {family} {kind}", d.help);
                if let Some(unit) = &d.unit {
                    let _ = writeln!(out, "# UNIT {family} {}", unit.as_str());
                }
            }
        }
        Self { out, name }
    }

    /// One sample with the labels of each of `labels`, in that order.
    pub fn sample(&mut self, labels: &[&Labels], value: impl itoa::Integer) {
        self.series("", labels, None);
        self.out.push_str(itoa::Buffer::new().format(value));
        self.out.push('\n');
    }

    /// One histogram: `buckets` as (upper bound, count in that bucket
    /// alone), ascending, then what is above them all; written cumulative,
    /// with `_sum` and `_count`.
    pub fn histogram(&mut self, labels: &[&Labels], buckets: &[(f64, u64)], above: u64, sum: f64) {
        let mut cumulative = 0u64;
        let mut le = String::new();
        for (bound, n) in buckets {
            cumulative = cumulative.wrapping_add(*n);
            le.clear();
            // Writing to a String cannot fail.
            let _ = write!(le, "{bound}");
            self.series("_bucket", labels, Some(&le));
            self.out.push_str(itoa::Buffer::new().format(cumulative));
            self.out.push('\n');
        }
        cumulative = cumulative.wrapping_add(above);
        self.series("_bucket", labels, Some("+Inf"));
        self.out.push_str(itoa::Buffer::new().format(cumulative));
        self.out.push('\n');
        self.series("_sum", labels, None);
        let _ = writeln!(self.out, "{sum}");
        self.series("_count", labels, None);
        self.out.push_str(itoa::Buffer::new().format(cumulative));
        self.out.push('\n');
    }

    /// The series' name with `suffix` and its labels (and `le`), up to its value.
    fn series(&mut self, suffix: &str, labels: &[&Labels], le: Option<&str>) {
        let out = &mut *self.out;
        out.push_str(&self.name);
        out.push_str(suffix);
        let mut open = false;
        for l in labels.iter().filter(|l| !l.0.is_empty()) {
            out.push(if open { ',' } else { '{' });
            out.push_str(&l.0);
            open = true;
        }
        if let Some(le) = le {
            out.push(if open { ',' } else { '{' });
            out.push_str("le=\"");
            out.push_str(le);
            out.push('"');
            open = true;
        }
        out.push_str(if open { "} " } else { " " });
    }
}

/// `s` with a backslash before each backslash (and double quote, if
/// `QUOTES`), a newline as `\n`.
fn escape<const QUOTES: bool>(out: &mut String, s: &str) {
    let special = |b: u8| b == b'\\' || b == b'\n' || (QUOTES && b == b'"');
    // Most values have nothing to escape; a fold, unlike `any`, is
    // vectorized.
    if !s.bytes().fold(false, |found, b| found | special(b)) {
        out.push_str(s);
        return;
    }
    let mut last = 0;
    for (i, b) in s.bytes().enumerate().filter(|&(_, b)| special(b)) {
        out.push_str(&s[last..i]);
        out.push_str(match b {
            b'\n' => "\\n",
            b'"' => "\\\"",
            _ => "\\\\",
        });
        last = i + 1;
    }
    out.push_str(&s[last..]);
}

#[cfg(test)]
mod tests {
    use prometheus_client::{
        collector::Collector,
        encoding::{prometheus_text, text, DescriptorEncoder, EncodeMetric},
        metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
        registry::Registry,
    };

    use super::*;

    /// Label values the formats must escape (quote, backslash, newline),
    /// UTF-8, and an empty one.
    const VALUES: [&str; 5] = [
        "plain",
        "a \"quoted\" C:\\path\\",
        "two\nlines\n",
        "UTF-8: λ, ü, 日本, 🚀",
        "",
    ];

    const HELP: &str = "Help with a \\ backslash,\na newline, \"quotes\" and λ.";

    fn descriptors() -> [Descriptor; 3] {
        [
            Descriptor {
                name: "x_sent",
                unit: Some(Unit::Bytes),
                help: HELP,
                kind: Kind::Counter,
            },
            Descriptor {
                name: "x_packets",
                unit: None,
                help: "Packets.",
                kind: Kind::Counter,
            },
            Descriptor {
                name: "x_level",
                unit: Some(Unit::Seconds),
                help: HELP,
                kind: Kind::Gauge,
            },
        ]
    }

    /// Sample `i`'s label values and value.
    fn sample(i: usize) -> (&'static str, &'static str, u64) {
        (
            VALUES[i],
            VALUES[(i + 1) % VALUES.len()],
            u64::MAX / (i as u64 + 1),
        )
    }

    /// The same families through prometheus-client: one sample per value,
    /// labels `a` and `b`, and one without labels.
    #[derive(Debug)]
    struct Reference;

    impl Collector for Reference {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            for d in descriptors() {
                let kind = match d.kind {
                    Kind::Counter => MetricType::Counter,
                    Kind::Gauge | Kind::Histogram => MetricType::Gauge,
                };
                let mut m = encoder.encode_descriptor(d.name, d.help, d.unit.as_ref(), kind)?;
                for i in 0..VALUES.len() {
                    let (a, b, value) = sample(i);
                    // An empty first set: only `b`.
                    let labels: &[(&str, &str)] = if i == 0 {
                        &[("b", b)]
                    } else {
                        &[("a", a), ("b", b)]
                    };
                    let m = m.encode_family(&labels)?;
                    match d.kind {
                        Kind::Counter => ConstCounter::new(value).encode(m)?,
                        Kind::Gauge | Kind::Histogram => ConstGauge::new(-(i as i64)).encode(m)?,
                    }
                }
            }
            let m = encoder.encode_descriptor("x_bare", HELP, None, MetricType::Gauge)?;
            ConstGauge::new(7i64).encode(m)
        }
    }

    fn written(format: Format) -> String {
        let mut out = String::new();
        for d in descriptors() {
            let mut family = Family::start(&mut out, format, &d);
            for i in 0..VALUES.len() {
                let (a, b, value) = sample(i);
                let (mut first, mut second) = (Labels::default(), Labels::default());
                if i > 0 {
                    first.push("a", a);
                }
                second.push("b", b);
                match d.kind {
                    Kind::Counter => family.sample(&[&first, &second], value),
                    Kind::Gauge | Kind::Histogram => family.sample(&[&first, &second], -(i as i64)),
                }
            }
        }
        let bare = Descriptor {
            name: "x_bare",
            unit: None,
            help: HELP,
            kind: Kind::Gauge,
        };
        Family::start(&mut out, format, &bare).sample(&[], 7);
        out
    }

    #[test]
    fn writes_what_prometheus_client_writes() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Reference));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).unwrap();
        let mut openmetrics = String::new();
        text::encode_registry(&mut openmetrics, &registry).unwrap();

        assert_eq!(written(Format::Text), text);
        assert_eq!(written(Format::OpenMetrics), openmetrics);
        // What was compared does contain every escape.
        for escaped in [
            r#"a=""#,
            r#"\"quoted\" C:\\path\\"#,
            r#"two\nlines\n"#,
            "🚀",
            r#"b="""#,
        ] {
            assert!(text.contains(escaped), "{escaped} not in\n{text}");
        }
        assert!(
            text.contains("# HELP x_sent_bytes_total Help with a \\\\ backslash,\\na newline"),
            "{text}"
        );
    }
}
