//! A fixed delay on chosen packets, for a kernel without netem: an
//! nftables `queue` rule hands them to [`Delay`], which accepts each one
//! a fixed time after it arrived (the nfnetlink_queue protocol, spoken
//! over a raw netlink socket: only metadata is copied, never the packet).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{packet::set_option, NetNs};

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_ACCEPT: u32 = 1;

/// Accepts the packets of queue `num` of a namespace `delay` after they
/// were queued, in their order. Stops (and the queue's packets are dropped
/// by the kernel) on drop.
pub struct Delay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Delay {
    pub fn start(ns: &NetNs, num: u16, delay: Duration) -> Self {
        let fd = ns.run_in(|| open(num)).expect("nfnetlink_queue socket");
        let fd = Arc::new(fd);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<(u32, Instant)>();
        let reader = {
            let (fd, stop) = (fd.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: a valid socket and buffer of that length.
                    let n = unsafe {
                        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    if n <= 0 {
                        continue; // the receive timeout: look at `stop`
                    }
                    let at = Instant::now() + delay;
                    for id in packet_ids(&buf[..n as usize]) {
                        let _ = tx.send((id, at));
                    }
                }
            })
        };
        let releaser = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while let Ok((id, at)) = rx.recv() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    let mut attr = NF_ACCEPT.to_be_bytes().to_vec();
                    attr.extend(id.to_be_bytes());
                    send(
                        fd.as_raw_fd(),
                        NFQNL_MSG_VERDICT,
                        num,
                        &[(NFQA_VERDICT_HDR, &attr)],
                    );
                }
            })
        };
        Self {
            stop,
            threads: vec![reader, releaser],
        }
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The reader ends within its receive timeout, dropping the channel,
        // which ends the releaser.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A netlink socket bound to queue `num`, copying metadata only.
fn open(num: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain socket calls; the fd is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, NETLINK_NETFILTER) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    set_option(&owned, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout);
    // SAFETY: a zeroed sockaddr_nl is the kernel-assigned address.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: valid socket and address of its size.
    if unsafe {
        libc::bind(
            fd,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; }
    let bind = [NFQNL_CFG_CMD_BIND, 0, 0, 0];
    send(fd, NFQNL_MSG_CONFIG, num, &[(NFQA_CFG_CMD, &bind)]);
    // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode; }
    let mut params = 0u32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_META);
    send(fd, NFQNL_MSG_CONFIG, num, &[(NFQA_CFG_PARAMS, &params)]);
    Ok(owned)
}

/// Sends one nfnetlink_queue message with `attrs` for queue `num`.
fn send(fd: RawFd, msg: u16, num: u16, attrs: &[(u16, &[u8])]) {
    // struct nfgenmsg: AF_UNSPEC, version 0, the queue.
    let mut body = vec![0u8, 0];
    body.extend(num.to_be_bytes());
    for (kind, payload) in attrs {
        body.extend(((4 + payload.len()) as u16).to_ne_bytes());
        body.extend(kind.to_ne_bytes());
        body.extend(*payload);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
    m.extend(((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
    m.extend((libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend([0u8; 8]); // seq, pid
    m.extend(body);
    // SAFETY: valid socket and buffer.
    let n = unsafe { libc::send(fd, m.as_ptr().cast(), m.len(), 0) };
    assert_eq!(n, m.len() as isize, "{}", io::Error::last_os_error());
}

/// The packet ids of the queued-packet messages in `buf`.
fn packet_ids(mut buf: &[u8]) -> Vec<u32> {
    let mut ids = Vec::new();
    let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        if u16_at(buf, 4) == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            // After the netlink header and nfgenmsg, the attributes.
            let mut attrs = &buf[20..len];
            while attrs.len() >= 4 {
                let alen = u16_at(attrs, 0) as usize;
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                if u16_at(attrs, 2) & 0x7fff == NFQA_PACKET_HDR && alen >= 8 {
                    ids.push(u32::from_be_bytes(attrs[4..8].try_into().unwrap()));
                }
                attrs = &attrs[alen.next_multiple_of(4).min(attrs.len())..];
            }
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    ids
}
