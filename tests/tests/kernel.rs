//! A kernel without what podmeter needs: the plugin's STATUS and ADD and the
//! agent's `/readyz` name the missing feature and the version that has it,
//! and ADD leaves nothing behind. The kernel is simulated through the probes'
//! root (`PODMETER_TEST_PROBE_ROOT`, read by debug builds only): a directory
//! with the files the probes read (`/proc/sys/kernel/osrelease`,
//! `/sys/kernel/btf/vmlinux`, `/proc/sys/net/bridge`).

use std::{fs, path::Path};

use podmeter_ebpf::programs::kernel::TEST_PROBE_ROOT_ENV;
use podmeter_tests::{
    agent::{Agent, AgentDirs, Flags, Mounts},
    fake_apiserver::{node, FakeApiServer},
    Node,
};
use serde_json::Value;

/// A fake root for the probes: `release`, with or without BTF and
/// br_netfilter's sysctls.
fn kernel(release: &str, btf: bool, br_netfilter: bool) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("proc/sys/kernel")).unwrap();
    fs::write(r.join("proc/sys/kernel/osrelease"), format!("{release}\n")).unwrap();
    if btf {
        fs::create_dir_all(r.join("sys/kernel/btf")).unwrap();
        fs::write(r.join("sys/kernel/btf/vmlinux"), "").unwrap();
    }
    if br_netfilter {
        fs::create_dir_all(r.join("proc/sys/net/bridge")).unwrap();
    }
    root
}

/// Runs `command` (STATUS or ADD) on `node` with the probes at `root`;
/// returns the error's details, after checking its code (50: not available).
fn refused(node: &Node, conf: &Value, command: &str, root: &Path) -> String {
    let pod = podmeter_tests::NetNs::new("pmt-pod");
    let (id, netns, ifname) = match command {
        "ADD" => ("kernel-test", Some(&pod), "eth0"),
        _ => ("", None, ""),
    };
    let mut env = Node::cni_vars(command, id, netns, ifname, "");
    env.push((TEST_PROBE_ROOT_ENV, root.display().to_string()));
    let out = node.cni_env(&env, conf.to_string().as_bytes());
    assert_eq!(out.code(), 50, "{command}: {}", out.stdout);
    out.json["details"].as_str().unwrap().to_owned()
}

#[test]
fn status_and_add_name_what_the_kernel_lacks() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let old = kernel("5.15.0-91-generic", true, true);
    for command in ["STATUS", "ADD"] {
        let msg = refused(&node, &conf, command, old.path());
        assert!(
            msg.contains("Linux 5.15.0-91-generic lacks bpf_loop")
                && msg.contains("came with Linux 5.17"),
            "{command}: {msg}"
        );
    }
    // ADD stopped before touching the node.
    assert_eq!(node.ns.links(), ["lo"]);
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(!node.pin_path.exists(), "programs loaded anyway");

    let no_btf = kernel("6.1.0-27-amd64", false, true);
    let msg = refused(&node, &conf, "STATUS", no_btf.path());
    assert!(msg.contains("no BTF (/sys/kernel/btf/vmlinux"), "{msg}");

    // br_netfilter matters only to a config that asks for it.
    let no_br = kernel("6.1.0-27-amd64", true, false);
    let mut asks = conf.clone();
    asks["bridgeNetfilter"] = true.into();
    let msg = refused(&node, &asks, "STATUS", no_br.path());
    assert!(
        msg.contains("bridgeNetfilter: the kernel's br_netfilter is not active")
            && msg.contains("modprobe br_netfilter"),
        "{msg}"
    );
    let mut env = Node::cni_vars("STATUS", "", None, "", "");
    env.push((TEST_PROBE_ROOT_ENV, no_br.path().display().to_string()));
    node.cni_env(&env, conf.to_string().as_bytes()).ok();
}

#[test]
fn the_agent_is_not_ready_and_says_why() {
    podmeter_testkit::needs_root!();
    let api = FakeApiServer::start();
    api.apply(node("node-a", &["10.244.1.0/24"], "172.18.0.2"));
    let dirs = AgentDirs::new();
    let kubeconfig = api.kubeconfig(dirs.root.path());
    let old = kernel("5.15.0-91-generic", true, false);
    let mut cmd = Flags::new(&kubeconfig, "node-a", &dirs).command();
    cmd.env(TEST_PROBE_ROOT_ENV, old.path());
    let agent = Agent::start(cmd, Mounts::Private);
    // The conflist is written (pods then fail with the same message)...
    agent.eventually("the conflist", || dirs.conflist().exists().then_some(()));
    // ... but the agent stays unready, naming both problems.
    let ready = agent.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready
            .body
            .contains("kernel: Linux 5.15.0-91-generic lacks bpf_loop")
            && ready
                .body
                .contains("kernel: the kernel's br_netfilter is not active"),
        "{}",
        ready.body
    );
    agent.log_with("the kernel cannot run podmeter");
}
