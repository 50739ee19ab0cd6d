//! Basic auth under a flood of unverified credentials (issue 18), on the
//! real binary over loopback: a scrape with a credential verified before
//! is answered while bcrypt is busy with wrong passwords that would take
//! minutes, and an unknown user costs what a wrong password does.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use base64::Engine as _;
use podmeter_tests::exporter::Exporter;

const BIN: &str = env!("CARGO_BIN_EXE_podmeter-exporter");

/// Prometheus' own user: a cheap hash (cost 4), verified once and cached.
const PROMETHEUS: (&str, &str) = ("prometheus", "prometheus-password");
const PROMETHEUS_HASH: &str = "$2b$04$nF21oKgfxqczsu739Iqd0O0Y0P/nEeGe5E0uy5LvU/rsoLK6MT.Bi";
/// "admin-password" at cost 17 (~10 s per verification in a release
/// build) and at cost 11 (~0.15 s): hashed once, outside the suite.
const ADMIN_17: &str = "$2b$17$J7LfNaCD0JfT1EvpGTmc7OMKdCMYVCz51d35nBE.mAm4LVeUIrMdu";
const ADMIN_11: &str = "$2b$11$skjNXB0oFFVLkIZ2ScSkReZZXq1Yy8n1ZC5tR8jGdFpVhFQpahjKS";

fn start(dir: &tempfile::TempDir, admin_hash: &str, args: &[&str]) -> Exporter {
    let path = dir.path().join("web.yml");
    fs::write(
        &path,
        format!(
            "basic_auth_users:\n  {}: '{PROMETHEUS_HASH}'\n  admin: '{admin_hash}'\n",
            PROMETHEUS.0
        ),
    )
    .unwrap();
    let flag = format!("--web.config.file={}", path.display());
    let mut all = vec![flag.as_str()];
    all.extend_from_slice(args);
    Exporter::start_command(Command::new(BIN), &dir.path().join("no-pins"), &all)
}

/// The status of a GET /metrics as `user`; `None` if the connection ended
/// without an answer (the exporter was stopped first).
fn status(addr: SocketAddr, user: &str, password: &str) -> Option<u16> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut s = TcpStream::connect(addr).ok()?;
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: test\r\nAuthorization: Basic {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

#[test]
fn a_cached_scrape_is_answered_while_bcrypt_is_busy_with_wrong_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = start(&dir, ADMIN_17, &["--web.max-connections=8"]);
    let addr = exporter.addr;
    assert_eq!(status(addr, PROMETHEUS.0, PROMETHEUS.1), Some(200));

    // As many wrong passwords as there are connection slots, at once.
    let (tx, rx) = mpsc::channel();
    for i in 0..8 {
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = tx.send(status(addr, "admin", &format!("wrong-{i}")));
        });
    }
    // One is verified (at cost 17: seconds, minutes in a debug build); the
    // others are told at once to come back, and their connections close.
    for _ in 0..7 {
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("seven unverified requests answered at once");
        assert_eq!(got, Some(429));
    }
    let start = Instant::now();
    assert_eq!(status(addr, PROMETHEUS.0, PROMETHEUS.1), Some(200));
    eprintln!("cached scrape during the flood: {:?}", start.elapsed());
    // Structural, not timed: the eighth is still being verified, so the
    // scrape did not wait for the bcrypt permit.
    assert!(
        rx.try_recv().is_err(),
        "the cost-17 verification ended first"
    );
}

/// The exporter's CPU time so far (user + system, in clock ticks): the
/// work bcrypt did, whatever else the machine runs meanwhile (wall time
/// on a shared machine is not).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name's closing parenthesis: state is field 3,
    // utime and stime fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// An unknown user's decoy is verified at the costliest user's cost (11
/// here, beside a cost-4 user): each cost step doubles bcrypt's work, so a
/// decoy of any other cost (the old fixed 10, or 4) would be 2x off or
/// more, far outside the 20 % allowed. Compared in the exporter's CPU time
/// over five requests each, new passwords each time (cached answers would
/// cost nothing).
#[test]
fn an_unknown_user_costs_as_much_as_a_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = start(&dir, ADMIN_11, &[]);
    let (addr, pid) = (exporter.addr, exporter.pid());
    let cost = |user: &str, kind: &str| {
        let before = cpu_ticks(pid);
        for i in 0..5 {
            assert_eq!(status(addr, user, &format!("{kind}-{i}")), Some(401));
        }
        cpu_ticks(pid) - before
    };
    let wrong = cost("admin", "wrong");
    let unknown = cost("nobody", "any");
    let ratio = unknown as f64 / wrong as f64;
    eprintln!("CPU ticks: wrong password {wrong}, unknown user {unknown} (ratio {ratio:.2})");
    assert!((0.8..=1.25).contains(&ratio), "{wrong} vs {unknown} ticks");
}
