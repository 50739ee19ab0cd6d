//! Reading the network directory without trusting what is in it.
//!
//! Anything can end up in `<dataDir>/<network>/`: a half-written file from another
//! tool, a FIFO, a symlink, a name that is not UTF-8. One such entry must not fail
//! (or hang) every verb of the network, so each entry is classified by name and type,
//! only regular files are ever opened, and what does not fit is reported on stderr
//! and left alone.

use std::{
    ffi::OsString,
    fs::{self, File, FileType, OpenOptions},
    io::{self, ErrorKind, Read},
    net::IpAddr,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

pub const LOCK_FILE: &str = "lock";
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Starts with a dot so no tool mistakes a temp file for a lease.
pub const TEMP_PREFIX: &str = ".tmp-";

/// What a directory entry's name says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// An address in its canonical text form, as host-local names lease files.
    Lease(IpAddr),
    /// A file of the store that is not a lease (`lock`, `last_reserved_ip.N`).
    Bookkeeping,
    /// One of our temp files, left by a crash mid-write.
    Temp,
    /// Anything else, including names that are not UTF-8.
    Foreign,
}

/// One entry of the directory: its name as the kernel has it, and its type (lstat's,
/// so a symlink is a symlink).
#[derive(Debug)]
pub struct Entry {
    pub name: OsString,
    pub file_type: FileType,
}

pub fn entries(dir: &Path) -> io::Result<Vec<Entry>> {
    fs::read_dir(dir)?
        .map(|entry| {
            let entry = entry?;
            Ok(Entry {
                name: entry.file_name(),
                file_type: entry.file_type()?,
            })
        })
        .collect()
}

pub fn classify(name: &OsString) -> Name {
    let Some(name) = name.to_str() else {
        return Name::Foreign;
    };
    // "fd00::05" parses, but host-local would write "fd00::5": a second file for
    // the same address could lead to two leases of it.
    match name.parse::<IpAddr>() {
        Ok(ip) if ip.to_string() == name => return Name::Lease(ip),
        _ => {}
    }
    let last_reserved = name
        .strip_prefix(LAST_RESERVED_PREFIX)
        .is_some_and(|set| set.parse::<usize>().is_ok());
    if name == LOCK_FILE || last_reserved {
        Name::Bookkeeping
    } else if name.starts_with(TEMP_PREFIX) {
        Name::Temp
    } else {
        Name::Foreign
    }
}

/// What reading a file the store expects to be small and regular found.
#[derive(Debug)]
pub enum Content {
    Bytes(Vec<u8>),
    Missing,
    /// Not a regular file (the entry was swapped after it was listed, or is a symlink).
    NotAFile(&'static str),
    /// Longer than any file of the store can be.
    TooLarge,
}

/// Reads at most `limit` bytes of the regular file `path`. O_NOFOLLOW so a symlink
/// is not followed out of the directory, O_NONBLOCK so that a FIFO swapped in after
/// the directory was listed cannot block the open (or the read).
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Content> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Content::Missing),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Content::NotAFile("a symlink"))
        }
        Err(e) => return Err(e),
    };
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        return Ok(Content::NotAFile(describe(file_type)));
    }
    read_limited(file, limit)
}

fn read_limited(file: File, limit: u64) -> io::Result<Content> {
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(Content::TooLarge);
    }
    Ok(Content::Bytes(bytes))
}

/// A file type in words, for warnings.
pub fn describe(file_type: FileType) -> &'static str {
    if file_type.is_file() {
        "a regular file"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symlink"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}
