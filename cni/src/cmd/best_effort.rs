//! Cleanup that goes on past a failure: DEL and GC must release everything
//! they can, as the spec asks, and report what they could not.

use podmeter_ebpf::Error as EbpfError;

use crate::error::PluginError;

/// Collects the outcome of independent cleanup steps.
pub struct BestEffort {
    verb: &'static str,
    first: Option<PluginError>,
}

impl BestEffort {
    pub fn new(verb: &'static str) -> Self {
        Self { verb, first: None }
    }

    /// Keeps a step's value; a failure is logged and the first one kept for
    /// the result.
    pub fn step<T>(&mut self, what: &str, r: Result<T, impl Into<PluginError>>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                let e = e.into();
                tracing::error!("{}: {what}: {e}", self.verb);
                self.first.get_or_insert(e);
                None
            }
        }
    }

    /// Like [`step`](Self::step) for work on the pins, except that a map of
    /// another layout is only logged: it holds nothing of the pod's that we
    /// could remove, and failing would make the verb fail forever.
    pub fn pins<T>(&mut self, what: &str, r: Result<T, EbpfError>) -> Option<T> {
        match r {
            Err(e @ EbpfError::LayoutMismatch { .. }) => {
                tracing::warn!("{}: {what}: {e}", self.verb);
                None
            }
            r => self.step(what, r),
        }
    }

    pub fn finish(self) -> Result<(), PluginError> {
        self.first.map_or(Ok(()), Err)
    }
}
