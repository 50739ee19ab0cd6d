//! How many arguments a BTF tracepoint passes on the running kernel. Some
//! gained one over the years (`tcp_retransmit_skb` its `err`, with which it
//! also began to fire on failed retransmissions), and the verifier refuses
//! a program that reads an argument the kernel does not pass: the loader
//! tells the program through a read-only global, and the verifier drops the
//! branch that would read it.

use btf_rs::{Btf, Type};

/// The arguments of `tracepoint` (without the tracepoint's own context),
/// `None` if the kernel's BTF does not describe it.
pub fn tracepoint_args(btf: &Btf, tracepoint: &str) -> Option<usize> {
    let types = btf
        .resolve_types_by_name(&format!("btf_trace_{tracepoint}"))
        .ok()?;
    let Some(Type::Typedef(typedef)) = types.into_iter().find(|t| matches!(t, Type::Typedef(_)))
    else {
        return None;
    };
    let Type::Ptr(ptr) = btf.resolve_chained_type(&typedef).ok()? else {
        return None;
    };
    let Type::FuncProto(proto) = btf.resolve_chained_type(&ptr).ok()? else {
        return None;
    };
    Some(proto.parameters.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::programs::drop_reasons::VMLINUX_BTF;

    #[test]
    fn counts_the_arguments_of_the_running_kernels_tracepoints() {
        let Ok(btf) = Btf::from_file(Path::new(VMLINUX_BTF)) else {
            return; // a kernel without BTF: nothing to read
        };
        // (sk, oldstate, newstate) since 4.16; (sk, req) since 4.16.
        assert_eq!(tracepoint_args(&btf, "inet_sock_set_state"), Some(3));
        assert_eq!(tracepoint_args(&btf, "tcp_retransmit_synack"), Some(2));
        assert_eq!(tracepoint_args(&btf, "no_such_tracepoint"), None);
    }
}
