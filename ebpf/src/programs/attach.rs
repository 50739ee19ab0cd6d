//! Attaching the counting programs to a pod's host veth, and detaching them.
//!
//! TCX (kernel ≥ 6.6) gives a bpf link per hook, pinned so it outlives the
//! plugin process; removing the pin (or the veth) detaches it. Older kernels
//! get a clsact filter, which lives as long as the interface.

use std::{collections::HashSet, fs};

use aya::{
    programs::{
        links::FdLink,
        tc::{self, NlOptions, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    util::KernelVersion,
};

use crate::{
    pin_dir::remove_if_exists,
    pins::PinLayout,
    programs::loader::Programs,
    programs::object::{ProgramSpec, PROGRAMS},
    Error,
};

/// How programs are attached: `Auto` picks TCX where the kernel has it.
/// The plugin's `tcAttachMode` (`"auto"`, `"tcx"`, `"clsact"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    #[default]
    Auto,
    Tcx,
    /// The clsact qdisc with a direct-action filter, for kernels before 6.6.
    Clsact,
}

impl AttachMode {
    /// The mode actually used on this kernel.
    pub fn resolve(self) -> AttachMode {
        match self {
            AttachMode::Auto => {
                if tcx_available() {
                    AttachMode::Tcx
                } else {
                    AttachMode::Clsact
                }
            }
            mode => mode,
        }
    }
}

/// Whether this kernel has TCX (Linux 6.6).
pub fn tcx_available() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

impl Programs {
    /// Attaches both programs to the host veth `ifname` (index `ifindex`).
    /// The interface must be new: a link pin left for its ifindex belongs to
    /// a deleted interface and is replaced.
    pub fn attach(
        &mut self,
        layout: &PinLayout,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<(), Error> {
        let mode = mode.resolve();
        if mode == AttachMode::Clsact {
            match tc::qdisc_add_clsact(ifname) {
                Ok(()) => {}
                Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => return Err(tc_error(ifname, source)),
            }
        }
        for (spec, program) in &mut self.programs {
            match mode {
                AttachMode::Clsact => attach_clsact(spec, program, ifname)?,
                _ => attach_tcx(layout, spec, program, ifname, ifindex)?,
            }
        }
        Ok(())
    }
}

fn attach_tcx(
    layout: &PinLayout,
    spec: &ProgramSpec,
    program: &mut SchedClassifier,
    ifname: &str,
    ifindex: u32,
) -> Result<(), Error> {
    let path = layout.link(ifindex, spec.hook);
    remove_if_exists(&path)?;
    let err = |source| Error::Program {
        name: spec.name,
        source,
    };
    let id = program
        .attach_with_options(
            ifname,
            spec.attach_type,
            // First in the chain, where the veth's own counters see the
            // packet too: no program attached with the default (append)
            // order can drop or redirect a packet before podmeter counts it.
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        )
        .map_err(err)?;
    let link: FdLink = program
        .take_link(id)
        .map_err(err)?
        .try_into()
        .map_err(|source| Error::Link {
            path: path.clone(),
            source,
        })?;
    link.pin(&path)
        .map_err(|source| Error::Pin { path, source })?;
    Ok(())
}

fn attach_clsact(
    spec: &ProgramSpec,
    program: &mut SchedClassifier,
    ifname: &str,
) -> Result<(), Error> {
    // Replace rather than add, so a repeated attach never stacks filters.
    detach_clsact(spec, ifname)?;
    let id = program
        .attach_with_options(
            ifname,
            spec.attach_type,
            TcAttachOptions::Netlink(NlOptions::default()),
        )
        .map_err(|source| Error::Program {
            name: spec.name,
            source,
        })?;
    let link = program.take_link(id).map_err(|source| Error::Program {
        name: spec.name,
        source,
    })?;
    // Dropping the link would remove the filter; it must stay after we exit.
    std::mem::forget(link);
    Ok(())
}

fn detach_clsact(spec: &ProgramSpec, ifname: &str) -> Result<(), Error> {
    match tc::qdisc_detach_program(ifname, spec.attach_type, spec.name) {
        Ok(()) => Ok(()),
        Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(tc_error(ifname, source)),
    }
}

fn tc_error(ifname: &str, source: tc::TcError) -> Error {
    Error::Tc {
        ifname: ifname.to_owned(),
        source,
    }
}

/// Removes the pod interface's link pins, which detaches its TCX programs.
/// Clsact filters go with the interface, which DEL deletes first: listing
/// them to detach ours could trip over other tools' filters (the bandwidth
/// plugin's u32 filter, say). Nothing pinned is not an error.
pub fn detach(layout: &PinLayout, ifindex: u32) -> Result<(), Error> {
    for spec in &PROGRAMS {
        remove_if_exists(&layout.link(ifindex, spec.hook))?;
    }
    Ok(())
}

/// A hook of the host veth and the program podmeter attaches there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// `ingress` or `egress`.
    pub name: &'static str,
    pub program: &'static str,
    pub ingress: bool,
}

impl Hook {
    fn of(spec: &ProgramSpec) -> Hook {
        Hook {
            name: spec.hook,
            program: spec.name,
            ingress: spec.attach_type == TcAttachType::Ingress,
        }
    }
}

/// The names of the programs attached at each of podmeter's hooks of
/// `ifname` (in this thread's network namespace), in the kernel's order,
/// the way `mode` attaches: TCX programs, or the BPF filters of the clsact
/// qdisc (none without one). What CHECK and the tests compare against.
pub fn attached_programs(
    ifname: &str,
    mode: AttachMode,
) -> Result<Vec<(Hook, Vec<String>)>, Error> {
    if mode.resolve() == AttachMode::Clsact {
        return clsact::programs(ifname);
    }
    PROGRAMS
        .iter()
        .map(|spec| {
            let (_, infos) =
                SchedClassifier::query_tcx(ifname, spec.attach_type).map_err(|source| {
                    Error::Program {
                        name: spec.name,
                        source,
                    }
                })?;
            let names = infos
                .iter()
                .map(|i| i.name_as_str().unwrap_or_default().to_owned())
                .collect();
            Ok((Hook::of(spec), names))
        })
        .collect()
}

/// The clsact side of [`attached_programs`]: aya lists TCX programs only,
/// so the filters are dumped over rtnetlink.
mod clsact {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};

    use super::Hook;
    use crate::{programs::object::PROGRAMS, Error};

    pub(super) fn programs(ifname: &str) -> Result<Vec<(Hook, Vec<String>)>, Error> {
        let err = |source| Error::TcList {
            ifname: ifname.to_owned(),
            source,
        };
        let index = nix::net::if_::if_nametoindex(ifname).map_err(|e| err(e.into()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(err)?;
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(err)?;
            let conn = tokio::spawn(conn);
            let mut out = Vec::new();
            for hook in PROGRAMS.iter().map(Hook::of) {
                let names = filter_names(&handle, index, hook.ingress).await;
                out.push((hook, names.map_err(|e| err(std::io::Error::other(e)))?));
            }
            conn.abort();
            Ok(out)
        })
    }

    /// Program names of the BPF filters at the ingress or egress hook of
    /// link `index`. A link without a clsact qdisc has none.
    async fn filter_names(
        h: &rtnetlink::Handle,
        index: u32,
        ingress: bool,
    ) -> Result<Vec<String>, rtnetlink::Error> {
        let request = h.traffic_filter(index as i32).get();
        let request = if ingress {
            request.ingress()
        } else {
            request.egress()
        };
        let messages: Vec<_> = match request.execute().try_collect().await {
            Ok(messages) => messages,
            // No clsact qdisc: the kernel refuses to list its (absent) hooks.
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::EINVAL => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        Ok(messages
            .iter()
            .flat_map(|m| &m.attributes)
            .filter_map(|a| match a {
                TcAttribute::Options(options) => Some(options),
                _ => None,
            })
            .flatten()
            .filter_map(|o| match o {
                TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => Some(name.clone()),
                _ => None,
            })
            .collect())
    }
}

/// Removes link pins whose interface is registered nowhere (left by a crash
/// between attaching and rolling back): such programs count into nothing.
pub fn remove_orphan_links(layout: &PinLayout, registered: &HashSet<u32>) -> Result<(), Error> {
    let dir = layout.links_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read", &dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
        let ifindex = entry
            .file_name()
            .to_str()
            .and_then(|n| n.split_once('_'))
            .and_then(|(i, _)| i.parse::<u32>().ok());
        if ifindex.is_some_and(|i| !registered.contains(&i)) {
            remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}
