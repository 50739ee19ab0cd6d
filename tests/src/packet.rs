//! Raw packet sockets (`AF_PACKET`) in a pod, as a pod with CAP_NET_RAW
//! makes them: to send frames of its own, or to capture like tcpdump.
//! Made on a thread inside the pod's namespace, they stay bound there.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// What a capturing socket receives: every protocol (`ETH_P_ALL`).
pub const ALL: u16 = libc::ETH_P_ALL as u16;
/// A socket that only sends (protocol 0: the kernel delivers it nothing).
pub const NONE: u16 = 0;

/// A raw packet socket for `protocol`, bound to `ifname` of the calling
/// thread's netns.
pub fn bind(ifname: &str, protocol: u16) -> OwnedFd {
    let name = std::ffi::CString::new(ifname).unwrap();
    let protocol = protocol.to_be();
    // SAFETY: plain syscalls on values made here; the fd is owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol.into());
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        let bound = libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(bound, 0, "bind: {}", io::Error::last_os_error());
        fd
    }
}

/// Sends `frame` (from its Ethernet header on); errors such as ENOBUFS are
/// the caller's point when flooding, so they are not reported.
pub fn send(socket: &OwnedFd, frame: &[u8]) {
    // SAFETY: a valid socket and a buffer of the given length.
    unsafe { libc::send(socket.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
}

/// Shrinks the socket's receive buffer to the kernel's minimum.
pub fn shrink_receive_buffer(socket: &OwnedFd) {
    set_option(
        socket,
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        &(1 as libc::c_int),
    );
}

/// `setsockopt` of any socket with a value of type `T` (an int, a
/// `linger`, a `timeval`); panics if the kernel refuses it.
pub fn set_option<T>(socket: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: &T) {
    // SAFETY: a valid socket and a value of the size given.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    assert_eq!(
        set,
        0,
        "setsockopt {level}/{name}: {}",
        io::Error::last_os_error()
    );
}

/// Frames the socket dropped since the last call (`PACKET_STATISTICS`).
pub fn drops(socket: &OwnedFd) -> u32 {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of_val(&stats) as u32;
    // SAFETY: the option's struct and its size.
    let got = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &mut len,
        )
    };
    assert_eq!(got, 0, "PACKET_STATISTICS: {}", io::Error::last_os_error());
    stats.tp_drops
}
