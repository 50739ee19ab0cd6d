//! What the exporter needs to read the pins: the pins' owner (uid 0) and no
//! capability at all, also from a read-only bpffs mount as the DaemonSet
//! mounts it. Another uid needs CAP_DAC_OVERRIDE; without it every read is
//! refused (the boundary that makes "no capability" mean something).

use std::{fs, process::Command};

use podmeter_ebpf::pins::DROPS_MAP;
use podmeter_tests::{
    binary,
    daemonset::DaemonSet,
    exporter::{assert_scrape_matches_kernel, pod_series, sample, Exporter},
    http,
    node::GATEWAY_V4,
    sysctl::BpfStats,
    Node, Pod,
};

/// `setpriv` arguments that run the next program as `uid` with no
/// capability in any set (a uid 0 gets none back at exec: the bounding set
/// is empty) and no way to gain one (`no_new_privs`); `keep` stays in the
/// bounding, inheritable and ambient sets.
fn setpriv(uid: u32, keep: Option<&str>) -> Vec<String> {
    let keep_caps = |all: &str| match keep {
        Some(cap) => format!("{all},+{cap}"),
        None => all.to_owned(),
    };
    vec![
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
        format!("--bounding-set={}", keep_caps("-all")),
        format!("--inh-caps={}", keep_caps("-all")),
        format!("--ambient-caps={}", keep_caps("-all")),
        "--no-new-privs".into(),
        "--".into(),
        binary("podmeter-exporter").display().to_string(),
    ]
}

/// Starts the exporter inside the node as `setpriv` args say; with
/// `read_only`, in its own mount namespace where the pin path is a
/// read-only bind mount (as `readOnly: true` in a pod spec makes it).
fn start(node: &Node, setpriv_args: &[String], read_only: bool) -> Exporter {
    let mut command: Command = if read_only {
        let mut c = node.ns.command("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind -o ro "$0" "$0" && exec setpriv "$@""#)
            .arg(&node.pin_path);
        c
    } else {
        node.ns.command("setpriv")
    };
    command.args(setpriv_args);
    Exporter::start_command(command, &node.pin_path, &[])
}

/// The exporter's uid and capability sets, from /proc.
fn credentials(exporter: &Exporter) -> (String, Vec<String>) {
    let status = fs::read_to_string(format!("/proc/{}/status", exporter.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .trim()
            .to_owned()
    };
    let uid = field("Uid:").split_whitespace().next().unwrap().to_owned();
    let caps = ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"]
        .map(field)
        .to_vec();
    (uid, caps)
}

/// A scrape from inside the node (the exporter listens on its loopback).
fn scrape(node: &Node, exporter: &Exporter) -> String {
    let addr = exporter.addr;
    let r = node.ns.run_in(move || http::get(addr, "/metrics", None));
    assert_eq!(r.status, 200);
    r.body
}

/// `/readyz` from inside the node.
fn readyz(node: &Node, exporter: &Exporter) -> http::Response {
    let addr = exporter.addr;
    node.ns.run_in(move || http::get(addr, "/readyz", None))
}

fn pod_with_traffic(node: &Node) -> Pod {
    let pod = node.add_pod("a", &node.conf("1.1.0"));
    pod.ns.ping(GATEWAY_V4, 20, 500);
    pod
}

/// No CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN or CAP_DAC_OVERRIDE: uid 0, the
/// pins' owner, reads maps, program stats (BPF_OBJ_GET_INFO_BY_FD) and the
/// drop reasons' BTF with an empty capability set.
#[test]
fn uid_0_without_any_capability_serves_every_metric() {
    podmeter_testkit::needs_root!();
    let _stats = BpfStats::enable();
    let node = Node::new();
    let pod = pod_with_traffic(&node);
    let exporter = start(&node, &setpriv(0, None), true);
    let none = "0000000000000000".to_owned();
    assert_eq!(credentials(&exporter), ("0".into(), vec![none; 5]));

    let metrics = assert_scrape_matches_kernel(&node, &pod, "a", || scrape(&node, &exporter));
    let value = |family: &str| sample(&metrics, &pod_series(family, "a")).map(|v| v as u64);
    assert!(value("transmit_packets").unwrap() >= 20);
    assert_eq!(sample(&metrics, "podmeter_pods"), Some(1.0));
    assert_eq!(
        sample(&metrics, "podmeter_exporter_scrape_errors_total"),
        Some(0.0)
    );
    // The stats were on before the ping: 20 echo requests ran the ingress
    // program (pod transmit), 20 replies the egress program.
    for (program, at_least) in [
        ("pm_ingress", 20.0),
        ("pm_egress", 20.0),
        ("pm_kfree_skb", 0.0),
    ] {
        let series = format!(r#"podmeter_bpf_program_run_count_total{{program="{program}"}}"#);
        let runs = sample(&metrics, &series);
        assert!(runs >= Some(at_least), "{series} in\n{metrics}");
    }
    // Logged at start, before `listening`: the drop reasons' names were read.
    let log = exporter.log();
    assert!(
        !log.contains("drop reasons are exported as numbers"),
        "{log}"
    );
}

/// The same empty capability set under another uid: every pin read is
/// refused, counted and logged; uid 0 above is what grants access.
#[test]
fn another_uid_without_capabilities_is_refused_with_a_scrape_error() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let _pod = pod_with_traffic(&node);
    let exporter = start(&node, &setpriv(65534, None), false);
    let none = "0000000000000000".to_owned();
    assert_eq!(credentials(&exporter), ("65534".into(), vec![none; 5]));

    let metrics = scrape(&node, &exporter);
    assert!(sample(&metrics, "podmeter_exporter_scrape_errors_total").unwrap() >= 1.0);
    assert_eq!(sample(&metrics, "podmeter_pods"), None, "{metrics}");
    // The pin directories are root's, mode 0700: the maps are refused at
    // the directory (and, while bpf_stats is on, the programs at
    // BPF_OBJ_GET), never read.
    let log = exporter.log_with("level=error");
    assert!(
        log.contains("reading the pinned maps failed") && log.contains("Permission denied"),
        "{log}"
    );
}

/// Another uid needs exactly CAP_DAC_OVERRIDE (the pins are root's, 0600).
#[test]
fn another_uid_with_only_cap_dac_override_reads_the_pins() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let _pod = pod_with_traffic(&node);
    let exporter = start(&node, &setpriv(65534, Some("dac_override")), false);
    let dac_override = "0000000000000002".to_owned();
    assert_eq!(
        credentials(&exporter),
        ("65534".into(), vec![dac_override; 5])
    );
    let metrics = scrape(&node, &exporter);
    assert_eq!(sample(&metrics, "podmeter_pods"), Some(1.0), "{metrics}");
    assert!(
        sample(
            &metrics,
            r#"podmeter_pod_transmit_packets_total{namespace="test",pod="a",interface="eth0"}"#
        ) >= Some(20.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "podmeter_exporter_scrape_errors_total"),
        Some(0.0)
    );
}

/// The DaemonSet's exporter: uid 0 with exactly the capabilities its
/// manifest adds (CAP_BPF, which kernels 5.17-6.4 need for any bpf() call
/// while `kernel.unprivileged_bpf_disabled` is set) and a read-only bpffs:
/// it reads the pins and `/readyz` says so. `/readyz` fails, naming why,
/// when the pins cannot be read (another uid) or a map is missing, and
/// passes where nothing is pinned yet.
#[test]
fn the_manifests_security_context_reads_the_pins_and_readyz_follows_them() {
    podmeter_testkit::needs_root!();
    let caps: Vec<String> = DaemonSet::load()
        .added_capabilities("exporter")
        .iter()
        .map(|c| c.to_lowercase())
        .collect();
    assert_eq!(
        caps,
        ["bpf"],
        "the manifest's exporter capabilities changed"
    );
    let empty = Node::new();
    let exporter = start(&empty, &setpriv(0, Some(&caps.join(",+"))), false);
    let r = readyz(&empty, &exporter);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok: nothing pinned yet (no pod wired on this node)\n")
    );

    let node = Node::new();
    let pod = pod_with_traffic(&node);
    let exporter = start(&node, &setpriv(0, Some(&caps.join(",+"))), true);
    let cap_bpf = "0000008000000000".to_owned();
    assert_eq!(credentials(&exporter), ("0".into(), vec![cap_bpf; 5]));
    let r = readyz(&node, &exporter);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok: the pinned maps are readable\n")
    );
    assert_scrape_matches_kernel(&node, &pod, "a", || scrape(&node, &exporter));

    // Unreadable: the pins are root's.
    let other = start(&node, &setpriv(65534, None), false);
    let r = readyz(&node, &other);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("Permission denied"), "{}", r.body);

    // A map missing from a pin directory that is there.
    fs::remove_file(node.layout().map(DROPS_MAP)).unwrap();
    let r = readyz(&node, &exporter);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains(DROPS_MAP) || r.body.contains("No such file"),
        "{}",
        r.body
    );
}
