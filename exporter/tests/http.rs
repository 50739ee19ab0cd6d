//! Runs the real binary on loopback against pins under /sys/fs/bpf (as root):
//! the HTTP surface, the health metrics, real maps, and a clean SIGTERM.

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use podmeter_ebpf::{loader, maps::PinnedMaps, PinLayout, PodDevices, PodIdentity};
use podmeter_tests::exporter::{promtool_check_metrics, sample, Exporter};

const BIN: &str = env!("CARGO_BIN_EXE_podmeter-exporter");

/// A pin path of this test's own under bpffs, removed with all it holds.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/pmtest-exporter-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&path).expect("creating a pin dir under /sys/fs/bpf (needs root)");
        Self(path)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = loader::remove_pins(&PinLayout::new(&self.0));
    }
}

#[test]
fn without_maps_it_serves_health_and_survives_bad_requests() {
    let pins = PinDir::new();
    let mut exporter = Exporter::start(BIN.as_ref(), &pins.0);

    let text = exporter.get("/metrics", None);
    assert_eq!(text.status, 200);
    assert!(text
        .head
        .contains("content-type: text/plain; version=0.0.4; charset=utf-8"));
    assert_eq!(
        sample(
            &text.body,
            &format!(
                r#"podmeter_exporter_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    assert!(sample(&text.body, "podmeter_exporter_scrape_duration_seconds").is_some());
    assert!(sample(&text.body, "podmeter_exporter_scrape_errors_total").unwrap() >= 1.0);
    assert!(!text.body.contains("podmeter_pod"), "{}", text.body);
    assert!(!text.body.contains("# EOF"));
    promtool_check_metrics(&text.body);
    assert!(
        exporter.log().contains("level=error") && exporter.log().contains("pm_counters"),
        "{}",
        exporter.log()
    );

    let om = exporter.get(
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert!(om
        .head
        .contains("content-type: application/openmetrics-text"));
    assert!(om.body.ends_with("# EOF\n"));

    let landing = exporter.get("/", None);
    assert_eq!(landing.status, 200);
    assert!(landing.body.contains(r#"<a href="/metrics">"#));

    assert_eq!(exporter.get("/nope", None).status, 404);
    let post = exporter.request(
        b"POST /metrics HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(post.status, 405);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: test\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    assert_eq!(exporter.request(huge.as_bytes()).status, 431);
    assert_eq!(exporter.get("/metrics", None).status, 200);

    // An idle keep-alive connection must not hold up the shutdown.
    let mut idle = TcpStream::connect(exporter.addr).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    exporter.terminate();
}

#[test]
fn registered_pods_are_exported_until_unregistered() {
    let pins = PinDir::new();
    let layout = PinLayout::new(&pins.0);
    loader::ensure_loaded(&layout).unwrap();
    let mut maps = PinnedMaps::open(&layout).unwrap();
    let pod = |name: &str, ip: &str| PodIdentity {
        namespace: "team-a".into(),
        pod: name.into(),
        uid: format!("uid-{name}"),
        container_id: format!("cid-{name}"),
        network: "podmeter".into(),
        ifname: "eth0".into(),
        host_ifname: format!("pm{name}"),
        ips: vec![(ip.parse().unwrap(), 24)],
    };
    // Interface indexes and a netns cookie no real device has: nothing is
    // attached and no drop is attributed.
    let devices = |ifindex| PodDevices {
        node_netns_cookie: u64::MAX,
        pod_netns_cookie: u64::MAX,
        pod_ifindex: ifindex,
    };
    maps.register(4_000_000_001, &pod("a", "10.9.0.2"), &devices(1))
        .unwrap();
    maps.register(4_000_000_002, &pod("b", "10.9.0.3"), &devices(2))
        .unwrap();

    let exporter = Exporter::start(BIN.as_ref(), &pins.0);
    let metrics = exporter.metrics();
    assert_eq!(sample(&metrics, "podmeter_pods"), Some(2.0));
    assert_eq!(
        sample(
            &metrics,
            r#"podmeter_pod_info{namespace="team-a",pod="a",interface="eth0",uid="uid-a",container_id="cid-a",host_interface="pma",ips="10.9.0.2/24"}"#
        ),
        Some(1.0)
    );
    for family in [
        "receive_bytes",
        "transmit_bytes",
        "receive_packets",
        "transmit_packets",
    ] {
        for name in ["a", "b"] {
            let series = format!(
                r#"podmeter_pod_{family}_total{{namespace="team-a",pod="{name}",interface="eth0"}}"#
            );
            assert_eq!(sample(&metrics, &series), Some(0.0), "{series}");
        }
    }
    assert_eq!(
        sample(&metrics, "podmeter_exporter_scrape_errors_total"),
        Some(0.0)
    );
    promtool_check_metrics(&metrics);

    maps.unregister(4_000_000_001).unwrap();
    let metrics = exporter.metrics();
    assert_eq!(sample(&metrics, "podmeter_pods"), Some(1.0));
    assert!(!metrics.contains(r#"pod="a""#), "{metrics}");
    assert!(metrics.contains(r#"pod="b""#));
}
