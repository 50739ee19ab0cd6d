//! podmeter-agent against a fake API server: it waits for the node's pod
//! ranges, writes the conflist the plugin accepts, follows changes (also
//! across an API server restart and a 410 relist), installs the plugin, and
//! mounts bpffs on a node whose sysfs has none.
//!
//! Every agent runs in a private mount namespace with temp dirs for
//! /etc/cni/net.d and /opt/cni/bin (see `podmeter_tests::agent`).

use std::{fs, os::unix::fs::PermissionsExt, process::Command};

use podmeter_tests::{
    agent::{Agent, AgentDirs, Flags, Mounts},
    cni::invoke,
    fake_apiserver::{node, FakeApiServer},
    Node,
};
use serde_json::{json, Value};

const NODE: &str = "node-a";

/// The fake server with `nodes`, a kubeconfig for it and the agent's dirs.
struct Cluster {
    api: FakeApiServer,
    dirs: AgentDirs,
    kubeconfig: std::path::PathBuf,
}

impl Cluster {
    fn new(nodes: &[Value]) -> Self {
        let api = FakeApiServer::start();
        for n in nodes {
            api.apply(n.clone());
        }
        let dirs = AgentDirs::new();
        let kubeconfig = api.kubeconfig(dirs.root.path());
        Self {
            api,
            dirs,
            kubeconfig,
        }
    }

    fn flags(&self) -> Flags {
        Flags::new(&self.kubeconfig, NODE, &self.dirs)
    }

    fn start(&self, mounts: Mounts) -> Agent {
        Agent::start(self.flags().command(), mounts)
    }

    /// The conflist once it exists and its ranges are `subnets`.
    fn conflist_with(&self, agent: &Agent, subnets: &[&str]) -> Value {
        let want: Vec<Value> = subnets.iter().map(|s| json!([{ "subnet": s }])).collect();
        agent.eventually(&format!("a conflist with ranges {subnets:?}"), || {
            let text = fs::read_to_string(self.dirs.conflist()).ok()?;
            let conflist: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("the conflist is not JSON ({e}): {text}"));
            (conflist["plugins"][0]["ipam"]["ranges"] == json!(want)).then_some(conflist)
        })
    }
}

/// A fake `portmap` in the bin dir: the agent chains it only if present.
fn fake_portmap(dirs: &AgentDirs) {
    let path = dirs.bin_dir.join("portmap");
    fs::write(&path, "#!/bin/sh\nexit 1\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn expected_conflist(dirs: &AgentDirs, ranges: &[&str], portmap: bool) -> Value {
    let mut plugins = vec![json!({
        "type": "podmeter",
        "bridge": "pm0",
        "isGateway": true,
        "isDefaultGateway": true,
        "ipMasq": true,
        "pinPath": "/sys/fs/bpf/podmeter",
        "ipam": {
            "type": "builtin",
            "dataDir": dirs.data_dir,
            "ranges": ranges.iter().map(|s| json!([{ "subnet": s }])).collect::<Vec<_>>(),
        },
    })];
    if portmap {
        plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    }
    json!({ "cniVersion": "1.0.0", "name": "podmeter", "plugins": plugins })
}

#[test]
fn waits_for_pod_cidrs_then_writes_the_conflist_and_follows_the_node() {
    podmeter_testkit::needs_root!();
    // Another node's ranges must not be taken for this one's.
    let c = Cluster::new(&[
        node(NODE, &[], "172.18.0.2"),
        node("node-b", &["10.244.9.0/24"], "172.18.0.3"),
    ]);
    fake_portmap(&c.dirs);
    let agent = c.start(Mounts::Private);

    // After the first sync, with no ranges: no conflist, not ready.
    agent.log_with("no spec.podCIDRs yet");
    assert!(!c.dirs.conflist().exists(), "a conflist before podCIDRs");
    assert_eq!(agent.get("/readyz").status, 503);
    assert_eq!(agent.get("/healthz").status, 200);

    // The plugin is installed before anything else: the same bytes, 0755.
    let installed = c.dirs.installed_plugin();
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(podmeter_tests::binary("podmeter")).unwrap()
    );
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o7777,
        0o755
    );

    c.api.apply(node(
        NODE,
        &["10.244.1.0/24", "fd00:10:244:1::/64"],
        "172.18.0.2",
    ));
    let conflist = c.conflist_with(&agent, &["10.244.1.0/24", "fd00:10:244:1::/64"]);
    assert_eq!(
        conflist,
        expected_conflist(&c.dirs, &["10.244.1.0/24", "fd00:10:244:1::/64"], true)
    );
    agent.eventually("readiness", || {
        (agent.get("/readyz").status == 200).then_some(())
    });
    // Written atomically: nothing but the conflist in the conf dir.
    let names: Vec<_> = fs::read_dir(&c.dirs.conf_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["10-podmeter.conflist"]);

    // A change of ranges is followed.
    c.api
        .apply(node(NODE, &["fd00:10:244:7::/64"], "172.18.0.2"));
    c.conflist_with(&agent, &["fd00:10:244:7::/64"]);

    // A deleted Node keeps its conflist (the kubelet re-registers it)...
    c.api.delete(NODE);
    agent.log_with("Node object is not there");
    assert!(c.dirs.conflist().exists());
    agent.eventually("unreadiness", || {
        (agent.get("/readyz").status == 503).then_some(())
    });
    // ...and the re-registered node's ranges replace it.
    c.api.apply(node(NODE, &["10.244.3.0/24"], "172.18.0.2"));
    let conflist = c.conflist_with(&agent, &["10.244.3.0/24"]);
    assert_eq!(
        conflist,
        expected_conflist(&c.dirs, &["10.244.3.0/24"], true)
    );
}

/// This node's own pod range is checked like any other Node's (issue 18):
/// special space gets no conflist, the reason in the log and the metrics;
/// a usable range then gets one and clears the report.
#[test]
fn a_hostile_own_pod_cidr_gets_no_conflist_and_is_reported() {
    podmeter_testkit::needs_root!();
    let c = Cluster::new(&[node(NODE, &["127.0.0.0/8"], "172.18.0.2")]);
    let agent = c.start(Mounts::Private);
    agent.log_with("127.0.0.0/8 overlaps 127.0.0.0/8 (loopback)");
    assert!(!c.dirs.conflist().exists(), "a conflist for 127.0.0.0/8");
    let series = "podmeter_agent_node_errors{node=\"node-a\",reason=\"special_range\",peer=\"\"} 1";
    assert!(agent.get("/metrics").body.contains(series));
    assert_eq!(agent.get("/readyz").status, 503);

    c.api.apply(node(NODE, &["10.244.1.0/24"], "172.18.0.2"));
    c.conflist_with(&agent, &["10.244.1.0/24"]);
    agent.eventually("the report cleared", || {
        (!agent.get("/metrics").body.contains("node_errors{")).then_some(())
    });
}

#[test]
fn the_installed_plugin_accepts_the_conflist() {
    podmeter_testkit::needs_root!();
    // The pin path and data dir are the test node's, so the plugin's STATUS
    // (it loads the programs and makes the data dir) touches only those.
    let test_node = Node::new();
    let c = Cluster::new(&[node(
        NODE,
        &["10.244.1.0/24", "fd00:10:244:1::/64"],
        "172.18.0.2",
    )]);
    let mut flags = c.flags();
    flags.pin_path = test_node.pin_path.clone();
    flags.data_dir = test_node.data_dir.path().into();
    let agent = Agent::start(flags.command(), Mounts::Private);
    let conflist = c.conflist_with(&agent, &["10.244.1.0/24", "fd00:10:244:1::/64"]);
    // No portmap in the bin dir: not chained, so libcni finds every plugin.
    assert_eq!(
        conflist["plugins"].as_array().unwrap().len(),
        1,
        "{conflist}"
    );
    agent.log_with("no portmap plugin");

    // As libcni hands the first plugin its config.
    let mut conf = conflist["plugins"][0].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    conf["name"] = conflist["name"].clone();
    assert_eq!(conf["pinPath"], json!(test_node.pin_path));
    let installed = |command: &str, conf: &Value| {
        invoke(
            test_node
                .ns
                .command(c.dirs.installed_plugin().to_str().unwrap()),
            &[
                ("CNI_COMMAND", command.to_owned()),
                ("CNI_PATH", c.dirs.bin_dir.display().to_string()),
            ],
            conf.to_string().as_bytes(),
        )
        .ok()
    };
    let version = installed("VERSION", &conf);
    let versions = version.json["supportedVersions"].as_array().unwrap();
    assert!(versions.contains(&json!("1.0.0")), "{}", version.stdout);
    // STATUS is a 1.1.0 verb (runtimes on libcni 1.1 never send it): asked
    // with only the version raised, it checks every key and the node.
    let mut conf_1_1 = conf.clone();
    conf_1_1["cniVersion"] = json!("1.1.0");
    installed("STATUS", &conf_1_1);

    // And a pod wired with the conflist as written gets one address from
    // each of the node's ranges.
    let pod = test_node.add_pod("web", &conf);
    let ips = pod.ips();
    assert_eq!(ips.len(), 2, "{}", pod.result);
    assert!(ips[0].starts_with("10.244.1."), "{ips:?}");
    assert!(ips[1].starts_with("fd00:10:244:1::"), "{ips:?}");
    test_node.del(&pod, &conf).ok();
}

/// Stops the API server until the agent has failed to reach it, changes the
/// node's ranges meanwhile (`compact` also forgets the history, so the
/// agent's resumed watch gets 410 Gone), restarts it, and returns the
/// agent's log once the change is in the conflist.
fn outage(compact: bool) -> (Cluster, Agent) {
    let mut c = Cluster::new(&[node(NODE, &["10.244.1.0/24"], "172.18.0.2")]);
    let agent = c.start(Mounts::Private);
    c.conflist_with(&agent, &["10.244.1.0/24"]);
    assert_eq!(c.api.lists(), 1);

    c.api.stop();
    agent.log_with("watching nodes (retrying)");
    c.api.apply(node(NODE, &["10.244.2.0/24"], "172.18.0.2"));
    if compact {
        c.api.compact();
    }
    c.api.restart();
    c.conflist_with(&agent, &["10.244.2.0/24"]);
    agent.eventually("readiness", || {
        (agent.get("/readyz").status == 200).then_some(())
    });
    (c, agent)
}

#[test]
fn a_change_made_while_the_api_server_was_down_arrives_by_rewatch() {
    podmeter_testkit::needs_root!();
    let (c, _agent) = outage(false);
    // Resumed from its resource version: the history had it, no relist.
    assert_eq!(c.api.lists(), 1, "{:#?}", c.api.requests());
}

#[test]
fn a_change_lost_to_compaction_arrives_by_relist_after_410() {
    podmeter_testkit::needs_root!();
    let (c, _agent) = outage(true);
    assert!(c.api.lists() >= 2, "no relist: {:#?}", c.api.requests());
}

/// Parses one `/proc/PID/mountinfo` line: (mount point, optional fields,
/// fs type, super options).
fn mountinfo_entry(mountinfo: &str, mount_point: &str) -> Option<(String, String, String)> {
    mountinfo.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        if fields.get(4) != Some(&mount_point) {
            return None;
        }
        let optional = fields[6..].join(" ");
        let mut right = right.split(' ');
        let fstype = right.next()?.to_owned();
        let superopts = right.nth(1)?.to_owned();
        Some((optional, fstype, superopts))
    })
}

/// What `argv` prints inside the mount namespace of `pid`.
fn in_mount_ns_of(pid: u32, argv: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(["--target", &pid.to_string(), "--mount", "--"])
        .args(argv)
        .output()
        .expect("running nsenter");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn mounts_bpffs_shared_and_0700_where_sysfs_has_none() {
    podmeter_testkit::needs_root!();
    let host_mounts = || {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some("/sys/fs/bpf"))
            .count()
    };
    let before = host_mounts();
    let c = Cluster::new(&[node(NODE, &["10.244.1.0/24"], "172.18.0.2")]);
    let agent = c.start(Mounts::FreshSysfs);
    agent.log_with("mounted bpffs");
    // It goes on to do its work on such a node.
    c.conflist_with(&agent, &["10.244.1.0/24"]);

    let mountinfo = in_mount_ns_of(agent.pid(), &["cat", "/proc/self/mountinfo"]);
    let (optional, fstype, superopts) = mountinfo_entry(&mountinfo, "/sys/fs/bpf")
        .unwrap_or_else(|| panic!("nothing mounted at /sys/fs/bpf:\n{mountinfo}"));
    assert_eq!(fstype, "bpf", "{mountinfo}");
    assert!(optional.contains("shared:"), "not shared: {optional:?}");
    assert!(superopts.split(',').any(|o| o == "mode=700"), "{superopts}");
    let mode = in_mount_ns_of(agent.pid(), &["stat", "-c", "%a", "/sys/fs/bpf"]);
    // The kernel always sets the sticky bit on a bpffs root.
    assert_eq!(mode.trim(), "1700");
    // The namespace under it is a fresh sysfs, not the machine's mounts.
    let (_, sys_type, _) = mountinfo_entry(&mountinfo, "/sys").unwrap();
    assert_eq!(sys_type, "sysfs");

    // Nothing of it reached the machine's mount namespace.
    assert_eq!(host_mounts(), before);
}

#[test]
fn sigterm_keeps_the_conflist_unless_told_to_uninstall() {
    podmeter_testkit::needs_root!();
    for uninstall in [false, true] {
        let c = Cluster::new(&[node(NODE, &["10.244.1.0/24"], "172.18.0.2")]);
        let mut flags = c.flags();
        if uninstall {
            flags.extra.push("--cni.uninstall".into());
        }
        let mut agent = Agent::start(flags.command(), Mounts::Private);
        c.conflist_with(&agent, &["10.244.1.0/24"]);
        let status = agent.terminate();
        assert!(status.success(), "{status}:\n{}", agent.log());
        assert_eq!(
            c.dirs.conflist().exists(),
            !uninstall,
            "uninstall={uninstall}:\n{}",
            agent.log()
        );
        // The plugin stays either way: pods still need DEL.
        assert!(c.dirs.installed_plugin().exists());
    }
}

#[test]
fn start_up_mistakes_exit_non_zero_naming_the_culprit() {
    podmeter_testkit::needs_root!();
    let c = Cluster::new(&[node(NODE, &["10.244.1.0/24"], "172.18.0.2")]);
    let missing = c.dirs.root.path().join("missing");

    let mut flags = c.flags();
    flags.plugin_source = missing.join("podmeter");
    let (status, log) = Agent::run_to_exit(flags.command());
    assert!(
        !status.success() && log.contains("missing/podmeter"),
        "{status}: {log}"
    );

    let mut flags = c.flags();
    flags.conflist = missing.join("10-podmeter.conflist");
    let (status, log) = Agent::run_to_exit(flags.command());
    assert!(
        !status.success() && log.contains("does not exist"),
        "{status}: {log}"
    );

    let mut flags = c.flags();
    flags.kubeconfig = missing.clone();
    let (status, log) = Agent::run_to_exit(flags.command());
    assert!(
        !status.success() && log.contains("Kubernetes client config"),
        "{status}: {log}"
    );

    let mut flags = c.flags();
    flags.node_name = String::new();
    let (status, log) = Agent::run_to_exit(flags.command());
    assert!(
        !status.success() && log.contains("must not be empty"),
        "{status}: {log}"
    );
    assert!(!c.dirs.conflist().exists());
}
