//! IPAM under hostile conditions, through the real binary in a node namespace:
//! an ipam type that leads back to podmeter, a delegate that never answers, lease
//! directories holding things that are not leases, a write failing mid-ADD.

use std::{
    fs,
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use podmeter_tests::{cni::invoke, CniOutput, NetNs, Node};
use serde_json::{json, Value};

/// Not a performance bound (the exec counts are the precise checks): only
/// "it answers, it does not hang", with room for a loaded machine. Each
/// refusal takes milliseconds.
const FAST: Duration = Duration::from_secs(30);

fn podmeter() -> PathBuf {
    podmeter_tests::binary("podmeter")
}

fn add_env(pod: &NetNs, cni_path: &[&Path]) -> Vec<(&'static str, String)> {
    let cni_path = std::env::join_paths(cni_path).unwrap();
    vec![
        ("CNI_COMMAND", "ADD".into()),
        ("CNI_CONTAINERID", "ctr-1".into()),
        ("CNI_NETNS", pod.path().display().to_string()),
        ("CNI_IFNAME", "eth0".into()),
        ("CNI_PATH", cni_path.into_string().unwrap()),
    ]
}

/// Runs the plugin in the node under `strace -f`, returning its output and the
/// number of programs executed (podmeter itself is one).
fn traced(node: &Node, env: &[(&str, String)], conf: &Value) -> (CniOutput, usize) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = node.ns.command("strace");
    cmd.args(["-f", "-qq", "-e", "trace=execve", "-o"])
        .arg(log.path())
        .arg(podmeter());
    let out = invoke(cmd, env, conf.to_string().as_bytes());
    let execs = fs::read_to_string(log.path())
        .unwrap()
        .lines()
        .filter(|l| l.contains("execve(") && !l.contains("= -1"))
        .count();
    (out, execs)
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn details(out: &CniOutput) -> String {
    out.json["details"].as_str().unwrap_or_default().to_owned()
}

/// Nothing of the pod on the node: no links but loopback, no leases.
fn assert_no_pod(node: &Node) {
    assert_eq!(node.ns.links(), ["lo"], "links were created");
    assert!(node.leases().is_empty(), "leases: {:?}", node.leases());
}

#[test]
fn ipam_type_podmeter_is_refused_fast_and_leaves_nothing() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let pod = NetNs::new("pmt-pod");
    let mut conf = node.conf("1.1.0");
    conf["ipam"] = json!({"type": "podmeter"});
    let bin_dir = podmeter().parent().unwrap().to_path_buf();
    let env = add_env(&pod, &[&bin_dir, Path::new("/usr/lib/cni")]);

    let started = Instant::now();
    let (out, execs) = traced(&node, &env, &conf);
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    assert_eq!(out.code(), 7, "{} {}", out.stdout, out.stderr);
    assert!(details(&out).contains("podmeter itself"), "{}", out.stdout);
    assert_eq!(execs, 1, "podmeter ran other programs");
    assert_no_pod(&node);
    assert!(!node.pin_path.exists(), "pins were created");
}

#[test]
fn another_name_for_podmeter_is_refused_by_inode() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let pod = NetNs::new("pmt-pod");
    let bin = tempfile::tempdir().unwrap();
    symlink(podmeter(), bin.path().join("pm-alias")).unwrap();
    let mut conf = node.conf("1.1.0");
    conf["ipam"] = json!({"type": "pm-alias"});

    let started = Instant::now();
    let (out, execs) = traced(&node, &add_env(&pod, &[bin.path()]), &conf);
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    assert_eq!(out.code(), 7, "{} {}", out.stdout, out.stderr);
    assert!(details(&out).contains("podmeter itself"), "{}", out.stdout);
    assert_eq!(execs, 1, "the alias was executed");
    assert_no_pod(&node);
}

#[test]
fn a_wrapper_around_podmeter_recurses_once_and_stops() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let pod = NetNs::new("pmt-pod");
    let bin = tempfile::tempdir().unwrap();
    let count = bin.path().join("count");
    // Not the same file as podmeter, so only the environment marker can stop it.
    script(
        bin.path(),
        "pm-wrapper",
        &format!(
            "echo run >> {}\nexec {} \"$@\"",
            count.display(),
            podmeter().display()
        ),
    );
    let mut conf = node.conf("1.1.0");
    conf["ipam"] = json!({"type": "pm-wrapper"});

    let started = Instant::now();
    let out = node.cni_env(&add_env(&pod, &[bin.path()]), conf.to_string().as_bytes());
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    assert_eq!(out.code(), 7, "{} {}", out.stdout, out.stderr);
    assert!(
        details(&out).contains("PODMETER_IPAM_DELEGATE"),
        "{}",
        out.stdout
    );
    assert_eq!(fs::read_to_string(&count).unwrap(), "run\n");
    assert_no_pod(&node);
}

#[test]
fn a_delegate_that_never_answers_is_killed_at_its_limit() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let pod = NetNs::new("pmt-pod");
    let bin = tempfile::tempdir().unwrap();
    let pids = bin.path().join("pids");
    script(
        bin.path(),
        "hangs",
        &format!("sleep 1000 & echo $$ $! > {}\nwait", pids.display()),
    );
    let mut conf = node.conf("1.1.0");
    conf["ipam"] = json!({"type": "hangs", "delegateTimeout": "500ms"});

    let started = Instant::now();
    let out = node.cni_env(&add_env(&pod, &[bin.path()]), conf.to_string().as_bytes());
    let took = started.elapsed();
    assert_eq!(out.code(), 11, "{} {}", out.stdout, out.stderr);
    assert!(
        details(&out).contains("did not finish within 500ms"),
        "{}",
        out.stdout
    );
    assert!(
        took >= Duration::from_millis(500) && took < FAST,
        "took {took:?}"
    );
    assert_no_pod(&node);

    let pids = fs::read_to_string(&pids).unwrap();
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    let left = || pids.iter().filter(|p| running(p)).count();
    while left() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(left(), 0, "delegate processes left: {pids:?}");
}

/// Exists and is not a zombie (an orphan's zombie waits for a reaper that is not us).
fn running(pid: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Runs the plugin with a hard time limit, so a hang fails the test instead of
/// stalling the suite.
fn bounded(node: &Node, env: &[(&str, String)], conf: &Value) -> CniOutput {
    let mut cmd = node.ns.command("timeout");
    cmd.arg("30").arg(podmeter());
    invoke(cmd, env, conf.to_string().as_bytes())
}

#[test]
fn entries_that_are_not_leases_break_no_verb_and_are_reported() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let net = node.data_dir.path().join(podmeter_tests::node::NETWORK);
    fs::create_dir_all(&net).unwrap();
    fs::write(net.join("10.77.0.2"), b"\xff\xfe").unwrap();
    mkfifo(&net.join("10.77.0.3"));
    symlink("/etc/hostname", net.join("10.77.0.4")).unwrap();
    mkfifo(&net.join("last_reserved_ip.0"));
    fs::write(net.join("notes.txt"), "x").unwrap();

    let pod = NetNs::new("pmt-pod");
    let env = add_env(&pod, &[Path::new("/usr/lib/cni")]);
    let out = bounded(&node, &env, &conf).ok();
    assert_eq!(
        out.json["ips"][0]["address"], "10.77.0.5/24",
        "{}",
        out.stdout
    );
    for name in [
        "10.77.0.2",
        "10.77.0.3",
        "10.77.0.4",
        "last_reserved_ip.0",
        "notes.txt",
    ] {
        let path = net.join(name).display().to_string();
        assert!(
            out.stderr.contains(&path),
            "no warning names {path}: {}",
            out.stderr
        );
    }

    let mut del = env.clone();
    del[0].1 = "DEL".into();
    bounded(&node, &del, &conf).ok();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let gc_env = [
        ("CNI_COMMAND", "GC".to_owned()),
        ("CNI_PATH", "/usr/lib/cni".to_owned()),
    ];
    bounded(&node, &gc_env, &gc).ok();
    let status_env = [("CNI_COMMAND", "STATUS".to_owned()), gc_env[1].clone()];
    bounded(&node, &status_env, &conf).ok();

    // GC freed the garbage lease and nothing that is not a regular file.
    assert_eq!(node.leases(), ["10.77.0.3", "10.77.0.4"]);
    assert!(net.join("notes.txt").exists());
}

#[test]
fn a_write_failing_after_the_lease_exists_leaves_no_lease() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let net = node.data_dir.path().join(podmeter_tests::node::NETWORK);
    // Renaming the new last_reserved_ip.0 over a directory fails.
    fs::create_dir_all(net.join("last_reserved_ip.0")).unwrap();
    let pod = NetNs::new("pmt-pod");
    let env = add_env(&pod, &[Path::new("/usr/lib/cni")]);
    let out = node.cni_env(&env, conf.to_string().as_bytes());
    assert_eq!(out.code(), 5, "{} {}", out.stdout, out.stderr);
    assert!(
        details(&out).contains("last_reserved_ip.0"),
        "{}",
        out.stdout
    );
    assert_no_pod(&node);

    fs::remove_dir(net.join("last_reserved_ip.0")).unwrap();
    let pod = node.add_pod("p", &conf);
    assert_eq!(pod.ips(), ["10.77.0.2", "fd00:77::2"]);
    node.del(&pod, &conf).ok();
}
