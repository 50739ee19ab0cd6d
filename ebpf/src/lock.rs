//! A `flock` on a pin path's versioned directory.
//!
//! Taken exclusively while the programs are loaded and pinned, so that
//! concurrent plugin processes load them once, not once each; shared by every
//! ADD while it creates a pod, and exclusively by GC, so that GC never takes a
//! pod half made by an ADD in flight for a leftover. The kernel releases it
//! when the holder dies, so a crash never leaves the directory locked.

use std::fs::File;

use crate::{loader::check_bpffs, pin_dir, Error, PinLayout};

pub struct PinLock {
    _file: File,
}

impl PinLock {
    /// Blocks until no exclusive holder (a load, a GC) is left.
    pub fn shared(layout: &PinLayout) -> Result<Self, Error> {
        Self::take(layout, File::lock_shared)
    }

    /// Blocks until no other holder is left.
    pub fn exclusive(layout: &PinLayout) -> Result<Self, Error> {
        Self::take(layout, File::lock)
    }

    /// Creates the directories (root's alone, on bpffs) if needed, then locks.
    fn take(layout: &PinLayout, lock: fn(&File) -> std::io::Result<()>) -> Result<Self, Error> {
        check_bpffs(layout.pin_path())?;
        pin_dir::ensure(layout)?;
        let dir = layout.dir();
        let file = File::open(&dir).map_err(|e| Error::io("open", &dir, e))?;
        lock(&file).map_err(|e| Error::io("flock", &dir, e))?;
        Ok(Self { _file: file })
    }
}
