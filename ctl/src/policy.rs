//! `podmeterctl policy …`: a pod's rules and defaults in the pinned maps.
//! Edits take the pin path's exclusive lock, so two edits never interleave
//! their read-modify-write of one CIDR's rules.

use std::{io::Write, path::Path, process::ExitCode};

use anyhow::bail;
use podmeter_ebpf::{
    abi::{Action, Direction},
    lock::PinLock,
    maps::PinnedMaps,
    policy::store::PolicyStore,
    policy::{Probe, Proto, Rule, RuleSpec, Verdict},
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
    let target = |query| Target { maps: &maps, query };
    match command {
        PolicyCommand::Add {
            pod,
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
            add(&target(pod), *direction, &spec, out)?;
        }
        PolicyCommand::Default {
            pod,
            direction,
            action,
        } => set_default(&target(pod), *direction, *action)?,
        PolicyCommand::Delete { pod, id } => delete(&target(pod), *id)?,
        PolicyCommand::List { pod, output } => list(&target(pod), *output, out)?,
        PolicyCommand::Check {
            pod,
            direction,
            remote,
            proto,
            port,
        } => {
            let probe = Probe {
                direction: *direction,
                remote: *remote,
                proto: *proto,
                port: *port,
            };
            return check(&target(pod), &probe, out);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The pod a subcommand names and the node's pins it is looked up in: the
/// argument handling every subcommand shares.
struct Target<'a> {
    maps: &'a PinnedMaps,
    query: &'a str,
}

impl Target<'_> {
    /// The pod's interface, the key of its policy.
    fn ifindex(&self) -> anyhow::Result<u32> {
        Ok(self.maps.lookup(self.query)?.0)
    }

    fn store(&self) -> anyhow::Result<PolicyStore> {
        Ok(PolicyStore::from_maps(&mut self.maps.fresh())?)
    }

    /// The store under the pin path's exclusive lock, held as long as the
    /// returned guard lives; the pod is resolved under the lock.
    fn edit(&self) -> anyhow::Result<(PinLock, PolicyStore, u32)> {
        let lock = self.maps.lock_exclusive()?;
        let store = self.store()?;
        Ok((lock, store, self.ifindex()?))
    }
}

fn add(
    target: &Target,
    direction: Direction,
    spec: &RuleSpec,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    spec.validate()?;
    let (_edit, mut store, ifindex) = target.edit()?;
    let id = store.add(ifindex, direction, spec)?;
    writeln!(out, "{id}")?;
    Ok(())
}

fn set_default(target: &Target, direction: Direction, action: Action) -> anyhow::Result<()> {
    let (_edit, mut store, ifindex) = target.edit()?;
    store.set_default(ifindex, direction, action)?;
    Ok(())
}

fn delete(target: &Target, id: u32) -> anyhow::Result<()> {
    let (_edit, mut store, ifindex) = target.edit()?;
    if !store.delete(ifindex, id)? {
        bail!("pod {:?} has no rule {id}", target.query);
    }
    Ok(())
}

fn list(target: &Target, output: Format, out: &mut impl Write) -> anyhow::Result<()> {
    let ifindex = target.ifindex()?;
    let store = target.store()?;
    let defaults = store.defaults(ifindex)?.unwrap_or([Action::Allow; 2]);
    let rules = store.rules(ifindex)?;
    if output == Format::Json {
        let defaults: serde_json::Map<_, _> = Direction::ALL
            .iter()
            .map(|d| (d.as_str().to_owned(), json!(defaults[*d as usize])))
            .collect();
        writeln!(out, "{}", json!({"defaults": defaults, "rules": rules}))?;
        return Ok(());
    }
    for d in Direction::ALL {
        writeln!(
            out,
            "default {:<9} {}",
            d.as_str(),
            defaults[d as usize].as_str()
        )?;
    }
    print_rules(&rules, out)
}

fn print_rules(rules: &[Rule], out: &mut impl Write) -> anyhow::Result<()> {
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
    Ok(())
}

/// Exits 1 when the probe is denied, so scripts can test a verdict.
fn check(target: &Target, probe: &Probe, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    if probe.proto == Proto::Any {
        bail!("--proto any is not a packet: give tcp, udp, icmp or icmpv6");
    }
    let ifindex = target.ifindex()?;
    let store = target.store()?;
    let verdict = store.check(ifindex, probe)?;
    let why = match verdict {
        Verdict::NoPolicy => "the pod has no policy".to_owned(),
        Verdict::Default(_) => {
            format!("no rule matches: the {} default", probe.direction.as_str())
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
    Ok(if action == Action::Deny {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
