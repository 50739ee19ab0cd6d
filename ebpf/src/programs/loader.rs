//! Loading the programs once per pin path: the first ADD runs the verifier
//! and pins programs and maps; every later one reopens the pins.

use std::{fs, io};

use aya::{
    programs::{links::FdLink, BtfTracePoint, Program, ProgramError, ProgramInfo, SchedClassifier},
    Btf, Ebpf, EbpfLoader,
};

use crate::{
    abi::{
        AFTER_EGRESS_REASONS, ARRIVAL_REASONS, PACKET_SOCKET_REASONS, REASON_WORDS,
        RETRANSMIT_ERR_ARG, TC_DROP_REASONS, UNJOINED_MCAST_REASONS,
    },
    lock::PinLock,
    maps::PinnedMaps,
    pin_dir::{self, remove_if_exists},
    pins::PinLayout,
    programs::drop_reasons::{DropReasons, VMLINUX_BTF},
    programs::object::{ProgramSpec, TracerSpec, OBJECT, PROGRAMS, TRACERS},
    programs::tracepoint_args::tracepoint_args,
    Error,
};

/// The loaded tc programs, in the order of [`PROGRAMS`], and the pinned
/// maps they were loaded with, checked.
pub struct Programs {
    pub(crate) programs: Vec<(ProgramSpec, SchedClassifier)>,
    maps: PinnedMaps,
}

impl Programs {
    /// The pinned maps, checked while loading: to pass on rather than
    /// open again.
    pub fn maps(&mut self) -> &mut PinnedMaps {
        &mut self.maps
    }
}

/// Returns the programs pinned under `layout`, loading and pinning them (and
/// the maps) first if this pin path has none yet. Refuses pinned maps of
/// another layout. The pin directory is checked and each pinned map opened
/// and checked once, here: [`Programs::maps`] hands them on.
pub fn ensure_loaded(layout: &PinLayout) -> Result<Programs, Error> {
    let programs_pinned = || all_programs().all(|name| layout.program(name).exists());
    // The tracers' links are pinned last: with them and the programs there,
    // no lock is needed (taking it exclusively would wait for every ADD in
    // flight, which holds it shared).
    let tracers_attached = || {
        TRACERS
            .iter()
            .all(|t| layout.tracer_link(t.tracepoint).exists())
    };
    let maps = if tracers_attached() && programs_pinned() {
        pin_dir::check_bpffs(layout.pin_path())?;
        let maps = PinnedMaps::open_lazy(layout)?;
        maps.check_all()?;
        maps
    } else {
        // The lock checks (and makes) the directories.
        let _lock = PinLock::exclusive(layout)?;
        let mut maps = PinnedMaps::checked(layout);
        maps.check_all()?;
        if !programs_pinned() {
            load_and_pin(layout)?;
            // This handle knows the maps that were missing as missing.
            maps = PinnedMaps::checked(layout);
        }
        for tracer in &TRACERS {
            ensure_tracer_attached(layout, tracer)?;
        }
        maps
    };
    let programs = PROGRAMS
        .iter()
        .map(|spec| {
            reopen(layout, spec)
                .map(|p| (*spec, p))
                .map_err(|source| Error::Program {
                    name: spec.name,
                    source,
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(Programs { programs, maps })
}

/// Reopens a pinned tc program under the name we gave it. Not
/// `SchedClassifier::from_pin`: that asks aya's feature table whether the
/// kernel names programs, and filling the table probes the kernel with 17
/// `bpf()` calls (BTF and program loads, map creations), for nothing here:
/// the programs are loaded already.
fn reopen(layout: &PinLayout, spec: &ProgramSpec) -> Result<SchedClassifier, ProgramError> {
    let info = ProgramInfo::from_pin(layout.program(spec.name))?;
    SchedClassifier::from_program_info(info, spec.name.into())
}

/// Runs the verifier and pins programs and maps. Dropping the `Ebpf`
/// afterwards keeps them: the pins hold the kernel objects.
fn load_and_pin(layout: &PinLayout) -> Result<(), Error> {
    let reasons = DropReasons::of_running_kernel()?;
    // Not `TC_EGRESS` here: a tc program that drops may run before ours as
    // well as after, and taking back a packet never counted would make the
    // counter go down.
    let after_egress = reason_bitmap(&reasons, |name| name.starts_with("QDISC_"));
    let tc_drops = reason_bitmap(&reasons, |name| matches!(name, "TC_INGRESS" | "TC_EGRESS"));
    // What drops a frame between veth_xmit of one end and the other end's
    // receive (net/core/dev.c, enqueue_to_backlog and flush_backlog): a
    // full backlog, an end that is not running. __dev_forward_skb's own
    // drops (an end that is down, a frame over its MTU) happen while
    // skb->dev is still the sender and say only NOT_SPECIFIED.
    let arrival = reason_bitmap(&reasons, |name| matches!(name, "CPU_BACKLOG" | "DEV_READY"));
    // net/packet/af_packet.c: packet_rcv and tpacket_rcv give this one
    // reason to everything they drop after the socket's filter took it.
    let packet_socket = reason_bitmap(&reasons, |name| name == "PACKET_SOCK_ERROR");
    let unjoined = reason_bitmap(&reasons, |name| name == "NOT_SPECIFIED");
    let kernel_btf = btf_rs::Btf::from_file(VMLINUX_BTF)
        .map_err(|e| Error::Btf(format!("{VMLINUX_BTF}: {e}")))?;
    // (sk, skb, err) since 6.15 or so; (sk, skb) before.
    let retransmit_err_arg =
        u32::from(tracepoint_args(&kernel_btf, "tcp_retransmit_skb").is_some_and(|n| n >= 3));
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(layout.dir())
        .override_global(AFTER_EGRESS_REASONS, &after_egress, true)
        .override_global(TC_DROP_REASONS, &tc_drops, true)
        .override_global(ARRIVAL_REASONS, &arrival, true)
        .override_global(PACKET_SOCKET_REASONS, &packet_socket, true)
        .override_global(UNJOINED_MCAST_REASONS, &unjoined, true)
        .override_global(RETRANSMIT_ERR_ARG, &retransmit_err_arg, true)
        .load(OBJECT)?;
    for spec in PROGRAMS {
        let program: &mut SchedClassifier = typed(&mut ebpf, spec.name)?;
        program.load().map_err(program_error(spec.name))?;
        pin_loaded(&mut ebpf, layout, spec.name)?;
    }
    let btf = Btf::from_sys_fs().map_err(|e| Error::Btf(e.to_string()))?;
    for spec in &TRACERS {
        let tracer: &mut BtfTracePoint = typed(&mut ebpf, spec.name)?;
        tracer
            .load(spec.tracepoint, &btf)
            .map_err(program_error(spec.name))?;
        pin_loaded(&mut ebpf, layout, spec.name)?;
        // A link left by an earlier load runs the old program: replace it.
        remove_if_exists(&layout.tracer_link(spec.tracepoint))?;
    }
    Ok(())
}

fn program_error(name: &'static str) -> impl Fn(ProgramError) -> Error + Copy {
    move |source| Error::Program { name, source }
}

/// The object's program `name` as its type `T`.
fn typed<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProgramError::UnexpectedProgramType)
        .and_then(TryInto::try_into)
        .map_err(program_error(name))
}

/// Pins the loaded program `name`, replacing the pin of a half-finished
/// earlier load (which may have pinned some programs only).
fn pin_loaded(ebpf: &mut Ebpf, layout: &PinLayout, name: &'static str) -> Result<(), Error> {
    let path = layout.program(name);
    remove_if_exists(&path)?;
    ebpf.program_mut(name)
        .ok_or(ProgramError::UnexpectedProgramType)
        .map_err(program_error(name))?
        .pin(&path)
        .map_err(|source| Error::Pin { path, source })
}

/// A bitmap, by value, of the running kernel's drop reasons whose names
/// pass `pick` (the programs cannot know the values: they differ between
/// kernels).
fn reason_bitmap(reasons: &DropReasons, pick: impl Fn(&str) -> bool) -> [u64; REASON_WORDS] {
    let mut bitmap = [0u64; REASON_WORDS];
    for (value, name) in reasons.iter() {
        if pick(name) && (value as usize) < 64 * REASON_WORDS {
            bitmap[value as usize / 64] |= 1 << (value % 64);
        }
    }
    bitmap
}

/// The drop tracer and the TCP programs run for the whole node from pinned
/// links, attached once per pin path.
fn ensure_tracer_attached(layout: &PinLayout, spec: &TracerSpec) -> Result<(), Error> {
    let link_path = layout.tracer_link(spec.tracepoint);
    if link_path.exists() {
        return Ok(());
    }
    let err = program_error(spec.name);
    let mut tracer = BtfTracePoint::from_pin(layout.program(spec.name)).map_err(err)?;
    let id = tracer.attach().map_err(err)?;
    let link: FdLink = tracer.take_link(id).map_err(err)?.into();
    link.pin(&link_path).map_err(|source| Error::Pin {
        path: link_path,
        source,
    })?;
    Ok(())
}

/// What the kernel accounts for a program while `kernel.bpf_stats_enabled`
/// is 1 (otherwise the values stand still).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: &'static str,
    pub run_count: u64,
    pub run_time: std::time::Duration,
}

/// Run count and run time of every pinned program (tc programs, the drop
/// tracer and the TCP programs), from the pins.
pub fn program_stats(layout: &PinLayout) -> Result<Vec<ProgramStats>, Error> {
    all_programs()
        .map(|name| {
            let info = ProgramInfo::from_pin(layout.program(name))
                .map_err(|source| Error::Program { name, source })?;
            Ok(ProgramStats {
                name,
                run_count: info.run_count(),
                run_time: info.run_time(),
            })
        })
        .collect()
}

/// Every program of the object: the tc programs and the tracers.
fn all_programs() -> impl Iterator<Item = &'static str> {
    PROGRAMS
        .iter()
        .map(|p| p.name)
        .chain(TRACERS.iter().map(|t| t.name))
}

/// Removes everything pinned under this pin path (programs, maps, links):
/// what an operator does to uninstall, and what tests do to clean up.
pub fn remove_pins(layout: &PinLayout) -> Result<(), Error> {
    let root = layout.pin_path();
    match fs::remove_dir_all(root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", root, e)),
    }
}
