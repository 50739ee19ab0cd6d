//! The on-disk [`LeaseStore`], laid out like host-local's so its tooling understands
//! ours: `<dataDir>/<network>/` holds one file per leased IP, named by the IP and
//! containing `"<containerID>\r\n<ifname>"`, plus `last_reserved_ip.<set>` and `lock`.
//!
//! Every write goes to a temp file that is fsynced and then renamed (or linked) into
//! place, followed by an fsync of the directory, so a crash leaves either the old file
//! or the complete new one, never an empty lease.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::{ErrorKind, Write},
    net::IpAddr,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    process,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use super::{
    lock::DirLock,
    store::{Lease, LeaseStore, Owner},
};
use crate::ipam::IpamError;

pub const LOCK_FILE: &str = "lock";
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Starts with a dot so no tool mistakes a temp file for a lease.
const TEMP_PREFIX: &str = ".tmp-";

/// Makes temp names unique among the stores one process opens at once (threads).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The leases of one network, locked against every other store for as long as it lives.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    /// Kept open to fsync the directory after renames and unlinks.
    dir_handle: File,
    _lock: DirLock,
}

impl DiskStore {
    /// Opens the network directory `dir`, creating it, and takes its lock.
    pub fn open(dir: &Path, lock_timeout: Duration) -> Result<Self, IpamError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(IpamError::io("create directory", dir))?;
        Self::lock(dir, lock_timeout)
    }

    /// Like [`open`](Self::open), but `None` when the directory does not exist: DEL,
    /// CHECK and GC have nothing to do then and must not create state.
    pub fn open_existing(dir: &Path, lock_timeout: Duration) -> Result<Option<Self>, IpamError> {
        match fs::metadata(dir) {
            Ok(_) => Self::lock(dir, lock_timeout).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IpamError::io("stat", dir)(e)),
        }
    }

    fn lock(dir: &Path, lock_timeout: Duration) -> Result<Self, IpamError> {
        let lock = DirLock::acquire(&dir.join(LOCK_FILE), lock_timeout)?;
        let dir_handle = File::open(dir).map_err(IpamError::io("open directory", dir))?;
        let store = Self {
            dir: dir.to_path_buf(),
            dir_handle,
            _lock: lock,
        };
        store.sweep_temp_files()?;
        Ok(store)
    }

    /// Temp files only survive a crash mid-write; holding the lock, nobody else is
    /// writing one now.
    fn sweep_temp_files(&self) -> Result<(), IpamError> {
        for name in self.file_names()? {
            if name.starts_with(TEMP_PREFIX) {
                remove_if_present(&self.dir.join(&name))?;
            }
        }
        Ok(())
    }

    /// Names of the directory's non-directory entries; host-local skips directories too.
    fn file_names(&self) -> Result<Vec<String>, IpamError> {
        let entries =
            fs::read_dir(&self.dir).map_err(IpamError::io("read directory", &self.dir))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(IpamError::io("read directory", &self.dir))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Atomically writes `name`. With `replace == false` the file is only created if
    /// absent (`Ok(false)` otherwise): link(2) fails on an existing target, unlike rename.
    fn write_file(&self, name: &str, content: &[u8], replace: bool) -> Result<bool, IpamError> {
        let serial = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .dir
            .join(format!("{TEMP_PREFIX}{}-{serial}", process::id()));
        let target = self.dir.join(name);
        let written = self.write_temp(&temp, content).and_then(|()| {
            if replace {
                fs::rename(&temp, &target).map_err(IpamError::io("rename into", &target))?;
                return Ok(true);
            }
            let created = match fs::hard_link(&temp, &target) {
                Ok(()) => true,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
                Err(e) => return Err(IpamError::io("link into", &target)(e)),
            };
            remove_if_present(&temp)?;
            Ok(created)
        });
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        let created = written?;
        self.sync_dir()?;
        Ok(created)
    }

    fn write_temp(&self, temp: &Path, content: &[u8]) -> Result<(), IpamError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(temp)
            .map_err(IpamError::io("create", temp))?;
        file.write_all(content)
            .map_err(IpamError::io("write", temp))?;
        file.sync_all().map_err(IpamError::io("fsync", temp))
    }

    fn sync_dir(&self) -> Result<(), IpamError> {
        self.dir_handle
            .sync_all()
            .map_err(IpamError::io("fsync directory", &self.dir))
    }
}

impl LeaseStore for DiskStore {
    fn leases(&self) -> Result<Vec<Lease>, IpamError> {
        let mut leases = Vec::new();
        for name in self.file_names()? {
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            let path = self.dir.join(&name);
            match fs::read_to_string(&path) {
                Ok(content) => leases.push(Lease::decode(ip, &content)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(IpamError::io("read lease", path)(e)),
            }
        }
        Ok(leases)
    }

    fn reserve(&mut self, ip: IpAddr, owner: Owner, range_set: usize) -> Result<bool, IpamError> {
        let content = Lease::encode(owner);
        if !self.write_file(&ip.to_string(), content.as_bytes(), false)? {
            return Ok(false);
        }
        let last = format!("{LAST_RESERVED_PREFIX}{range_set}");
        self.write_file(&last, ip.to_string().as_bytes(), true)?;
        Ok(true)
    }

    fn release(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        if remove_if_present(&self.dir.join(ip.to_string()))? {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        match fs::read_to_string(&path) {
            // Garbage only costs round-robin for one allocation, as in host-local.
            Ok(content) => Ok(content.trim().parse().ok()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IpamError::io("read", path)(e)),
        }
    }
}

/// Removes `path`; `Ok(false)` if it was already gone.
fn remove_if_present(path: &Path) -> Result<bool, IpamError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(IpamError::io("remove", path)(e)),
    }
}
