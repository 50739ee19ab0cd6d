//! Runs the real binary on loopback against pins under /sys/fs/bpf (as root):
//! the HTTP surface, the health metrics, real maps, and a clean SIGTERM.

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use aya::maps::MapData;
use flate2::read::GzDecoder;
use podmeter_ebpf::{
    maps::PinnedMaps, pins::COUNTERS_MAP, programs::loader, PinLayout, PodDevices, PodIdentity,
};
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
    podmeter_testkit::needs_root!();
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
    assert!(!text.body.contains("# EOF"));
    promtool_check_metrics(&text.body);

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

/// Zero pods, no per-pod series, no scrape error and no error logged.
fn assert_no_pods_and_no_error(exporter: &Exporter) {
    let metrics = exporter.metrics();
    assert_eq!(sample(&metrics, "podmeter_pods"), Some(0.0), "{metrics}");
    assert!(
        !metrics.lines().any(|l| l.starts_with("podmeter_pod_")),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "podmeter_exporter_scrape_errors_total"),
        Some(0.0)
    );
    assert!(
        !exporter.log().contains("level=error"),
        "{}",
        exporter.log()
    );
}

/// Before the first ADD and after a reboot nothing is pinned: a node
/// without pods, not a failing exporter (else `PodmeterScrapeErrors` fires).
#[test]
fn no_pins_yet_is_zero_pods_not_an_error() {
    podmeter_testkit::needs_root!();
    let pins = PinDir::new();
    let layout = PinLayout::new(&pins.0);
    // No pin path at all, then the path without its versioned dir, then the
    // versioned dir without maps.
    let missing = pins.0.join("not-yet");
    let exporter = Exporter::start(BIN.as_ref(), &missing);
    assert_no_pods_and_no_error(&exporter);
    let exporter = Exporter::start(BIN.as_ref(), &pins.0);
    assert_no_pods_and_no_error(&exporter);
    fs::create_dir(layout.dir()).unwrap();
    assert_no_pods_and_no_error(&exporter);

    // The first ADD pins them: the same exporter serves them.
    loader::ensure_loaded(&layout).unwrap();
    let metrics = exporter.metrics();
    assert_eq!(sample(&metrics, "podmeter_pods"), Some(0.0));
    assert_eq!(
        sample(&metrics, "podmeter_exporter_scrape_errors_total"),
        Some(0.0)
    );
}

/// A pin that is there but is not ours is an error, counted and logged.
#[test]
fn a_pinned_map_of_another_layout_is_a_scrape_error() {
    podmeter_testkit::needs_root!();
    let pins = PinDir::new();
    let layout = PinLayout::new(&pins.0);
    fs::create_dir(layout.dir()).unwrap();
    // A per-CPU hash like pm_counters, but with 8-byte values.
    let obj = aya_obj::Map::new_from_params(aya::maps::MapType::PerCpuHash as u32, 8, 8, 16, 0);
    MapData::create(obj, COUNTERS_MAP, None)
        .unwrap()
        .pin(layout.map(COUNTERS_MAP))
        .unwrap();

    let exporter = Exporter::start(BIN.as_ref(), &pins.0);
    let metrics = exporter.metrics();
    assert!(sample(&metrics, "podmeter_exporter_scrape_errors_total").unwrap() >= 1.0);
    assert_eq!(sample(&metrics, "podmeter_pods"), None, "{metrics}");
    let log = exporter.log_with("level=error");
    assert!(
        log.contains("pm_counters") && log.contains("layout"),
        "{log}"
    );
}

#[test]
fn registered_pods_are_exported_until_unregistered() {
    podmeter_testkit::needs_root!();
    let pins = PinDir::new();
    let layout = PinLayout::new(&pins.0);
    let maps = register_two_pods(&layout);

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

    let left = podmeter_ebpf::pod::forget(maps.layout(), 4_000_000_001);
    assert!(left.is_empty(), "{left:?}");
    let metrics = exporter.metrics();
    assert_eq!(sample(&metrics, "podmeter_pods"), Some(1.0));
    assert!(!metrics.contains(r#"pod="a""#), "{metrics}");
    assert!(metrics.contains(r#"pod="b""#));
}

/// Registers pods `a` (10.9.0.2) and `b` (10.9.0.3) of namespace `team-a`,
/// with interface indexes and a netns cookie no real device has: nothing
/// is attached and no drop is attributed.
fn register_two_pods(layout: &PinLayout) -> PinnedMaps {
    loader::ensure_loaded(layout).unwrap();
    let mut maps = PinnedMaps::open(layout).unwrap();
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
    let devices = |ifindex| PodDevices {
        node_netns_cookie: u64::MAX,
        pod_netns_cookie: u64::MAX,
        pod_ifindex: ifindex,
    };
    maps.register(4_000_000_001, &pod("a", "10.9.0.2"), &devices(1))
        .unwrap();
    maps.register(4_000_000_002, &pod("b", "10.9.0.3"), &devices(2))
        .unwrap();
    maps
}

/// A scrape's head (lower-cased) and raw body bytes; the body must come
/// with a Content-Length (not chunked), which the exporter sends.
fn scrape_bytes(
    exporter: &Exporter,
    accept: &str,
    accept_encoding: Option<&str>,
) -> (String, Vec<u8>) {
    let encoding = accept_encoding
        .map(|e| format!("Accept-Encoding: {e}\r\n"))
        .unwrap_or_default();
    let mut s = TcpStream::connect(exporter.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: {accept}\r\n{encoding}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\ncontent-length: "), "{head}");
    (head, raw[split + 4..].to_vec())
}

/// The body without its one sample that differs between two scrapes of the
/// same maps: the scrape's own duration.
fn without_scrape_duration(body: &str) -> String {
    body.lines()
        .filter(|l| !l.starts_with("podmeter_exporter_scrape_duration_seconds"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn gzip_is_answered_when_asked_and_decompresses_to_the_plain_body() {
    podmeter_testkit::needs_root!();
    let pins = PinDir::new();
    let _maps = register_two_pods(&PinLayout::new(&pins.0));
    let exporter = Exporter::start(BIN.as_ref(), &pins.0);
    for accept in ["text/plain", "application/openmetrics-text; version=1.0.0"] {
        let (plain_head, plain) = scrape_bytes(&exporter, accept, None);
        assert!(!plain_head.contains("content-encoding"), "{plain_head}");
        let plain = String::from_utf8(plain).unwrap();
        assert!(plain.contains(r#"pod="b""#), "{plain}");

        for encoding in ["gzip", "deflate, gzip;q=0.8"] {
            let (head, gz) = scrape_bytes(&exporter, accept, Some(encoding));
            assert!(head.contains("\r\ncontent-encoding: gzip"), "{head}");
            assert!(head.contains("\r\nvary: accept, accept-encoding"), "{head}");
            let content_type = plain_head.lines().find(|l| l.starts_with("content-type:"));
            assert_eq!(
                head.lines().find(|l| l.starts_with("content-type:")),
                content_type
            );
            let mut unzipped = String::new();
            GzDecoder::new(&gz[..])
                .read_to_string(&mut unzipped)
                .unwrap();
            assert!(gz.len() < unzipped.len());
            assert_eq!(
                without_scrape_duration(&unzipped),
                without_scrape_duration(&plain)
            );
        }

        for refused in ["identity", "gzip;q=0", "*"] {
            let (head, body) = scrape_bytes(&exporter, accept, Some(refused));
            assert!(!head.contains("content-encoding"), "{refused}: {head}");
            assert!(head.contains("\r\nvary: accept, accept-encoding"), "{head}");
            assert!(String::from_utf8(body).unwrap().contains(r#"pod="b""#));
        }
    }
    // Not compressed: the landing page, the readiness probe, errors.
    for path in ["/", "/readyz", "/nope"] {
        let mut s = TcpStream::connect(exporter.addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        assert!(!String::from_utf8_lossy(&raw)
            .to_ascii_lowercase()
            .contains("content-encoding"));
    }
}

/// Reads until the server closes `stream`; panics if it is still open after
/// 30 s (the server's idle timeouts are 10 s and 1 s).
fn closed_by_server(mut stream: TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("the server closes an idle connection");
}

/// Idle connections cannot starve the server: beyond `--web.max-connections`
/// a connection gets 503 and is closed, idle ones are closed after the
/// header timeout, and once they are gone scrapes get through again.
#[test]
fn idle_connections_beyond_the_cap_get_503_and_scrapes_recover() {
    podmeter_testkit::needs_root!();
    let pins = PinDir::new();
    let exporter =
        Exporter::start_command(Command::new(BIN), &pins.0, &["--web.max-connections=4"]);
    // They take every slot, in accept order, before the scrapes below.
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(exporter.addr).unwrap())
        .collect();
    // Many more than the cap, also idle: each is closed within a second.
    let over: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(exporter.addr).unwrap())
        .collect();
    let scrape = exporter.get("/metrics", None);
    assert_eq!(scrape.status, 503, "{}", scrape.body);
    assert_eq!(scrape.body, "Too many open connections, try again later.\n");
    assert!(scrape.head.contains("connection: close"), "{}", scrape.head);
    for stream in over {
        closed_by_server(stream);
    }

    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = exporter.get("/metrics", None).status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "still 503 10 s after the idle connections closed"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// hyper's header read timeout also closes idle keep-alive connections, so
/// they give their slot back (10 s here).
#[test]
fn idle_connections_are_closed_by_the_server() {
    podmeter_testkit::needs_root!();
    let pins = PinDir::new();
    let exporter = Exporter::start(BIN.as_ref(), &pins.0);
    let silent = TcpStream::connect(exporter.addr).unwrap();
    let mut kept_alive = TcpStream::connect(exporter.addr).unwrap();
    kept_alive
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    kept_alive.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let silent = thread::spawn(move || closed_by_server(silent));
    closed_by_server(kept_alive);
    silent.join().unwrap();
}
