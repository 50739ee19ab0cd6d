//! Parsing and validation of the built-in allocator's config.

use std::{collections::HashMap, path::Path};

use rscni_plugin::error::Error as CniError;
use serde_json::{json, Value};

use super::{
    config::{BuiltinConfig, DEFAULT_DATA_DIR},
    range::Range,
};
use crate::ipam::IpamError;

fn parse(ipam: Value) -> Result<BuiltinConfig, IpamError> {
    let map: HashMap<String, Value> = serde_json::from_value(ipam).unwrap();
    BuiltinConfig::parse(&map)
}

fn range(subnet: &str, start: &str, end: &str, gateway: &str) -> Range {
    Range {
        subnet: subnet.parse().unwrap(),
        start: start.parse().unwrap(),
        end: end.parse().unwrap(),
        gateway: gateway.parse().unwrap(),
    }
}

#[test]
fn legacy_shorthand_gets_host_local_defaults() {
    let conf = parse(json!({"subnet": "10.22.0.0/16"})).unwrap();
    assert_eq!(
        conf.range_sets,
        [vec![range(
            "10.22.0.0/16",
            "10.22.0.1",
            "10.22.255.254",
            "10.22.0.1"
        )]]
    );
    assert_eq!(conf.data_dir, Path::new(DEFAULT_DATA_DIR));
    assert!(conf.routes.is_empty());
}

#[test]
fn full_config_with_legacy_range_first() {
    let conf = parse(json!({
        "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20", "gateway": "10.1.0.254",
        "ranges": [[{"subnet": "fd00::/64"}], [{"subnet": "10.2.0.0/24"}, {"subnet": "10.3.0.0/24", "futureKey": 1}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}],
        "dataDir": "/run/x",
        "resolvConf": "/etc/resolv.conf",
        "someToolsAnnotation": {"a": [1]},
        "gatewayIgnored": null
    }))
    .unwrap();
    assert_eq!(conf.range_sets.len(), 3);
    assert_eq!(
        conf.range_sets[0],
        [range("10.1.0.0/24", "10.1.0.10", "10.1.0.20", "10.1.0.254")]
    );
    assert_eq!(
        conf.range_sets[1],
        [range(
            "fd00::/64",
            "fd00::1",
            "fd00::ffff:ffff:ffff:ffff",
            "fd00::1"
        )]
    );
    assert_eq!(conf.range_sets[2].len(), 2);
    assert_eq!(conf.routes.len(), 2);
    assert_eq!(conf.routes[1].gw, Some("fd00::1".parse().unwrap()));
    assert_eq!(conf.data_dir, Path::new("/run/x"));
}

#[test]
fn nulls_count_as_absent() {
    let conf = parse(
        json!({"subnet": "10.0.0.0/24", "rangeStart": null, "routes": null, "dataDir": null}),
    )
    .unwrap();
    assert_eq!(
        conf.range_sets[0][0].start,
        "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
}

#[test]
fn smallest_subnets_that_still_hold_an_address() {
    let v4 = parse(json!({"subnet": "10.0.0.0/30"})).unwrap();
    assert_eq!(
        v4.range_sets[0][0],
        range("10.0.0.0/30", "10.0.0.1", "10.0.0.2", "10.0.0.1")
    );
    assert_eq!(v4.range_sets[0][0].capacity(), 1);
    let v6 = parse(json!({"subnet": "fd00::/126"})).unwrap();
    assert_eq!(v6.range_sets[0][0].capacity(), 2);
}

#[test]
fn invalid_configs_are_rejected_with_a_reason() {
    let cases = [
        (json!({}), "no IP ranges"),
        (json!({"ranges": []}), "no IP ranges"),
        (json!({"ranges": [[]]}), "ipam.ranges[0] is empty"),
        (json!({"subnet": 5}), "ipam.subnet"),
        (json!({"subnet": "10.0.0.0"}), "ipam.subnet"),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": true}]]}),
            "ipam.ranges[0][0].rangeStart: invalid type: boolean `true`",
        ),
        (
            json!({"ranges": [{"subnet": "10.0.0.0/24"}]}),
            "ipam.ranges",
        ),
        (
            json!({"routes": [{"gw": "10.0.0.1"}], "subnet": "10.0.0.0/24"}),
            "ipam.routes[0]: missing field `dst`",
        ),
        (
            json!({"dataDir": 1, "subnet": "10.0.0.0/24"}),
            "ipam.dataDir",
        ),
        (
            json!({"dataDir": "", "subnet": "10.0.0.0/24"}),
            "dataDir is empty",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": 5}]]}),
            "ipam.ranges[1][0].subnet: invalid type: integer `5`",
        ),
        (
            json!({"routes": [{"dst": "0.0.0.0/0"}, {"dst": 7}], "subnet": "10.0.0.0/24"}),
            "ipam.routes[1].dst: invalid type: integer `7`",
        ),
        (
            json!({"ranges": "10.0.0.0/24"}),
            "ipam.ranges: invalid type: string",
        ),
        (json!({"rangeStart": "10.0.0.5"}), "without ipam.subnet"),
        (json!({"subnet": "10.0.0.1/24"}), "host bits"),
        (json!({"subnet": "10.0.0.0/31"}), "too small"),
        (json!({"subnet": "10.0.0.1/32"}), "too small"),
        (json!({"subnet": "fd00::/127"}), "too small"),
        (json!({"subnet": "fd00::1/128"}), "too small"),
        (
            json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}),
            "rangeStart 10.0.1.5 is not a usable",
        ),
        (
            json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.0"}),
            "rangeStart 10.0.0.0 is not a usable",
        ),
        (
            json!({"subnet": "10.0.0.0/24", "rangeEnd": "10.0.0.255"}),
            "rangeEnd 10.0.0.255 is not a usable",
        ),
        (
            json!({"subnet": "10.0.0.0/24", "rangeEnd": "fd00::1"}),
            "rangeEnd fd00::1 is not a usable",
        ),
        (
            json!({"subnet": "10.0.0.0/24", "gateway": "10.9.0.1"}),
            "gateway 10.9.0.1 is not a usable",
        ),
        (
            json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.8"}),
            "is after rangeEnd",
        ),
        (
            json!({"subnet": "10.0.0.0/30", "rangeEnd": "10.0.0.1"}),
            "holds only the gateway",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}),
            "mixes IPv4 and IPv6",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]}),
            "overlap",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.128/25"}]]}),
            "range sets 0 (10.0.0.1-10.0.0.254) and 1",
        ),
        // Special-purpose space (issue 18): code 7 here, not 5 half-way
        // through ADD.
        (json!({"subnet": "127.0.0.0/8"}), "(loopback space)"),
        (json!({"subnet": "224.0.0.0/24"}), "(multicast space)"),
        (json!({"subnet": "169.254.0.0/16"}), "(link-local space)"),
        (json!({"subnet": "0.0.0.0/0"}), "0.0.0.0/0 overlaps"),
        (json!({"subnet": "128.0.0.0/1"}), "not a pod range"),
        (json!({"subnet": "fe80::/64"}), "(link-local space)"),
        (json!({"subnet": "ff00::/64"}), "(multicast space)"),
        (json!({"subnet": "::/0"}), "::/0 overlaps"),
    ];
    for (ipam, want) in cases {
        let err = match parse(ipam.clone()) {
            Ok(conf) => panic!("{ipam} was accepted: {conf:?}"),
            Err(err) => err,
        };
        assert!(
            err.to_string().contains(want),
            "{ipam}: {err:?} lacks {want:?}"
        );
        assert!(
            matches!(CniError::from(err), CniError::InvalidNetworkConfig(_)),
            "{ipam}"
        );
    }
}
