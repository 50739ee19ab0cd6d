//! Reading whole maps with `BPF_MAP_LOOKUP_BATCH` (Linux ≥ 5.6): one
//! syscall per few thousand entries instead of two per entry
//! (`get_next_key`, then a lookup), which is what a scrape of a full node
//! spent most of its time on. aya 0.14 has no batch operations; this is the
//! one raw syscall. A kernel without them for a map gets the iteration.
//!
//! A batch read of a hash map is not a snapshot either, and no worse than an
//! iteration: each bucket is read under its lock, and an entry deleted
//! meanwhile does not restart the walk (`get_next_key` of a deleted key
//! starts over at the first key, which can return entries twice).

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::{maps::MapError, sys::SyscallError, Pod};

use crate::abi::PodCounter;

/// Entries per syscall: bounded, as the kernel allocates buffers of this
/// size for each call.
const CHUNK: usize = 4096;

/// Every entry of a map, keys and values packed as the kernel wrote them.
pub(super) struct Raw {
    keys: Vec<u8>,
    values: Vec<u8>,
    key_size: usize,
    value_size: usize,
    count: usize,
}

impl Raw {
    pub(super) fn entries<K: Pod>(&self) -> impl Iterator<Item = (K, &[u8])> + '_ {
        assert_eq!(size_of::<K>(), self.key_size);
        (0..self.count).map(|i| {
            // SAFETY: `K: Pod` (any bit pattern is a value) and the buffer
            // holds `count` keys of its size; read unaligned.
            let key: K = unsafe {
                std::ptr::read_unaligned(self.keys.as_ptr().add(i * self.key_size).cast::<K>())
            };
            (
                key,
                &self.values[i * self.value_size..(i + 1) * self.value_size],
            )
        })
    }
}

/// A per-CPU map of [`PodCounter`]s: one value per possible CPU, each
/// rounded up to 8 bytes (it is 16).
pub(super) fn read_per_cpu(fd: &impl AsFd, key_size: usize) -> Result<Option<Raw>, MapError> {
    let cpus = aya::util::nr_cpus().map_err(|(_, io_error)| SyscallError {
        call: "nr_cpus",
        io_error,
    })?;
    read_all(fd, key_size, cpus * size_of::<PodCounter>())
}

/// The sum over CPUs of a per-CPU [`PodCounter`] value, wrapping as
/// `PinnedMaps::counters` does (one CPU's share can be below zero).
pub(super) fn sum_cpus(value: &[u8]) -> PodCounter {
    let mut total = PodCounter::default();
    for cpu in value.chunks_exact(size_of::<PodCounter>()) {
        let word = |i: usize| u64::from_ne_bytes(cpu[i..i + 8].try_into().expect("8 bytes"));
        total.packets = total.packets.wrapping_add(word(0));
        total.bytes = total.bytes.wrapping_add(word(8));
    }
    total
}

/// Reads every entry, [`CHUNK`] at a time; `None` if the kernel has no
/// batch lookup for this map.
pub(super) fn read_all(
    fd: &impl AsFd,
    key_size: usize,
    value_size: usize,
) -> Result<Option<Raw>, MapError> {
    let mut raw = Raw {
        keys: Vec::new(),
        values: Vec::new(),
        key_size,
        value_size,
        count: 0,
    };
    // The kernel's position in the map: where the next call starts.
    let mut token: Option<u64> = None;
    loop {
        raw.keys.resize((raw.count + CHUNK) * key_size, 0);
        raw.values.resize((raw.count + CHUNK) * value_size, 0);
        let keys = &mut raw.keys[raw.count * key_size..];
        let values = &mut raw.values[raw.count * value_size..];
        match lookup_batch(fd.as_fd(), &mut token, keys, values) {
            Ok((n, done)) => {
                raw.count += n;
                if done {
                    raw.keys.truncate(raw.count * key_size);
                    raw.values.truncate(raw.count * value_size);
                    return Ok(Some(raw));
                }
            }
            Err(e) if token.is_none() && unsupported(&e) => return Ok(None),
            Err(io_error) => {
                return Err(SyscallError {
                    call: "bpf_map_lookup_batch",
                    io_error,
                }
                .into())
            }
        }
    }
}

fn unsupported(e: &io::Error) -> bool {
    // 524: the kernel's own ENOTSUPP.
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | 524)
    )
}

/// `struct bpf_attr`'s part for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// One `BPF_MAP_LOOKUP_BATCH` of up to [`CHUNK`] entries into `keys` and
/// `values` (each sized for that many), from the start (`token` `None`) or
/// where the previous call left `token`, which it updates. Returns the
/// entries read and whether the map is done.
fn lookup_batch(
    fd: BorrowedFd<'_>,
    token: &mut Option<u64>,
    keys: &mut [u8],
    values: &mut [u8],
) -> io::Result<(usize, bool)> {
    // Room for the kernel's token (a u32 bucket index for hash maps).
    let in_token = token.unwrap_or(0);
    let mut out_token = 0u64;
    let mut attr = BatchAttr {
        in_batch: if token.is_some() {
            &in_token as *const u64 as u64
        } else {
            0
        },
        out_batch: &mut out_token as *mut u64 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: CHUNK as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for this command; the
    // kernel writes at most `count` keys and values into the buffers, which
    // the caller sized for `CHUNK` entries, and the token into `out_token`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut BatchAttr,
            size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    let done = if ret < 0 {
        let e = io::Error::last_os_error();
        // ENOENT: the end of the map; `count` has what this call read.
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
        true
    } else {
        false
    };
    *token = Some(out_token);
    Ok((attr.count as usize, done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_sum_wrapping() {
        let mut value = Vec::new();
        for (packets, bytes) in [(3u64, 300u64), (u64::MAX, u64::MAX - 99)] {
            value.extend_from_slice(&packets.to_ne_bytes());
            value.extend_from_slice(&bytes.to_ne_bytes());
        }
        assert_eq!(
            sum_cpus(&value),
            PodCounter {
                packets: 2,
                bytes: 200
            }
        );
    }
}
