//! Entries in the network directory that are not leases: no verb fails or hangs
//! on them, and each gets the semantics documented in `disk.rs`.

use std::{
    fs,
    os::unix::{ffi::OsStrExt, fs::symlink, net::UnixListener},
    path::Path,
    sync::mpsc,
    thread,
    time::Duration,
};

use nix::{sys::stat::Mode, unistd::mkfifo};
use serde_json::json;

use super::{
    disk::DiskStore,
    disk_tests::{add, conf, ctx},
    store::{Holder, LeaseStore},
};

/// Runs `f` on a thread and fails the test if it has not returned in time: reading a
/// FIFO would block forever, and a hanging test says less than a failing one.
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(20))
        .expect("a verb hung (or panicked) on a hostile directory entry")
}

fn fifo(path: &Path) {
    mkfifo(path, Mode::from_bits_truncate(0o644)).unwrap();
}

#[test]
fn hostile_entries_break_no_verb() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    let net = data.join("net1");
    fs::create_dir(&net).unwrap();
    // 10.0.0.0/29 hands out .2 to .6; only .6 has no file.
    fs::write(net.join("10.0.0.2"), b"\xff\xfe not utf-8").unwrap();
    fifo(&net.join("10.0.0.3"));
    // Readable if followed, and it would then look like a lease of "root:x:0:0...".
    symlink("/etc/passwd", net.join("10.0.0.4")).unwrap();
    let _socket = UnixListener::bind(net.join("10.0.0.5")).unwrap();
    fifo(&net.join("last_reserved_ip.0"));
    fs::write(net.join(std::ffi::OsStr::from_bytes(b"junk\xff")), "x").unwrap();
    fs::write(net.join("README"), "notes").unwrap();
    fs::create_dir(net.join("subdir")).unwrap();

    let (holders, added, freed_by_gc) = within(move || {
        let store = DiskStore::open(&net, Duration::from_secs(1)).unwrap();
        let mut holders: Vec<_> = store
            .leases()
            .unwrap()
            .into_iter()
            .map(|l| (l.ip.to_string(), l.holder))
            .collect();
        holders.sort_by(|a, b| a.0.cmp(&b.0));
        drop(store);

        let conf = conf(&data, json!({"subnet": "10.0.0.0/29"}));
        let added = add(&conf, &ctx("a", "eth0")).unwrap();
        conf.check(&ctx("a", "eth0")).unwrap();
        conf.del(&ctx("a", "eth0")).unwrap();
        // GC with nothing valid: frees the garbage lease, leaves what is not a file.
        conf.gc(&ctx("", ""), &[]).unwrap();
        let after_gc = add(&conf, &ctx("b", "eth0")).unwrap();
        (holders, added, after_gc)
    });

    assert_eq!(
        holders,
        [
            ("10.0.0.2".to_string(), Holder::Garbage),
            ("10.0.0.3".to_string(), Holder::Unknown),
            ("10.0.0.4".to_string(), Holder::Unknown),
            ("10.0.0.5".to_string(), Holder::Unknown),
        ]
    );
    assert_eq!(added.ips[0].address.to_string(), "10.0.0.6/29");
    assert_eq!(freed_by_gc.ips[0].address.to_string(), "10.0.0.2/29");
    let net = tmp.path().join("net1");
    for kept in ["10.0.0.3", "10.0.0.4", "10.0.0.5", "README", "subdir"] {
        assert!(
            fs::symlink_metadata(net.join(kept)).is_ok(),
            "{kept} was removed"
        );
    }
    assert_eq!(
        fs::read_to_string(net.join("10.0.0.2")).unwrap(),
        "b\r\neth0"
    );
}

#[test]
fn a_lock_that_is_not_a_regular_file_is_refused_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("net1");
    fs::create_dir(&net).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    symlink(&elsewhere, net.join("lock")).unwrap();
    let err = DiskStore::open(&net, Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("lock"), "{err}");
    assert!(!elsewhere.exists(), "the symlink was followed");

    fs::remove_file(net.join("lock")).unwrap();
    fifo(&net.join("lock"));
    let err = within(move || DiskStore::open(&net, Duration::from_secs(1)).unwrap_err());
    assert!(err.to_string().contains("not a regular file"), "{err}");
}
