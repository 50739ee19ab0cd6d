//! A `flock` on a pin path's versioned directory.
//!
//! Taken exclusively while the programs are loaded and pinned, so that
//! concurrent plugin processes load them once, not once each; shared by every
//! ADD while it creates a pod, and exclusively by GC, so that GC never takes a
//! pod half made by an ADD in flight for a leftover; shared by DEL and
//! exclusively by a policy edit (`podmeterctl policy`), so that an edit
//! never writes rules for a pod that DEL is removing. The kernel releases it
//! when the holder dies, so a crash never leaves the directory locked.

use std::fs::File;

use crate::{pin_dir, Error, PinLayout};

pub struct PinLock {
    _file: File,
    layout: PinLayout,
    exclusive: bool,
}

impl PinLock {
    /// Blocks until no exclusive holder (a load, a GC) is left.
    pub fn shared(layout: &PinLayout) -> Result<Self, Error> {
        Self::take(layout, File::lock_shared, false)
    }

    /// Blocks until no other holder is left.
    pub fn exclusive(layout: &PinLayout) -> Result<Self, Error> {
        Self::take(layout, File::lock, true)
    }

    /// The pin path it locks.
    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    /// Whether no one else holds it.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// Like [`shared`](Self::shared), but `None` where nothing is pinned
    /// yet, without making the directories: for DEL, which must not leave
    /// pins behind on a node that had none, and which then has no policy
    /// edit to wait for.
    pub fn shared_if_pinned(layout: &PinLayout) -> Result<Option<Self>, Error> {
        if !layout.dir().exists() {
            return Ok(None);
        }
        Self::shared(layout).map(Some)
    }

    /// Creates the directories (root's alone, on bpffs) if needed, then locks.
    fn take(
        layout: &PinLayout,
        lock: fn(&File) -> std::io::Result<()>,
        exclusive: bool,
    ) -> Result<Self, Error> {
        pin_dir::check_bpffs(layout.pin_path())?;
        pin_dir::ensure(layout)?;
        Self::on_checked(layout, lock, exclusive)
    }

    /// Locks the directory, which the caller has checked (a
    /// `PinnedMaps` made on it).
    pub(crate) fn on_checked(
        layout: &PinLayout,
        lock: fn(&File) -> std::io::Result<()>,
        exclusive: bool,
    ) -> Result<Self, Error> {
        let dir = layout.dir();
        let file = File::open(&dir).map_err(|e| Error::io("open", &dir, e))?;
        lock(&file).map_err(|e| Error::io("flock", &dir, e))?;
        Ok(Self {
            _file: file,
            layout: layout.clone(),
            exclusive,
        })
    }
}
