//! Many ADDs at once, from threads and from processes, against one data dir.

use std::{
    collections::HashSet,
    fs,
    net::IpAddr,
    path::Path,
    process::{Command, Stdio},
    thread,
};

use serde_json::json;

use super::disk_tests::{add, conf, ctx};

/// Asserts 50 distinct addresses were handed out and are on disk with their owners.
fn assert_fifty_distinct(data_dir: &Path, leased: &[(String, IpAddr)]) {
    let distinct: HashSet<_> = leased.iter().map(|(_, ip)| ip).collect();
    assert_eq!(leased.len(), 50);
    assert_eq!(
        distinct.len(),
        50,
        "an address was handed out twice: {leased:?}"
    );
    for (id, ip) in leased {
        let content = fs::read_to_string(data_dir.join("net1").join(ip.to_string())).unwrap();
        assert_eq!(content, format!("{id}\r\neth0"));
    }
}

#[test]
fn threads_with_their_own_stores_never_share_an_address() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = conf(tmp.path(), json!({"subnet": "10.0.0.0/24"}));
    let leased: Vec<(String, IpAddr)> = thread::scope(|s| {
        let workers: Vec<_> = (0..10)
            .map(|t| {
                let conf = &conf;
                s.spawn(move || {
                    (0..5)
                        .map(|i| {
                            let id = format!("t{t}-{i}");
                            let result = add(conf, &ctx(&id, "eth0")).unwrap();
                            (id, result.ips[0].address.addr())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_fifty_distinct(tmp.path(), &leased);
}

const CHILD_ENV: &str = "PODMETER_IPAM_TEST_CHILD";

/// Not a test on its own: the body of each process spawned by
/// `processes_never_share_an_address`, selected through `CHILD_ENV`.
#[test]
fn child_process_allocator() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (data_dir, prefix) = spec.split_once('|').unwrap();
    let conf = conf(Path::new(data_dir), json!({"subnet": "10.0.0.0/24"}));
    for i in 0..10 {
        let id = format!("{prefix}-{i}");
        let result = add(&conf, &ctx(&id, "eth0")).unwrap();
        println!("LEASED {id} {}", result.ips[0].address.addr());
    }
}

#[test]
fn processes_never_share_an_address() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let test = format!(
        "{}::child_process_allocator",
        module_path!().split_once("::").unwrap().1
    );
    // All five run at once; each ADD opens its own store, as a real plugin process does.
    let children: Vec<_> = (0..5)
        .map(|p| {
            Command::new(&exe)
                .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, format!("{}|p{p}", tmp.path().display()))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut leased = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "child failed: {output:?}");
        for line in String::from_utf8(output.stdout).unwrap().lines() {
            // The harness may print "test ... " on the same line before our output.
            if let Some((_, rest)) = line.split_once("LEASED ") {
                let (id, ip) = rest.split_once(' ').unwrap();
                leased.push((id.to_string(), ip.parse().unwrap()));
            }
        }
    }
    assert_fifty_distinct(tmp.path(), &leased);
}
