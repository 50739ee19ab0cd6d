//! Tests that need root (network namespaces, bpffs, eBPF programs) start
//! with [`needs_root!`]. As root they run. As another user they return at
//! once and name themselves on the terminal, so `cargo test` as an ordinary
//! user passes every pure test and says which ones it left to root. Where a
//! skip must not happen (CI), set [`REQUIRE_ROOT`]: a skip is then a failure.
//!
//! Beside the gate, what unit tests of several crates need that is no
//! fixture of a node: plain HTTP ([`http`]) and promtool's check ([`promtool`]).

use std::io::Write;

pub mod http;
pub mod promtool;

/// Set (to anything) to make a root-only test fail instead of skipping.
pub const REQUIRE_ROOT: &str = "PODMETER_REQUIRE_ROOT";

/// Returns from the calling test unless the process is root; see the crate docs.
#[macro_export]
macro_rules! needs_root {
    () => {
        if $crate::skip_unless_root() {
            return;
        }
    };
}

/// Whether the calling test must skip: not root, and [`REQUIRE_ROOT`] unset.
pub fn skip_unless_root() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return false;
    }
    // libtest names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    assert!(
        std::env::var_os(REQUIRE_ROOT).is_none(),
        "{test} needs root, and {REQUIRE_ROOT} is set"
    );
    // Straight to the terminal: libtest captures print! and eprint! of a
    // passing test, which would hide the skip.
    let _ = writeln!(std::io::stderr(), "needs root: skipped {test}");
    true
}
