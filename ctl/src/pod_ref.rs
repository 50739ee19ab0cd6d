//! The pins of a node, for the commands that read them (a pod in them is
//! looked up by the kernel crate's `PinnedMaps::lookup`).

use std::path::Path;

use anyhow::{bail, Context};
use podmeter_ebpf::{maps::PinnedMaps, PinLayout};

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
