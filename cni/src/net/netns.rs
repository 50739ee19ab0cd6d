//! Running code inside another network namespace, and driving rtnetlink from sync code.
//!
//! `setns(2)` switches only the calling thread, so namespace work happens on a fresh thread
//! that is thrown away afterwards: the caller's thread (and the rest of the process) never
//! leaves its namespace, even if `f` panics halfway.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use futures::StreamExt;
use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::Handle;

use super::NetError;

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// Opens a network namespace file, refusing anything that is not one (nsfs),
/// so bad input fails before the caller has changed anything.
pub fn open_netns(path: &Path) -> Result<File, NetError> {
    let ns_err = |source: io::Error| NetError::NetNs {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(ns_err)?;
    // An empty file under /run/netns (bind mount gone) opens fine; setns would then fail with
    // a bare EINVAL. Checking the filesystem gives a clearer message first.
    let fs = fstatfs(&file).map_err(|e| ns_err(e.into()))?;
    if fs.filesystem_type() != NSFS_MAGIC {
        return Err(ns_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a namespace file (nsfs)",
        )));
    }
    // A mount or PID namespace is nsfs too; setns would take it for a
    // network namespace only to fail halfway through an ADD.
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if nstype != libc::CLONE_NEWNET {
        return Err(ns_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a network namespace",
        )));
    }

    Ok(file)
}

/// Opens a pod's network namespace: a network namespace, and not the one the plugin runs in.
/// A runtime that passes the node's own namespace (`/proc/1/ns/net`, a host process's) would
/// otherwise have ADD configure the node itself: a pod address, routes, a default route.
pub fn open_pod_netns(path: &Path) -> Result<File, NetError> {
    let file = open_netns(path)?;
    let own = Path::new("/proc/thread-self/ns/net");
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let same = id(file.metadata().map_err(|source| NetError::NetNs {
        path: path.to_owned(),
        source,
    })?) == id(std::fs::metadata(own).map_err(|source| NetError::NetNs {
        path: own.to_owned(),
        source,
    })?);
    if same {
        return Err(NetError::NetNs {
            path: path.to_owned(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "is the node's own network namespace (the one the plugin runs in), not a pod's",
            ),
        });
    }
    Ok(file)
}

/// Runs `f` on a dedicated OS thread that has joined the network namespace at `path`.
///
/// Anything opened by `f` (netlink sockets, /proc/sys/net files) belongs to that namespace.
/// A panic in `f` is resumed on the caller's thread.
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetError> {
    let file = open_netns(path)?;
    let ns_err = |source: io::Error| NetError::NetNs {
        path: path.to_owned(),
        source,
    };

    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(s, move || -> Result<T, io::Error> {
                // EINVAL here means a namespace of another type (e.g. a mount namespace).
                setns(&file, CloneFlags::CLONE_NEWNET)?;
                drop(file);
                Ok(f())
            })
            .map_err(|source| NetError::Setup {
                what: "spawn netns thread",
                source,
            })?;
        match worker.join() {
            Ok(r) => r.map_err(ns_err),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A current-thread tokio runtime: rtnetlink needs a reactor; the plugin is otherwise
/// synchronous, so a runtime lives only as long as one verb's netlink work.
fn runtime() -> Result<tokio::runtime::Runtime, NetError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| NetError::Setup {
            what: "build tokio runtime",
            source,
        })
}

/// A netlink connection and the runtime that drives it, for several batches of work in
/// the namespace the opening thread was in: one socket and one runtime for a verb's
/// node-side steps rather than one per step. Between batches nothing runs.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    /// Opens a connection in the calling thread's namespace (call it inside
    /// [`in_netns`] for pod-side work).
    pub fn open() -> Result<Self, NetError> {
        let rt = runtime()?;
        let handle = {
            let _in_runtime = rt.enter();
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|source| NetError::Setup {
                    what: "open netlink socket",
                    source,
                })?;
            // Dropped with the runtime.
            rt.spawn(conn);
            handle
        };
        Ok(Self { rt, handle })
    }

    /// Runs `f` with this connection.
    pub fn run<T, Fut>(&self, f: impl FnOnce(Handle) -> Fut) -> Result<T, NetError>
    where
        Fut: Future<Output = Result<T, NetError>>,
    {
        self.rt.block_on(f(self.handle.clone()))
    }
}

/// Opens a netlink connection in the calling thread's namespace and runs `f` with it.
///
/// The socket is bound to the namespace the thread is in *now*; call this inside
/// [`in_netns`] for pod-side work.
pub fn with_netlink<T, Fut>(f: impl FnOnce(Handle) -> Fut) -> Result<T, NetError>
where
    Fut: Future<Output = Result<T, NetError>>,
{
    Netlink::open()?.run(f)
}

/// The id the handle's namespace gives the namespace `ns` (`RTM_GETNSID`, as
/// `IFLA_LINK_NETNSID` names a peer's namespace); `None` if it gave none.
pub async fn netns_id(h: &Handle, ns: &File) -> Result<Option<i32>, NetError> {
    const WHAT: &str = "get the id of a namespace in";
    let mut msg = NsidMessage::default();
    msg.attributes
        .push(NsidAttribute::Fd(ns.as_raw_fd() as u32));
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
    request.header.flags = NLM_F_REQUEST;
    let mut answers = h
        .clone()
        .request(request)
        .map_err(NetError::netlink(WHAT, "this namespace"))?;
    while let Some(answer) = answers.next().await {
        match answer.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                return Ok(m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                    _ => None,
                }))
            }
            NetlinkPayload::Error(e) => {
                return Err(NetError::netlink(WHAT, "this namespace")(
                    rtnetlink::Error::NetlinkError(e),
                ))
            }
            _ => {}
        }
    }
    Err(NetError::NoAnswer {
        op: WHAT,
        link: "this namespace".into(),
    })
}
