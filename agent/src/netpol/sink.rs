//! Where a compiled kubernetes tier goes. The kernel writer
//! ([`super::kernel_sink::KernelSink`]) implements [`PolicySink`]; the
//! agent's watch only compiles and hands over, so it runs without a kernel
//! in tests.

use tokio::sync::mpsc::UnboundedSender;

use super::model::Compiled;

/// Takes every new compiled tier (only when it differs from the last one
/// handed over successfully). A failed `apply` is retried with the then
/// current tier. Each write the sink makes is all or nothing (the store's
/// calls are); after a failure it must not trust what it wrote before.
pub trait PolicySink: Send {
    type Error: std::error::Error + Send + Sync + 'static;

    fn apply(&mut self, compiled: &Compiled) -> Result<(), Self::Error>;
}

/// Sends every tier down a channel: the test double of the kernel writer
/// (and a way to watch the compiler's output in-process).
#[derive(Debug, Clone)]
pub struct ChannelSink(pub UnboundedSender<Compiled>);

/// The receiving end is gone.
#[derive(Debug, thiserror::Error)]
#[error("the receiver of compiled tiers is gone")]
pub struct Closed;

impl PolicySink for ChannelSink {
    type Error = Closed;

    fn apply(&mut self, compiled: &Compiled) -> Result<(), Self::Error> {
        self.0.send(compiled.clone()).map_err(|_| Closed)
    }
}
