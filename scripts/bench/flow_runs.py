#!/usr/bin/env python3
"""Runs a pinned tc program once per packet with BPF_PROG_TEST_RUN (repeat 1),
packet after packet, and prints the median ns per run: for flows.sh, which
needs a distinct packet per run (a new flow each time, or flows that take
turns so the per-CPU last-flow cache misses), which `bpftool prog run` with
one packet and a repeat count cannot give.

  flow_runs.py PROG IFINDEX DIR POD REMOTE FIRST COUNT PASSES [REPEAT]

DIR is transmit (POD sends to REMOTE: the host veth's ingress) or receive
(REMOTE sends to POD: egress). COUNT TCP SYNs, flows FIRST.. (the remote's
port over 1024..65535, then the next remote address) are each run once per
pass (REPEAT times in a row if given: the mean of those is the run's time);
prints one mean per pass, of the runs between the 10th and 90th percentile:
this VM's test-run timer moves in steps of ~50 ns, so a median of single
runs is one of those steps, and the trimmed mean is finer.
"""

import ctypes
import ipaddress
import os
import statistics
import struct
import sys

SYS_BPF = 321  # x86_64
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10

libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    ret = libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


class ObjGet(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32),
                ("file_flags", ctypes.c_uint32), ("path_fd", ctypes.c_int32),
                ("pad", ctypes.c_uint32)]


class TestRun(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


def syn(src, dst, sport, dport):
    """Ethernet + IPv4 + TCP SYN, 54 bytes."""
    eth = bytes.fromhex("0200000000020200000000010800")
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, src.packed, dst.packed)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, 0x02, 65535, 0, 0)
    return eth + ip + tcp


def main():
    prog, ifindex, direction, pod, remote, first, count, passes = sys.argv[1:9]
    repeat = int(sys.argv[9]) if len(sys.argv) > 9 else 1
    path = ctypes.create_string_buffer(prog.encode())
    fd = bpf(BPF_OBJ_GET, ObjGet(pathname=ctypes.addressof(path)))
    ctx = ctypes.create_string_buffer(192)  # struct __sk_buff, ifindex at 40
    struct.pack_into("<I", ctx, 40, int(ifindex))
    pod, remote = ipaddress.ip_address(pod), ipaddress.ip_address(remote)
    packets = []
    for i in range(int(count)):
        n = int(first) + i
        port = 1024 + n % 64512
        peer = ipaddress.ip_address(int(remote) + n // 64512)
        if direction == "transmit":
            packet = syn(pod, peer, 40000, port)
        else:
            packet = syn(peer, pod, port, 8080)
        packets.append(ctypes.create_string_buffer(packet, 54))
    attr = TestRun(prog_fd=fd, repeat=repeat, data_size_in=54,
                   ctx_size_in=192, ctx_in=ctypes.addressof(ctx))
    for _ in range(int(passes)):
        runs = []
        for p in packets:
            attr.data_in = ctypes.addressof(p)
            bpf(BPF_PROG_TEST_RUN, attr)
            runs.append(attr.duration)
        runs.sort()
        cut = len(runs) // 10
        print(round(statistics.mean(runs[cut:len(runs) - cut] or runs), 1))


main()
