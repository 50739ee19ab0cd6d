//! Errors of the eBPF side, with enough context to act on them.

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is not on a bpf filesystem (mount one with `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs { path: PathBuf },

    #[error(
        "unsafe pin path: {path} {reason}; podmeter pins only where root alone can write \
         (remove it, or mount bpffs with mode=0700)"
    )]
    UnsafePinPath { path: PathBuf, reason: String },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "pinned map {path} does not match this podmeter's layout (expected {expected}, found {found}); \
         it was made by another version: remove it or use another pin path"
    )]
    LayoutMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },

    #[error("reading the kernel's BTF (/sys/kernel/btf/vmlinux): {0}")]
    Btf(String),

    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),

    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },

    #[error("pinned link {path}: {source}")]
    Link {
        path: PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },

    #[error("map {path}: {source}")]
    Map {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("{field} is {len} bytes, longer than the registry's {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },

    /// A policy edit that cannot be made (a bad rule, a full CIDR).
    #[error("{0}")]
    Policy(String),

    #[error("tc on {ifname}: {source}")]
    Tc {
        ifname: String,
        #[source]
        source: aya::programs::tc::TcError,
    },

    #[error("listing the tc filters of {ifname}: {source}")]
    TcList {
        ifname: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
