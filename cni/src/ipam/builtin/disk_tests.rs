//! The disk store and the verbs on real files, in temp dirs.

use std::{collections::HashMap, fs, net::IpAddr, path::Path, time::Duration};

use rscni_plugin::{
    error::Error as CniError,
    types::{CNIResult, GcAttachment},
};
use serde_json::{json, Value};

use super::{
    config::BuiltinConfig,
    disk::DiskStore,
    store::{Holder, LeaseStore, Owner},
};
use crate::ipam::{IpamContext, IpamError};

const SHORT: Duration = Duration::from_millis(100);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

pub(super) fn conf(data_dir: &Path, ipam: Value) -> BuiltinConfig {
    let mut map: HashMap<String, Value> = serde_json::from_value(ipam).unwrap();
    map.insert("dataDir".into(), json!(data_dir));
    BuiltinConfig::parse(&map).unwrap()
}

/// ADD as the plugin runs it: leased, then durable.
pub(super) fn add(conf: &BuiltinConfig, ctx: &IpamContext) -> Result<CNIResult, IpamError> {
    let (leased, syncing) = conf.add(ctx)?;
    syncing.wait()?;
    Ok(leased)
}

pub(super) fn ctx<'a>(container_id: &'a str, ifname: &'a str) -> IpamContext<'a> {
    IpamContext {
        network: "net1",
        container_id,
        ifname,
        netns: None,
        cni_args: None,
        cni_path: &[],
        raw_config: b"{}",
    }
}

#[test]
fn reserve_writes_host_local_files_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let mut store = DiskStore::open(&dir, SHORT).unwrap();
    let owner = Owner {
        container_id: "abc",
        ifname: "eth0",
    };
    assert!(store.reserve(ip("10.22.0.5"), owner, 0).unwrap());
    assert!(store.reserve(ip("fd00::5"), owner, 1).unwrap());
    assert_eq!(
        files(&dir),
        [
            "10.22.0.5",
            "fd00::5",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock"
        ]
    );
    assert_eq!(
        fs::read_to_string(dir.join("10.22.0.5")).unwrap(),
        "abc\r\neth0"
    );
    assert_eq!(
        fs::read_to_string(dir.join("last_reserved_ip.1")).unwrap(),
        "fd00::5"
    );
    assert_eq!(store.last_reserved(0).unwrap(), Some(ip("10.22.0.5")));
    assert_eq!(store.last_reserved(7).unwrap(), None);

    let other = Owner {
        container_id: "xyz",
        ifname: "eth0",
    };
    assert!(!store.reserve(ip("10.22.0.5"), other, 0).unwrap());
    assert_eq!(
        fs::read_to_string(dir.join("10.22.0.5")).unwrap(),
        "abc\r\neth0"
    );
    assert_eq!(store.last_reserved(0).unwrap(), Some(ip("10.22.0.5")));

    store.release(ip("10.22.0.5")).unwrap();
    store.release(ip("10.22.0.5")).unwrap();
    assert_eq!(
        files(&dir),
        [
            "fd00::5",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock"
        ]
    );
}

#[test]
fn leases_read_host_local_layout_and_skip_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("10.0.0.2"), "new\r\neth0").unwrap();
    fs::write(dir.join("10.0.0.3"), "legacy\n").unwrap();
    fs::write(dir.join("last_reserved_ip.0"), "10.0.0.3").unwrap();
    fs::write(dir.join("README"), "hi").unwrap();
    fs::create_dir(dir.join("10.0.0.9")).unwrap_or(());
    fs::write(dir.join(".tmp-1-1"), "").unwrap();
    let store = DiskStore::open(dir, SHORT).unwrap();
    assert!(!dir.join(".tmp-1-1").exists(), "stale temp file not swept");
    let mut leases = store.leases().unwrap();
    leases.sort_by_key(|l| l.ip);
    let attachment = |id: &str, ifname: Option<&str>| Holder::Attachment {
        container_id: id.into(),
        ifname: ifname.map(Into::into),
    };
    let holders: Vec<_> = leases
        .into_iter()
        .map(|l| (l.ip.to_string(), l.holder))
        .collect();
    assert_eq!(
        holders,
        [
            ("10.0.0.2".into(), attachment("new", Some("eth0"))),
            ("10.0.0.3".into(), attachment("legacy", None)),
            // link(2) cannot create a lease over it: the address is not free.
            ("10.0.0.9".into(), Holder::Unknown),
        ]
    );
}

#[test]
fn lock_excludes_a_second_store_until_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let held = DiskStore::open(tmp.path(), SHORT).unwrap();
    let err = DiskStore::open(tmp.path(), SHORT).unwrap_err();
    assert!(matches!(err, IpamError::LockTimeout { .. }), "{err}");
    assert!(matches!(CniError::from(err), CniError::TryAgainLater(_)));
    drop(held);
    DiskStore::open(tmp.path(), SHORT).unwrap();
}

#[test]
fn verbs_on_a_missing_directory_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("absent");
    let conf = conf(&data, json!({"subnet": "10.0.0.0/24"}));
    conf.del(&ctx("a", "eth0")).unwrap();
    conf.gc(&ctx("", ""), &[]).unwrap();
    let err = conf.check(&ctx("a", "eth0")).unwrap_err();
    assert!(
        matches!(err, IpamError::LeaseMissing { range_set: 0, .. }),
        "{err}"
    );
    assert!(!data.exists());
}

#[test]
fn add_check_del_gc_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = conf(
        tmp.path(),
        json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]], "routes": [{"dst": "0.0.0.0/0"}]}),
    );
    let result = add(&conf, &ctx("a", "eth0")).unwrap();
    let addrs: Vec<_> = result.ips.iter().map(|c| c.address.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.2/24", "fd00::2/64"]);
    assert_eq!(result.routes, conf.routes);
    assert!(result.dns.is_none() && result.interfaces.is_empty());
    add(&conf, &ctx("b", "eth0")).unwrap();
    let net = tmp.path().join("net1");
    assert!(net.join("10.0.0.3").exists() && net.join("fd00::3").exists());

    conf.check(&ctx("a", "eth0")).unwrap();
    let err = add(&conf, &ctx("a", "eth0")).unwrap_err();
    assert!(matches!(CniError::from(err), CniError::Custom(101, ..)));

    conf.del(&ctx("a", "eth0")).unwrap();
    conf.del(&ctx("a", "eth0")).unwrap();
    assert!(!net.join("10.0.0.2").exists() && !net.join("fd00::2").exists());
    let err = conf.check(&ctx("a", "eth0")).unwrap_err();
    assert!(matches!(CniError::from(err), CniError::Custom(102, ..)));

    let valid = [GcAttachment {
        container_id: "a".into(),
        ifname: "eth0".into(),
    }];
    conf.gc(&ctx("", ""), &valid).unwrap();
    assert_eq!(
        files(&net),
        ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    );
}

#[test]
fn status_reports_an_unusable_data_dir_as_code_50() {
    let tmp = tempfile::tempdir().unwrap();
    conf(tmp.path(), json!({"subnet": "10.0.0.0/24"}))
        .status(&ctx("", ""))
        .unwrap();
    assert!(tmp.path().join("net1").is_dir());

    let file = tmp.path().join("not-a-dir");
    fs::write(&file, "").unwrap();
    let err = conf(&file, json!({"subnet": "10.0.0.0/24"}))
        .status(&ctx("", ""))
        .unwrap_err();
    assert!(matches!(
        CniError::from(err),
        CniError::PluginNotAvailable(_)
    ));
}

#[test]
fn exhaustion_maps_to_code_100() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = conf(tmp.path(), json!({"subnet": "10.0.0.0/30"}));
    add(&conf, &ctx("a", "eth0")).unwrap();
    let err = add(&conf, &ctx("b", "eth0")).unwrap_err();
    assert!(matches!(CniError::from(err), CniError::Custom(100, ..)));
}

#[test]
fn a_failure_after_the_lease_was_linked_takes_the_lease_back() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = conf(tmp.path(), json!({"subnet": "10.0.0.0/24"}));
    let net = tmp.path().join("net1");
    // Renaming the new last_reserved_ip.0 over a directory fails (EISDIR) after the
    // lease file was linked into place.
    fs::create_dir_all(net.join("last_reserved_ip.0")).unwrap();
    let err = add(&conf, &ctx("a", "eth0")).unwrap_err();
    assert!(
        err.to_string().contains("rename into") && err.to_string().contains("last_reserved_ip.0"),
        "{err}"
    );
    assert_eq!(u32::from(&CniError::from(err)), 5);
    assert_eq!(
        files(&net),
        ["last_reserved_ip.0", "lock"],
        "lease or temp file left"
    );

    fs::remove_dir(net.join("last_reserved_ip.0")).unwrap();
    let result = add(&conf, &ctx("a", "eth0")).unwrap();
    assert_eq!(result.ips[0].address.to_string(), "10.0.0.2/24");
}
