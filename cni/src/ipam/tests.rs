//! Config dispatch and the CNI error mapping.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use rscni_plugin::{error::Error as CniError, types::NetConf};
use serde_json::json;

use super::{Ipam, IpamError};

fn netconf(ipam: serde_json::Value) -> NetConf {
    serde_json::from_value(
        json!({"cniVersion": "1.0.0", "name": "n", "type": "podmeter", "ipam": ipam}),
    )
    .unwrap()
}

fn code(err: IpamError) -> u32 {
    u32::from(&CniError::from(err))
}

#[test]
fn type_selects_builtin_or_delegate() {
    let conf = netconf(json!({"type": "builtin", "subnet": "10.0.0.0/24"}));
    assert!(matches!(
        Ipam::from_netconf(&conf).unwrap(),
        Ipam::Builtin(_)
    ));
    let conf = netconf(json!({"type": "host-local", "anything": [1, 2]}));
    match Ipam::from_netconf(&conf).unwrap() {
        Ipam::Delegated(d) => assert_eq!(d.plugin(), "host-local"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_or_missing_ipam_is_code_7() {
    let mut conf = netconf(json!({"type": "builtin"}));
    conf.ipam = None;
    assert!(matches!(
        Ipam::from_netconf(&conf),
        Err(IpamError::MissingIpam)
    ));
    for ty in [
        "",
        ".",
        "..",
        "../host-local",
        "a/b",
        "/usr/lib/cni/host-local",
        "a\\b",
    ] {
        let err = Ipam::from_netconf(&netconf(json!({"type": ty}))).unwrap_err();
        assert!(matches!(err, IpamError::InvalidType(_)), "{ty}: {err}");
        assert_eq!(code(err), 7);
    }
    let err = Ipam::from_netconf(&netconf(json!({"type": "builtin"}))).unwrap_err();
    assert_eq!(code(err), 7);
}

#[test]
fn podmeter_run_as_a_delegate_refuses_every_config() {
    assert!(super::refuse_nesting(false).is_ok());
    let err = super::refuse_nesting(true).unwrap_err();
    assert!(err.to_string().contains("PODMETER_IPAM_DELEGATE"), "{err}");
    assert_eq!(code(err), 7);
}

#[test]
fn error_codes() {
    let io = || std::io::Error::other("boom");
    assert_eq!(code(IpamError::MissingIpam), 7);
    assert_eq!(
        code(IpamError::RangeExhausted {
            range_set: 0,
            ranges: String::new()
        }),
        100
    );
    let ip: IpAddr = "10.0.0.2".parse().unwrap();
    let dup = IpamError::AlreadyAllocated {
        ip,
        container_id: "c".into(),
        ifname: "eth0".into(),
    };
    assert_eq!(code(dup), 101);
    let path = PathBuf::from("/x");
    assert_eq!(
        code(IpamError::LockTimeout {
            path: path.clone(),
            waited: Duration::ZERO
        }),
        11
    );
    assert_eq!(
        code(IpamError::Io {
            op: "write",
            path: path.clone(),
            source: io()
        }),
        5
    );
    assert_eq!(
        code(IpamError::DataDirUnusable {
            path: path.clone(),
            source: io()
        }),
        50
    );
    assert_eq!(
        code(IpamError::PluginNotFound {
            name: "x".into(),
            paths: vec![path.clone()]
        }),
        7
    );
    assert_eq!(code(IpamError::DelegateIsSelf { path: path.clone() }), 7);
    assert_eq!(code(IpamError::RunAsDelegate), 7);
    assert_eq!(
        code(IpamError::DelegateTimeout {
            plugin: "p".into(),
            limit: Duration::from_secs(1)
        }),
        11
    );
    assert_eq!(code(IpamError::DelegateSpawn { path, source: io() }), 5);
    let passed = IpamError::DelegateFailed {
        plugin: "p".into(),
        error: CniError::Custom(42, "m".into(), "d".into()),
    };
    assert_eq!(
        CniError::from(passed),
        CniError::Custom(42, "m".into(), "d".into())
    );
    let bad_json = serde_json::from_str::<u8>("x").unwrap_err();
    assert_eq!(
        code(IpamError::DelegateBadResult {
            plugin: "p".into(),
            source: bad_json
        }),
        6
    );
}
