//! The pins of a node, and a pod in them by what an operator knows of it.

use std::path::Path;

use anyhow::{bail, Context};
use podmeter_ebpf::{maps::PinnedMaps, PinLayout, PodIdentity};

/// The pin path's layout, if podmeter has pinned anything there.
fn layout(pin_path: &Path) -> anyhow::Result<PinLayout> {
    let layout = PinLayout::new(pin_path);
    let dir = layout.dir();
    let pinned = dir
        .try_exists()
        .with_context(|| format!("looking for {}", dir.display()))?;
    if !pinned {
        bail!(
            "no podmeter pins at {}: the plugin has wired no pod with this pin path on \
             this node (is bpffs mounted, and is --bpf.pin-path the plugin's pinPath?)",
            dir.display()
        );
    }
    Ok(layout)
}

pub fn open(pin_path: &Path) -> anyhow::Result<PinnedMaps> {
    Ok(PinnedMaps::open(&layout(pin_path)?)?)
}

/// `namespace/name`, a bare name (pods without a namespace, as under
/// podman), a container ID, or a host interface name.
pub fn matches(pod: &PodIdentity, query: &str) -> bool {
    query == pod.host_ifname
        || query == pod.container_id
        || query == format!("{}/{}", pod.namespace, pod.pod)
        || (pod.namespace.is_empty() && query == pod.pod)
}

/// The one registered pod interface `query` names.
pub fn resolve(maps: &PinnedMaps, query: &str) -> anyhow::Result<(u32, PodIdentity)> {
    let mut found: Vec<(u32, PodIdentity)> = maps
        .pods()?
        .into_iter()
        .filter(|(_, p)| matches(p, query))
        .collect();
    match found.len() {
        0 => bail!(
            "no pod {query:?} on this node (give namespace/name, a container ID or a host \
             interface; `podmeterctl pods` lists them)"
        ),
        1 => Ok(found.remove(0)),
        _ => {
            let names: Vec<String> = found
                .iter()
                .map(|(_, p)| format!("{} ({})", p.host_ifname, p.ifname))
                .collect();
            bail!(
                "{query:?} names several pod interfaces: {}; give the host interface",
                names.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_found_by_what_an_operator_knows() {
        let k8s = PodIdentity {
            namespace: "shop".into(),
            pod: "web".into(),
            container_id: "c0ffee".into(),
            host_ifname: "pm1234".into(),
            ..Default::default()
        };
        let podman = PodIdentity {
            pod: "web".into(),
            ..k8s.clone()
        };
        let podman = PodIdentity {
            namespace: String::new(),
            ..podman
        };
        for q in ["shop/web", "c0ffee", "pm1234"] {
            assert!(matches(&k8s, q), "{q}");
        }
        assert!(
            !matches(&k8s, "web"),
            "a bare name is for pods without a namespace"
        );
        assert!(matches(&podman, "web"));
        assert!(!matches(&k8s, "shop/we"));
    }
}
