//! A real Prometheus (Debian's) on loopback, running a copy of the shipped
//! `prometheus/prometheus.yml` and rules with 1 s intervals against a test's
//! exporter. Killed, and its data removed, on drop.

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::http::{self, url_encode};

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// The repository's Prometheus assets.
pub fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../prometheus")
}

impl Prometheus {
    pub fn start(exporter: SocketAddr) -> Self {
        Self::start_with(exporter, |config| config)
    }

    /// As `start`, with the config passed through `edit` before use (e.g.
    /// to scrape over TLS with basic auth).
    pub fn start_with(exporter: SocketAddr, edit: impl FnOnce(String) -> String) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pmtest-prom")
            .tempdir()
            .unwrap();
        let shipped = fs::read_to_string(assets().join("prometheus.yml")).unwrap();
        let config = shipped
            .replace("127.0.0.1:9977", &exporter.to_string())
            .replace("interval: 15s", "interval: 1s")
            .replace(
                "rules/*.yml",
                &format!("{}/rules/*.yml", assets().display()),
            );
        assert!(
            config.contains(&exporter.to_string()),
            "target not found in prometheus.yml"
        );
        let config = edit(config);
        let config_path = dir.path().join("prometheus.yml");
        fs::write(&config_path, config).unwrap();

        let addr = free_loopback_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's package) must be installed: run scripts/setup.sh");
        let prometheus = Self {
            child,
            addr,
            _dir: dir,
        };
        prometheus.wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(addr).is_ok()
                && http::get(addr, "/-/ready", None).status == 200
        });
        prometheus
    }

    /// `data` of an instant query; panics unless Prometheus says `success`.
    pub fn query(&self, promql: &str) -> Value {
        let r = http::get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(promql)),
            None,
        );
        let json: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{e}: {} for {promql}", r.body));
        assert_eq!(json["status"], "success", "{promql}: {json}");
        json["data"].clone()
    }

    /// The result vector of `promql` once it is not empty.
    pub fn wait_for(&self, promql: &str, timeout: Duration) -> Vec<Value> {
        let mut result = Vec::new();
        self.wait_until(timeout, || {
            result = self.query(promql)["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            !result.is_empty()
        });
        result
    }

    /// Every loaded rule as `(type, name, query)`, from `/api/v1/rules`.
    pub fn rules(&self) -> Vec<(String, String, String)> {
        let r = http::get(self.addr, "/api/v1/rules", None);
        let json: Value = serde_json::from_str(&r.body).unwrap();
        json["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                (s("type"), s("name"), s("query"))
            })
            .collect()
    }

    fn wait_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < timeout,
                "Prometheus: timed out after {timeout:?}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port nothing listens on right now.
pub fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
