//! `podmeterctl`: reads podmeter's pins on this node (pods, counters,
//! drops) and edits per-pod policy. No daemon is involved: the pinned maps
//! are the state, and a change takes effect at the pod's next packet.

mod cli;
mod output;
mod pod_ref;
mod pods;
mod policy;

use std::{io, process::ExitCode};

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = output::Out::stdout();
    let result = match &cli.command {
        Command::Pods(args) => pods::run(&cli.pin_path, args, &mut out),
        Command::Policy(cmd) => policy::run(&cli.pin_path, cmd, &mut out),
    }
    .and_then(|code| out.flush().map(|()| code));
    match result {
        Ok(code) => code,
        // `podmeterctl pods | head`: the reader has what it wanted.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("podmeterctl: {}", message(&e));
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}

/// The error and its causes, each said once: most of the eBPF crate's
/// errors give their source's text in their own already.
fn message(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1).map(ToString::to_string) {
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}
