//! Kernel settings a test turns on for its duration.

use std::fs;

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled` on for the test's duration (the program
/// stats need it), back to what it was afterwards.
pub struct BpfStats(String);

impl BpfStats {
    pub fn enable() -> Self {
        let old = fs::read_to_string(BPF_STATS).unwrap();
        fs::write(BPF_STATS, "1").unwrap();
        Self(old)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, self.0.trim());
    }
}
