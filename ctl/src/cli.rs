//! The command line. Scripts depend on these forms: keep them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use podmeter_ebpf::{
    abi::{Action, Direction},
    pins::DEFAULT_PIN_PATH,
    policy::{PortRange, Proto},
};

/// Exit status of an error (`policy check` exits 1 for "denied").
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(name = "podmeterctl", version, about)]
pub struct Cli {
    /// The pin path the plugin was configured with (`pinPath`).
    #[arg(long = "bpf.pin-path", global = true, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Registered pod interfaces with their counters and drops.
    Pods(PodsArgs),
    /// Per-pod policy: rules and default actions, per direction.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    /// One JSON object per line (`pods`), or one JSON document.
    Json,
}

#[derive(Args)]
pub struct PodsArgs {
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
}

/// POD is `namespace/name` (`name` when the namespace is empty, as under
/// podman), a container ID, or the pod's host interface name.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Adds a rule; prints its id.
    Add {
        pod: String,
        #[arg(long, value_parser = direction)]
        direction: Direction,
        #[arg(long, value_parser = action)]
        action: Action,
        /// Remote addresses (default: every address, IPv4 and IPv6).
        #[arg(long)]
        cidr: Option<IpNet>,
        #[arg(long, default_value = "any")]
        proto: Proto,
        /// Destination port or range (`N` or `N-M`): the remote's when
        /// transmitting, the pod's own when receiving. TCP, UDP and SCTP only.
        #[arg(long)]
        ports: Option<PortRange>,
    },
    /// Sets what packets no rule matches meet.
    Default {
        pod: String,
        #[arg(long, value_parser = direction)]
        direction: Direction,
        #[arg(long, value_parser = action)]
        action: Action,
    },
    /// The pod's defaults and rules.
    List {
        pod: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Removes rule ID of the pod.
    Delete { pod: String, id: u32 },
    /// Says, without sending anything, what a packet would meet and what
    /// decided it. Exit status 0: allowed, 1: denied.
    Check {
        pod: String,
        #[arg(long, value_parser = direction)]
        direction: Direction,
        /// The other end's address.
        #[arg(long)]
        remote: std::net::IpAddr,
        /// The packet's protocol (default tcp).
        #[arg(long, default_value = "tcp")]
        proto: Proto,
        /// Its destination port (TCP, UDP).
        #[arg(long)]
        port: Option<u16>,
    },
}

fn direction(s: &str) -> Result<Direction, String> {
    Direction::ALL
        .into_iter()
        .find(|d| d.as_str() == s)
        .ok_or_else(|| format!("{s:?} is not a direction (receive or transmit)"))
}

fn action(s: &str) -> Result<Action, String> {
    [Action::Allow, Action::Deny]
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| format!("{s:?} is not an action (allow or deny)"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        for (args, reason) in [
            ("add p --direction in --action deny", "not a direction"),
            ("add p --direction receive --action drop", "not an action"),
            (
                "add p --direction receive --action deny --ports 70000",
                "0..=65535",
            ),
            (
                "add p --direction receive --action deny --proto gre",
                "unknown protocol",
            ),
            (
                "add p --direction receive --action deny --cidr 10.0.0.300/8",
                "invalid IP",
            ),
            ("check p --direction receive --remote nowhere", "invalid IP"),
        ] {
            let argv = ["podmeterctl", "policy"].into_iter().chain(args.split(' '));
            let err = Cli::try_parse_from(argv).err().expect(args).to_string();
            assert!(err.contains(reason), "{args}: {err}");
        }
    }
}
