//! Where a compiled kubernetes tier goes. The kernel writer (the `ebpf`
//! crate's policy store: `apply_kubernetes` per local pod,
//! `replace_peers`, `replace_policy_names`) implements [`PolicySink`]; the
//! agent's watch only compiles and hands over, so it runs without a kernel
//! in tests.

use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use super::model::Compiled;

/// Takes every new compiled tier (only when it differs from the last one
/// handed over successfully). A failed `apply` is retried with the then
/// current tier; the sink must leave the kernel as it was (all or nothing).
pub trait PolicySink: Send {
    type Error: std::error::Error + Send + Sync + 'static;

    fn apply(&mut self, compiled: &Compiled) -> Result<(), Self::Error>;
}

/// What the agent runs with until the kernel writer is glued on: it logs
/// what the tier would be, and says that it is not enforced.
#[derive(Debug, Default)]
pub struct LogSink {
    warned: bool,
}

impl PolicySink for LogSink {
    type Error = std::convert::Infallible;

    fn apply(&mut self, compiled: &Compiled) -> Result<(), Self::Error> {
        if !std::mem::replace(&mut self.warned, true) {
            warn!("NetworkPolicy is compiled but not yet written to the kernel: this build does not enforce it");
        }
        info!(
            policies = compiled.policy_names.len(),
            local_pods = compiled.pods.len(),
            isolated_pods = compiled.isolated_pods(),
            peers = compiled.peers.len(),
            rules = compiled.rule_count(),
            "compiled the kubernetes tier"
        );
        Ok(())
    }
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
