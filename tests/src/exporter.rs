//! The exporter as a test drives it: the real binary on an ephemeral
//! loopback port, raw HTTP requests, and checks of what it serves.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    daemon::{self, Log},
    http::{self, Response},
    Node, Pod,
};

/// The exporter process; killed on drop if a test failed before stopping it.
pub struct Exporter {
    child: Child,
    pub addr: SocketAddr,
    log: Log,
}

impl Exporter {
    /// Starts `binary` on an ephemeral loopback port, serving `pin_path`.
    pub fn start(binary: &Path, pin_path: &Path) -> Self {
        Self::start_command(Command::new(binary), pin_path, &[])
    }

    /// Starts the exporter with `command`: its binary, or a wrapper whose
    /// last argument is the binary (`nsenter`, `setpriv`). The listen
    /// address, pin path and shutdown timeout are appended, then `args`.
    pub fn start_command(mut command: Command, pin_path: &Path, args: &[&str]) -> Self {
        let mut child = command
            .args(["--web.listen-address", "127.0.0.1:0", "--bpf.pin-path"])
            .arg(pin_path)
            // Long, so that an exit within it shows idle connections do not wait for it.
            .args(["--web.shutdown-timeout", "30s"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (addr, log) =
            daemon::wait_listening(&mut child, "podmeter-exporter", Duration::from_secs(10));
        Self { child, addr, log }
    }

    pub fn request(&self, raw: &[u8]) -> Response {
        http::request(self.addr, raw)
    }

    pub fn get(&self, path: &str, accept: Option<&str>) -> Response {
        http::get(self.addr, path, accept)
    }

    pub fn metrics(&self) -> String {
        let r = self.get("/metrics", None);
        assert_eq!(r.status, 200);
        r.body
    }

    pub fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "still running 5 s after SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGKILL`) to the exporter.
    pub fn signal(&self, signal: libc::c_int) {
        crate::signal(
            self.child.id(),
            nix::sys::signal::Signal::try_from(signal).unwrap(),
        );
    }

    /// Waits for the exporter to exit (after a signal).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// The exporter's pid (wrappers such as `nsenter` and `setpriv` exec it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log once a line contains `needle` (stderr is read by another
    /// thread, so a line logged during a request may arrive after its
    /// answer); panics with the log after 10 s without one.
    pub fn log_with(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.lines().any(|l| l.contains(needle)) {
                return log;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no log line with {needle:?} in:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of the series `name_and_labels` (exactly as exported).
pub fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

pub use podmeter_testkit::promtool::check_metrics as promtool_check_metrics;

/// The series of a test pod (namespace `test`, interface `eth0`) in a
/// per-pod counter family (`receive_bytes`, ...).
pub fn pod_series(family: &str, pod: &str) -> String {
    pod_series_in(family, "test", pod)
}

/// The series of pod `namespace/pod` (interface `eth0`) in a per-pod
/// counter family.
pub fn pod_series_in(family: &str, namespace: &str, pod: &str) -> String {
    format!(
        r#"podmeter_pod_{family}_total{{namespace="{namespace}",pod="{pod}",interface="eth0"}}"#
    )
}

/// Scrapes (with `scrape`) while the kernel's counters of `pod`'s host veth
/// stand still, asserts that the scraped counters of the pod named `name`
/// equal them, and returns the scrape.
pub fn assert_scrape_matches_kernel(
    node: &Node,
    pod: &Pod,
    name: &str,
    scrape: impl Fn() -> String,
) -> String {
    assert_scrape_matches_kernel_of(node, &pod.host_ifname(), "test", name, scrape)
}

/// [`assert_scrape_matches_kernel`] for any pod: `namespace/name`, whose
/// host veth is `host_ifname` (pods a runtime made).
pub fn assert_scrape_matches_kernel_of(
    node: &Node,
    host_ifname: &str,
    namespace: &str,
    name: &str,
    scrape: impl Fn() -> String,
) -> String {
    let (metrics, kernel) = node.quiet_snapshot(host_ifname, scrape);
    let value =
        |family: &str| sample(&metrics, &pod_series_in(family, namespace, name)).map(|v| v as u64);
    assert_eq!(
        [
            value("receive_packets"),
            value("receive_bytes"),
            value("transmit_packets"),
            value("transmit_bytes"),
        ],
        [
            Some(kernel.tx_packets),
            Some(kernel.tx_bytes),
            Some(kernel.rx_packets),
            Some(kernel.rx_bytes),
        ],
        "{namespace}/{name}: scraped vs kernel {kernel:?}"
    );
    metrics
}
