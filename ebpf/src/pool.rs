//! A warm pool of veth pairs with the counting programs already attached,
//! so that a pod's ADD pays no TCX attach: each `BPF_LINK_CREATE` for TCX
//! waits for an RCU grace period under RTNL (~15 ms each, and parallel ADDs
//! queue behind each other's).
//!
//! An entry is a veth pair in the node's namespace, both ends down, the host
//! end named `pmp<hex>` and its peer `pmq<hex>`, with one TCX link per hook
//! on the host end pinned at `pool/<ifindex>_<hook>`. The node agent fills
//! the pool ([`fill`]); ADD claims an entry ([`claim`]) by renaming its pins
//! into `links/`, where every pod's link pins are: a rename has one winner.
//! bpffs goes with a reboot, and so does the pool; an entry is trusted only
//! if its pins are live links of the current programs on its ifindex.
//!
//! The filler is the only writer of `pool/`: it publishes an entry's pins
//! under staging names first and renames them in, the claim key (the first
//! hook) last, so a claimer that wins the key finds the other hooks there.

use std::{
    collections::HashMap,
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use aya::programs::ProgramInfo;
use futures::TryStreamExt;
use rtnetlink::{packet_route::link::LinkAttribute, LinkVeth};

use crate::{
    link_info::{tcx_link, TcxLink},
    loader::{self, Programs},
    lock::PinLock,
    object::{ProgramSpec, PROGRAMS},
    pin_dir::remove_if_exists,
    pins::PinLayout,
    Error,
};

/// The host end's name prefix: never a pod's host veth name (`pm` + hex).
pub const HOST_PREFIX: &str = "pmp";
const PEER_PREFIX: &str = "pmq";
/// Staging pins of an entry the filler is making.
const STAGING_PREFIX: &str = "new_";

/// Whether `name` is the host end of a pool entry.
pub fn is_pool_name(name: &str) -> bool {
    name.len() == HOST_PREFIX.len() + 12
        && name.starts_with(HOST_PREFIX)
        && name[HOST_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
}

/// The hook whose pin is the claim key: [`claim`] takes it first, the
/// filler publishes it last.
fn key_hook() -> &'static str {
    PROGRAMS[0].hook
}

/// Takes one entry of the pool: returns its host ifindex once its link pins
/// are at `links/<ifindex>_<hook>` and checked to be live links of the
/// current programs on that ifindex; `Ok(None)` if the pool is empty (or
/// absent, or only held stale entries). A stale entry met on the way is
/// detached (its veth is the filler's to delete). The caller still checks
/// the interface itself (a pool name, a veth, down) and on failure detaches
/// with [`crate::attach::detach`] and claims again.
pub fn claim(layout: &PinLayout) -> Result<Option<u32>, Error> {
    let Some(candidates) = entries(layout)? else {
        return Ok(None);
    };
    let mut expected = None;
    for ifindex in candidates {
        if !take(layout, ifindex)? {
            continue;
        }
        let ids = match &expected {
            Some(ids) => ids,
            None => expected.insert(program_ids(layout)?),
        };
        if live(ifindex, ids, |spec| layout.link(ifindex, spec.hook)) {
            return Ok(Some(ifindex));
        }
        tracing::warn!(ifindex, "veth pool: discarding a stale entry");
        crate::attach::detach(layout, ifindex)?;
    }
    Ok(None)
}

/// How many entries the pool holds, live or not (a cheap count: one
/// directory read).
pub fn len(layout: &PinLayout) -> usize {
    entries(layout).ok().flatten().map_or(0, |e| e.len())
}

/// Host ifindexes of the entries in `pool/` (by their key pin), in no
/// particular order; `None` without a pool directory.
fn entries(layout: &PinLayout) -> Result<Option<Vec<u32>>, Error> {
    let dir = layout.pool_dir();
    let read = match fs::read_dir(&dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &dir, e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
        let name = entry.file_name();
        let parsed = name
            .to_str()
            .and_then(|n| n.split_once('_'))
            .filter(|(_, hook)| *hook == key_hook())
            .and_then(|(i, _)| i.parse::<u32>().ok());
        out.extend(parsed);
    }
    Ok(Some(out))
}

/// Moves the entry's pins into `links/`, key first. `false` if another
/// claimer won it, or `links/` already has a pin for that ifindex (a pod's:
/// never replaced; the entry is then left for the filler's sweep).
fn take(layout: &PinLayout, ifindex: u32) -> Result<bool, Error> {
    let mut moved: Vec<&ProgramSpec> = Vec::new();
    for spec in &PROGRAMS {
        let (from, to) = (
            layout.pool_link(ifindex, spec.hook),
            layout.link(ifindex, spec.hook),
        );
        match rename_noreplace(&from, &to) {
            Ok(()) => moved.push(spec),
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EEXIST))
                    && moved.is_empty() =>
            {
                return Ok(false)
            }
            Err(e) => {
                // Give back what was taken; an entry that cannot be whole is
                // the sweep's to remove.
                for spec in moved {
                    let back = (
                        layout.link(ifindex, spec.hook),
                        layout.pool_link(ifindex, spec.hook),
                    );
                    let _ = rename_noreplace(&back.0, &back.1);
                }
                tracing::warn!(ifindex, error = %e, "veth pool: an entry is incomplete");
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// rename(2) that never replaces `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (
        CString::new(from.as_os_str().as_bytes())?,
        CString::new(to.as_os_str().as_bytes())?,
    );
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pinned programs' ids, by hook.
fn program_ids(layout: &PinLayout) -> Result<HashMap<&'static str, u32>, Error> {
    PROGRAMS
        .iter()
        .map(|spec| {
            let info = ProgramInfo::from_pin(layout.program(spec.name)).map_err(|source| {
                Error::Program {
                    name: spec.name,
                    source,
                }
            })?;
            Ok((spec.hook, info.id()))
        })
        .collect()
}

/// Whether every hook's pin (at `pin(spec)`) is a live TCX link of the
/// current program on `ifindex`: not defunct (its veth deleted), not on
/// another interface (the ifindex reused), not an older program.
fn live(
    ifindex: u32,
    ids: &HashMap<&'static str, u32>,
    pin: impl Fn(&ProgramSpec) -> PathBuf,
) -> bool {
    PROGRAMS.iter().all(|spec| {
        tcx_link(&pin(spec)).ok().flatten()
            == Some(TcxLink {
                program_id: ids[spec.hook],
                ifindex,
            })
    })
}

/// What one [`fill`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    /// Entries in the pool afterwards.
    pub entries: usize,
    pub created: usize,
    /// Stale pins and orphan veths removed.
    pub removed: usize,
}

/// Removes stale entries and orphan pool veths, then tops the pool up to
/// `size` entries; loads the programs first if this pin path has none. Runs
/// in the calling thread's network namespace, the node's.
pub fn fill(layout: &PinLayout, size: usize) -> Result<Filled, Error> {
    let mut programs = loader::ensure_loaded(layout)?;
    let (live_entries, removed) = sweep(layout)?;
    let mut filled = Filled {
        entries: live_entries,
        removed,
        created: 0,
    };
    while filled.entries < size {
        create(layout, &mut programs)?;
        filled.entries += 1;
        filled.created += 1;
    }
    Ok(filled)
}

/// Removes every entry of the pool, its veths and pins (uninstalling).
pub fn drain(layout: &PinLayout) -> Result<usize, Error> {
    let _no_adds = PinLock::exclusive(layout)?;
    let mut removed = 0;
    for (index, _) in netlink::pool_veths()? {
        netlink::delete(index)?;
        removed += 1;
    }
    remove_pins(&layout.pool_dir(), |_| true)?;
    Ok(removed)
}

/// Removes what is not a live entry: pins of stale entries, staging pins,
/// and pool veths without a live entry (an ADD killed after its claim, a
/// filler killed before publishing). Returns the live entries and the count
/// removed. Under the exclusive lock, which every ADD holds shared, so no
/// claim is in flight while deciding; the veths are deleted after it (each
/// deletion waits for grace periods; no one claims a veth without pins).
fn sweep(layout: &PinLayout) -> Result<(usize, usize), Error> {
    let lock = PinLock::exclusive(layout)?;
    let ids = program_ids(layout)?;
    let mut live_entries = std::collections::HashSet::new();
    for ifindex in entries(layout)?.unwrap_or_default() {
        if live(ifindex, &ids, |spec| layout.pool_link(ifindex, spec.hook)) {
            live_entries.insert(ifindex);
        }
    }
    let stale = remove_pins(&layout.pool_dir(), |name| {
        name.starts_with(STAGING_PREFIX)
            || name
                .split_once('_')
                .and_then(|(i, _)| i.parse().ok())
                .is_none_or(|i| !live_entries.contains(&i))
    })?;
    let orphans: Vec<u32> = netlink::pool_veths()?
        .into_iter()
        .map(|(index, _)| index)
        .filter(|index| !live_entries.contains(index))
        .collect();
    for &index in &orphans {
        // A claim that died left its pins in links/, unregistered.
        crate::attach::detach(layout, index)?;
    }
    drop(lock);
    for &index in &orphans {
        netlink::delete(index)?;
    }
    if stale + orphans.len() > 0 {
        tracing::info!(
            stale_pins = stale,
            orphan_veths = orphans.len(),
            "veth pool: removed"
        );
    }
    Ok((live_entries.len(), stale + orphans.len()))
}

/// Removes the pins in `dir` whose names `pick` chooses; returns how many.
fn remove_pins(dir: &Path, pick: impl Fn(&str) -> bool) -> Result<usize, Error> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("read", dir, e)),
    };
    let mut removed = 0;
    for entry in read {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        if entry.file_name().to_str().is_some_and(&pick) && remove_if_exists(&entry.path())? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Makes one entry: the pair, down; the links pinned under staging names,
/// then published key last.
fn create(layout: &PinLayout, programs: &mut Programs) -> Result<(), Error> {
    let suffix = random_hex();
    let host = format!("{HOST_PREFIX}{suffix}");
    let ifindex = netlink::create_pair(&host, &format!("{PEER_PREFIX}{suffix}"))?;
    let staging = |hook: &str| {
        layout
            .pool_dir()
            .join(format!("{STAGING_PREFIX}{ifindex}_{hook}"))
    };
    let attached = programs.attach_pinned(&host, |spec| staging(spec.hook));
    let published = attached.and_then(|()| {
        PROGRAMS.iter().rev().try_for_each(|spec| {
            let to = layout.pool_link(ifindex, spec.hook);
            fs::rename(staging(spec.hook), &to).map_err(|e| Error::io("rename", to, e))
        })
    });
    if let Err(e) = published {
        for spec in &PROGRAMS {
            let _ = remove_if_exists(&staging(spec.hook));
        }
        let _ = netlink::delete(ifindex);
        return Err(e);
    }
    Ok(())
}

/// 12 random hex digits: a name no other entry has.
fn random_hex() -> String {
    let mut buf = [0u8; 6];
    // SAFETY: the pointer and length describe `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // Names need to differ, not be secret.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        buf.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The filler's few netlink requests, in the calling thread's namespace.
mod netlink {
    use super::*;

    fn run<T>(
        what: &'static str,
        f: impl AsyncFnOnce(rtnetlink::Handle) -> Result<T, rtnetlink::Error>,
    ) -> Result<T, Error> {
        let err = |source: io::Error| Error::Pool { what, source };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(err)?;
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(err)?;
            let conn = tokio::spawn(conn);
            let out = f(handle).await.map_err(|e| err(io::Error::other(e)));
            conn.abort();
            out
        })
    }

    /// Creates the pair, both ends down; returns the host end's ifindex.
    pub(super) fn create_pair(host: &str, peer: &str) -> Result<u32, Error> {
        run("create veth", async |h| {
            h.link()
                .add(LinkVeth::new(host, peer).build())
                .execute()
                .await
        })?;
        nix::net::if_::if_nametoindex(host).map_err(|e| Error::Pool {
            what: "look up veth",
            source: e.into(),
        })
    }

    pub(super) fn delete(index: u32) -> Result<(), Error> {
        run("delete veth", async |h| {
            match h.link().del(index).execute().await {
                Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::ENODEV => {
                    Ok(())
                }
                other => other,
            }
        })
    }

    /// (ifindex, name) of the node's links with a pool name.
    pub(super) fn pool_veths() -> Result<Vec<(u32, String)>, Error> {
        run("list links", async |h| {
            let mut links = h.link().get().execute();
            let mut out = Vec::new();
            while let Some(msg) = links.try_next().await? {
                let name = msg.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
                if let Some(name) = name.filter(|n| is_pool_name(n)) {
                    out.push((msg.header.index, name));
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_not_pod_names() {
        let name = format!("{HOST_PREFIX}{}", random_hex());
        assert_eq!(name.len(), 15);
        assert!(is_pool_name(&name));
        assert_ne!(random_hex(), random_hex());
        for other in ["pm0123456789abc", "pmq0123456789ab", "pmp0123", "pm0"] {
            assert!(!is_pool_name(other), "{other}");
        }
    }
}
