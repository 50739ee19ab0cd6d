//! Node-side tests: namespaces, the bridge, veth pairs, deletion, sysctls.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Barrier;

use futures::TryStreamExt;

use super::*;
use crate::net::link::delete_link_by_name;
use crate::net::pod::pod_interface_state;
use crate::net::sysctl::{read_sysctl, set_accept_ra};

#[test]
fn in_netns_refuses_what_is_not_a_netns() {
    podmeter_testkit::needs_root!();
    let missing = in_netns(Path::new("/run/netns/pmtest-does-not-exist"), || ());
    assert!(
        matches!(missing, Err(NetError::NetNs { .. })),
        "{missing:?}"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    let plain = in_netns(file.path(), || ());
    assert!(matches!(plain, Err(NetError::NetNs { .. })), "{plain:?}");

    // nsfs, but a mount namespace: setns(CLONE_NEWNET) must refuse it.
    let mnt = in_netns(Path::new("/proc/self/ns/mnt"), || ());
    assert!(matches!(mnt, Err(NetError::NetNs { .. })), "{mnt:?}");
}

#[test]
fn in_netns_switches_only_the_worker_thread_and_resumes_panics() {
    podmeter_testkit::needs_root!();
    let ns = TestNs::new();
    let before = thread_netns_inode();
    let inside = in_netns(&ns.path, thread_netns_inode).unwrap();
    assert_eq!(inside, std::fs::metadata(&ns.path).unwrap().ino());
    assert_eq!(thread_netns_inode(), before);

    let panicked = std::panic::catch_unwind(|| in_netns(&ns.path, || panic!("boom")));
    assert!(panicked.is_err());
    assert_eq!(thread_netns_inode(), before);
}

#[test]
fn bridge_is_created_idempotently() {
    podmeter_testkit::needs_root!();
    let node = TestNs::new();
    let gws = gateways();
    let (a, b) = node
        .run(|h| async move {
            let a = ensure_bridge(&h, BR, Some(1400), &gws).await?;
            let b = ensure_bridge(&h, BR, Some(1400), &gws).await?;
            Ok((a, b))
        })
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.mac.len(), 17);

    let br = node.link(BR).unwrap();
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert!(br.admin_up);
    assert_eq!(br.mtu, Some(1400));
    let state = node
        .run(|h| async move { pod_interface_state(&h, BR).await })
        .unwrap()
        .unwrap();
    let mut addrs = state.addrs.clone();
    addrs.sort();
    assert_eq!(addrs, gateways());
}

#[test]
fn bridge_survives_concurrent_creation() {
    podmeter_testkit::needs_root!();
    let node = TestNs::new();
    let barrier = &Barrier::new(8);
    let node = &node;
    let results: Vec<Result<LinkSummary, NetError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    let gws = gateways();
                    node.run(|h| async move {
                        barrier.wait();
                        ensure_bridge(&h, BR, Some(1450), &gws).await
                    })
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let first = results[0].as_ref().unwrap().clone();
    for r in &results {
        assert_eq!(r.as_ref().unwrap(), &first);
    }
    let bridges = node
        .run(|h| async move {
            let links: Vec<_> = h
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(NetError::netlink("dump", "links"))?;
            Ok(links.len())
        })
        .unwrap();
    // lo + the one bridge.
    assert_eq!(bridges, 2);
}

#[test]
fn a_link_of_another_kind_is_not_taken_for_the_bridge() {
    podmeter_testkit::needs_root!();
    let node = TestNs::new();
    // This kernel has no dummy module; a veth is as good a non-bridge.
    let args = [
        "-n",
        &node.name,
        "link",
        "add",
        BR,
        "type",
        "veth",
        "peer",
        "pmbr0peer",
    ];
    run_cmd("ip", &args);
    let err = node
        .run(|h| async move { ensure_bridge(&h, BR, None, &[]).await })
        .unwrap_err();
    assert!(
        matches!(&err, NetError::NotABridge { kind, .. } if kind == "veth"),
        "{err}"
    );
}

#[test]
fn veth_host_end_is_enslaved_and_down_pod_end_is_in_the_pod() {
    podmeter_testkit::needs_root!();
    let (node, pod) = (TestNs::new(), TestNs::new());
    let host = host_veth_name("c1", "eth0");
    let temp = temp_peer_name();
    let pod_file = std::fs::File::open(&pod.path).unwrap();
    let (h_name, t_name) = (host.clone(), temp.clone());
    let (br, veth) = node
        .run(|h| async move {
            let br = ensure_bridge(&h, BR, None, &[]).await?;
            let v = create_veth(
                &h,
                &h_name,
                &t_name,
                Some(1400),
                br.index,
                true,
                pod_file.as_fd(),
            )
            .await?;
            Ok((br, v))
        })
        .unwrap();

    let host_link = node.link(&host).unwrap();
    assert_eq!(host_link.summary(), veth);
    assert_eq!(host_link.controller, Some(br.index));
    assert!(!host_link.admin_up);
    assert_eq!(host_link.mtu, Some(1400));
    assert_eq!(host_link.hairpin, Some(true));
    assert!(
        node.link(&temp).is_none(),
        "pod end must not be in the node"
    );

    let peer = pod.link(&temp).unwrap();
    assert_eq!(peer.kind.as_deref(), Some("veth"));
    assert!(!peer.admin_up);
    assert_eq!(peer.mtu, Some(1400));
}

#[test]
fn hairpin_off_reads_back_off() {
    podmeter_testkit::needs_root!();
    let (node, pod) = (TestNs::new(), TestNs::new());
    let host = host_veth_name("c2", "eth0");
    let pod_file = std::fs::File::open(&pod.path).unwrap();
    let h_name = host.clone();
    node.run(|h| async move {
        let br = ensure_bridge(&h, BR, None, &[]).await?;
        create_veth(
            &h,
            &h_name,
            &temp_peer_name(),
            None,
            br.index,
            false,
            pod_file.as_fd(),
        )
        .await
    })
    .unwrap();
    assert_eq!(node.link(&host).unwrap().hairpin, Some(false));
}

#[test]
fn failed_veth_creation_leaves_nothing_behind() {
    podmeter_testkit::needs_root!();
    let (node, pod) = (TestNs::new(), TestNs::new());
    let pod_file = std::fs::File::open(&pod.path).unwrap();
    let err = node
        .run(|h| async move {
            // No link has index 9999: the kernel refuses the whole request.
            create_veth(&h, "pmbad", "pmtmpbad", None, 9999, false, pod_file.as_fd()).await
        })
        .unwrap_err();
    assert!(matches!(err, NetError::Netlink { .. }), "{err}");
    assert!(node.link("pmbad").is_none());
    assert!(pod.link("pmtmpbad").is_none());
}

#[test]
fn delete_link_by_name_reports_whether_it_existed() {
    podmeter_testkit::needs_root!();
    let (node, pod) = (TestNs::new(), TestNs::new());
    let host = host_veth_name("c3", "eth0");
    let temp = temp_peer_name();
    let pod_file = std::fs::File::open(&pod.path).unwrap();
    let (h_name, t_name) = (host.clone(), temp.clone());
    let (existed, again) = node
        .run(|h| async move {
            let br = ensure_bridge(&h, BR, None, &[]).await?;
            create_veth(
                &h,
                &h_name,
                &t_name,
                None,
                br.index,
                false,
                pod_file.as_fd(),
            )
            .await?;
            let existed = delete_link_by_name(&h, &h_name).await?;
            let again = delete_link_by_name(&h, &h_name).await?;
            Ok((existed, again))
        })
        .unwrap();
    assert!(existed);
    assert!(!again);
    assert!(pod.link(&temp).is_none(), "pod end goes with the host end");
}

#[test]
fn accept_ra_is_written_in_the_node_netns() {
    podmeter_testkit::needs_root!();
    let (node, pod) = (TestNs::new(), TestNs::new());
    let host = host_veth_name("c5", "eth0");
    let pod_file = std::fs::File::open(&pod.path).unwrap();
    let h_name = host.clone();
    let value = node
        .run(|h| async move {
            let br = ensure_bridge(&h, BR, None, &[]).await?;
            create_veth(
                &h,
                &h_name,
                &temp_peer_name(),
                None,
                br.index,
                false,
                pod_file.as_fd(),
            )
            .await?;
            set_accept_ra(&h_name, 0)?;
            read_sysctl(&format!("ipv6/conf/{h_name}/accept_ra"))
        })
        .unwrap();
    assert_eq!(value, "0");
    // This thread is in the machine's namespace, where the veth does not exist: proof that
    // /proc/sys/net follows the thread, not the process.
    assert!(read_sysctl(&format!("ipv6/conf/{host}/accept_ra")).is_err());
}
