//! `podmeterctl policy …`: a pod's rules and defaults in the pinned maps.
//! Edits take the pin path's exclusive lock, so two edits never interleave
//! their read-modify-write of one CIDR's rules.

use std::{io::Write, path::Path, process::ExitCode};

use anyhow::bail;
use podmeter_ebpf::{
    abi::{Action, Direction},
    lock::PinLock,
    policy::{Probe, Proto, RuleSpec, Verdict},
    policy_store::PolicyStore,
};
use serde_json::json;

use crate::{
    cli::{Format, PolicyCommand},
    pod_ref,
};

pub fn run(
    pin_path: &Path,
    command: &PolicyCommand,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let maps = pod_ref::open(pin_path)?;
    let layout = maps.layout().clone();
    let pod = |query: &str| pod_ref::resolve(&maps, query).map(|(ifindex, _)| ifindex);
    match command {
        PolicyCommand::Add {
            pod: query,
            direction,
            action,
            cidr,
            proto,
            ports,
        } => {
            let spec = RuleSpec {
                action: *action,
                cidr: *cidr,
                proto: *proto,
                ports: *ports,
            };
            spec.validate()?;
            let _edit = PinLock::exclusive(&layout)?;
            let id = PolicyStore::open(&layout)?.add(pod(query)?, *direction, &spec)?;
            writeln!(out, "{id}")?;
        }
        PolicyCommand::Default {
            pod: query,
            direction,
            action,
        } => {
            let _edit = PinLock::exclusive(&layout)?;
            PolicyStore::open(&layout)?.set_default(pod(query)?, *direction, *action)?;
        }
        PolicyCommand::Delete { pod: query, id } => {
            let _edit = PinLock::exclusive(&layout)?;
            if !PolicyStore::open(&layout)?.delete(pod(query)?, *id)? {
                bail!("pod {query:?} has no rule {id}");
            }
        }
        PolicyCommand::List { pod: query, output } => {
            let ifindex = pod(query)?;
            let store = PolicyStore::open(&layout)?;
            let defaults = store.defaults(ifindex)?.unwrap_or([Action::Allow; 2]);
            let rules = store.rules(ifindex)?;
            if *output == Format::Json {
                let defaults: serde_json::Map<_, _> = Direction::ALL
                    .iter()
                    .map(|d| (d.as_str().to_owned(), json!(defaults[*d as usize])))
                    .collect();
                writeln!(out, "{}", json!({"defaults": defaults, "rules": rules}))?;
            } else {
                for d in Direction::ALL {
                    writeln!(
                        out,
                        "default {:<9} {}",
                        d.as_str(),
                        defaults[d as usize].as_str()
                    )?;
                }
                writeln!(
                    out,
                    "{:>4}  {:<9}  {:<6}  {:<6}  {:<20}  PORTS",
                    "ID", "DIRECTION", "ACTION", "PROTO", "CIDR"
                )?;
                for r in rules {
                    writeln!(
                        out,
                        "{:>4}  {:<9}  {:<6}  {:<6}  {:<20}  {}",
                        r.id,
                        r.direction.as_str(),
                        r.spec.action.as_str(),
                        r.spec.proto,
                        r.spec.cidr.map_or("any".to_owned(), |c| c.to_string()),
                        r.spec.ports.map_or("any".to_owned(), |p| p.to_string()),
                    )?;
                }
            }
        }
        PolicyCommand::Check {
            pod: query,
            direction,
            remote,
            proto,
            port,
        } => {
            if *proto == Proto::Any {
                bail!("--proto any is not a packet: give tcp, udp, icmp or icmpv6");
            }
            let ifindex = pod(query)?;
            let store = PolicyStore::open(&layout)?;
            let probe = Probe {
                direction: *direction,
                remote: *remote,
                proto: *proto,
                port: *port,
            };
            let verdict = store.check(ifindex, &probe)?;
            let why = match verdict {
                Verdict::NoPolicy => "the pod has no policy".to_owned(),
                Verdict::Default(_) => {
                    format!("no rule matches: the {} default", direction.as_str())
                }
                Verdict::Rule { id, .. } => {
                    let rule = store.rules(ifindex)?.into_iter().find(|r| r.id == id);
                    match rule {
                        Some(r) => format!("rule {id}: {}", r.spec),
                        None => format!("rule {id}"),
                    }
                }
            };
            let action = verdict.action();
            writeln!(
                out,
                "{} ({why})",
                if action == Action::Allow {
                    "allowed"
                } else {
                    "denied"
                }
            )?;
            if action == Action::Deny {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
