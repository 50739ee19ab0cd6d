//! The on-disk [`LeaseStore`], laid out like host-local's so its tooling understands
//! ours: `<dataDir>/<network>/` holds one file per leased IP, named by the IP and
//! containing `"<containerID>\r\n<ifname>"`, plus `last_reserved_ip.<set>` and `lock`.
//!
//! Every write goes to a temp file that is renamed (or linked) into place, so another
//! process never sees a half-written file. Durability comes once per verb, before it
//! answers ([`LeaseStore::sync`], or for ADD [`DiskStore::sync_in_background`]): an
//! fsync of each new lease file, then one of the directory, after all the verb's links,
//! renames and unlinks (two fsyncs for an ADD of one address, one for a DEL). ADD runs
//! them on a thread of their own, after it let go of the lock, while it wires the pod.
//! A power loss before a verb answered can therefore leave an empty lease file: it
//! keeps its address from being handed out (held by no attachment) until GC removes it,
//! and the runtime, which got no answer, does not count on it. `last_reserved_ip` is
//! only where the next scan starts: its content is never fsynced, and if a crash loses
//! or empties it (it is then ignored with a warning), the scan starts over, still never
//! handing out a leased address.
//!
//! Entries that are not what their name promises never fail a verb (see [`scan`]):
//! an IP-named regular file whose content is no lease is held by no attachment (only
//! GC frees it); an IP-named entry that cannot be read as a file blocks its address
//! and is never removed; other names are ignored. Each is reported on stderr.

use std::{
    fmt::Display,
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
    scan::{self, Content, Entry, Name, LAST_RESERVED_PREFIX, LOCK_FILE, TEMP_PREFIX},
    store::{Holder, Lease, LeaseStore, Owner},
};
use crate::ipam::{IpamError, Syncing};

/// Far above any lease (a container ID and an ifname) or `last_reserved_ip`: a larger
/// file is none of ours, and reading it whole would only cost memory.
const MAX_FILE_LEN: u64 = 4096;

/// Makes temp names unique among the stores one process opens at once (threads).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The leases of one network, locked against every other store for as long as it lives.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    /// Kept open to fsync the directory after renames and unlinks.
    dir_handle: File,
    /// Lease files linked but not fsynced yet.
    unsynced: Vec<(PathBuf, File)>,
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
            unsynced: Vec::new(),
            _lock: lock,
        };
        store.sweep_temp_files()?;
        Ok(store)
    }

    /// Temp files only survive a crash mid-write; holding the lock, nobody else is
    /// writing one now. One that cannot be removed is no reason to fail the verb.
    fn sweep_temp_files(&self) -> Result<(), IpamError> {
        for entry in self.entries()? {
            if scan::classify(&entry.name) == Name::Temp && !entry.file_type.is_dir() {
                remove_temp(&self.dir.join(&entry.name));
            }
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Entry>, IpamError> {
        scan::entries(&self.dir).map_err(IpamError::io("read directory", &self.dir))
    }

    /// Creates `name` with `content` unless something of that name exists
    /// (`Ok(false)`): link(2) fails on an existing target, unlike rename. The file is
    /// fsynced later, with the directory.
    fn create_file(&mut self, name: &str, content: &[u8]) -> Result<bool, IpamError> {
        let (temp, file) = self.write_temp(content)?;
        let target = self.dir.join(name);
        match fs::hard_link(&temp.0, &target) {
            Ok(()) => {
                self.unsynced.push((target, file));
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(IpamError::io("link into", &target)(e)),
        }
    }

    /// Atomically replaces `name`, a hint only: its content is never fsynced.
    fn replace_file(&self, name: &str, content: &[u8]) -> Result<(), IpamError> {
        let (temp, _) = self.write_temp(content)?;
        let target = self.dir.join(name);
        fs::rename(&temp.0, &target).map_err(IpamError::io("rename into", &target))
    }

    fn write_temp(&self, content: &[u8]) -> Result<(TempFile, File), IpamError> {
        let serial = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{TEMP_PREFIX}{}-{serial}", process::id()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(IpamError::io("create", &path))?;
        let temp = TempFile(path);
        file.write_all(content)
            .map_err(IpamError::io("write", &temp.0))?;
        Ok((temp, file))
    }

    /// The lease in the entry named `ip`, `None` if it vanished since it was listed.
    /// An entry that is not a regular file blocks its address; a regular file that
    /// cannot be read now is an error, not a blocked address: the verb fails and is
    /// retried, rather than DEL succeeding with the lease left in place.
    fn read_lease(&self, ip: IpAddr, entry: &Entry) -> Result<Option<Lease>, IpamError> {
        let path = self.dir.join(&entry.name);
        let unknown = |problem: &dyn Display| {
            tracing::warn!(
                file = %path.display(),
                %problem,
                "not a readable lease file: the address stays in use while it exists"
            );
            Ok(Some(Lease {
                ip,
                holder: Holder::Unknown,
            }))
        };
        if !entry.file_type.is_file() {
            return unknown(&scan::describe(entry.file_type));
        }
        let lease = match scan::read_regular(&path, MAX_FILE_LEN) {
            Ok(Content::Bytes(bytes)) => Lease::decode(ip, &bytes),
            Ok(Content::TooLarge) => Lease {
                ip,
                holder: Holder::Garbage,
            },
            Ok(Content::Missing) => return Ok(None),
            Ok(Content::NotAFile(kind)) => return unknown(&kind),
            Err(e) => return Err(IpamError::io("read lease", &path)(e)),
        };
        if lease.holder == Holder::Garbage {
            tracing::warn!(
                file = %path.display(),
                "content is not a lease (empty, not UTF-8 or too long): the address is \
                 held by no attachment until GC removes the file"
            );
        }
        Ok(Some(lease))
    }
}

impl LeaseStore for DiskStore {
    fn leases(&self) -> Result<Vec<Lease>, IpamError> {
        let mut leases = Vec::new();
        for entry in self.entries()? {
            match scan::classify(&entry.name) {
                Name::Lease(ip) => leases.extend(self.read_lease(ip, &entry)?),
                Name::Foreign => tracing::warn!(
                    file = %self.dir.join(&entry.name).display(),
                    kind = scan::describe(entry.file_type),
                    "not a lease file name: ignored"
                ),
                Name::Bookkeeping | Name::Temp => {}
            }
        }
        Ok(leases)
    }

    fn reserve(&mut self, ip: IpAddr, owner: Owner, range_set: usize) -> Result<bool, IpamError> {
        let name = ip.to_string();
        if !self.create_file(&name, Lease::encode(owner).as_bytes())? {
            return Ok(false);
        }
        // The lease exists from here on. Whatever fails now fails the ADD, and no one
        // would release an address whose ADD failed: take it back first.
        let last = format!("{LAST_RESERVED_PREFIX}{range_set}");
        if let Err(err) = self.replace_file(&last, name.as_bytes()) {
            if let Err(undo) = self.release(ip) {
                tracing::warn!(%ip, %undo, "taking back the lease of a failed reservation failed");
            }
            return Err(err);
        }
        Ok(true)
    }

    fn release(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(IpamError::io("remove", path)(e)),
        }
    }

    fn sync(&mut self) -> Result<(), IpamError> {
        sync_all(
            std::mem::take(&mut self.unsynced),
            &self.dir_handle,
            &self.dir,
        )
    }

    fn last_reserved(&self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        // Like host-local, anything unreadable only costs round-robin for one
        // allocation, and the next reservation replaces the file.
        let problem = match scan::read_regular(&path, MAX_FILE_LEN) {
            Ok(Content::Missing) => return Ok(None),
            Ok(Content::Bytes(bytes)) => {
                let ip = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                if ip.is_some() {
                    return Ok(ip);
                }
                "content is not an address".to_string()
            }
            Ok(Content::TooLarge) => "too long".to_string(),
            Ok(Content::NotAFile(kind)) => kind.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(file = %path.display(), %problem, "ignored: allocation starts over");
        Ok(None)
    }
}

/// A temp file of ours, removed when dropped: after it was linked or renamed into
/// place (it is gone then), or when writing failed. A removal that fails leaves a file
/// the next store's sweep removes, so it is reported rather than failing the verb.
impl DiskStore {
    /// Makes every change so far durable, like [`LeaseStore::sync`], on a thread of
    /// its own: the lock is released now (what the store changed is visible to the next
    /// holder at once), and the caller waits for durability only before it answers.
    pub fn sync_in_background(mut self) -> Result<Syncing, IpamError> {
        let files = std::mem::take(&mut self.unsynced);
        let dir = self.dir.clone();
        let handle = self
            .dir_handle
            .try_clone()
            .map_err(IpamError::io("open directory", &dir))?;
        drop(self);
        let on_error = IpamError::io("start a thread to fsync", dir.clone());
        let thread = std::thread::Builder::new()
            .name("ipam-fsync".into())
            .spawn(move || sync_all(files, &handle, &dir))
            .map_err(on_error)?;
        Ok(Syncing::new(thread))
    }
}

/// fsyncs `files`, then the directory `handle` (at `dir`) that they are linked in.
fn sync_all(files: Vec<(PathBuf, File)>, handle: &File, dir: &Path) -> Result<(), IpamError> {
    for (path, file) in files {
        file.sync_all().map_err(IpamError::io("fsync", &path))?;
    }
    handle
        .sync_all()
        .map_err(IpamError::io("fsync directory", dir))
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        remove_temp(&self.0);
    }
}

fn remove_temp(path: &Path) {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            tracing::warn!(file = %path.display(), %e, "removing a temp file failed");
        }
        _ => {}
    }
}
