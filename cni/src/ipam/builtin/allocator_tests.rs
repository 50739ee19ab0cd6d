//! The allocation rules against the in-memory store.

use std::{collections::HashMap, net::IpAddr};

use rscni_plugin::types::{GcAttachment, IpConfig};
use serde_json::{json, Value};

use super::{
    allocator,
    config::BuiltinConfig,
    store::{Holder, Lease, LeaseStore, MemStore, Owner},
};
use crate::ipam::IpamError;

fn conf(ipam: Value) -> BuiltinConfig {
    let map: HashMap<String, Value> = serde_json::from_value(ipam).unwrap();
    BuiltinConfig::parse(&map).unwrap()
}

fn eth0(container_id: &str) -> Owner<'_> {
    Owner {
        container_id,
        ifname: "eth0",
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Allocates for `c0`, `c1`, ... until the range runs out; returns the addresses.
fn drain(conf: &BuiltinConfig, store: &mut MemStore) -> Vec<String> {
    let mut got = Vec::new();
    for i in 0.. {
        let id = format!("c{i}");
        match allocator::allocate(&conf.range_sets, store, eth0(&id)) {
            Ok(ips) => got.push(ips[0].address.to_string()),
            Err(IpamError::RangeExhausted { range_set: 0, .. }) => return got,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    unreachable!()
}

fn only(configs: Vec<IpConfig>) -> IpConfig {
    assert_eq!(configs.len(), 1, "{configs:?}");
    configs.into_iter().next().unwrap()
}

#[test]
fn first_address_skips_network_and_gateway() {
    let conf = conf(json!({"subnet": "10.0.0.0/24"}));
    let got =
        only(allocator::allocate(&conf.range_sets, &mut MemStore::default(), eth0("a")).unwrap());
    assert_eq!(got.address.to_string(), "10.0.0.2/24");
    assert_eq!(got.gateway, Some(ip("10.0.0.1")));
    assert_eq!(got.interface, None);
}

#[test]
fn ipv4_exhaustion_never_hands_out_broadcast() {
    let conf = conf(json!({"subnet": "10.0.0.0/29"}));
    let mut store = MemStore::default();
    let got = drain(&conf, &mut store);
    assert_eq!(
        got,
        [
            "10.0.0.2/29",
            "10.0.0.3/29",
            "10.0.0.4/29",
            "10.0.0.5/29",
            "10.0.0.6/29"
        ]
    );
}

#[test]
fn slash_30_has_exactly_one_address() {
    let conf = conf(json!({"subnet": "10.0.0.0/30"}));
    assert_eq!(drain(&conf, &mut MemStore::default()), ["10.0.0.2/30"]);
}

#[test]
fn round_robin_continues_after_last_reservation_and_wraps() {
    let conf = conf(json!({"subnet": "10.0.0.0/29"}));
    let mut store = MemStore::default();
    let first = allocator::allocate(&conf.range_sets, &mut store, eth0("a")).unwrap();
    assert_eq!(first[0].address.to_string(), "10.0.0.2/29");
    allocator::release(&mut store, eth0("a")).unwrap();
    // .2 is free again, but the scan resumes after it.
    let next = allocator::allocate(&conf.range_sets, &mut store, eth0("b")).unwrap();
    assert_eq!(next[0].address.to_string(), "10.0.0.3/29");

    store.last.insert(0, ip("10.0.0.6"));
    let wrapped = allocator::allocate(&conf.range_sets, &mut store, eth0("c")).unwrap();
    assert_eq!(wrapped[0].address.to_string(), "10.0.0.2/29");
}

#[test]
fn released_address_is_reused_once_the_range_is_full() {
    let conf = conf(json!({"subnet": "10.0.0.0/29"}));
    let mut store = MemStore::default();
    assert_eq!(drain(&conf, &mut store).len(), 5);
    assert_eq!(
        allocator::release(&mut store, eth0("c2")).unwrap(),
        [ip("10.0.0.4")]
    );
    let got = allocator::allocate(&conf.range_sets, &mut store, eth0("new")).unwrap();
    assert_eq!(got[0].address.to_string(), "10.0.0.4/29");
}

#[test]
fn last_reservation_outside_the_set_restarts_at_range_start() {
    let conf = conf(json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.100"}));
    let mut store = MemStore::default();
    store.last.insert(0, ip("192.168.0.9"));
    let got = allocator::allocate(&conf.range_sets, &mut store, eth0("a")).unwrap();
    assert_eq!(got[0].address.to_string(), "10.0.0.100/24");
}

#[test]
fn range_start_and_end_bound_the_scan_and_gateway_inside_is_skipped() {
    let conf = conf(json!({"ranges": [[{
        "subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.13", "gateway": "10.0.0.11"
    }]]}));
    let got = drain(&conf, &mut MemStore::default());
    assert_eq!(got, ["10.0.0.10/24", "10.0.0.12/24", "10.0.0.13/24"]);
}

#[test]
fn ipv6_allocates_up_to_the_last_address() {
    let conf = conf(json!({"subnet": "fd00::/120", "rangeStart": "fd00::fe"}));
    let got = drain(&conf, &mut MemStore::default());
    assert_eq!(got, ["fd00::fe/120", "fd00::ff/120"]);

    let conf = self::conf(json!({"subnet": "fd00::/64"}));
    let got =
        only(allocator::allocate(&conf.range_sets, &mut MemStore::default(), eth0("a")).unwrap());
    assert_eq!(got.address.to_string(), "fd00::2/64");
    assert_eq!(got.gateway, Some(ip("fd00::1")));
}

#[test]
fn ranges_of_one_set_are_walked_in_order() {
    let conf = conf(json!({"ranges": [[{"subnet": "10.0.0.0/30"}, {"subnet": "10.0.1.0/30"}]]}));
    let got = drain(&conf, &mut MemStore::default());
    assert_eq!(got, ["10.0.0.2/30", "10.0.1.2/30"]);
}

#[test]
fn dual_stack_leases_one_address_per_set() {
    let conf = conf(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}));
    let mut store = MemStore::default();
    let got = allocator::allocate(&conf.range_sets, &mut store, eth0("a")).unwrap();
    let addrs: Vec<_> = got.iter().map(|c| c.address.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.2/24", "fd00::2/64"]);
    assert_eq!(store.last_reserved(0).unwrap(), Some(ip("10.0.0.2")));
    assert_eq!(store.last_reserved(1).unwrap(), Some(ip("fd00::2")));
    allocator::check(&conf.range_sets, &store.leases().unwrap(), eth0("a")).unwrap();
}

#[test]
fn failure_in_a_later_set_rolls_back_earlier_leases() {
    let conf = conf(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/30"}]]}));
    let mut store = MemStore::default();
    store.reserve(ip("10.1.0.2"), eth0("other"), 1).unwrap();
    let err = allocator::allocate(&conf.range_sets, &mut store, eth0("a")).unwrap_err();
    assert!(
        matches!(err, IpamError::RangeExhausted { range_set: 1, .. }),
        "{err}"
    );
    assert_eq!(
        store.leases.keys().copied().collect::<Vec<_>>(),
        [ip("10.1.0.2")]
    );
}

#[test]
fn second_add_for_the_same_attachment_is_refused() {
    let conf = conf(json!({"subnet": "10.0.0.0/24"}));
    let mut store = MemStore::default();
    allocator::allocate(&conf.range_sets, &mut store, eth0("a")).unwrap();
    let err = allocator::allocate(&conf.range_sets, &mut store, eth0("a")).unwrap_err();
    assert!(matches!(err, IpamError::AlreadyAllocated { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("10.0.0.2 has been allocated to a/eth0"),
        "{err}"
    );
    assert_eq!(store.leases.len(), 1);

    let net1 = Owner {
        container_id: "a",
        ifname: "net1",
    };
    allocator::allocate(&conf.range_sets, &mut store, net1).unwrap();
    assert_eq!(store.leases.len(), 2);
}

#[test]
fn legacy_lease_without_ifname_belongs_to_every_interface() {
    let conf = conf(json!({"subnet": "10.0.0.0/24"}));
    let mut store = MemStore::default();
    let legacy = Lease::decode(ip("10.0.0.7"), b"old-container\n");
    assert_eq!(
        legacy.holder,
        Holder::Attachment {
            container_id: "old-container".into(),
            ifname: None
        }
    );
    store.leases.insert(legacy.ip, legacy);
    let err = allocator::allocate(&conf.range_sets, &mut store, eth0("old-container")).unwrap_err();
    assert!(matches!(err, IpamError::AlreadyAllocated { .. }), "{err}");
    assert_eq!(
        allocator::release(&mut store, eth0("old-container")).unwrap(),
        [ip("10.0.0.7")]
    );
}

#[test]
fn release_frees_every_set_and_is_idempotent() {
    let conf = conf(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}));
    let mut store = MemStore::default();
    allocator::allocate(&conf.range_sets, &mut store, eth0("a")).unwrap();
    allocator::allocate(&conf.range_sets, &mut store, eth0("b")).unwrap();
    assert_eq!(allocator::release(&mut store, eth0("a")).unwrap().len(), 2);
    assert!(allocator::release(&mut store, eth0("a"))
        .unwrap()
        .is_empty());
    assert_eq!(store.leases.len(), 2);
}

#[test]
fn check_names_the_set_without_a_lease() {
    let conf = conf(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}));
    let mut store = MemStore::default();
    store.reserve(ip("10.0.0.5"), eth0("a"), 0).unwrap();
    let err = allocator::check(&conf.range_sets, &store.leases().unwrap(), eth0("a")).unwrap_err();
    match err {
        IpamError::LeaseMissing {
            range_set,
            ref ranges,
            ..
        } => {
            assert_eq!(range_set, 1);
            assert!(ranges.starts_with("fd00::1-"), "{ranges}");
        }
        other => panic!("unexpected {other}"),
    }
    let err = allocator::check(&conf.range_sets, &[], eth0("b")).unwrap_err();
    assert!(
        matches!(err, IpamError::LeaseMissing { range_set: 0, .. }),
        "{err}"
    );
}

#[test]
fn gc_keeps_only_valid_attachments() {
    let conf = conf(json!({"subnet": "10.0.0.0/24"}));
    let mut store = MemStore::default();
    for id in ["keep", "drop"] {
        allocator::allocate(&conf.range_sets, &mut store, eth0(id)).unwrap();
    }
    let keep_net1 = Owner {
        container_id: "keep",
        ifname: "net1",
    };
    allocator::allocate(&conf.range_sets, &mut store, keep_net1).unwrap();
    let legacy = Lease::decode(ip("10.0.0.50"), b"keep");
    store.leases.insert(legacy.ip, legacy);

    let valid = [GcAttachment {
        container_id: "keep".into(),
        ifname: "eth0".into(),
    }];
    let mut dropped = allocator::gc(&mut store, &valid).unwrap();
    dropped.sort();
    assert_eq!(dropped, [ip("10.0.0.3"), ip("10.0.0.4")]);
    let left: Vec<_> = store.leases.keys().copied().collect();
    assert_eq!(left, [ip("10.0.0.2"), ip("10.0.0.50")]);
    assert_eq!(allocator::gc(&mut store, &[]).unwrap().len(), 2);
    assert!(store.leases.is_empty());
}
