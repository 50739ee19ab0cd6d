//! Exposition formats: OpenMetrics or the Prometheus text format 0.0.4,
//! chosen by the request's `Accept` header.

use prometheus_client::encoding::prometheus_text;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The default, for clients that name neither format.
    Text,
}

const OPENMETRICS: &str = "application/openmetrics-text";
const OPENMETRICS_VERSIONS: [&str; 2] = ["1.0.0", "0.0.1"];

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => prometheus_text::CONTENT_TYPE,
        }
    }

    /// OpenMetrics if the client names it (in a version we write) with a
    /// quality at least that of `text/plain`; text otherwise, also when
    /// nothing acceptable is offered (as the Go exporters do, instead of 406).
    pub fn negotiate(accept: Option<&str>) -> Self {
        let (mut om, mut text) = (None, None);
        for range in accept.unwrap_or_default().split(',') {
            let Some(range) = MediaRange::parse(range) else {
                continue;
            };
            match range.media_type.as_str() {
                OPENMETRICS if range.version_in(&OPENMETRICS_VERSIONS) => {
                    om = most_specific(om, (2, range.q))
                }
                "text/plain" if range.version_in(&["0.0.4"]) => {
                    text = most_specific(text, (2, range.q))
                }
                "text/*" => text = most_specific(text, (1, range.q)),
                "*/*" => text = most_specific(text, (0, range.q)),
                _ => {}
            }
        }
        let quality = |m: Option<(u8, f32)>| m.map_or(0.0, |(_, q)| q);
        if quality(om) > 0.0 && quality(om) >= quality(text) {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }
}

/// A format's quality comes from the most specific range that matches it
/// (`(specificity, q)`), the highest q among equally specific ones.
fn most_specific(current: Option<(u8, f32)>, new: (u8, f32)) -> Option<(u8, f32)> {
    match current {
        Some(c) if c >= new => Some(c),
        _ => Some(new),
    }
}

#[derive(Debug)]
struct MediaRange {
    media_type: String,
    version: Option<String>,
    q: f32,
}

impl MediaRange {
    /// `type/subtype; param=value; q=0.5`; `None` if there is no media type.
    fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(';');
        let media_type = parts.next()?.trim().to_ascii_lowercase();
        if !media_type.contains('/') {
            return None;
        }
        let mut range = Self {
            media_type,
            version: None,
            q: 1.0,
        };
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                // An unreadable quality makes the range unacceptable.
                "q" => range.q = value.parse().ok().filter(|q| (0.0..=1.0).contains(q))?,
                "version" => range.version = Some(value.to_owned()),
                _ => {}
            }
        }
        Some(range)
    }

    /// No version asked for, or one of `versions`.
    fn version_in(&self, versions: &[&str]) -> bool {
        self.version
            .as_deref()
            .is_none_or(|v| versions.contains(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for_at_least_as_much_as_text() {
        let om = Format::OpenMetrics;
        let text = Format::Text;
        for (accept, want) in [
            (None, text),
            (Some(""), text),
            (Some("*/*"), text),
            (Some("text/plain"), text),
            (Some("application/openmetrics-text"), om),
            (Some("Application/OpenMetrics-Text; Version=1.0.0"), om),
            // What Prometheus 2.x sends by default.
            (Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), om),
            (Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), text),
            (Some("application/openmetrics-text;q=0.4, text/plain;q=0.5"), text),
            (Some("text/plain;q=0.5, application/openmetrics-text;q=0.5"), om),
            (Some("application/openmetrics-text;q=0.3, text/*;q=0.2"), om),
            (Some("application/openmetrics-text;q=0.3, */*"), text),
            (Some("application/openmetrics-text;q=0"), text),
            (Some("application/openmetrics-text;q=high"), text),
            (Some("application/openmetrics-text; version=2.0.0"), text),
            (Some("application/openmetrics-text; version=\"0.0.1\""), om),
            // The most specific range decides text's quality.
            (Some("text/plain;q=0.1, */*;q=1, application/openmetrics-text;q=0.2"), om),
            (Some("garbage, application/json"), text),
        ] {
            assert_eq!(Format::negotiate(accept), want, "Accept: {accept:?}");
        }
    }
}
