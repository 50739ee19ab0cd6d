//! `podmeterctl policy …`: a pod's rules and defaults in the pinned maps.
//! Edits act as the `operator` owner, through the store, which takes the
//! pin path's exclusive lock, so two edits never interleave their
//! read-modify-write of one CIDR's rules.

use std::{io::Write, path::Path, process::ExitCode};

use anyhow::bail;
use podmeter_ebpf::{
    abi::{Action, Direction},
    maps::PinnedMaps,
    policy::{
        kubernetes::NamedKubeRule, store::PolicyStore, view::PolicyView, KubeVerdict, Owner, Probe,
        Proto, Rule, RuleSpec, Verdict,
    },
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

    fn view(&self) -> anyhow::Result<PolicyView> {
        Ok(PolicyView::from_maps(&mut self.maps.fresh())?)
    }

    /// The store, which holds the pin path's exclusive lock as long as it
    /// lives; the pod is resolved under the lock.
    fn edit(&self) -> anyhow::Result<(PolicyStore<'static>, u32)> {
        let store = PolicyStore::lock(self.maps.layout())?;
        Ok((store, self.ifindex()?))
    }
}

fn add(
    target: &Target,
    direction: Direction,
    spec: &RuleSpec,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    spec.validate()?;
    let (mut store, ifindex) = target.edit()?;
    let id = store.add(ifindex, direction, spec)?;
    writeln!(out, "{id}")?;
    Ok(())
}

fn set_default(target: &Target, direction: Direction, action: Action) -> anyhow::Result<()> {
    let (mut store, ifindex) = target.edit()?;
    store.set_default(ifindex, direction, action)?;
    Ok(())
}

fn delete(target: &Target, id: u32) -> anyhow::Result<()> {
    let (mut store, ifindex) = target.edit()?;
    if !store.delete(ifindex, id)? {
        bail!("pod {:?} has no rule {id}", target.query);
    }
    Ok(())
}

fn list(target: &Target, output: Format, out: &mut impl Write) -> anyhow::Result<()> {
    let ifindex = target.ifindex()?;
    let view = target.view()?;
    let defaults = view.defaults(ifindex)?.unwrap_or([Action::Allow; 2]);
    let isolated = view.isolated(ifindex)?;
    let rules = view.rules(ifindex)?;
    let kubernetes = view.kubernetes_rules(ifindex)?;
    if output == Format::Json {
        let by_direction = |f: &dyn Fn(usize) -> serde_json::Value| -> serde_json::Value {
            Direction::ALL
                .iter()
                .map(|d| (d.as_str().to_owned(), f(*d as usize)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let mut listed: Vec<serde_json::Value> = rules.iter().map(|r| json!(r)).collect::<Vec<_>>();
        listed.extend(kubernetes.iter().map(|k| {
            let mut v = json!(k);
            v["owner"] = json!(Owner::Kubernetes);
            v["action"] = json!(Action::Allow);
            v
        }));
        let mut doc = json!({
            "defaults": by_direction(&|d| json!(defaults[d])),
            "rules": listed,
        });
        // Shown only where NetworkPolicy isolates the pod.
        if isolated.contains(&true) {
            doc["isolated"] = by_direction(&|d| json!(isolated[d]));
        }
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    for d in Direction::ALL {
        let i = d as usize;
        writeln!(
            out,
            "default {:<9} {}{}",
            d.as_str(),
            defaults[i].as_str(),
            if isolated[i] {
                " (isolated by NetworkPolicy: the kubernetes rules decide)"
            } else {
                ""
            }
        )?;
    }
    print_rules(&rules, &kubernetes, out)
}

fn print_rules(
    rules: &[Rule],
    kubernetes: &[NamedKubeRule],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let row = |out: &mut dyn Write, cells: [&str; 8]| {
        let [id, owner, direction, action, proto, remote, ports, policy] = cells;
        writeln!(
            out,
            "{id:>4}  {owner:<10}  {direction:<9}  {action:<6}  {proto:<6}  {remote:<20}  \
             {ports:<11}  {policy}"
        )
        .map(|_| ())
    };
    row(
        out,
        [
            "ID",
            "OWNER",
            "DIRECTION",
            "ACTION",
            "PROTO",
            "CIDR/PEER",
            "PORTS",
            "POLICY",
        ],
    )?;
    for r in rules {
        row(
            out,
            [
                &r.id.to_string(),
                r.owner.as_str(),
                r.direction.as_str(),
                r.spec.action.as_str(),
                r.spec.proto.as_str(),
                &r.spec.cidr.map_or("any".to_owned(), |c| c.to_string()),
                &r.spec.ports.map_or("any".to_owned(), |p| p.to_string()),
                "",
            ],
        )?;
    }
    for k in kubernetes {
        let r = &k.rule;
        row(
            out,
            [
                "-",
                Owner::Kubernetes.as_str(),
                r.direction.as_str(),
                Action::Allow.as_str(),
                r.proto.map_or("any", |p| p.as_str()),
                &match r.peer {
                    0 => "any peer".to_owned(),
                    id => format!("identity {id}"),
                },
                &r.ports.map_or("any".to_owned(), |p| p.to_string()),
                k.name.as_deref().unwrap_or("?"),
            ],
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
    let view = target.view()?;
    let verdict = view.check(ifindex, probe)?;
    let why = match verdict {
        Verdict::NoPolicy => "the pod has no policy".to_owned(),
        Verdict::Default(_) => {
            format!("no rule matches: the {} default", probe.direction.as_str())
        }
        Verdict::Rule { id, .. } => {
            let rule = view.rules(ifindex)?.into_iter().find(|r| r.id == id);
            match rule {
                Some(r) => format!("rule {id}: {}, the {}'s", r.spec, r.owner),
                None => format!("rule {id}"),
            }
        }
        Verdict::Kubernetes(KubeVerdict::Node) => {
            "isolated by NetworkPolicy; the node is always allowed".to_owned()
        }
        Verdict::Kubernetes(KubeVerdict::Allowed { policy }) => {
            let names = view.policy_names()?;
            let name = names.iter().find(|(i, _)| *i == policy).map(|(_, n)| n);
            format!(
                "isolated by NetworkPolicy; allowed by {}",
                name.map_or(format!("policy {policy}"), |n| format!("NetworkPolicy {n}"))
            )
        }
        Verdict::Kubernetes(KubeVerdict::Denied) => {
            "isolated by NetworkPolicy; no NetworkPolicy allows it".to_owned()
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
