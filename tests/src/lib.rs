//! Shared helpers for podmeter integration tests.
