//! The short fault sweep (the full one is `scripts/faults.sh`): ADD or DEL
//! killed or failed at a few chosen system calls, then DEL and GC as a
//! runtime runs them; afterwards nothing of the pod may be left, and every
//! failed call must have printed a CNI error JSON.
//!
//! The fault points are found in a trace of a fault-free call on the same
//! node, by what the call does (the netlink message creating the veth, the
//! first map update, ...), not by fixed numbers, so they follow the code.
//!
//! Each case is a leak or a panic found on the code of 2026-12-01 (dea3624),
//! or a point the issue named; they guard against regressions.

use std::path::Path;

use podmeter_tests::{
    leftovers::Leftovers,
    strace::{traced, Call, Trace},
    CniOutput, NetNs, Node,
};
use serde_json::{json, Value};

const ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=test;K8S_POD_NAME=f;K8S_POD_UID=uid-f";

/// Which call the fault goes into.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Add,
    Del,
}

/// A node warmed up (programs loaded, bridge made) with a fault-free ADD and
/// DEL recorded, and what it keeps after them (the baseline).
struct Bench {
    node: Node,
    conf: Value,
    add: Trace,
    del: Trace,
    baseline: Leftovers,
    logs: tempfile::TempDir,
}

impl Bench {
    fn new() -> Self {
        let node = Node::new();
        let mut conf = node.conf("1.1.0");
        conf["ipMasq"] = json!(true);
        // A policy from the config: ADD writes rules and a policy entry,
        // DEL removes them first.
        conf["policy"] = json!({
            "receive": {"default": "deny", "rules": [{"action": "allow", "proto": "icmp"}]}
        });
        let logs = tempfile::tempdir().unwrap();
        // The first ADD loads the programs: a sequence no later ADD repeats.
        let cold = node.add_pod("cold", &conf);
        node.del(&cold, &conf).ok();
        let mut bench = Self {
            node,
            conf,
            add: Trace::default(),
            del: Trace::default(),
            baseline: Leftovers::default(),
            logs,
        };
        let pod = NetNs::new("pmt-pod");
        let log = bench.log("record");
        bench.run(Verb::Add, &pod, &[], &log).ok();
        bench.add = Trace::read(&log);
        bench.run(Verb::Del, &pod, &[], &log).ok();
        bench.del = Trace::read(&log);
        bench.gc();
        bench.baseline = Leftovers::read(&bench.node.site(&[]));
        bench
    }

    fn log(&self, name: &str) -> std::path::PathBuf {
        self.logs.path().join(name)
    }

    /// ADD or DEL of the pod in `pod` under strace with `strace_args`.
    fn run(&self, verb: Verb, pod: &NetNs, strace_args: &[&str], log: &Path) -> CniOutput {
        let command = match verb {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
        };
        // The container ID is the pod namespace's name: unique, and the
        // same for the ADD and DEL of one pod.
        let env = Node::cni_vars(command, pod.name(), Some(pod), "eth0", ARGS);
        traced(
            &self.node,
            strace_args,
            log,
            &env,
            self.conf.to_string().as_bytes(),
        )
    }

    fn gc(&self) {
        let mut gc = self.conf.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        self.node.cni("GC", &gc, "", None, "", "").ok();
    }

    /// Injects `action` at `call` of `verb`, lets the runtime clean up (DEL,
    /// for a failed DEL once more, then GC) and asserts that the failed call
    /// answered with an error JSON and that nothing is left.
    fn fault(&self, verb: Verb, call: &Call, action: &str) {
        let trace = match verb {
            Verb::Add => &self.add,
            Verb::Del => &self.del,
        };
        let inject = trace.aim(call, action);
        let pod = NetNs::new("pmt-pod");
        if verb == Verb::Del {
            self.run(Verb::Add, &pod, &[], &self.log("add")).ok();
        }
        let log = self.log("fault");
        let out = self.run(verb, &pod, &["-e", &inject], &log);
        let fired = std::fs::read_to_string(&log).unwrap();
        assert!(
            fired.contains("(INJECTED)") || fired.contains("killed by SIGKILL"),
            "{inject} never fired (aimed at {})",
            call.line
        );
        let mut problems = Vec::new();
        if !action.starts_with("signal") {
            if out.success {
                problems.push("the call succeeded despite the fault".to_owned());
            } else if out.json["code"].as_u64().is_none() || out.stderr.contains("panicked") {
                problems.push(format!(
                    "no CNI error JSON: stdout {:?}, stderr {}",
                    out.stdout,
                    out.stderr.trim()
                ));
            }
        }
        // A DEL that reports success has nothing left to retry.
        if verb == Verb::Del && out.success {
            let left = Leftovers::read(&self.node.site(&[&pod])).beyond(&self.baseline);
            if !left.is_clean() {
                problems.push(format!("DEL succeeded but left {left}"));
            }
        }
        // As a runtime does: DEL after a failed ADD, DEL again after a
        // failed DEL, then GC with the attachment no longer valid.
        let del = self.run(Verb::Del, &pod, &[], &self.log("del"));
        if !del.success {
            problems.push(format!("DEL after the fault failed: {}", del.stdout));
        }
        self.gc();
        let left = Leftovers::read(&self.node.site(&[&pod])).beyond(&self.baseline);
        if !left.is_clean() {
            problems.push(format!("left after DEL and GC: {left}"));
        }
        assert!(
            problems.is_empty(),
            "{inject} at {}:\n  {}",
            call.line,
            problems.join("\n  ")
        );
    }
}

fn main_thread(trace: &Trace) -> u32 {
    trace.calls[0].tid
}

/// The first call of the plugin's main thread that is `what` (`pred`).
fn first<'t>(trace: &'t Trace, what: &str, pred: impl Fn(&Call) -> bool) -> &'t Call {
    let tid = main_thread(trace);
    trace.find(what, |c| c.tid == tid && pred(c))
}

fn is(call: &Call, name: &str, arg: &str) -> bool {
    call.name == name && call.line.contains(arg)
}

/// The main thread's first update of the pinned map `name`: of an fd a
/// `BPF_OBJ_GET` of that pin returned and no `close` has released since.
fn first_update_of<'t>(trace: &'t Trace, name: &str) -> &'t Call {
    let tid = main_thread(trace);
    let ret = |c: &Call| {
        c.line
            .rsplit("= ")
            .next()
            .and_then(|r| r.trim().parse::<u32>().ok())
    };
    let mut fds = std::collections::BTreeSet::new();
    for c in trace.calls.iter().filter(|c| c.tid == tid) {
        if c.name == "close" {
            let closed = c.line.split(['(', ')']).nth(1).and_then(|f| f.parse().ok());
            fds.remove(&closed.unwrap_or(u32::MAX));
        } else if is(c, "bpf", "BPF_OBJ_GET") && c.line.contains(&format!("/{name}\"")) {
            fds.extend(ret(c));
        } else if is(c, "bpf", "BPF_MAP_UPDATE_ELEM")
            && fds
                .iter()
                .any(|fd| c.line.contains(&format!("map_fd={fd},")))
        {
            return c;
        }
    }
    panic!("no update of {name} in the trace");
}

// Killed right after the kernel created the veth pair, before it is
// registered: only DEL (by its hashed name) or GC can find it.
#[test]
fn kill_add_after_the_veth_is_created() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    let veth = first(&b.add, "the veth creation", |c| is(c, "sendto", "\"veth\""));
    b.fault(Verb::Add, b.add.after(veth), "signal=KILL");
}

// A netlink error on the first request after the veth exists: the
// rollback must delete it over a connection that still works.
#[test]
fn netlink_error_after_the_veth_is_created() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    let veth = first(&b.add, "the veth creation", |c| is(c, "sendto", "\"veth\""));
    let next = b.add.find_after(veth, "a netlink request", |c| {
        c.tid == veth.tid && c.name == "sendto"
    });
    b.fault(Verb::Add, next, "error=ENOBUFS");
}

// Killed after the first map entry of the pod (a device) was written: DEL
// finds the entries by the ifindex of the veth, not only by the registry
// entry that is written last.
#[test]
fn kill_add_after_the_first_map_update() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    let update = first(&b.add, "a map update", |c| {
        is(c, "bpf", "BPF_MAP_UPDATE_ELEM")
    });
    b.fault(Verb::Add, b.add.after(update), "signal=KILL");
}

// Killed after the config policy's first rule was written, before the
// pod's policy entry: DEL must find the rule by the pod's ifindex.
#[test]
fn kill_add_after_the_first_rule_is_written() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    let rule = first_update_of(&b.add, "pm_rules");
    b.fault(Verb::Add, b.add.after(rule), "signal=KILL");
}

// Writing the config policy's first rule fails: ADD rolls back.
#[test]
fn eio_on_writing_the_first_rule() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    b.fault(Verb::Add, first_update_of(&b.add, "pm_rules"), "error=EIO");
}

// Killed after the ingress TCX link was pinned, before the egress one.
#[test]
fn kill_add_after_the_first_link_pin() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    let pin = first(&b.add, "a link pin", |c| {
        is(c, "bpf", "BPF_OBJ_PIN") && c.line.contains("/links/")
    });
    b.fault(Verb::Add, b.add.after(pin), "signal=KILL");
}

// The lease file is linked in place; then writing the range's
// last-reserved file fails.
#[test]
fn eio_on_the_ipam_write_after_the_lease_is_linked() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    let linked = first(&b.add, "the lease link", |c| c.name == "linkat");
    let write = b.add.find_after(linked, "a write", |c| {
        c.tid == linked.tid && c.name == "write"
    });
    b.fault(Verb::Add, write, "error=EIO");
}

// Taking the IPAM store's lock fails. (Unlocking cannot: the lock goes
// with the file's close; nix's unlock used to panic on an error.)
#[test]
fn eio_on_taking_the_ipam_lock() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    let lock = first(&b.add, "the IPAM lock", |c| {
        is(c, "flock", "LOCK_EX|LOCK_NB")
    });
    b.fault(Verb::Add, lock, "error=EIO");
}

// Waiting for `nft` (which has already added the rule) fails: std's
// `wait_with_output` used to panic on such errors.
#[test]
fn eio_while_waiting_for_nft() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    let wait = first(&b.add, "the wait for nft", |c| c.name == "waitid");
    b.fault(Verb::Add, wait, "error=EIO");
}

// DEL killed after its first map delete: the registry entry, removed
// last, lets the next DEL find the rest.
#[test]
fn kill_del_while_unregistering() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    let delete = first(&b.del, "a map delete", |c| {
        is(c, "bpf", "BPF_MAP_DELETE_ELEM")
    });
    b.fault(Verb::Del, b.del.after(delete), "signal=KILL");
}

// DEL killed right after it deleted the host veth: the next DEL no longer
// finds the link, and must still find the map entries and pins.
#[test]
fn kill_del_after_the_veth_is_deleted() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    // strace does not decode the request's type; the kernel's ack names it.
    let dellink = first(&b.del, "the veth deletion's ack", |c| {
        is(c, "recvfrom", "RTM_DELLINK")
    });
    b.fault(Verb::Del, b.del.after(dellink), "signal=KILL");
}

// The request deleting the host veth fails: DEL must fail (and the next
// DEL delete it), not report success with the veth still there (rtnetlink
// reports a request that got no answer as done).
#[test]
fn netlink_error_on_del_s_veth_deletion() {
    podmeter_testkit::needs_root!();
    let b = Bench::new();
    let ack = first(&b.del, "the veth deletion's ack", |c| {
        is(c, "recvfrom", "RTM_DELLINK")
    });
    let request = b
        .del
        .calls
        .iter()
        .rev()
        .find(|c| c.tid == ack.tid && c.name == "sendto" && c.nth <= ack.nth)
        .expect("a request before the ack");
    b.fault(Verb::Del, request, "error=ENOBUFS");
}
