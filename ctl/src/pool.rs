//! `podmeterctl pool …`: what the node agent does to the veth pool, by
//! hand (benchmarks, uninstalling a node without its agent).

use std::{io::Write, path::Path, process::ExitCode};

use podmeter_ebpf::{pool, PinLayout};

use crate::cli::PoolCommand;

pub fn run(
    pin_path: &Path,
    command: &PoolCommand,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let layout = PinLayout::new(pin_path);
    match command {
        PoolCommand::Fill { size } => {
            let filled = pool::fill(&layout, *size)?;
            writeln!(
                out,
                "entries {} created {} removed {}",
                filled.entries, filled.created, filled.removed
            )?;
        }
        PoolCommand::Drain => writeln!(out, "removed {}", pool::drain(&layout)?)?,
    }
    Ok(ExitCode::SUCCESS)
}
