//! The cookie the kernel gives each network namespace: what the drop
//! tracer sees as `dev->nd_net.net->net_cookie`.

use nix::{
    getsockopt_impl, sockopt_impl,
    sys::socket::{getsockopt, socket, AddressFamily, SockFlag, SockType},
};

// nix has no `SO_NETNS_COOKIE` (Linux 5.14) yet; its macro makes one, so the
// getsockopt call and its unsafe stay nix's.
sockopt_impl!(
    NetnsCookie,
    GetOnly,
    libc::SOL_SOCKET,
    libc::SO_NETNS_COOKIE,
    u64
);

/// The cookie of the calling thread's network namespace.
pub fn current_netns_cookie() -> std::io::Result<u64> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    Ok(getsockopt(&sock, NetnsCookie)?)
}
