//! The image runs: the archive `scripts/image.sh` builds is imported into a
//! test node's containerd (as `kind load` imports it) and run as the
//! DaemonSet's pod, over CRI as the kubelet runs it (`podmeter_tests::
//! daemonset` reads the manifest): a host-network sandbox, the privileged
//! `agent` with bpffs mounted Bidirectional and the node's CNI dirs, the
//! unprivileged `exporter` (uid 0, every capability dropped, read-only
//! rootfs and bpffs). The agent, reaching a fake API server on the node's
//! loopback, installs the image's plugin and writes the conflist for its
//! Node; containerd then wires three pods with that plugin, and the image's
//! exporter serves them.
//!
//! What the test changes from the manifest, and why: the pin path and IPAM
//! dir (the test node's own, so nothing touches the machine's
//! /sys/fs/bpf/podmeter), the API server (a kubeconfig instead of the
//! service account), and plain HTTP for the exporter (no Secret, so no
//! `--web.config.file`). Host paths are the test containerd's.

use std::{
    fs,
    net::TcpStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_cri::v1::{ContainerState, KeyValue, Mount, PodSandboxConfig};
use podmeter_tests::{
    agent::EVENTUALLY,
    agent_conflist::{pod_cidrs, NETWORK_NAME},
    containerd::{pod_leftovers, Containerd, Sandbox},
    cri::PodMeta,
    daemonset::{image_archive, set_flag, DaemonSet, Probe},
    exporter::{assert_scrape_matches_kernel_of, pod_series_in, sample},
    fake_apiserver::{node as node_object, FakeApiServer},
    http,
    image::is_static,
    sim_cluster::bind_in,
    Node,
};
use serde_json::Value;

const NODE: &str = "pmtest-node";
/// Where the agent container finds the kubeconfig (mounted read-only).
const KUBECONFIG_DIR: &str = "/etc/podmeter/kube";

/// The DaemonSet's pod on the test node, and its containers by name.
struct DaemonSetPod<'a> {
    containerd: &'a Containerd<'a>,
    sandbox: Sandbox,
    config: PodSandboxConfig,
    log_dir: PathBuf,
    containers: Vec<(String, String)>,
}

impl DaemonSetPod<'_> {
    fn id(&self, name: &str) -> &str {
        let (_, id) = self.containers.iter().find(|(n, _)| n == name).unwrap();
        id
    }

    /// Each container's log (CRI format), for failure messages.
    fn logs(&self) -> String {
        self.containers
            .iter()
            .map(|(name, _)| {
                let log = fs::read_to_string(self.log_dir.join(name).join("0.log"));
                format!("--- {name}:\n{}", log.unwrap_or_default())
            })
            .collect()
    }

    /// Polls `f` until `Some`; panics after [`EVENTUALLY`], or as soon as a
    /// container is no longer running, with the containers' logs.
    fn eventually<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            for (name, id) in &self.containers {
                let (status, _) = self.containerd.cri().container_status(id).unwrap();
                assert_eq!(
                    status.state,
                    ContainerState::ContainerRunning as i32,
                    "{name} is not running ({status:?}) waiting for {what}:\n{}",
                    self.logs()
                );
            }
            assert!(
                start.elapsed() < EVENTUALLY,
                "no {what} after {EVENTUALLY:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A kubelet probe from the node's network: the port accepts, and an HTTP
/// probe gets 200.
fn probe_passes(node: &Node, probe: &Probe) -> bool {
    let addr = probe.addr;
    node.ns.run_in(|| {
        if TcpStream::connect(addr).is_err() {
            return false;
        }
        match &probe.http_path {
            Some(path) => http::get(addr, path, None).status == 200,
            None => true,
        }
    })
}

#[test]
fn the_image_runs_as_the_daemonset_and_its_plugin_and_exporter_serve_three_pods() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    // On the node's loopback: the agent shares the node's network.
    let ns_path = node.ns.path();
    let api = FakeApiServer::start_with(
        ([127, 0, 0, 1], 0).into(),
        Box::new(move |addr| bind_in(&ns_path, addr)),
    );
    let fixture = node_object(NODE, &["10.244.1.0/24", "fd00:10:244:1::/64"], "172.18.0.2");
    api.apply(fixture.clone());
    let kube = tempfile::Builder::new()
        .prefix("pmtest-kubeconfig")
        .tempdir()
        .unwrap();
    api.kubeconfig_with_ca(kube.path());

    let containerd = Containerd::start_for_agent(&node);
    containerd.import_image(&image_archive());
    let ds = DaemonSet::load();

    // The pod, as the kubelet makes it from the manifest.
    let meta = ds.pod("pmt01");
    let log_dir = containerd.pod_log_dir(&meta);
    let config = ds.sandbox_config(&meta, &containerd.pod_cgroup(&meta), &log_dir);
    let bpffs = Path::new("/sys/fs/bpf");
    containerd.make_shared(bpffs);
    let sandbox = containerd.run_sandbox(&meta, config.clone()).unwrap();
    let mut pod = DaemonSetPod {
        containerd: &containerd,
        sandbox,
        config,
        log_dir,
        containers: Vec::new(),
    };
    let (bin_dir, conf_dir) = (containerd.cni_bin_dir(), containerd.cni_conf_dir());
    let volumes = [
        ("bpffs", bpffs),
        ("cni-bin", bin_dir.as_path()),
        ("cni-conf", conf_dir.as_path()),
    ];
    let pin_path = node.pin_path.display().to_string();
    for name in ds.containers() {
        let mut config = ds.container_config(&name, NODE, &volumes, &["web-config", "ipam-data"]);
        set_flag(&mut config, "--bpf.pin-path", Some(&pin_path));
        match name.as_str() {
            "agent" => {
                // The node's IPAM dir at the same path inside, as on a
                // node (the conflist names it for the plugin outside).
                let data_dir = node.data_dir.path().display().to_string();
                set_flag(&mut config, "--ipam.data-dir", Some(&data_dir));
                config.mounts.push(Mount {
                    container_path: data_dir.clone(),
                    host_path: data_dir,
                    ..Default::default()
                });
                config.envs.push(KeyValue {
                    key: "KUBECONFIG".into(),
                    value: format!("{KUBECONFIG_DIR}/kubeconfig"),
                });
                config.mounts.push(Mount {
                    container_path: KUBECONFIG_DIR.into(),
                    host_path: kube.path().display().to_string(),
                    readonly: true,
                    ..Default::default()
                });
            }
            "exporter" => set_flag(&mut config, "--web.config.file", None),
            other => panic!("a container {other} in the DaemonSet: run it here too"),
        }
        let cri = containerd.cri();
        let id = cri
            .create_container(&pod.sandbox.id, config, &pod.config)
            .unwrap_or_else(|e| panic!("creating {name}: {e:?}"));
        pod.containers.push((name.clone(), id.clone()));
        cri.start_container(&id)
            .unwrap_or_else(|e| panic!("starting {name}: {e:?}\n{}", pod.logs()));
    }

    // Ready as the kubelet's probes see it: the agent once it wrote the
    // conflist, the exporter once it listens.
    for name in ds.containers() {
        let probe = ds.readiness_probe(&name);
        pod.eventually(&format!("{name} ready ({probe:?})"), || {
            probe_passes(&node, &probe).then_some(())
        });
    }
    containerd.wait_network_ready();

    // The agent installed the image's plugin (static, the same bytes as
    // /opt/podmeter/bin/podmeter in its container) and rendered the Node.
    let (_, agent_pid) = containerd.cri().container_status(pod.id("agent")).unwrap();
    let shipped = fs::read(format!("/proc/{agent_pid}/root/opt/podmeter/bin/podmeter")).unwrap();
    let installed = bin_dir.join("podmeter");
    assert_eq!(fs::read(&installed).unwrap(), shipped, "installed plugin");
    assert!(is_static(&installed));
    let conflist: Value =
        serde_json::from_str(&fs::read_to_string(conf_dir.join("10-podmeter.conflist")).unwrap())
            .unwrap();
    let plugin = &conflist["plugins"][0];
    assert_eq!(plugin["pinPath"], pin_path.as_str(), "{conflist}");
    let ranges: Vec<String> = pod_cidrs(&fixture).iter().map(|r| r.to_string()).collect();
    let conf_ranges: Vec<&str> = plugin["ipam"]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|set| set[0]["subnet"].as_str().unwrap())
        .collect();
    assert_eq!(conf_ranges, ranges, "{conflist}");

    // Three pods, wired by containerd with that plugin, talking.
    let pods: Vec<Sandbox> = ["frontend", "backend", "db"]
        .iter()
        .map(|n| {
            containerd
                .run_pod(&PodMeta::with_uid_from_name("shop", n))
                .unwrap_or_else(|e| panic!("pod {n}: {e:?}\n{}", pod.logs()))
        })
        .collect();
    let ips: Vec<Vec<String>> = pods.iter().map(|p| containerd.ips(p)).collect();
    pods[0].ping(&ips[1][0], 5, 800);
    pods[0].ping(&ips[2][1], 5, 800);
    pods[1].ping(&ips[2][0], 3, 100);

    // The image's exporter, scraped from the node's network.
    let metrics_addr = ds.readiness_probe("exporter").addr;
    let scrape = || {
        let r = node.ns.run_in(|| http::get(metrics_addr, "/metrics", None));
        assert_eq!(r.status, 200, "{}\n{}", r.body, pod.logs());
        r.body
    };
    assert_eq!(sample(&scrape(), "podmeter_pods"), Some(3.0));
    for (sandbox, ips) in pods.iter().zip(&ips) {
        let name = &sandbox.meta.name;
        let (_, id) = node
            .maps()
            .find(NETWORK_NAME, &sandbox.id, "eth0")
            .unwrap()
            .unwrap_or_else(|| panic!("{name} is not registered under {pin_path}"));
        let metrics = assert_scrape_matches_kernel_of(&node, &id.host_ifname, "shop", name, scrape);
        let info = format!(
            r#"podmeter_pod_info{{namespace="shop",pod="{name}",interface="eth0",uid="{}",container_id="{}",host_interface="{}",ips="{}/24,{}/64"}}"#,
            sandbox.meta.uid, sandbox.id, id.host_ifname, ips[0], ips[1]
        );
        assert_eq!(sample(&metrics, &info), Some(1.0), "{info} in\n{metrics}");
    }
    // frontend sent 10 pings of 800 bytes of payload.
    let sent = sample(
        &scrape(),
        &pod_series_in("transmit_bytes", "shop", "frontend"),
    );
    assert!(sent.unwrap() > 10.0 * 800.0, "{sent:?}");

    // Pods go, then the DaemonSet's pod as the kubelet stops it: SIGTERM
    // within the grace period, and both containers exit cleanly.
    for sandbox in &pods {
        containerd.remove_pod(sandbox);
    }
    assert_eq!(sample(&scrape(), "podmeter_pods"), Some(0.0));
    let cri = containerd.cri();
    for (name, id) in &pod.containers {
        cri.stop_container(id, 30).unwrap();
        let (status, _) = cri.container_status(id).unwrap();
        assert_eq!(
            (status.state, status.exit_code),
            (ContainerState::ContainerExited as i32, 0),
            "{name}: {status:?}\n{}",
            pod.logs()
        );
        cri.remove_container(id).unwrap();
    }
    containerd.remove_pod(&pod.sandbox);
    // The conflist stays for the next agent (no --cni.uninstall in the
    // manifest); nothing else of the pods or the DaemonSet's pod is left.
    assert!(conf_dir.join("10-podmeter.conflist").exists());
    let left = pod_leftovers(&node);
    assert!(left.is_clean(), "left: {left}");
}
