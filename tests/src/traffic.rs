//! TCP and UDP between pods from the test process itself: sockets made on
//! a thread inside a pod's namespace stay in it, so no helper process is
//! needed and nothing outlives the test.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::NetNs;

/// A loop on a thread of its own, run until drop.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Runs `step` until dropped; `step` must return within ~20 ms.
    pub fn run(mut step: impl FnMut() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                step();
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP server on every address (IPv4 and IPv6) of `ns` at `port`: each
/// connection is handed to `serve`. Stops on drop.
pub fn tcp_server(
    ns: &NetNs,
    port: u16,
    mut serve: impl FnMut(TcpStream) + Send + 'static,
) -> Background {
    let listener = ns.run_in(|| TcpListener::bind(("::", port)).expect("bind"));
    listener.set_nonblocking(true).unwrap();
    Background::run(move || match listener.accept() {
        Ok((stream, _)) => serve(stream),
        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
        Err(e) => panic!("accept: {e}"),
    })
}

/// A TCP server in a pod: greets every connection with `hi`. Stops on drop.
pub struct TcpServer {
    _running: Background,
}

impl TcpServer {
    /// Listens on every address (IPv4 and IPv6) of `ns` at `port`.
    pub fn start(ns: &NetNs, port: u16) -> Self {
        let _running = tcp_server(ns, port, |mut stream| {
            let _ = stream.write_all(b"hi");
        });
        Self { _running }
    }
}

/// Connects from `ns` to `addr:port` and reads the greeting: true if the
/// whole exchange (SYN, SYN-ACK, data both ways) worked within `timeout`.
pub fn tcp_talks(ns: &NetNs, addr: &str, port: u16, timeout: Duration) -> bool {
    let to = SocketAddr::new(addr.parse().unwrap(), port);
    ns.run_in(|| {
        let Ok(mut stream) = TcpStream::connect_timeout(&to, timeout) else {
            return false;
        };
        stream.set_read_timeout(Some(timeout)).unwrap();
        let mut greeting = [0u8; 2];
        stream.read_exact(&mut greeting).is_ok() && &greeting == b"hi"
    })
}

/// Sends one UDP datagram from `ns` to `addr:port`, where nothing listens,
/// and says whether the ICMP port-unreachable error came back (the
/// connected socket then reports `ConnectionRefused`).
pub fn udp_refused(ns: &NetNs, addr: &str, port: u16) -> bool {
    let to = SocketAddr::new(addr.parse().unwrap(), port);
    ns.run_in(|| {
        let socket = connected_udp(to, Duration::from_secs(2));
        socket.send(b"anyone?").unwrap();
        let mut buf = [0u8; 16];
        matches!(socket.recv(&mut buf), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
    })
}

/// A UDP socket of `to`'s family connected to `to`, with a read timeout:
/// the kernel delivers it only datagrams from `to`. Call it on a thread
/// inside the namespace ([`NetNs::run_in`]).
pub fn connected_udp(to: SocketAddr, timeout: Duration) -> UdpSocket {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(any).unwrap();
    socket.connect(to).unwrap();
    socket.set_read_timeout(Some(timeout)).unwrap();
    socket
}

/// One `busybox ping` from `ns`: true if the reply came.
pub fn pings(ns: &NetNs, addr: &str) -> bool {
    ns.try_exec(&["busybox", "ping", "-c", "1", "-W", "1", addr])
        .status
        .success()
}
