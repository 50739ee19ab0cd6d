//! `podmeter`: a CNI plugin that wires pods onto a bridge and meters them with eBPF.

#![allow(dead_code)] // removed once the verbs are wired up

mod ipam;
mod net;

fn main() {}
