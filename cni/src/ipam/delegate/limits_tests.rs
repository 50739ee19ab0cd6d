//! What bounds a delegate: podmeter never delegates to itself, and a delegate that
//! does not finish in time is killed with everything in its process group.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use rscni_plugin::error::Error as CniError;
use serde_json::{json, Value};

use super::{exec::is_running_executable, parse_timeout, refuse_own_name, tests::script, Delegate};
use crate::ipam::{IpamContext, IpamError};

fn ipam(value: Value) -> HashMap<String, Value> {
    serde_json::from_value(value).unwrap()
}

fn ctx(cni_path: &[PathBuf]) -> IpamContext<'_> {
    IpamContext {
        network: "testnet",
        container_id: "c1",
        ifname: "eth0",
        netns: None,
        cni_args: None,
        cni_path,
        raw_config: b"{}",
    }
}

/// Alive means running or sleeping; a zombie has been killed and only awaits its
/// reaper (which, for an orphan, is not us).
fn alive(pid: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn assert_dead(pids_file: &Path) {
    let pids = fs::read_to_string(pids_file).unwrap();
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(
        pids.len(),
        2,
        "the script records itself and its child: {pids:?}"
    );
    // SIGKILL is delivered at once, but dying takes a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|p| alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let left: Vec<_> = pids.iter().filter(|p| alive(p)).collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn the_running_program_is_refused_by_name_and_by_inode() {
    let exe = Path::new("/opt/cni/bin/podmeter");
    let err = refuse_own_name("podmeter", Some(exe)).unwrap_err();
    assert!(matches!(err, IpamError::DelegateIsSelf { .. }), "{err}");
    assert_eq!(u32::from(&CniError::from(err)), 7);
    refuse_own_name("host-local", Some(exe)).unwrap();
    refuse_own_name("podmeter", None).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let own = std::env::current_exe().unwrap();
    let alias = tmp.path().join("alias");
    symlink(&own, &alias).unwrap();
    assert!(is_running_executable(&own));
    assert!(is_running_executable(&alias), "a symlink is the same file");
    let copy = tmp.path().join("copy");
    fs::copy(&own, &copy).unwrap();
    assert!(!is_running_executable(&copy));
    assert!(!is_running_executable(&tmp.path().join("missing")));
}

#[test]
fn delegate_timeout_parses_durations() {
    let parse = |v: Value| parse_timeout(&ipam(json!({ "delegateTimeout": v })));
    assert_eq!(
        parse(json!("1m 30s")).unwrap(),
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        parse(json!("250ms")).unwrap(),
        Some(Duration::from_millis(250))
    );
    assert_eq!(parse(Value::Null).unwrap(), None);
    assert_eq!(parse_timeout(&HashMap::new()).unwrap(), None);
    for bad in [json!("0s"), json!("soon"), json!(5)] {
        let err = parse(bad.clone()).unwrap_err();
        assert!(
            err.to_string().contains("ipam.delegateTimeout"),
            "{bad}: {err}"
        );
        assert_eq!(u32::from(&CniError::from(err)), 7);
    }
}

#[test]
fn a_delegate_past_its_limit_is_killed_with_its_group() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    script(
        tmp.path(),
        "hangs",
        &format!("sleep 1000 & echo $$ $! > {}; wait", pids.display()),
    );
    let cni_path = [tmp.path().to_path_buf()];
    let delegate = Delegate::parse("hangs", &ipam(json!({"delegateTimeout": "300ms"}))).unwrap();
    let started = Instant::now();
    let err = delegate.add(&ctx(&cni_path)).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, IpamError::DelegateTimeout { .. }), "{err}");
    assert!(err.to_string().contains("300ms"), "{err}");
    assert_eq!(u32::from(&CniError::from(err)), 11);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_dead(&pids);
}

#[test]
fn what_a_finished_delegate_left_in_its_group_does_not_hold_us() {
    // The background sleep keeps the stdout pipe open: without the group kill,
    // reading the result would wait for it until the limit.
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    script(
        tmp.path(),
        "leaves",
        &format!(
            r#"sleep 1000 & echo $$ $! > {}
echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.5.0.9/16"}}]}}'"#,
            pids.display()
        ),
    );
    let cni_path = [tmp.path().to_path_buf()];
    let started = Instant::now();
    let result = Delegate::new("leaves")
        .unwrap()
        .add(&ctx(&cni_path))
        .unwrap();
    assert_eq!(result.ips[0].address.to_string(), "10.5.0.9/16");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_dead(&pids);
}
