//! What podmeter's long-running binaries (`podmeter-exporter`,
//! `podmeter-agent`) share: the `--log.*` flags, logging to stderr as
//! Prometheus' exporters do (logfmt or JSON), and an async main with one
//! exit path. The CNI plugin is short-lived and synchronous: not here.

use std::{future::Future, process::ExitCode};

use clap::ValueEnum;
use tracing::error;

/// `--log.level` and `--log.format`, flattened into each binary's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info)]
    pub level: LogLevel,

    /// Output format of log messages (to stderr).
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Logfmt)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => Self::ERROR,
            LogLevel::Warn => Self::WARN,
            LogLevel::Info => Self::INFO,
            LogLevel::Debug => Self::DEBUG,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

impl LogArgs {
    /// Installs the global subscriber, writing to stderr.
    pub fn init(&self) {
        let level = tracing::Level::from(self.level);
        match self.format {
            LogFormat::Logfmt => tracing_logfmt::builder()
                .subscriber_builder()
                .with_writer(std::io::stderr)
                .with_max_level(level)
                .init(),
            LogFormat::Json => tracing_subscriber::fmt()
                .json()
                .with_writer(std::io::stderr)
                .with_max_level(level)
                .init(),
        }
    }
}

/// Runs `main` on a multi-threaded runtime; an error is logged with its
/// causes and makes the exit status a failure.
pub fn run(main: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "starting the async runtime failed");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}
