//! podmeter-agent: runs on every node (DaemonSet) and prepares it for the
//! podmeter plugin: bpffs mounted, the plugin installed, and a conflist for
//! the node's pod ranges, kept in line with its Node object; and the
//! node's pods' NetworkPolicy, compiled from the API objects and written
//! to the kernel.
//!
//! The order matters: the conflist is what makes the runtime report the
//! node's network ready, so it is written only once bpffs and the plugin
//! are in place.

mod bpffs;
mod cli;
mod install;
mod metrics;
mod ready;
mod route_table;
mod routes;
mod routing;
mod watch;

use std::{path::Path, process::ExitCode, sync::Arc};

use anyhow::{ensure, Context as _};
use clap::Parser;
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
};
use tracing::{error, info, warn};

use podmeter_agent::{
    admit, conflist,
    netpol::{self, kernel_sink::KernelSink, watch::PolicyWatch},
    ranges,
};

use crate::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    podmeter_daemon::run(run(args))
}

/// What the node's kernel lacks for the plugin (logged, and reported by
/// `/readyz`): the plugin's ADD would fail with the same messages. The
/// agent does not load `br_netfilter` itself: its image has no modules,
/// and kind's nodes cannot load any.
fn kernel_missing() -> Vec<String> {
    let probe = podmeter_ebpf::programs::kernel::Probe::default();
    let missing: Vec<String> = [probe.programs(), probe.br_netfilter()]
        .into_iter()
        .filter_map(Result::err)
        .map(|e| e.to_string())
        .collect();
    for m in &missing {
        error!("the kernel cannot run podmeter's pods: {m}");
    }
    missing
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Mistakes in the DaemonSet's volumes show here, at start, rather than
    // as a conflist that is never written.
    let conf_dir = args.conflist.parent().unwrap_or(Path::new(""));
    ensure!(
        conf_dir.is_dir(),
        "the conflist's directory {} does not exist (--cni.conflist)",
        conf_dir.display()
    );
    ensure!(
        args.cni_bin_dir.is_dir(),
        "the CNI bin dir {} does not exist (--cni.bin-dir)",
        args.cni_bin_dir.display()
    );
    // Signals first: a SIGTERM during start-up ends the agent cleanly.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => info!(signal = "SIGTERM", "stopping"),
            _ = sigint.recv() => info!(signal = "SIGINT", "stopping"),
        }
    };

    match bpffs::ensure_mounted(&args.bpffs)? {
        bpffs::Outcome::Mounted => {
            info!(path = %args.bpffs.display(), "mounted bpffs (mode 0700, shared)")
        }
        bpffs::Outcome::AlreadyMounted => info!(path = %args.bpffs.display(), "bpffs is mounted"),
    }
    if bpffs::world_writable(&args.bpffs).unwrap_or(false) {
        warn!(path = %args.bpffs.display(), "bpffs is writable by every user (mode 1777?): mount it with -o mode=0700");
    }

    let plugin = args.cni_bin_dir.join("podmeter");
    match install::install_binary(&args.plugin_source, &plugin)? {
        install::Outcome::Written => info!(path = %plugin.display(), "installed the plugin"),
        install::Outcome::Unchanged => info!(path = %plugin.display(), "the plugin is up to date"),
    }

    if args.cluster_cidrs.is_empty() {
        warn!("no --cluster-cidr: any Node's pod range that is not this node's own networks or special space is routed (the Service range too); set it to the cluster's pod ranges");
    }
    let readiness = ready::Readiness::default();
    readiness.set_kernel_missing(kernel_missing());
    let metrics = Arc::new(metrics::Metrics::default());
    // Before anything else touches the node's routes: a node without
    // rtnetlink has nothing to route with, nor to check pod ranges against.
    let table = route_table::RouteTable::connect()?;
    let routing = if args.routes {
        Some(routing::Routing::new(args.node_name.clone()))
    } else {
        info!("not routing to other nodes (--routes.enabled=false)");
        readiness.set_routes(true);
        None
    };
    let listener = TcpListener::bind(args.listen_address)
        .await
        .with_context(|| format!("listening on {}", args.listen_address))?;
    let address = listener.local_addr().context("reading the bound address")?;
    info!(%address, "listening");
    let server = tokio::spawn(ready::serve(listener, readiness.clone(), metrics.clone()));

    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client config (in-cluster service account or KUBECONFIG)")?;
    let policy = async {
        if !args.network_policy {
            info!("not enforcing NetworkPolicy (--network-policy=false)");
            return std::future::pending().await;
        }
        if !args.service_cidrs.is_empty() {
            info!(service_cidrs = ?args.service_cidrs, "Service ranges (not used yet: egress through a ClusterIP is decided before DNAT)");
        }
        let watch = PolicyWatch {
            node_name: args.node_name.clone(),
            sink: KernelSink::new(&args.pin_path, &args.ipam_data_dir),
            metrics: metrics.policy.clone(),
        };
        netpol::watch::run(client.clone(), watch, std::future::pending()).await
    };
    info!(node = %args.node_name, "watching nodes");
    let reconciler = watch::Reconciler {
        node_name: args.node_name.clone(),
        conflist: args.conflist.clone(),
        cni_bin_dir: args.cni_bin_dir.clone(),
        pin_path: args.pin_path.clone(),
        ipam_data_dir: args.ipam_data_dir.clone(),
        cluster_cidrs: args.cluster_cidrs.clone(),
        readiness,
        table,
        routing,
        metrics: metrics.clone(),
    };
    let result = tokio::select! {
        r = watch::run(client.clone(), reconciler, shutdown) => r,
        r = policy => r.context("watching for NetworkPolicy"),
        r = server => Err(match r {
            Ok(Ok(())) => anyhow::anyhow!("the readiness server stopped"),
            Ok(Err(e)) => anyhow::Error::new(e).context("serving /readyz"),
            Err(e) => anyhow::Error::new(e).context("the readiness server panicked"),
        }),
    };
    if args.uninstall {
        // Uninstalling: the runtime should report the network not ready
        // rather than wire pods with a plugin nobody maintains.
        match install::remove(&args.conflist) {
            Ok(()) => {
                info!(path = %args.conflist.display(), "removed the conflist (--cni.uninstall)")
            }
            // An earlier error is the one to report; this one is logged.
            Err(e) => {
                error!(error = %e, "removing the conflist (--cni.uninstall)");
                return result.and(Err(e.into()));
            }
        }
    }
    result
}
