//! What a pinned TCX link is attached to. aya 0.14's `LinkInfo` has the
//! program id but not the link's interface, and its `FdLink` gives no fd to
//! ask with, so this asks the kernel directly (`BPF_OBJ_GET`,
//! `BPF_OBJ_GET_INFO_BY_FD`).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_TYPE_TCX: u32 = 11;

/// A live TCX link: its program and its interface. A link whose interface
/// is gone is defunct, and the kernel reports interface 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcxLink {
    pub program_id: u32,
    pub ifindex: u32,
}

/// The TCX link pinned at `path`; `Ok(None)` if the pin is another kind of
/// link.
pub fn tcx_link(path: &Path) -> io::Result<Option<TcxLink>> {
    let fd = obj_get(path)?;
    // struct bpf_link_info: type, id, prog_id, then a union aligned to 8
    // whose tcx member is { ifindex, attach_type }.
    let mut info = [0u32; 16];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let attr = InfoAttr {
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &attr)?;
    Ok((info[0] == BPF_LINK_TYPE_TCX).then_some(TcxLink {
        program_id: info[2],
        ifindex: info[4],
    }))
}

fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct GetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let name = CString::new(path.as_os_str().as_bytes())?;
    let attr = GetAttr {
        pathname: name.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = bpf(BPF_OBJ_GET, &attr)?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a prefix of `union bpf_attr` for `cmd`, valid for
    // the call, and its size is passed along; the kernel zero-fills the rest.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}
