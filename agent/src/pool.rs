//! Keeps the warm veth pool (`podmeter_ebpf::pool`) filled, so that pod
//! starts take a pair with the programs attached instead of paying TCX's
//! grace periods. A thread of its own: filling blocks on netlink and bpf(),
//! each entry ~30-40 ms of RTNL-held waits, which must not hold up the
//! watch.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use podmeter_ebpf::{pool, PinLayout};
use tracing::{info, warn};

/// How often the pool is counted: a claimed entry is replaced within this.
const POLL: Duration = Duration::from_millis(250);
/// How often stale entries are looked for even when the pool looks full.
const SWEEP: Duration = Duration::from_secs(30);

pub struct Filler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Filler {
    /// Starts filling to `size` entries (in this process's network
    /// namespace: the node's).
    pub fn start(layout: PinLayout, size: usize) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::Builder::new()
            .name("veth-pool".into())
            .spawn(move || {
                let mut swept: Option<Instant> = None;
                while !stopping.load(Ordering::Relaxed) {
                    let due = swept.is_none_or(|t| t.elapsed() >= SWEEP);
                    if due || pool::len(&layout) < size {
                        swept = Some(Instant::now());
                        match pool::fill(&layout, size) {
                            Ok(f) if f.created + f.removed > 0 => info!(
                                entries = f.entries,
                                created = f.created,
                                removed = f.removed,
                                "veth pool filled"
                            ),
                            Ok(_) => {}
                            Err(e) => warn!(error = %e, "filling the veth pool"),
                        }
                    }
                    thread::sleep(POLL);
                }
            })?;
        Ok(Self { stop, thread })
    }

    /// Stops filling and, with `drain`, removes the pool (uninstalling).
    pub fn stop(self, layout: &PinLayout, drain: bool) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            warn!("the veth pool's filler panicked");
        }
        if drain {
            match pool::drain(layout) {
                Ok(n) => info!(removed = n, "drained the veth pool (--cni.uninstall)"),
                Err(e) => warn!(error = %e, "draining the veth pool"),
            }
        }
    }
}
