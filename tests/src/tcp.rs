//! Real TCP from inside pod namespaces, and the kernel's own TCP counters
//! of a namespace (`/proc/net/snmp`, what `nstat` reads): for the tests of
//! podmeter's per-pod TCP statistics.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{packet::set_option, NetNs};

/// The `Tcp:` line of `/proc/net/snmp` in `ns`: RetransSegs, OutRsts,
/// ActiveOpens, PassiveOpens, CurrEstab...
pub fn snmp_tcp(ns: &NetNs) -> HashMap<String, u64> {
    let snmp = ns.exec(&["cat", "/proc/net/snmp"]);
    let mut lines = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        // MaxConn is -1.
        .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
        .collect()
}

/// A listener in a pod that takes every connection on a thread of its own:
/// reads until the peer's FIN, answers `reply` bytes, closes. Connections
/// kept open by the peer stay open. Stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &NetNs, ip: &str, port: u16, reply: usize) -> Self {
        let ip: IpAddr = ip.parse().unwrap();
        let listener = ns.run_in(|| TcpListener::bind((ip, port)).unwrap());
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        std::thread::spawn(move || serve(conn, reply));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

fn serve(mut conn: TcpStream, reply: usize) {
    conn.set_nonblocking(false).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            // Reset by the peer (SO_LINGER 0).
            Err(_) => return,
        }
    }
    let _ = conn.write_all(&vec![b'r'; reply]);
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection from inside `ns` to `to` (its socket lives in `ns`).
pub fn connect(ns: &NetNs, to: SocketAddr) -> std::io::Result<TcpStream> {
    ns.run_in(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
}

/// One whole exchange from `ns`: connect, send `send` bytes, FIN, read the
/// answer to its end, close.
pub fn exchange(ns: &NetNs, to: SocketAddr, send: usize) -> usize {
    let mut conn = connect(ns, to).unwrap();
    conn.write_all(&vec![b's'; send]).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    answer.len()
}

/// Connects from `ns`, sends a little and closes with `SO_LINGER` 0: the
/// pod sends a reset instead of a FIN.
pub fn abort(ns: &NetNs, to: SocketAddr) {
    let mut conn = connect(ns, to).unwrap();
    conn.write_all(b"bye").unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_option(&conn, libc::SOL_SOCKET, libc::SO_LINGER, &linger);
}

/// Waits until the TCP counters of every namespace in `namespaces` stood
/// still for a while (retransmission timers and closing handshakes done).
pub fn wait_quiet(namespaces: &[&NetNs]) {
    let read = || namespaces.iter().map(|ns| snmp_tcp(ns)).collect::<Vec<_>>();
    let mut last = read();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(300));
        let now = read();
        if now == last {
            return;
        }
        last = now;
    }
    panic!("TCP counters never stood still: {last:?}");
}
