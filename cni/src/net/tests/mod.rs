//! Tests against the real kernel, as root (each starts with `needs_root!`). Every test makes its
//! own namespaces (a "node" and "pods") with random names and removes them in `Drop`, so tests
//! run in parallel and never touch the machine's own network namespace.

use std::future::Future;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ipnet::IpNet;
use rtnetlink::Handle;

use super::bridge::ensure_bridge;
use super::link::{link_by_name, set_up, LinkDetails, LinkSummary};
use super::names::{host_veth_name, temp_peer_name};
use super::netns::{in_netns, with_netlink};
use super::pod::{configure_pod_interface, PodRoute};
use super::veth::create_veth;
use super::NetError;

mod node;
mod pod;

/// A named network namespace (`ip netns add`), deleted on drop, panics included.
struct TestNs {
    name: String,
    path: PathBuf,
}

impl TestNs {
    fn new() -> Self {
        // temp_peer_name is random; its tail makes a unique namespace name.
        let name = format!("pmtest-{}", &temp_peer_name()[5..]);
        run_cmd("ip", &["netns", "add", &name]);
        let path = Path::new("/run/netns").join(&name);
        TestNs { name, path }
    }

    /// Runs `f` with a netlink handle opened inside this namespace, on a thread that is
    /// checked to really be in it before anything happens.
    fn run<T, Fut>(&self, f: impl FnOnce(Handle) -> Fut + Send) -> Result<T, NetError>
    where
        T: Send,
        Fut: Future<Output = Result<T, NetError>>,
    {
        let want = std::fs::metadata(&self.path).unwrap().ino();
        in_netns(&self.path, move || {
            assert_eq!(
                thread_netns_inode(),
                want,
                "thread is not in the test netns"
            );
            with_netlink(f)
        })?
    }

    fn link(&self, name: &str) -> Option<LinkDetails> {
        let name = name.to_owned();
        self.run(|h| async move { link_by_name(&h, &name).await })
            .unwrap()
    }

    /// `nsenter` rather than `ip netns exec`: no /sys remount needed.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path.display())).args(args);
        cmd
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        // Links inside go away with the namespace (veth ends in other namespaces too).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_cmd(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn thread_netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

const BR: &str = "pmbr0";

fn gateways() -> Vec<IpNet> {
    vec![net("10.22.0.1/24"), net("fd00:22::1/64")]
}

/// Bridge + veth for one pod, in the order ADD uses (minus eBPF): the pod end is configured
/// while the host end is still down (no carrier), then the host end goes up last.
/// Returns the host end.
fn add_pod(node: &TestNs, pod: &TestNs, id: &str, ip4: &str, ip6: &str) -> LinkSummary {
    let host = host_veth_name(id, "eth0");
    let temp = temp_peer_name();
    let pod_file = std::fs::File::open(&pod.path).unwrap();
    let gws = gateways();
    let (h_name, t_name) = (host.clone(), temp.clone());
    let veth = node
        .run(|h| async move {
            let br = ensure_bridge(&h, BR, None, &gws).await?;
            create_veth(
                &h,
                &h_name,
                &t_name,
                None,
                br.index,
                false,
                pod_file.as_fd(),
            )
            .await
        })
        .unwrap();
    let addrs = [net(ip4), net(ip6)];
    let routes = [
        PodRoute {
            dst: net("0.0.0.0/0"),
            gw: Some("10.22.0.1".parse().unwrap()),
        },
        PodRoute {
            dst: net("::/0"),
            gw: Some("fd00:22::1".parse().unwrap()),
        },
    ];
    pod.run(|h| async move { configure_pod_interface(&h, &temp, "eth0", &addrs, &routes).await })
        .unwrap();
    let index = veth.index;
    node.run(|h| async move { set_up(&h, index).await })
        .unwrap();
    veth
}
