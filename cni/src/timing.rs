//! Where an invocation's time goes: with `PODMETER_LOG=podmeter::timing=debug`
//! each verb logs one line per phase to stderr (never stdout, which carries
//! the result), with the milliseconds since the previous phase ended, and
//! the wall clock of `main`'s start so a caller that noted when it exec'd the
//! plugin can tell exec and start-up apart (`scripts/bench/cni-latency.sh`).
//! Off (the default), a mark costs one uncontended mutex lock.

use std::{
    sync::Mutex,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use tracing::Level;

const TARGET: &str = "podmeter::timing";

/// When the last phase ended; `None` until [`start`], or when not logging.
static LAST: Mutex<Option<Instant>> = Mutex::new(None);

/// Called first thing in `main`, once logging is set up.
pub fn start() {
    if !tracing::enabled!(target: TARGET, Level::DEBUG) {
        return;
    }
    let now = Instant::now();
    let epoch_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    tracing::debug!(target: TARGET, epoch_us, "main");
    *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
}

/// Ends the phase `phase`: logs how long it took since the last mark.
pub fn mark(phase: &'static str) {
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let Some(prev) = *last else { return };
    let now = Instant::now();
    let ms = (now - prev).as_secs_f64() * 1000.0;
    tracing::debug!(target: TARGET, phase, ms = format_args!("{ms:.3}"), "phase");
    *last = Some(now);
}

/// Logs the wall clock at the end, so the caller can tell exit time apart.
pub fn finish() {
    if LAST.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
        return;
    }
    mark("result");
    let epoch_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    tracing::debug!(target: TARGET, epoch_us, "end");
}
